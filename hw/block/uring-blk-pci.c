/*
 * x-uring-blk-pci: an experimental PCI device whose queue is a restricted
 * io_uring owned by the guest
 *
 * The guest writes io_uring SQEs into ring memory that BAR 2 maps; an SQ
 * thread consumes them and the kernel posts completions into the same
 * memory.  No QEMU code runs per request.  What keeps a hostile guest in
 * its lane is the kernel's io_uring restrictions: the ring may only read
 * and write the image (fixed file 0) to and from guest RAM (fixed
 * buffers), with an allow-list fixed before the ring is enabled.
 *
 * The ring belongs to a helper process (contrib/uring-blk-helper), which
 * the device spawns when the guest enables the ring and kills when it
 * resets it.  The helper's RLIMIT_FSIZE is the image size, so that no
 * write can grow the image; its SQ thread has no capability but
 * CAP_IPC_LOCK, so that the guest cannot use a privileged I/O priority;
 * and the addresses that the guest writes in its requests are those of
 * the helper's own mappings of guest RAM, which tell nothing about QEMU's
 * address space.  When the helper is
 * gone, the kernel has cancelled or completed every request of its ring.
 *
 * See docs/system/devices/uring-blk.rst for the threat model.
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/event_notifier.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/memfd.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/units.h"
#include "block/block_int.h"
#include "block/uring-image.h"
#include "exec/cpu-common.h"
#include "hw/block/uring-blk.h"
#include "hw/pci/msix.h"
#include "hw/pci/pci_device.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "migration/blocker.h"
#include "system/block-backend.h"
#include "system/hostmem.h"
#include "system/memory.h"
#include "uring-blk-helper.h"
#include "trace.h"

#define TYPE_URING_BLK_PCI "x-uring-blk-pci"
OBJECT_DECLARE_SIMPLE_TYPE(UringBlkPCI, URING_BLK_PCI)

#define URING_BLK_MAX_SQ_ENTRIES        4096
#define URING_BLK_SQE_SIZE              64
#define URING_BLK_CQE_SIZE              16
/* Room for the kernel's struct io_rings before the CQEs */
#define URING_BLK_RINGS_HEADER          4096
/* The kernel's limit for one fixed buffer */
#define URING_BLK_REGION_MAX            (1ULL << 30)

/* A piece of guest RAM that the guest's requests may name */
typedef struct UringBlkRegion {
    uint64_t gpa;
    uint64_t size;
    uint64_t fd_offset;
    int fd;                     /* RAMBlock's, not ours to close */
} UringBlkRegion;

struct UringBlkPCI {
    PCIDevice parent_obj;

    /* Properties */
    BlockBackend *blk;
    char *helper;
    uint32_t sq_entries;
    int32_t sqpoll_cpu;
    uint32_t sqpoll_idle;

    /* Constant after realize */
    MemoryRegion regs;
    MemoryRegion ring_bar;
    void *ring_mem;             /* the memfd @ring_fd, mapped */
    int ring_fd;
    uint64_t ring_size;         /* of the memfd and BAR 2 */
    uint64_t rings_size;        /* the rings; the SQEs follow */
    uint64_t sqes_offset;
    uint64_t capacity;
    uint32_t block_size;
    EventNotifier doorbell;     /* read by the helper only */
    EventNotifier completion;   /* the ring's eventfd */
    Error *migration_blocker;
    Error *op_blocker;          /* no job, snapshot or graph change ... */
    BlockDriverState *blocked[2];   /* ... on these: the root and uring */
    QEMUBH *enable_bh;
    Notifier remove_bs;         /* stop the guest's writes before a close */
    char *discard_name;         /* while the helper pins guest RAM */

    /*
     * The ring, under the BQL.  @helper_pid is the helper's while it runs
     * (from URING_BLK_STATUS_ENABLE until a reset, a failure or a broken
     * ring); @reply is valid while @status has READY.
     */
    uint32_t status;
    uint32_t error;
    uint32_t region_sel;
    pid_t helper_pid;
    int helper_sock;
    unsigned nr_regions;
    UringBlkRegion regions[URING_BLK_HELPER_MAX_REGIONS];
    UringBlkHelperReply reply;

    /* Counters for x-ring-state, under the BQL; they survive resets */
    uint64_t enables;
    uint64_t interrupts;
    uint64_t resets;
    uint64_t broken;
    uint64_t failures;
    char last_error[256];
};

/* Guest RAM: the memory backends' shared, writable RAM, in <= 1 GiB pieces */
typedef struct UringBlkRamWalk {
    UringBlkPCI *s;
    Error **errp;
} UringBlkRamWalk;

static bool uring_blk_is_guest_ram(MemoryRegion *mr)
{
    Object *owner = memory_region_owner(mr);

    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr) &&
           !memory_region_is_rom(mr) && !mr->readonly &&
           owner && object_dynamic_cast(owner, TYPE_MEMORY_BACKEND);
}

