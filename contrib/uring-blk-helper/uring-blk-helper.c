/*
 * qemu-uring-blk-helper: the owner of an x-uring-blk-pci device's ring
 *
 * The device spawns this program with a socket on fd 3 and sends it the
 * image, the ring memory, two eventfds and guest RAM
 * (hw/block/uring-blk-helper.h).  It creates a restricted, disabled
 * io_uring whose rings and SQEs live in that ring memory, which the guest
 * writes, and whose SQ thread consumes the guest's SQEs.
 *
 * Threat model: the guest is hostile and writes any SQE and any ring
 * field at any time; the device (QEMU) is trusted.  The process
 * guarantees that
 * - a request can only read or write the image (fixed file 0, required)
 *   to or from the registered guest RAM (READ/WRITE_FIXED, their vectored
 *   forms, FSYNC); the ring fd never leaves this process;
 * - no write grows the image: RLIMIT_FSIZE is the image size, so writes
 *   at or past it fail with EFBIG (SIGXFSZ is ignored);
 * - the SQ thread's credentials, captured at io_uring_setup(), hold no
 *   capability but CAP_IPC_LOCK (no real-time I/O priority);
 * - addresses in SQEs are this process's mappings, not QEMU's;
 * - a ring with impossible indices or an overflowed CQ is stopped: the
 *   helper exits, and its SQ thread cancels or waits for every request.
 * Not covered: SQE fields that restrictions do not see and that hold
 * addresses of this process, like a read's PI attribute (Linux 6.14).
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/capability.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <liburing.h>
#include "qemu/atomic.h"
#include "qemu/cutils.h"
#include "block/uring-sys.h"
#include "hw/block/uring-blk.h"
#include "hw/block/uring-blk-helper.h"

#define HELPER_NAME             "qemu-uring-blk-helper"
#define SQE_SIZE                64
#define CQE_SIZE                16
#define MAX_SQ_ENTRIES          4096
#define MAX_CQ_ENTRIES          8192
#define REGION_MAX              (1ULL << 30) /* the kernel's, per buffer */
/*
 * How often an idle helper checks the ring: this bounds how long a guest
 * that never rings the doorbell can have the kernel queue overflowing CQEs
 */
#define POLL_MS                 100
#define PROBE_OPS               256

typedef struct Helper {
    UringBlkHelperSetup setup;
    int fds[URING_BLK_HELPER_MAX_FDS];
    unsigned nr_fds;
    uint8_t *ring_mem;          /* rings at 0, SQEs at setup.sqes_offset */
    void *region_addr[URING_BLK_HELPER_MAX_REGIONS];
    struct io_uring_params p;
    int ring_fd;
    int doorbell;
    uint32_t features;
    uint64_t doorbells;
    uint64_t sq_wakeups;
} Helper;

static void G_GNUC_PRINTF(1, 2) report(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, HELPER_NAME ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Set-up failed: tell the device why (errno @err) and give up */
static G_NORETURN G_GNUC_PRINTF(2, 3) void fail(int err, const char *fmt,
                                                ...)
{
    UringBlkHelperReply reply = { .error = -(err ? err : EIO) };
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reply.message, sizeof(reply.message), fmt, ap);
    va_end(ap);
    report("%s", reply.message);
    send(URING_BLK_HELPER_FD, &reply, sizeof(reply), MSG_NOSIGNAL);
    exit(1);
}

/* The running ring is unusable: tell the device, and stop it by exiting */
static G_NORETURN G_GNUC_PRINTF(1, 2) void broken(const char *fmt, ...)
{
    UringBlkHelperBroken msg = { .type = URING_BLK_HELPER_MSG_BROKEN };
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg.reason, sizeof(msg.reason), fmt, ap);
    va_end(ap);
    report("ring broken: %s", msg.reason);
    send(URING_BLK_HELPER_FD, &msg, sizeof(msg), MSG_NOSIGNAL);
    exit(URING_BLK_HELPER_EXIT_BROKEN);
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: " HELPER_NAME " [--help]\n"
            "Runs the io_uring of an x-uring-blk-pci device.  QEMU starts it\n"
            "with the device's socket on file descriptor %d.\n",
            URING_BLK_HELPER_FD);
}

