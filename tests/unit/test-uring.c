/*
 * Unit tests for the uring block driver's ring engine and buffer table
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <liburing.h>
#include "qapi/error.h"
#include "qemu/coroutine.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "block/aio.h"
#include "block/uring-ring.h"

#define BUF_SIZE (64 * 1024)

static AioContext *ctx;

/* Fixed-buffer table */

static QEMUIOVector *qiov_of(void *base, size_t len)
{
    static struct iovec iov;
    static QEMUIOVector qiov;

    iov = (struct iovec) { .iov_base = base, .iov_len = len };
    qemu_iovec_init_external(&qiov, &iov, 1);
    return &qiov;
}

static void test_bufs_split_and_lookup(void)
{
    /* Fake host addresses: the table never dereferences them */
    char *host = (char *)(uintptr_t)(1ULL << 40);
    size_t size = 2 * URING_BUF_SLOT_MAX + 4096;
    UringBufSlot *slots;
    UringBufs bufs;
    struct iovec iov[2];
    QEMUIOVector two;
    int n, a, b;

    uring_bufs_init(&bufs);
    n = uring_bufs_reserve(&bufs, host, size, &slots);
    g_assert_cmpint(n, ==, 3);
    g_assert_cmpuint(slots[2].len, ==, 4096);

    /* Reserved but not published: invisible */
    g_assert_cmpint(uring_bufs_lookup(&bufs, qiov_of(host, 512)), ==,
                    URING_NO_BUF);
    uring_bufs_publish(&bufs, slots, n);
    g_free(slots);

    a = uring_bufs_lookup(&bufs, qiov_of(host, 512));
    b = uring_bufs_lookup(&bufs, qiov_of(host + URING_BUF_SLOT_MAX, 512));
    g_assert_cmpint(a, !=, URING_NO_BUF);
    g_assert_cmpint(b, !=, URING_NO_BUF);
    g_assert_cmpint(a, !=, b);

    /* Ends exactly at the end of a slot */
    g_assert_cmpint(uring_bufs_lookup(&bufs,
                        qiov_of(host + URING_BUF_SLOT_MAX - 512, 512)), ==, a);

    /* Crossing a slot boundary cannot use one fixed buffer */
    g_assert_cmpint(uring_bufs_lookup(&bufs,
                        qiov_of(host + URING_BUF_SLOT_MAX - 512, 1024)), ==,
                    URING_NO_BUF);

    /* Several iovecs in one slot are fine, across slots they are not */
    iov[0] = (struct iovec) { host, 512 };
    iov[1] = (struct iovec) { host + 8192, 512 };
    qemu_iovec_init_external(&two, iov, 2);
    g_assert_cmpint(uring_bufs_lookup(&bufs, &two), ==, a);
    iov[1].iov_base = host + URING_BUF_SLOT_MAX;
    g_assert_cmpint(uring_bufs_lookup(&bufs, &two), ==, URING_NO_BUF);

    /* Outside everything */
    g_assert_cmpint(uring_bufs_lookup(&bufs, qiov_of(host - 4096, 512)), ==,
                    URING_NO_BUF);
    g_assert_cmpint(uring_bufs_lookup(&bufs, qiov_of(host + size, 512)), ==,
                    URING_NO_BUF);

    /* Registering the same memory again is a no-op */
    g_assert_cmpint(uring_bufs_reserve(&bufs, host, size, &slots), ==, 0);

    /* Unknown ranges are ignored, known ones disappear with all slots */
    g_assert_cmpint(uring_bufs_unpublish(&bufs, host - 8192, 4096, &slots),
                    ==, 0);
    n = uring_bufs_unpublish(&bufs, host, size, &slots);
    g_assert_cmpint(n, ==, 3);
    uring_bufs_unreserve(&bufs, slots, n);
    g_assert_cmpint(uring_bufs_lookup(&bufs, qiov_of(host, 512)), ==,
                    URING_NO_BUF);
    g_assert_cmpuint(bufs.bytes, ==, 0);

    /* Indices are reused after unreserve */
    n = uring_bufs_reserve(&bufs, host, 4096, &slots);
    g_assert_cmpint(n, ==, 1);
    g_assert_cmpint(slots[0].index, ==, 0);
    uring_bufs_unreserve(&bufs, slots, n);

    drain_call_rcu();
    uring_bufs_cleanup(&bufs);
}

/* Ring engine, on a temporary file in the main loop */

typedef struct {
    UringRing *r;
    bool is_write;
    uint64_t offset;
    QEMUIOVector qiov;
    int buf_index;
    int ret;
    bool done;
} RwCo;

static void coroutine_fn rw_co_entry(void *opaque)
{
    RwCo *rw = opaque;

    rw->ret = uring_ring_co_rw(rw->r, rw->is_write, rw->offset, &rw->qiov,
                               rw->buf_index, false);
    rw->done = true;
}

static void rw_start(RwCo *rw)
{
    Coroutine *co = qemu_coroutine_create(rw_co_entry, rw);

    rw->done = false;
    aio_co_enter(ctx, co);
}

static UringRing *ring_new(int fd, unsigned entries, void *buf, size_t len)
{
    UringRingConfig cfg = {
        .entries = entries,
        .fd = fd,
        .buf_slots = 4,
        .sqpoll_cpu = -1,
        .attach_wq_fd = -1,
    };
    UringRing *r = uring_ring_new(ctx, &cfg, &error_abort);

    if (buf) {
        g_assert_cmpint(uring_ring_update_buf(r, 2, buf, len), ==, 0);
    }
    g_assert_cmpint(uring_ring_start(r, &error_abort), ==, 0);
    return r;
}

