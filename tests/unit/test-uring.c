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
#include "qemu/defer-call.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include <sys/mman.h>
#include "block/aio.h"
#include "block/uring-bufs.h"
#include "block/uring-ring.h"
#include "block/uring-sys.h"

#define BUF_SIZE (64 * 1024)

/* io_uring_register() on a ring we only have the fd of */
static int ring_fd_register(int fd, unsigned opcode, void *arg,
                            unsigned nr_args)
{
    long ret = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);

    return ret < 0 ? -errno : ret;
}

static AioContext *ctx;

static QEMUIOVector *qiov_of(void *base, size_t len)
{
    static struct iovec iov;
    static QEMUIOVector qiov;

    iov = (struct iovec) { .iov_base = base, .iov_len = len };
    qemu_iovec_init_external(&qiov, &iov, 1);
    return &qiov;
}

/* The buffer table */

static void test_bufs_generations(void)
{
    uint8_t *a = qemu_memalign(4096, BUF_SIZE);
    uint8_t *b = qemu_memalign(4096, BUF_SIZE);
    struct iovec iov[2];
    QEMUIOVector two;
    uint64_t g0, g1, g2, g3;
    int slot_a, slot_b;

    uring_bufs_ref(&error_abort);
    g0 = uring_bufs_generation();
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512), g0), ==, -1);

    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    g1 = uring_bufs_generation();
    g_assert_cmpuint(g1, >, g0);
    slot_a = uring_bufs_lookup(qiov_of(a, 512), g1);
    g_assert_cmpint(slot_a, >=, 0);
    g_assert_cmpint(slot_a, !=, uring_bufs_bounce_index());

    /* A ring of an older generation does not hold it */
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512), g0), ==, -1);

    /* Ends exactly at the end, or crosses it */
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a + BUF_SIZE - 512, 512), g1),
                    ==, slot_a);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a + BUF_SIZE - 512, 1024),
                                      g1), ==, -1);

    g_assert_cmpint(uring_bufs_register(b, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    g2 = uring_bufs_generation();
    slot_b = uring_bufs_lookup(qiov_of(b, 512), g2);
    g_assert_cmpint(slot_b, >=, 0);
    g_assert_cmpint(slot_b, !=, slot_a);

    /* Several iovecs must lie in one buffer */
    iov[0] = (struct iovec) { a, 512 };
    iov[1] = (struct iovec) { a + 8192, 512 };
    qemu_iovec_init_external(&two, iov, 2);
    g_assert_cmpint(uring_bufs_lookup(&two, g2), ==, slot_a);
    iov[1].iov_base = b;
    g_assert_cmpint(uring_bufs_lookup(&two, g2), ==, -1);

    /* Registrations are counted */
    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    uring_bufs_unregister(a, BUF_SIZE);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512), g2), ==, slot_a);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g3), ==, 1);
    g_assert_cmpuint(g3, ==, g1);
    /* Memory is known by address and size */
    g_assert_cmpint(uring_bufs_state(a, 4096, &g3), ==, -ENOENT);

    /* The last one goes: so does the memory, for every generation */
    uring_bufs_unregister(a, BUF_SIZE);
    g3 = uring_bufs_generation();
    g_assert_cmpuint(g3, >, g2);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512), g3), ==, -1);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512), g2), ==, -1);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g3), ==, -ENOENT);

    /* Unknown memory is ignored */
    uring_bufs_unregister(a + 4096, 4096);
    uring_bufs_unregister(b, BUF_SIZE);
    uring_bufs_unref();
    drain_call_rcu();
    qemu_vfree(a);
    qemu_vfree(b);
}

/*
 * Memory whose last registration goes is forgotten at once, even while a
 * worker still pins it: memory registered again at the same address (a
 * DIMM unplugged and another plugged there) is a range of its own, which
 * never gets the slots of the old mapping.
 */
