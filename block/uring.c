/*
 * uring block driver: per-node state
 *
 * A driver=uring node is a file-posix node (open, locking, alignment,
 * discard, write-zeroes and truncate come from there) whose reads, writes
 * and flushes go through private, restricted io_uring rings: each has the
 * image as its only, fixed file and the process's fixed-buffer table
 * (uring-bufs.c), and can do nothing but move data between the two.
 *
 * Rings.  A node has a ring in its home AioContext, created when the node
 * opens in the main loop or on first use, and one in each AioContext that
 * a device announced with bdrv_prepare_io_contexts(), created there and
 * then.  A request from any other context runs in the home context.  The
 * home ring goes when the node leaves its context, an announced one at the
 * matching bdrv_release_io_contexts().
 *
 * What keeps a ring alive during I/O is a reference, not drain: each
 * request holds one on the ring it started on, and the UringCtxRing that
 * made the ring holds one while the ring is current.  A ring is replaced
 * as soon as it is stale (the buffer table has a new generation, the image
 * was reopened), whatever runs on it: new requests go to the new ring at
 * once, and the old one goes when its last request does.  So neither
 * releasing a context nor replacing a ring depends on who else uses the
 * node, or on its being drained.  Rings are created, replaced and freed
 * in their own thread; RCU protects the list of UringCtxRings against
 * lookups.
 *
 * The image.  The rings hold a file description of their own, opened
 * through /proc/self/fd, not file-posix's descriptor, which carries the
 * image locks: the kernel tears a ring down asynchronously when the
 * process ends, and the locks must not wait for that.  When file-posix
 * changes its descriptor (reopen, auto-read-only), the rings of the new
 * one are set up while the change is prepared, so that a failure fails
 * it, and a ring of an older description never takes a new request.
 *
 * Lock order: BDRVUringState.lock, uring_sq_lock, the buffer table's lock.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/lockable.h"
#include "qemu/option.h"
#include "qemu/rcu_queue.h"
#include "qemu/stats64.h"
#include "qemu/units.h"
#include "block/block_int.h"
#include "block/block-io.h"
#include "block/uring-bufs.h"
#include "block/uring-ring.h"
#include "block/uring.h"
#include "hw/qdev-core.h"
#include "system/block-backend.h"
#include "system/iothread.h"
#include "system/memory.h"
#include "system/runstate.h"
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
    BDRVUringState *s;
    AioContext *ctx;
    QLIST_ENTRY(UringCtxRing) next;

    /* Protected by the BQL */
    unsigned prepared;          /* bdrv_prepare_io_contexts() references */

    /*
     * The current ring, for new requests, and what it holds.  Changed in
     * @ctx's thread only, with @lock of the node held, so that the main
     * loop can read them under the lock; @ctx's thread reads them freely.
     */
    UringRing *ring;
    uint64_t generation;        /* of the buffer table */
    unsigned fd_generation;     /* of the node's image description */
    bool removed;               /* unlinked: nothing replaces @ring */

    /*
     * A ring of the description that a permission change is preparing
     * (@fd_generation + 1), until the change is committed or aborted.
     * Protected by @lock of the node; created and freed in @ctx's thread.
     */
    UringRing *pending;
    uint64_t pending_generation;
    unsigned pending_fd_generation;

    QEMUBH *refresh_bh;         /* in @ctx: replace a stale ring */
} UringCtxRing;

typedef struct UringRange {
    void *host;
    size_t size;
} UringRange;

struct BDRVUringState {
    BlockDriverState *bs;

    /* Options, constant after open */
    unsigned queue_depth;
    bool sqpoll;
    int sqpoll_cpu;
    unsigned sqpoll_idle;
    OnOffAuto fixed_buffers;

    /* Protected by the BQL */
    GArray *registered;         /* UringRanges from bdrv_register_buf() */
    bool pin_warned;            /* about memory that could not be pinned */
    bool device_checked;        /* uring_check_device() was called */
    QEMUBH *pin_warning_bh;
    VMChangeStateEntry *vmsh;
    Notifier bufs_changed;

    /*
     * @lock serialises changes to @rings and to the rings' image, and ring
     * set-up against them.  The list is changed under the BQL too, but for
     * a node's first ring in its home IOThread; lookups of @rings take only
     * the RCU read lock.
     */
    QemuMutex lock;
    QLIST_HEAD(, UringCtxRing) rings;
    int io_fd;                  /* the rings' image */
    unsigned fd_generation;     /* incremented when @io_fd changes */
    int pending_io_fd;          /* being prepared, or -1 */

    /* Protected by @lock */
    UringRingStats retired;     /* counters of rings no longer current */
    bool ring_error_reported;

    Stat64 fixed_requests;      /* straight from and to registered memory */
    Stat64 bounced_requests;    /* copied through the bounce buffer */
    Stat64 rehomed_requests;    /* run in the home context */
    Stat64 flushes;
};

/*
 * SQ threads: every sqpoll ring of one IOThread shares one, whatever the
 * node, so that an IOThread costs one polling kernel thread; in the main
 * loop, one per setting (see uring_sqpoll_find_locked()).
 */
typedef struct UringSqThreadUser {
    AioContext *ctx;
    UringRing *ring;
    BDRVUringState *s;
    QLIST_ENTRY(UringSqThreadUser) next;
} UringSqThreadUser;

static QemuMutex uring_sq_lock;
static QLIST_HEAD(, UringSqThreadUser) uring_sq_users =
    QLIST_HEAD_INITIALIZER(uring_sq_users);

static void __attribute__((__constructor__)) uring_sq_lock_init(void)
{
    qemu_mutex_init(&uring_sq_lock);
}

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
            .help = "pin guest RAM as fixed buffers (on/off/auto, "
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

static const char *uring_node_name(BDRVUringState *s)
{
    return bdrv_get_node_name(s->bs);
}

/* "any" or the CPU number, for messages */
static char *uring_sqpoll_cpu_str(int cpu)
{
    return cpu < 0 ? g_strdup("any") : g_strdup_printf("%d", cpu);
}

/*
 * In @attach_fd, the ring to attach a new sqpoll ring of @s in @ctx to, or
 * -1 for a new SQ thread; false if @ctx has an SQ thread that @s cannot
 * share.  All sqpoll rings of an IOThread share one SQ thread, so its
 * nodes must want the same one; nodes in different IOThreads have SQ
 * threads of their own.  In the main loop, which every node uses at open
 * whatever IOThread its device has, nodes with other settings get an SQ
 * thread of their own.  Called with uring_sq_lock held.
 */