static bool uring_blk_add_ram(Int128 start, Int128 len,
                              const MemoryRegion *mr, hwaddr offset,
                              void *opaque)
{
    UringBlkRamWalk *w = opaque;
    UringBlkPCI *s = w->s;
    RAMBlock *rb = mr->ram_block;
    uint64_t gpa = int128_get64(start);
    uint64_t size = int128_get64(len);
    uint64_t in_block;

    if (!uring_blk_is_guest_ram((MemoryRegion *)mr)) {
        return false;
    }
    if (qemu_ram_get_fd(rb) < 0 || !qemu_ram_is_shared(rb)) {
        error_setg(w->errp, "guest RAM '%s' is not shared memory: use a "
                   "memory backend with share=on, such as "
                   "memory-backend-memfd", qemu_ram_get_idstr(rb));
        return true;
    }
    in_block = (uint8_t *)memory_region_get_ram_ptr((MemoryRegion *)mr) -
               (uint8_t *)qemu_ram_get_host_addr(rb) + offset;
    while (size) {
        uint64_t chunk = MIN(size, URING_BLK_REGION_MAX);
        UringBlkRegion *r;

        if (s->nr_regions == URING_BLK_HELPER_MAX_REGIONS) {
            error_setg(w->errp, "guest RAM is in more than %d pieces",
                       URING_BLK_HELPER_MAX_REGIONS);
            return true;
        }
        r = &s->regions[s->nr_regions++];
        r->gpa = gpa;
        r->size = chunk;
        r->fd = qemu_ram_get_fd(rb);
        r->fd_offset = qemu_ram_get_fd_offset(rb) + in_block;
        gpa += chunk;
        in_block += chunk;
        size -= chunk;
    }
    return false;
}

static bool uring_blk_find_ram(UringBlkPCI *s, Error **errp)
{
    UringBlkRamWalk w = { .s = s, .errp = errp };
    Error *local_err = NULL;

    w.errp = &local_err;
    s->nr_regions = 0;
    WITH_RCU_READ_LOCK_GUARD() {
        flatview_for_each_range(address_space_to_flatview(
                                    &address_space_memory),
                                uring_blk_add_ram, &w);
    }
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    if (!s->nr_regions) {
        error_setg(errp, "the guest has no RAM from a memory backend");
        return false;
    }
    return true;
}

static void uring_blk_irq(UringBlkPCI *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (msix_enabled(pdev)) {
        msix_notify(pdev, 0);
        s->interrupts++;
    }
}

/* Completions: the ring's eventfd (QEMU raises the interrupt; no irqfd) */
static void uring_blk_completion(EventNotifier *e)
{
    UringBlkPCI *s = container_of(e, UringBlkPCI, completion);

    if (event_notifier_test_and_clear(e)) {
        trace_uring_blk_completion(s);
        uring_blk_irq(s);
    }
}

/*
 * Stop the ring: kill the helper and wait for it.  Its SQ thread cancels
 * or waits for every request of the ring before it exits, so that once
 * waitpid() returns nothing of the old ring touches guest RAM or the
 * image again.
 */
static void uring_blk_stop_helper(UringBlkPCI *s)
{
    int status;

    if (s->helper_sock >= 0) {
        qemu_set_fd_handler(s->helper_sock, NULL, NULL, NULL);
        close(s->helper_sock);
        s->helper_sock = -1;
    }
    if (s->helper_pid > 0) {
        kill(s->helper_pid, SIGKILL);
        while (waitpid(s->helper_pid, &status, 0) < 0 && errno == EINTR) {
            /* retry */
        }
    }
    s->helper_pid = 0;
    if (s->discard_name) {
        ram_block_discard_disabler_remove(s->discard_name);
        ram_block_discard_disable(false);
        g_clear_pointer(&s->discard_name, g_free);
    }
    event_notifier_test_and_clear(&s->doorbell);
    event_notifier_test_and_clear(&s->completion);
}

/*
 * Give the next ring fresh, zeroed pages.  The old ring's context outlives
 * its helper for a few milliseconds, and writes its CQ tail into the pages
 * it pinned while it winds down; punching them out of the memfd leaves
 * them to the old context and maps new ones in their place.
 */
static void uring_blk_renew_ring_memory(UringBlkPCI *s)
{
    if (fallocate(s->ring_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                  s->ring_size) < 0) {
        error_report("%s: cannot renew the ring memory: %s; a new ring may "
                     "see the old one's last completions", TYPE_URING_BLK_PCI,
                     strerror(errno));
        memset(s->ring_mem, 0, s->ring_size);
    }
}

static void uring_blk_reset_ring(UringBlkPCI *s)
{
    trace_uring_blk_reset(s, s->status);
    if (s->status) {
        s->resets++;
    }
    uring_blk_stop_helper(s);
    uring_blk_renew_ring_memory(s);
    s->status = 0;
    s->error = 0;
    s->region_sel = 0;
    s->nr_regions = 0;
    memset(&s->reply, 0, sizeof(s->reply));
}