static void test_bufs_unregister_while_pinning(void)
{
    uint8_t *a = qemu_memalign(4096, BUF_SIZE);
    UringBufsInfo info;
    uint64_t g;
    int slot;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE,
                                        URING_BUFS_PIN_BACKGROUND), ==, 0);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g), ==, 0);
    uring_bufs_unregister(a, BUF_SIZE);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g), ==, -ENOENT);

    /* Registered again while the worker runs: pinned anew */
    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g), ==, 1);
    slot = uring_bufs_lookup(qiov_of(a, 512), uring_bufs_generation());
    g_assert_cmpint(slot, >=, 0);

    /* The worker finishes: what it pinned is dropped, not published */
    do {
        aio_poll(ctx, true);
        uring_bufs_get_info(&info);
    } while (info.pending_bytes);
    g_assert_cmpuint(info.slots, ==, 1);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512),
                                      uring_bufs_generation()), ==, slot);

    uring_bufs_unregister(a, BUF_SIZE);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512),
                                      uring_bufs_generation()), ==, -1);
    uring_bufs_unref();
    drain_call_rcu();
    qemu_vfree(a);
}

/*
 * Memory handed to a worker and then needed pinned at once: it is pinned
 * in this thread, without waiting for the worker, which may not even
 * exist yet (the thread pool creates its threads from a main-loop BH).
 * This runs first, before any other test made the pool start a thread.
 */
static void test_bufs_pin_now_after_background(void)
{
    uint8_t *a = qemu_memalign(4096, BUF_SIZE);
    UringBufsInfo info;
    uint64_t g;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE,
                                        URING_BUFS_PIN_BACKGROUND), ==, 0);
    g_assert_cmpint(uring_bufs_register(a, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g), ==, 1);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(a, 512),
                                      uring_bufs_generation()), >=, 0);

    /* The worker finds nothing left to do */
    do {
        aio_poll(ctx, true);
        uring_bufs_get_info(&info);
    } while (info.pending_bytes);
    g_assert_cmpuint(info.slots, ==, 1);

    uring_bufs_unregister(a, BUF_SIZE);
    uring_bufs_unregister(a, BUF_SIZE);
    g_assert_cmpint(uring_bufs_state(a, BUF_SIZE, &g), ==, -ENOENT);
    uring_bufs_unref();
    drain_call_rcu();
    qemu_vfree(a);
}

/* A zero-length request (the guest may send one) is in no buffer */
static void test_bufs_lookup_empty(void)
{
    QEMUIOVector empty;

    uring_bufs_ref(&error_abort);
    qemu_iovec_init_external(&empty, NULL, 0);
    g_assert_cmpint(uring_bufs_lookup(&empty, uring_bufs_generation()), ==,
                    -1);
    uring_bufs_unref();
}

/*
 * Memory larger than a fixed buffer (1 GiB) takes several slots: a
 * request can use each one, but not two at once.  This pins 1 GiB.
 */
static void test_bufs_split(void)
{
    size_t size = URING_BUF_SLOT_MAX + 8192;
    uint8_t *host = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *second = host + URING_BUF_SLOT_MAX;
    UringBufsInfo info;
    uint64_t g;
    int a, b;

    g_assert(host != MAP_FAILED);
    uring_bufs_ref(&error_abort);
    if (uring_bufs_register(host, size, URING_BUFS_PIN_NOW) == -ENOMEM) {
        g_test_skip("RLIMIT_MEMLOCK does not allow pinning 1 GiB");
        uring_bufs_unregister(host, size);
        uring_bufs_unref();
        munmap(host, size);
        return;
    }
    g = uring_bufs_generation();
    uring_bufs_get_info(&info);
    g_assert_cmpuint(info.slots, ==, 2);

    a = uring_bufs_lookup(qiov_of(host, 4096), g);
    b = uring_bufs_lookup(qiov_of(second, 4096), g);
    g_assert_cmpint(a, >=, 0);
    g_assert_cmpint(b, >=, 0);
    g_assert_cmpint(a, !=, b);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(second - 4096, 4096), g), ==,
                    a);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(second - 4096, 8192), g), ==,
                    -1);
    g_assert_cmpint(uring_bufs_lookup(qiov_of(second + 4096, 4096), g), ==,
                    b);

    uring_bufs_unregister(host, size);
    uring_bufs_unref();
    drain_call_rcu();
    munmap(host, size);
}

