/*
 * QTest testcase for x-uring-blk-pci, whose queue is a restricted io_uring
 * owned by the guest
 *
 * The test is a hostile guest: it writes SQEs, ring indices, registers and
 * PCI config space itself, and checks from the host (the image file, the
 * helper process) that the device's protections hold.  Each case says
 * what would make it fail.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <linux/io_uring.h>
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "hw/block/uring-blk.h"
#include "hw/pci/pci_regs.h"
#include "libqtest.h"
#include "libqos/libqos-pc.h"
#include "libqos/uring.h"

#define URING_BLK_SLOT          4
#define URING_BLK_MAX_REGIONS   64
#define IMG_SIZE                (16 * MiB)
#define BUF_SIZE                (8 * MiB)
#define TIMEOUT_US              (10 * G_USEC_PER_SEC)
#define SETTLE_US               (200 * 1000)
#define MSI_DATA                0x5ab1
#define HELPER_COMM             "qemu-uring-blk"    /* comm is truncated */
#define IOPRIO_RT               (1 << 13)           /* class RT, level 0 */

#define ST_ENABLE               URING_BLK_STATUS_ENABLE
#define ST_READY                URING_BLK_STATUS_READY
#define ST_BROKEN               URING_BLK_STATUS_BROKEN
#define ST_FAILED               URING_BLK_STATUS_FAILED

/* Where the device sits: on the uring node itself, or on a raw node */
typedef struct Topology {
    const char *name;
    const char *extra;          /* more -blockdev options */
    const char *drive;          /* the device's node */
} Topology;

static const Topology topologies[] = {
    { "uring", "", "drv0" },
    { "raw", "-blockdev driver=raw,node-name=fmt0,file=drv0 ", "fmt0" },
};

typedef struct Region {
    uint64_t gpa, size, addr;
    uint16_t buf;
} Region;

/* The ring memory is the host kernel's, in its byte order */
typedef struct io_uring_sqe Sqe;

typedef struct UB {
    const Topology *topo;
    char *dir, *img;
    QOSState *qs;
    QTestState *qts;
    QPCIDevice *dev;
    QPCIBar regs, ring;
    uint64_t ring_size;
    uint64_t msi;               /* MSI-X vector 0 writes MSI_DATA here */
    uint64_t buf;               /* BUF_SIZE bytes of guest RAM */
    /* The ring, from READY on */
    uint32_t sq_entries, cq_entries, sqes;
    uint32_t sq_head, sq_tail, sq_mask, cq_head, cq_tail, cq_mask, cqes;
    uint32_t sq_flags_off;
    uint32_t nr_regions;
    Region region[URING_BLK_MAX_REGIONS];
    uint32_t tail;              /* our SQ tail and CQ head */
    uint32_t head;
    uint64_t seq;
} UB;

static const char *skip_reason;

/* Poll until @cond holds or TIMEOUT_US passed; evaluates to @cond */
#define WAIT_FOR(cond) ({                                               \
    gint64 end_ = g_get_monotonic_time() + TIMEOUT_US;                  \
    while (!(cond) && g_get_monotonic_time() < end_) {                  \
        g_usleep(100);                                                  \
    }                                                                   \
    (cond);                                                             \
})

/* Image and memory contents */

static void fill_pattern(uint8_t *buf, uint64_t off, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        buf[i] = (((off + i) / 512) & 0xff) ^ 0x5a;
    }
}

static void assert_bytes(const char *what, const uint8_t *got,
                         const uint8_t *want, size_t len)
{
    size_t i;

    for (i = 0; i < len && got[i] == want[i]; i++) {
        /* find the first difference */
    }
    if (i < len) {
        g_test_message("%s differs at byte %zu: 0x%02x, expected 0x%02x",
                       what, i, got[i], want[i]);
    }
    g_assert_cmpuint(i, ==, len);
}

static char *make_image(const char *dir)
{
    g_autofree uint8_t *data = g_malloc(IMG_SIZE);
    char *path = g_build_filename(dir, "disk.raw", NULL);

    fill_pattern(data, 0, IMG_SIZE);
    g_assert_true(g_file_set_contents(path, (char *)data, IMG_SIZE, NULL));
    return path;
}

/* From the host: the image has its size and its pattern, all of it */
static void assert_image_intact(UB *u)
{
    g_autofree uint8_t *want = g_malloc(IMG_SIZE);
    g_autofree char *got = NULL;
    gsize len;

    g_assert_true(g_file_get_contents(u->img, &got, &len, NULL));
    g_assert_cmpuint(len, ==, IMG_SIZE);
    fill_pattern(want, 0, IMG_SIZE);
    assert_bytes("the image", (uint8_t *)got, want, IMG_SIZE);
}

/* Registers and ring memory */

static uint32_t reg_read(UB *u, uint32_t reg)
{
    return qpci_io_readl(u->dev, u->regs, reg);
}

static uint64_t reg_read64(UB *u, uint32_t lo)
{
    return reg_read(u, lo) | (uint64_t)reg_read(u, lo + 4) << 32;
}

static void reg_write(UB *u, uint32_t reg, uint32_t val)
{
    qpci_io_writel(u->dev, u->regs, reg, val);
}

static uint32_t ring_read(UB *u, uint32_t off)
{
    return qpci_io_readl(u->dev, u->ring, off);
}

static void ring_write(UB *u, uint32_t off, uint32_t val)
{
    qpci_io_writel(u->dev, u->ring, off, val);
}