static void uring_blk_fail(UringBlkPCI *s, int err, const char *msg)
{
    trace_uring_blk_failed(s, err, msg);
    error_report("%s: %s", TYPE_URING_BLK_PCI, msg);
    pstrcpy(s->last_error, sizeof(s->last_error), msg);
    s->failures++;
    uring_blk_stop_helper(s);
    s->status = (s->status & URING_BLK_STATUS_ENABLE) |
                URING_BLK_STATUS_FAILED;
    s->error = err;
    uring_blk_irq(s);
}

static void uring_blk_broken(UringBlkPCI *s, const char *reason)
{
    trace_uring_blk_broken(s, reason);
    pstrcpy(s->last_error, sizeof(s->last_error), reason);
    s->broken++;
    uring_blk_stop_helper(s);
    s->status = (s->status & URING_BLK_STATUS_ENABLE) |
                URING_BLK_STATUS_BROKEN;
    uring_blk_irq(s);
}

static void uring_blk_got_reply(UringBlkPCI *s, const UringBlkHelperReply *r)
{
    if (r->error) {
        char msg[sizeof(r->message)];

        pstrcpy(msg, sizeof(msg), r->message);
        uring_blk_fail(s, -r->error, msg);
        return;
    }
    s->reply = *r;
    s->status |= URING_BLK_STATUS_READY;
    trace_uring_blk_ready(s, r->sq_thread_pid, s->nr_regions, r->features);
    uring_blk_irq(s);
}

