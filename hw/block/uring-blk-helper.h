/*
 * x-uring-blk-pci: the protocol between the device and its helper
 *
 * The helper (contrib/uring-blk-helper) owns the guest's ring: it creates
 * it, so that the ring's SQ thread is one of its threads and its limits
 * (RLIMIT_FSIZE: the image size) and credentials (no capabilities but
 * CAP_IPC_LOCK) are the ones that apply to the guest's requests.  Device
 * and helper come from the same build; the protocol is not a stable
 * interface.
 *
 * The device connects a socketpair (SOCK_SEQPACKET) to the helper's
 * file descriptor 3 and sends one UringBlkHelperSetup with these
 * descriptors (SCM_RIGHTS), in this order: the image, the ring memory (a
 * memfd), the doorbell and completion eventfds, then one per RAM fd.
 * The helper answers with one UringBlkHelperReply.  After a successful
 * reply it serves requests (a UringBlkHelperCmd, answered by a
 * UringBlkHelperStats) and may send one UringBlkHelperBroken on its own;
 * then it exits with URING_BLK_HELPER_EXIT_BROKEN.  It exits when the
 * socket closes.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_BLOCK_URING_BLK_HELPER_H
#define HW_BLOCK_URING_BLK_HELPER_H

#define URING_BLK_HELPER_MAGIC          0x55424c48 /* "HLBU" */
#define URING_BLK_HELPER_FD             3
#define URING_BLK_HELPER_MAX_REGIONS    64
#define URING_BLK_HELPER_MAX_FDS        (4 + URING_BLK_HELPER_MAX_REGIONS)
#define URING_BLK_HELPER_EXIT_BROKEN    3

enum {
    URING_BLK_HELPER_FD_IMAGE,
    URING_BLK_HELPER_FD_RING,
    URING_BLK_HELPER_FD_DOORBELL,
    URING_BLK_HELPER_FD_COMPLETION,
    URING_BLK_HELPER_FD_RAM,            /* the first RAM fd */
};

/* Setup flags */
#define URING_BLK_HELPER_READ_ONLY      (1u << 0)

/* A piece of guest RAM: @size bytes at @offset of RAM fd @fd */
typedef struct UringBlkHelperRegion {
    uint64_t offset;
    uint64_t size;
    uint32_t fd;                /* index among the RAM fds */
    uint32_t pad;
} UringBlkHelperRegion;

typedef struct UringBlkHelperSetup {
    uint32_t magic;
    uint32_t flags;
    uint32_t sq_entries;
    uint32_t cq_entries;
    int32_t sqpoll_cpu;         /* -1: any */
    uint32_t sqpoll_idle_ms;
    uint64_t image_size;        /* the file may not grow past this */
    uint64_t rings_size;        /* ring memory: rings at 0 ... */
    uint64_t sqes_offset;       /* ... SQEs from here to the end */
    uint64_t ring_size;         /* size of the ring memfd */
    uint32_t nr_ram_fds;
    uint32_t nr_regions;
    UringBlkHelperRegion regions[URING_BLK_HELPER_MAX_REGIONS];
} UringBlkHelperSetup;

typedef struct UringBlkHelperReply {
    int32_t error;              /* 0 or a negative errno */
    uint32_t features;          /* URING_BLK_F_* */
    char message[256];          /* what failed, when error is set */
    uint32_t sq_entries;
    uint32_t cq_entries;
    /* struct io_sqring_offsets, io_cqring_offsets as the kernel gave them */
    uint32_t sq_head, sq_tail, sq_mask, sq_flags, sq_dropped;
    uint32_t cq_head, cq_tail, cq_mask, cq_overflow, cq_cqes, cq_flags;
    int32_t sq_thread_pid;
    uint32_t pad;
    uint64_t region_addr[URING_BLK_HELPER_MAX_REGIONS];
    uint32_t region_buf[URING_BLK_HELPER_MAX_REGIONS];
} UringBlkHelperReply;

typedef enum UringBlkHelperMsgType {
    URING_BLK_HELPER_MSG_STATS = 1,     /* device: stats please */
    URING_BLK_HELPER_MSG_BROKEN,        /* helper: I stopped the ring */
} UringBlkHelperMsgType;

typedef struct UringBlkHelperCmd {
    uint32_t type;
    uint32_t pad;
} UringBlkHelperCmd;

typedef struct UringBlkHelperStats {
    uint32_t type;              /* URING_BLK_HELPER_MSG_STATS */
    uint32_t pad;
    uint64_t doorbells;         /* doorbell signals read */
    uint64_t sq_wakeups;        /* io_uring_enter(IORING_ENTER_SQ_WAKEUP) */
    uint64_t sqes_consumed;     /* the kernel's SQ head (/proc fdinfo) */
    uint64_t cqes_posted;       /* the kernel's CQ tail (/proc fdinfo) */
} UringBlkHelperStats;

typedef struct UringBlkHelperBroken {
    uint32_t type;              /* URING_BLK_HELPER_MSG_BROKEN */
    uint32_t pad;
    char reason[256];
} UringBlkHelperBroken;

#endif /* HW_BLOCK_URING_BLK_HELPER_H */
