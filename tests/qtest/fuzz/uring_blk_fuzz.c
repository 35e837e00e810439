/*
 * Fuzz x-uring-blk-pci: a hostile guest's SQEs and ring indices
 *
 * generic-fuzz drives MMIO well, but the device does all its work in a
 * helper process and the host kernel, asynchronously: an input must wait
 * for the ring to be ready and for the SQ thread to consume its SQEs.
 * This target enables the ring once, and turns each input into guest
 * actions on it:
 *
 *   0 SQE      65 bytes: an SQE, and a mode byte.  Mode bit 0 makes
 *              addr an offset (mod 64 KiB + 8 KiB, less 4 KiB) from the
 *              start of a 64 KiB guest buffer, translated to the address
 *              the device publishes, so that valid requests are easy to
 *              find; bit 1 makes buf_index that of the buffer's region.
 *              The SQE goes at the tail, and the tail moves on.
 *   1 SQ_TAIL  4 bytes, written as the SQ tail
 *   2 CQ_HEAD  4 bytes, written as the CQ head
 *   3 CQ_FLAGS 4 bytes, written as the CQ flags
 *   4 DOORBELL
 *   5 WAIT     until the SQ thread has taken all SQEs (at most 20 ms)
 *   6 REAP     the CQ head catches up with the CQ tail
 *   7 RESET    STATUS = 0, then enable again
 *
 * After each input the target checks what must hold whatever the guest
 * does: QEMU answers, and the image has its size (a write that grew it
 * aborts).  A broken or failed ring is reset and enabled again.
 *
 * Run: devtools/fuzz-uring-blk.sh, or
 *   URING_BLK_HELPER=.../qemu-uring-blk-helper \
 *   qemu-fuzz-x86_64 --fuzz-target=x-uring-blk-pci-ring CORPUS
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/stat.h>
#include "qemu/bswap.h"
#include "hw/block/uring-blk.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/libqos/pci.h"
#include "tests/qtest/libqos/pci-pc.h"
#include "fuzz.h"

#define IMG_SIZE        (16 * MiB)
#define BUF_SIZE        (64 * KiB)
#define SQE_SIZE        64
#define CQE_SIZE        16
#define WAIT_US         (20 * 1000)
#define READY_US        (5 * 1000 * 1000)

enum {
    ACT_SQE,
    ACT_SQ_TAIL,
    ACT_CQ_HEAD,
    ACT_CQ_FLAGS,
    ACT_DOORBELL,
    ACT_WAIT,
    ACT_REAP,
    ACT_RESET,
    ACT_MAX
};

/* The ring as the guest sees it; set up by ring_enable() */
static struct {
    char *img;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar regs, ring;
    uint32_t sq_entries, sqes;
    uint32_t sq_head, sq_tail, sq_mask, cq_head, cq_tail, cq_mask, cq_flags;
    uint64_t buf_gpa, buf_addr;
    uint32_t buf_index;
    uint32_t tail;              /* the guest's SQ tail */
} ub;

static uint32_t reg(uint32_t off)
{
    return qpci_io_readl(ub.dev, ub.regs, off);
}

static uint32_t ring_get(uint32_t off)
{
    return qpci_io_readl(ub.dev, ub.ring, off);
}

static void ring_set(uint32_t off, uint32_t val)
{
    qpci_io_writel(ub.dev, ub.ring, off, val);
}

/* The main loop runs the enable BH and the helper's reply */
static uint32_t wait_status(QTestState *s, uint32_t bits, unsigned us)
{
    uint32_t st;
    unsigned t;

    for (t = 0; !((st = reg(URING_BLK_REG_STATUS)) & bits) && t < us;
         t += 100) {
        flush_events(s);
        g_usleep(100);
    }
    return st;
}

