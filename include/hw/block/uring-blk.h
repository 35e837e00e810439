/*
 * x-uring-blk-pci: a PCI device whose queue is a restricted io_uring
 * owned by the guest.  This is the device's guest ABI: what a guest
 * driver needs to know, and all of it.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_BLOCK_URING_BLK_H
#define HW_BLOCK_URING_BLK_H

/*
 * BAR 0: registers, 32 bits wide, little endian.
 * BAR 1: the MSI-X table; vector 0 signals completions and status changes.
 * BAR 2: the ring memory (64-bit, prefetchable): the io_uring's rings and
 *        SQE array, as the host kernel reads and writes them: in the
 *        host's byte order and layout (struct io_uring_sqe, io_uring_cqe).
 *
 * Life cycle: the guest writes URING_BLK_STATUS_ENABLE to STATUS and waits
 * until STATUS shows READY (or FAILED, with ERROR set).  The ring fields'
 * offsets and the RAM regions are valid from READY on.  The guest then
 * writes SQEs and the SQ tail, and rings the doorbell whenever the SQ
 * flags show IORING_SQ_NEED_WAKEUP (writing it more often is harmless).
 * Writing 0 to STATUS resets the device: when the write returns, no
 * request of the old ring runs or will write guest memory.
 *
 * A ring that the device stops (a CQ overflow, SQ indices that cannot be
 * right, a host failure) shows BROKEN; the guest must reset the device.
 */

#define URING_BLK_PCI_VENDOR_ID         0x1b36  /* QEMU's: pci-ids.rst */
#define URING_BLK_PCI_DEVICE_ID         0x0015

#define URING_BLK_MAGIC                 0x474e5255 /* "URNG" */
#define URING_BLK_VERSION               1

#define URING_BLK_REG_MAGIC             0x00    /* RO */
#define URING_BLK_REG_VERSION           0x04    /* RO */
#define URING_BLK_REG_FEATURES          0x08    /* RO: URING_BLK_F_* */
#define URING_BLK_REG_STATUS            0x0c    /* RW: URING_BLK_STATUS_* */
#define URING_BLK_REG_DOORBELL          0x10    /* WO: wake the SQ thread */
#define URING_BLK_REG_ERROR             0x14    /* RO: errno when FAILED */
#define URING_BLK_REG_CAPACITY_LO       0x18    /* RO: image size in bytes */
#define URING_BLK_REG_CAPACITY_HI       0x1c
#define URING_BLK_REG_BLOCK_SIZE        0x20    /* RO: offset/length unit */
#define URING_BLK_REG_SQ_ENTRIES        0x24    /* RO, from READY on */
#define URING_BLK_REG_CQ_ENTRIES        0x28
#define URING_BLK_REG_SQES              0x2c    /* SQE array, in BAR 2 */

/* The kernel's io_sqring_offsets and io_cqring_offsets, in BAR 2 */
#define URING_BLK_REG_SQ_HEAD           0x30
#define URING_BLK_REG_SQ_TAIL           0x34
#define URING_BLK_REG_SQ_MASK           0x38
#define URING_BLK_REG_SQ_FLAGS          0x3c
#define URING_BLK_REG_SQ_DROPPED        0x40
#define URING_BLK_REG_CQ_HEAD           0x44
#define URING_BLK_REG_CQ_TAIL           0x48
#define URING_BLK_REG_CQ_MASK           0x4c
#define URING_BLK_REG_CQ_OVERFLOW       0x50
#define URING_BLK_REG_CQ_CQES           0x54
#define URING_BLK_REG_CQ_FLAGS          0x58

/*
 * Guest RAM that requests may name.  Write an index below NR_REGIONS to
 * REGION_SEL; the other REGION registers then describe that region: guest
 * physical address GPA + x, for x below SIZE, is written in an SQE as
 * addr = ADDR + x with buf_index = BUF.  A request may not cross the end
 * of a region.
 */
#define URING_BLK_REG_NR_REGIONS        0x60
#define URING_BLK_REG_REGION_SEL        0x64
#define URING_BLK_REG_REGION_GPA_LO     0x68
#define URING_BLK_REG_REGION_GPA_HI     0x6c
#define URING_BLK_REG_REGION_SIZE_LO    0x70
#define URING_BLK_REG_REGION_SIZE_HI    0x74
#define URING_BLK_REG_REGION_ADDR_LO    0x78
#define URING_BLK_REG_REGION_ADDR_HI    0x7c
#define URING_BLK_REG_REGION_BUF        0x80

#define URING_BLK_REGS_SIZE             0x1000

/* FEATURES */
#define URING_BLK_F_SQPOLL              (1u << 0) /* an SQ thread submits */
#define URING_BLK_F_VECTORED            (1u << 1) /* READV/WRITEV_FIXED */
#define URING_BLK_F_READ_ONLY           (1u << 2) /* READ_FIXED only */
#define URING_BLK_F_FLUSH               (1u << 3) /* FSYNC */

/* STATUS */
#define URING_BLK_STATUS_ENABLE         (1u << 0) /* written by the guest */
#define URING_BLK_STATUS_READY          (1u << 1)
#define URING_BLK_STATUS_BROKEN         (1u << 2)
#define URING_BLK_STATUS_FAILED         (1u << 3)

#endif /* HW_BLOCK_URING_BLK_H */