/* Die with QEMU; no privileges from exec; EFBIG instead of SIGXFSZ */
static void setup_process(void)
{
    struct stat st;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
        fail(errno, "PR_SET_PDEATHSIG: %s", strerror(errno));
    }
    if (getppid() == 1) {
        exit(1);                /* QEMU died before PR_SET_PDEATHSIG */
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        fail(errno, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    }
    /* The SQ thread and io-wq workers share these handlers */
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    if (fstat(URING_BLK_HELPER_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        report("file descriptor %d is not a socket; this program is run by "
               "QEMU's x-uring-blk-pci device", URING_BLK_HELPER_FD);
        exit(1);
    }
}

/* Keep the descriptors of the first SCM_RIGHTS message, refuse others */
static void take_fds(Helper *h, struct msghdr *msg)
{
    struct cmsghdr *c;
    size_t n;

    for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
            h->nr_fds) {
            fail(EINVAL, "unexpected control message in the set-up");
        }
        n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (n > URING_BLK_HELPER_MAX_FDS) {
            fail(EINVAL, "%zu file descriptors, more than %d", n,
                 URING_BLK_HELPER_MAX_FDS);
        }
        memcpy(h->fds, CMSG_DATA(c), n * sizeof(int));
        h->nr_fds = n;
    }
}

static void recv_setup(Helper *h)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * URING_BLK_HELPER_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = &h->setup, .iov_len = sizeof(h->setup) };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    ssize_t n;

    do {
        n = recvmsg(URING_BLK_HELPER_FD, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        fail(errno, "cannot receive the set-up: %s", strerror(errno));
    }
    take_fds(h, &msg);
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        fail(EINVAL, "the set-up message was truncated");
    }
    if (n != sizeof(h->setup)) {
        fail(EINVAL, "the set-up has %zd bytes instead of %zu", n,
             sizeof(h->setup));
    }
}

static bool is_pow2_between(uint32_t v, uint32_t min, uint32_t max)
{
    return v >= min && v <= max && !(v & (v - 1));
}

/* Sizes and counts, before looking at any descriptor */
static void check_geometry(const UringBlkHelperSetup *s, unsigned nr_fds)
{
    uint64_t page = qemu_real_host_page_size();
    uint64_t sqes = ROUND_UP((uint64_t)s->sq_entries * SQE_SIZE, page);

    if (s->magic != URING_BLK_HELPER_MAGIC) {
        fail(EINVAL, "bad magic 0x%x; is the helper from QEMU's build?",
             s->magic);
    }
    if (s->flags & ~URING_BLK_HELPER_READ_ONLY) {
        fail(EINVAL, "unknown set-up flags 0x%x", s->flags);
    }
    if (!is_pow2_between(s->sq_entries, 1, MAX_SQ_ENTRIES) ||
        !is_pow2_between(s->cq_entries, s->sq_entries, MAX_CQ_ENTRIES)) {
        fail(EINVAL, "bad ring sizes: %u SQ and %u CQ entries",
             s->sq_entries, s->cq_entries);
    }
    if (s->sqpoll_cpu < -1) {
        fail(EINVAL, "bad SQ thread CPU %d", s->sqpoll_cpu);
    }
    if (!s->image_size || s->image_size > INT64_MAX) {
        fail(EINVAL, "bad image size %" PRIu64, s->image_size);
    }
    if (s->sqes_offset % page || s->rings_size > s->sqes_offset ||
        s->sqes_offset > s->ring_size || sqes > s->ring_size - s->sqes_offset) {
        fail(EINVAL, "bad ring memory layout: rings %" PRIu64 ", SQEs at %"
             PRIu64 ", size %" PRIu64, s->rings_size, s->sqes_offset,
             s->ring_size);
    }
    if (s->nr_ram_fds > URING_BLK_HELPER_MAX_REGIONS || !s->nr_regions ||
        s->nr_regions > URING_BLK_HELPER_MAX_REGIONS) {
        fail(EINVAL, "bad counts: %u RAM fds, %u regions", s->nr_ram_fds,
             s->nr_regions);
    }
    if (nr_fds != URING_BLK_HELPER_FD_RAM + s->nr_ram_fds) {
        fail(EINVAL, "got %u file descriptors instead of %u", nr_fds,
             URING_BLK_HELPER_FD_RAM + s->nr_ram_fds);
    }
}