typedef struct BounceCo {
    void *buf;
    size_t len;
    bool done;
} BounceCo;

static void coroutine_fn bounce_get_entry(void *opaque)
{
    BounceCo *bc = opaque;

    bc->buf = uring_bufs_co_bounce_get(4096, &bc->len);
    bc->done = true;
}

static void coroutine_fn bounce_put_entry(void *opaque)
{
    BounceCo *bc = opaque;

    uring_bufs_co_bounce_put(bc->buf, bc->len);
    bc->done = true;
}

static void bounce_run(CoroutineEntry *entry, BounceCo *bc)
{
    bc->done = false;
    aio_co_enter(ctx, qemu_coroutine_create(entry, bc));
}

/* A full bounce buffer makes requests wait, and its release wakes them */
static void test_bufs_bounce_wait(void)
{
    BounceCo all[1024], waiter;
    UringBufsInfo info;
    unsigned i, n = 0;

    uring_bufs_ref(&error_abort);
    uring_bufs_get_info(&info);
    g_assert_cmpuint(info.bounce_bytes, >=, 4096);

    /* Take every page */
    do {
        bounce_run(bounce_get_entry, &all[n]);
        g_assert(all[n].done);
        g_assert_cmpuint(all[n].len, ==, 4096);
    } while (++n < info.bounce_bytes / 4096);

    bounce_run(bounce_get_entry, &waiter);
    g_assert(!waiter.done);

    bounce_run(bounce_put_entry, &all[0]);
    while (!waiter.done) {
        aio_poll(ctx, true);
    }
    g_assert(waiter.buf == all[0].buf);
    uring_bufs_get_info(&info);
    g_assert_cmpuint(info.bounce_waits, >=, 1);

    bounce_run(bounce_put_entry, &waiter);
    for (i = 1; i < n; i++) {
        bounce_run(bounce_put_entry, &all[i]);
    }
    uring_bufs_unref();
}

/* The ring engine, on a temporary file in the main loop */

typedef struct {
    UringRing *r;
    bool is_write;
    uint64_t offset;
    QEMUIOVector qiov;
    unsigned buf_index;
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
    rw->done = false;
    aio_co_enter(ctx, qemu_coroutine_create(rw_co_entry, rw));
}

static void rw_wait(RwCo *rw)
{
    while (!rw->done) {
        aio_poll(ctx, true);
    }
}

