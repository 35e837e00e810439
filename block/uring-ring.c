/*
 * uring block driver: the ring engine
 *
 * One restricted io_uring per AioContext: set-up, submission and
 * completion.  Nothing here knows about BlockDriverState or about where
 * the fixed buffers come from.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/defer-call.h"
#include "qemu/main-loop.h"
#include "qemu/stats64.h"
#include "block/uring-bufs.h"
#include "block/uring-ring.h"
#include "block/uring-sys.h"
#include "trace.h"

typedef struct UringRequest {
    Coroutine *co;
    int ret;                    /* -EINPROGRESS until completed */
    uint8_t type;               /* URING_REQ_* */
    bool fua;
    bool waited;                /* found the SQ or CQ full */
    unsigned retries;           /* resubmissions after -EAGAIN or -EINTR */
    unsigned buf_index;
    uint64_t offset;
    QEMUIOVector *qiov;

    /* Short reads and writes continue with the rest of @qiov */
    size_t done;
    QEMUIOVector rest;

    QSIMPLEQ_ENTRY(UringRequest) next;
} UringRequest;

enum {
    URING_REQ_READ,
    URING_REQ_WRITE,
    URING_REQ_FLUSH,
};

/*
 * A completion that says -EAGAIN or -EINTR is resubmitted, as block/io_uring.c
 * does, but not forever: a file that keeps refusing fails the request.
 */
#define URING_MAX_REQ_RETRIES   64

/*
 * Submissions that fail with a transient error (-EAGAIN, -EBUSY, -EINTR,
 * -ENOMEM) are retried after reaping completions, which is what frees the
 * kernel's resources, and from a timer with a growing delay in case none
 * come.  If they keep failing for that long without any progress, the
 * ring breaks (SQPOLL rings excepted, see uring_ring_submit_failed()).
 */
#define URING_SUBMIT_RETRY_MAX_MS   5000
#define URING_SUBMIT_RETRY_DELAY_MS 100

/*
 * Adaptive polling pays when a completion comes within a few microseconds,
 * sooner than blocking in the event loop and being woken up would cost.
 * When completions take longer (QD1 on most storage, requests that io-wq
 * serves), the IOThread spins through its whole polling window for
 * nothing, or polls until the completion comes and spends on spinning
 * what sleeping would have saved.  So a ring measures how long it waits
 * for each completion while it has requests in flight (a moving average,
 * each new wait weighing 1/2^URING_POLL_AVG_SHIFT) and offers the event
 * loop a poll handler only while that is below URING_POLL_MAX_WAIT_NS.
 * Waits measured while not polling include the wake-up, so a ring comes
 * back to polling only when the storage is clearly fast enough for it.
 */
#define URING_POLL_MAX_WAIT_NS      (10 * SCALE_US)
#define URING_POLL_AVG_SHIFT        3

/*
 * Switching costs an AioHandler and, with fdmon-io_uring, a POLL_REMOVE
 * and a POLL_ADD: polling comes back only once the average is clearly
 * below the limit.  With fdmon-epoll or fdmon-poll (io_uring unavailable
 * to the event loop) a handler without io_poll stops the polling of the
 * whole AioContext, as any such handler does there, until it comes back.
 */
#define URING_POLL_RESUME_WAIT_NS   (URING_POLL_MAX_WAIT_NS / 2)

struct UringRing {
    struct io_uring ring;
    AioContext *ctx;
    bool sqpoll;
    bool vectored_fixed;        /* READV_FIXED and WRITEV_FIXED allowed */
    bool unpinned;              /* READV and WRITEV instead: see config */

    /*
     * Only accessed in @ctx: by its IOThread, or for the main loop's
     * context by whichever thread holds the BQL (the main loop, vCPUs,
     * the migration thread)
     */
    unsigned refcnt;            /* the owner, each user, the CQ walk */
    int broken;                 /* why requests fail at once, or 0 */
    unsigned submit_failures;   /* transient failures in a row */
    int64_t failing_since;      /* ms, QEMU_CLOCK_REALTIME; 0 if not */
    QEMUTimer *retry_timer;     /* a submission retried after a delay */
    unsigned in_flight;         /* SQEs handed to the kernel, not reaped */
    unsigned max_in_flight;     /* CQ size: never more CQEs than that */
    uint64_t locked_bytes;      /* uring_ring_memlock_estimate() */
    QSIMPLEQ_HEAD(, UringRequest) queued;   /* waiting for SQ space */
    QEMUBH *submit_bh;          /* a submission retried */
    bool polled;                /* the event loop polls the CQ */
    int64_t wait_start_ns;      /* a completion is awaited since, or 0 */
    int64_t wait_avg_ns;        /* for a completion: see URING_POLL_* */