static bool uring_sqpoll_find_locked(BDRVUringState *s, AioContext *ctx,
                                     int *attach_fd, Error **errp)
{
    UringSqThreadUser *u;

    *attach_fd = -1;
    QLIST_FOREACH(u, &uring_sq_users, next) {
        g_autofree char *mine = NULL;
        g_autofree char *theirs = NULL;

        if (u->ctx != ctx) {
            continue;
        }
        if (u->s->sqpoll_cpu == s->sqpoll_cpu &&
            u->s->sqpoll_idle == s->sqpoll_idle) {
            *attach_fd = uring_ring_fd(u->ring);
            return true;
        }
        if (ctx == qemu_get_aio_context()) {
            continue;
        }
        mine = uring_sqpoll_cpu_str(s->sqpoll_cpu);
        theirs = uring_sqpoll_cpu_str(u->s->sqpoll_cpu);
        error_setg(errp, "Node '%s' (sqpoll-cpu=%s, sqpoll-idle=%u) cannot "
                   "share the SQ thread of node '%s' (sqpoll-cpu=%s, "
                   "sqpoll-idle=%u)",
                   uring_node_name(s), mine, s->sqpoll_idle,
                   uring_node_name(u->s), theirs, u->s->sqpoll_idle);
        error_append_hint(errp, "All uring nodes with sqpoll=on in one "
                          "IOThread share one SQ thread: give them the "
                          "same sqpoll-cpu and sqpoll-idle.\n");
        return false;
    }
    return true;
}

static void uring_sqpoll_forget(UringRing *ring)
{
    UringSqThreadUser *u;

    QEMU_LOCK_GUARD(&uring_sq_lock);
    QLIST_FOREACH(u, &uring_sq_users, next) {
        if (u->ring == ring) {
            QLIST_REMOVE(u, next);
            g_free(u);
            return;
        }
    }
}

/*
 * Create a ring for @s in @ctx, in @ctx's thread, on @fd, holding the
 * buffer table's current generation (returned in @generation).  Called
 * with @s->lock held, so that the image does not change meanwhile.  Where
 * rings cannot clone the table (before Linux 6.12) this pins all of it
 * again, under the locks: seconds per GiB.
 */
static UringRing *uring_ctx_ring_create_locked(BDRVUringState *s,
                                               AioContext *ctx, int fd,
                                               uint64_t *generation,
                                               Error **errp)
{
    UringRingConfig cfg = {
        .entries = s->queue_depth,
        .fd = fd,
        .sqpoll = s->sqpoll,
        .sqpoll_cpu = s->sqpoll_cpu,
        .sqpoll_idle_ms = s->sqpoll_idle,
        .attach_wq_fd = -1,
    };
    UringBufsSnapshot snap;
    UringRing *ring;

    QEMU_LOCK_GUARD(&uring_sq_lock);
    if (s->sqpoll && !uring_sqpoll_find_locked(s, ctx, &cfg.attach_wq_fd,
                                               errp)) {
        return NULL;
    }

    uring_bufs_snapshot_begin(&snap);
    cfg.bufs_ring_fd = snap.ring_fd;
    cfg.bufs = snap.iov;
    cfg.nr_bufs = snap.nr_iov;
    cfg.unpinned = snap.unpinned;
    ring = uring_ring_new(ctx, &cfg, errp);
    *generation = snap.generation;
    uring_bufs_snapshot_end(&snap);

    if (ring && s->sqpoll) {
        UringSqThreadUser *u = g_new(UringSqThreadUser, 1);

        *u = (UringSqThreadUser) { .ctx = ctx, .ring = ring, .s = s };
        QLIST_INSERT_HEAD(&uring_sq_users, u, next);
    }
    return ring;
}

static void uring_ring_stats_add(UringRingStats *sum, UringRing *ring)
{
    UringRingStats st;

    uring_ring_get_stats(ring, &st);
    sum->rw_requests += st.rw_requests;
    sum->flushes += st.flushes;
    sum->sq_wakeups += st.sq_wakeups;
    sum->submit_calls += st.submit_calls;
    sum->submit_retries += st.submit_retries;
    sum->queued += st.queued;
}

/*
 * The node lets go of @ring, in the ring's thread: new rings no longer
 * share its SQ thread, and it is freed when the last request on it is
 * done.  Called with @s->lock held.
 */
static void uring_ctx_ring_retire_locked(BDRVUringState *s, UringRing *ring)
{
    uring_ring_stats_add(&s->retired, ring);
    uring_sqpoll_forget(ring);
    uring_ring_unref(ring);
}

/*
 * Whether @cr's ring must be replaced: it lacks memory of the buffer
 * table, holds an older image description, or is broken.  In @cr's thread.
 */
static bool uring_ctx_ring_is_stale(UringCtxRing *cr)
{
    return cr->generation != uring_bufs_generation() ||
           cr->fd_generation != qatomic_read(&cr->s->fd_generation) ||
           uring_ring_broken(cr->ring);
}

/*
 * Make a ring of the node's current image and buffer table @cr's ring,
 * the one prepared for the image if it still holds the current table, or
 * a new one; the old ring is retired.  In @cr's thread, any time: requests
 * that use the old ring keep it.
 */
static bool uring_ctx_ring_renew(UringCtxRing *cr, Error **errp)
{
    BDRVUringState *s = cr->s;
    UringRing *old = cr->ring, *ring = NULL;
    uint64_t generation;

    assert(cr->ctx == qemu_get_current_aio_context());
    QEMU_LOCK_GUARD(&s->lock);
    if (cr->removed) {
        return true;
    }
    if (cr->pending && cr->pending_fd_generation <= s->fd_generation) {
        /* Prepared for the image that is current now, or an older one */
        ring = g_steal_pointer(&cr->pending);
        generation = cr->pending_generation;
        if (cr->pending_fd_generation != s->fd_generation ||
            generation != uring_bufs_generation()) {
            uring_ctx_ring_retire_locked(s, ring);
            ring = NULL;
        }
    }
    if (!ring) {
        ring = uring_ctx_ring_create_locked(s, cr->ctx, s->io_fd,
                                            &generation, errp);
        if (!ring) {
            return false;
        }
    }
    cr->ring = ring;
    cr->generation = generation;
    cr->fd_generation = s->fd_generation;
    trace_uring_ctx_ring_renew(s->bs, cr->ctx, old, ring, generation,
                               cr->fd_generation);
    uring_ctx_ring_retire_locked(s, old);
    return true;
}

