/*
 * uring block driver: the process's fixed-buffer table
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_BUFS_H
#define BLOCK_URING_BUFS_H

#include "qemu/coroutine.h"
#include "qemu/iov.h"
#include "qemu/notify.h"

/*
 * Memory that uring nodes may use as io_uring fixed buffers: the memory
 * registered through bdrv_register_buf() (guest RAM) and a bounce buffer
 * for all other requests.
 *
 * All of it is pinned once per process, into the table of a ring that is
 * never enabled (it can submit nothing), and every ring of every node
 * clones that table when it is created (Linux 6.12), which pins and
 * charges nothing again.  On older kernels each ring registers the table
 * itself.
 *
 * Rings do not follow changes of the table: they can only be replaced (no
 * register call is allowed after a ring is enabled).  Each change therefore
 * starts a new generation; a ring uses the slots of the generation it was
 * created in, or older ones, and the listeners are told to replace their
 * rings when that is convenient.
 *
 * Threading: changes (uring_bufs_register/unregister and the listener list)
 * are made under the BQL; the listeners are told, under the BQL, about new
 * generations and about memory that could not be pinned.  Lookups,
 * snapshots and the bounce buffer work in any thread.
 */

/* The kernel's limits: bytes per fixed buffer, fixed buffers per ring */
#define URING_BUF_SLOT_MAX      (1ULL << 30)
#define URING_BUF_SLOTS         16384

/* What a new ring needs to hold the table */
typedef struct UringBufsSnapshot {
    uint64_t generation;
    int ring_fd;                /* clone the buffers of this ring, or -1 */
    struct iovec *iov;          /* or register these */
    unsigned nr_iov;
    bool unpinned;              /* nothing is pinned: see uring_bufs_ref() */
} UringBufsSnapshot;

typedef struct UringBufsInfo {
    bool shared;                /* rings clone the table */
    uint64_t pinned_bytes;      /* guest RAM and other registered memory */
    uint64_t pending_bytes;     /* still being pinned */
    uint32_t slots;
    uint64_t bounce_bytes;
    uint64_t bounce_waits;      /* requests that waited for bounce space */
} UringBufsInfo;

/* Who pins new memory: see uring_bufs_register() */
typedef enum UringBufsPin {
    URING_BUFS_PIN_BACKGROUND,
    URING_BUFS_PIN_AUTO,
    URING_BUFS_PIN_NOW,
} UringBufsPin;

bool uring_bufs_ref(Error **errp);
void uring_bufs_unref(void);

int uring_bufs_register(void *host, size_t size, UringBufsPin how);
void uring_bufs_unregister(void *host, size_t size);
int uring_bufs_state(void *host, size_t size, uint64_t *generation);
void uring_bufs_error_hint(int err, Error **errp);
void uring_bufs_memlock_hint(Error **errp);
bool uring_bufs_unpinned(void);
void uring_bufs_add_listener(Notifier *n);
void uring_bufs_remove_listener(Notifier *n);
uint64_t uring_bufs_generation(void);

void uring_bufs_snapshot_begin(UringBufsSnapshot *snap);
void uring_bufs_snapshot_end(UringBufsSnapshot *snap);
int uring_bufs_lookup(const QEMUIOVector *qiov, uint64_t generation);

unsigned uring_bufs_bounce_index(void);
void *coroutine_fn uring_bufs_co_bounce_get(size_t want, size_t *len);
void coroutine_fn uring_bufs_co_bounce_put(void *buf, size_t len);

void uring_bufs_get_info(UringBufsInfo *info);

#endif /* BLOCK_URING_BUFS_H */
