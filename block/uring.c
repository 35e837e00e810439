/*
 * uring block driver: per-node state
 *
 * A driver=uring node is a file-posix node (open, locking, alignment,
 * discard, write-zeroes and truncate come from there) whose reads, writes
 * and flushes go through private, restricted io_uring rings: one per
 * AioContext that submits requests, each with the image as its only fixed
 * file and the node's registered memory (guest RAM) as fixed buffers.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-common.h"
#include "qemu/error-report.h"
#include "qemu/lockable.h"
#include "qemu/option.h"
#include "qemu/rcu_queue.h"
#include "qemu/units.h"
#include "block/aio-wait.h"
#include "block/block_int.h"
#include "block/block-io.h"
#include "system/memory.h"
#include "block/uring-ring.h"
#include "block/uring.h"
#include "trace.h"

#define URING_OPT_SQPOLL            "sqpoll"
#define URING_OPT_SQPOLL_CPU        "sqpoll-cpu"
#define URING_OPT_SQPOLL_IDLE       "sqpoll-idle"
#define URING_OPT_QUEUE_DEPTH       "queue-depth"
#define URING_OPT_FIXED_BUFFERS     "fixed-buffers"

/* virtio-blk's default queue-size: a full virtqueue fits in the SQ */
#define URING_DEFAULT_QUEUE_DEPTH   256
#define URING_MAX_QUEUE_DEPTH       32768
#define URING_DEFAULT_SQPOLL_IDLE   100

/* The ring of one AioContext */
typedef struct UringCtxRing {
    struct rcu_head rcu;        /* first, for g_free_rcu() */
    AioContext *ctx;
    UringRing *ring;
    unsigned device_refs;       /* uring_prepare_io_contexts() references */
    bool fixed;                 /* holds the fixed-buffer table */
    QLIST_ENTRY(UringCtxRing) next;
} UringCtxRing;

struct BDRVUringState {
    BlockDriverState *bs;

    /* Options, constant after open */
    unsigned queue_depth;
    bool sqpoll;
    int sqpoll_cpu;
    unsigned sqpoll_idle;
    OnOffAuto fixed_buffers;
    bool use_fixed;             /* fixed-buffers is not off and allowed */

    /*
     * @lock serialises changes to @rings, @bufs and @fd.  Lookups of
     * @rings and @bufs take only the RCU read lock, on the I/O path.
     */
    QemuMutex lock;
    QLIST_HEAD(, UringCtxRing) rings;
    UringBufs bufs;
    int fd;
    unsigned device_refs;       /* sum over @rings */

    /* Counters of rings already freed */
    UringRingStats retired;
    bool ring_error_reported;
};

static QemuOptsList uring_runtime_opts = {
    .name = "uring",
    .head = QTAILQ_HEAD_INITIALIZER(uring_runtime_opts.head),
    .desc = {
        {
            .name = URING_OPT_SQPOLL,
            .type = QEMU_OPT_BOOL,
            .help = "submit through a kernel SQ polling thread "
                    "(default: off)",
        },
        {
            .name = URING_OPT_SQPOLL_CPU,
            .type = QEMU_OPT_NUMBER,
            .help = "host CPU of the SQ polling thread (default: any)",
        },
        {
            .name = URING_OPT_SQPOLL_IDLE,
            .type = QEMU_OPT_NUMBER,
            .help = "milliseconds the SQ thread polls before it sleeps "
                    "(default: 100)",
        },
        {
            .name = URING_OPT_QUEUE_DEPTH,
            .type = QEMU_OPT_NUMBER,
            .help = "submission queue entries per ring (default: 256)",
        },
        {
            .name = URING_OPT_FIXED_BUFFERS,
            .type = QEMU_OPT_STRING,
            .help = "register guest RAM as fixed buffers (on/off/auto, "
                    "default: auto)",
        },
        { /* end of list */ }
    },
};

