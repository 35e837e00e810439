/*
 * uring block driver: the process's fixed-buffer table
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/resource.h>
#include <linux/capability.h>
#include "qapi/error.h"
#include "qemu/bitmap.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/rcu.h"
#include "qemu/stats64.h"
#include "qemu/units.h"
#include "block/aio-wait.h"
#include "block/thread-pool.h"
#include "system/memory.h"
#include "block/uring-bufs.h"
#include "block/uring-ring.h"
#include "block/uring-sys.h"
#include "trace.h"

/*
 * The bounce buffer: queue depth (256, virtio-blk's default queue size)
 * times 4 KiB, in slot 0.  Requests whose memory is not in the table are
 * copied through it in pieces of at most URING_BOUNCE_CHUNK.
 *
 * RLIMIT_MEMLOCK counts what all processes of a user pin (a libvirt host
 * runs every VM as one user, with systemd's 8 MiB), so the buffer takes
 * at most 1/URING_BOUNCE_SHARE of the limit, and less, down to
 * URING_BOUNCE_MIN, if other processes left less.
 */
#define URING_BOUNCE_SIZE       (1 * MiB)
#define URING_BOUNCE_MIN        (64 * KiB)
#define URING_BOUNCE_SHARE      64
#define URING_BOUNCE_CHUNK      (64 * KiB)
#define URING_BOUNCE_PAGE       (4 * KiB)
#define URING_BOUNCE_INDEX      0

/*
 * Pinning touches every page: seconds per GiB on some hosts.  Larger
 * memory is pinned by a worker thread so that device realize (and the
 * monitor) do not wait for it; requests bounce until it is done.
 */
#define URING_BUFS_ASYNC_MIN    (256 * MiB)

/* What the table's own (one-entry) ring locks */
#define URING_BUFS_TABLE_LOCKED (8 * KiB)

/*
 * Memory that cannot be pinned for lack of locked memory is usually guest
 * RAM.  Small ranges (below URING_BUFS_MINOR_MAX: firmware, option ROMs,
 * ACPI tables) of less than 1/URING_BUFS_MINOR_SHARE of its size are then
 * not pinned either: guest I/O hardly ever lands there, and the locked
 * memory they would hold is better left to the other processes of the
 * user.  Guest RAM itself is never minor, whatever failed beside it.
 */
#define URING_BUFS_MINOR_SHARE  64
#define URING_BUFS_MINOR_MAX    (16 * MiB)

typedef struct UringBufSlot {
    uintptr_t start;
    size_t len;
    unsigned index;
    uint64_t generation;        /* the first that has it */
} UringBufSlot;

/* The pinned slots, sorted by start: immutable, replaced under RCU */
typedef struct UringBufView {
    struct rcu_head rcu;
    unsigned n;
    UringBufSlot slots[];
} UringBufView;

/*
 * Memory registered with uring_bufs_register(), known by its address and
 * size: a DIMM unplugged and another plugged at the same address are two
 * ranges.  A range is in the list while it is registered; one whose last
 * registration goes is unlinked at once, so that a new registration can
 * never find it, and freed once no worker pins it any more.  Under the BQL,
 * but @claim, @worker_ret and @worker_done, which a worker uses too.
 */
typedef struct UringBufRange {
    void *host;
    size_t size;
    unsigned refs;              /* registrations; 0: unlinked */
    bool pinning;               /* being pinned, by a worker or inline */
    bool worker;                /* a worker has it, until uring_bufs_pin_cb */
    int claim;                  /* URING_BUF_CLAIM_*, atomic */
    bool pinned;                /* in the table and the view */
    int err;                    /* pinning failed */
    uint64_t generation;        /* the first that has it, once pinned */
    int worker_ret;             /* what the worker's pinning returned */
    QemuEvent worker_done;      /* set when the worker has pinned it */
    unsigned n;
    UringBufSlot *slots;
    QLIST_ENTRY(UringBufRange) next;
} UringBufRange;

/*
 * Who pins a range handed to a worker: the worker, or the main loop if it
 * needs the range pinned before the worker started (uring_bufs_pin_now()),
 * which it must not wait for: the thread pool may have no thread yet, and
 * creating one takes a main-loop BH.
 */
enum {
    URING_BUF_CLAIM_QUEUED,
    URING_BUF_CLAIM_WORKER,
    URING_BUF_CLAIM_INLINE,
};