    /* Written in @ctx's thread, read anywhere */
    Stat64 rw_requests;
    Stat64 flushes;
    Stat64 sq_wakeups;
    Stat64 submit_calls;
    Stat64 submit_retries;
    Stat64 queued_requests;
};

/*
 * The allow-list installed on every ring.  Reads and writes must name a
 * fixed buffer, which the kernel bounds-checks against the table, so that
 * the ring cannot move data to or from any other memory of the process.
 * The vectored fixed-buffer opcodes are added where the kernel has them.
 *
 * The only register opcode listed is IORING_REGISTER_ENABLE_RINGS, which
 * fails on an enabled ring: the file and buffer tables are frozen.  It is
 * listed because Linux 7.0 restricts register calls only when the list
 * names one (before, any restriction restricted both kinds).
 */
static const uint8_t uring_allowed_sqe_ops[] = {
    IORING_OP_READ_FIXED,       /* into one fixed buffer */
    IORING_OP_WRITE_FIXED,      /* from one fixed buffer */
    IORING_OP_FSYNC,            /* flush */
};

/*
 * The allow-list of an unpinned ring (no locked memory was left for even
 * the bounce buffer): reads and writes of any memory of the process, but
 * still of the registered image only.
 */
static const uint8_t uring_allowed_unpinned_sqe_ops[] = {
    IORING_OP_READV,
    IORING_OP_WRITEV,
    IORING_OP_FSYNC,
};

static int uring_ring_restrict(UringRing *r)
{
    struct io_uring_restriction res[ARRAY_SIZE(uring_allowed_sqe_ops) + 4] = {};
    const uint8_t *ops = r->unpinned ? uring_allowed_unpinned_sqe_ops
                                     : uring_allowed_sqe_ops;
    unsigned n = 0;
    unsigned i;

    QEMU_BUILD_BUG_ON(ARRAY_SIZE(uring_allowed_sqe_ops) !=
                      ARRAY_SIZE(uring_allowed_unpinned_sqe_ops));
    for (i = 0; i < ARRAY_SIZE(uring_allowed_sqe_ops); i++) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = ops[i];
    }
    if (r->vectored_fixed) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = URING_OP_READV_FIXED;
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = URING_OP_WRITEV_FIXED;
    }
    /* Only the registered image: no fd numbers from the SQE */
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
    res[n++].sqe_flags = IOSQE_FIXED_FILE;
    res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
    res[n++].register_op = IORING_REGISTER_ENABLE_RINGS;

    return qemu_io_uring_register_restrictions(&r->ring, res, n);
}

static int uring_ring_enable(UringRing *r)
{
    return qemu_io_uring_enable_rings(&r->ring);
}

/* Whether the kernel has READV_FIXED and WRITEV_FIXED (Linux 6.15) */
static bool uring_ring_probe_vectored_fixed(UringRing *r)
{
    static int cached = -1;
    struct io_uring_probe *probe;

    if (cached >= 0) {
        return cached;
    }
    probe = io_uring_get_probe_ring(&r->ring);
    if (!probe) {
        return false;
    }
    cached = probe->last_op >= URING_OP_WRITEV_FIXED &&
             io_uring_opcode_supported(probe, URING_OP_READV_FIXED) &&
             io_uring_opcode_supported(probe, URING_OP_WRITEV_FIXED);
    io_uring_free_probe(probe);
    return cached;
}