/* A 64 KiB buffer in the middle of the largest region that has one */
static void pick_buffer(void)
{
    uint32_t i, n = reg(URING_BLK_REG_NR_REGIONS);
    uint64_t best = 0;

    for (i = 0; i < n; i++) {
        uint64_t gpa, size, addr;

        qpci_io_writel(ub.dev, ub.regs, URING_BLK_REG_REGION_SEL, i);
        gpa = reg(URING_BLK_REG_REGION_GPA_LO) |
              (uint64_t)reg(URING_BLK_REG_REGION_GPA_HI) << 32;
        size = reg(URING_BLK_REG_REGION_SIZE_LO) |
               (uint64_t)reg(URING_BLK_REG_REGION_SIZE_HI) << 32;
        addr = reg(URING_BLK_REG_REGION_ADDR_LO) |
               (uint64_t)reg(URING_BLK_REG_REGION_ADDR_HI) << 32;
        if (size > best && size >= 4 * BUF_SIZE) {
            best = size;
            ub.buf_gpa = QEMU_ALIGN_DOWN(gpa + size / 2, BUF_SIZE);
            ub.buf_addr = addr + (ub.buf_gpa - gpa);
            ub.buf_index = reg(URING_BLK_REG_REGION_BUF);
        }
    }
    g_assert(best);
}

static void ring_enable(QTestState *s)
{
    uint32_t st;

    qpci_io_writel(ub.dev, ub.regs, URING_BLK_REG_STATUS, 0);
    qpci_io_writel(ub.dev, ub.regs, URING_BLK_REG_STATUS,
                   URING_BLK_STATUS_ENABLE);
    st = wait_status(s, URING_BLK_STATUS_READY | URING_BLK_STATUS_FAILED,
                     READY_US);
    if (!(st & URING_BLK_STATUS_READY)) {
        fprintf(stderr, "x-uring-blk-pci: enabling gave STATUS 0x%x ERROR "
                "%u\n", st, reg(URING_BLK_REG_ERROR));
        abort();
    }
    ub.sq_entries = reg(URING_BLK_REG_SQ_ENTRIES);
    ub.sqes = reg(URING_BLK_REG_SQES);
    ub.sq_head = reg(URING_BLK_REG_SQ_HEAD);
    ub.sq_tail = reg(URING_BLK_REG_SQ_TAIL);
    ub.sq_mask = reg(URING_BLK_REG_SQ_MASK);
    ub.cq_head = reg(URING_BLK_REG_CQ_HEAD);
    ub.cq_tail = reg(URING_BLK_REG_CQ_TAIL);
    ub.cq_mask = reg(URING_BLK_REG_CQ_MASK);
    ub.cq_flags = reg(URING_BLK_REG_CQ_FLAGS);
    pick_buffer();
    ub.tail = 0;
}

static void act_sqe(QTestState *s, const uint8_t *d)
{
    uint8_t sqe[SQE_SIZE];
    uint8_t mode = d[SQE_SIZE];
    uint32_t idx = ub.tail & ring_get(ub.sq_mask);
    uint64_t addr;
    uint16_t buf;

    memcpy(sqe, d, SQE_SIZE);
    if (mode & 1) {
        memcpy(&addr, sqe + 16, 8);
        addr = ub.buf_addr + le64_to_cpu(addr) % (BUF_SIZE + 8 * KiB) -
               4 * KiB;
        addr = cpu_to_le64(addr);
        memcpy(sqe + 16, &addr, 8);
    }
    if (mode & 2) {
        buf = cpu_to_le16(ub.buf_index);
        memcpy(sqe + 40, &buf, 2);
    }
    qtest_memwrite(s, ub.ring.addr + ub.sqes + (uint64_t)idx * SQE_SIZE,
                   sqe, SQE_SIZE);
    ring_set(ub.sq_tail, ++ub.tail);
}

static void act_wait(QTestState *s)
{
    unsigned t;

    for (t = 0; ring_get(ub.sq_head) != ring_get(ub.sq_tail) && t < WAIT_US;
         t += 100) {
        flush_events(s);
        g_usleep(100);
    }
}