/* The helper's socket: its reply, a broken ring, or its exit */
static void uring_blk_helper_readable(void *opaque)
{
    UringBlkPCI *s = opaque;
    union {
        UringBlkHelperReply reply;
        UringBlkHelperBroken broken;
    } msg;
    ssize_t n;

    n = recv(s->helper_sock, &msg, sizeof(msg), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (!(s->status & URING_BLK_STATUS_READY)) {
        if (n != sizeof(msg.reply)) {
            uring_blk_fail(s, EIO, "the helper exited without setting up "
                           "the ring");
        } else {
            uring_blk_got_reply(s, &msg.reply);
        }
    } else if (n == sizeof(msg.broken) &&
               msg.broken.type == URING_BLK_HELPER_MSG_BROKEN) {
        msg.broken.reason[sizeof(msg.broken.reason) - 1] = 0;
        uring_blk_broken(s, msg.broken.reason);
    } else if (n <= 0) {
        uring_blk_broken(s, "the helper exited");
    }
    /* Anything else is a late answer to a request that gave up on it */
}

/* The helper gets its socket as fd 3 and nothing else but stdio */
static pid_t uring_blk_fork_helper(UringBlkPCI *s, int sock, Error **errp)
{
    static const int keep[] = {
        STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, URING_BLK_HELPER_FD
    };
    char *argv[] = { s->helper, NULL };
    pid_t pid;

    pid = fork();
    if (pid < 0) {
        error_setg_errno(errp, errno, "cannot fork the helper");
        return -1;
    }
    if (pid == 0) {
        sigset_t none;

        /* Only async-signal-safe calls but for qemu_close_all_open_fd() */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (sock == URING_BLK_HELPER_FD) {
            fcntl(sock, F_SETFD, 0);
        } else if (dup2(sock, URING_BLK_HELPER_FD) < 0) {
            _exit(127);
        }
        qemu_close_all_open_fd(keep, ARRAY_SIZE(keep));
        execv(s->helper, argv);
        _exit(127);
    }
    return pid;
}

static void uring_blk_fill_setup(UringBlkPCI *s, UringBlkHelperSetup *setup,
                                 int *fds, unsigned *nr_fds)
{
    unsigned i, j;

    *setup = (UringBlkHelperSetup) {
        .magic = URING_BLK_HELPER_MAGIC,
        .flags = blk_is_writable(s->blk) ? 0 : URING_BLK_HELPER_READ_ONLY,
        .sq_entries = s->sq_entries,
        .cq_entries = s->sq_entries * 2,
        .sqpoll_cpu = s->sqpoll_cpu,
        .sqpoll_idle_ms = s->sqpoll_idle,
        .image_size = s->capacity,
        .rings_size = s->rings_size,
        .sqes_offset = s->sqes_offset,
        .ring_size = s->ring_size,
        .nr_regions = s->nr_regions,
    };
    fds[URING_BLK_HELPER_FD_RING] = s->ring_fd;
    fds[URING_BLK_HELPER_FD_DOORBELL] =
        event_notifier_get_fd(&s->doorbell);
    fds[URING_BLK_HELPER_FD_COMPLETION] =
        event_notifier_get_wfd(&s->completion);
    *nr_fds = URING_BLK_HELPER_FD_RAM;
    for (i = 0; i < s->nr_regions; i++) {
        for (j = URING_BLK_HELPER_FD_RAM; j < *nr_fds; j++) {
            if (fds[j] == s->regions[i].fd) {
                break;
            }
        }
        if (j == *nr_fds) {
            fds[(*nr_fds)++] = s->regions[i].fd;
            setup->nr_ram_fds++;
        }
        setup->regions[i] = (UringBlkHelperRegion) {
            .offset = s->regions[i].fd_offset,
            .size = s->regions[i].size,
            .fd = j - URING_BLK_HELPER_FD_RAM,
        };
    }
}

static bool uring_blk_send_setup(UringBlkPCI *s, int image_fd, Error **errp)
{
    g_autofree UringBlkHelperSetup *setup = g_new0(UringBlkHelperSetup, 1);
    int fds[URING_BLK_HELPER_MAX_FDS];
    unsigned nr_fds;
    struct iovec iov;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    g_autofree char *control = NULL;
    struct cmsghdr *cmsg;
    ssize_t n;

    uring_blk_fill_setup(s, setup, fds, &nr_fds);
    fds[URING_BLK_HELPER_FD_IMAGE] = image_fd;
    iov = (struct iovec) { .iov_base = setup, .iov_len = sizeof(*setup) };
    msg.msg_controllen = CMSG_SPACE(nr_fds * sizeof(int));
    control = g_malloc0(msg.msg_controllen);
    msg.msg_control = control;
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nr_fds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nr_fds * sizeof(int));

    do {
        n = sendmsg(s->helper_sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != sizeof(*setup)) {
        error_setg_errno(errp, n < 0 ? errno : EIO,
                         "cannot send the set-up to the helper");
        return false;
    }
    return true;
}

/* The drive: a uring node, or a raw node over one with the same size */
static BlockDriverState *uring_blk_check_drive(UringBlkPCI *s, Error **errp)
{
    BlockDriverState *bs = s->blk ? blk_bs(s->blk) : NULL;
    BlockDriverState *file;

    GRAPH_RDLOCK_GUARD_MAINLOOP();

    if (!bs) {
        error_setg(errp, "drive property not set");
        return NULL;
    }
    /* The guest could write another format's header past raw's check */
    if (bs->probed) {
        error_setg(errp, "drive '%s' has a probed format: give format=raw",
                   bdrv_get_node_name(bs));
        return NULL;
    }
    if (!strcmp(bs->drv->format_name, "raw") && bs->file) {
        file = bs->file->bs;
        if (strcmp(file->drv->format_name, "uring") ||
            bdrv_getlength(bs) != bdrv_getlength(file)) {
            error_setg(errp, "drive '%s' must be a raw image without offset "
                       "or size on a uring node", bdrv_get_node_name(bs));
            return NULL;
        }
        bs = file;
    }
    if (strcmp(bs->drv->format_name, "uring")) {
        error_setg(errp, "drive '%s' must be a uring node (driver=uring) or "
                   "a raw image on one", bdrv_get_node_name(bs));
        return NULL;
    }
    return bs;
}

/* Spawn the helper and send it the set-up; its reply comes later */
static bool uring_blk_start_helper(UringBlkPCI *s, Error **errp)
{
    BlockDriverState *bs = uring_blk_check_drive(s, errp);
    int sv[2];
    int image_fd;
    bool ok;

    if (!bs || !uring_blk_find_ram(s, errp)) {
        return false;
    }
    /*
     * The helper pins guest RAM: a balloon, free page reporting or
     * virtio-mem must not give pages back to the host under the ring.
     */
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "cannot pin guest RAM while RAM discard is in use "
                   "(virtio-balloon, virtio-mem)");
        return false;
    }
    s->discard_name = g_strdup_printf("%s '%s'", TYPE_URING_BLK_PCI,
                                      DEVICE(s)->id ?: "");
    ram_block_discard_disabler_add(s->discard_name);
    image_fd = bdrv_uring_open_image(bs, errp);
    if (image_fd < 0) {
        return false;
    }
    if (qemu_socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) {
        error_setg_errno(errp, errno, "cannot create the helper's socket");
        close(image_fd);
        return false;
    }
    s->helper_pid = uring_blk_fork_helper(s, sv[1], errp);
    close(sv[1]);
    s->helper_sock = sv[0];
    ok = s->helper_pid > 0 && uring_blk_send_setup(s, image_fd, errp);
    close(image_fd);
    if (!ok) {
        uring_blk_stop_helper(s);
        return false;
    }
    qemu_set_fd_handler(s->helper_sock, uring_blk_helper_readable, NULL, s);
    return true;
}

/*
 * Enable from the main loop rather than from the vCPU that wrote STATUS:
 * the helper's parent-death signal follows the thread that forked it.
 */