typedef struct UringBufs {
    /* Protected by the BQL */
    bool initialized;
    unsigned refs;              /* open uring nodes */
    struct io_uring table;      /* never enabled: it only holds buffers */
    bool shared;                /* rings clone @table (Linux 6.12) */
    /*
     * No locked memory was left for the bounce buffer when the table was
     * set up: nothing is pinned until the last node goes.  Set under the
     * BQL before any ring exists, read under @lock by snapshots.
     */
    bool unpinned;
    unsigned long *used;        /* slot indices */
    QLIST_HEAD(, UringBufRange) ranges;
    unsigned pinning;           /* ranges being pinned by workers */
    bool discard_disabled;
    NotifierList listeners;

    /*
     * @lock orders new generations against rings taking a snapshot: a ring
     * holds every slot of the generation it records.
     */
    QemuMutex lock;
    uint64_t generation;
    UringBufView *view;         /* RCU; written under @lock */

    /* The bounce buffer, one bit per URING_BOUNCE_PAGE */
    void *bounce;
    size_t bounce_size;
    QemuMutex bounce_lock;
    unsigned long *bounce_map;  /* protected by @bounce_lock */
    CoQueue bounce_waiters;     /* protected by @bounce_lock */
    Stat64 bounce_waits;
} UringBufs;

static UringBufs uring_bufs;

/* Whether the kernel lets this process pin memory without a limit */
static bool uring_bufs_has_ipc_lock(void)
{
    g_autofree char *status = NULL;
    const char *cap, *end;
    uint64_t eff;

    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
        return false;
    }
    cap = strstr(status, "\nCapEff:");
    if (!cap || qemu_strtou64(cap + strlen("\nCapEff:"), &end, 16,
                              &eff) < 0) {
        return false;
    }
    return eff & (1ULL << CAP_IPC_LOCK);
}

/*
 * How much the kernel lets this process pin: RLIMIT_MEMLOCK, which all
 * processes of the user share (io_uring charges the user), or UINT64_MAX
 * where nothing is charged (no limit, or CAP_IPC_LOCK).
 */
static uint64_t uring_bufs_memlock_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        uring_bufs_has_ipc_lock()) {
        return UINT64_MAX;
    }
    return rl.rlim_cur;
}

/* A value of a "Name:\tvalue" line of /proc/PID/status */
static bool uring_bufs_proc_field(const char *status, const char *name,
                                  uint64_t *value)
{
    g_autofree char *key = g_strdup_printf("\n%s:", name);
    const char *p = strstr(status, key);
    const char *end;

    return p && qemu_strtou64(p + strlen(key), &end, 10, value) == 0;
}

/*
 * Explain a failure for lack of locked memory.  The limit is per user, and
 * the kernel counts what io_uring pins as the processes' VmPin: say what
 * this process and the other processes of the user hold.
 */
void uring_bufs_memlock_hint(Error **errp)
{
    static int64_t last_scan;
    uint64_t limit = uring_bufs_memlock_limit();
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t scanned;
    uint64_t mine = 0, others = 0;
    unsigned nr_others = 0;
    uid_t uid = getuid();
    g_autoptr(GDir) dir = NULL;
    const char *name;

    /*
     * Reading all of /proc takes milliseconds, and a node whose ring
     * cannot be created tries again for each request: once in 10 s
     */
    if (limit == UINT64_MAX) {
        return;
    }
    scanned = qatomic_read(&last_scan);
    if ((scanned && now - scanned < 10 * 1000) ||
        qatomic_cmpxchg(&last_scan, scanned, now) != scanned) {
        return;
    }
    dir = g_dir_open("/proc", 0, NULL);
    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *path = g_strdup_printf("/proc/%s/status", name);
        g_autofree char *status = NULL;
        uint64_t pid, owner, pinned_kib;

        if (qemu_strtou64(name, NULL, 10, &pid) < 0 ||
            !g_file_get_contents(path, &status, NULL, NULL) ||
            !uring_bufs_proc_field(status, "Uid", &owner) || owner != uid ||
            !uring_bufs_proc_field(status, "VmPin", &pinned_kib)) {
            continue;
        }
        if (pid == getpid()) {
            mine = pinned_kib;
        } else if (pinned_kib) {
            others += pinned_kib;
            nr_others++;
        }
    }
    error_append_hint(errp, "RLIMIT_MEMLOCK (%" PRIu64 " KiB) is what all "
                      "processes of user %u may lock together, io_uring "
                      "rings included: at least %" PRIu64 " KiB are held "
                      "by other processes of user %u (%u of them that "
                      "this one can see; pinned memory only, as /proc "
                      "shows no rings), %" PRIu64 " KiB by this one, "
                      "whose rings lock about %" PRIu64 " KiB more.\n",
                      limit / KiB, (unsigned)uid, others, (unsigned)uid,
                      nr_others, mine, uring_ring_memlock_bytes() / KiB);
}

/* What the table pins, is pinning or failed to pin, bounce buffer included */
static uint64_t uring_bufs_wanted_bytes(UringBufs *b)
{
    UringBufRange *range;
    uint64_t bytes = b->bounce_size;

    QLIST_FOREACH(range, &b->ranges, next) {
        bytes += ROUND_UP(range->size, qemu_real_host_page_size());
    }
    return bytes;
}

/*
 * Say how much locked memory the process needs for all the memory
 * registered so far (and @extra bytes more), as the kernel counts it:
 * every pinned page of the table once, whatever the number of rings (or
 * once per ring, where rings cannot share it), and the rings' own memory.
 */