/*
 * A ring could not be set up where a request needs one: say so once per
 * node, as requests cannot report errors but as their errno
 */
static void uring_report_ring_error(BDRVUringState *s, Error *err)
{
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        if (!s->ring_error_reported) {
            s->ring_error_reported = true;
            error_reportf_err(err, "uring: node '%s': ", uring_node_name(s));
            return;
        }
    }
    error_free(err);
}

/*
 * Renew a stale ring.  If that fails, a ring of the current image with an
 * older table still works, with the memory it has; one of an older image
 * takes no more requests, see uring_ctx_ring_get().
 */
static void uring_ctx_ring_refresh(UringCtxRing *cr)
{
    Error *local_err = NULL;

    if (!uring_ctx_ring_renew(cr, &local_err)) {
        uring_report_ring_error(cr->s, local_err);
    }
}

static void uring_ctx_ring_refresh_bh(void *opaque)
{
    UringCtxRing *cr = opaque;

    if (uring_ctx_ring_is_stale(cr)) {
        uring_ctx_ring_refresh(cr);
    }
}

/*
 * A node with registered memory pins guest RAM, or tries to: postcopy and
 * background snapshots, which it prevents, name it in their refusal.
 */
static void uring_name_ram_pinner(BDRVUringState *s, bool pins)
{
    g_autofree char *name = g_strdup_printf("uring node '%s'",
                                            uring_node_name(s));

    if (pins) {
        ram_block_discard_disabler_add(name);
    } else {
        ram_block_discard_disabler_remove(name);
    }
}

/*
 * Whether some of the memory registered with the node could not be pinned;
 * if so, @errp says how much and why, with what the whole process needs.
 */
static bool uring_pin_failure(BDRVUringState *s, Error **errp)
{
    uint64_t failed = 0;
    int err = 0;
    unsigned i;

    for (i = 0; i < s->registered->len; i++) {
        UringRange *r = &g_array_index(s->registered, UringRange, i);
        uint64_t generation;
        int state = uring_bufs_state(r->host, r->size, &generation);

        if (state < 0) {
            failed += r->size;
            err = err ?: state;
        }
    }
    if (!failed) {
        return false;
    }
    error_setg_errno(errp, -err, "uring: node '%s': %" PRIu64 " KiB of the "
                     "memory registered with it cannot be pinned as "
                     "io_uring fixed buffers", uring_node_name(s),
                     failed / KiB);
    uring_bufs_error_hint(err, errp);
    return true;
}

/* Whether @bs is @top or below it */
static bool GRAPH_RDLOCK uring_bs_is_below(BlockDriverState *top,
                                           BlockDriverState *bs)
{
    BdrvChild *child;

    if (top == bs) {
        return true;
    }
    QLIST_FOREACH(child, &top->children, next) {
        if (uring_bs_is_below(child->bs, bs)) {
            return true;
        }
    }
    return false;
}

/*
 * When the guest first runs, tell once (a trace event) that a device over
 * the node registers no guest RAM, so that all of its requests are copied
 * through the bounce buffer.  Not a message: such devices are common
 * (-drive puts an IDE disk on a PC), and the node's statistics say it as
 * well (registered-bytes).  virtio-blk, scsi-hd and scsi-cd (under any SCSI
 * controller), NVMe namespaces and the vhost-user-blk export register it;
 * IDE, AHCI, floppy and USB storage do not.  Only with fixed-buffers=auto:
 * "on" fails such a device, and an unpinned process bounces everything
 * anyway.  Under the BQL.
 */
static void uring_check_device(BDRVUringState *s)
{
    BlockBackend *blk = NULL;

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    s->device_checked = true;
    if (s->fixed_buffers != ON_OFF_AUTO_AUTO || s->registered->len ||
        uring_bufs_unpinned()) {
        return;
    }
    while ((blk = blk_all_next(blk))) {
        DeviceState *dev = blk_get_attached_dev(blk);
        g_autofree char *id = NULL;

        if (!dev || !dev->realized || !blk_bs(blk) ||
            !uring_bs_is_below(blk_bs(blk), s->bs)) {
            continue;
        }
        id = blk_get_attached_dev_id(blk);
        trace_uring_device_without_ram(id, uring_node_name(s));
        return;
    }
}

/*
 * With fixed-buffers=auto, warn once about memory that cannot be pinned.
 * Not before the guest runs, so that QEMU has registered all guest RAM
 * (ACPI tables come after the devices) and the warning can say what all
 * of it needs; not from the registration, which is inside realize.
 */
static void uring_pin_warning_bh(void *opaque)
{
    BDRVUringState *s = opaque;
    Error *local_err = NULL;

    if (runstate_check(RUN_STATE_PRELAUNCH) ||
        runstate_check(RUN_STATE_INMIGRATE)) {
        return;     /* uring_vm_state_change() calls again */
    }
    if (!s->device_checked) {
        uring_check_device(s);
    }
    if (uring_bufs_unpinned()) {
        s->pin_warned = true;   /* uring_bufs_ref() warned for the process */
    } else if (!s->pin_warned && uring_pin_failure(s, &local_err)) {
        s->pin_warned = true;
        error_append_hint(&local_err, "Requests to that memory are copied "
                          "through a bounce buffer.\n");
        warn_report_err(local_err);
    }
}

static void uring_vm_state_change(void *opaque, bool running,
                                  RunState state)
{
    BDRVUringState *s = opaque;

    if (running && (!s->pin_warned || !s->device_checked)) {
        qemu_bh_schedule(s->pin_warning_bh);
    }
}

/* A new generation of the buffer table, or a failure: under the BQL */
static void uring_bufs_changed(Notifier *n, void *data)
{
    BDRVUringState *s = container_of(n, BDRVUringState, bufs_changed);
    UringCtxRing *cr;

    if (s->fixed_buffers != ON_OFF_AUTO_OFF && !s->pin_warned) {
        qemu_bh_schedule(s->pin_warning_bh);
    }
    QEMU_LOCK_GUARD(&s->lock);
    QLIST_FOREACH(cr, &s->rings, next) {
        qemu_bh_schedule(cr->refresh_bh);
    }
}