static void uring_blk_enable_bh(void *opaque)
{
    UringBlkPCI *s = opaque;
    Error *local_err = NULL;

    if (s->status != URING_BLK_STATUS_ENABLE || s->helper_pid) {
        return;
    }
    if (!(PCI_DEVICE(s)->config[PCI_COMMAND] & PCI_COMMAND_MASTER)) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: ring enabled without bus "
                      "mastering\n", TYPE_URING_BLK_PCI);
        s->status |= URING_BLK_STATUS_FAILED;
        s->error = EPERM;
        s->failures++;
        uring_blk_irq(s);
        return;
    }
    if (!uring_blk_start_helper(s, &local_err)) {
        uring_blk_fail(s, EIO, error_get_pretty(local_err));
        error_free(local_err);
    }
}

static uint32_t uring_blk_region_reg(UringBlkPCI *s, hwaddr addr)
{
    const UringBlkRegion *r;
    uint64_t v;

    if (!(s->status & URING_BLK_STATUS_READY) ||
        s->region_sel >= s->nr_regions) {
        return 0;
    }
    r = &s->regions[s->region_sel];
    switch (addr & ~4ULL) {
    case URING_BLK_REG_REGION_GPA_LO:
        v = r->gpa;
        break;
    case URING_BLK_REG_REGION_SIZE_LO:
        v = r->size;
        break;
    case URING_BLK_REG_REGION_ADDR_LO:
        v = s->reply.region_addr[s->region_sel];
        break;
    default:
        return s->reply.region_buf[s->region_sel];
    }
    return addr & 4 ? v >> 32 : (uint32_t)v;
}

/* The ring's field offsets, in register order from SQ_HEAD */
static uint32_t uring_blk_ring_reg(UringBlkPCI *s, hwaddr addr)
{
    const uint32_t *off = &s->reply.sq_head;

    if (!(s->status & URING_BLK_STATUS_READY)) {
        return 0;
    }
    return off[(addr - URING_BLK_REG_SQ_HEAD) / 4];
}

static uint64_t uring_blk_read(void *opaque, hwaddr addr, unsigned size)
{
    UringBlkPCI *s = opaque;
    bool ready = s->status & URING_BLK_STATUS_READY;

    switch (addr) {
    case URING_BLK_REG_MAGIC:
        return URING_BLK_MAGIC;
    case URING_BLK_REG_VERSION:
        return URING_BLK_VERSION;
    case URING_BLK_REG_FEATURES:
        return ready ? s->reply.features : 0;
    case URING_BLK_REG_STATUS:
        return s->status;
    case URING_BLK_REG_ERROR:
        return s->error;
    case URING_BLK_REG_CAPACITY_LO:
        return (uint32_t)s->capacity;
    case URING_BLK_REG_CAPACITY_HI:
        return s->capacity >> 32;
    case URING_BLK_REG_BLOCK_SIZE:
        return s->block_size;
    case URING_BLK_REG_SQ_ENTRIES:
        return ready ? s->reply.sq_entries : 0;
    case URING_BLK_REG_CQ_ENTRIES:
        return ready ? s->reply.cq_entries : 0;
    case URING_BLK_REG_SQES:
        return ready ? s->sqes_offset : 0;
    case URING_BLK_REG_SQ_HEAD ... URING_BLK_REG_CQ_FLAGS:
        return uring_blk_ring_reg(s, addr);
    case URING_BLK_REG_NR_REGIONS:
        return ready ? s->nr_regions : 0;
    case URING_BLK_REG_REGION_SEL:
        return s->region_sel;
    case URING_BLK_REG_REGION_GPA_LO ... URING_BLK_REG_REGION_BUF:
        return uring_blk_region_reg(s, addr);
    default:
        return 0;
    }
}

static void uring_blk_write_status(UringBlkPCI *s, uint32_t val)
{
    if (val == 0) {
        uring_blk_reset_ring(s);
    } else if (val == URING_BLK_STATUS_ENABLE && s->status == 0) {
        s->status = URING_BLK_STATUS_ENABLE;
        s->enables++;
        trace_uring_blk_enable(s);
        qemu_bh_schedule(s->enable_bh);
    } else {
        qemu_log_mask(LOG_GUEST_ERROR, "%s: bad STATUS write 0x%x in state "
                      "0x%x\n", TYPE_URING_BLK_PCI, val, s->status);
    }
}

static void uring_blk_write(void *opaque, hwaddr addr, uint64_t val,
                            unsigned size)
{
    UringBlkPCI *s = opaque;

    switch (addr) {
    case URING_BLK_REG_STATUS:
        uring_blk_write_status(s, val);
        break;
    case URING_BLK_REG_REGION_SEL:
        s->region_sel = val;
        break;
    case URING_BLK_REG_DOORBELL:
        /* Only without an ioeventfd (never: see realize) */
        event_notifier_set(&s->doorbell);
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "%s: write to read-only register "
                      "0x%" HWADDR_PRIx "\n", TYPE_URING_BLK_PCI, addr);
        break;
    }
}