static void uring_bufs_add_memlock_hint(UringBufs *b, size_t extra,
                                        Error **errp)
{
    uint64_t need = uring_bufs_wanted_bytes(b) + extra +
                    uring_ring_memlock_bytes() + URING_BUFS_TABLE_LOCKED;
    struct rlimit rl;
    g_autofree char *limit = NULL;

    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        limit = g_strdup_printf("%" PRIu64 " KiB", (uint64_t)rl.rlim_cur / KiB);
    }
    error_append_hint(errp, "io_uring fixed buffers pin memory and charge it "
                      "to RLIMIT_MEMLOCK%s: this process needs at least "
                      "%" PRIu64 " KiB (%s now), shared with the other "
                      "processes of the same user.  Raise the limit (ulimit "
                      "-l, prlimit --memlock, systemd LimitMEMLOCK=) or use "
                      "fixed-buffers=off.\n",
                      b->shared || b->unpinned ? "" : " once for each ring",
                      need / KiB, limit ?: "unlimited");
    uring_bufs_memlock_hint(errp);
}

/* Why memory could not be pinned (@err from uring_bufs_state()) */
void uring_bufs_error_hint(int err, Error **errp)
{
    if (err == -ENOMEM) {
        uring_bufs_add_memlock_hint(&uring_bufs, 0, errp);
    } else if (err == -EFAULT || err == -EOPNOTSUPP) {
        error_append_hint(errp, "The kernel does not pin this kind of "
                          "memory for long (file-backed memory other than "
                          "tmpfs, memfd or hugetlbfs, for example).\n");
    } else if (err == -EBUSY) {
        error_append_hint(errp, "Guest RAM must stay discardable: a device "
                          "that discards it (virtio-mem) was there first, "
                          "or a postcopy migration or a background "
                          "snapshot is running.\n");
    } else if (err == -ENOSPC) {
        error_append_hint(errp, "The kernel takes at most %d fixed buffers "
                          "of 1 GiB.\n", URING_BUF_SLOTS);
    }
}

/* Whether a ring can clone the table: Linux 6.12 */
static bool uring_bufs_probe_sharing(UringBufs *b)
{
    struct io_uring_params p = { .flags = IORING_SETUP_R_DISABLED };
    struct io_uring probe;
    int ret;

    ret = io_uring_queue_init_params(1, &probe, &p);
    if (ret < 0) {
        return false;
    }
    ret = uring_sys_clone_buffers(&probe, b->table.ring_fd);
    io_uring_queue_exit(&probe);
    trace_uring_bufs_probe_sharing(ret);
    return ret == 0;
}

static int uring_bufs_pin_slot(UringBufs *b, unsigned index, void *host,
                               size_t len)
{
    struct iovec iov = { .iov_base = host, .iov_len = len };
    int ret = io_uring_register_buffers_update_tag(&b->table, index, &iov,
                                                   NULL, 1);

    return ret < 0 ? ret : 0;
}

static void uring_bufs_unpin_slot(UringBufs *b, unsigned index)
{
    uring_bufs_pin_slot(b, index, NULL, 0);
}

/*
 * The other processes of the user hold all of RLIMIT_MEMLOCK: run without
 * pinned memory rather than not at all, as aio=io_uring would.  The rings
 * then take reads and writes of unpinned memory (still of the image only)
 * and every request is copied through a bounce buffer that is not pinned.
 */
static bool uring_bufs_setup_unpinned(UringBufs *b, size_t size)
{
    Error *local_err = NULL;

    b->unpinned = true;
    b->bounce = qemu_memalign(qemu_real_host_page_size(), size);
    b->bounce_size = size;
    b->bounce_map = bitmap_new(size / URING_BOUNCE_PAGE);
    error_setg(&local_err, "uring: no locked memory is left for io_uring "
               "fixed buffers: this process pins no memory, and all of its "
               "requests are copied through a bounce buffer");
    uring_bufs_memlock_hint(&local_err);
    warn_report_err(local_err);
    return true;
}

/*
 * Pin the bounce buffer: its share of RLIMIT_MEMLOCK, or smaller if the
 * other processes of the user left less
 */
static bool uring_bufs_setup_bounce(UringBufs *b, Error **errp)
{
    uint64_t limit = uring_bufs_memlock_limit();
    size_t want = URING_BOUNCE_SIZE;
    size_t size;
    int ret = -ENOMEM;

    if (limit != UINT64_MAX) {
        want = MAX(MIN(want, pow2floor(limit / URING_BOUNCE_SHARE)),
                   URING_BOUNCE_MIN);
    }
    for (size = want; size >= URING_BOUNCE_MIN; size /= 2) {
        b->bounce = qemu_memalign(qemu_real_host_page_size(), size);
        ret = uring_bufs_pin_slot(b, URING_BOUNCE_INDEX, b->bounce, size);
        if (ret == 0) {
            break;
        }
        qemu_vfree(b->bounce);
        b->bounce = NULL;
        if (ret != -ENOMEM) {
            break;
        }
    }
    if (ret == -ENOMEM) {
        return uring_bufs_setup_unpinned(b, want);
    } else if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot pin the bounce buffer of the "
                         "uring driver (%zu KiB)", (size_t)URING_BOUNCE_MIN /
                         KiB);
        return false;
    }
    if (size < want) {
        warn_report("uring: RLIMIT_MEMLOCK allows only a %zu KiB bounce "
                    "buffer instead of %zu KiB", size / KiB, want / KiB);
    }
    b->bounce_size = size;
    b->bounce_map = bitmap_new(size / URING_BOUNCE_PAGE);
    return true;
}