/* Why a ring could not be created (@err from io_uring_queue_init()) */
void uring_ring_setup_hint(int err, Error **errp)
{
    if (err == -EPERM || err == -ENOSYS || err == -EACCES) {
        error_append_hint(errp, "io_uring is not available to this process: "
                          "check the kernel.io_uring_disabled sysctl "
                          "(and kernel.io_uring_group) and any seccomp "
                          "policy of the container runtime.\n");
    } else if (err == -ENOMEM) {
        error_append_hint(errp, "Raise RLIMIT_MEMLOCK (ulimit -l) or "
                          "lower queue-depth.\n");
        uring_bufs_memlock_hint(errp);
    }
}

/*
 * Linux 6.13 and later charge the memory of a ring itself to
 * RLIMIT_MEMLOCK: the SQ and CQ rings and the SQE array, each in pages
 * (of a power-of-two number, this estimate assumes).  The sum for all live
 * rings goes into the hints about that limit.
 */
static uint64_t uring_ring_locked_bytes;

static uint64_t uring_ring_memlock_estimate(const struct io_uring_params *p)
{
    uint64_t page = qemu_real_host_page_size();
    uint64_t rings = 256 + p->cq_entries * sizeof(struct io_uring_cqe) +
                     p->sq_entries * sizeof(uint32_t);
    uint64_t sqes = p->sq_entries * sizeof(struct io_uring_sqe);

    return page * (pow2ceil(DIV_ROUND_UP(rings, page)) +
                   pow2ceil(DIV_ROUND_UP(sqes, page)));
}

/* Any thread */
uint64_t uring_ring_memlock_bytes(void)
{
    return qatomic_read(&uring_ring_locked_bytes);
}

/* Set-up flags that only make the ring faster: retried without them */
#define URING_OPTIONAL_SETUP_FLAGS (IORING_SETUP_ATTACH_WQ | \
                                    IORING_SETUP_COOP_TASKRUN | \
                                    IORING_SETUP_TASKRUN_FLAG)

static int uring_ring_create(UringRing *r, const UringRingConfig *cfg)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_R_DISABLED,
    };
    int ret;

    if (cfg->sqpoll) {
        p.flags |= IORING_SETUP_SQPOLL;
        p.sq_thread_idle = cfg->sqpoll_idle_ms;
        if (cfg->sqpoll_cpu >= 0) {
            p.flags |= IORING_SETUP_SQ_AFF;
            p.sq_thread_cpu = cfg->sqpoll_cpu;
        }
        if (cfg->attach_wq_fd >= 0) {
            p.flags |= IORING_SETUP_ATTACH_WQ;
            p.wq_fd = cfg->attach_wq_fd;
        }
    } else if (r->ctx != qemu_get_aio_context() ||
               qemu_main_context_single_threaded()) {
        /*
         * Completions from io-wq workers and from interrupts are posted by
         * task work in the submitting thread.  By default each one
         * interrupts the thread with an IPI even while it is busy; with
         * COOP_TASKRUN the work waits for the thread's next system call,
         * and TASKRUN_FLAG shows polling that it is pending (Linux 5.19).
         * That is right where one thread submits to the ring and polls it:
         * an IOThread, and the main loop of the tools (qemu-img, qemu-io,
         * qemu-nbd, qemu-storage-daemon).  Not for the main loop's context
         * in the system emulator: vCPU threads and the migration thread
         * submit there too, holding the BQL, and then run guest code or
         * wait, for the BQL or for the very request, without a system call
         * that would run the work.
         */
        p.flags |= IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    }

    ret = io_uring_queue_init_params(cfg->entries, &r->ring, &p);
    if (ret == -EINVAL && (p.flags & URING_OPTIONAL_SETUP_FLAGS)) {
        /* Older kernel, or a @wq_fd that cannot be shared */
        p = (struct io_uring_params) {
            .flags = p.flags & ~URING_OPTIONAL_SETUP_FLAGS,
            .sq_thread_idle = p.sq_thread_idle,
            .sq_thread_cpu = p.sq_thread_cpu,
        };
        ret = io_uring_queue_init_params(cfg->entries, &r->ring, &p);
    }
    if (ret == 0) {
        r->max_in_flight = p.cq_entries;
        r->locked_bytes = uring_ring_memlock_estimate(&p);
        qatomic_add(&uring_ring_locked_bytes, r->locked_bytes);
    }
    return ret;
}