static bool uring_parse_opts(BDRVUringState *s, QDict *options,
                             Error **errp)
{
    QemuOpts *opts = qemu_opts_create(&uring_runtime_opts, NULL, 0,
                                      &error_abort);
    int64_t cpu, idle, depth;
    bool ret = false;

    if (!qemu_opts_absorb_qdict(opts, options, errp)) {
        goto out;
    }

    s->sqpoll = qemu_opt_get_bool(opts, URING_OPT_SQPOLL, false);
    cpu = qemu_opt_get_number(opts, URING_OPT_SQPOLL_CPU, -1);
    idle = qemu_opt_get_number(opts, URING_OPT_SQPOLL_IDLE,
                               URING_DEFAULT_SQPOLL_IDLE);
    depth = qemu_opt_get_number(opts, URING_OPT_QUEUE_DEPTH,
                                URING_DEFAULT_QUEUE_DEPTH);

    if (!s->sqpoll && (qemu_opt_find(opts, URING_OPT_SQPOLL_CPU) ||
                       qemu_opt_find(opts, URING_OPT_SQPOLL_IDLE))) {
        error_setg(errp, "'" URING_OPT_SQPOLL_CPU "' and '"
                   URING_OPT_SQPOLL_IDLE "' require 'sqpoll=on'");
        goto out;
    }
    if (qemu_opt_find(opts, URING_OPT_SQPOLL_CPU) &&
        (cpu < 0 || cpu >= sysconf(_SC_NPROCESSORS_CONF))) {
        error_setg(errp, "'" URING_OPT_SQPOLL_CPU "' must be a host CPU "
                   "number between 0 and %ld",
                   sysconf(_SC_NPROCESSORS_CONF) - 1);
        goto out;
    }
    if (idle < 1 || idle > UINT32_MAX) {
        error_setg(errp, "'" URING_OPT_SQPOLL_IDLE "' must be between 1 "
                   "and %" PRIu32 " (milliseconds)", UINT32_MAX);
        goto out;
    }
    if (depth < 1 || depth > URING_MAX_QUEUE_DEPTH) {
        error_setg(errp, "'" URING_OPT_QUEUE_DEPTH "' must be between 1 "
                   "and %d", URING_MAX_QUEUE_DEPTH);
        goto out;
    }
    s->sqpoll_cpu = cpu;
    s->sqpoll_idle = idle;
    s->queue_depth = depth;

    s->fixed_buffers = qapi_enum_parse(&OnOffAuto_lookup,
                                       qemu_opt_get(opts,
                                                    URING_OPT_FIXED_BUFFERS),
                                       ON_OFF_AUTO_AUTO, errp);
    ret = s->fixed_buffers >= 0;

out:
    qemu_opts_del(opts);
    return ret;
}

/*
 * Pinned guest RAM must not be discarded behind the ring's back (the
 * kernel would keep using the old pages), so fixed buffers and virtio-mem
 * exclude each other and virtio-balloon frees nothing, as with the other
 * drivers that pin memory (VFIO, blkio).
 */
static bool uring_disable_ram_discard(BDRVUringState *s, Error **errp)
{
    int ret;

    s->use_fixed = false;
    if (s->fixed_buffers == ON_OFF_AUTO_OFF) {
        return true;
    }
    ret = ram_block_discard_disable(true);
    if (ret < 0) {
        if (s->fixed_buffers == ON_OFF_AUTO_ON) {
            error_setg_errno(errp, -ret, "fixed-buffers=on needs guest RAM "
                             "to stay pinned, but a device that discards "
                             "RAM (virtio-mem) is present");
            error_append_hint(errp, "Use fixed-buffers=off or auto.\n");
            return false;
        }
        warn_report("uring: a device discards guest RAM; fixed buffers "
                    "are disabled for node '%s'",
                    bdrv_get_node_name(s->bs));
        return true;
    }
    s->use_fixed = true;
    return true;
}

/*
 * Check now that this host lets us create a restricted ring, so that a
 * kernel without io_uring (or with it disabled) fails blockdev-add rather
 * than the first request.
 */
static bool uring_probe_kernel(int fd, Error **errp)
{
    UringRingConfig cfg = {
        .entries = 1,
        .fd = fd,
        .attach_wq_fd = -1,
        .sqpoll_cpu = -1,
    };
    UringRing *r = uring_ring_new(qemu_get_current_aio_context(), &cfg,
                                  errp);

    if (!r) {
        return false;
    }
    uring_ring_free(r);
    return true;
}