/* A ring holding the table as it is now */
static UringRing *ring_new(int fd, unsigned entries, uint64_t *generation)
{
    UringRingConfig cfg = {
        .entries = entries,
        .fd = fd,
        .sqpoll_cpu = -1,
        .attach_wq_fd = -1,
    };
    UringBufsSnapshot snap;
    UringRing *r;

    uring_bufs_snapshot_begin(&snap);
    cfg.bufs_ring_fd = snap.ring_fd;
    cfg.bufs = snap.iov;
    cfg.nr_bufs = snap.nr_iov;
    r = uring_ring_new(ctx, &cfg, &error_abort);
    if (generation) {
        *generation = snap.generation;
    }
    uring_bufs_snapshot_end(&snap);
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

static void test_ring_rw_fixed(void)
{
    int fd = tmp_file(4 * BUF_SIZE);
    uint8_t *buf = qemu_memalign(4096, 2 * BUF_SIZE);
    uint8_t check[BUF_SIZE];
    UringRingStats st;
    RwCo rw = { 0 };
    uint64_t generation;
    int slot;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    rw.r = ring_new(fd, 8, &generation);
    slot = uring_bufs_lookup(qiov_of(buf, BUF_SIZE), generation);
    g_assert_cmpint(slot, >=, 0);

    memset(buf, 0x5a, BUF_SIZE);
    qemu_iovec_init_buf(&rw.qiov, buf, BUF_SIZE);
    rw.is_write = true;
    rw.offset = BUF_SIZE;
    rw.buf_index = slot;
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(pread(fd, check, BUF_SIZE, BUF_SIZE) == BUF_SIZE);
    g_assert(check[0] == 0x5a && check[BUF_SIZE - 1] == 0x5a);

    memset(buf, 0, BUF_SIZE);
    rw.is_write = false;
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(buf[0] == 0x5a && buf[BUF_SIZE - 1] == 0x5a);

    /* The kernel checks the bounds of the fixed buffer */
    qemu_iovec_init_buf(&rw.qiov, buf + BUF_SIZE, 4096);
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, -EFAULT);

    uring_ring_get_stats(rw.r, &st);
    g_assert_cmpuint(st.rw_requests, ==, 3);

    uring_ring_unref(rw.r);
    uring_bufs_unregister(buf, BUF_SIZE);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/* Once enabled, a ring refuses every register call, with real arguments */
static void test_ring_register_refused(void)
{
    int fd = tmp_file(4096);
    uint8_t *buf = qemu_memalign(4096, 4096);
    struct iovec iov = { .iov_base = buf, .iov_len = 4096 };
    struct io_uring other;
    UringRing *r;
    int ring_fd;

    uring_bufs_ref(&error_abort);
    r = ring_new(fd, 4, NULL);
    ring_fd = uring_ring_fd(r);
    g_assert_cmpint(io_uring_queue_init(1, &other, 0), ==, 0);
    g_assert_cmpint(io_uring_register_buffers(&other, &iov, 1), ==, 0);

    g_assert_cmpint(ring_fd_register(ring_fd, IORING_REGISTER_FILES_UPDATE,
                                       &(struct io_uring_files_update) {
                                           .fds = (uintptr_t)&fd,
                                       }, 1), ==, -EACCES);
    g_assert_cmpint(ring_fd_register(ring_fd,
                                       IORING_REGISTER_BUFFERS_UPDATE,
                                       &(struct io_uring_rsrc_update2) {
                                           .data = (uintptr_t)&iov,
                                           .nr = 1,
                                       }, sizeof(struct io_uring_rsrc_update2)),
                    ==, -EACCES);
    g_assert_cmpint(ring_fd_register(ring_fd, URING_REGISTER_CLONE_BUFFERS,
                                     &(UringCloneBuffers) {
                                         .src_fd = other.ring_fd,
                                     }, 1), ==, -EACCES);
    g_assert_cmpint(ring_fd_register(ring_fd, IORING_UNREGISTER_FILES,
                                       NULL, 0), ==, -EACCES);

    io_uring_queue_exit(&other);
    uring_ring_unref(r);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/* Requests go through the bounce buffer, which every ring holds */
static void test_ring_read_past_eof(void)
{
    int fd = tmp_file(4096);
    uint8_t *buf;
    size_t len;
    UringRing *r;
    RwCo rw = { 0 };
    BounceCo bc;

    uring_bufs_ref(&error_abort);
    r = ring_new(fd, 4, NULL);
    bounce_run(bounce_get_entry, &bc);
    g_assert(bc.done);
    buf = bc.buf;
    len = bc.len;
    g_assert_cmpuint(len, ==, 4096);

    g_assert(pwrite(fd, "abc", 3, 0) == 3);
    memset(buf, 0xff, len);
    rw = (RwCo) { .r = r, .buf_index = uring_bufs_bounce_index() };
    qemu_iovec_init_buf(&rw.qiov, buf, len);
    rw.offset = 2048;
    rw_start(&rw);
    rw_wait(&rw);
    /* The short read is continued, and what lies past EOF reads as 0 */
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(buf[0] == 0 && buf[len - 1] == 0);

    rw.offset = 0;
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(memcmp(buf, "abc", 3) == 0);

    bounce_run(bounce_put_entry, &bc);
    uring_ring_unref(r);
    uring_bufs_unref();
    close(fd);
}

/*
 * An O_DIRECT read that ends short at an end of file that is not aligned
 * would continue at an unaligned offset: that is the end of the file.
 */
static void test_ring_read_unaligned_eof(void)
{
    char name[] = "/var/tmp/test-uring-XXXXXX";
    int fd = mkstemp(name);
    uint8_t *buf = qemu_memalign(4096, 8192);
    RwCo rw = { 0 };
    uint64_t generation;
    int dfd;

    g_assert(fd >= 0);
    g_assert(pwrite(fd, "abc", 3, 4096 + 97) == 3);
    dfd = open(name, O_RDWR | O_DIRECT);
    unlink(name);
    close(fd);
    if (dfd < 0) {
        g_test_skip("/var/tmp does not support O_DIRECT");
        qemu_vfree(buf);
        return;
    }

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, 8192, URING_BUFS_PIN_NOW),
                    ==, 0);
    rw.r = ring_new(dfd, 4, &generation);
    rw.buf_index = uring_bufs_lookup(qiov_of(buf, 8192), generation);
    memset(buf, 0xff, 8192);
    qemu_iovec_init_buf(&rw.qiov, buf, 8192);
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(buf[0] == 0 && memcmp(buf + 4096 + 97, "abc", 3) == 0);
    g_assert(buf[4096 + 100] == 0 && buf[8191] == 0);

    uring_ring_unref(rw.r);
    uring_bufs_unregister(buf, 8192);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(dfd);
}