/*
 * Add the ring of @ctx, in @ctx's thread; or return the one there is.
 */
static UringCtxRing *uring_ctx_ring_add(BDRVUringState *s, AioContext *ctx,
                                        Error **errp)
{
    UringCtxRing *cr;

    assert(ctx == qemu_get_current_aio_context());
    QEMU_LOCK_GUARD(&s->lock);

    QLIST_FOREACH(cr, &s->rings, next) {
        if (cr->ctx == ctx) {
            return cr;
        }
    }

    cr = g_new0(UringCtxRing, 1);
    cr->s = s;
    cr->ctx = ctx;
    cr->fd_generation = s->fd_generation;
    cr->ring = uring_ctx_ring_create_locked(s, ctx, s->io_fd,
                                            &cr->generation, errp);
    if (!cr->ring) {
        g_free(cr);
        return NULL;
    }
    cr->refresh_bh = aio_bh_new(ctx, uring_ctx_ring_refresh_bh, cr);
    QLIST_INSERT_HEAD_RCU(&s->rings, cr, next);
    trace_uring_ctx_ring_add(s->bs, ctx, cr->ring);
    return cr;
}

typedef struct UringInCtx {
    QEMUBHFunc *fn;
    void *opaque;
    QemuEvent done;
} UringInCtx;

static void uring_in_ctx_bh(void *opaque)
{
    UringInCtx *c = opaque;

    c->fn(c->opaque);
    qemu_event_set(&c->done);
}

/*
 * Run @fn(@opaque) in @ctx's thread and wait for it.  Rings are set up
 * and freed that way, in the thread that polls them.
 *
 * This may run under the graph write lock: a node that a BlockBackend
 * gets or loses as its root (bdrv_replace_child) is given or loses the
 * device's contexts then.  So it must not run a nested main loop, as
 * aio_wait_bh_oneshot() would: a main-loop BH that takes the lock (the
 * deletion of another export, say) would find it taken.  It waits for
 * @ctx's thread alone, which needs nothing from this thread to run @fn.
 */
static void uring_run_in_ctx(AioContext *ctx, QEMUBHFunc *fn, void *opaque)
{
    UringInCtx c = { .fn = fn, .opaque = opaque };

    GLOBAL_STATE_CODE();
    if (ctx == qemu_get_aio_context()) {
        fn(opaque);
        return;
    }
    qemu_event_init(&c.done, false);
    aio_bh_schedule_oneshot(ctx, uring_in_ctx_bh, &c);
    qemu_event_wait(&c.done);
    qemu_event_destroy(&c.done);
}

/* Drop a ring prepared for an image description; with @s->lock held */
static void uring_ctx_ring_drop_pending_locked(UringCtxRing *cr)
{
    if (cr->pending) {
        uring_ctx_ring_retire_locked(cr->s, g_steal_pointer(&cr->pending));
    }
}

static void uring_ctx_ring_free_bh(void *opaque)
{
    UringCtxRing *cr = opaque;
    BDRVUringState *s = cr->s;

    qemu_bh_delete(cr->refresh_bh);
    QEMU_LOCK_GUARD(&s->lock);
    uring_ctx_ring_drop_pending_locked(cr);
    uring_ctx_ring_retire_locked(s, cr->ring);
}

/*
 * Unlink @cr and let go of its ring, in the ring's thread, which may be
 * polling it right now.  Requests that still use the ring keep it until
 * they are done, so this does not depend on the node being drained.
 * Under the BQL.
 */
static void uring_ctx_ring_remove(BDRVUringState *s, UringCtxRing *cr)
{
    GLOBAL_STATE_CODE();

    WITH_QEMU_LOCK_GUARD(&s->lock) {
        QLIST_REMOVE_RCU(cr, next);
        cr->removed = true;
    }
    trace_uring_ctx_ring_remove(s->bs, cr->ctx, cr->ring);
    uring_run_in_ctx(cr->ctx, uring_ctx_ring_free_bh, cr);
    g_free_rcu(cr, rcu);
}

/*
 * The node's UringCtxRings, for the main loop to walk without holding
 * @s->lock: under the BQL only the home IOThread's first request adds one,
 * and none goes.
 */
static GPtrArray *uring_ctx_rings(BDRVUringState *s)
{
    GPtrArray *rings = g_ptr_array_new();
    UringCtxRing *cr;

    GLOBAL_STATE_CODE();
    QEMU_LOCK_GUARD(&s->lock);
    QLIST_FOREACH(cr, &s->rings, next) {
        g_ptr_array_add(rings, cr);
    }
    return rings;
}

static UringCtxRing *uring_ctx_ring_find(BDRVUringState *s, AioContext *ctx)
{
    UringCtxRing *cr;

    RCU_READ_LOCK_GUARD();
    QLIST_FOREACH_RCU(cr, &s->rings, next) {
        if (cr->ctx == ctx) {
            return cr;
        }
    }
    return NULL;
}

/*
 * The image as a file description of the rings' own: the locks stay on
 * file-posix's @fd, which no ring holds.
 */
static int uring_open_io_fd(int fd, int open_flags, Error **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    int io_fd;

    io_fd = qemu_open(path, open_flags & ~(O_CREAT | O_EXCL | O_TRUNC),
                      NULL);
    if (io_fd < 0) {
        /*
         * No /proc: share file-posix's description.  Its locks then live
         * as long as the rings, which after a crash is a few milliseconds
         * longer than the process.
         */
        warn_report_once("uring: cannot reopen images through /proc/self/fd "
                         "(%s); image locks may outlive an unclean exit "
                         "of QEMU by a few milliseconds", strerror(errno));
        io_fd = qemu_dup(fd);
        if (io_fd < 0) {
            error_setg_errno(errp, errno, "Cannot duplicate the image fd");
        }
    }
    return io_fd;
}

