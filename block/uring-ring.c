/*
 * uring block driver: the ring engine
 *
 * One restricted io_uring per AioContext: set-up, submission and
 * completion.  Nothing here knows about BlockDriverState.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <liburing.h>
#include <sys/syscall.h>
#include "qapi/error.h"
#include "qemu/defer-call.h"
#include "qemu/main-loop.h"
#include "block/uring-ring.h"
#include "trace.h"

/* Opcodes from Linux 6.15 that liburing 2.3 does not know */
#define URING_OP_READV_FIXED    60
#define URING_OP_WRITEV_FIXED   61

typedef struct UringRequest {
    Coroutine *co;
    int ret;                    /* -EINPROGRESS until completed */
    uint8_t type;               /* URING_REQ_* */
    bool fua;
    bool waited;                /* found the SQ or CQ full */
    int buf_index;              /* fixed buffer, or URING_NO_BUF */
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

struct UringRing {
    struct io_uring ring;
    AioContext *ctx;
    bool sqpoll;
    bool vectored_fixed;        /* READV_FIXED and WRITEV_FIXED exist */

    /* Only accessed from @ctx's thread */
    unsigned in_flight;         /* SQEs handed to the kernel, not reaped */
    unsigned max_in_flight;     /* CQ size: never more CQEs than that */
    QSIMPLEQ_HEAD(, UringRequest) queued;   /* waiting for space */
    UringRingStats stats;
};

/*
 * The allow-list installed on every ring.  Nothing may be added at run time:
 * the kernel accepts one IORING_REGISTER_RESTRICTIONS per ring, before it is
 * enabled.
 */
static const uint8_t uring_allowed_sqe_ops[] = {
    IORING_OP_READ,             /* one iovec, memory outside fixed buffers */
    IORING_OP_WRITE,
    IORING_OP_READV,            /* several iovecs, outside fixed buffers */
    IORING_OP_WRITEV,
    IORING_OP_READ_FIXED,       /* one iovec inside a fixed buffer */
    IORING_OP_WRITE_FIXED,
    IORING_OP_FSYNC,            /* flush */
};

static const uint8_t uring_allowed_register_ops[] = {
    IORING_REGISTER_FILES_UPDATE,   /* reopen swaps the image fd */
    IORING_REGISTER_BUFFERS_UPDATE, /* guest RAM hot-plug and unplug */
};

/*
 * The register calls that liburing 2.3 does not wrap in a way this driver
 * can use (its shared library lacks io_uring_register_restrictions() and
 * io_uring_enable_rings()).  Returns 0 or -errno like liburing.
 */
static int uring_sys_register(struct io_uring *ring, unsigned opcode,
                              const void *arg, unsigned nr_args)
{
    long ret = syscall(__NR_io_uring_register, ring->ring_fd, opcode, arg,
                       nr_args);

    return ret < 0 ? -errno : ret;
}

static int uring_ring_restrict(UringRing *r)
{
    struct io_uring_restriction res[ARRAY_SIZE(uring_allowed_sqe_ops) + 2 +
                                    ARRAY_SIZE(uring_allowed_register_ops) +
                                    1] = {};
    unsigned n = 0;
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(uring_allowed_sqe_ops); i++) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = uring_allowed_sqe_ops[i];
    }
    if (r->vectored_fixed) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = URING_OP_READV_FIXED;
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = URING_OP_WRITEV_FIXED;
    }
    for (i = 0; i < ARRAY_SIZE(uring_allowed_register_ops); i++) {
        res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
        res[n++].register_op = uring_allowed_register_ops[i];
    }
    /* Only the registered image: no fd numbers from the SQE */
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
    res[n++].sqe_flags = IOSQE_FIXED_FILE;

    return uring_sys_register(&r->ring, IORING_REGISTER_RESTRICTIONS, res, n);
}

static int uring_ring_enable(UringRing *r)
{
    return uring_sys_register(&r->ring, IORING_REGISTER_ENABLE_RINGS,
                              NULL, 0);
}