static bool ring_writable(UB *u)
{
    return !(reg_read(u, URING_BLK_REG_FEATURES) & URING_BLK_F_READ_ONLY);
}

/* STATUS once it has one of @bits, or after TIMEOUT_US */
static uint32_t wait_status(UB *u, uint32_t bits)
{
    uint32_t st;

    WAIT_FOR((st = reg_read(u, URING_BLK_REG_STATUS)) & bits);
    return st;
}

static void ring_enable(UB *u)
{
    uint32_t st, i;

    reg_write(u, URING_BLK_REG_STATUS, ST_ENABLE);
    st = wait_status(u, ST_READY | ST_FAILED | ST_BROKEN);
    if (st & ST_FAILED) {
        g_test_message("enabling FAILED with ERROR %u",
                       reg_read(u, URING_BLK_REG_ERROR));
    }
    g_assert_cmphex(st, ==, ST_ENABLE | ST_READY);

    u->sq_entries = reg_read(u, URING_BLK_REG_SQ_ENTRIES);
    u->cq_entries = reg_read(u, URING_BLK_REG_CQ_ENTRIES);
    u->sqes = reg_read(u, URING_BLK_REG_SQES);
    u->sq_head = reg_read(u, URING_BLK_REG_SQ_HEAD);
    u->sq_flags_off = reg_read(u, URING_BLK_REG_SQ_FLAGS);
    u->sq_tail = reg_read(u, URING_BLK_REG_SQ_TAIL);
    u->sq_mask = ring_read(u, reg_read(u, URING_BLK_REG_SQ_MASK));
    u->cq_head = reg_read(u, URING_BLK_REG_CQ_HEAD);
    u->cq_tail = reg_read(u, URING_BLK_REG_CQ_TAIL);
    u->cq_mask = ring_read(u, reg_read(u, URING_BLK_REG_CQ_MASK));
    u->cqes = reg_read(u, URING_BLK_REG_CQ_CQES);
    g_assert_cmpuint(u->sq_mask, ==, u->sq_entries - 1);
    g_assert_cmpuint(u->cq_mask, ==, u->cq_entries - 1);
    g_assert_cmpuint(u->sqes + u->sq_entries * 64, <=, u->ring_size);
    u->tail = ring_read(u, u->sq_tail);
    u->head = ring_read(u, u->cq_head);

    u->nr_regions = reg_read(u, URING_BLK_REG_NR_REGIONS);
    g_assert_cmpuint(u->nr_regions, >, 0);
    g_assert_cmpuint(u->nr_regions, <=, URING_BLK_MAX_REGIONS);
    for (i = 0; i < u->nr_regions; i++) {
        reg_write(u, URING_BLK_REG_REGION_SEL, i);
        u->region[i] = (Region) {
            .gpa = reg_read64(u, URING_BLK_REG_REGION_GPA_LO),
            .size = reg_read64(u, URING_BLK_REG_REGION_SIZE_LO),
            .addr = reg_read64(u, URING_BLK_REG_REGION_ADDR_LO),
            .buf = reg_read(u, URING_BLK_REG_REGION_BUF),
        };
    }
}

/* Reset; when the register write returns, the old ring is gone */
static void ring_reset(UB *u)
{
    reg_write(u, URING_BLK_REG_STATUS, 0);
    g_assert_cmphex(reg_read(u, URING_BLK_REG_STATUS), ==, 0);
}

/*
 * Reset and enable again.  The new ring starts empty and stays so while
 * the guest submits nothing: the old ring may not write its indices.
 */
static void ring_restart(UB *u)
{
    uint32_t new_ring_cq_tail, new_ring_sq_head;

    ring_reset(u);
    ring_enable(u);
    g_usleep(SETTLE_US);
    new_ring_cq_tail = ring_read(u, u->cq_tail);
    new_ring_sq_head = ring_read(u, u->sq_head);
    g_assert_cmpuint(new_ring_cq_tail, ==, 0);
    g_assert_cmpuint(new_ring_sq_head, ==, 0);
}

/* The SQE address of guest memory [gpa, gpa + len), in one region */
static uint64_t sqe_addr(UB *u, uint64_t gpa, uint32_t len, uint16_t *buf)
{
    uint32_t i;

    for (i = 0; i < u->nr_regions; i++) {
        const Region *r = &u->region[i];

        if (gpa >= r->gpa && gpa + len <= r->gpa + r->size) {
            *buf = r->buf;
            return r->addr + (gpa - r->gpa);
        }
    }
    g_assert_not_reached();
}

/* A request on the image (fixed file 0) to or from guest memory */
static Sqe rw_sqe(UB *u, uint8_t op, uint64_t off, uint64_t gpa,
                  uint32_t len)
{
    Sqe s = {
        .opcode = op, .flags = IOSQE_FIXED_FILE, .off = off, .len = len,
    };
    uint16_t buf;

    s.addr = sqe_addr(u, gpa, len, &buf);
    s.buf_index = buf;
    return s;
}

static void sq_push(UB *u, const Sqe *s)
{
    qpci_memwrite(u->dev, u->ring, u->sqes + (u->tail++ & u->sq_mask) *
                  sizeof(*s), s, sizeof(*s));
}

/* Publish the SQ tail and ring the doorbell (always: it is harmless) */
static void sq_publish(UB *u)
{
    ring_write(u, u->sq_tail, u->tail);
    reg_write(u, URING_BLK_REG_DOORBELL, 1);
}