static int uring_ring_add_buffers(UringRing *r, const UringRingConfig *cfg,
                                  Error **errp)
{
    int ret;

    if (cfg->bufs_ring_fd >= 0) {
        ret = uring_sys_clone_buffers(&r->ring, cfg->bufs_ring_fd);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to clone io_uring fixed "
                             "buffers");
        }
        return ret;
    }
    ret = io_uring_register_buffers(&r->ring, cfg->bufs, cfg->nr_bufs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to register %u io_uring fixed "
                         "buffers", cfg->nr_bufs);
        uring_ring_setup_hint(ret, errp);
    }
    return ret;
}

/*
 * Register everything the ring will ever use, then restrict and enable it.
 * Setup steps follow the kernel's rule that register calls are only
 * unrestricted while the ring is disabled.
 */
static int uring_ring_setup(UringRing *r, const UringRingConfig *cfg,
                            Error **errp)
{
    int ret;

    ret = uring_ring_create(r, cfg);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create io_uring");
        uring_ring_setup_hint(ret, errp);
        return ret;
    }
    r->unpinned = cfg->unpinned;
    r->vectored_fixed = !r->unpinned && uring_ring_probe_vectored_fixed(r);

    ret = io_uring_register_files(&r->ring, &cfg->fd, 1);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to register the image as "
                         "io_uring fixed file");
        goto fail;
    }
    ret = r->unpinned ? 0 : uring_ring_add_buffers(r, cfg, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = uring_ring_restrict(r);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to install io_uring "
                         "restrictions (Linux 5.10 or later is required)");
        goto fail;
    }
    ret = uring_ring_enable(r);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to enable io_uring");
        goto fail;
    }
    trace_uring_ring_restricted(r, ARRAY_SIZE(uring_allowed_sqe_ops) +
                                (r->vectored_fixed ? 2 : 0));
    return 0;

fail:
    io_uring_queue_exit(&r->ring);
    qatomic_sub(&uring_ring_locked_bytes, r->locked_bytes);
    return ret;
}

static void uring_ring_process_completions(UringRing *r);

/*
 * The ring fd itself polls readable while the CQ holds entries: no eventfd
 * to signal for every completion and to read back in the event loop.
 */
static void uring_ring_completion_cb(void *opaque)
{
    uring_ring_process_completions(opaque);
}

/*
 * Adaptive polling: CQEs are visible in shared memory, and so is completion
 * work that the kernel holds back for this thread (COOP_TASKRUN).  That
 * work is run here, and progress reported only if it posted completions:
 * the event loop widens its polling window for handlers that report
 * progress.
 */
static bool uring_ring_poll_cb(void *opaque)
{
    UringRing *r = opaque;

    if (io_uring_cq_ready(&r->ring)) {
        return true;
    }
    if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN) {
        io_uring_get_events(&r->ring);
        return io_uring_cq_ready(&r->ring) > 0;
    }
    return false;
}

/* Reap completions on readiness of the ring fd, and by polling if @poll */
static void uring_ring_set_handler(UringRing *r, bool poll)
{
    r->polled = poll;
    aio_set_fd_handler(r->ctx, r->ring.ring_fd, uring_ring_completion_cb,
                       NULL, poll ? uring_ring_poll_cb : NULL,
                       poll ? uring_ring_completion_cb : NULL, r);
}

/*
 * Completions came at @reaped and were processed: account for the wait,
 * start the next one, and poll for completions only if they come soon
 * enough (see URING_POLL_MAX_WAIT_NS)
 */
static void uring_ring_account_wait(UringRing *r, int64_t reaped)
{
    bool poll;

    if (r->wait_start_ns) {
        r->wait_avg_ns += (reaped - r->wait_start_ns - r->wait_avg_ns) >>
                          URING_POLL_AVG_SHIFT;
    }
    r->wait_start_ns = r->in_flight ? qemu_clock_get_ns(QEMU_CLOCK_REALTIME)
                                    : 0;
    poll = r->wait_avg_ns < (r->polled ? URING_POLL_MAX_WAIT_NS
                                       : URING_POLL_RESUME_WAIT_NS);
    if (poll != r->polled) {
        trace_uring_ring_polling(r, poll, r->wait_avg_ns);
        uring_ring_set_handler(r, poll);
    }
}

