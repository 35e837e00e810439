/*
 * The event loop's io_uring accepts only what QEMU submits through it
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <liburing.h>
#include "qapi/error.h"
#include "qemu/event_notifier.h"
#include "qemu/io_uring-restrictions.h"
#include "qemu/main-loop.h"
#include "block/aio.h"

#define BUF_SIZE 4096

static AioContext *ctx;
static bool restrictions_supported;

/* Returns true if @c has a ring and the kernel can restrict it */
static bool has_restricted_ring(AioContext *c)
{
    if (!c->fdmon_ops->add_sqe) {
        g_test_skip("io_uring is not available");
        return false;
    }
    if (!restrictions_supported) {
        g_test_skip("the kernel cannot restrict io_uring");
        return false;
    }
    return true;
}

typedef struct {
    CqeHandler cqe_handler;
    bool done;
    int res;
} TestRequest;

static void test_request_cb(CqeHandler *cqe_handler)
{
    TestRequest *req = container_of(cqe_handler, TestRequest, cqe_handler);

    req->res = cqe_handler->cqe.res;
    req->done = true;
}

/* Submit one sqe through aio_add_sqe() and return its result */
static int submit(void (*prep_sqe)(struct io_uring_sqe *sqe, void *opaque),
                  void *opaque)
{
    TestRequest req = {
        .cqe_handler.cb = test_request_cb,
    };

    aio_add_sqe(prep_sqe, opaque, &req.cqe_handler);
    while (!req.done) {
        aio_poll(ctx, true);
    }
    return req.res;
}

/* The requests of block/io_uring.c (aio=io_uring) */

typedef struct {
    int fd;
    struct iovec iov[2];    /* two halves of one buffer */
} RwArgs;

static void prep_write(struct io_uring_sqe *sqe, void *opaque)
{
    RwArgs *a = opaque;

    io_uring_prep_write(sqe, a->fd, a->iov[0].iov_base, BUF_SIZE, 0);
}

/* A FUA write */
static void prep_writev_dsync(struct io_uring_sqe *sqe, void *opaque)
{
    RwArgs *a = opaque;

    io_uring_prep_writev(sqe, a->fd, a->iov, 2, BUF_SIZE);
    sqe->rw_flags = RWF_DSYNC;
}

static void prep_fsync(struct io_uring_sqe *sqe, void *opaque)
{
    RwArgs *a = opaque;

    io_uring_prep_fsync(sqe, a->fd, IORING_FSYNC_DATASYNC);
}

static void prep_read(struct io_uring_sqe *sqe, void *opaque)
{
    RwArgs *a = opaque;

    io_uring_prep_read(sqe, a->fd, a->iov[0].iov_base, BUF_SIZE, BUF_SIZE);
}

static void prep_readv(struct io_uring_sqe *sqe, void *opaque)
{
    RwArgs *a = opaque;

    io_uring_prep_readv(sqe, a->fd, a->iov, 2, 0);
}

static void test_block_requests(void)
{
    g_autofree char *path = NULL;
    g_autofree uint8_t *buf = g_malloc(BUF_SIZE);
    RwArgs a;

    if (!has_restricted_ring(ctx)) {
        return;
    }

    a.fd = g_file_open_tmp("test-fdmon-io_uring-XXXXXX", &path, NULL);
    g_assert_cmpint(a.fd, >=, 0);
    unlink(path);
    a.iov[0] = (struct iovec) { buf, BUF_SIZE / 2 };
    a.iov[1] = (struct iovec) { buf + BUF_SIZE / 2, BUF_SIZE / 2 };

    memset(buf, 0xa5, BUF_SIZE);
    g_assert_cmpint(submit(prep_write, &a), ==, BUF_SIZE);
    memset(buf, 0x5a, BUF_SIZE);
    g_assert_cmpint(submit(prep_writev_dsync, &a), ==, BUF_SIZE);
    g_assert_cmpint(submit(prep_fsync, &a), ==, 0);

    memset(buf, 0, BUF_SIZE);
    g_assert_cmpint(submit(prep_read, &a), ==, BUF_SIZE);
    g_assert_cmpint(buf[0], ==, 0x5a);
    g_assert_cmpint(buf[BUF_SIZE - 1], ==, 0x5a);
    g_assert_cmpint(submit(prep_readv, &a), ==, BUF_SIZE);
    g_assert_cmpint(buf[0], ==, 0xa5);
    g_assert_cmpint(buf[BUF_SIZE - 1], ==, 0xa5);

    close(a.fd);
}