BDRVUringState *uring_state_new(BlockDriverState *bs, QDict *options,
                                Error **errp)
{
    BDRVUringState *s = g_new0(BDRVUringState, 1);

    s->bs = bs;
    s->fd = -1;
    if (!uring_parse_opts(s, options, errp)) {
        g_free(s);
        return NULL;
    }
    qemu_mutex_init(&s->lock);
    QLIST_INIT(&s->rings);
    uring_bufs_init(&s->bufs);
    return s;
}

/* Second half of open, once file-posix has opened @fd */
bool uring_state_start(BDRVUringState *s, int fd, Error **errp)
{
    ERRP_GUARD();

    s->fd = fd;
    if (!uring_probe_kernel(fd, errp)) {
        error_prepend(errp, "uring: ");
        return false;
    }
    return uring_disable_ram_discard(s, errp);
}

static UringCtxRing *uring_find_ring_locked(BDRVUringState *s,
                                            AioContext *ctx)
{
    UringCtxRing *cr;

    QLIST_FOREACH(cr, &s->rings, next) {
        if (cr->ctx == ctx) {
            return cr;
        }
    }
    return NULL;
}

static int uring_sqpoll_fd_locked(BDRVUringState *s)
{
    UringCtxRing *cr;

    QLIST_FOREACH(cr, &s->rings, next) {
        if (uring_ring_has_sqpoll(cr->ring)) {
            return uring_ring_fd(cr->ring);
        }
    }
    return -1;
}

static void uring_buf_error_hint(BDRVUringState *s, int err, size_t extra,
                                 Error **errp)
{
    unsigned rings = 1;
    UringCtxRing *cr;

    QLIST_FOREACH(cr, &s->rings, next) {
        rings += cr->fixed;
    }
    if (err == -ENOMEM) {
        error_append_hint(errp, "Pinning guest RAM for io_uring fixed "
                          "buffers needs RLIMIT_MEMLOCK of at least %"
                          PRIu64 " MiB for %u ring(s) of this node: raise "
                          "it (ulimit -l, prlimit --memlock, systemd "
                          "LimitMEMLOCK=) or use fixed-buffers=off.\n",
                          DIV_ROUND_UP((s->bufs.bytes + extra) * rings, MiB),
                          rings);
    } else if (err == -EFAULT) {
        error_append_hint(errp, "This memory cannot be pinned (is it a "
                          "memory-backend-file on a regular file system? "
                          "memfd and hugetlbfs work); use "
                          "fixed-buffers=auto or off.\n");
    }
}

/*
 * Whether a ring of @s should hold the fixed-buffer table.  Pinning costs
 * RLIMIT_MEMLOCK for every ring, so once a device has announced the
 * contexts it submits guest I/O from, only their rings get it; the others
 * (the main loop reading the boot sector, block jobs with their own
 * buffers) use plain I/O.  Without a device (qemu-img, qemu-io, exports)
 * every ring gets it.
 */
static bool uring_ring_wants_fixed(BDRVUringState *s, UringCtxRing *cr)
{
    return s->use_fixed && (cr->device_refs > 0 || s->device_refs == 0);
}

static void uring_ring_clear_bufs_locked(BDRVUringState *s, UringCtxRing *cr)
{
    g_autofree UringBufSlot *slots = NULL;
    unsigned n, i;

    qatomic_set(&cr->fixed, false);
    slots = uring_bufs_snapshot(&s->bufs, &n);
    for (i = 0; i < n; i++) {
        uring_ring_update_buf(cr->ring, slots[i].index, NULL, 0);
    }
}

/*
 * Fill the fixed-buffer table of @cr with everything registered.  Memory
 * that turns out not to be pinnable is dropped from the table with
 * fixed-buffers=auto; other failures are errors.
 */