static const MemoryRegionOps uring_blk_regs_ops = {
    .read = uring_blk_read,
    .write = uring_blk_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
};

/* A guest that turns bus mastering off asks for DMA to stop */
static void uring_blk_write_config(PCIDevice *pdev, uint32_t addr,
                                   uint32_t val, int len)
{
    UringBlkPCI *s = URING_BLK_PCI(pdev);

    pci_default_write_config(pdev, addr, val, len);
    if (s->helper_pid && !(pdev->config[PCI_COMMAND] & PCI_COMMAND_MASTER)) {
        uring_blk_broken(s, "the guest turned bus mastering off");
    }
}

/*
 * The guest writes the image behind the block layer's back: take what the
 * device needs and share nothing, so that jobs and other writers are
 * refused.
 */
static bool uring_blk_setup_drive(UringBlkPCI *s, Error **errp)
{
    uint64_t perm = BLK_PERM_CONSISTENT_READ;
    BlockDriverState *bs;
    int64_t len;

    if (!uring_blk_check_drive(s, errp)) {
        return false;
    }
    if (blk_supports_write_perm(s->blk)) {
        perm |= BLK_PERM_WRITE;
    }
    if (blk_set_perm(s->blk, perm, 0, errp) < 0) {
        return false;
    }
    bs = blk_bs(s->blk);
    len = blk_getlength(s->blk);
    if (len <= 0) {
        error_setg(errp, "drive '%s' is empty or its size is unknown",
                   bdrv_get_node_name(bs));
        return false;
    }
    s->capacity = len;
    s->block_size = MAX(BDRV_SECTOR_SIZE, bs->bl.request_alignment);
    return true;
}

static bool uring_blk_setup_ring_memory(UringBlkPCI *s, Error **errp)
{
    uint32_t cq_entries = s->sq_entries * 2;

    if (!is_power_of_2(s->sq_entries) ||
        s->sq_entries > URING_BLK_MAX_SQ_ENTRIES) {
        error_setg(errp, "sq-entries must be a power of 2 up to %d",
                   URING_BLK_MAX_SQ_ENTRIES);
        return false;
    }
    s->rings_size = ROUND_UP(URING_BLK_RINGS_HEADER +
                             cq_entries * URING_BLK_CQE_SIZE,
                             qemu_real_host_page_size());
    s->sqes_offset = s->rings_size;
    s->ring_size = pow2ceil(s->sqes_offset +
                            ROUND_UP(s->sq_entries * URING_BLK_SQE_SIZE,
                                     qemu_real_host_page_size()));
    s->ring_mem = qemu_memfd_alloc("x-uring-blk-ring", s->ring_size,
                                   F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                                   &s->ring_fd, errp);
    if (!s->ring_mem) {
        return false;
    }
    memory_region_init_ram_device_ptr(&s->ring_bar, OBJECT(s),
                                      "x-uring-blk-ring", s->ring_size,
                                      s->ring_mem);
    return true;
}

static void uring_blk_block_ops(UringBlkPCI *s)
{
    BlockDriverState *root = blk_bs(s->blk);

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    s->blocked[0] = root;
    s->blocked[1] = root->file ? root->file->bs : NULL;
    for (int i = 0; i < ARRAY_SIZE(s->blocked); i++) {
        if (s->blocked[i]) {
            bdrv_op_block_all(s->blocked[i], s->op_blocker);
        }
    }
}

static void uring_blk_unblock_ops(UringBlkPCI *s)
{
    for (int i = 0; i < ARRAY_SIZE(s->blocked); i++) {
        if (s->blocked[i]) {
            bdrv_op_unblock_all(s->blocked[i], s->op_blocker);
            s->blocked[i] = NULL;
        }
    }
    g_clear_pointer(&s->op_blocker, error_free);
}

/*
 * The image leaves the device (QEMU quits: bdrv_close_all()): stop the
 * guest's writes before the block layer closes it and drops its locks.
 */
static void uring_blk_remove_bs(Notifier *n, void *data)
{
    UringBlkPCI *s = container_of(n, UringBlkPCI, remove_bs);

    uring_blk_stop_helper(s);
    s->status = (s->status & URING_BLK_STATUS_ENABLE) |
                URING_BLK_STATUS_FAILED;
    s->error = ENODEV;
    uring_blk_unblock_ops(s);
}