/* Returns how many bytes of @d the action took */
static size_t act(QTestState *s, const uint8_t *d, size_t len)
{
    uint32_t v;

    switch (d[0] % ACT_MAX) {
    case ACT_SQE:
        if (len < 2 + SQE_SIZE) {
            return len;
        }
        act_sqe(s, d + 1);
        return 2 + SQE_SIZE;
    case ACT_SQ_TAIL:
    case ACT_CQ_HEAD:
    case ACT_CQ_FLAGS:
        if (len < 5) {
            return len;
        }
        memcpy(&v, d + 1, 4);
        v = le32_to_cpu(v);
        if (d[0] % ACT_MAX == ACT_SQ_TAIL) {
            ub.tail = v;
            ring_set(ub.sq_tail, v);
        } else {
            ring_set(d[0] % ACT_MAX == ACT_CQ_HEAD ? ub.cq_head : ub.cq_flags,
                     v);
        }
        return 5;
    case ACT_DOORBELL:
        qpci_io_writel(ub.dev, ub.regs, URING_BLK_REG_DOORBELL, 1);
        break;
    case ACT_WAIT:
        act_wait(s);
        break;
    case ACT_REAP:
        ring_set(ub.cq_head, ring_get(ub.cq_tail));
        break;
    case ACT_RESET:
        ring_enable(s);
        break;
    }
    return 1;
}

/* What holds whatever the guest did */
static void check_invariants(QTestState *s)
{
    struct stat st;
    uint32_t status;

    g_assert(stat(ub.img, &st) == 0);
    if (st.st_size != IMG_SIZE) {
        fprintf(stderr, "x-uring-blk-pci: the image grew to %lld bytes\n",
                (long long)st.st_size);
        abort();
    }
    status = reg(URING_BLK_REG_STATUS);
    if (!(status & URING_BLK_STATUS_READY) ||
        (status & (URING_BLK_STATUS_BROKEN | URING_BLK_STATUS_FAILED))) {
        ring_enable(s);
    }
}

static void uring_blk_fuzz(QTestState *s, const unsigned char *data,
                           size_t size)
{
    while (size) {
        size_t n = act(s, data, size);

        flush_events(s);
        data += n;
        size -= n;
    }
    qpci_io_writel(ub.dev, ub.regs, URING_BLK_REG_DOORBELL, 1);
    act_wait(s);
    ring_set(ub.cq_head, ring_get(ub.cq_tail));
    check_invariants(s);
}

static void find_device(QPCIDevice *dev, int devfn, void *opaque)
{
    ub.dev = dev;
}

static void uring_blk_pre_fuzz(QTestState *s)
{
    ub.bus = qpci_new_pc(s, NULL);
    qpci_device_foreach(ub.bus, URING_BLK_PCI_VENDOR_ID,
                        URING_BLK_PCI_DEVICE_ID, find_device, NULL);
    g_assert(ub.dev);
    qpci_device_enable(ub.dev);
    ub.regs = qpci_iomap(ub.dev, 0, NULL);
    ub.ring = qpci_iomap(ub.dev, 2, NULL);
    ring_enable(s);
}

static GString *uring_blk_cmdline(FuzzTarget *t)
{
    g_autofree char *dir = g_dir_make_tmp("uring-blk-fuzz.XXXXXX", NULL);
    const char *helper = g_getenv("URING_BLK_HELPER");
    GString *cmd;
    int fd;

    g_assert(dir);
    ub.img = g_build_filename(dir, "disk.raw", NULL);
    fd = open(ub.img, O_RDWR | O_CREAT, 0600);
    g_assert(fd >= 0 && ftruncate(fd, IMG_SIZE) == 0);
    close(fd);
    if (!helper) {
        helper = CONFIG_QEMU_HELPERDIR "/qemu-uring-blk-helper";
    }
    cmd = g_string_new(NULL);
    g_string_printf(cmd,
        "%s -display none -machine q35,accel=qtest -nodefaults -m 64M"
        " -object memory-backend-memfd,id=mem,size=64M,share=on"
        " -machine memory-backend=mem"
        " -blockdev driver=uring,node-name=drv0,filename=%s"
        " -device x-uring-blk-pci,drive=drv0,helper=%s,sq-entries=32",
        TARGET_NAME, ub.img, helper);
    return cmd;
}

static void register_uring_blk_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "x-uring-blk-pci-ring",
        .description = "Fuzz x-uring-blk-pci's guest-owned ring: SQEs, "
                       "ring indices, doorbells and resets",
        .get_init_cmdline = uring_blk_cmdline,
        .pre_fuzz = uring_blk_pre_fuzz,
        .fuzz = uring_blk_fuzz,
    });
}

fuzz_target_init(register_uring_blk_fuzz_targets);