static bool uring_ring_fill_bufs_locked(BDRVUringState *s, UringCtxRing *cr,
                                        Error **errp)
{
    g_autofree UringBufSlot *slots = NULL;
    unsigned n, i;

    slots = uring_bufs_snapshot(&s->bufs, &n);
    for (i = 0; i < n; i++) {
        void *host = (void *)slots[i].start;
        int ret = uring_ring_update_buf(cr->ring, slots[i].index, host,
                                        slots[i].len);
        UringBufSlot *gone;
        int n_gone;

        if (ret == -EFAULT && s->fixed_buffers == ON_OFF_AUTO_AUTO) {
            warn_report("uring: memory at %p (%zu bytes) cannot be pinned; "
                        "node '%s' uses non-fixed I/O for it",
                        host, slots[i].len, bdrv_get_node_name(s->bs));
            n_gone = uring_bufs_unpublish(&s->bufs, host, 1, &gone);
            uring_bufs_unreserve(&s->bufs, gone, n_gone);
            continue;
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to register %zu bytes of "
                             "guest RAM as io_uring fixed buffer",
                             slots[i].len);
            uring_buf_error_hint(s, ret, 0, errp);
            uring_ring_clear_bufs_locked(s, cr);
            return false;
        }
    }
    qatomic_set(&cr->fixed, true);
    return true;
}

/*
 * Create and enable the ring of @ctx, in @ctx's thread.  A ring for a
 * device context must get the fixed-buffer table; for any other context
 * failing to pin memory only costs the fixed-buffer path.
 */
static UringCtxRing *uring_add_ring(BDRVUringState *s, AioContext *ctx,
                                    bool for_device, Error **errp)
{
    UringRingConfig cfg = {
        .entries = s->queue_depth,
        .buf_slots = s->use_fixed ? URING_BUF_SLOTS : 0,
        .sqpoll = s->sqpoll,
        .sqpoll_cpu = s->sqpoll_cpu,
        .sqpoll_idle_ms = s->sqpoll_idle,
    };
    Error *local_err = NULL;
    UringCtxRing *cr;

    assert(ctx == qemu_get_current_aio_context());
    QEMU_LOCK_GUARD(&s->lock);

    cr = uring_find_ring_locked(s, ctx);
    if (cr) {
        return cr;
    }

    cr = g_new0(UringCtxRing, 1);
    cr->ctx = ctx;
    cfg.fd = s->fd;
    cfg.attach_wq_fd = uring_sqpoll_fd_locked(s);
    cr->ring = uring_ring_new(ctx, &cfg, errp);
    if (!cr->ring) {
        g_free(cr);
        return NULL;
    }
    if (s->use_fixed && (for_device || uring_ring_wants_fixed(s, cr)) &&
        !uring_ring_fill_bufs_locked(s, cr, &local_err)) {
        if (for_device) {
            error_propagate(errp, local_err);
            goto fail;
        }
        warn_report_err(local_err);
    }
    if (uring_ring_start(cr->ring, errp) < 0) {
        goto fail;
    }
    QLIST_INSERT_HEAD_RCU(&s->rings, cr, next);
    trace_uring_add_ring(s->bs, ctx, cr->ring);
    return cr;

fail:
    uring_ring_free(cr->ring);
    g_free(cr);
    return NULL;
}

static void uring_add_stats(UringRingStats *sum, const UringRingStats *st)
{
    sum->fixed_requests += st->fixed_requests;
    sum->plain_requests += st->plain_requests;
    sum->flushes += st->flushes;
    sum->sq_wakeups += st->sq_wakeups;
    sum->submit_calls += st->submit_calls;
    sum->queued += st->queued;
}

static void uring_free_ring_bh(void *opaque)
{
    uring_ring_free(opaque);
}

/*
 * Unlink @cr and free its ring in the ring's own thread, which may be
 * polling it right now.  Called without @lock: the ring's thread may be
 * waiting for it.  No request may be in flight (the node is drained).
 */
static void uring_remove_ring(BDRVUringState *s, UringCtxRing *cr)
{
    UringRingStats st;

    WITH_QEMU_LOCK_GUARD(&s->lock) {
        QLIST_REMOVE_RCU(cr, next);
        uring_ring_get_stats(cr->ring, &st);
        uring_add_stats(&s->retired, &st);
    }
    trace_uring_remove_ring(s->bs, cr->ctx, cr->ring);
    if (cr->ctx == qemu_get_current_aio_context()) {
        uring_ring_free(cr->ring);
    } else {
        aio_wait_bh_oneshot(cr->ctx, uring_free_ring_bh, cr->ring);
    }
    g_free_rcu(cr, rcu);
}