static bool uring_ring_probe_vectored_fixed(UringRing *r)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
    bool ret;

    if (!probe) {
        return false;
    }
    ret = probe->last_op >= URING_OP_WRITEV_FIXED &&
          io_uring_opcode_supported(probe, URING_OP_READV_FIXED) &&
          io_uring_opcode_supported(probe, URING_OP_WRITEV_FIXED);
    io_uring_free_probe(probe);
    return ret;
}

static void uring_ring_setup_hint(int err, Error **errp)
{
    if (err == -EPERM || err == -ENOSYS || err == -EACCES) {
        error_append_hint(errp, "io_uring is not available to this process: "
                          "check the kernel.io_uring_disabled sysctl "
                          "(and kernel.io_uring_group) and any seccomp "
                          "policy of the container runtime.\n");
    } else if (err == -ENOMEM) {
        error_append_hint(errp, "Raise RLIMIT_MEMLOCK (ulimit -l) or "
                          "lower queue-depth.\n");
    }
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
    } else {
        /*
         * Completions from io-wq workers and from interrupts are posted by
         * task work in this thread.  By default each one interrupts the
         * thread with an IPI even while it is busy; with COOP_TASKRUN the
         * work waits for the thread's next syscall, and TASKRUN_FLAG shows
         * polling that it is pending (Linux 5.19).
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
    }
    return ret;
}

/*
 * Register everything the ring will ever use, then restrict and enable it.
 * Buffers are filled in by the caller with uring_ring_update_buf() before
 * any request uses them; the table is sparse so that RAM hot-plug only
 * needs IORING_REGISTER_BUFFERS_UPDATE.
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
    r->vectored_fixed = cfg->buf_slots && uring_ring_probe_vectored_fixed(r);

    ret = io_uring_register_files(&r->ring, &cfg->fd, 1);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to register the image as "
                         "io_uring fixed file");
        goto fail;
    }
    if (cfg->buf_slots) {
        ret = io_uring_register_buffers_sparse(&r->ring, cfg->buf_slots);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to register a table of %u "
                             "io_uring fixed buffers", cfg->buf_slots);
            goto fail;
        }
    }
    ret = uring_ring_restrict(r);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to install io_uring "
                         "restrictions (Linux 5.10 or later is required)");
        goto fail;
    }
    trace_uring_ring_restricted(r, ARRAY_SIZE(uring_allowed_sqe_ops) +
                                (r->vectored_fixed ? 2 : 0),
                                ARRAY_SIZE(uring_allowed_register_ops));
    return 0;

fail:
    io_uring_queue_exit(&r->ring);
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
 * work the kernel holds back for this thread (COOP_TASKRUN), which
 * io_uring_peek_cqe() then runs.
 */
static bool uring_ring_poll_cb(void *opaque)
{
    UringRing *r = opaque;

    return io_uring_cq_ready(&r->ring) > 0 ||
           (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/*
 * Create a ring for @ctx.  Must be called in @ctx's thread, which will
 * drive it.  The ring is restricted but still disabled: the caller fills
 * the fixed-buffer table and then calls uring_ring_start().
 */
UringRing *uring_ring_new(AioContext *ctx, const UringRingConfig *cfg,
                          Error **errp)
{
    UringRing *r = g_new0(UringRing, 1);

    r->ctx = ctx;
    r->sqpoll = cfg->sqpoll;
    QSIMPLEQ_INIT(&r->queued);

    if (uring_ring_setup(r, cfg, errp) < 0) {
        g_free(r);
        return NULL;
    }
    trace_uring_ring_new(r, ctx, cfg->entries, cfg->sqpoll,
                         cfg->attach_wq_fd, cfg->buf_slots);
    return r;
}

/* Enable the ring and start reaping completions in its AioContext */
int uring_ring_start(UringRing *r, Error **errp)
{
    int ret = uring_ring_enable(r);

    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to enable io_uring");
        return ret;
    }
    aio_set_fd_handler(r->ctx, r->ring.ring_fd, uring_ring_completion_cb,
                       NULL, uring_ring_poll_cb, uring_ring_completion_cb, r);
    trace_uring_ring_enabled(r, r->ring.ring_fd);
    return 0;
}

/* Must be called in the ring's AioContext, with no request in flight */
void uring_ring_free(UringRing *r)
{
    assert(r->in_flight == 0 && QSIMPLEQ_EMPTY(&r->queued));
    trace_uring_ring_free(r);
    aio_set_fd_handler(r->ctx, r->ring.ring_fd, NULL, NULL, NULL, NULL, NULL);
    /*
     * The kernel tears rings down asynchronously; drop the image from the
     * file table now, so that closing the image releases its locks at once.
     */
    uring_ring_update_file(r, -1);
    io_uring_queue_exit(&r->ring);
    g_free(r);
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

void uring_ring_get_stats(UringRing *r, UringRingStats *stats)
{
    stats->fixed_requests = qatomic_read(&r->stats.fixed_requests);
    stats->plain_requests = qatomic_read(&r->stats.plain_requests);
    stats->flushes = qatomic_read(&r->stats.flushes);
    stats->sq_wakeups = qatomic_read(&r->stats.sq_wakeups);
    stats->submit_calls = qatomic_read(&r->stats.submit_calls);
    stats->queued = qatomic_read(&r->stats.queued);
}

/* Swap the fixed file, e.g. after reopen.  Callable from any thread. */
int uring_ring_update_file(UringRing *r, int fd)
{
    int ret = io_uring_register_files_update(&r->ring, 0, &fd, 1);

    trace_uring_ring_update_file(r, fd, ret);
    return ret < 0 ? ret : 0;
}

/*
 * Fill (@len > 0) or clear (@len == 0) fixed-buffer slot @index.  Filling
 * pins the memory and charges it to RLIMIT_MEMLOCK.  Callable from any
 * thread; the kernel keeps a cleared buffer alive until requests that use
 * it complete.
 */
int uring_ring_update_buf(UringRing *r, unsigned index, void *host,
                          size_t len)
{
    struct iovec iov = { .iov_base = len ? host : NULL, .iov_len = len };
    int ret;

    ret = io_uring_register_buffers_update_tag(&r->ring, index, &iov, NULL, 1);
    trace_uring_ring_update_buf(r, index, host, len, ret);
    return ret < 0 ? ret : 0;
}

/*
 * Fill @sqe for @req.  All of the driver's raw SQE handling is here:
 * liburing 2.3 has no helpers for the vectored fixed-buffer opcodes.
 */
static void uring_ring_prep_sqe(UringRing *r, UringRequest *req,
                                struct io_uring_sqe *sqe)
{
    QEMUIOVector *qiov = req->done ? &req->rest : req->qiov;
    uint64_t offset = req->offset + req->done;
    bool is_write = req->type == URING_REQ_WRITE;

    if (req->type == URING_REQ_FLUSH) {
        io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
    } else if (req->buf_index != URING_NO_BUF && qiov->niov == 1) {
        if (is_write) {
            io_uring_prep_write_fixed(sqe, 0, qiov->iov[0].iov_base,
                                      qiov->iov[0].iov_len, offset,
                                      req->buf_index);
        } else {
            io_uring_prep_read_fixed(sqe, 0, qiov->iov[0].iov_base,
                                     qiov->iov[0].iov_len, offset,
                                     req->buf_index);
        }
    } else if (req->buf_index != URING_NO_BUF) {
        io_uring_prep_rw(is_write ? URING_OP_WRITEV_FIXED :
                                    URING_OP_READV_FIXED,
                         sqe, 0, qiov->iov, qiov->niov, offset);
        sqe->buf_index = req->buf_index;
    } else if (qiov->niov == 1) {
        /* The man page says non-vectored is faster than vectored */
        io_uring_prep_rw(is_write ? IORING_OP_WRITE : IORING_OP_READ,
                         sqe, 0, qiov->iov[0].iov_base,
                         qiov->iov[0].iov_len, offset);
    } else {
        io_uring_prep_rw(is_write ? IORING_OP_WRITEV : IORING_OP_READV,
                         sqe, 0, qiov->iov, qiov->niov, offset);
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
        r->in_flight++;
    }

    /* The rest waits for completions to make room */
    QSIMPLEQ_FOREACH(req, &r->queued, next) {
        if (!req->waited) {
            req->waited = true;
            qatomic_set(&r->stats.queued, r->stats.queued + 1);
        }
    }
}

/* Hand the prepared SQEs to the kernel (or to the SQ thread) */
static void uring_ring_submit(UringRing *r)
{
    int ret;

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
            qatomic_set(&r->stats.sq_wakeups, r->stats.sq_wakeups + 1);
            trace_uring_ring_sq_wakeup(r);
        }
    } else {
        qatomic_set(&r->stats.submit_calls, r->stats.submit_calls + 1);
    }
    ret = io_uring_submit(&r->ring);
    trace_uring_ring_submit(r, ret);
    /*
     * -EAGAIN and -EBUSY leave the SQEs in the ring; they go in with the
     * next submission, which the next completion triggers.
     */
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

    if (res == -EINTR || res == -EAGAIN) {
        /*
         * Resubmit, like block/io_uring.c does: a partial read or write
         * returning -EAGAIN would otherwise be reported to the guest.
         */
        QSIMPLEQ_INSERT_TAIL(&r->queued, req, next);
        return;
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

    if (!qemu_coroutine_entered(req->co)) {
        aio_co_wake(req->co);
    }
}

/*
 * Reap CQEs one at a time: each is consumed before its coroutine runs, so
 * a nested event loop in that coroutine sees only the remaining ones.
 */
static void uring_ring_process_completions(UringRing *r)
{
    struct io_uring_cqe *cqe;

    /*
     * Completion callbacks often submit the next requests: collect them
     * into one submission, as virtio-blk does for a virtqueue kick.
     */
    defer_call_begin();
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        UringRequest *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        io_uring_cqe_seen(&r->ring, cqe);
        r->in_flight--;
        uring_ring_complete(r, req, res);
    }
    if (!QSIMPLEQ_EMPTY(&r->queued) || io_uring_sq_ready(&r->ring)) {
        uring_ring_submit(r);
    }
    defer_call_end();
}

static int coroutine_fn uring_ring_co_do(UringRing *r, UringRequest *req)
{
    assert(r->ctx == qemu_get_current_aio_context());

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

/*
 * Read or write @qiov at @offset.  With @buf_index, every element of @qiov
 * must lie inside that fixed buffer; several elements need
 * uring_ring_has_vectored_fixed().
 */
int coroutine_fn uring_ring_co_rw(UringRing *r, bool is_write,
                                  uint64_t offset, QEMUIOVector *qiov,
                                  int buf_index, bool fua)
{
    UringRequest req = {
        .type = is_write ? URING_REQ_WRITE : URING_REQ_READ,
        .fua = fua,
        .buf_index = buf_index,
        .offset = offset,
        .qiov = qiov,
    };

    assert(buf_index == URING_NO_BUF || qiov->niov == 1 || r->vectored_fixed);
    if (buf_index != URING_NO_BUF) {
        qatomic_set(&r->stats.fixed_requests, r->stats.fixed_requests + 1);
        trace_uring_ring_rw_fixed(r, is_write, offset, qiov->size,
                                  qiov->niov, buf_index);
    } else {
        qatomic_set(&r->stats.plain_requests, r->stats.plain_requests + 1);
        trace_uring_ring_rw(r, is_write, offset, qiov->size, qiov->niov);
    }
    return uring_ring_co_do(r, &req);
}

int coroutine_fn uring_ring_co_flush(UringRing *r)
{
    UringRequest req = {
        .type = URING_REQ_FLUSH,
        .buf_index = URING_NO_BUF,
    };

    qatomic_set(&r->stats.flushes, r->stats.flushes + 1);
    return uring_ring_co_do(r, &req);
}