static uint64_t fd_size(int fd, const char *what)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        fail(errno, "cannot stat the %s: %s", what, strerror(errno));
    }
    return st.st_size;
}

/* What the descriptors must hold for the layout to be safe to map */
/* Whether block device @dev has an integrity profile */
static bool has_integrity(dev_t dev)
{
    g_autofree char *path = g_strdup_printf(
        "/sys/dev/block/%u:%u/integrity/format", major(dev), minor(dev));
    g_autofree char *format = NULL;

    if (!g_file_get_contents(path, &format, NULL, NULL)) {
        return false;
    }
    return strcmp(g_strstrip(format), "none") != 0;
}

static void check_fds(Helper *h)
{
    const UringBlkHelperSetup *s = &h->setup;
    uint64_t page = qemu_real_host_page_size();
    struct stat st;
    unsigned i;

    if (fstat(h->fds[URING_BLK_HELPER_FD_IMAGE], &st) < 0 ||
        !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        fail(EINVAL, "the image is not a regular file or a block device");
    }
    if (S_ISBLK(st.st_mode) && has_integrity(st.st_rdev)) {
        fail(EOPNOTSUPP, "the image is a block device with integrity "
             "metadata, which a read's PI attribute (Linux 6.14) would let "
             "the guest move to and from this process's memory");
    }
    /* Reads are not limited by RLIMIT_FSIZE */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > s->image_size) {
        fail(EINVAL, "the image file has %" PRId64 " bytes, more than the "
             "device's %" PRIu64, (int64_t)st.st_size, s->image_size);
    }
    if (fd_size(h->fds[URING_BLK_HELPER_FD_RING], "ring memory") <
        s->ring_size) {
        fail(EINVAL, "the ring memory is smaller than %" PRIu64 " bytes",
             s->ring_size);
    }
    for (i = 0; i < s->nr_regions; i++) {
        const UringBlkHelperRegion *r = &s->regions[i];
        uint64_t size;

        if (r->fd >= s->nr_ram_fds || !r->size || r->size > REGION_MAX ||
            r->offset % page) {
            fail(EINVAL, "bad region %u: fd %u, offset 0x%" PRIx64
                 ", size 0x%" PRIx64, i, r->fd, r->offset, r->size);
        }
        size = fd_size(h->fds[URING_BLK_HELPER_FD_RAM + r->fd], "RAM");
        if (r->offset > size || r->size > size - r->offset) {
            fail(EINVAL, "region %u (0x%" PRIx64 "+0x%" PRIx64 ") is outside "
                 "its RAM fd", i, r->offset, r->size);
        }
    }
}

static void limit_file_size(uint64_t image_size)
{
    struct rlimit rl = { .rlim_cur = image_size, .rlim_max = image_size };

    if (setrlimit(RLIMIT_FSIZE, &rl) < 0) {
        fail(errno, "cannot set RLIMIT_FSIZE: %s", strerror(errno));
    }
}

/* capset(): keep those of @keep (a mask) that we have; none inheritable */
static void set_caps(uint64_t keep)
{
    struct __user_cap_header_struct hdr = {
        .version = _LINUX_CAPABILITY_VERSION_3,
    };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { };
    uint64_t have;
    int i;

    if (syscall(SYS_capget, &hdr, data) < 0) {
        fail(errno, "capget: %s", strerror(errno));
    }
    have = data[0].permitted | (uint64_t)data[1].permitted << 32;
    keep &= have;
    for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        data[i].effective = data[i].permitted = keep >> (32 * i);
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &hdr, data) < 0) {
        fail(errno, "capset: %s", strerror(errno));
    }
}

/*
 * Before io_uring_setup(): the SQ thread runs the guest's requests with
 * the credentials of that moment.  CAP_IPC_LOCK stays until the buffers
 * are pinned; without CAP_SETPCAP the bounding set stays as it is, which
 * is harmless under PR_SET_NO_NEW_PRIVS.
 */