static int32_t cq_pop(UB *u, uint64_t *user_data)
{
    struct io_uring_cqe cqe;

    qpci_memread(u->dev, u->ring, u->cqes + (u->head++ & u->cq_mask) *
                 sizeof(cqe), &cqe, sizeof(cqe));
    ring_write(u, u->cq_head, u->head);
    *user_data = cqe.user_data;
    return cqe.res;
}

/* Submit one request and return its result */
static int32_t do_sqe(UB *u, Sqe *s)
{
    uint64_t user_data;
    int32_t res;

    s->user_data = ++u->seq;
    sq_push(u, s);
    sq_publish(u);
    if (!WAIT_FOR(ring_read(u, u->cq_tail) != u->head)) {
        g_test_message("no completion after 10 s; STATUS 0x%x",
                       reg_read(u, URING_BLK_REG_STATUS));
        g_assert_not_reached();
    }
    res = cq_pop(u, &user_data);
    if (user_data != s->user_data) {
        g_test_message("a completion that is not ours: res %d, CQ tail %u",
                       res, ring_read(u, u->cq_tail));
    }
    g_assert_cmphex(user_data, ==, s->user_data);
    return res;
}

/* READ_FIXED 4 KiB at @off into the buffer and check it against the image */
static void read_check(UB *u, uint64_t off)
{
    uint8_t got[4096], want[4096];
    Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, off, u->buf, sizeof(got));

    qtest_memset(u->qts, u->buf, 0, sizeof(got));
    g_assert_cmpint(do_sqe(u, &s), ==, sizeof(got));
    qtest_memread(u->qts, u->buf, got, sizeof(got));
    fill_pattern(want, off, sizeof(want));
    assert_bytes("the data read", got, want, sizeof(got));
}

/* Point MSI-X vector 0 at guest RAM, where the test sees its messages */
static void msix_setup(UB *u)
{
    QPCIDevice *d = u->dev;
    uint64_t e;

    qpci_msix_enable(d);
    e = d->msix_table_off;
    u->msi = guest_alloc(&u->qs->alloc, 4);
    qtest_writel(u->qts, u->msi, 0);
    qpci_io_writel(d, d->msix_table_bar, e + PCI_MSIX_ENTRY_LOWER_ADDR,
                   u->msi);
    qpci_io_writel(d, d->msix_table_bar, e + PCI_MSIX_ENTRY_UPPER_ADDR,
                   u->msi >> 32);
    qpci_io_writel(d, d->msix_table_bar, e + PCI_MSIX_ENTRY_DATA, MSI_DATA);
    qpci_io_writel(d, d->msix_table_bar, e + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
}

/* Set-up and tear-down */

#define QEMU_ARGS "-machine pc,memory-backend=mem -m 128M " \
    "-object memory-backend-memfd,id=mem,size=128M,share=on "

static void remove_dir(gpointer dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);

        unlink(path);
    }
    rmdir(dir);
}

/* In /var/tmp, which takes O_DIRECT where /tmp may not */
static char *make_tmp_dir(void)
{
    char *dir = g_strdup("/var/tmp/uring-blk-test-XXXXXX");

    g_assert_nonnull(g_mkdtemp(dir));
    qtest_add_abrt_handler(remove_dir, dir);
    return dir;
}

static void free_tmp_dir(char *dir)
{
    qtest_remove_abrt_handler(dir);
    remove_dir(dir);
    g_free(dir);
}

/* Boot with the device on @t, enable it and wait until it is READY */
static UB *ub_start(const Topology *t)
{
    UB *u = g_new0(UB, 1);

    u->topo = t;
    u->dir = make_tmp_dir();
    u->img = make_image(u->dir);
    u->qs = qtest_pc_boot(QEMU_ARGS
                          "-blockdev driver=uring,node-name=drv0,"
                          "filename=%s,cache.direct=on %s"
                          "-device x-uring-blk-pci,id=dev0,drive=%s,"
                          "helper=%s,addr=%x.0",
                          u->img, t->extra, t->drive,
                          g_getenv("URING_BLK_HELPER"), URING_BLK_SLOT);
    u->qts = u->qs->qts;
    u->dev = qpci_device_find(u->qs->pcibus, QPCI_DEVFN(URING_BLK_SLOT, 0));
    g_assert_nonnull(u->dev);
    g_assert_cmphex(qpci_config_readl(u->dev, PCI_VENDOR_ID), ==,
                    URING_BLK_PCI_DEVICE_ID << 16 | URING_BLK_PCI_VENDOR_ID);
    qpci_device_enable(u->dev);
    u->regs = qpci_iomap(u->dev, 0, NULL);
    u->ring = qpci_iomap(u->dev, 2, &u->ring_size);
    msix_setup(u);
    u->buf = guest_alloc(&u->qs->alloc, BUF_SIZE);

    g_assert_cmphex(reg_read(u, URING_BLK_REG_MAGIC), ==, URING_BLK_MAGIC);
    g_assert_cmpuint(reg_read(u, URING_BLK_REG_VERSION), ==,
                     URING_BLK_VERSION);
    g_assert_cmpuint(reg_read64(u, URING_BLK_REG_CAPACITY_LO), ==, IMG_SIZE);
    g_assert_cmphex(reg_read(u, URING_BLK_REG_STATUS), ==, 0);
    ring_enable(u);
    return u;
}

static void ub_stop(UB *u)
{
    g_free(u->dev);
    qtest_shutdown(u->qs);
    free_tmp_dir(u->dir);
    g_free(u->img);
    g_free(u);
}

