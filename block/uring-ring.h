/*
 * uring block driver: the ring engine
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_RING_H
#define BLOCK_URING_RING_H

#include "block/aio.h"
#include "qemu/coroutine.h"
#include "qemu/iov.h"

/*
 * A UringRing is one io_uring instance that serves one AioContext.  It is
 * created disabled (IORING_SETUP_R_DISABLED); gets the image as fixed file
 * 0 and its fixed buffers, cloned from a ring that holds them
 * (IORING_REGISTER_CLONE_BUFFERS) or registered directly; then an
 * allow-list; and only then is it enabled.  From that point on the kernel
 * refuses:
 *
 *  - every SQE opcode but READ_FIXED, WRITE_FIXED, READV_FIXED and
 *    WRITEV_FIXED (where the kernel has them) and FSYNC, so that data moves
 *    only between the image and the fixed buffers;
 *  - every SQE without IOSQE_FIXED_FILE, so that no fd number in an SQE is
 *    looked up;
 *  - every io_uring_register() call, so that neither the file nor the
 *    buffer table can be changed.
 *
 * A ring whose file or buffers must change is replaced by a new one.
 *
 * Threading: a ring is created, used and freed in its AioContext.  For an
 * IOThread that is its thread; for the main loop's AioContext, any thread
 * that holds the BQL (the main loop, vCPU threads, the migration thread),
 * each of which enters the kernel itself to submit: no task owns the ring
 * (no SINGLE_ISSUER), and the main loop's ring in the system emulator has
 * no COOP_TASKRUN, whose completion work would wait for a system call of
 * the submitting thread (see qemu_main_context_single_threaded()).
 * Only uring_ring_get_stats() may be called from elsewhere.  Completions
 * are reaped when the ring fd polls readable, or by the AioContext's
 * adaptive polling.
 *
 * Lifetime: a ring is reference-counted (uring_ring_ref()), in its
 * AioContext.  Whoever creates it holds the first reference, and each
 * request should hold one while it runs, so that a ring that is replaced
 * or let go of stays until its last request is done; it must be idle then.
 *
 * Errors: a request fails with the errno of its completion (-EAGAIN and
 * -EINTR are retried a bounded number of times).  A submission that fails
 * for good breaks the ring: the requests that the kernel did not take,
 * those it took that would need another submission, and every later one
 * fail with that error (uring_ring_broken()), and the owner should replace
 * the ring.
 */

typedef struct UringRing UringRing;

typedef struct UringRingConfig {
    unsigned entries;           /* SQ size; the CQ is twice that */
    int fd;                     /* the image, registered as fixed file 0 */

    /*
     * Fixed buffers: cloned from the ring @bufs_ring_fd (Linux 6.12) or,
     * when it is -1, registered from @bufs (entries of length 0 stay
     * empty), which pins and charges the memory again.
     */
    int bufs_ring_fd;
    const struct iovec *bufs;
    unsigned nr_bufs;

    /*
     * No memory could be pinned (RLIMIT_MEMLOCK): the ring has no fixed
     * buffers, and reads and writes name their memory (READV, WRITEV)
     */
    bool unpinned;

    bool sqpoll;
    int sqpoll_cpu;             /* CPU of the SQ thread, or -1 */
    unsigned sqpoll_idle_ms;
    int attach_wq_fd;           /* share this ring's SQ thread, or -1 */

} UringRingConfig;

typedef struct UringRingStats {
    uint64_t rw_requests;       /* reads and writes */
    uint64_t flushes;
    uint64_t sq_wakeups;        /* io_uring_enter() to wake the SQ thread */
    uint64_t submit_calls;      /* io_uring_enter() calls to submit */
    uint64_t submit_retries;    /* submissions retried after an error */
    uint64_t queued;            /* requests that waited for SQ/CQ space */
} UringRingStats;

UringRing *uring_ring_new(AioContext *ctx, const UringRingConfig *cfg,
                          Error **errp);
void uring_ring_ref(UringRing *r);
void uring_ring_unref(UringRing *r);
bool uring_ring_is_idle(UringRing *r);
int uring_ring_broken(UringRing *r);
int uring_ring_fd(UringRing *r);
bool uring_ring_has_sqpoll(UringRing *r);
bool uring_ring_has_vectored_fixed(UringRing *r);
bool uring_ring_is_polled(UringRing *r);
void uring_ring_get_stats(UringRing *r, UringRingStats *stats);
uint64_t uring_ring_memlock_bytes(void);
void uring_ring_setup_hint(int err, Error **errp);

/*
 * Read or write @qiov at @offset through fixed buffer @buf_index, which
 * must hold every element of @qiov; several elements need
 * uring_ring_has_vectored_fixed().
 */
int coroutine_fn uring_ring_co_rw(UringRing *r, bool is_write,
                                  uint64_t offset, QEMUIOVector *qiov,
                                  unsigned buf_index, bool fua);
int coroutine_fn uring_ring_co_flush(UringRing *r);

#endif /* BLOCK_URING_RING_H */