/* File descriptor monitoring: IORING_OP_POLL_ADD and IORING_OP_POLL_REMOVE */

typedef struct {
    EventNotifier e;
    int count;
} TestNotifier;

static void test_notifier_read(EventNotifier *e)
{
    TestNotifier *n = container_of(e, TestNotifier, e);

    event_notifier_test_and_clear(e);
    n->count++;
}

static void test_fd_handler(void)
{
    TestNotifier n = { .count = 0 };
    int i;

    if (!has_restricted_ring(ctx)) {
        return;
    }

    g_assert_cmpint(event_notifier_init(&n.e, false), ==, 0);
    aio_set_event_notifier(ctx, &n.e, test_notifier_read, NULL, NULL);

    event_notifier_set(&n.e);
    while (n.count == 0) {
        aio_poll(ctx, true);
    }

    /*
     * The re-armed IORING_OP_POLL_ADD waits for the next event.  Had the
     * kernel refused it, its -EACCES completion would look ready.
     */
    for (i = 0; i < 10; i++) {
        aio_poll(ctx, false);
    }
    g_assert_cmpint(n.count, ==, 1);

    aio_set_event_notifier(ctx, &n.e, NULL, NULL, NULL);
    while (aio_poll(ctx, false)) {
        /* Let IORING_OP_POLL_REMOVE complete */
    }
    event_notifier_cleanup(&n.e);
}

/* What QEMU never submits is refused */

static void prep_openat(struct io_uring_sqe *sqe, void *opaque)
{
    io_uring_prep_openat(sqe, AT_FDCWD, "/dev/null", O_RDONLY, 0);
}

static void test_openat_refused(void)
{
    int ret;

    if (!has_restricted_ring(ctx)) {
        return;
    }

    ret = submit(prep_openat, NULL);
    if (ret >= 0) {
        close(ret);
    }
    g_assert_cmpint(ret, ==, -EACCES);
}

/* io_uring_register(2) is refused once the ring is enabled */
static void check_register_refused(AioContext *c)
{
    struct io_uring *ring = &c->fdmon_io_uring;
    size_t probe_size = sizeof(struct io_uring_probe) +
                        256 * sizeof(struct io_uring_probe_op);
    g_autofree struct io_uring_probe *probe = g_malloc0(probe_size);
    g_autofree void *buf = g_malloc(BUF_SIZE);
    struct iovec iov = { buf, BUF_SIZE };
    int ret;

    ret = qemu_io_uring_register_syscall(ring, IORING_REGISTER_PROBE,
                                         probe, 256);
    g_assert_cmpint(ret, ==, -EACCES);

    ret = qemu_io_uring_register_syscall(ring, IORING_REGISTER_BUFFERS,
                                         &iov, 1);
    if (ret == 0) {
        qemu_io_uring_register_syscall(ring, IORING_UNREGISTER_BUFFERS,
                                       NULL, 0);
    }
    g_assert_cmpint(ret, ==, -EACCES);

    /* The one register operation on the allow-list can do nothing */
    g_assert_cmpint(qemu_io_uring_enable_rings(ring), ==, -EBADFD);
}

static void test_register_refused(void)
{
    if (!has_restricted_ring(ctx)) {
        return;
    }
    check_register_refused(ctx);
}

/* The same on an AioContext like an IOThread's */
static void test_register_refused_new_context(void)
{
    AioContext *c = aio_context_new(&error_abort);

    if (has_restricted_ring(c)) {
        check_register_refused(c);
    }
    aio_context_unref(c);
}

int main(int argc, char **argv)
{
    qemu_init_main_loop(&error_fatal);
    ctx = qemu_get_aio_context();
    restrictions_supported = qemu_io_uring_restricted_ring_usable(0);

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fdmon-io_uring/allowed/block-requests",
                    test_block_requests);
    g_test_add_func("/fdmon-io_uring/allowed/fd-handler", test_fd_handler);
    g_test_add_func("/fdmon-io_uring/refused/openat", test_openat_refused);
    g_test_add_func("/fdmon-io_uring/refused/register",
                    test_register_refused);
    g_test_add_func("/fdmon-io_uring/refused/register-new-context",
                    test_register_refused_new_context);
    return g_test_run();
}