/* The helper: the child of QEMU whose comm starts with HELPER_COMM */
static pid_t find_helper(UB *u)
{
    g_autoptr(GDir) d = g_dir_open("/proc", 0, NULL);
    pid_t found = 0;
    const char *name;

    while ((name = g_dir_read_name(d))) {
        g_autofree char *path = g_strdup_printf("/proc/%s/stat", name);
        g_autofree char *stat = NULL;
        char comm[16];
        int ppid;

        if (g_ascii_isdigit(name[0]) &&
            g_file_get_contents(path, &stat, NULL, NULL) &&
            sscanf(stat, "%*d (%15[^)]) %*c %d", comm, &ppid) == 2 &&
            ppid == qtest_pid(u->qts) && g_str_has_prefix(comm, HELPER_COMM)) {
            g_assert_cmpint(found, ==, 0);
            found = atoi(name);
        }
    }
    g_assert_cmpint(found, >, 0);
    return found;
}

/* A QMP command that must fail; returns the error's description */
static char * G_GNUC_PRINTF(2, 3) qmp_error(QTestState *qts,
                                            const char *fmt, ...)
{
    va_list ap;
    QDict *rsp, *err;
    char *desc;

    va_start(ap, fmt);
    rsp = qtest_vqmp(qts, fmt, ap);
    va_end(ap);
    err = qdict_get_qdict(rsp, "error");
    if (!err) {
        g_test_message("this QMP command succeeded: %s", fmt);
    }
    g_assert_nonnull(err);
    desc = g_strdup(qdict_get_str(err, "desc"));
    g_test_message("refused: %s", desc);
    qobject_unref(rsp);
    return desc;
}

/* The test cases */

/*
 * Fails if the ring does not move data both ways at the right offsets, if
 * completions raise no MSI-X message, or if a writable node gives a
 * read-only ring.
 */
/*
 * x-ring-state counts what the kernel consumed and posted: fails if the
 * device reported anything but a ready ring with @n requests and their
 * completions, a woken SQ thread and at least one interrupt.
 */
static void check_ring_state(UB *u, int64_t n)
{
    QDict *rsp, *st;

    rsp = qtest_qmp(u->qts, "{ 'execute': 'qom-get', 'arguments': {"
                    " 'path': '/machine/peripheral/dev0',"
                    " 'property': 'x-ring-state' } }");
    st = qdict_get_qdict(rsp, "return");
    g_assert_nonnull(st);
    g_assert_cmpstr(qdict_get_str(st, "state"), ==, "ready");
    g_assert_cmpint(qdict_get_int(st, "requests"), ==, n);
    g_assert_cmpint(qdict_get_int(st, "completions"), ==, n);
    g_assert_cmpint(qdict_get_int(st, "sq-thread"), >, 0);
    g_assert_cmpint(qdict_get_int(st, "doorbells"), >=, 1);
    g_assert_cmpint(qdict_get_int(st, "interrupts"), >=, 1);
    g_assert_cmpint(qdict_get_int(st, "enables"), ==, 1);
    qobject_unref(rsp);
}

static void test_read_write(UB *u)
{
    uint8_t got[4096], want[4096];
    g_autofree char *img = NULL;
    Sqe s;
    size_t i;

    qtest_writel(u->qts, u->msi, 0);
    read_check(u, 8192);
    g_assert_true(WAIT_FOR(qtest_readl(u->qts, u->msi) == MSI_DATA));

    g_assert_cmphex(reg_read(u, URING_BLK_REG_FEATURES) &
                    (URING_BLK_F_READ_ONLY | URING_BLK_F_FLUSH), ==,
                    URING_BLK_F_FLUSH);
    for (i = 0; i < sizeof(want); i++) {
        want[i] = i * 7 + 3;
    }
    qtest_memwrite(u->qts, u->buf, want, sizeof(want));
    s = rw_sqe(u, IORING_OP_WRITE_FIXED, 8192, u->buf, sizeof(want));
    g_assert_cmpint(do_sqe(u, &s), ==, sizeof(want));

    qtest_memset(u->qts, u->buf, 0, sizeof(got));
    s = rw_sqe(u, IORING_OP_READ_FIXED, 8192, u->buf, sizeof(got));
    g_assert_cmpint(do_sqe(u, &s), ==, sizeof(got));
    qtest_memread(u->qts, u->buf, got, sizeof(got));
    assert_bytes("the data read back", got, want, sizeof(got));

    s = (Sqe) { .opcode = IORING_OP_FSYNC, .flags = IOSQE_FIXED_FILE };
    g_assert_cmpint(do_sqe(u, &s), ==, 0);

    g_assert_true(g_file_get_contents(u->img, &img, NULL, NULL));
    assert_bytes("the image", (uint8_t *)img + 8192, want, sizeof(want));
    check_ring_state(u, 4);
}

/*
 * Fails without the opcode allow-list: READ, WRITE and READV would run on
 * fixed file 0 (WRITE would change the image), OPENAT and SOCKET would
 * fail with another errno.  Each SQE has IOSQE_FIXED_FILE, so that only
 * its opcode is wrong.
 */