/* A reference keeps a ring working after its owner let go */
static void test_ring_refs(void)
{
    int fd = tmp_file(BUF_SIZE);
    uint8_t *buf = qemu_memalign(4096, BUF_SIZE);
    RwCo rw = { 0 };
    uint64_t generation;
    int ring_fd;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    rw.r = ring_new(fd, 4, &generation);
    ring_fd = uring_ring_fd(rw.r);
    rw.buf_index = uring_bufs_lookup(qiov_of(buf, 4096), generation);
    qemu_iovec_init_buf(&rw.qiov, buf, 4096);

    /* The request's reference, then the owner goes while it runs */
    uring_ring_ref(rw.r);
    rw_start(&rw);
    uring_ring_unref(rw.r);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(fcntl(ring_fd, F_GETFD) >= 0);

    /* The last reference frees it */
    uring_ring_unref(rw.r);
    g_assert(fcntl(ring_fd, F_GETFD) < 0 && errno == EBADF);

    uring_bufs_unregister(buf, BUF_SIZE);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/*
 * Write page i of @buf, filled with i, to page i of the image for each of
 * @n pages, all in one submission, as a virtqueue notification does; wait
 * for all of them.  The results are in the returned array.
 */
static RwCo *write_pages(UringRing *r, uint8_t *buf, unsigned slot,
                         unsigned n)
{
    RwCo *rw = g_new0(RwCo, n);
    bool all_done;
    unsigned i;

    defer_call_begin();
    for (i = 0; i < n; i++) {
        memset(buf + i * 4096, i, 4096);
        rw[i] = (RwCo) {
            .r = r, .is_write = true, .offset = i * 4096, .buf_index = slot,
        };
        qemu_iovec_init_buf(&rw[i].qiov, buf + i * 4096, 4096);
        rw_start(&rw[i]);
    }
    defer_call_end();
    do {
        aio_poll(ctx, true);
        all_done = true;
        for (i = 0; i < n; i++) {
            all_done &= rw[i].done;
        }
    } while (!all_done);
    return rw;
}

/* More requests than the SQ and CQ hold: they wait, none is dropped */
static void run_many_writes(UringRing *r, int fd, uint8_t *buf,
                            unsigned slot, unsigned n)
{
    RwCo *rw = write_pages(r, buf, slot, n);
    unsigned i;

    for (i = 0; i < n; i++) {
        uint8_t b;

        g_assert_cmpint(rw[i].ret, ==, 0);
        g_assert(pread(fd, &b, 1, i * 4096 + 100) == 1);
        g_assert_cmpint(b, ==, i & 0xff);
    }
    g_free(rw);
}

static void test_ring_queue_full(void)
{
    enum { N = 32 };
    int fd = tmp_file(N * 4096);
    uint8_t *buf = qemu_memalign(4096, N * 4096);
    UringRingStats st;
    UringRing *r;
    uint64_t generation;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, N * 4096, URING_BUFS_PIN_NOW),
                    ==, 0);
    r = ring_new(fd, 1, &generation);
    run_many_writes(r, fd, buf,
                    uring_bufs_lookup(qiov_of(buf, 4096), generation), N);
    uring_ring_get_stats(r, &st);
    g_assert_cmpuint(st.queued, >, 0);

    uring_ring_unref(r);
    uring_bufs_unregister(buf, N * 4096);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/*
 * Failed submissions.  This io_uring_submit() takes the place of
 * liburing's for the whole test program; it fails with @inject_err for
 * @inject_count calls on the ring @inject_fd, after the kernel took nothing.
 */