static void drop_caps_but_ipc_lock(void)
{
    int cap;

    for (cap = 0; cap < 64; cap++) {
        if (cap != CAP_IPC_LOCK && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
            errno != EINVAL && errno != EPERM) {
            fail(errno, "PR_CAPBSET_DROP: %s", strerror(errno));
        }
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    set_caps(1ULL << CAP_IPC_LOCK);
}

static void *map_shared(int fd, uint64_t offset, uint64_t size,
                        const char *what)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   offset);

    if (p == MAP_FAILED) {
        fail(errno, "cannot map the %s: %s", what, strerror(errno));
    }
    return p;
}

/* Map the ring memory and guest RAM; the memfds themselves are not needed */
static void map_memory(Helper *h)
{
    const UringBlkHelperSetup *s = &h->setup;
    unsigned i;

    h->ring_mem = map_shared(h->fds[URING_BLK_HELPER_FD_RING], 0,
                             s->ring_size, "ring memory");
    for (i = 0; i < s->nr_regions; i++) {
        h->region_addr[i] =
            map_shared(h->fds[URING_BLK_HELPER_FD_RAM + s->regions[i].fd],
                       s->regions[i].offset, s->regions[i].size, "RAM");
    }
    close(h->fds[URING_BLK_HELPER_FD_RING]);
    for (i = URING_BLK_HELPER_FD_RAM; i < h->nr_fds; i++) {
        close(h->fds[i]);
    }
}

static bool ring_field_ok(Helper *h, uint32_t offset)
{
    return offset % sizeof(uint32_t) == 0 &&
           offset + sizeof(uint32_t) <= h->setup.rings_size;
}

static void create_ring(Helper *h)
{
    const UringBlkHelperSetup *s = &h->setup;
    struct io_uring_params *p = &h->p;
    int err;

    *p = (struct io_uring_params) {
        .flags = IORING_SETUP_R_DISABLED | URING_SETUP_NO_MMAP |
                 URING_SETUP_NO_SQARRAY | IORING_SETUP_SQPOLL |
                 IORING_SETUP_CQSIZE,
        .sq_thread_idle = s->sqpoll_idle_ms,
        .cq_entries = s->cq_entries,
    };
    if (s->sqpoll_cpu >= 0) {
        p->flags |= IORING_SETUP_SQ_AFF;
        p->sq_thread_cpu = s->sqpoll_cpu;
    }
    uring_sys_set_user_addr(p, h->ring_mem, h->ring_mem + s->sqes_offset);
    h->ring_fd = syscall(__NR_io_uring_setup, s->sq_entries, p);
    if (h->ring_fd < 0) {
        err = errno;
        fail(err, "cannot create the ring: %s%s", strerror(err),
             err == EINVAL ? " (needs Linux 6.6: IORING_SETUP_NO_MMAP is "
             "6.5, NO_SQARRAY 6.6; or the SQ thread CPU is not usable)" :
             err == EPERM ? " (kernel.io_uring_disabled?)" : "");
    }
    /* The kernel's rings must end before the SQEs */
    if (p->sq_entries != s->sq_entries || p->cq_entries != s->cq_entries ||
        p->cq_off.cqes + (uint64_t)p->cq_entries * CQE_SIZE > s->rings_size ||
        !ring_field_ok(h, p->sq_off.head) ||
        !ring_field_ok(h, p->sq_off.tail) ||
        !ring_field_ok(h, p->sq_off.flags)) {
        fail(EINVAL, "the kernel's rings do not fit in %" PRIu64 " bytes",
             s->rings_size);
    }
}

static int uring_register(int fd, unsigned op, void *arg, unsigned nr)
{
    return syscall(__NR_io_uring_register, fd, op, arg, nr) < 0 ? -errno : 0;
}

/*
 * Whether the kernel knows the vectored fixed opcodes (Linux 6.15).  A
 * disabled ring answers a probe like any other, and a restriction on an
 * opcode that the kernel does not know is refused.
 */