static void test_forbidden_opcodes(UB *u)
{
    static const uint8_t ops[] = {
        IORING_OP_OPENAT, IORING_OP_SOCKET, IORING_OP_READ, IORING_OP_WRITE,
        IORING_OP_READV,
    };
    uint64_t data = u->buf, iov = u->buf + 4096, path = u->buf + 8192;
    uint64_t iovec[2] = { 0, 4096 };    /* a struct iovec of the helper */
    uint16_t buf;
    unsigned i;

    qtest_memset(u->qts, data, 0xee, 4096);
    iovec[0] = sqe_addr(u, data, 4096, &buf);
    qtest_memwrite(u->qts, iov, iovec, sizeof(iovec));
    qtest_memwrite(u->qts, path, "/etc/hostname", 14);

    for (i = 0; i < ARRAY_SIZE(ops); i++) {
        Sqe s = rw_sqe(u, ops[i], 0, data, 4096);

        switch (ops[i]) {
        case IORING_OP_OPENAT:
            s.fd = AT_FDCWD;
            s.addr = sqe_addr(u, path, 14, &buf);
            s.len = 0;
            break;
        case IORING_OP_SOCKET:
            s.fd = AF_UNIX;
            s.off = SOCK_STREAM;
            s.addr = s.len = s.buf_index = 0;
            break;
        case IORING_OP_READV:
            s.addr = sqe_addr(u, iov, sizeof(iovec), &buf);
            s.len = 1;
            break;
        }
        g_test_message("opcode %u", ops[i]);
        g_assert_cmpint(do_sqe(u, &s), ==, -EACCES);
    }
    assert_image_intact(u);
}

/*
 * Fails if the kernel did not bound fixed-buffer requests to their
 * registered region: reads would fill helper memory, writes would copy it
 * into the image.  Page-aligned cases, where O_DIRECT would not fail for
 * another reason, are included.
 */
static void test_buffer_bounds(UB *u)
{
    const Region *r = &u->region[0];
    const struct {
        const char *what;
        uint64_t addr;
        uint16_t buf;
    } bad[] = {
        { "buffer index past the regions", r->addr, u->nr_regions },
        { "one byte before region 0", r->addr - 1, r->buf },
        { "one page before region 0", r->addr - 4096, r->buf },
        { "across the end of region 0", r->addr + r->size - 2048, r->buf },
    };
    uint8_t ops[] = { IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED };
    unsigned i, op;

    for (op = 0; op < ARRAY_SIZE(ops); op++) {
        if (ops[op] == IORING_OP_WRITE_FIXED && !ring_writable(u)) {
            g_test_message("the ring is read-only: no write cases");
            break;
        }
        for (i = 0; i < ARRAY_SIZE(bad); i++) {
            Sqe s = {
                .opcode = ops[op], .flags = IOSQE_FIXED_FILE, .len = 4096,
                .addr = bad[i].addr, .buf_index = bad[i].buf,
            };

            g_test_message("opcode %u, %s", ops[op], bad[i].what);
            g_assert_cmpint(do_sqe(u, &s), ==, -EFAULT);
        }
    }
    assert_image_intact(u);
}

/*
 * Fails without the SQE flag lists: fd 0 without IOSQE_FIXED_FILE would
 * be the helper's stdin, and the other flags would be honoured.
 */
static void test_fixed_file_and_flags(UB *u)
{
    Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, 0, u->buf, 4096);
    unsigned bit;
    int32_t res;

    s.fd = 1;
    g_assert_cmpint(do_sqe(u, &s), ==, -EBADF);

    s.fd = 0;
    s.flags = 0;
    g_assert_cmpint(do_sqe(u, &s), ==, -EACCES);

    /* DRAIN, LINK, HARDLINK, ASYNC, BUFFER_SELECT, CQE_SKIP_SUCCESS */
    for (bit = 1; bit <= 6; bit++) {
        s.flags = IOSQE_FIXED_FILE | 1u << bit;
        res = do_sqe(u, &s);
        g_test_message("IOSQE flag 0x%x: %d", 1u << bit, res);
        /*
         * No allowed opcode can select a buffer: the kernel refuses
         * BUFFER_SELECT for that before it looks at the restrictions.
         */
        if (1u << bit == IOSQE_BUFFER_SELECT && res == -EOPNOTSUPP) {
            continue;
        }
        g_assert_cmpint(res, ==, -EACCES);
    }
    read_check(u, 0);
}

/*
 * Fails without the helper's RLIMIT_FSIZE: the image would grow.  What is
 * written is what the image holds already, so that it stays intact.
 */
static void test_no_growth(UB *u)
{
    static const struct {
        uint64_t off;
        uint32_t rw_flags;
        int32_t res;
    } w[] = {
        { IMG_SIZE - 4096, 0, 4096 },       /* the last block is fine */
        { IMG_SIZE, 0, -EFBIG },
        { IMG_SIZE - 2048, 0, 2048 },       /* short */
        { 0, RWF_APPEND, -EFBIG },
    };
    uint8_t data[4096];
    unsigned i;

    if (!ring_writable(u)) {
        g_test_skip("the ring is read-only (see read_write)");
        return;
    }
    for (i = 0; i < ARRAY_SIZE(w); i++) {
        Sqe s = rw_sqe(u, IORING_OP_WRITE_FIXED, w[i].off, u->buf, 4096);

        fill_pattern(data, w[i].off, sizeof(data));
        qtest_memwrite(u->qts, u->buf, data, sizeof(data));
        s.rw_flags = w[i].rw_flags;
        g_test_message("write at %" PRIu64 ", flags 0x%x", w[i].off,
                       w[i].rw_flags);
        g_assert_cmpint(do_sqe(u, &s), ==, w[i].res);
    }
    assert_image_intact(u);
}