static void uring_ring_submit_bh(void *opaque);

/*
 * Create, restrict and enable a ring for @ctx, and start reaping its
 * completions there.  Must be called in @ctx.
 */
UringRing *uring_ring_new(AioContext *ctx, const UringRingConfig *cfg,
                          Error **errp)
{
    UringRing *r = g_new0(UringRing, 1);

    assert(ctx == qemu_get_current_aio_context());
    r->ctx = ctx;
    r->refcnt = 1;
    r->sqpoll = cfg->sqpoll;
    QSIMPLEQ_INIT(&r->queued);

    if (uring_ring_setup(r, cfg, errp) < 0) {
        g_free(r);
        return NULL;
    }
    r->submit_bh = aio_bh_new(ctx, uring_ring_submit_bh, r);
    r->retry_timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS,
                                   uring_ring_submit_bh, r);
    uring_ring_set_handler(r, true);
    trace_uring_ring_new(r, ctx, cfg->entries, cfg->sqpoll,
                         cfg->attach_wq_fd, cfg->bufs_ring_fd >= 0,
                         r->ring.ring_fd);
    return r;
}

/* Whether no request is queued or in flight */
bool uring_ring_is_idle(UringRing *r)
{
    return r->in_flight == 0 && QSIMPLEQ_EMPTY(&r->queued);
}

/* 0, or the error that every request on the ring now fails with */
int uring_ring_broken(UringRing *r)
{
    return r->broken;
}

static void uring_ring_destroy(UringRing *r)
{
    assert(uring_ring_is_idle(r));
    trace_uring_ring_free(r);
    aio_set_fd_handler(r->ctx, r->ring.ring_fd, NULL, NULL, NULL, NULL, NULL);
    qemu_bh_delete(r->submit_bh);
    timer_free(r->retry_timer);
    io_uring_queue_exit(&r->ring);
    qatomic_sub(&uring_ring_locked_bytes, r->locked_bytes);
    g_free(r);
}

/*
 * A ring lives as long as someone holds a reference: the one who created
 * it (until it retires the ring), every request that uses it, and the
 * completion walk, so that a request whose coroutine drops the last
 * reference of a retired ring from its completion callback does not free
 * the ring under the walk.  In the ring's AioContext only; the ring must be
 * idle when the last reference goes, which its users ensure.
 */
void uring_ring_ref(UringRing *r)
{
    assert(r->ctx == qemu_get_current_aio_context());
    r->refcnt++;
}

void uring_ring_unref(UringRing *r)
{
    assert(r->ctx == qemu_get_current_aio_context());
    assert(r->refcnt > 0);
    if (--r->refcnt == 0) {
        uring_ring_destroy(r);
    }
}

int uring_ring_fd(UringRing *r)
{
    return r->ring.ring_fd;
}

bool uring_ring_has_sqpoll(UringRing *r)
{
    return r->sqpoll;
}

bool uring_ring_has_vectored_fixed(UringRing *r)
{
    return r->vectored_fixed;
}

/* Whether the event loop polls the ring's CQ now (URING_POLL_MAX_WAIT_NS) */
bool uring_ring_is_polled(UringRing *r)
{
    return r->polled;
}

/* May be called from any thread */
void uring_ring_get_stats(UringRing *r, UringRingStats *stats)
{
    *stats = (UringRingStats) {
        .rw_requests = stat64_get(&r->rw_requests),
        .flushes = stat64_get(&r->flushes),
        .sq_wakeups = stat64_get(&r->sq_wakeups),
        .submit_calls = stat64_get(&r->submit_calls),
        .submit_retries = stat64_get(&r->submit_retries),
        .queued = stat64_get(&r->queued_requests),
    };
}

/*
 * Fill @sqe for @req.  All of the driver's SQE handling is here: liburing
 * 2.3 has no helpers for the vectored fixed-buffer opcodes.
 */
static void uring_ring_prep_sqe(UringRing *r, UringRequest *req,
                                struct io_uring_sqe *sqe)
{
    QEMUIOVector *qiov = req->done ? &req->rest : req->qiov;
    uint64_t offset = req->offset + req->done;
    bool is_write = req->type == URING_REQ_WRITE;

