/*
 * uring block driver: the io_uring calls that liburing 2.3 lacks
 *
 * Debian 12's liburing 2.3 declares io_uring_register_restrictions() and
 * io_uring_enable_rings() but its shared library does not export them, and
 * it knows neither IORING_REGISTER_CLONE_BUFFERS (Linux 6.12) nor the
 * vectored fixed-buffer opcodes (Linux 6.15).  Every raw io_uring call of
 * the driver is here; the kernel's support is probed at run time.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_SYS_H
#define BLOCK_URING_SYS_H

#include <liburing.h>
#include <sys/syscall.h>

#define URING_OP_READV_FIXED            60
#define URING_OP_WRITEV_FIXED           61
#define URING_REGISTER_CLONE_BUFFERS    30

/* struct io_uring_clone_buffers */
typedef struct UringCloneBuffers {
    uint32_t src_fd;
    uint32_t flags;
    uint32_t src_off;
    uint32_t dst_off;
    uint32_t nr;
    uint32_t pad[3];
} UringCloneBuffers;

/* io_uring_register(); returns 0 (or a positive count) or -errno */
static inline int uring_sys_register(int ring_fd, unsigned opcode,
                                     const void *arg, unsigned nr_args)
{
    long ret = syscall(__NR_io_uring_register, ring_fd, opcode, arg, nr_args);

    return ret < 0 ? -errno : ret;
}

/* Give ring @ring_fd, which has none yet, the fixed buffers of @src_fd */
static inline int uring_sys_clone_buffers(int ring_fd, int src_fd)
{
    UringCloneBuffers arg = { .src_fd = src_fd };

    return uring_sys_register(ring_fd, URING_REGISTER_CLONE_BUFFERS, &arg, 1);
}

#endif /* BLOCK_URING_SYS_H */