static bool probe_vectored(Helper *h, bool read_only)
{
    g_autofree struct io_uring_probe *probe =
        g_malloc0(sizeof(*probe) + PROBE_OPS * sizeof(probe->ops[0]));

    if (uring_register(h->ring_fd, IORING_REGISTER_PROBE, probe,
                       PROBE_OPS) < 0 ||
        probe->last_op < URING_OP_WRITEV_FIXED) {
        return false;
    }
    return (probe->ops[URING_OP_READV_FIXED].flags & IO_URING_OP_SUPPORTED) &&
           (read_only ||
            (probe->ops[URING_OP_WRITEV_FIXED].flags & IO_URING_OP_SUPPORTED));
}

/* Fixed file 0 is the image; buffer i is region i; the completion eventfd */
static void register_tables(Helper *h)
{
    const UringBlkHelperSetup *s = &h->setup;
    struct iovec iov[URING_BLK_HELPER_MAX_REGIONS];
    unsigned i;
    int ret;

    ret = uring_register(h->ring_fd, IORING_REGISTER_FILES,
                         &h->fds[URING_BLK_HELPER_FD_IMAGE], 1);
    if (ret < 0) {
        fail(-ret, "cannot register the image: %s", strerror(-ret));
    }
    for (i = 0; i < s->nr_regions; i++) {
        iov[i] = (struct iovec) {
            .iov_base = h->region_addr[i],
            .iov_len = s->regions[i].size,
        };
    }
    ret = uring_register(h->ring_fd, IORING_REGISTER_BUFFERS, iov,
                         s->nr_regions);
    if (ret < 0) {
        fail(-ret, "cannot pin guest RAM: %s%s", strerror(-ret),
             ret == -ENOMEM ? " (RLIMIT_MEMLOCK too low and no "
             "CAP_IPC_LOCK?)" : "");
    }
    ret = uring_register(h->ring_fd, IORING_REGISTER_EVENTFD,
                         &h->fds[URING_BLK_HELPER_FD_COMPLETION], 1);
    if (ret < 0) {
        fail(-ret, "cannot register the completion eventfd: %s",
             strerror(-ret));
    }
    /* The ring holds its own references */
    close(h->fds[URING_BLK_HELPER_FD_IMAGE]);
    close(h->fds[URING_BLK_HELPER_FD_COMPLETION]);
}

static void allow_op(struct io_uring_restriction *res, unsigned *n, int op)
{
    res[*n] = (struct io_uring_restriction) {
        .opcode = IORING_RESTRICTION_SQE_OP,
        .sqe_op = op,
    };
    (*n)++;
}

/*
 * Install the allow-lists and start the ring.  The only register call
 * allowed is IORING_REGISTER_PROBE, which reads and changes nothing: with
 * it, the register list is not empty, so that kernels that check the two
 * lists separately (Linux 7.0) refuse every other register call too, as
 * older ones do once any restriction is installed.
 */
static void restrict_and_enable(Helper *h)
{
    bool ro = h->setup.flags & URING_BLK_HELPER_READ_ONLY;
    bool vectored = probe_vectored(h, ro);
    struct io_uring_restriction res[10];
    unsigned n = 0;
    int ret;

    allow_op(res, &n, IORING_OP_READ_FIXED);
    if (!ro) {
        allow_op(res, &n, IORING_OP_WRITE_FIXED);
        allow_op(res, &n, IORING_OP_FSYNC);
    }
    if (vectored) {
        allow_op(res, &n, URING_OP_READV_FIXED);
        if (!ro) {
            allow_op(res, &n, URING_OP_WRITEV_FIXED);
        }
    }
    res[n++] = (struct io_uring_restriction) {
        .opcode = IORING_RESTRICTION_REGISTER_OP,
        .register_op = IORING_REGISTER_PROBE,
    };
    res[n++] = (struct io_uring_restriction) {
        .opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED,
        .sqe_flags = IOSQE_FIXED_FILE,
    };
    res[n++] = (struct io_uring_restriction) {
        .opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED,
        .sqe_flags = IOSQE_FIXED_FILE,
    };
    ret = uring_register(h->ring_fd, IORING_REGISTER_RESTRICTIONS, res, n);
    if (ret < 0) {
        fail(-ret, "cannot restrict the ring: %s", strerror(-ret));
    }
    ret = uring_register(h->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (ret < 0) {
        fail(-ret, "cannot enable the ring: %s", strerror(-ret));
    }
    h->features = URING_BLK_F_SQPOLL |
                  (vectored ? URING_BLK_F_VECTORED : 0) |
                  (ro ? URING_BLK_F_READ_ONLY : URING_BLK_F_FLUSH);
}

/* A number from /proc/self/fdinfo of the ring, such as "SqThread" */
static bool ring_fdinfo(Helper *h, const char *key, int64_t *val)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d",
                                            h->ring_fd);
    size_t len = strlen(key);
    char *line = NULL;
    const char *end;
    size_t size = 0;
    bool found = false;
    FILE *f = fopen(path, "r");

    if (!f) {
        return false;
    }
    while (!found && getline(&line, &size, f) > 0) {
        found = !strncmp(line, key, len) && line[len] == ':' &&
                !qemu_strtoi64(line + len + 1, &end, 10, val);
    }
    free(line);
    fclose(f);
    return found;
}