static int tmp_file(size_t size)
{
    char name[] = "/tmp/test-uring-XXXXXX";
    int fd = mkstemp(name);

    g_assert(fd >= 0);
    unlink(name);
    g_assert(ftruncate(fd, size) == 0);
    return fd;
}

static void test_ring_rw_fixed_and_plain(void)
{
    int fd = tmp_file(4 * BUF_SIZE);
    uint8_t *buf = qemu_memalign(4096, 2 * BUF_SIZE);
    UringRing *r = ring_new(fd, 8, buf, BUF_SIZE);
    UringRingStats st;
    RwCo rw = { .r = r };
    uint8_t check[BUF_SIZE];

    /* Fixed write from slot 2, plain read into unregistered memory */
    memset(buf, 0x5a, BUF_SIZE);
    qemu_iovec_init_buf(&rw.qiov, buf, BUF_SIZE);
    rw.is_write = true;
    rw.offset = BUF_SIZE;
    rw.buf_index = 2;
    rw_start(&rw);
    while (!rw.done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(pread(fd, check, BUF_SIZE, BUF_SIZE) == BUF_SIZE);
    g_assert(check[0] == 0x5a && check[BUF_SIZE - 1] == 0x5a);

    qemu_iovec_init_buf(&rw.qiov, buf + BUF_SIZE, BUF_SIZE);
    rw.is_write = false;
    rw.buf_index = URING_NO_BUF;
    rw_start(&rw);
    while (!rw.done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(buf[BUF_SIZE] == 0x5a);

    /* The kernel checks fixed-buffer bounds: outside slot 2 is -EFAULT */
    qemu_iovec_init_buf(&rw.qiov, buf + BUF_SIZE, 4096);
    rw.buf_index = 2;
    rw_start(&rw);
    while (!rw.done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(rw.ret, ==, -EFAULT);

    uring_ring_get_stats(r, &st);
    g_assert_cmpuint(st.fixed_requests, ==, 2);
    g_assert_cmpuint(st.plain_requests, ==, 1);

    uring_ring_free(r);
    qemu_vfree(buf);
    close(fd);
}

static void test_ring_read_past_eof(void)
{
    int fd = tmp_file(4096);
    uint8_t *buf = qemu_memalign(4096, 8192);
    UringRing *r = ring_new(fd, 4, NULL, 0);
    RwCo rw = { .r = r, .buf_index = URING_NO_BUF };

    g_assert(pwrite(fd, "abc", 3, 0) == 3);
    memset(buf, 0xff, 8192);
    qemu_iovec_init_buf(&rw.qiov, buf, 8192);
    rw_start(&rw);
    while (!rw.done) {
        aio_poll(ctx, true);
    }
    /* The short read is continued, and what lies past EOF reads as 0 */
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(memcmp(buf, "abc", 3) == 0);
    g_assert(buf[3] == 0 && buf[8191] == 0);

    uring_ring_free(r);
    qemu_vfree(buf);
    close(fd);
}

/* More requests than the SQ and CQ hold: they wait, none is dropped */
static void test_ring_queue_full(void)
{
    enum { N = 32 };
    int fd = tmp_file(N * 4096);
    uint8_t *buf = qemu_memalign(4096, N * 4096);
    UringRing *r = ring_new(fd, 1, buf, N * 4096);
    RwCo rw[N];
    UringRingStats st;
    bool all_done;
    int i;

    for (i = 0; i < N; i++) {
        memset(buf + i * 4096, i, 4096);
        rw[i] = (RwCo) {
            .r = r, .is_write = true, .offset = i * 4096,
            .buf_index = i % 2 ? 2 : URING_NO_BUF,
        };
        qemu_iovec_init_buf(&rw[i].qiov, buf + i * 4096, 4096);
        rw_start(&rw[i]);
    }
    do {
        aio_poll(ctx, true);
        all_done = true;
        for (i = 0; i < N; i++) {
            all_done &= rw[i].done;
        }
    } while (!all_done);

    for (i = 0; i < N; i++) {
        uint8_t b;

        g_assert_cmpint(rw[i].ret, ==, 0);
        g_assert(pread(fd, &b, 1, i * 4096 + 100) == 1);
        g_assert_cmpint(b, ==, i);
    }
    uring_ring_get_stats(r, &st);
    g_assert_cmpuint(st.queued, >, 0);

    uring_ring_free(r);
    qemu_vfree(buf);
    close(fd);
}

static bool io_uring_usable(void)
{
    struct io_uring ring;

    if (io_uring_queue_init(1, &ring, 0) < 0) {
        return false;
    }
    io_uring_queue_exit(&ring);
    return true;
}

int main(int argc, char **argv)
{
    qemu_init_main_loop(&error_abort);
    ctx = qemu_get_current_aio_context();

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/uring/bufs/split-and-lookup", test_bufs_split_and_lookup);
    if (io_uring_usable()) {
        g_test_add_func("/uring/ring/rw-fixed-and-plain",
                        test_ring_rw_fixed_and_plain);
        g_test_add_func("/uring/ring/read-past-eof", test_ring_read_past_eof);
        g_test_add_func("/uring/ring/queue-full", test_ring_queue_full);
    } else {
        g_test_message("io_uring is not available: ring tests skipped");
    }
    return g_test_run();
}