/*
 * Fails if the SQ thread had capabilities (a real-time I/O priority would
 * be accepted) or if a personality could be named.  RWF_NOWAIT and
 * RWF_DSYNC are harmless: recorded, not refused.
 */
static void test_other_fields(UB *u)
{
    uint8_t data[4096];
    Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, 0, u->buf, 4096);
    int32_t res;

    s.ioprio = IOPRIO_RT;
    g_assert_cmpint(do_sqe(u, &s), ==, -EPERM);

    s.ioprio = 0;
    s.personality = 1;
    g_assert_cmpint(do_sqe(u, &s), ==, -EINVAL);

    s.personality = 0;
    s.rw_flags = RWF_NOWAIT;
    res = do_sqe(u, &s);
    g_test_message("RWF_NOWAIT read: %d", res);
    g_assert_true(res == 4096 || res == -EAGAIN);

    if (ring_writable(u)) {
        fill_pattern(data, 0, sizeof(data));
        qtest_memwrite(u->qts, u->buf, data, sizeof(data));
        s = rw_sqe(u, IORING_OP_WRITE_FIXED, 0, u->buf, 4096);
        s.rw_flags = RWF_DSYNC;
        g_assert_cmpint(do_sqe(u, &s), ==, 4096);
    } else {
        g_test_message("the ring is read-only: no RWF_DSYNC write");
    }
    assert_image_intact(u);
}

/*
 * Fails if the helper did not stop a ring whose SQ tail cannot be right,
 * or if the next ring inherits anything from it.
 */
static void test_garbage_indices(UB *u)
{
    ring_write(u, u->sq_tail, ring_read(u, u->sq_head) + 100000);
    reg_write(u, URING_BLK_REG_DOORBELL, 1);
    g_assert_cmphex(wait_status(u, ST_BROKEN), ==, ST_ENABLE | ST_BROKEN);
    ring_restart(u);
    qtest_qmp_assert_success(u->qts, "{ 'execute': 'query-status' }");
    read_check(u, 4096);
    assert_image_intact(u);
}

/* Fails if the helper let the kernel queue CQEs that do not fit */
static void test_cq_overflow(UB *u)
{
    Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, 0, u->buf, 4096);
    uint32_t total = 3 * u->cq_entries, sent = 0, st = 0, i, n;

    while (sent < total && !(st & ST_BROKEN)) {
        n = MIN(u->sq_entries, total - sent);
        for (i = 0; i < n; i++) {
            s.user_data = ++u->seq;
            sq_push(u, &s);
        }
        sq_publish(u);
        sent += n;
        /* Until the kernel consumed the SQ, or the ring broke */
        WAIT_FOR(((st = reg_read(u, URING_BLK_REG_STATUS)) & ST_BROKEN) ||
                 ring_read(u, u->sq_head) == u->tail);
        /*
         * Hide the overflow from whoever reads the SQ flags: only counts
         * the guest cannot write may tell that the CQ overflowed
         */
        ring_write(u, u->sq_flags_off, 0);
    }
    g_test_message("%u requests submitted, %u CQ entries", sent,
                   u->cq_entries);
    g_assert_cmphex(wait_status(u, ST_BROKEN), ==, ST_ENABLE | ST_BROKEN);
    ring_restart(u);
    qtest_qmp_assert_success(u->qts, "{ 'execute': 'query-status' }");
    read_check(u, 0);
}

/*
 * Fails if a request of the old ring wrote guest memory or the ring
 * memory after the STATUS write that reset the device returned.
 */
static void test_reset_in_flight(UB *u)
{
    const uint32_t len = 64 * KiB;
    uint64_t size = (uint64_t)u->sq_entries * len;
    g_autofree uint8_t *got = g_malloc(size);
    g_autofree uint8_t *want = g_malloc(size);
    g_autofree uint8_t *ring = g_malloc(u->ring_size);
    uint32_t i;

    g_assert_cmpuint(size, <=, BUF_SIZE);
    for (i = 0; i < u->sq_entries; i++) {
        Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, (uint64_t)i * len % IMG_SIZE,
                       u->buf + (uint64_t)i * len, len);

        s.user_data = ++u->seq;
        sq_push(u, &s);
    }
    sq_publish(u);
    reg_write(u, URING_BLK_REG_STATUS, 0);

    qtest_memset(u->qts, u->buf, 0xcc, size);
    g_usleep(SETTLE_US);
    qtest_bufread(u->qts, u->buf, got, size);
    memset(want, 0xcc, size);
    assert_bytes("the buffer after reset", got, want, size);

    g_assert_cmphex(reg_read(u, URING_BLK_REG_STATUS), ==, 0);
    qpci_memread(u->dev, u->ring, 0, ring, u->ring_size);
    memset(want, 0, u->ring_size);
    assert_bytes("the ring memory after reset", ring, want, u->ring_size);

    ring_restart(u);
    read_check(u, 0);
}

/*
 * Fails if the device kept its ring running when the guest turned bus
 * mastering off, or started one without it.
 */
static void test_bus_master_off(UB *u)
{
    uint16_t cmd = qpci_config_readw(u->dev, PCI_COMMAND);

    qpci_config_writew(u->dev, PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER);
    g_assert_cmphex(wait_status(u, ST_BROKEN), ==, ST_ENABLE | ST_BROKEN);

    ring_reset(u);
    reg_write(u, URING_BLK_REG_STATUS, ST_ENABLE);
    g_assert_cmphex(wait_status(u, ST_READY | ST_FAILED), ==,
                    ST_ENABLE | ST_FAILED);
    g_assert_cmpuint(reg_read(u, URING_BLK_REG_ERROR), ==, EPERM);

    qpci_config_writew(u->dev, PCI_COMMAND, cmd);
    ring_restart(u);
    read_check(u, 0);
}