BDRVUringState *uring_state_new(BlockDriverState *bs, QDict *options,
                                Error **errp)
{
    BDRVUringState *s = g_new0(BDRVUringState, 1);

    s->bs = bs;
    s->io_fd = -1;
    s->pending_io_fd = -1;
    if (!uring_parse_opts(s, options, errp)) {
        g_free(s);
        return NULL;
    }
    qemu_mutex_init(&s->lock);
    QLIST_INIT(&s->rings);
    s->registered = g_array_new(false, false, sizeof(UringRange));
    s->bufs_changed.notify = uring_bufs_changed;
    s->pin_warning_bh = aio_bh_new(qemu_get_aio_context(),
                                   uring_pin_warning_bh, s);
    if (s->fixed_buffers != ON_OFF_AUTO_OFF) {
        s->vmsh = qemu_add_vm_change_state_handler(uring_vm_state_change, s);
    }
    /* The tools have no guest, and no devices to name (the stub is NULL) */
    s->device_checked = !s->vmsh;
    return s;
}

/*
 * Second half of open, once file-posix has opened @fd.  A node in the main
 * loop gets its ring now: that checks that this host lets us create a
 * restricted ring, so that a kernel without io_uring (or with it disabled)
 * fails blockdev-add rather than the first request.
 */
bool uring_state_start(BDRVUringState *s, int fd, int open_flags,
                       Error **errp)
{
    ERRP_GUARD();
    AioContext *ctx = bdrv_get_aio_context(s->bs);

    if (!uring_bufs_ref(errp)) {
        goto fail;
    }
    uring_bufs_add_listener(&s->bufs_changed);
    s->io_fd = uring_open_io_fd(fd, open_flags, errp);
    if (s->io_fd < 0) {
        goto fail;
    }
    if (ctx == qemu_get_current_aio_context() &&
        !uring_ctx_ring_add(s, ctx, errp)) {
        goto fail;
    }
    return true;

fail:
    error_prepend(errp, "uring: ");
    return false;
}

/* The node closes: it is drained and has no parents */
void uring_state_free(BDRVUringState *s)
{
    UringCtxRing *cr;
    unsigned i;

    assert(s->pending_io_fd < 0);
    while ((cr = QLIST_FIRST(&s->rings))) {
        uring_ctx_ring_remove(s, cr);
    }
    if (s->io_fd >= 0) {
        qemu_close(s->io_fd);
    }
    for (i = 0; i < s->registered->len; i++) {
        UringRange *r = &g_array_index(s->registered, UringRange, i);

        uring_bufs_unregister(r->host, r->size);
    }
    if (s->registered->len) {
        uring_name_ram_pinner(s, false);
    }
    g_array_free(s->registered, true);
    if (s->bufs_changed.notify && QLIST_IS_INSERTED(&s->bufs_changed,
                                                    node)) {
        uring_bufs_remove_listener(&s->bufs_changed);
        uring_bufs_unref();
    }
    if (s->vmsh) {
        qemu_del_vm_change_state_handler(s->vmsh);
    }
    qemu_bh_delete(s->pin_warning_bh);
    qemu_mutex_destroy(&s->lock);
    g_free(s);
}

typedef struct UringPrepareFd {
    UringCtxRing *cr;
    Error *err;
} UringPrepareFd;

/* In the ring's thread: a ring of the image being prepared */
static void uring_ctx_ring_prepare_fd_bh(void *opaque)
{
    UringPrepareFd *p = opaque;
    UringCtxRing *cr = p->cr;
    BDRVUringState *s = cr->s;

    /*
     * The ring may not have switched to the ring prepared for the last
     * change yet (its refresh_bh has not run): switch first, so that the
     * new pending ring does not replace one that the current image needs
     */
    if (cr->fd_generation != qatomic_read(&s->fd_generation)) {
        uring_ctx_ring_refresh(cr);
    }
    QEMU_LOCK_GUARD(&s->lock);
    uring_ctx_ring_drop_pending_locked(cr);
    cr->pending = uring_ctx_ring_create_locked(s, cr->ctx, s->pending_io_fd,
                                               &cr->pending_generation,
                                               &p->err);
    cr->pending_fd_generation = s->fd_generation + 1;
    if (cr->pending) {
        trace_uring_ctx_ring_pending(s->bs, cr->ctx, cr->pending,
                                     s->fd_generation + 1);
    }
}

static void uring_ctx_ring_abort_fd_bh(void *opaque)
{
    UringCtxRing *cr = opaque;

    QEMU_LOCK_GUARD(&cr->s->lock);
    uring_ctx_ring_drop_pending_locked(cr);
}

/*
 * Undo uring_state_prepare_fd(): the permission change or reopen failed.
 * Under the BQL.
 */
void uring_state_abort_fd(BDRVUringState *s)
{
    g_autoptr(GPtrArray) rings = NULL;
    int fd;
    unsigned i;

    GLOBAL_STATE_CODE();
    if (s->pending_io_fd < 0) {
        return;
    }
    rings = uring_ctx_rings(s);
    for (i = 0; i < rings->len; i++) {
        UringCtxRing *cr = g_ptr_array_index(rings, i);

        uring_run_in_ctx(cr->ctx, uring_ctx_ring_abort_fd_bh, cr);
    }
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        fd = s->pending_io_fd;
        s->pending_io_fd = -1;
    }
    trace_uring_state_abort_fd(s->bs, fd);
    qemu_close(fd);
}

/*
 * file-posix prepares to change the node's descriptor to @fd (a reopen, or
 * auto-read-only switching modes).  The rings cannot swap their file (no
 * register call is allowed), so each context gets a new ring of the new
 * description now, in the prepare phase, so that a failure fails the
 * change; uring_state_commit_fd() or uring_state_abort_fd() follows.
 * No nested event loop: this runs in the middle of permission updates.
 * Under the BQL.
 */
bool uring_state_prepare_fd(BDRVUringState *s, int fd, int open_flags,
                            Error **errp)
{
    g_autoptr(GPtrArray) rings = NULL;
    int io_fd;
    unsigned i;

    GLOBAL_STATE_CODE();
    /* file-posix commits or aborts each change before it prepares another */
    assert(s->pending_io_fd < 0);
    io_fd = uring_open_io_fd(fd, open_flags, errp);
    if (io_fd < 0) {
        return false;
    }
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        s->pending_io_fd = io_fd;
    }
    trace_uring_state_prepare_fd(s->bs, io_fd);

    rings = uring_ctx_rings(s);
    for (i = 0; i < rings->len; i++) {
        UringPrepareFd p = { .cr = g_ptr_array_index(rings, i) };

        uring_run_in_ctx(p.cr->ctx, uring_ctx_ring_prepare_fd_bh, &p);
        if (p.err) {
            error_propagate_prepend(errp, p.err, "uring: node '%s': cannot "
                                    "set up io_uring for the reopened "
                                    "image: ", uring_node_name(s));
            uring_state_abort_fd(s);
            return false;
        }
    }
    return true;
}