/*
 * The table's ring is never enabled, so it cannot submit anything.  Should
 * it ever be, it would still have no file, and it allows nothing.
 */
static int uring_bufs_restrict_table(UringBufs *b)
{
    struct io_uring_restriction res[] = {
        {
            .opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED,
            .sqe_flags = IOSQE_FIXED_FILE,
        },
        {
            .opcode = IORING_RESTRICTION_REGISTER_OP,
            .register_op = IORING_REGISTER_ENABLE_RINGS,
        },
    };

    return qemu_io_uring_register_restrictions(&b->table, res,
                                               ARRAY_SIZE(res));
}

static bool uring_bufs_setup(UringBufs *b, Error **errp)
{
    struct io_uring_params p = { .flags = IORING_SETUP_R_DISABLED };
    int ret;

    /* Disabled for good: io_uring_enter() on it fails with -EBADFD */
    ret = io_uring_queue_init_params(1, &b->table, &p);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create io_uring");
        uring_ring_setup_hint(ret, errp);
        return false;
    }
    ret = io_uring_register_buffers_sparse(&b->table, URING_BUF_SLOTS);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create an io_uring "
                         "fixed-buffer table (Linux 5.19 or later is "
                         "required)");
        goto fail;
    }
    ret = uring_bufs_restrict_table(b);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to install io_uring "
                         "restrictions (Linux 5.10 or later is required)");
        goto fail;
    }
    /* Before the bounce buffer takes what RLIMIT_MEMLOCK leaves */
    b->shared = uring_bufs_probe_sharing(b);
    if (!uring_bufs_setup_bounce(b, errp)) {
        goto fail;
    }
    if (!b->shared && !b->unpinned) {
        warn_report_once("uring: this kernel cannot share fixed buffers "
                         "between io_uring instances (Linux 6.12); every "
                         "ring pins and charges them again");
    }
    b->used = bitmap_new(URING_BUF_SLOTS);
    set_bit(URING_BOUNCE_INDEX, b->used);
    b->generation = 1;
    b->view = g_malloc0(sizeof(*b->view));
    trace_uring_bufs_setup(b->table.ring_fd, b->shared, b->bounce_size);
    return true;

fail:
    io_uring_queue_exit(&b->table);
    return false;
}

/* A uring node opens: the table exists while there are any */
bool uring_bufs_ref(Error **errp)
{
    UringBufs *b = &uring_bufs;

    GLOBAL_STATE_CODE();
    if (!b->initialized) {
        qemu_mutex_init(&b->lock);
        qemu_mutex_init(&b->bounce_lock);
        qemu_co_queue_init(&b->bounce_waiters);
        notifier_list_init(&b->listeners);
        b->initialized = true;
    }
    if (b->refs == 0 && !uring_bufs_setup(b, errp)) {
        return false;
    }
    b->refs++;
    return true;
}

void uring_bufs_unref(void)
{
    UringBufs *b = &uring_bufs;

    GLOBAL_STATE_CODE();
    assert(b->refs > 0);
    if (--b->refs > 0) {
        return;
    }

    /* Every node unregistered what it registered; workers may still run */
    AIO_WAIT_WHILE_UNLOCKED(NULL, b->pinning > 0);
    assert(QLIST_EMPTY(&b->ranges));
    trace_uring_bufs_cleanup(b->table.ring_fd);

    /* Rings that still hold buffers keep them pinned until they go */
    io_uring_queue_exit(&b->table);
    g_free(b->used);
    b->used = NULL;
    g_free_rcu(b->view, rcu);
    b->view = NULL;
    qemu_vfree(b->bounce);
    b->bounce = NULL;
    g_free(b->bounce_map);
    b->bounce_map = NULL;
    b->bounce_size = 0;
    b->unpinned = false;
}

static UringBufRange *uring_bufs_find(UringBufs *b, void *host, size_t size)
{
    UringBufRange *range;

    QLIST_FOREACH(range, &b->ranges, next) {
        if (range->host == host && range->size == size) {
            return range;
        }
    }
    return NULL;
}

