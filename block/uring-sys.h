/*
 * uring block driver: the io_uring calls that liburing 2.3 lacks
 *
 * Debian 12's liburing 2.3 knows neither IORING_REGISTER_CLONE_BUFFERS
 * (Linux 6.12), the vectored fixed-buffer opcodes (Linux 6.15) nor rings
 * in the caller's memory (Linux 6.5 and 6.6).  They are here, with the
 * restriction calls of qemu/io_uring-restrictions.h: every raw io_uring
 * call of the driver and of qemu-uring-blk-helper.  The kernel's support
 * is probed at run time.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_SYS_H
#define BLOCK_URING_SYS_H

#include "qemu/io_uring-restrictions.h"

#define URING_OP_READV_FIXED            60
#define URING_OP_WRITEV_FIXED           61
#define URING_REGISTER_CLONE_BUFFERS    30

/* Rings in memory that the caller supplies (Linux 6.5); no SQ array (6.6) */
#define URING_SETUP_NO_MMAP             (1u << 14)
#define URING_SETUP_NO_SQARRAY          (1u << 16)

/*
 * With URING_SETUP_NO_MMAP, where the rings (@rings) and the SQE array
 * (@sqes) are.  liburing 2.5 renamed the offsets' resv2 to user_addr, and
 * defined IORING_SETUP_NO_MMAP with it.
 */
static inline void uring_sys_set_user_addr(struct io_uring_params *p,
                                           void *rings, void *sqes)
{
#ifdef IORING_SETUP_NO_MMAP
    p->cq_off.user_addr = (uintptr_t)rings;
    p->sq_off.user_addr = (uintptr_t)sqes;
#else
    p->cq_off.resv2 = (uintptr_t)rings;
    p->sq_off.resv2 = (uintptr_t)sqes;
#endif
}

/* struct io_uring_clone_buffers */
typedef struct UringCloneBuffers {
    uint32_t src_fd;
    uint32_t flags;
    uint32_t src_off;
    uint32_t dst_off;
    uint32_t nr;
    uint32_t pad[3];
} UringCloneBuffers;

/* Give @ring, which has no fixed buffers yet, those of ring @src_fd */
static inline int uring_sys_clone_buffers(struct io_uring *ring, int src_fd)
{
    UringCloneBuffers arg = { .src_fd = src_fd };

    return qemu_io_uring_register_syscall(ring, URING_REGISTER_CLONE_BUFFERS,
                                          &arg, 1);
}

/*
 * Take back the SQEs that @ring published but the kernel has not consumed,
 * after io_uring_enter() failed for good, and return their user data in
 * @data (which holds the SQ's size); returns how many.  Only valid while
 * nothing else reads the SQ: without SQPOLL the kernel reads it only
 * within io_uring_enter(), with SQPOLL once the SQ thread is gone
 * (-EOWNERDEAD).  liburing (2.2 and 2.3) maps SQ slot i to SQE i.
 */
static inline unsigned uring_sys_sq_retract(struct io_uring *ring,
                                            void **data)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned head = io_uring_smp_load_acquire(sq->khead);
    unsigned tail = sq->sqe_tail;
    unsigned n = 0;

    for (; head != tail; head++) {
        data[n++] = (void *)(uintptr_t)
                    sq->sqes[head & *sq->kring_mask].user_data;
    }
    tail -= n;
    sq->sqe_head = sq->sqe_tail = tail;
    io_uring_smp_store_release(sq->ktail, tail);
    return n;
}

#endif /* BLOCK_URING_SYS_H */