void uring_state_free(BDRVUringState *s)
{
    UringCtxRing *cr;

    while ((cr = QLIST_FIRST(&s->rings))) {
        uring_remove_ring(s, cr);
    }
    if (s->use_fixed) {
        ram_block_discard_disable(false);
    }
    /* Wait for lookups that may still see the table */
    synchronize_rcu();
    uring_bufs_cleanup(&s->bufs);
    qemu_mutex_destroy(&s->lock);
    g_free(s);
}

/* The image fd changed (reopen); the node is drained */
int uring_state_set_fd(BDRVUringState *s, int fd)
{
    UringCtxRing *cr;
    int ret = 0;

    QEMU_LOCK_GUARD(&s->lock);
    s->fd = fd;
    QLIST_FOREACH(cr, &s->rings, next) {
        int r = uring_ring_update_file(cr->ring, fd);

        ret = ret ?: r;
    }
    return ret;
}

static UringCtxRing *uring_current_ring(BDRVUringState *s)
{
    AioContext *ctx = qemu_get_current_aio_context();
    Error *local_err = NULL;
    UringCtxRing *cr;

    WITH_RCU_READ_LOCK_GUARD() {
        QLIST_FOREACH_RCU(cr, &s->rings, next) {
            if (cr->ctx == ctx) {
                return cr;
            }
        }
    }

    /*
     * First request in a context that no device prepared: block jobs,
     * the main loop, qemu-img, qemu-io, qemu-storage-daemon.
     */
    cr = uring_add_ring(s, ctx, false, &local_err);
    if (!cr && !qatomic_xchg(&s->ring_error_reported, true)) {
        error_reportf_err(local_err, "uring: node '%s': ",
                          bdrv_get_node_name(s->bs));
    } else {
        error_free(local_err);
    }
    return cr;
}

int coroutine_fn uring_co_prw(BDRVUringState *s, uint64_t offset,
                              QEMUIOVector *qiov, bool is_write,
                              BdrvRequestFlags flags)
{
    UringCtxRing *cr = uring_current_ring(s);
    bool fua = flags & BDRV_REQ_FUA;
    int buf_index = URING_NO_BUF;
    int ret;

    if (!cr) {
        return -EIO;
    }

    /*
     * BDRV_REQ_REGISTERED_BUF is only a hint (the graph may have changed
     * since the memory was registered, and bounce buffers lose it), so the
     * table decides.
     */
    if (qatomic_read(&cr->fixed) && qiov->niov > 0 &&
        (qiov->niov == 1 || uring_ring_has_vectored_fixed(cr->ring))) {
        buf_index = uring_bufs_lookup(&s->bufs, qiov);
    }

    ret = uring_ring_co_rw(cr->ring, is_write, offset, qiov, buf_index, fua);
    if (ret == -EFAULT && buf_index != URING_NO_BUF) {
        /* The buffer left the ring's table after the lookup */
        ret = uring_ring_co_rw(cr->ring, is_write, offset, qiov,
                               URING_NO_BUF, fua);
    }
    return ret;
}

int coroutine_fn uring_co_flush(BDRVUringState *s)
{
    UringCtxRing *cr = uring_current_ring(s);

    return cr ? uring_ring_co_flush(cr->ring) : -EIO;
}

/* Clear @slots in every ring that holds the table */
static void uring_clear_slots_locked(BDRVUringState *s,
                                     const UringBufSlot *slots, int n)
{
    UringCtxRing *cr;
    int i;

    QLIST_FOREACH(cr, &s->rings, next) {
        for (i = 0; cr->fixed && i < n; i++) {
            uring_ring_update_buf(cr->ring, slots[i].index, NULL, 0);
        }
    }
}