static int uring_buf_slot_cmp(const void *a, const void *b)
{
    const UringBufSlot *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

static bool uring_bufs_range_has_slot(UringBufRange *range, unsigned index)
{
    unsigned i;

    for (i = 0; i < range->n; i++) {
        if (range->slots[i].index == index) {
            return true;
        }
    }
    return false;
}

/*
 * A new generation whose view adds @add and drops (and unpins) @remove.
 * Rings clone the table under @lock, so one that has the new generation
 * never holds the pages of @remove.
 */
static void uring_bufs_new_generation(UringBufs *b, UringBufRange *add,
                                      UringBufRange *remove)
{
    UringBufView *old = b->view, *v;
    unsigned i;

    v = g_malloc0(sizeof(*v) + (old->n + (add ? add->n : 0)) *
                  sizeof(v->slots[0]));
    for (i = 0; i < old->n; i++) {
        if (!remove || !uring_bufs_range_has_slot(remove,
                                                  old->slots[i].index)) {
            v->slots[v->n++] = old->slots[i];
        }
    }

    WITH_QEMU_LOCK_GUARD(&b->lock) {
        for (i = 0; remove && i < remove->n; i++) {
            uring_bufs_unpin_slot(b, remove->slots[i].index);
        }
        b->generation++;
        if (add) {
            add->generation = b->generation;
        }
        for (i = 0; add && i < add->n; i++) {
            add->slots[i].generation = b->generation;
            v->slots[v->n++] = add->slots[i];
        }
        qsort(v->slots, v->n, sizeof(v->slots[0]), uring_buf_slot_cmp);
        qatomic_rcu_set(&b->view, v);
    }
    g_free_rcu(old, rcu);
    trace_uring_bufs_generation(b->generation, v->n);
    notifier_list_notify(&b->listeners, NULL);
}

/* RAM discard stays disabled while any memory is pinned or being pinned */
static void uring_bufs_update_discard(UringBufs *b)
{
    UringBufRange *range;
    bool pinned = b->pinning > 0;

    QLIST_FOREACH(range, &b->ranges, next) {
        pinned |= range->pinned || range->pinning;
    }
    if (b->discard_disabled && !pinned) {
        ram_block_discard_disable(false);
        b->discard_disabled = false;
    }
}

static int uring_bufs_reserve(UringBufs *b, UringBufRange *range)
{
    unsigned i;

    range->n = DIV_ROUND_UP(range->size, URING_BUF_SLOT_MAX);
    range->slots = g_new0(UringBufSlot, range->n);
    for (i = 0; i < range->n; i++) {
        unsigned long index = find_first_zero_bit(b->used, URING_BUF_SLOTS);

        if (index >= URING_BUF_SLOTS) {
            while (i-- > 0) {
                clear_bit(range->slots[i].index, b->used);
            }
            return -ENOSPC;
        }
        set_bit(index, b->used);
        range->slots[i] = (UringBufSlot) {
            .start = (uintptr_t)range->host + i * URING_BUF_SLOT_MAX,
            .len = MIN(range->size - i * URING_BUF_SLOT_MAX,
                       URING_BUF_SLOT_MAX),
            .index = index,
        };
    }
    return 0;
}

static void uring_bufs_unreserve(UringBufs *b, UringBufRange *range)
{
    unsigned i;

    for (i = 0; i < range->n; i++) {
        clear_bit(range->slots[i].index, b->used);
    }
}

/* Returns 0 or -errno */
static int uring_bufs_pin_range(UringBufRange *range)
{
    UringBufs *b = &uring_bufs;
    unsigned i;
    int ret = 0;

    for (i = 0; i < range->n; i++) {
        ret = uring_bufs_pin_slot(b, range->slots[i].index,
                                  (void *)range->slots[i].start,
                                  range->slots[i].len);
        if (ret < 0) {
            while (i-- > 0) {
                uring_bufs_unpin_slot(b, range->slots[i].index);
            }
            break;
        }
    }
    return ret;
}

static void uring_bufs_free_range(UringBufs *b, UringBufRange *range)
{
    assert(!range->refs);
    qemu_event_destroy(&range->worker_done);
    g_free(range->slots);
    g_free(range);
    uring_bufs_update_discard(b);
}

static void uring_bufs_unpin_range(UringBufs *b, UringBufRange *range)
{
    unsigned i;

    for (i = 0; i < range->n; i++) {
        uring_bufs_unpin_slot(b, range->slots[i].index);
    }
    uring_bufs_unreserve(b, range);
}

/*
 * Slots that were pinned in the table but never published (unregistered
 * while pinning, or a pin that failed halfway) are in the rings that
 * cloned the table meanwhile: a new generation makes those rings stale,
 * so that they let go of the pages.
 */
static void uring_bufs_retire_clones(UringBufs *b)
{
    if (b->shared) {
        uring_bufs_new_generation(b, NULL, NULL);
    }
}

/* Whether @size is minor beside memory that failed for lack of memlock */
static bool uring_bufs_is_minor(UringBufs *b, size_t size)
{
    UringBufRange *range;

    if (size >= URING_BUFS_MINOR_MAX) {
        return false;
    }
    QLIST_FOREACH(range, &b->ranges, next) {
        if (range->err == -ENOMEM &&
            size <= range->size / URING_BUFS_MINOR_SHARE) {
            return true;
        }
    }
    return false;
}

/*
 * @failed could not be pinned for lack of locked memory: unpin what is
 * minor beside it (see URING_BUFS_MINOR_SHARE).  Those ranges fail with
 * -ENOMEM too from now on, as if they had not fit.
 */
static void uring_bufs_give_up_minor(UringBufs *b, UringBufRange *failed)
{
    UringBufRange *range;

    QLIST_FOREACH(range, &b->ranges, next) {
        if (range->pinned && range->size < URING_BUFS_MINOR_MAX &&
            range->size <= failed->size / URING_BUFS_MINOR_SHARE) {
            trace_uring_bufs_unpin(range->host, range->size);
            uring_bufs_new_generation(b, NULL, range);
            uring_bufs_unreserve(b, range);
            range->pinned = false;
            range->err = -ENOMEM;
        }
    }
    uring_bufs_update_discard(b);
}

/*
 * Publish (or drop) a range once pinning finished; under the BQL.  A range
 * that a worker still has is freed by uring_bufs_pin_cb().
 */
static void uring_bufs_pinned(UringBufs *b, UringBufRange *range, int ret)
{
    trace_uring_bufs_pinned(range->host, range->size, ret);
    range->pinning = false;
    if (range->refs == 0) {
        /* Unregistered while it was pinned: nobody may use these slots */
        if (ret == 0) {
            uring_bufs_unpin_range(b, range);
        } else {
            uring_bufs_unreserve(b, range);
        }
        uring_bufs_retire_clones(b);
        if (!range->worker) {
            uring_bufs_free_range(b, range);
        }
    } else if (ret < 0) {
        range->err = ret;
        uring_bufs_unreserve(b, range);
        uring_bufs_retire_clones(b);
        if (ret == -ENOMEM) {
            uring_bufs_give_up_minor(b, range);
        }
        uring_bufs_update_discard(b);
    } else if (uring_bufs_is_minor(b, range->size)) {
        /* Something large failed meanwhile */
        range->err = -ENOMEM;
        uring_bufs_unpin_range(b, range);
        uring_bufs_retire_clones(b);
        uring_bufs_update_discard(b);
    } else {
        range->pinned = true;
        uring_bufs_new_generation(b, range, NULL);
    }
}

/* In a worker thread, unless uring_bufs_pin_now() took the range first */
static int uring_bufs_pin_worker(void *opaque)
{
    UringBufRange *range = opaque;

    if (qatomic_cmpxchg(&range->claim, URING_BUF_CLAIM_QUEUED,
                        URING_BUF_CLAIM_WORKER) != URING_BUF_CLAIM_QUEUED) {
        return 0;
    }
    range->worker_ret = uring_bufs_pin_range(range);
    qemu_event_set(&range->worker_done);
    return range->worker_ret;
}

/* The worker is done; uring_bufs_pin_now() may have published it already */
static void uring_bufs_pin_cb(void *opaque, int ret)
{
    UringBufRange *range = opaque;
    UringBufs *b = &uring_bufs;
    bool registered = range->refs > 0;

    b->pinning--;
    range->worker = false;
    if (!range->pinning) {
        if (!registered) {
            uring_bufs_free_range(b, range);
        } else {
            uring_bufs_update_discard(b);
        }
        return;
    }
    /* May free the range */
    uring_bufs_pinned(b, range, ret);
    if (ret < 0 && registered) {
        /* Successes start a new generation, which tells the listeners */
        notifier_list_notify(&b->listeners, NULL);
    }
}

/*
 * Finish pinning @range in this thread, without an event loop: graph
 * changes and realize must not run one.  A range handed to a worker that
 * has not started is pinned here instead; a worker that has started is
 * waited for (it needs nothing from this thread), and its result is
 * published here.
 */
static int uring_bufs_pin_now(UringBufs *b, UringBufRange *range)
{
    bool registered = range->refs > 0;
    int ret;

    if (!range->pinning) {
        return range->err;
    }
    if (range->worker &&
        qatomic_cmpxchg(&range->claim, URING_BUF_CLAIM_QUEUED,
                        URING_BUF_CLAIM_INLINE) == URING_BUF_CLAIM_WORKER) {
        qemu_event_wait(&range->worker_done);
        ret = range->worker_ret;
    } else {
        ret = uring_bufs_pin_range(range);
    }
    /* May free an unregistered range, and may give up a minor one */
    uring_bufs_pinned(b, range, ret);
    return registered ? range->err : ret;
}

/* Pin @range, which has no slots yet: see uring_bufs_register() */
static int uring_bufs_start_pin(UringBufs *b, UringBufRange *range,
                                UringBufsPin how)
{
    void *host = range->host;
    size_t size = range->size;
    int ret;

    range->err = 0;

    /*
     * Fail at once what can never fit under the limit, and what is minor
     * beside memory that did not fit: no worker, and no locked memory
     * taken for a moment from the other processes of the user.
     */
    if (b->unpinned || size > uring_bufs_memlock_limit() ||
        uring_bufs_is_minor(b, size)) {
        range->err = -ENOMEM;
        uring_bufs_give_up_minor(b, range);
        return range->err;
    }

    /* The kernel would keep using pages that were discarded */
    if (!b->discard_disabled) {
        ret = ram_block_discard_disable(true);
        if (ret < 0) {
            range->err = -EBUSY;
            return range->err;
        }
        b->discard_disabled = true;
    }

    ret = uring_bufs_reserve(b, range);
    if (ret < 0) {
        range->err = ret;
        uring_bufs_update_discard(b);
        return ret;
    }

    range->pinning = true;
    if (how == URING_BUFS_PIN_NOW ||
        (how == URING_BUFS_PIN_AUTO && size < URING_BUFS_ASYNC_MIN)) {
        trace_uring_bufs_pin(host, size, range->n, true);
        return uring_bufs_pin_now(b, range);
    }
    trace_uring_bufs_pin(host, size, range->n, false);
    b->pinning++;
    range->worker = true;
    thread_pool_submit_aio(uring_bufs_pin_worker, range, uring_bufs_pin_cb,
                           range);
    return 0;
}

/*
 * Add [@host, @host + @size) to the table, or count another registration
 * of it.  @how says who pins it: a worker thread (URING_BUFS_PIN_BACKGROUND),
 * this thread if it is small (URING_BUFS_PIN_AUTO), or this thread
 * whatever the size, waiting for a worker that pins it already
 * (URING_BUFS_PIN_NOW).  Until it is pinned requests bounce, and the
 * listeners hear when it is done.  Returns 0, or why the memory could not
 * be pinned (which uring_bufs_state() tells later too).
 */
int uring_bufs_register(void *host, size_t size, UringBufsPin how)
{
    UringBufs *b = &uring_bufs;
    UringBufRange *range;

    GLOBAL_STATE_CODE();
    assert(b->refs > 0);

    range = uring_bufs_find(b, host, size);
    if (range && (range->err == -EBUSY || range->err == -ENOMEM)) {
        /*
         * Discard was required (postcopy, ...) or other processes of the
         * user held the locked memory then; maybe not any more
         */
        range->refs++;
        return uring_bufs_start_pin(b, range, how);
    } else if (range) {
        range->refs++;
        return how == URING_BUFS_PIN_NOW ? uring_bufs_pin_now(b, range)
                                         : range->err;
    }

    range = g_new0(UringBufRange, 1);
    range->host = host;
    range->size = size;
    range->refs = 1;
    qemu_event_init(&range->worker_done, false);
    QLIST_INSERT_HEAD(&b->ranges, range, next);
    return uring_bufs_start_pin(b, range, how);
}

/*
 * Drop a registration; unknown memory is ignored.  The last one unlinks
 * the range at once; a worker that pins it frees it when it is done.
 */
void uring_bufs_unregister(void *host, size_t size)
{
    UringBufs *b = &uring_bufs;
    UringBufRange *range;

    GLOBAL_STATE_CODE();
    range = uring_bufs_find(b, host, size);
    if (!range || --range->refs > 0) {
        return;
    }
    QLIST_REMOVE(range, next);
    trace_uring_bufs_unpin(host, range->size);
    if (range->pinned) {
        uring_bufs_new_generation(b, NULL, range);
        uring_bufs_unreserve(b, range);
        range->pinned = false;
    }
    if (!range->worker) {
        uring_bufs_free_range(b, range);
    }
}

/*
 * 1 if the memory is pinned (since generation *@generation), 0 while it is
 * being pinned, why it could not be pinned (-errno), or -ENOENT if it is
 * not registered
 */
int uring_bufs_state(void *host, size_t size, uint64_t *generation)
{
    UringBufRange *range;

    GLOBAL_STATE_CODE();
    range = uring_bufs_find(&uring_bufs, host, size);
    if (!range) {
        return -ENOENT;
    }
    *generation = range->generation;
    return range->err ?: range->pinned ? 1 : 0;
}

/* Whether the process runs without pinned memory: uring_bufs_ref() said why */
bool uring_bufs_unpinned(void)
{
    GLOBAL_STATE_CODE();
    return uring_bufs.unpinned;
}

/* @n is called, under the BQL, when a new generation starts */
void uring_bufs_add_listener(Notifier *n)
{
    GLOBAL_STATE_CODE();
    notifier_list_add(&uring_bufs.listeners, n);
}

void uring_bufs_remove_listener(Notifier *n)
{
    GLOBAL_STATE_CODE();
    notifier_remove(n);
}

/* Any thread */
uint64_t uring_bufs_generation(void)
{
    return qatomic_read(&uring_bufs.generation);
}

/*
 * Describe the table to a new ring.  Until uring_bufs_snapshot_end() no new
 * generation starts, so that the ring holds everything of
 * @snap->generation.  Any thread.
 */
void uring_bufs_snapshot_begin(UringBufsSnapshot *snap)
{
    UringBufs *b = &uring_bufs;
    UringBufView *v;
    unsigned i;

    qemu_mutex_lock(&b->lock);
    *snap = (UringBufsSnapshot) {
        .generation = b->generation,
        .ring_fd = b->shared ? b->table.ring_fd : -1,
        .unpinned = b->unpinned,
    };
    if (b->shared || b->unpinned) {
        return;
    }

    /* Sparse: the slots at their indices, empty entries in between */
    v = b->view;
    snap->nr_iov = URING_BOUNCE_INDEX + 1;
    for (i = 0; i < v->n; i++) {
        snap->nr_iov = MAX(snap->nr_iov, v->slots[i].index + 1);
    }
    snap->iov = g_new0(struct iovec, snap->nr_iov);
    snap->iov[URING_BOUNCE_INDEX] = (struct iovec) {
        .iov_base = b->bounce,
        .iov_len = b->bounce_size,
    };
    for (i = 0; i < v->n; i++) {
        snap->iov[v->slots[i].index] = (struct iovec) {
            .iov_base = (void *)v->slots[i].start,
            .iov_len = v->slots[i].len,
        };
    }
}

void uring_bufs_snapshot_end(UringBufsSnapshot *snap)
{
    g_free(snap->iov);
    snap->iov = NULL;
    qemu_mutex_unlock(&uring_bufs.lock);
}

/*
 * The slot that holds every element of @qiov, if a ring of @generation has
 * it, or -1.  The kernel requires all iovecs of one fixed-buffer request to
 * lie in the same buffer.  Any thread.
 */
int uring_bufs_lookup(const QEMUIOVector *qiov, uint64_t generation)
{
    uintptr_t base;
    const UringBufSlot *slot;
    UringBufView *v;
    unsigned lo, hi;
    int i;

    if (!qiov->niov) {
        return -1;
    }
    base = (uintptr_t)qiov->iov[0].iov_base;
    RCU_READ_LOCK_GUARD();
    v = qatomic_rcu_read(&uring_bufs.view);

    /* Last slot that starts at or below @base */
    lo = 0;
    hi = v->n;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (v->slots[mid].start <= base) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return -1;
    }
    slot = &v->slots[lo - 1];
    if (slot->generation > generation) {
        return -1;
    }

    for (i = 0; i < qiov->niov; i++) {
        uintptr_t p = (uintptr_t)qiov->iov[i].iov_base;
        size_t len = qiov->iov[i].iov_len;

        if (p < slot->start || p - slot->start >= slot->len ||
            len > slot->len - (p - slot->start)) {
            return -1;
        }
    }
    return slot->index;
}