    if (req->type == URING_REQ_FLUSH) {
        io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
    } else if (r->unpinned) {
        io_uring_prep_rw(is_write ? IORING_OP_WRITEV : IORING_OP_READV,
                         sqe, 0, qiov->iov, qiov->niov, offset);
    } else if (qiov->niov == 1) {
        io_uring_prep_rw(is_write ? IORING_OP_WRITE_FIXED :
                                    IORING_OP_READ_FIXED,
                         sqe, 0, qiov->iov[0].iov_base,
                         qiov->iov[0].iov_len, offset);
        sqe->buf_index = req->buf_index;
    } else {
        io_uring_prep_rw(is_write ? URING_OP_WRITEV_FIXED :
                                    URING_OP_READV_FIXED,
                         sqe, 0, qiov->iov, qiov->niov, offset);
        sqe->buf_index = req->buf_index;
    }
    if (req->fua) {
        sqe->rw_flags = RWF_DSYNC;
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, req);
}

/* Move requests into free SQ slots, bounded by the CQ size */
static void uring_ring_fill_sq(UringRing *r)
{
    UringRequest *req;

    while (!QSIMPLEQ_EMPTY(&r->queued) && r->in_flight < r->max_in_flight) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

        if (!sqe) {
            break;
        }
        req = QSIMPLEQ_FIRST(&r->queued);
        QSIMPLEQ_REMOVE_HEAD(&r->queued, next);
        uring_ring_prep_sqe(r, req, sqe);
        if (!r->in_flight++) {
            r->wait_start_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
        }
    }

    /* The rest waits for completions to make room */
    QSIMPLEQ_FOREACH(req, &r->queued, next) {
        if (!req->waited) {
            req->waited = true;
            stat64_add(&r->queued_requests, 1);
        }
    }
}

static void uring_ring_wake(UringRequest *req, int ret)
{
    req->ret = ret;
    if (!qemu_coroutine_entered(req->co)) {
        aio_co_wake(req->co);
    }
}

/* Fail the requests that wait for room in the SQ, or to be resubmitted */
static void uring_ring_fail_queued(UringRing *r, int err)
{
    UringRequest *req;

    /* Woken requests may drop the last reference of a retired ring */
    uring_ring_ref(r);
    while ((req = QSIMPLEQ_FIRST(&r->queued))) {
        QSIMPLEQ_REMOVE_HEAD(&r->queued, next);
        uring_ring_wake(req, err);
    }
    uring_ring_unref(r);
}

/*
 * io_uring_enter() failed for good (the ring is being torn down, the SQ
 * thread died, ...): no request submitted from now on would complete, so
 * fail those that wait and those the kernel has not taken, and every later
 * one.  Those the kernel took complete as usual.
 */
static void uring_ring_break(UringRing *r, int err)
{
    g_autofree void **retracted = g_new(void *, r->ring.sq.ring_entries);
    unsigned i, n = 0;

    trace_uring_ring_broken(r, err);
    r->broken = err;
    timer_del(r->retry_timer);
    /* No SQ thread takes them meanwhile: see uring_ring_submit_failed() */
    n = uring_sys_sq_retract(&r->ring, retracted);
    r->in_flight -= n;

    /* Woken requests may drop the last reference of a retired ring */
    uring_ring_ref(r);
    for (i = 0; i < n; i++) {
        uring_ring_wake(retracted[i], err);
    }
    uring_ring_fail_queued(r, err);
    uring_ring_unref(r);
}

/*
 * A submission failed with a transient error: try again once completions
 * are reaped, or after a delay, unless it has failed for too long.
 *
 * An SQ thread may take the SQEs in the shared ring at any time, so they
 * can never be taken back while it lives: waking it is retried for as long
 * as it takes, and only its death (-EOWNERDEAD) breaks an SQPOLL ring.
 */
static void uring_ring_submit_failed(UringRing *r, int err)
{
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t delay;

    if (!r->failing_since) {
        r->failing_since = now;
    } else if (!r->sqpoll &&
               now - r->failing_since > URING_SUBMIT_RETRY_MAX_MS) {
        uring_ring_break(r, err);
        return;
    }
    delay = MIN(1LL << MIN(r->submit_failures, 16),
                URING_SUBMIT_RETRY_DELAY_MS);
    r->submit_failures++;
    stat64_add(&r->submit_retries, 1);
    timer_mod(r->retry_timer, now + delay);
}