/* Returns 0 or the -errno of the first slot the ring refused */
static int uring_ring_add_slots(UringCtxRing *cr, const UringBufSlot *slots,
                                int n)
{
    int i;

    for (i = 0; i < n; i++) {
        int ret = uring_ring_update_buf(cr->ring, slots[i].index,
                                        (void *)slots[i].start,
                                        slots[i].len);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Add [@host, @host + @size) to the fixed-buffer table of the rings that
 * hold it.  Called under the BQL from bdrv_register_buf(): by
 * BlockRAMRegistrar for each guest RAM block at realize and on hot-plug.
 *
 * Never fails: BlockRAMRegistrar would unregister all guest RAM.  Memory
 * that a device's ring cannot pin is reported and served without fixed
 * buffers; the device's realize fails instead when its rings are set up
 * (uring_prepare_io_contexts()) and cannot pin what is registered then.
 */
bool uring_register_buf(BDRVUringState *s, void *host, size_t size,
                        Error **errp)
{
    UringBufSlot *slots;
    UringCtxRing *cr;
    int n;

    if (!s->use_fixed) {
        return true;
    }

    QEMU_LOCK_GUARD(&s->lock);
    n = uring_bufs_reserve(&s->bufs, host, size, &slots);
    if (n == -ENOSPC) {
        warn_report_once("uring: more than %d fixed buffers; further "
                         "memory uses non-fixed I/O", URING_BUF_SLOTS);
        return true;
    }
    if (n == 0) {
        return true;
    }

    QLIST_FOREACH(cr, &s->rings, next) {
        Error *local_err = NULL;
        int ret;

        if (!cr->fixed) {
            continue;
        }
        ret = uring_ring_add_slots(cr, slots, n);
        if (ret == 0) {
            continue;
        }
        if (!cr->device_refs) {
            /* Not worth failing for: this ring does without the table */
            uring_ring_clear_bufs_locked(s, cr);
            continue;
        }
        uring_clear_slots_locked(s, slots, n);
        uring_bufs_unreserve(&s->bufs, slots, n);
        error_setg_errno(&local_err, -ret, "uring: node '%s': cannot pin "
                         "%zu bytes at %p as io_uring fixed buffer; that "
                         "memory uses non-fixed I/O",
                         bdrv_get_node_name(s->bs), size, host);
        uring_buf_error_hint(s, ret, size, &local_err);
        if (ret == -EFAULT && s->fixed_buffers == ON_OFF_AUTO_AUTO) {
            warn_report_err(local_err);
        } else {
            error_report_err(local_err);
        }
        return true;
    }
    uring_bufs_publish(&s->bufs, slots, n);
    trace_uring_register_buf(s->bs, host, size, n);
    g_free(slots);
    return true;
}

/* Harmless for memory that was never registered (or failed to) */
void uring_unregister_buf(BDRVUringState *s, void *host, size_t size)
{
    UringBufSlot *slots;
    int n;

    if (!s->use_fixed) {
        return;
    }
    QEMU_LOCK_GUARD(&s->lock);
    n = uring_bufs_unpublish(&s->bufs, host, size, &slots);
    if (n > 0) {
        uring_clear_slots_locked(s, slots, n);
        uring_bufs_unreserve(&s->bufs, slots, n);
    }
    trace_uring_unregister_buf(s->bs, host, size, n);
}

typedef struct UringPrepare {
    BDRVUringState *s;
    AioContext *ctx;
    Error *err;
} UringPrepare;

/* In the device context's thread: its ring, with the table, or an error */
static void uring_prepare_bh(void *opaque)
{
    UringPrepare *p = opaque;
    BDRVUringState *s = p->s;
    UringCtxRing *cr = uring_add_ring(s, p->ctx, true, &p->err);

    if (!cr) {
        return;
    }
    QEMU_LOCK_GUARD(&s->lock);
    if (s->use_fixed && !cr->fixed &&
        !uring_ring_fill_bufs_locked(s, cr, &p->err)) {
        return;
    }
    cr->device_refs++;
    s->device_refs++;
}

/* Rings that no device uses give their pinned memory back */
static void uring_drop_unused_bufs(BDRVUringState *s)
{
    UringCtxRing *cr;

    QEMU_LOCK_GUARD(&s->lock);
    QLIST_FOREACH(cr, &s->rings, next) {
        if (cr->fixed && !uring_ring_wants_fixed(s, cr)) {
            uring_ring_clear_bufs_locked(s, cr);
        }
    }
}

/*
 * A device will submit requests from @ctxs: set up their rings now, each
 * in its own thread, so that a failure fails the device's realize.
 */
bool uring_prepare_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n, Error **errp)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        UringPrepare p = { .s = s, .ctx = ctxs[i] };

        aio_wait_bh_oneshot(ctxs[i], uring_prepare_bh, &p);
        if (p.err) {
            error_propagate_prepend(errp, p.err, "Cannot set up io_uring "
                                    "for node '%s': ",
                                    bdrv_get_node_name(s->bs));
            uring_release_io_contexts(s, ctxs, i);
            return false;
        }
    }
    uring_drop_unused_bufs(s);
    return true;
}