static uint64_t ring_counter(Helper *h, const char *key, const char *alt)
{
    int64_t v;

    if (ring_fdinfo(h, key, &v) || ring_fdinfo(h, alt, &v)) {
        return (uint32_t)v;
    }
    return 0;
}

static void send_reply(Helper *h)
{
    const struct io_sqring_offsets *sq = &h->p.sq_off;
    const struct io_cqring_offsets *cq = &h->p.cq_off;
    g_autofree UringBlkHelperReply *r = g_new0(UringBlkHelperReply, 1);
    int64_t pid;
    unsigned i;

    r->features = h->features;
    r->sq_entries = h->p.sq_entries;
    r->cq_entries = h->p.cq_entries;
    r->sq_head = sq->head;
    r->sq_tail = sq->tail;
    r->sq_mask = sq->ring_mask;
    r->sq_flags = sq->flags;
    r->sq_dropped = sq->dropped;
    r->cq_head = cq->head;
    r->cq_tail = cq->tail;
    r->cq_mask = cq->ring_mask;
    r->cq_overflow = cq->overflow;
    r->cq_cqes = cq->cqes;
    r->cq_flags = cq->flags;
    r->sq_thread_pid = ring_fdinfo(h, "SqThread", &pid) ? pid : -1;
    for (i = 0; i < h->setup.nr_regions; i++) {
        r->region_addr[i] = (uintptr_t)h->region_addr[i];
        r->region_buf[i] = i;
    }
    if (send(URING_BLK_HELPER_FD, r, sizeof(*r), MSG_NOSIGNAL) !=
        sizeof(*r)) {
        report("cannot send the reply: %s", strerror(errno));
        exit(1);
    }
}

static uint32_t ring_read(Helper *h, uint32_t offset)
{
    return qatomic_read((uint32_t *)(h->ring_mem + offset));
}

/*
 * The guest writes the rings concurrently: never trust or index with
 * what they hold.  Read head around tail so that the kernel moving head
 * meanwhile cannot make a good ring look broken: a sane guest keeps
 * head1 <= tail <= head2 + sq_entries.
 */
/*
 * The kernel's own counts, which the guest cannot write: SQEs consumed
 * less CQEs posted is what is in flight plus what overflowed.  A guest
 * that reaps its completions never has more in flight than the SQ holds;
 * one that does not makes the kernel queue every further completion (the
 * overflow flag in the SQ flags is the guest's to clear, so it proves
 * nothing).  The CQ tail is read first, so that completions posted
 * between the two reads cannot make the difference wrap; they can make it
 * larger, hence the margin of a CQ and a second look.
 */
static uint32_t ring_pending(Helper *h)
{
    uint32_t posted = ring_counter(h, "CachedCqTail", "CqTail");
    uint32_t consumed = ring_counter(h, "CachedSqHead", "SqHead");

    return consumed - posted;
}

static void check_overflow(Helper *h)
{
    uint32_t max = h->p.sq_entries + h->p.cq_entries;
    uint32_t pending = ring_pending(h);

    if (pending > max) {
        pending = ring_pending(h);
    }
    if (pending > max) {
        broken("%u completions are pending, more than the %u entries of "
               "the completion queue", pending, h->p.cq_entries);
    }
}