/* Submitting or reaping worked: the ring makes progress */
static void uring_ring_progress(UringRing *r)
{
    if (r->failing_since) {
        r->failing_since = 0;
        r->submit_failures = 0;
        timer_del(r->retry_timer);
    }
}

/* Whether a failed io_uring_enter() may work when tried again */
static bool uring_ring_submit_error_is_transient(UringRing *r, int err)
{
    if (r->sqpoll) {
        return err != -EOWNERDEAD;
    }
    return err == -EAGAIN || err == -EBUSY || err == -EINTR ||
           err == -ENOMEM;
}

/*
 * Hand the prepared SQEs to the kernel (or to the SQ thread).  In the
 * main loop's AioContext the caller may be any thread that holds the BQL:
 * a vCPU thread (IDE, AHCI, NVMe emulation, virtio without ioeventfd) or
 * one that waits for a request in a nested event loop (bdrv_flush() in
 * the migration thread); it enters the kernel itself, as no other thread
 * may run the context meanwhile.
 *
 * io_uring_submit() first publishes the SQEs in the shared SQ ring, so when
 * the system call fails they stay there and the next io_uring_enter() takes
 * them.  The errors that say so (no memory for the requests now, CQ
 * overflow backlog, a signal) are retried after reaping completions, and
 * from a timer: nothing else would wake this ring up if all of its
 * requests are stuck in the SQ.  Other errors break the ring.
 */
static void uring_ring_submit(UringRing *r)
{
    int ret;

    assert(r->ctx == qemu_get_current_aio_context());
    if (r->broken) {
        /*
         * Requests that the kernel had taken before the break come back
         * here when they complete short or with -EAGAIN: they fail too.
         */
        uring_ring_fail_queued(r, r->broken);
        return;
    }
    uring_ring_fill_sq(r);
    if (!io_uring_sq_ready(&r->ring)) {
        return;
    }
    if (r->sqpoll) {
        /*
         * liburing only enters the kernel when the SQ thread went idle and
         * must be woken; otherwise submission is a store to shared memory.
         */
        if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP) {
            stat64_add(&r->sq_wakeups, 1);
            trace_uring_ring_sq_wakeup(r);
        }
    } else {
        stat64_add(&r->submit_calls, 1);
    }
    ret = io_uring_submit(&r->ring);
    trace_uring_ring_submit(r, ret);
    if (ret < 0 && !uring_ring_submit_error_is_transient(r, ret)) {
        uring_ring_break(r, ret);
    } else if (ret < 0) {
        uring_ring_submit_failed(r, ret);
    } else {
        uring_ring_progress(r);
        if (!r->sqpoll && io_uring_sq_ready(&r->ring)) {
            /*
             * The kernel took fewer SQEs than offered; the others are in
             * the shared ring already and wait for the next
             * io_uring_enter().
             */
            stat64_add(&r->submit_retries, 1);
            qemu_bh_schedule(r->submit_bh);
        }
    }
}

static void uring_ring_submit_bh(void *opaque)
{
    UringRing *r = opaque;

    trace_uring_ring_submit_bh(r);
    uring_ring_process_completions(r);
}

static void uring_ring_deferred_submit(void *opaque)
{
    uring_ring_submit(opaque);
}

static void uring_ring_enqueue(UringRing *r, UringRequest *req)
{
    QSIMPLEQ_INSERT_TAIL(&r->queued, req, next);
    /* Batch: one submission for all requests of a virtqueue notification */
    defer_call(uring_ring_deferred_submit, r);
}

/* Continue a short read or write with the rest of the request */
static bool uring_ring_continue(UringRing *r, UringRequest *req, int res)
{
    size_t size = req->qiov->size;

    if (res == 0) {
        return false;
    }
    req->done += res;
    if (req->done >= size) {
        return false;
    }
    if (!req->rest.iov) {
        qemu_iovec_init(&req->rest, req->qiov->niov);
    }
    qemu_iovec_reset(&req->rest);
    qemu_iovec_concat(&req->rest, req->qiov, req->done, size - req->done);
    trace_uring_ring_short_rw(r, req, req->done, size);
    QSIMPLEQ_INSERT_TAIL(&r->queued, req, next);
    return true;
}

