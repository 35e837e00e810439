/*
 * io_uring restrictions: wrappers that work with every liburing
 *
 * A ring created with IORING_SETUP_R_DISABLED (Linux 5.10) accepts one
 * IORING_REGISTER_RESTRICTIONS call, which installs allow-lists of SQE
 * opcodes, SQE flags and io_uring_register(2) opcodes, and does nothing until
 * IORING_REGISTER_ENABLE_RINGS starts it.  From then on the kernel completes
 * an SQE outside the allow-lists with -EACCES and fails a register call
 * outside them with -EACCES.  Before it is enabled, the ring accepts any
 * register call, so tables can be filled in between the two steps.
 *
 * liburing 2.0 to 2.3 declare io_uring_register_restrictions() and
 * io_uring_enable_rings() in liburing.h, but their shared library does not
 * export them (fixed in liburing 2.4), so calling them fails to link.  Call
 * the wrappers below instead: they use liburing when meson found that it
 * exports the function and make the system call themselves otherwise.
 *
 * Only available when liburing.h defines IORING_SETUP_R_DISABLED (check
 * HAVE_IO_URING_SETUP_R_DISABLED).
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QEMU_IO_URING_RESTRICTIONS_H
#define QEMU_IO_URING_RESTRICTIONS_H

#ifdef HAVE_IO_URING_SETUP_R_DISABLED

#include <liburing.h>
#include <sys/syscall.h>

/* io_uring_register(2) on @ring.  Returns the result or -errno. */
static inline int qemu_io_uring_register_syscall(struct io_uring *ring,
                                                 unsigned int opcode,
                                                 void *arg,
                                                 unsigned int nr_args)
{
    long ret = syscall(__NR_io_uring_register, ring->ring_fd, opcode, arg,
                       nr_args);

    return ret < 0 ? -errno : ret;
}

/*
 * qemu_io_uring_register_restrictions:
 * @ring: a ring created with IORING_SETUP_R_DISABLED and not yet enabled
 * @res: the allow-lists
 * @nr_res: number of elements of @res
 *
 * Install the allow-lists; they take effect when the ring is enabled.  Only
 * one call per ring can succeed.
 *
 * Returns: 0 or -errno.
 */
static inline int qemu_io_uring_register_restrictions(
        struct io_uring *ring, struct io_uring_restriction *res,
        unsigned int nr_res)
{
#ifdef HAVE_IO_URING_REGISTER_RESTRICTIONS
    return io_uring_register_restrictions(ring, res, nr_res);
#else
    return qemu_io_uring_register_syscall(ring, IORING_REGISTER_RESTRICTIONS,
                                          res, nr_res);
#endif
}

/*
 * qemu_io_uring_enable_rings:
 * @ring: a ring created with IORING_SETUP_R_DISABLED
 *
 * Start the ring, with the restrictions installed so far.
 *
 * Returns: 0 or -errno.
 */
static inline int qemu_io_uring_enable_rings(struct io_uring *ring)
{
#ifdef HAVE_IO_URING_ENABLE_RINGS
    return io_uring_enable_rings(ring);
#else
    return qemu_io_uring_register_syscall(ring, IORING_REGISTER_ENABLE_RINGS,
                                          NULL, 0);
#endif
}

/*
 * qemu_io_uring_restricted_ring_usable:
 * @setup_flags: more IORING_SETUP_* flags for the ring, like
 *               IORING_SETUP_SQPOLL, or 0
 *
 * Whether this host lets a process create a disabled ring and install
 * restrictions on it, as fdmon-io_uring and the uring block driver do.
 * io_uring may be missing or older than Linux 5.10, or turned off
 * (kernel.io_uring_disabled, seccomp).  For tests, to skip what cannot run;
 * it makes the system calls itself, so callers need not link liburing.
 */
static inline bool qemu_io_uring_restricted_ring_usable(unsigned setup_flags)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_R_DISABLED | setup_flags,
    };
    struct io_uring_restriction res = {
        .opcode = IORING_RESTRICTION_SQE_OP,
        .sqe_op = IORING_OP_READ_FIXED,
    };
    int fd = syscall(__NR_io_uring_setup, 1, &p);
    long ret;

    if (fd < 0) {
        return false;
    }
    ret = syscall(__NR_io_uring_register, fd, IORING_REGISTER_RESTRICTIONS,
                  &res, 1);
    close(fd);
    return ret == 0;
}

#endif /* HAVE_IO_URING_SETUP_R_DISABLED */

#endif /* QEMU_IO_URING_RESTRICTIONS_H */