/*
 * The node now uses the descriptor of uring_state_prepare_fd(): from here
 * on, every new request goes to a ring of it.  Each context switches to
 * its prepared ring before its next request, the main loop's now; a ring
 * added since the prepare gets renewed the same way.  Requests on the old
 * rings finish there.  Under the BQL.
 */
void uring_state_commit_fd(BDRVUringState *s)
{
    AioContext *ctx = qemu_get_current_aio_context();
    g_autoptr(GPtrArray) rings = NULL;
    int old_fd;
    unsigned i;

    GLOBAL_STATE_CODE();
    assert(s->pending_io_fd >= 0);
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        old_fd = s->io_fd;
        s->io_fd = s->pending_io_fd;
        s->pending_io_fd = -1;
        qatomic_inc(&s->fd_generation);
    }
    trace_uring_state_commit_fd(s->bs, s->io_fd, s->fd_generation);
    /* The rings hold the file itself, not this descriptor */
    qemu_close(old_fd);

    rings = uring_ctx_rings(s);
    for (i = 0; i < rings->len; i++) {
        UringCtxRing *cr = g_ptr_array_index(rings, i);

        if (cr->ctx == ctx) {
            uring_ctx_ring_refresh(cr);
        } else {
            qemu_bh_schedule(cr->refresh_bh);
        }
    }
}

/* The ring for a request in @ctx, or NULL */
static UringCtxRing *uring_current_ring(BDRVUringState *s, AioContext *ctx)
{
    Error *local_err = NULL;
    UringCtxRing *cr = uring_ctx_ring_find(s, ctx);

    if (cr || ctx != bdrv_get_aio_context(s->bs)) {
        return cr;
    }

    /* First request in the home context of a node outside the main loop */
    cr = uring_ctx_ring_add(s, ctx, &local_err);
    if (!cr) {
        uring_report_ring_error(s, local_err);
    }
    return cr;
}

/* A request copied through the bounce buffer */
typedef struct UringBounce {
    BDRVUringState *s;
    UringRing *ring;
    QEMUIOVector *qiov;
    uint64_t offset;
    bool is_write;
    bool fua;
    Coroutine *co;
    bool waiting;               /* @co waits for the last piece */
    unsigned pieces;            /* in flight */
    int ret;
} UringBounce;

/* One piece of it, in a coroutine of its own so that pieces overlap */
typedef struct UringBouncePiece {
    UringBounce *b;
    size_t pos;
    void *buf;
    size_t len;
} UringBouncePiece;

static void coroutine_fn uring_bounce_piece_entry(void *opaque)
{
    UringBouncePiece *p = opaque;
    UringBounce *b = p->b;
    QEMUIOVector piece;
    int ret;

    qemu_iovec_init_buf(&piece, p->buf, p->len);
    ret = uring_ring_co_rw(b->ring, b->is_write, b->offset + p->pos, &piece,
                           uring_bufs_bounce_index(), b->fua);
    if (ret == 0 && !b->is_write) {
        qemu_iovec_from_buf(b->qiov, p->pos, p->buf, p->len);
    }
    uring_bufs_co_bounce_put(p->buf, p->len);
    if (ret < 0 && b->ret == 0) {
        b->ret = ret;
    }
    g_free(p);
    if (--b->pieces == 0 && b->waiting) {
        aio_co_wake(b->co);
    }
}

/*
 * Copy a request through the bounce buffer, in pieces that are submitted
 * together as far as the buffer has room.  Requests whose memory is not in
 * the table (qemu-img, qemu-io, block jobs, format metadata, guest RAM that
 * is not pinned) and misaligned ones come here.
 */
static int coroutine_fn uring_co_bounce(BDRVUringState *s, UringRing *ring,
                                        uint64_t offset, QEMUIOVector *qiov,
                                        bool is_write, bool fua)
{
    UringBounce b = {
        .s = s,
        .ring = ring,
        .qiov = qiov,
        .offset = offset,
        .is_write = is_write,
        .fua = fua,
        .co = qemu_coroutine_self(),
    };
    size_t pos = 0;

    stat64_add(&s->bounced_requests, 1);
    while (pos < qiov->size && b.ret == 0) {
        UringBouncePiece *p = g_new(UringBouncePiece, 1);

        p->b = &b;
        p->pos = pos;
        p->buf = uring_bufs_co_bounce_get(qiov->size - pos, &p->len);
        if (is_write) {
            qemu_iovec_to_buf(qiov, pos, p->buf, p->len);
        }
        pos += p->len;
        b.pieces++;
        qemu_coroutine_enter(qemu_coroutine_create(uring_bounce_piece_entry,
                                                   p));
    }
    b.waiting = true;
    while (b.pieces > 0) {
        qemu_coroutine_yield();
    }
    return b.ret;
}

/* The ring a request uses, and the buffer-table generation it holds */
typedef struct UringRequestRing {
    UringRing *ring;
    uint64_t generation;
    AioContext *moved_from;     /* the request moved to the home context */
} UringRequestRing;

static int coroutine_fn uring_ring_co_prw(BDRVUringState *s,
                                          UringRequestRing *rr,
                                          uint64_t offset,
                                          QEMUIOVector *qiov, bool is_write,
                                          bool mem_aligned, bool fua)
{
    int index = -1;

    /*
     * BDRV_REQ_REGISTERED_BUF is only a hint (bounce buffers of the block
     * layer lose it, exports set it per session), so the table decides.
     */
    if (s->fixed_buffers != ON_OFF_AUTO_OFF && mem_aligned &&
        (qiov->niov == 1 || uring_ring_has_vectored_fixed(rr->ring))) {
        index = uring_bufs_lookup(qiov, rr->generation);
    }
    if (index < 0) {
        return uring_co_bounce(s, rr->ring, offset, qiov, is_write, fua);
    }
    stat64_add(&s->fixed_requests, 1);
    return uring_ring_co_rw(rr->ring, is_write, offset, qiov, index, fua);
}