static void uring_blk_realize(PCIDevice *pdev, Error **errp)
{
    UringBlkPCI *s = URING_BLK_PCI(pdev);
    int ret;

    s->helper_pid = 0;
    s->helper_sock = -1;
    s->ring_fd = -1;
    if (pci_device_iommu_address_space(pdev) != &address_space_memory) {
        error_setg(errp, "%s does not support an IOMMU", TYPE_URING_BLK_PCI);
        return;
    }
    if (!uring_blk_setup_drive(s, errp) ||
        !uring_blk_setup_ring_memory(s, errp)) {
        return;
    }
    /*
     * Snapshots, jobs and reopen would change or close the image under the
     * guest's writes (the permissions already refuse other writers)
     */
    error_setg(&s->op_blocker, "%s writes the image behind the block layer",
               TYPE_URING_BLK_PCI);
    uring_blk_block_ops(s);
    error_setg(&s->migration_blocker, "%s: the guest's ring and its "
               "requests live outside the migration stream",
               TYPE_URING_BLK_PCI);
    if (migrate_add_blocker(&s->migration_blocker, errp) < 0) {
        goto fail_ring;
    }
    ret = event_notifier_init(&s->doorbell, 0);
    if (!ret) {
        ret = event_notifier_init(&s->completion, 0);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot create eventfds");
        goto fail_eventfds;
    }
    event_notifier_set_handler(&s->completion, uring_blk_completion);

    memory_region_init_io(&s->regs, OBJECT(s), &uring_blk_regs_ops, s,
                          "x-uring-blk-regs", URING_BLK_REGS_SIZE);
    /* The doorbell goes to the helper without QEMU code (KVM and TCG) */
    memory_region_add_eventfd(&s->regs, URING_BLK_REG_DOORBELL, 4, false, 0,
                              &s->doorbell);
    pci_register_bar(pdev, 0, PCI_BASE_ADDRESS_SPACE_MEMORY, &s->regs);
    if (msix_init_exclusive_bar(pdev, 1, 1, errp) < 0) {
        goto fail_notifiers;
    }
    msix_vector_use(pdev, 0);
    pci_register_bar(pdev, 2, PCI_BASE_ADDRESS_SPACE_MEMORY |
                     PCI_BASE_ADDRESS_MEM_TYPE_64 |
                     PCI_BASE_ADDRESS_MEM_PREFETCH, &s->ring_bar);
    s->enable_bh = qemu_bh_new_guarded(uring_blk_enable_bh, s,
                                       &DEVICE(s)->mem_reentrancy_guard);
    s->remove_bs.notify = uring_blk_remove_bs;
    blk_add_remove_bs_notifier(s->blk, &s->remove_bs);
    return;

fail_notifiers:
    memory_region_del_eventfd(&s->regs, URING_BLK_REG_DOORBELL, 4, false, 0,
                              &s->doorbell);
    event_notifier_set_handler(&s->completion, NULL);
fail_eventfds:
    event_notifier_cleanup(&s->completion);
    event_notifier_cleanup(&s->doorbell);
    migrate_del_blocker(&s->migration_blocker);
    uring_blk_unblock_ops(s);
fail_ring:
    qemu_memfd_free(s->ring_mem, s->ring_size, s->ring_fd);
    s->ring_mem = NULL;
}

static void uring_blk_exit(PCIDevice *pdev)
{
    UringBlkPCI *s = URING_BLK_PCI(pdev);

    qemu_bh_delete(s->enable_bh);
    s->enable_bh = NULL;
    notifier_remove(&s->remove_bs);
    uring_blk_stop_helper(s);
    uring_blk_unblock_ops(s);
    msix_uninit_exclusive_bar(pdev);
    memory_region_del_eventfd(&s->regs, URING_BLK_REG_DOORBELL, 4, false, 0,
                              &s->doorbell);
    event_notifier_set_handler(&s->completion, NULL);
    event_notifier_cleanup(&s->completion);
    event_notifier_cleanup(&s->doorbell);
    migrate_del_blocker(&s->migration_blocker);
    /* The BAR's MemoryRegion may outlive us; the memory goes with it */
}

static void uring_blk_instance_finalize(Object *obj)
{
    UringBlkPCI *s = URING_BLK_PCI(obj);

    if (s->ring_mem) {
        qemu_memfd_free(s->ring_mem, s->ring_size, s->ring_fd);
    }
}

static void uring_blk_reset(DeviceState *dev)
{
    UringBlkPCI *s = URING_BLK_PCI(dev);

    uring_blk_reset_ring(s);
}

/*
 * Ask the helper for the kernel's counters.  The helper answers at once;
 * a broken ring or a helper that exited is handled as it would be in
 * uring_blk_helper_readable().
 */