static int inject_fd = -1;
static int inject_err;
static unsigned inject_count;

int io_uring_submit(struct io_uring *ring)
{
    if (ring->ring_fd == inject_fd && inject_count > 0) {
        inject_count--;
        return inject_err;
    }
    return io_uring_submit_and_wait(ring, 0);
}

static void test_ring_submit_errors(void)
{
    static const int errs[] = { -EAGAIN, -EBUSY, -ENOMEM, -EINTR };
    enum { N = 16 };
    int fd = tmp_file(N * 4096);
    uint8_t *buf = qemu_memalign(4096, N * 4096);
    UringRingStats st;
    UringRing *r;
    uint64_t generation;
    unsigned i;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, N * 4096, URING_BUFS_PIN_NOW),
                    ==, 0);
    r = ring_new(fd, 4, &generation);
    for (i = 0; i < ARRAY_SIZE(errs); i++) {
        inject_fd = uring_ring_fd(r);
        inject_err = errs[i];
        inject_count = 3;
        run_many_writes(r, fd, buf,
                        uring_bufs_lookup(qiov_of(buf, 4096), generation), N);
        g_assert_cmpuint(inject_count, ==, 0);
    }
    inject_fd = -1;
    uring_ring_get_stats(r, &st);
    g_assert_cmpuint(st.submit_retries, >=, 3 * ARRAY_SIZE(errs));

    uring_ring_unref(r);
    uring_bufs_unregister(buf, N * 4096);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/*
 * A submission that fails for good fails the requests the kernel did not
 * take, and every later one, instead of retrying forever; so does one that
 * keeps failing with a transient error.
 */
static void run_failing_writes(int err, unsigned count)
{
    enum { N = 8 };
    int fd = tmp_file(N * 4096);
    uint8_t *buf = qemu_memalign(4096, N * 4096);
    RwCo *rw;
    UringRing *r;
    uint64_t generation;
    int slot;
    unsigned i;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, N * 4096, URING_BUFS_PIN_NOW),
                    ==, 0);
    r = ring_new(fd, N, &generation);
    slot = uring_bufs_lookup(qiov_of(buf, 4096), generation);
    inject_fd = uring_ring_fd(r);
    inject_err = err;
    inject_count = count;
    rw = write_pages(r, buf, slot, N);
    inject_fd = -1;

    for (i = 0; i < N; i++) {
        g_assert_cmpint(rw[i].ret, ==, err);
    }
    g_assert_cmpint(uring_ring_broken(r), ==, err);
    g_assert(uring_ring_is_idle(r));
    rw_start(&rw[0]);
    rw_wait(&rw[0]);
    g_assert_cmpint(rw[0].ret, ==, err);

    uring_ring_unref(r);
    uring_bufs_unregister(buf, N * 4096);
    uring_bufs_unref();
    g_free(rw);
    qemu_vfree(buf);
    close(fd);
}