/*
 * Drop a ring that neither a device nor the node's home context uses.  A
 * node without parents (left behind by a mirror job, say) has no use for
 * a ring in its home context either, and that context's IOThread may go
 * away with the device.
 */
static void uring_maybe_remove_ring(BDRVUringState *s, AioContext *ctx,
                                    AioContext *home)
{
    UringCtxRing *cr;

    WITH_QEMU_LOCK_GUARD(&s->lock) {
        cr = uring_find_ring_locked(s, ctx);
        if (!cr || cr->device_refs ||
            (ctx == home && !QLIST_EMPTY(&s->bs->parents))) {
            return;
        }
    }
    uring_remove_ring(s, cr);
}

/*
 * The last device is gone: what it registered is no longer needed
 * (BlockRAMRegistrar unregisters from the device's current root, which
 * may be another node by now).
 */
static void uring_drop_bufs_locked(BDRVUringState *s)
{
    UringBufSlot *slots;
    int n;

    n = uring_bufs_unpublish(&s->bufs, NULL, SIZE_MAX, &slots);
    if (n > 0) {
        uring_clear_slots_locked(s, slots, n);
        uring_bufs_unreserve(&s->bufs, slots, n);
    }
}

void uring_release_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n)
{
    AioContext *home = bdrv_get_aio_context(s->bs);
    unsigned i;

    /*
     * The node may not have been prepared if the device's graph changed
     * since realize (mirror completion, for example): ignore that.
     */
    for (i = 0; i < n; i++) {
        WITH_QEMU_LOCK_GUARD(&s->lock) {
            UringCtxRing *cr = uring_find_ring_locked(s, ctxs[i]);

            if (cr && cr->device_refs > 0) {
                cr->device_refs--;
                s->device_refs--;
                if (s->device_refs == 0) {
                    uring_drop_bufs_locked(s);
                }
            }
        }
    }
    for (i = 0; i < n; i++) {
        uring_maybe_remove_ring(s, ctxs[i], home);
    }
}

/* The node leaves @old_ctx (iothread change, unplug); it is drained */
void uring_detach_aio_context(BDRVUringState *s, AioContext *old_ctx)
{
    uring_maybe_remove_ring(s, old_ctx, NULL);
}

void uring_get_stats(BDRVUringState *s, BlockStatsSpecificUring *stats)
{
    UringRingStats sum;
    UringCtxRing *cr;

    QEMU_LOCK_GUARD(&s->lock);
    sum = s->retired;
    stats->rings = 0;
    stats->vectored_fixed = false;
    QLIST_FOREACH(cr, &s->rings, next) {
        UringRingStats st;

        uring_ring_get_stats(cr->ring, &st);
        uring_add_stats(&sum, &st);
        stats->rings++;
        stats->vectored_fixed |= uring_ring_has_vectored_fixed(cr->ring);
    }
    stats->sqpoll = s->sqpoll;
    stats->fixed_buffers = s->use_fixed;
    stats->buffer_slots = uring_bufs_count(&s->bufs);
    stats->buffer_bytes = s->bufs.bytes;
    stats->fixed_requests = sum.fixed_requests;
    stats->plain_requests = sum.plain_requests;
    stats->flushes = sum.flushes;
    stats->sq_wakeups = sum.sq_wakeups;
    stats->submit_calls = sum.submit_calls;
    stats->queued_requests = sum.queued;
}