static void check_ring(Helper *h)
{
    uint32_t head1 = ring_read(h, h->p.sq_off.head);
    uint32_t tail = ring_read(h, h->p.sq_off.tail);
    uint32_t head2 = ring_read(h, h->p.sq_off.head);

    if ((int32_t)(tail - head1) < 0 ||
        (int32_t)(tail - head2) > (int32_t)h->p.sq_entries) {
        broken("SQ tail %u is %u entries past head %u", tail, tail - head2,
               head2);
    }
    if (ring_read(h, h->p.sq_off.flags) & IORING_SQ_CQ_OVERFLOW) {
        broken("the completion queue overflowed");
    }
    check_overflow(h);
}

static void ring_doorbell(Helper *h)
{
    uint64_t v;

    if (read(h->doorbell, &v, sizeof(v)) != sizeof(v)) {
        return;                 /* EAGAIN or EINTR: nothing new */
    }
    h->doorbells++;
    /* Pairs with the SQ thread's barrier between NEED_WAKEUP and sleep */
    smp_mb();
    if (!(ring_read(h, h->p.sq_off.flags) & IORING_SQ_NEED_WAKEUP)) {
        return;
    }
    if (syscall(__NR_io_uring_enter, h->ring_fd, 0, 0,
                IORING_ENTER_SQ_WAKEUP, NULL, 0) < 0 &&
        errno != EINTR && errno != EAGAIN) {
        broken("cannot wake the SQ thread: %s", strerror(errno));
    }
    h->sq_wakeups++;
}

static void send_stats(Helper *h)
{
    UringBlkHelperStats st = {
        .type = URING_BLK_HELPER_MSG_STATS,
        .doorbells = h->doorbells,
        .sq_wakeups = h->sq_wakeups,
        .sqes_consumed = ring_counter(h, "CachedSqHead", "SqHead"),
        .cqes_posted = ring_counter(h, "CachedCqTail", "CqTail"),
    };

    send(URING_BLK_HELPER_FD, &st, sizeof(st), MSG_NOSIGNAL);
}

/* A command from the device, or its end: then the ring ends too */
static void handle_socket(Helper *h, short revents)
{
    UringBlkHelperCmd cmd;
    ssize_t n;

    if (!(revents & POLLIN)) {
        exit(0);                /* POLLHUP or POLLERR */
    }
    n = recv(URING_BLK_HELPER_FD, &cmd, sizeof(cmd), MSG_TRUNC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        exit(0);
    }
    if (n == sizeof(cmd) && cmd.type == URING_BLK_HELPER_MSG_STATS) {
        send_stats(h);
    } else {
        report("ignoring a command of %zd bytes", n);
    }
}

static G_NORETURN void serve(Helper *h)
{
    struct pollfd pfd[2] = {
        { .fd = URING_BLK_HELPER_FD, .events = POLLIN },
        { .fd = h->doorbell, .events = POLLIN },
    };
    int n;

    for (;;) {
        n = poll(pfd, ARRAY_SIZE(pfd), POLL_MS);
        if (n < 0 && errno != EINTR) {
            broken("poll: %s", strerror(errno));
        }
        if (n > 0 && pfd[0].revents) {
            handle_socket(h, pfd[0].revents);
        }
        /* Before waking the SQ thread, which would consume bad entries */
        check_ring(h);
        if (n > 0 && (pfd[1].revents & POLLIN)) {
            ring_doorbell(h);
        }
    }
}

int main(int argc, char **argv)
{
    static Helper helper;
    Helper *h = &helper;

    if (argc > 1) {
        /* Only a person asks for help, so stdout is fine then */
        bool help = !strcmp(argv[1], "--help");

        usage(help ? stdout : stderr);
        return help ? 0 : 1;
    }
    setup_process();
    recv_setup(h);
    check_geometry(&h->setup, h->nr_fds);
    check_fds(h);
    h->doorbell = h->fds[URING_BLK_HELPER_FD_DOORBELL];

    limit_file_size(h->setup.image_size);
    drop_caps_but_ipc_lock();
    map_memory(h);
    create_ring(h);
    register_tables(h);
    restrict_and_enable(h);
    /* The SQ thread has its credentials; CAP_IPC_LOCK was for the pins */
    set_caps(0);

    send_reply(h);
    serve(h);
}