static void test_ring_hard_error(void)
{
    run_failing_writes(-EBADFD, 1);
}

static void test_ring_transient_error_bound(void)
{
    run_failing_writes(-EAGAIN, UINT_MAX);
}

/*
 * A read that the kernel had taken when the ring broke, and that comes back
 * short, fails instead of waiting for a submission that never comes.
 */
static void test_ring_break_short_read(void)
{
    int fd = tmp_file(4096 + 2048);
    uint8_t *buf = qemu_memalign(4096, 3 * 4096);
    RwCo rd = { .is_write = false }, wr = { .is_write = true };
    UringRing *r;
    uint64_t generation;
    int64_t deadline;
    int slot;

    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, 3 * 4096, URING_BUFS_PIN_NOW),
                    ==, 0);
    r = ring_new(fd, 4, &generation);
    slot = uring_bufs_lookup(qiov_of(buf, 4096), generation);

    /* Submitted at once: the kernel reads the 6 KiB that the file has */
    rd.r = r;
    rd.buf_index = slot;
    qemu_iovec_init_buf(&rd.qiov, buf, 2 * 4096);
    rw_start(&rd);

    /* Its completion is not reaped yet when the next submission fails */
    wr.r = r;
    wr.buf_index = slot;
    qemu_iovec_init_buf(&wr.qiov, buf + 2 * 4096, 4096);
    inject_fd = uring_ring_fd(r);
    inject_err = -EBADFD;
    inject_count = 1;
    rw_start(&wr);
    inject_fd = -1;
    rw_wait(&wr);
    g_assert_cmpint(wr.ret, ==, -EBADFD);

    /* Bounded, so that the test fails instead of hanging */
    deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 5000;
    while (!rd.done && qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline) {
        aio_poll(ctx, false);
    }
    g_assert(rd.done);
    g_assert_cmpint(rd.ret, ==, -EBADFD);
    g_assert(uring_ring_is_idle(r));

    uring_ring_unref(r);
    uring_bufs_unregister(buf, 3 * 4096);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/*
 * A ring set up without pinned memory (no room under RLIMIT_MEMLOCK) reads
 * and writes memory that is in no fixed buffer; a fixed-buffer ring
 * refuses that
 */
static void test_ring_unpinned(void)
{
    int fd = tmp_file(BUF_SIZE);
    uint8_t *buf = qemu_memalign(4096, 4096);
    UringRingConfig cfg = {
        .entries = 8,
        .fd = fd,
        .sqpoll_cpu = -1,
        .attach_wq_fd = -1,
        .bufs_ring_fd = -1,
        .unpinned = true,
    };
    RwCo rw = { 0 };
    uint64_t generation;

    uring_bufs_ref(&error_abort);
    memset(buf, 0x6b, 4096);
    qemu_iovec_init_buf(&rw.qiov, buf, 4096);
    rw.is_write = true;
    rw.r = uring_ring_new(ctx, &cfg, &error_abort);
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    memset(buf, 0, 4096);
    rw.is_write = false;
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, 0);
    g_assert(buf[0] == 0x6b && buf[4095] == 0x6b);
    uring_ring_unref(rw.r);

    rw.r = ring_new(fd, 8, &generation);
    rw_start(&rw);
    rw_wait(&rw);
    g_assert_cmpint(rw.ret, ==, -EFAULT);
    uring_ring_unref(rw.r);

    uring_bufs_unref();
    qemu_vfree(buf);
    close(fd);
}

