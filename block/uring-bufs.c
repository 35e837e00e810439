/*
 * uring block driver: the fixed-buffer table
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "block/uring-ring.h"

/* An immutable, sorted copy of the published slots, replaced under RCU */
struct UringBufView {
    struct rcu_head rcu;
    unsigned n;
    UringBufSlot slots[];
};

static UringBufView *uring_buf_view_new(unsigned n)
{
    UringBufView *v = g_malloc0(sizeof(*v) + n * sizeof(v->slots[0]));

    v->n = n;
    return v;
}

static int uring_buf_slot_cmp(const void *a, const void *b)
{
    const UringBufSlot *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

static void uring_bufs_replace_view(UringBufs *bufs, UringBufView *v)
{
    UringBufView *old = bufs->view;

    qsort(v->slots, v->n, sizeof(v->slots[0]), uring_buf_slot_cmp);
    qatomic_rcu_set(&bufs->view, v);
    g_free_rcu(old, rcu);
}

void uring_bufs_init(UringBufs *bufs)
{
    bufs->view = uring_buf_view_new(0);
    bufs->used = bitmap_new(URING_BUF_SLOTS);
    bufs->bytes = 0;
}

void uring_bufs_cleanup(UringBufs *bufs)
{
    g_free(bufs->view);
    bufs->view = NULL;
    g_free(bufs->used);
    bufs->used = NULL;
}

/* Index of the published slot that starts at @start, or -1 */
static int uring_bufs_find_start(UringBufView *v, uintptr_t start)
{
    unsigned i;

    for (i = 0; i < v->n; i++) {
        if (v->slots[i].start == start) {
            return i;
        }
    }
    return -1;
}

/*
 * Allocate slot indices for [@host, @host + @size), split into pieces of at
 * most URING_BUF_SLOT_MAX bytes.  The slots are not visible to lookups until
 * uring_bufs_publish(), so the caller can fill the rings' tables first.
 *
 * Returns the number of slots (0 if the range is registered already) or
 * -ENOSPC when the table is full.
 */
int uring_bufs_reserve(UringBufs *bufs, void *host, size_t size,
                       UringBufSlot **slots)
{
    uintptr_t start = (uintptr_t)host;
    int n = DIV_ROUND_UP(size, URING_BUF_SLOT_MAX);
    int i;

    *slots = NULL;
    if (size == 0 || uring_bufs_find_start(bufs->view, start) >= 0) {
        return 0;
    }

    *slots = g_new0(UringBufSlot, n);
    for (i = 0; i < n; i++) {
        unsigned long index = find_first_zero_bit(bufs->used,
                                                  URING_BUF_SLOTS);

        if (index >= URING_BUF_SLOTS) {
            uring_bufs_unreserve(bufs, *slots, i);
            *slots = NULL;
            return -ENOSPC;
        }
        set_bit(index, bufs->used);
        (*slots)[i] = (UringBufSlot) {
            .start = start + i * URING_BUF_SLOT_MAX,
            .len = MIN(size - i * URING_BUF_SLOT_MAX, URING_BUF_SLOT_MAX),
            .index = index,
        };
    }
    return n;
}

/* Give back the indices of @slots and free the array */
void uring_bufs_unreserve(UringBufs *bufs, UringBufSlot *slots, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        clear_bit(slots[i].index, bufs->used);
    }
    g_free(slots);
}

/* Make reserved slots visible to uring_bufs_lookup() */
void uring_bufs_publish(UringBufs *bufs, const UringBufSlot *slots, int n)
{
    UringBufView *old = bufs->view;
    UringBufView *v = uring_buf_view_new(old->n + n);
    int i;

    memcpy(v->slots, old->slots, old->n * sizeof(old->slots[0]));
    memcpy(v->slots + old->n, slots, n * sizeof(slots[0]));
    for (i = 0; i < n; i++) {
        bufs->bytes += slots[i].len;
    }
    uring_bufs_replace_view(bufs, v);
}

/*
 * Hide the slots of [@host, @host + @size) from lookups and return them in
 * @slots, so that the caller can clear them in the rings and then
 * uring_bufs_unreserve() them.  A range that was never registered (or whose
 * registration failed) yields 0 slots.
 */
int uring_bufs_unpublish(UringBufs *bufs, void *host, size_t size,
                         UringBufSlot **slots)
{
    UringBufView *old = bufs->view;
    uintptr_t start = (uintptr_t)host;
    UringBufView *v;
    unsigned i;
    int n = 0;

    *slots = g_new0(UringBufSlot, old->n);
    v = uring_buf_view_new(old->n);
    v->n = 0;
    for (i = 0; i < old->n; i++) {
        const UringBufSlot *slot = &old->slots[i];

        if (slot->start >= start && slot->start - start < size) {
            (*slots)[n++] = *slot;
            bufs->bytes -= slot->len;
        } else {
            v->slots[v->n++] = *slot;
        }
    }
    if (n == 0) {
        g_free(v);
        g_free(*slots);
        *slots = NULL;
        return 0;
    }
    uring_bufs_replace_view(bufs, v);
    return n;
}

/* A copy of all published slots, for filling the table of a new ring */
UringBufSlot *uring_bufs_snapshot(UringBufs *bufs, unsigned *n)
{
    *n = bufs->view->n;
    return g_memdup2(bufs->view->slots, *n * sizeof(UringBufSlot));
}

/*
 * The fixed-buffer index that covers every element of @qiov, or
 * URING_NO_BUF.  The kernel requires all iovecs of one fixed-buffer request
 * to lie in the same registered buffer.
 *
 * Called in any thread; takes the RCU read lock itself.
 */
int uring_bufs_lookup(UringBufs *bufs, const QEMUIOVector *qiov)
{
    uintptr_t base = (uintptr_t)qiov->iov[0].iov_base;
    const UringBufSlot *slot = NULL;
    UringBufView *v;
    unsigned lo, hi;
    int i;

    RCU_READ_LOCK_GUARD();
    v = qatomic_rcu_read(&bufs->view);

    /* Last slot that starts at or below @base */
    lo = 0;
    hi = v->n;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (v->slots[mid].start <= base) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return URING_NO_BUF;
    }
    slot = &v->slots[lo - 1];

    for (i = 0; i < qiov->niov; i++) {
        uintptr_t p = (uintptr_t)qiov->iov[i].iov_base;
        size_t len = qiov->iov[i].iov_len;

        if (p < slot->start || p - slot->start > slot->len ||
            len > slot->len - (p - slot->start)) {
            return URING_NO_BUF;
        }
    }
    return slot->index;
}

unsigned uring_bufs_count(UringBufs *bufs)
{
    return bufs->view->n;
}