unsigned uring_bufs_bounce_index(void)
{
    return URING_BOUNCE_INDEX;
}

/*
 * A piece of the bounce buffer for up to @want bytes, at least one page;
 * its size is returned in @len.  Waits while the buffer is in use.
 */
void *coroutine_fn uring_bufs_co_bounce_get(size_t want, size_t *len)
{
    UringBufs *b = &uring_bufs;
    unsigned long total = b->bounce_size / URING_BOUNCE_PAGE;
    unsigned long pages, start;
    bool waited = false;

    want = MIN(want, URING_BOUNCE_CHUNK);
    QEMU_LOCK_GUARD(&b->bounce_lock);
    for (;;) {
        for (pages = DIV_ROUND_UP(want, URING_BOUNCE_PAGE); pages > 0;
             pages /= 2) {
            start = bitmap_find_next_zero_area(b->bounce_map, total, 0,
                                               pages, 0);
            if (start < total) {
                bitmap_set(b->bounce_map, start, pages);
                *len = MIN(want, pages * URING_BOUNCE_PAGE);
                return b->bounce + start * URING_BOUNCE_PAGE;
            }
        }
        if (!waited) {
            stat64_add(&b->bounce_waits, 1);
            waited = true;
        }
        qemu_co_queue_wait(&b->bounce_waiters, &b->bounce_lock);
    }
}

void coroutine_fn uring_bufs_co_bounce_put(void *buf, size_t len)
{
    UringBufs *b = &uring_bufs;

    QEMU_LOCK_GUARD(&b->bounce_lock);
    bitmap_clear(b->bounce_map, (buf - b->bounce) / URING_BOUNCE_PAGE,
                 DIV_ROUND_UP(len, URING_BOUNCE_PAGE));
    qemu_co_queue_restart_all(&b->bounce_waiters);
}

void uring_bufs_get_info(UringBufsInfo *info)
{
    UringBufs *b = &uring_bufs;
    UringBufRange *range;

    GLOBAL_STATE_CODE();
    *info = (UringBufsInfo) {
        .shared = b->shared,
        .bounce_bytes = b->unpinned ? 0 : b->bounce_size,
        .bounce_waits = stat64_get(&b->bounce_waits),
    };
    QLIST_FOREACH(range, &b->ranges, next) {
        if (range->pinned) {
            info->pinned_bytes += range->size;
            info->slots += range->n;
        } else if (range->pinning) {
            info->pending_bytes += range->size;
        }
    }
}