/*
 * A ring that waits long for its completions stops being polled by the
 * event loop: reads from a pipe that is written 2 ms after each read
 */
static void test_ring_polling_follows_waits(void)
{
    uint8_t *buf = qemu_memalign(4096, BUF_SIZE);
    uint8_t data[4096];
    uint64_t generation;
    RwCo rw = { 0 };
    int pipefd[2];
    unsigned i;

    g_assert(pipe(pipefd) == 0);
    memset(data, 0x3c, sizeof(data));
    uring_bufs_ref(&error_abort);
    g_assert_cmpint(uring_bufs_register(buf, BUF_SIZE, URING_BUFS_PIN_NOW),
                    ==, 0);
    rw.r = ring_new(pipefd[0], 8, &generation);
    rw.buf_index = uring_bufs_lookup(qiov_of(buf, sizeof(data)), generation);
    g_assert(uring_ring_is_polled(rw.r));

    qemu_iovec_init_buf(&rw.qiov, buf, sizeof(data));
    for (i = 0; i < 4; i++) {
        rw_start(&rw);
        g_usleep(2000);
        g_assert(write(pipefd[1], data, sizeof(data)) == sizeof(data));
        rw_wait(&rw);
        g_assert_cmpint(rw.ret, ==, 0);
        g_assert(buf[0] == 0x3c && buf[sizeof(data) - 1] == 0x3c);
    }
    g_assert(!uring_ring_is_polled(rw.r));

    uring_ring_unref(rw.r);
    uring_bufs_unregister(buf, BUF_SIZE);
    uring_bufs_unref();
    qemu_vfree(buf);
    close(pipefd[0]);
    close(pipefd[1]);
}

int main(int argc, char **argv)
{
    qemu_init_main_loop(&error_abort);
    ctx = qemu_get_current_aio_context();

    g_test_init(&argc, &argv, NULL);
    if (qemu_io_uring_restricted_ring_usable(0)) {
        /* First: no thread pool thread exists yet */
        g_test_add_func("/uring/bufs/pin-now-after-background",
                        test_bufs_pin_now_after_background);
        g_test_add_func("/uring/bufs/generations", test_bufs_generations);
        g_test_add_func("/uring/bufs/bounce-wait", test_bufs_bounce_wait);
        g_test_add_func("/uring/bufs/split", test_bufs_split);
        g_test_add_func("/uring/bufs/unregister-while-pinning",
                        test_bufs_unregister_while_pinning);
        g_test_add_func("/uring/bufs/lookup-empty", test_bufs_lookup_empty);
        g_test_add_func("/uring/ring/rw-fixed", test_ring_rw_fixed);
        g_test_add_func("/uring/ring/register-refused",
                        test_ring_register_refused);
        g_test_add_func("/uring/ring/read-past-eof", test_ring_read_past_eof);
        g_test_add_func("/uring/ring/read-unaligned-eof",
                        test_ring_read_unaligned_eof);
        g_test_add_func("/uring/ring/refs", test_ring_refs);
        g_test_add_func("/uring/ring/queue-full", test_ring_queue_full);
        g_test_add_func("/uring/ring/submit-errors",
                        test_ring_submit_errors);
        g_test_add_func("/uring/ring/hard-error", test_ring_hard_error);
        g_test_add_func("/uring/ring/transient-error-bound",
                        test_ring_transient_error_bound);
        g_test_add_func("/uring/ring/unpinned", test_ring_unpinned);
        g_test_add_func("/uring/ring/polling-follows-waits",
                        test_ring_polling_follows_waits);
        g_test_add_func("/uring/ring/break-short-read",
                        test_ring_break_short_read);
    } else {
        g_test_message("this kernel cannot make restricted io_uring "
                       "instances: tests skipped");
    }
    return g_test_run();
}
