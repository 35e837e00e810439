/*
 * uring block driver: restricted io_uring rings (uring-ring.c) and their
 * fixed-buffer table (uring-bufs.c)
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
#include "qemu/rcu.h"

/*
 * The ring engine (uring-ring.c)
 *
 * A UringRing is one io_uring instance that serves one AioContext.  It is
 * created disabled, gets the image fd as fixed file 0 and a sparse table
 * of fixed buffers, then an allow-list of operations, and only then is
 * enabled; its completions are reaped when its own fd polls readable.
 * From that point on the kernel refuses every SQE opcode outside the list,
 * every SQE without IOSQE_FIXED_FILE and every register call other than
 * updates of the file and buffer tables.
 */

typedef struct UringRing UringRing;

typedef struct UringRingConfig {
    unsigned entries;           /* SQ size; the CQ is twice that */
    int fd;                     /* image, registered as fixed file 0 */
    unsigned buf_slots;         /* sparse fixed-buffer table size, or 0 */
    bool sqpoll;
    int sqpoll_cpu;             /* CPU of the SQ thread, or -1 */
    unsigned sqpoll_idle_ms;
    int attach_wq_fd;           /* share this ring's SQ thread, or -1 */
} UringRingConfig;

typedef struct UringRingStats {
    uint64_t fixed_requests;    /* READ_FIXED and friends */
    uint64_t plain_requests;    /* READ/WRITE(V) on the fixed file */
    uint64_t flushes;
    uint64_t sq_wakeups;        /* io_uring_enter() to wake the SQ thread */
    uint64_t submit_calls;      /* io_uring_enter() calls to submit */
    uint64_t queued;            /* requests that waited for SQ/CQ space */
} UringRingStats;

UringRing *uring_ring_new(AioContext *ctx, const UringRingConfig *cfg,
                          Error **errp);
int uring_ring_start(UringRing *r, Error **errp);
void uring_ring_free(UringRing *r);
int uring_ring_fd(UringRing *r);
bool uring_ring_has_sqpoll(UringRing *r);
bool uring_ring_has_vectored_fixed(UringRing *r);
void uring_ring_get_stats(UringRing *r, UringRingStats *stats);
int uring_ring_update_file(UringRing *r, int fd);
int uring_ring_update_buf(UringRing *r, unsigned index, void *host,
                          size_t len);

/* Buffer index for requests that do not use a fixed buffer */
#define URING_NO_BUF (-1)

int coroutine_fn uring_ring_co_rw(UringRing *r, bool is_write,
                                  uint64_t offset, QEMUIOVector *qiov,
                                  int buf_index, bool fua);
int coroutine_fn uring_ring_co_flush(UringRing *r);

/*
 * The fixed-buffer table (uring-bufs.c)
 *
 * Host memory registered through bdrv_register_buf(), split into slots of
 * at most URING_BUF_SLOT_MAX bytes (the kernel's limit for one fixed
 * buffer).  Slot indices are stable while the memory stays registered, so
 * every ring of a node holds the same buffer at the same index.  Lookups
 * run in any thread under rcu_read_lock(); updates are serialised by the
 * caller.
 */

#define URING_BUF_SLOT_MAX (1ULL << 30)
#define URING_BUF_SLOTS 4096

typedef struct UringBufSlot {
    uintptr_t start;
    size_t len;
    unsigned index;
} UringBufSlot;

typedef struct UringBufView UringBufView;

typedef struct UringBufs {
    UringBufView *view;         /* RCU-protected sorted snapshot */
    unsigned long *used;        /* bitmap of allocated indices */
    uint64_t bytes;             /* total bytes registered */
} UringBufs;

void uring_bufs_init(UringBufs *bufs);
void uring_bufs_cleanup(UringBufs *bufs);
int uring_bufs_reserve(UringBufs *bufs, void *host, size_t size,
                       UringBufSlot **slots);
void uring_bufs_unreserve(UringBufs *bufs, UringBufSlot *slots, int n);
void uring_bufs_publish(UringBufs *bufs, const UringBufSlot *slots, int n);
int uring_bufs_unpublish(UringBufs *bufs, void *host, size_t size,
                         UringBufSlot **slots);
UringBufSlot *uring_bufs_snapshot(UringBufs *bufs, unsigned *n);
int uring_bufs_lookup(UringBufs *bufs, const QEMUIOVector *qiov);
unsigned uring_bufs_count(UringBufs *bufs);

#endif /* BLOCK_URING_RING_H */