static void uring_ring_complete(UringRing *r, UringRequest *req, int res)
{
    trace_uring_ring_complete(r, req, res);

    if ((res == -EINTR || res == -EAGAIN) &&
        req->retries++ < URING_MAX_REQ_RETRIES) {
        /*
         * Resubmit, like block/io_uring.c does: a partial read or write
         * returning -EAGAIN would otherwise be reported to the guest.
         */
        QSIMPLEQ_INSERT_TAIL(&r->queued, req, next);
        return;
    }
    if (res == -EINVAL && req->type == URING_REQ_READ && req->done > 0) {
        /*
         * An O_DIRECT read that ended short at an end of file that is not
         * aligned continues at an unaligned offset, which the kernel
         * refuses: that is the end of the file, as the thread pool's
         * handle_aiocb_rw_linear() also concludes.
         */
        res = 0;
    }

    if (req->type == URING_REQ_FLUSH || res < 0) {
        req->ret = res < 0 ? res : 0;
    } else if (uring_ring_continue(r, req, res)) {
        return;
    } else if (req->done == req->qiov->size) {
        req->ret = 0;
    } else if (req->type == URING_REQ_READ) {
        /* End of file: the rest reads as zeroes */
        qemu_iovec_memset(req->qiov, req->done, 0,
                          req->qiov->size - req->done);
        req->ret = 0;
    } else {
        req->ret = -ENOSPC;
    }
    uring_ring_wake(req, req->ret);
}

/*
 * Reap CQEs one at a time: each is consumed before its coroutine runs, so
 * a nested event loop in that coroutine sees only the remaining ones.
 */
static void uring_ring_process_completions(UringRing *r)
{
    struct io_uring_cqe *cqe;
    int64_t reaped_ns = 0;

    uring_ring_ref(r);
    /*
     * Completion callbacks often submit the next requests: collect them
     * into one submission, as virtio-blk does for a virtqueue kick.
     */
    defer_call_begin();
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        UringRequest *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        if (!reaped_ns) {
            reaped_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
        }
        io_uring_cqe_seen(&r->ring, cqe);
        r->in_flight--;
        uring_ring_progress(r);
        uring_ring_complete(r, req, res);
    }
    if (reaped_ns) {
        uring_ring_account_wait(r, reaped_ns);
    }
    if (!QSIMPLEQ_EMPTY(&r->queued) || io_uring_sq_ready(&r->ring)) {
        uring_ring_submit(r);
    }
    defer_call_end();
    uring_ring_unref(r);
}

static int coroutine_fn uring_ring_co_do(UringRing *r, UringRequest *req)
{
    assert(r->ctx == qemu_get_current_aio_context());
    if (r->broken) {
        return r->broken;
    }

    req->co = qemu_coroutine_self();
    req->ret = -EINPROGRESS;
    uring_ring_enqueue(r, req);
    while (req->ret == -EINPROGRESS) {
        qemu_coroutine_yield();
    }
    if (req->rest.iov) {
        qemu_iovec_destroy(&req->rest);
    }
    return req->ret;
}

int coroutine_fn uring_ring_co_rw(UringRing *r, bool is_write,
                                  uint64_t offset, QEMUIOVector *qiov,
                                  unsigned buf_index, bool fua)
{
    UringRequest req = {
        .type = is_write ? URING_REQ_WRITE : URING_REQ_READ,
        .fua = fua,
        .buf_index = buf_index,
        .offset = offset,
        .qiov = qiov,
    };

    assert(qiov->niov == 1 || r->vectored_fixed || r->unpinned);
    stat64_add(&r->rw_requests, 1);
    trace_uring_ring_rw(r, is_write, offset, qiov->size, qiov->niov,
                        buf_index);
    return uring_ring_co_do(r, &req);
}

int coroutine_fn uring_ring_co_flush(UringRing *r)
{
    UringRequest req = {
        .type = URING_REQ_FLUSH,
    };

    stat64_add(&r->flushes, 1);
    return uring_ring_co_do(r, &req);
}