/*
 * The ring of @cr for a new request, with a reference for it: the current
 * one, renewed first if it is stale, so that new memory (qemu-io's,
 * hot-plugged guest RAM) serves from the next request on.  Never a ring
 * of an older image description: that may be read-only, or have other
 * caching.  In @cr's thread.
 */
static bool uring_ctx_ring_get(UringCtxRing *cr, UringRequestRing *rr)
{
    if (uring_ctx_ring_is_stale(cr)) {
        uring_ctx_ring_refresh(cr);
    }
    if (cr->fd_generation != qatomic_read(&cr->s->fd_generation)) {
        return false;
    }
    rr->ring = cr->ring;
    rr->generation = cr->generation;
    uring_ring_ref(rr->ring);
    return true;
}

/*
 * Take a ring for a request of the current coroutine.  If the current
 * AioContext has none (no device announced it), the coroutine moves to the
 * node's home context; uring_co_leave() moves it back.
 */
static bool coroutine_fn uring_co_enter(BDRVUringState *s,
                                        UringRequestRing *rr)
{
    AioContext *ctx = qemu_get_current_aio_context();
    AioContext *home = bdrv_get_aio_context(s->bs);
    UringCtxRing *cr = uring_current_ring(s, ctx);

    rr->moved_from = NULL;
    if (!cr && ctx != home) {
        stat64_add(&s->rehomed_requests, 1);
        aio_co_reschedule_self(home);
        rr->moved_from = ctx;
        cr = uring_current_ring(s, home);
    }
    return cr && uring_ctx_ring_get(cr, rr);
}

static void coroutine_fn uring_co_leave(UringRequestRing *rr, bool entered)
{
    if (entered) {
        uring_ring_unref(rr->ring);
    }
    if (rr->moved_from) {
        aio_co_reschedule_self(rr->moved_from);
    }
}

int coroutine_fn uring_co_prw(BDRVUringState *s, uint64_t offset,
                              QEMUIOVector *qiov, bool is_write,
                              bool mem_aligned, BdrvRequestFlags flags)
{
    UringRequestRing rr;
    bool entered;
    int ret = -EIO;

    if (!qiov->size) {
        /* virtio-blk passes zero-length requests on */
        return 0;
    }
    entered = uring_co_enter(s, &rr);
    if (entered) {
        ret = uring_ring_co_prw(s, &rr, offset, qiov, is_write, mem_aligned,
                                flags & BDRV_REQ_FUA);
    }
    uring_co_leave(&rr, entered);
    return ret;
}

int coroutine_fn uring_co_flush(BDRVUringState *s)
{
    UringRequestRing rr;
    bool entered = uring_co_enter(s, &rr);
    int ret = -EIO;

    if (entered) {
        stat64_add(&s->flushes, 1);
        ret = uring_ring_co_flush(rr.ring);
    }
    uring_co_leave(&rr, entered);
    return ret;
}

/*
 * bdrv_register_buf(): called by BlockRAMRegistrar for each guest RAM block,
 * at realize and on hot-plug, by exports for the front-end's memory, by
 * qemu-img and qemu-io, and for a node that joins a graph where memory is
 * registered.
 *
 * This never fails: BlockRAMRegistrar would drop all guest RAM.  Memory
 * that cannot be pinned bounces; with fixed-buffers=auto that is reported
 * once, with fixed-buffers=on the device's bdrv_prepare_io_contexts() at
 * realize fails instead.  Small memory is pinned now, large memory by a
 * worker thread, and during a graph change everything is: nodes are
 * drained then, and the guest would wait.  fixed-buffers=on pins in this
 * thread, but not during a graph change.
 */
bool uring_register_buf(BDRVUringState *s, void *host, size_t size,
                        Error **errp)
{
    UringRange range = { .host = host, .size = size };
    UringBufsPin how = URING_BUFS_PIN_AUTO;

    GLOBAL_STATE_CODE();
    if (s->fixed_buffers == ON_OFF_AUTO_OFF) {
        return true;
    }
    if (bdrv_registrations_inherited()) {
        how = URING_BUFS_PIN_BACKGROUND;
    } else if (s->fixed_buffers == ON_OFF_AUTO_ON) {
        how = URING_BUFS_PIN_NOW;
    }
    g_array_append_val(s->registered, range);
    if (s->registered->len == 1) {
        uring_name_ram_pinner(s, true);
    }
    if (uring_bufs_register(host, size, how) < 0 && !s->pin_warned) {
        qemu_bh_schedule(s->pin_warning_bh);
    }
    return true;
}

/* Harmless for memory that was never registered (or failed to) */
void uring_unregister_buf(BDRVUringState *s, void *host, size_t size)
{
    unsigned i;

    GLOBAL_STATE_CODE();
    for (i = 0; i < s->registered->len; i++) {
        UringRange *r = &g_array_index(s->registered, UringRange, i);

        if (r->host == host && r->size == size) {
            g_array_remove_index_fast(s->registered, i);
            uring_bufs_unregister(host, size);
            if (s->registered->len == 0) {
                uring_name_ram_pinner(s, false);
            }
            return;
        }
    }
}

typedef struct UringPrepare {
    BDRVUringState *s;
    AioContext *ctx;
    Error *err;
} UringPrepare;

/* In the device context's thread: its ring, or an error */
static void uring_prepare_bh(void *opaque)
{
    UringPrepare *p = opaque;

    uring_ctx_ring_add(p->s, p->ctx, &p->err);
}

/*
 * A device will submit requests from @ctxs: set up their rings now, each
 * in its own thread, so that a failure fails the device's realize.
 */
bool uring_prepare_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n, Error **errp)
{
    unsigned i;

    GLOBAL_STATE_CODE();
    if (s->fixed_buffers == ON_OFF_AUTO_ON &&
        !bdrv_registrations_inherited() && uring_pin_failure(s, errp)) {
        error_append_hint(errp, "fixed-buffers=on requires guest RAM to be "
                          "pinned; use fixed-buffers=auto to run without "
                          "it.\n");
        return false;
    }
    for (i = 0; i < n; i++) {
        UringPrepare p = { .s = s, .ctx = ctxs[i] };

        uring_run_in_ctx(ctxs[i], uring_prepare_bh, &p);
        if (p.err) {
            g_autofree char *iothread = iothread_id_by_aio_context(ctxs[i]);
            g_autofree char *where = iothread ?
                g_strdup_printf(" in IOThread '%s'", iothread) : NULL;

            error_propagate_prepend(errp, p.err, "Cannot set up io_uring "
                                    "for node '%s'%s: ", uring_node_name(s),
                                    where ?: "");
            uring_release_io_contexts(s, ctxs, i);
            return false;
        }
        uring_ctx_ring_find(s, ctxs[i])->prepared++;
    }
    return true;
}