static bool uring_blk_query_helper(UringBlkPCI *s, UringBlkHelperStats *st)
{
    UringBlkHelperCmd cmd = { .type = URING_BLK_HELPER_MSG_STATS };
    union {
        UringBlkHelperStats stats;
        UringBlkHelperBroken broken;
    } msg;
    struct pollfd pfd = { .events = POLLIN };
    ssize_t n;

    if (!(s->status & URING_BLK_STATUS_READY)) {
        return false;
    }
    pfd.fd = s->helper_sock;
    if (send(s->helper_sock, &cmd, sizeof(cmd), MSG_NOSIGNAL) !=
        sizeof(cmd)) {
        return false;
    }
    for (;;) {
        if (poll(&pfd, 1, 1000) <= 0) {
            return false;
        }
        n = recv(s->helper_sock, &msg, sizeof(msg), MSG_DONTWAIT);
        if (n == sizeof(msg.stats) &&
            msg.stats.type == URING_BLK_HELPER_MSG_STATS) {
            *st = msg.stats;
            return true;
        }
        if (n == sizeof(msg.broken) &&
            msg.broken.type == URING_BLK_HELPER_MSG_BROKEN) {
            msg.broken.reason[sizeof(msg.broken.reason) - 1] = 0;
            uring_blk_broken(s, msg.broken.reason);
            return false;
        }
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            uring_blk_broken(s, "the helper exited");
            return false;
        }
    }
}

static const char *uring_blk_state_name(UringBlkPCI *s)
{
    if (s->status & URING_BLK_STATUS_BROKEN) {
        return "broken";
    } else if (s->status & URING_BLK_STATUS_FAILED) {
        return "failed";
    } else if (s->status & URING_BLK_STATUS_READY) {
        return "ready";
    }
    return s->status ? "starting" : "stopped";
}

/* qom-get of x-ring-state: the ring's state and counters */
static void uring_blk_get_ring_state(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    UringBlkPCI *s = URING_BLK_PCI(obj);
    UringBlkHelperStats st = { 0 };
    bool running = uring_blk_query_helper(s, &st);
    char *state = (char *)uring_blk_state_name(s);
    char *last_error = s->last_error;
    int64_t pid = running ? s->reply.sq_thread_pid : -1;
    bool ok = false;

    if (!visit_start_struct(v, name, NULL, 0, errp)) {
        return;
    }
    ok = visit_type_str(v, "state", &state, errp) &&
         visit_type_str(v, "last-error", &last_error, errp) &&
         visit_type_int(v, "sq-thread", &pid, errp) &&
         visit_type_uint64(v, "requests", &st.sqes_consumed, errp) &&
         visit_type_uint64(v, "completions", &st.cqes_posted, errp) &&
         visit_type_uint64(v, "doorbells", &st.doorbells, errp) &&
         visit_type_uint64(v, "sq-wakeups", &st.sq_wakeups, errp) &&
         visit_type_uint64(v, "interrupts", &s->interrupts, errp) &&
         visit_type_uint64(v, "enables", &s->enables, errp) &&
         visit_type_uint64(v, "resets", &s->resets, errp) &&
         visit_type_uint64(v, "broken", &s->broken, errp) &&
         visit_type_uint64(v, "failures", &s->failures, errp);
    if (ok) {
        visit_check_struct(v, errp);
    }
    visit_end_struct(v, NULL);
}

static const Property uring_blk_properties[] = {
    DEFINE_PROP_DRIVE("drive", UringBlkPCI, blk),
    DEFINE_PROP_STRING("helper", UringBlkPCI, helper),
    DEFINE_PROP_UINT32("sq-entries", UringBlkPCI, sq_entries, 128),
    DEFINE_PROP_INT32("sqpoll-cpu", UringBlkPCI, sqpoll_cpu, -1),
    DEFINE_PROP_UINT32("sqpoll-idle", UringBlkPCI, sqpoll_idle, 100),
};

static void uring_blk_instance_init(Object *obj)
{
    UringBlkPCI *s = URING_BLK_PCI(obj);

    s->helper = g_strdup(CONFIG_QEMU_HELPERDIR "/qemu-uring-blk-helper");
    object_property_add(obj, "x-ring-state", "UringBlkRingState",
                        uring_blk_get_ring_state, NULL, NULL, NULL);
}

static void uring_blk_class_init(ObjectClass *klass, const void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = uring_blk_realize;
    k->exit = uring_blk_exit;
    k->config_write = uring_blk_write_config;
    k->vendor_id = PCI_VENDOR_ID_REDHAT;
    k->device_id = PCI_DEVICE_ID_REDHAT_URING_BLK;
    k->revision = 1;
    k->class_id = PCI_CLASS_STORAGE_OTHER;
    dc->desc = "Experimental block device driven by a guest-owned io_uring";
    device_class_set_legacy_reset(dc, uring_blk_reset);
    device_class_set_props(dc, uring_blk_properties);
    set_bit(DEVICE_CATEGORY_STORAGE, dc->categories);
}

static const TypeInfo uring_blk_info = {
    .name = TYPE_URING_BLK_PCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(UringBlkPCI),
    .instance_init = uring_blk_instance_init,
    .instance_finalize = uring_blk_instance_finalize,
    .class_init = uring_blk_class_init,
    .interfaces = (const InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { },
    },
};

static void uring_blk_register_types(void)
{
    type_register_static(&uring_blk_info);
}

type_init(uring_blk_register_types)