/* Fails if unplugging the device left its helper (and ring) behind */
static void test_unplug(UB *u)
{
    pid_t pid = find_helper(u);
    uint32_t i;

    g_assert_cmpint(kill(pid, 0), ==, 0);
    for (i = 0; i < 8; i++) {
        Sqe s = rw_sqe(u, IORING_OP_READ_FIXED, i * 64 * KiB,
                       u->buf + i * 64 * KiB, 64 * KiB);

        s.user_data = ++u->seq;
        sq_push(u, &s);
    }
    sq_publish(u);

    qpci_unplug_acpi_device_test(u->qts, "dev0", URING_BLK_SLOT);
    /* Gone and reaped: a zombie would still take signal 0 */
    g_assert_cmpint(kill(pid, 0), ==, -1);
    g_assert_cmpint(errno, ==, ESRCH);
    qtest_qmp_assert_success(u->qts, "{ 'execute': 'query-status' }");
}

/*
 * Fails if the enabled ring took register calls: without the restrictions,
 * FILES_UPDATE would replace the image with /dev/null and
 * UNREGISTER_BUFFERS would take guest RAM away.  The ring fd never leaves
 * the helper, so this takes it with pidfd_getfd() (the test runs as root).
 */
static void test_register_from_outside(UB *u)
{
    pid_t pid = find_helper(u);
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", pid);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    int pidfd = syscall(__NR_pidfd_open, pid, 0);
    int ring = -1, null = open("/dev/null", O_RDWR);
    struct iovec iov = { .iov_base = &null, .iov_len = 4096 };
    struct io_uring_files_update up = { .fds = (uintptr_t)&null };
    const struct {
        unsigned op;
        void *arg;
        unsigned nr;
    } calls[] = {
        { IORING_REGISTER_BUFFERS, &iov, 1 },
        { IORING_REGISTER_FILES_UPDATE, &up, 1 },
        { IORING_REGISTER_RESTRICTIONS, NULL, 0 },
        { IORING_UNREGISTER_BUFFERS, NULL, 0 },
    };
    const char *name;
    unsigned i;

    g_assert_cmpint(pidfd, >=, 0);
    while ((name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        g_autofree char *link = g_file_read_link(path, NULL);

        if (!g_strcmp0(link, "anon_inode:[io_uring]")) {
            ring = syscall(__NR_pidfd_getfd, pidfd, atoi(name), 0);
            if (ring < 0 && errno == EPERM) {
                g_test_skip("pidfd_getfd() is not allowed here");
                goto out;
            }
            break;
        }
    }
    g_assert_cmpint(ring, >=, 0);

    for (i = 0; i < ARRAY_SIZE(calls); i++) {
        long ret = syscall(__NR_io_uring_register, ring, calls[i].op,
                           calls[i].arg, calls[i].nr);

        g_test_message("io_uring_register(%u) from outside: %ld (%s)",
                       calls[i].op, ret, ret ? strerror(errno) : "");
        g_assert_cmpint(ret, ==, -1);
        g_assert_true(errno == EACCES || errno == EBUSY);
    }
    close(ring);
    read_check(u, 0);
out:
    close(pidfd);
    close(null);
}

/* Fails if the device did not block migration */
static void test_migration_blocked(UB *u)
{
    g_autofree char *desc = qmp_error(u->qts,
        "{ 'execute': 'migrate', "
        "  'arguments': { 'uri': 'exec:cat >/dev/null' } }");

    g_assert_nonnull(strstr(desc, "x-uring-blk-pci"));
    read_check(u, 0);
}

/*
 * Fails if the device shared its node with another writer, a block job or
 * a resize, a snapshot: the guest writes the image behind the block
 * layer's back.  Without the permissions and the op blockers these would
 * succeed.
 */
static void test_refused_with_job_or_writer(UB *u)
{
    const char *node = u->topo->drive;
    g_autofree char *target = g_build_filename(u->dir, "mirror.raw", NULL);
    char *desc;
    QDict *rsp;
    int i;

    /* A raw node over drv0 may already be refused; if not, its user is */
    rsp = qtest_qmp(u->qts, "{ 'execute': 'blockdev-add', 'arguments': {"
                    "  'driver': 'raw', 'node-name': 'other',"
                    "  'file': 'drv0' } }");
    g_test_message("blockdev-add of a raw node over drv0: %s",
                   qdict_haskey(rsp, "return") ? "accepted" : "refused");
    if (qdict_haskey(rsp, "return")) {
        g_free(qmp_error(u->qts, "{ 'execute': 'device_add', 'arguments': {"
                         "  'driver': 'virtio-blk-pci', 'id': 'vb1',"
                         "  'drive': 'other' } }"));
        qtest_qmp_assert_success(u->qts, "{ 'execute': 'blockdev-del', "
                                 "  'arguments': { 'node-name': 'other' } }");
    }
    qobject_unref(rsp);

    g_free(qmp_error(u->qts, "{ 'execute': 'device_add', 'arguments': {"
                     "  'driver': 'virtio-blk-pci', 'id': 'vb0',"
                     "  'drive': %s } }", node));

    /* With a job ID, so that the error is not about that */
    desc = qmp_error(u->qts, "{ 'execute': 'drive-mirror', 'arguments': {"
                     "  'job-id': 'mirror0', 'device': %s, 'target': %s,"
                     "  'format': 'raw', 'sync': 'full' } }", node, target);
    g_assert_nonnull(strstr(desc, "behind the block layer"));
    g_free(desc);

    /* An overlay would freeze the image that the guest goes on writing */
    desc = qmp_error(u->qts, "{ 'execute': 'blockdev-snapshot-sync', "
                     "  'arguments': { 'node-name': %s, 'snapshot-file': %s,"
                     "  'snapshot-node-name': 'snap0', 'format': 'qcow2' } }",
                     node, target);
    g_assert_nonnull(strstr(desc, "behind the block layer"));
    g_free(desc);

    for (i = 0; i < 2; i++) {
        g_free(qmp_error(u->qts, "{ 'execute': 'block_resize', "
                         "  'arguments': { 'node-name': %s, 'size': %u } }",
                         i ? "drv0" : node, (unsigned)(2 * IMG_SIZE)));
    }

    g_assert_cmphex(reg_read(u, URING_BLK_REG_STATUS), ==,
                    ST_ENABLE | ST_READY);
    read_check(u, 0);
    assert_image_intact(u);
}

/*
 * The control: the device refuses a format that maps guest offsets to
 * other image offsets (qcow2), and a raw node with an offset.
 */
static void test_refused_formats(const void *opaque)
{
    const char *helper = g_getenv("URING_BLK_HELPER");
    g_autofree char *qcow2 = NULL, *raw = NULL;
    QTestState *qts;
    char *dir;
    int i;

    if (skip_reason || !g_getenv("QTEST_QEMU_IMG")) {
        g_test_skip(skip_reason ?: "QTEST_QEMU_IMG is not set");
        return;
    }
    dir = make_tmp_dir();
    qcow2 = g_build_filename(dir, "disk.qcow2", NULL);
    mkqcow2(qcow2, IMG_SIZE / MiB);
    raw = make_image(dir);
    qts = qtest_initf(QEMU_ARGS
                      "-blockdev driver=uring,node-name=drv0,filename=%s,"
                      "cache.direct=on "
                      "-blockdev driver=qcow2,node-name=fmt0,file=drv0 "
                      "-blockdev driver=uring,node-name=drv1,filename=%s,"
                      "cache.direct=on "
                      "-blockdev driver=raw,node-name=fmt1,file=drv1,"
                      "offset=4096", qcow2, raw);

    for (i = 0; i < 2; i++) {
        g_autofree char *desc = qmp_error(qts,
            "{ 'execute': 'device_add', 'arguments': {"
            "  'driver': 'x-uring-blk-pci', 'drive': %s, 'helper': %s } }",
            i ? "fmt1" : "fmt0", helper);

        g_assert_nonnull(strstr(desc, i ? "without offset" : "raw image"));
    }

    qtest_quit(qts);
    free_tmp_dir(dir);
}

typedef struct TestCase {
    const Topology *topo;
    void (*fn)(UB *u);
} TestCase;

static void run_case(const void *opaque)
{
    const TestCase *tc = opaque;
    UB *u;

    if (skip_reason) {
        g_test_skip(skip_reason);
        return;
    }
    u = ub_start(tc->topo);
    tc->fn(u);
    ub_stop(u);
}

static const char *why_skip(void)
{
    struct utsname un;
    int major = 0, minor = 0;

    if (!g_getenv("URING_BLK_HELPER")) {
        return "URING_BLK_HELPER (the helper's path) is not set";
    }
    /* The rings in device memory: IORING_SETUP_NO_MMAP and NO_SQARRAY */
    if (uname(&un) || sscanf(un.release, "%d.%d", &major, &minor) != 2 ||
        major < 6 || (major == 6 && minor < 6)) {
        return "the device needs Linux 6.6";
    }
    if (!qos_uring_usable(true)) {
        return "restricted io_uring rings with an SQ thread are not usable";
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(UB *u);
    } cases[] = {
        { "read_write", test_read_write },
        { "forbidden_opcodes", test_forbidden_opcodes },
        { "buffer_bounds", test_buffer_bounds },
        { "fixed_file_and_flags", test_fixed_file_and_flags },
        { "no_growth", test_no_growth },
        { "other_fields", test_other_fields },
        { "garbage_indices", test_garbage_indices },
        { "cq_overflow", test_cq_overflow },
        { "reset_in_flight", test_reset_in_flight },
        { "bus_master_off", test_bus_master_off },
        { "unplug", test_unplug },
        { "register_from_outside", test_register_from_outside },
        { "migration_blocked", test_migration_blocked },
        { "refused_with_job_or_writer", test_refused_with_job_or_writer },
    };
    unsigned t, c;

    g_test_init(&argc, &argv, NULL);
    skip_reason = why_skip();
    for (t = 0; t < ARRAY_SIZE(topologies); t++) {
        for (c = 0; c < ARRAY_SIZE(cases); c++) {
            TestCase *tc = g_new(TestCase, 1);
            g_autofree char *path = g_strdup_printf("/uring-blk/%s/%s",
                                                    topologies[t].name,
                                                    cases[c].name);

            *tc = (TestCase) { &topologies[t], cases[c].fn };
            qtest_add_data_func(path, tc, run_case);
        }
    }
    qtest_add_data_func("/uring-blk/qcow2/refused", NULL,
                        test_refused_formats);
    return g_test_run();
}