/*
 * Drop the ring of @ctx if neither a device nor the node's home context
 * uses it.
 */
static void uring_ctx_ring_maybe_remove(BDRVUringState *s, AioContext *ctx)
{
    UringCtxRing *cr = uring_ctx_ring_find(s, ctx);

    if (cr && !cr->prepared && ctx != bdrv_get_aio_context(s->bs)) {
        uring_ctx_ring_remove(s, cr);
    }
}

/*
 * Undo uring_prepare_io_contexts().  Other users of the node may be
 * submitting meanwhile: their requests keep the rings they use.
 */
void uring_release_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n)
{
    unsigned i;

    GLOBAL_STATE_CODE();
    for (i = 0; i < n; i++) {
        UringCtxRing *cr = uring_ctx_ring_find(s, ctxs[i]);

        if (cr) {
            assert(cr->prepared > 0);
            cr->prepared--;
        }
    }
    for (i = 0; i < n; i++) {
        uring_ctx_ring_maybe_remove(s, ctxs[i]);
    }
}

/* The node leaves its home context (iothread change, unplug) */
void uring_detach_aio_context(BDRVUringState *s)
{
    UringCtxRing *cr = uring_ctx_ring_find(s, bdrv_get_aio_context(s->bs));

    if (cr && !cr->prepared) {
        uring_ctx_ring_remove(s, cr);
    }
}

/*
 * The node joins @new_ctx.  In the main loop its ring is created now, by
 * the main thread, for the same reason as at open.
 */
void uring_attach_aio_context(BDRVUringState *s, AioContext *new_ctx)
{
    Error *local_err = NULL;

    if (new_ctx == qemu_get_current_aio_context() &&
        !uring_ctx_ring_add(s, new_ctx, &local_err)) {
        /* Retried on the first request; not a reason to fail the move */
        warn_report_err(local_err);
    }
}

/*
 * The oldest buffer-table generation that one of the node's current rings
 * holds: memory pinned later is not used yet.
 */
static uint64_t uring_rings_generation(BDRVUringState *s)
{
    uint64_t generation = UINT64_MAX;
    UringCtxRing *cr;

    QEMU_LOCK_GUARD(&s->lock);
    QLIST_FOREACH(cr, &s->rings, next) {
        generation = MIN(generation, cr->generation);
    }
    return generation;
}

/*
 * How requests reach the memory registered with the node, as the rings
 * hold it: memory pinned in the table but not yet in every current ring
 * counts as being pinned.
 */
static UringBufferMode uring_buffer_mode(BDRVUringState *s,
                                         uint64_t *registered,
                                         uint64_t *pinned)
{
    uint64_t held = uring_rings_generation(s);
    unsigned i, n_pinned = 0, n_pending = 0;

    *registered = *pinned = 0;
    if (s->fixed_buffers == ON_OFF_AUTO_OFF) {
        return URING_BUFFER_MODE_OFF;
    }
    for (i = 0; i < s->registered->len; i++) {
        UringRange *r = &g_array_index(s->registered, UringRange, i);
        uint64_t generation;
        int state = uring_bufs_state(r->host, r->size, &generation);

        *registered += r->size;
        if (state > 0 && generation <= held) {
            *pinned += r->size;
            n_pinned++;
        } else if (state >= 0) {
            n_pending++;
        }
    }
    if (s->registered->len == 0) {
        return URING_BUFFER_MODE_NONE;
    } else if (n_pending) {
        return URING_BUFFER_MODE_PINNING;
    } else if (n_pinned == s->registered->len) {
        return URING_BUFFER_MODE_FIXED;
    } else if (n_pinned) {
        return URING_BUFFER_MODE_PARTIAL;
    }
    return URING_BUFFER_MODE_BOUNCE;
}

void uring_get_stats(BDRVUringState *s, BlockStatsSpecificUring *stats)
{
    UringRingStats sum;
    UringBufsInfo bufs;
    UringCtxRing *cr;

    GLOBAL_STATE_CODE();
    uring_bufs_get_info(&bufs);
    stats->buffers = uring_buffer_mode(s, &stats->registered_bytes,
                                       &stats->pinned_bytes);
    stats->shared_buffers = bufs.shared;
    stats->process_pinned_bytes = bufs.pinned_bytes + bufs.bounce_bytes;
    stats->bounce_waits = bufs.bounce_waits;

    QEMU_LOCK_GUARD(&s->lock);
    sum = s->retired;
    stats->rings = 0;
    stats->sqpoll_rings = 0;
    stats->vectored_fixed = false;
    QLIST_FOREACH(cr, &s->rings, next) {
        uring_ring_stats_add(&sum, cr->ring);
        stats->rings++;
        stats->sqpoll_rings += uring_ring_has_sqpoll(cr->ring);
        stats->vectored_fixed |= uring_ring_has_vectored_fixed(cr->ring);
    }
    stats->fixed_requests = stat64_get(&s->fixed_requests);
    stats->bounced_requests = stat64_get(&s->bounced_requests);
    stats->rehomed_requests = stat64_get(&s->rehomed_requests);
    stats->flushes = stat64_get(&s->flushes);
    stats->sq_wakeups = sum.sq_wakeups;
    stats->submit_calls = sum.submit_calls;
    stats->submit_retries = sum.submit_retries;
    stats->queued_requests = sum.queued;
}

void uring_get_info(BDRVUringState *s, ImageInfoSpecificUring *info)
{
    info->sqpoll = s->sqpoll;
    info->has_sqpoll_cpu = s->sqpoll && s->sqpoll_cpu >= 0;
    info->sqpoll_cpu = MAX(s->sqpoll_cpu, 0);
    info->has_sqpoll_idle = s->sqpoll;
    info->sqpoll_idle = s->sqpoll_idle;
    info->queue_depth = s->queue_depth;
    info->fixed_buffers = s->fixed_buffers;
}
