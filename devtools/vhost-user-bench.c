/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * vhost-user-bench: a guest-free benchmark client for vhost-user-blk
 * exports (qemu-storage-daemon --export type=vhost-user-blk).
 *
 * It is the front-end that QEMU's vhost-user-blk-pci device would be,
 * without a guest: it speaks the vhost-user protocol on the export's UNIX
 * socket, shares one memfd holding split virtqueues and data buffers,
 * and keeps N virtio-blk requests in flight per queue (one thread per
 * queue) for a fixed time after a warm-up.  With no vCPU emulation in
 * the way, the daemon's CPU time per request is what the block driver
 * below the export costs, which a TCG guest hides (bench/README.md).
 *
 * Output: one JSON line on stdout (IOPS, mean and percentile latency,
 * and with --cpu-pid the daemon's CPU time per thread over the measured
 * window), a one-line summary on stderr.  Exit status 1 on any protocol,
 * I/O or verification error, with a message that says which step failed.
 *
 * Built by devtools/bench.sh with plain gcc: it needs only libc and the
 * kernel's virtio headers, so that it does not depend on QEMU's build.
 */

#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

/*
 * The vhost-user protocol (docs/interop/vhost-user.rst in QEMU).  It is
 * a protocol, not a kernel interface, so no system header has it.
 */
enum {
    VU_GET_FEATURES = 1,
    VU_SET_FEATURES = 2,
    VU_SET_OWNER = 3,
    VU_SET_MEM_TABLE = 5,
    VU_SET_VRING_NUM = 8,
    VU_SET_VRING_ADDR = 9,
    VU_SET_VRING_BASE = 10,
    VU_GET_VRING_BASE = 11,
    VU_SET_VRING_KICK = 12,
    VU_SET_VRING_CALL = 13,
    VU_GET_PROTOCOL_FEATURES = 15,
    VU_SET_PROTOCOL_FEATURES = 16,
    VU_GET_QUEUE_NUM = 17,
    VU_SET_VRING_ENABLE = 18,
    VU_GET_CONFIG = 24,
};

#define VU_VERSION              0x1
#define VU_FLAG_REPLY           (1u << 2)
#define VU_FLAG_NEED_REPLY      (1u << 3)
#define VU_F_PROTOCOL_FEATURES  30
#define VU_PROTOCOL_F_MQ        0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_CONFIG    9
#define VU_PROTOCOL_F_PINNED_MEMORY 24
#define VU_MAX_QUEUES           64
#define REPLY_TIMEOUT_S         10

static const struct timeval reply_timeout = { .tv_sec = REPLY_TIMEOUT_S };

struct vu_header {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
};

struct vu_vring_state {
    uint32_t index;
    uint32_t num;
};

struct vu_vring_addr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};

struct vu_mem_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};

struct vu_mem_table {
    uint32_t nregions;
    uint32_t padding;
    struct vu_mem_region region;   /* one: all of our memory is one memfd */
};

struct vu_config {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t region[256];
};

/* Latency histogram: 32 buckets per power of two, about 3% resolution */
#define HIST_SUB_BITS   5
#define HIST_SUB        (1u << HIST_SUB_BITS)
#define HIST_BUCKETS    (2 * HIST_SUB + (64 - HIST_SUB_BITS - 1) * HIST_SUB)

/* The three descriptors of request slot i are 3i, 3i+1 and 3i+2 */
#define DESCS_PER_REQ   3
#define PAGE            4096u

typedef struct Options {
    const char *socket_path;
    unsigned queues;
    unsigned depth;
    unsigned block_size;
    bool write;
    bool poll;
    bool fill;
    double secs;
    double warmup;
    uint64_t range;
    uint64_t seed;
    bool verify;
    uint64_t verify_key;
    int cpu_pid;
} Options;

typedef struct Slot {
    uint64_t submitted_ns;
    uint64_t offset;
} Slot;

/* One virtqueue and the thread that drives it */
typedef struct Queue {
    unsigned index;
    unsigned num;                       /* ring size, a power of two */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    struct virtio_blk_outhdr *headers;  /* one per slot */
    uint8_t *status;                    /* one byte per slot */
    uint8_t *data;                      /* block_size per slot */
    uint64_t data_gpa;
    int kick_fd;
    int call_fd;
    Slot *slots;
    uint16_t avail_idx;                 /* next free avail ring entry */
    uint16_t last_used;                 /* next used ring entry to read */
    uint64_t rng;
    uint64_t fill_next;                 /* --fill: next block to write */
    pthread_t thread;

    /* Results, read by the main thread after join */
    uint64_t ios;
    uint64_t lat_sum_ns;
    uint64_t lat_max_ns;
    uint64_t io_errors;
    uint64_t verify_errors;
    uint64_t hist[HIST_BUCKETS];
    char error[256];
} Queue;

static Options opts = {
    .queues = 1,
    .depth = 1,
    .block_size = 4096,
    .secs = 3,
    .warmup = 0.5,
    .seed = 1,
    .cpu_pid = -1,
};

static int sock = -1;
static uint64_t protocol_features;
static uint8_t *mem;                    /* the memfd, mapped */
static size_t mem_size;
static uint64_t capacity;               /* bytes */
static uint32_t blk_size = 512;
static uint64_t export_queues = 1;
static uint64_t window_start_ns, window_end_ns, stop_ns;
static pthread_barrier_t start_barrier;
static Queue queues[VU_MAX_QUEUES];

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "vhost-user-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static const char *request_name(uint32_t req)
{
    switch (req) {
    case VU_GET_FEATURES: return "GET_FEATURES";
    case VU_SET_FEATURES: return "SET_FEATURES";
    case VU_SET_OWNER: return "SET_OWNER";
    case VU_SET_MEM_TABLE: return "SET_MEM_TABLE";
    case VU_SET_VRING_NUM: return "SET_VRING_NUM";
    case VU_SET_VRING_ADDR: return "SET_VRING_ADDR";
    case VU_SET_VRING_BASE: return "SET_VRING_BASE";
    case VU_GET_VRING_BASE: return "GET_VRING_BASE";
    case VU_SET_VRING_KICK: return "SET_VRING_KICK";
    case VU_SET_VRING_CALL: return "SET_VRING_CALL";
    case VU_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
    case VU_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
    case VU_GET_QUEUE_NUM: return "GET_QUEUE_NUM";
    case VU_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
    case VU_GET_CONFIG: return "GET_CONFIG";
    }
    return "?";
}

/* Send one message, with @fd (if >= 0) as ancillary data */
static void vu_send(uint32_t req, uint32_t flags, const void *payload,
                    uint32_t size, int fd)
{
    struct vu_header hdr = {
        .request = req, .flags = VU_VERSION | flags, .size = size,
    };
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = size },
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = iov, .msg_iovlen = size ? 2 : 1,
    };
    ssize_t ret;

    if (fd >= 0) {
        struct cmsghdr *cmsg;

        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    do {
        ret = sendmsg(sock, &msg, 0);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        die("%s: cannot send to the back-end: %s", request_name(req),
            strerror(errno));
    }
    if ((size_t)ret != sizeof(hdr) + size) {
        die("%s: short send to the back-end", request_name(req));
    }
}

static void read_full(uint32_t req, void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t ret = recv(sock, (char *)buf + done, len - done, 0);

        if (ret < 0 && errno == EINTR) {
            continue;
        }
        if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            die("%s: no reply from the back-end within %d s",
                request_name(req), REPLY_TIMEOUT_S);
        }
        if (ret < 0) {
            die("%s: cannot read the reply: %s", request_name(req),
                strerror(errno));
        }
        if (ret == 0) {
            /* libvhost-user drops the connection when it refuses a message */
            die("%s: the back-end closed the connection (it refused the "
                "message; its log says why)", request_name(req));
        }
        done += ret;
    }
}

/* Read the reply to @req into @payload; returns its size */
static uint32_t vu_recv(uint32_t req, void *payload, uint32_t max)
{
    struct vu_header hdr;

    read_full(req, &hdr, sizeof(hdr));
    if (hdr.request != req || !(hdr.flags & VU_FLAG_REPLY)) {
        die("%s: unexpected reply (request %u, flags 0x%x)",
            request_name(req), hdr.request, hdr.flags);
    }
    if (hdr.size > max) {
        die("%s: reply of %u bytes, expected at most %u", request_name(req),
            hdr.size, max);
    }
    read_full(req, payload, hdr.size);
    return hdr.size;
}

static uint64_t vu_get_u64(uint32_t req)
{
    uint64_t val;

    vu_send(req, 0, NULL, 0, -1);
    if (vu_recv(req, &val, sizeof(val)) != sizeof(val)) {
        die("%s: reply is not a u64", request_name(req));
    }
    return val;
}

/*
 * A message without a reply of its own.  With REPLY_ACK the back-end
 * acknowledges it, so that a refusal is reported at the step that caused
 * it rather than as a hang later.
 */
static void vu_call(uint32_t req, const void *payload, uint32_t size, int fd)
{
    bool ack = protocol_features & (1ull << VU_PROTOCOL_F_REPLY_ACK);
    uint64_t status;

    vu_send(req, ack ? VU_FLAG_NEED_REPLY : 0, payload, size, fd);
    if (!ack) {
        return;
    }
    if (vu_recv(req, &status, sizeof(status)) != sizeof(status)) {
        die("%s: malformed acknowledgement", request_name(req));
    }
    if (status) {
        die("%s: refused by the back-end (status %" PRIu64 ")",
            request_name(req), status);
    }
}

static void vu_set_u64(uint32_t req, uint64_t val)
{
    vu_call(req, &val, sizeof(val), -1);
}

static void vu_set_state(uint32_t req, unsigned index, unsigned num)
{
    struct vu_vring_state s = { .index = index, .num = num };

    vu_call(req, &s, sizeof(s), -1);
}

/* SET_VRING_KICK and SET_VRING_CALL: the queue index, the fd attached */
static void vu_set_fd(uint32_t req, unsigned index, int fd)
{
    uint64_t val = index;

    vu_call(req, &val, sizeof(val), fd);
}

static void connect_socket(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    uint64_t deadline = now_ns() + 5000000000ull;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        die("socket path too long: %s", path);
    }
    strcpy(addr.sun_path, path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        die("socket: %s", strerror(errno));
    }
    /* The daemon may still be starting: retry for a few seconds */
    while (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if ((errno != ENOENT && errno != ECONNREFUSED) ||
            now_ns() > deadline) {
            die("cannot connect to %s: %s", path, strerror(errno));
        }
        usleep(50000);
    }
    /* A peer that never answers is an error, not a hang */
    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &reply_timeout,
                   sizeof(reply_timeout)) < 0) {
        die("SO_RCVTIMEO: %s", strerror(errno));
    }
}

static unsigned ring_size(unsigned depth)
{
    unsigned n = 1;

    while (n < depth * DESCS_PER_REQ) {
        n <<= 1;
    }
    return n;
}

static size_t align_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

/*
 * Lay out each queue in the memfd: descriptor table, avail ring and used
 * ring on pages of their own (the used ring is written by the back-end,
 * the rest by us), then headers and status bytes, then data buffers.
 * Guest-physical addresses are offsets in the memfd.
 */
static size_t layout_queue(Queue *q, size_t off, bool assign)
{
    size_t desc_off = off;
    size_t avail_off = align_up(desc_off + 16 * q->num, PAGE);
    size_t used_off = align_up(avail_off + 6 + 2 * q->num, PAGE);
    size_t hdr_off = align_up(used_off + 6 + 8 * q->num, PAGE);
    size_t status_off = hdr_off + sizeof(struct virtio_blk_outhdr) *
                        opts.depth;
    size_t data_off = align_up(status_off + opts.depth, PAGE);
    size_t end = align_up(data_off + (size_t)opts.block_size * opts.depth,
                          PAGE);

    if (assign) {
        q->desc = (void *)(mem + desc_off);
        q->avail = (void *)(mem + avail_off);
        q->used = (void *)(mem + used_off);
        q->headers = (void *)(mem + hdr_off);
        q->status = mem + status_off;
        q->data = mem + data_off;
        q->data_gpa = data_off;
    }
    return end;
}

static void setup_memory(void)
{
    size_t off = 0;
    int fd;

    for (unsigned i = 0; i < opts.queues; i++) {
        queues[i].index = i;
        queues[i].num = ring_size(opts.depth);
        off = layout_queue(&queues[i], off, false);
    }
    mem_size = off;
    fd = memfd_create("vhost-user-bench", MFD_CLOEXEC);
    if (fd < 0) {
        die("memfd_create: %s", strerror(errno));
    }
    if (ftruncate(fd, mem_size) < 0) {
        die("ftruncate memfd: %s", strerror(errno));
    }
    mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        die("mmap memfd: %s", strerror(errno));
    }
    /* Touch it now, not during the measurement */
    memset(mem, 0, mem_size);
    off = 0;
    for (unsigned i = 0; i < opts.queues; i++) {
        off = layout_queue(&queues[i], off, true);
    }

    struct vu_mem_table table = {
        .nregions = 1,
        .region = {
            .guest_phys_addr = 0,
            .memory_size = mem_size,
            .userspace_addr = (uintptr_t)mem,
            .mmap_offset = 0,
        },
    };
    vu_call(VU_SET_MEM_TABLE, &table, sizeof(table), fd);
    /* The back-end has its own mapping now */
    close(fd);
}

static uint64_t gpa(const void *p)
{
    return (const uint8_t *)p - mem;
}

/* Pre-chain the three descriptors of each slot; only the data
 * descriptor's direction and the header change per request */
static void setup_descriptors(Queue *q)
{
    for (unsigned s = 0; s < opts.depth; s++) {
        struct vring_desc *d = &q->desc[s * DESCS_PER_REQ];

        d[0].addr = htole64(gpa(&q->headers[s]));
        d[0].len = htole32(sizeof(struct virtio_blk_outhdr));
        d[0].flags = htole16(VRING_DESC_F_NEXT);
        d[0].next = htole16(s * DESCS_PER_REQ + 1);
        d[1].addr = htole64(q->data_gpa + (uint64_t)s * opts.block_size);
        d[1].len = htole32(opts.block_size);
        d[1].flags = htole16(VRING_DESC_F_NEXT |
                             (opts.write ? 0 : VRING_DESC_F_WRITE));
        d[1].next = htole16(s * DESCS_PER_REQ + 2);
        d[2].addr = htole64(gpa(&q->status[s]));
        d[2].len = htole32(1);
        d[2].flags = htole16(VRING_DESC_F_WRITE);
        d[2].next = 0;
    }
}

static void setup_queue(Queue *q)
{
    struct vu_vring_addr addr = {
        .index = q->index,
        .desc_user_addr = (uintptr_t)q->desc,
        .used_user_addr = (uintptr_t)q->used,
        .avail_user_addr = (uintptr_t)q->avail,
    };

    q->kick_fd = eventfd(0, EFD_CLOEXEC);
    q->call_fd = eventfd(0, EFD_CLOEXEC);
    if (q->kick_fd < 0 || q->call_fd < 0) {
        die("eventfd: %s", strerror(errno));
    }
    q->slots = calloc(opts.depth, sizeof(Slot));
    if (!q->slots) {
        die("out of memory");
    }
    q->rng = opts.seed * 0x9e3779b97f4a7c15ull + q->index + 1;
    /* --fill: queues write interleaved blocks, starting at their index */
    q->fill_next = q->index;
    setup_descriptors(q);
    /*
     * Polling the used ring: tell the back-end not to signal the call
     * eventfd at all (no EVENT_IDX, so the avail flag decides).
     */
    if (opts.poll) {
        q->avail->flags = htole16(VRING_AVAIL_F_NO_INTERRUPT);
    }

    vu_set_state(VU_SET_VRING_NUM, q->index, q->num);
    vu_set_state(VU_SET_VRING_BASE, q->index, 0);
    vu_call(VU_SET_VRING_ADDR, &addr, sizeof(addr), -1);
    vu_set_fd(VU_SET_VRING_CALL, q->index, q->call_fd);
    /* The kick fd starts the queue in libvhost-user: after the rest */
    vu_set_fd(VU_SET_VRING_KICK, q->index, q->kick_fd);
    /* Rings start disabled once VHOST_USER_F_PROTOCOL_FEATURES is on */
    vu_set_state(VU_SET_VRING_ENABLE, q->index, 1);
}

static void negotiate(void)
{
    uint64_t features, want, proto;

    vu_call(VU_SET_OWNER, NULL, 0, -1);
    features = vu_get_u64(VU_GET_FEATURES);
    if (!(features & (1ull << VIRTIO_F_VERSION_1))) {
        die("the back-end does not offer VIRTIO_F_VERSION_1 "
            "(features 0x%" PRIx64 ")", features);
    }
    if (!(features & (1ull << VU_F_PROTOCOL_FEATURES))) {
        die("the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES: "
            "not a vhost-user-blk export of QEMU?");
    }
    /*
     * We never discard our memfd: the export may pin it (the uring
     * driver's fixed buffers)
     */
    proto = vu_get_u64(VU_GET_PROTOCOL_FEATURES) &
            ((1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_REPLY_ACK) |
             (1ull << VU_PROTOCOL_F_CONFIG) |
             (1ull << VU_PROTOCOL_F_PINNED_MEMORY));
    /* Before protocol_features is set: REPLY_ACK applies from now on */
    vu_set_u64(VU_SET_PROTOCOL_FEATURES, proto);
    protocol_features = proto;
    if (protocol_features & (1ull << VU_PROTOCOL_F_MQ)) {
        export_queues = vu_get_u64(VU_GET_QUEUE_NUM);
    }

    if (protocol_features & (1ull << VU_PROTOCOL_F_CONFIG)) {
        /* Only up to num_queues: older and newer headers agree on that */
        uint32_t len = offsetof(struct virtio_blk_config, num_queues) +
                       sizeof(uint16_t);
        struct vu_config cfg = { .offset = 0, .size = len };
        struct virtio_blk_config blk;
        uint32_t got;

        vu_send(VU_GET_CONFIG, 0, &cfg, 12 + len, -1);
        got = vu_recv(VU_GET_CONFIG, &cfg, sizeof(cfg));
        if (got != 12 + len || cfg.size != len) {
            die("GET_CONFIG: the back-end returned no configuration");
        }
        memcpy(&blk, cfg.region, len);
        capacity = le64toh(blk.capacity) * 512;
        if (features & (1ull << VIRTIO_BLK_F_BLK_SIZE)) {
            blk_size = le32toh(blk.blk_size);
        }
        if ((features & (1ull << VIRTIO_BLK_F_MQ)) &&
            le16toh(blk.num_queues) < export_queues) {
            export_queues = le16toh(blk.num_queues);
        }
    }
    if (!(features & (1ull << VIRTIO_BLK_F_MQ))) {
        export_queues = 1;
    }

    if (opts.queues > export_queues) {
        die("the export has %" PRIu64 " queue(s), %u requested "
            "(export option num-queues)", export_queues, opts.queues);
    }
    if (opts.write && (features & (1ull << VIRTIO_BLK_F_RO))) {
        die("the export is read-only (export option writable=on)");
    }
    want = (1ull << VIRTIO_F_VERSION_1) | (1ull << VU_F_PROTOCOL_FEATURES) |
           (1ull << VIRTIO_BLK_F_BLK_SIZE);
    if (opts.queues > 1) {
        want |= 1ull << VIRTIO_BLK_F_MQ;
    }
    vu_set_u64(VU_SET_FEATURES, features & want);
}

/* xorshift64*: cheap, and each queue has its own sequence */
static uint64_t next_random(Queue *q)
{
    q->rng ^= q->rng >> 12;
    q->rng ^= q->rng << 25;
    q->rng ^= q->rng >> 27;
    return q->rng * 0x2545f4914f6cdd1dull;
}

/*
 * The verification pattern: each 64-bit word holds its byte offset on
 * the disk XOR the key, so that a block read from the wrong place, or
 * never written, does not match.  tests/ and the smoke test in
 * devtools/run-tests.sh compute the same words.
 */
static void fill_pattern(uint64_t *buf, uint64_t offset)
{
    for (unsigned i = 0; i < opts.block_size / 8; i++) {
        buf[i] = htole64((offset + 8 * i) ^ opts.verify_key);
    }
}

static bool check_pattern(const uint64_t *buf, uint64_t offset)
{
    for (unsigned i = 0; i < opts.block_size / 8; i++) {
        if (buf[i] != htole64((offset + 8 * i) ^ opts.verify_key)) {
            return false;
        }
    }
    return true;
}

static uint64_t blocks(void)
{
    uint64_t range = opts.range && opts.range < capacity ? opts.range
                                                         : capacity;
    return range / opts.block_size;
}

/* Prepare slot @s for a new request; false when --fill has no more */
static bool prepare(Queue *q, unsigned s)
{
    uint64_t block;

    if (opts.fill) {
        if (q->fill_next >= blocks()) {
            return false;
        }
        block = q->fill_next;
        q->fill_next += opts.queues;
    } else {
        block = next_random(q) % blocks();
    }
    q->slots[s].offset = block * opts.block_size;
    q->headers[s].type = htole32(opts.write ? VIRTIO_BLK_T_OUT
                                            : VIRTIO_BLK_T_IN);
    q->headers[s].ioprio = 0;
    q->headers[s].sector = htole64(q->slots[s].offset / 512);
    q->status[s] = 0xff;
    if (opts.write && opts.verify) {
        fill_pattern((uint64_t *)(q->data + (size_t)s * opts.block_size),
                     q->slots[s].offset);
    }
    return true;
}

static void post(Queue *q, unsigned s)
{
    q->avail->ring[q->avail_idx % q->num] = htole16(s * DESCS_PER_REQ);
    q->avail_idx++;
}

/* Make posted requests visible and kick unless the back-end opted out */
static void publish(Queue *q, uint64_t now, unsigned first, unsigned n)
{
    uint64_t one = 1;

    for (unsigned i = 0; i < n; i++) {
        uint16_t head = le16toh(q->avail->ring[(uint16_t)(first + i) %
                                               q->num]);
        q->slots[head / DESCS_PER_REQ].submitted_ns = now;
    }
    __atomic_store_n(&q->avail->idx, htole16(q->avail_idx),
                     __ATOMIC_RELEASE);
    /* The avail index must be visible before we look at the used flags */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!(le16toh(__atomic_load_n(&q->used->flags, __ATOMIC_RELAXED)) &
          VRING_USED_F_NO_NOTIFY)) {
        if (write(q->kick_fd, &one, sizeof(one)) != sizeof(one)) {
            snprintf(q->error, sizeof(q->error), "kick: %s",
                     strerror(errno));
        }
    }
}

static unsigned hist_bucket(uint64_t v)
{
    unsigned msb, shift;

    if (v < 2 * HIST_SUB) {
        return v;
    }
    msb = 63 - __builtin_clzll(v);
    shift = msb - HIST_SUB_BITS;
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB +
           ((v >> shift) - HIST_SUB);
}

/* The middle of bucket @b, in ns */
static double hist_value(unsigned b)
{
    unsigned shift;
    uint64_t low;

    if (b < 2 * HIST_SUB) {
        return b;
    }
    shift = (b - 2 * HIST_SUB) / HIST_SUB + 1;
    low = (uint64_t)(HIST_SUB + (b - 2 * HIST_SUB) % HIST_SUB) << shift;
    return low + ((1ull << shift) - 1) / 2.0;
}

static void *queue_thread(void *opaque)
{
    Queue *q = opaque;
    unsigned inflight = 0;
    uint16_t first;

    pthread_barrier_wait(&start_barrier);
    first = q->avail_idx;
    for (unsigned s = 0; s < opts.depth; s++) {
        if (prepare(q, s)) {
            post(q, s);
            inflight++;
        }
    }
    publish(q, now_ns(), first, inflight);

    while (inflight && !q->error[0]) {
        uint16_t used_idx;
        uint64_t now;
        unsigned n = 0;

        if (opts.poll) {
            while ((used_idx = le16toh(__atomic_load_n(&q->used->idx,
                                                       __ATOMIC_ACQUIRE))) ==
                   q->last_used) {
                __builtin_ia32_pause();
            }
        } else {
            uint64_t cnt;
            struct pollfd pfd = { .fd = q->call_fd, .events = POLLIN };

            /*
             * The back-end makes the eventfd non-blocking (the file
             * description is shared), so wait in poll().  A stuck
             * back-end is caught by main()'s timeout.
             */
            if (read(q->call_fd, &cnt, sizeof(cnt)) != sizeof(cnt)) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN) {
                    poll(&pfd, 1, -1);
                    continue;
                }
                snprintf(q->error, sizeof(q->error), "call eventfd: %s",
                         strerror(errno));
                break;
            }
            used_idx = le16toh(__atomic_load_n(&q->used->idx,
                                               __ATOMIC_ACQUIRE));
        }
        now = now_ns();
        first = q->avail_idx;
        while (q->last_used != used_idx) {
            struct vring_used_elem *e = &q->used->ring[q->last_used %
                                                       q->num];
            uint32_t head = le32toh(e->id);
            unsigned s = head / DESCS_PER_REQ;
            uint64_t lat;

            q->last_used++;
            if (head % DESCS_PER_REQ || s >= opts.depth) {
                snprintf(q->error, sizeof(q->error),
                         "queue %u: back-end returned descriptor %u, which "
                         "heads no request", q->index, head);
                break;
            }
            inflight--;
            lat = now - q->slots[s].submitted_ns;
            if (q->status[s] != VIRTIO_BLK_S_OK) {
                q->io_errors++;
            } else if (opts.verify && !opts.write &&
                       !check_pattern((uint64_t *)(q->data + (size_t)s *
                                                   opts.block_size),
                                      q->slots[s].offset)) {
                if (!q->verify_errors++) {
                    fprintf(stderr, "vhost-user-bench: queue %u: data at "
                            "offset %" PRIu64 " does not match the "
                            "pattern\n", q->index, q->slots[s].offset);
                }
            }
            if (opts.fill ||
                (now >= window_start_ns && now < window_end_ns)) {
                q->ios++;
                q->lat_sum_ns += lat;
                if (lat > q->lat_max_ns) {
                    q->lat_max_ns = lat;
                }
                q->hist[hist_bucket(lat)]++;
            }
            if ((opts.fill || now < stop_ns) && prepare(q, s)) {
                post(q, s);
                inflight++;
                n++;
            }
        }
        if (n) {
            publish(q, now_ns(), first, n);
        }
    }
    return NULL;
}

/* CPU time of every thread of @pid, from /proc (schedstat: ns) */
typedef struct ThreadCpu {
    int tid;
    char comm[32];
    uint64_t ns;
} ThreadCpu;

static unsigned sample_threads(int pid, ThreadCpu *out, unsigned max)
{
    char path[64];
    DIR *dir;
    struct dirent *de;
    unsigned n = 0;

    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    dir = opendir(path);
    if (!dir) {
        die("--cpu-pid %d: %s", pid, strerror(errno));
    }
    while ((de = readdir(dir)) && n < max) {
        char file[128];
        FILE *f;
        int tid = atoi(de->d_name);

        if (tid <= 0) {
            continue;
        }
        snprintf(file, sizeof(file), "/proc/%d/task/%d/schedstat", pid, tid);
        f = fopen(file, "r");
        if (!f) {
            continue;           /* the thread exited meanwhile */
        }
        if (fscanf(f, "%" SCNu64, &out[n].ns) != 1) {
            fclose(f);
            continue;
        }
        fclose(f);
        snprintf(file, sizeof(file), "/proc/%d/task/%d/comm", pid, tid);
        f = fopen(file, "r");
        out[n].comm[0] = 0;
        if (f) {
            if (fgets(out[n].comm, sizeof(out[n].comm), f)) {
                out[n].comm[strcspn(out[n].comm, "\n")] = 0;
            }
            fclose(f);
        }
        out[n].tid = tid;
        n++;
    }
    closedir(dir);
    return n;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {
        .tv_sec = t / 1000000000ull, .tv_nsec = t % 1000000000ull,
    };

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR) {
    }
}

static double cpu_self_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* A JSON string: comm names are short, but may hold any byte */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            printf("\\%c", *s);
        } else if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) {
            printf("\\u%04x", (unsigned char)*s);
        } else {
            putchar(*s);
        }
    }
    putchar('"');
}

static void usage(void)
{
    printf(
"Usage: vhost-user-bench --socket PATH [options]\n"
"A vhost-user-blk front-end without a guest: random I/O on the export.\n"
"\n"
"  -s, --socket PATH      the export's UNIX socket\n"
"  -q, --queues N         virtqueues, one thread each (default 1)\n"
"  -d, --depth N          requests in flight per queue (default 1)\n"
"  -w, --write            random writes (default: random reads)\n"
"  -b, --block-size N     bytes per request, a multiple of 512 (default "
"4096)\n"
"  -t, --time SECS        measured time (default 3)\n"
"  -W, --warmup SECS      time before the measurement (default 0.5)\n"
"  -p, --poll             poll the used ring (the back-end does not\n"
"                         signal the call eventfd) instead of sleeping\n"
"  -r, --range BYTES      only the first BYTES of the disk\n"
"      --seed N           random offsets (default 1)\n"
"      --verify KEY       writes carry a pattern of KEY and the offset,\n"
"                         reads must find it (64-bit words: byte offset\n"
"                         on the disk XOR KEY)\n"
"      --fill             write every block once, sequentially over the\n"
"                         queues, then stop (with --verify's pattern)\n"
"      --cpu-pid PID      CPU time of each thread of PID (the daemon)\n"
"                         over the measured window, in the JSON line\n"
"\n"
"Prints one JSON line on stdout and a summary on stderr; exit status 1\n"
"on protocol, I/O or verification errors.\n");
}

static uint64_t parse_u64(const char *opt, const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || end == s || *end) {
        die("%s: not a number: %s", opt, s);
    }
    return v;
}

static double parse_secs(const char *opt, const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || v < 0) {
        die("%s: not a duration in seconds: %s", opt, s);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum { OPT_SEED = 256, OPT_VERIFY, OPT_FILL, OPT_CPU_PID };
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "queues", required_argument, NULL, 'q' },
        { "depth", required_argument, NULL, 'd' },
        { "write", no_argument, NULL, 'w' },
        { "block-size", required_argument, NULL, 'b' },
        { "time", required_argument, NULL, 't' },
        { "warmup", required_argument, NULL, 'W' },
        { "poll", no_argument, NULL, 'p' },
        { "range", required_argument, NULL, 'r' },
        { "seed", required_argument, NULL, OPT_SEED },
        { "verify", required_argument, NULL, OPT_VERIFY },
        { "fill", no_argument, NULL, OPT_FILL },
        { "cpu-pid", required_argument, NULL, OPT_CPU_PID },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "s:q:d:wb:t:W:pr:h", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 's': opts.socket_path = optarg; break;
        case 'q': opts.queues = parse_u64("--queues", optarg); break;
        case 'd': opts.depth = parse_u64("--depth", optarg); break;
        case 'w': opts.write = true; break;
        case 'b': opts.block_size = parse_u64("--block-size", optarg); break;
        case 't': opts.secs = parse_secs("--time", optarg); break;
        case 'W': opts.warmup = parse_secs("--warmup", optarg); break;
        case 'p': opts.poll = true; break;
        case 'r': opts.range = parse_u64("--range", optarg); break;
        case OPT_SEED: opts.seed = parse_u64("--seed", optarg); break;
        case OPT_VERIFY:
            opts.verify = true;
            opts.verify_key = parse_u64("--verify", optarg);
            break;
        case OPT_FILL: opts.fill = true; break;
        case OPT_CPU_PID:
            opts.cpu_pid = parse_u64("--cpu-pid", optarg);
            break;
        case 'h': usage(); exit(0);
        default: usage(); exit(2);
        }
    }
    if (optind != argc || !opts.socket_path) {
        usage();
        exit(2);
    }
    if (opts.queues < 1 || opts.queues > VU_MAX_QUEUES) {
        die("--queues must be 1 to %d", VU_MAX_QUEUES);
    }
    /*
     * Three descriptors per request, and QEMU's back-ends take rings of
     * at most 1024 descriptors (VIRTQUEUE_MAX_SIZE)
     */
    if (opts.depth < 1 || opts.depth > 256) {
        die("--depth must be 1 to 256");
    }
    if (opts.block_size < 512 || opts.block_size % 512 ||
        opts.block_size > (1u << 20)) {
        die("--block-size must be a multiple of 512, at most 1 MiB");
    }
    if (opts.fill) {
        opts.write = true;
    }
    if (opts.secs <= 0 && !opts.fill) {
        die("--time must be positive");
    }
}

int main(int argc, char **argv)
{
    ThreadCpu *cpu_before = NULL, *cpu_after = NULL;
    unsigned n_before = 0, n_after = 0;
    uint64_t start, ios = 0, lat_sum = 0, lat_max = 0, io_errors = 0,
             verify_errors = 0;
    static uint64_t hist[HIST_BUCKETS];
    double cpu0 = 0, cpu1 = 0, secs, pct[3] = { 0 };
    static const double pct_of[3] = { 0.50, 0.99, 0.999 };
    bool failed = false;

    parse_args(argc, argv);
    /* A back-end that goes away must give an error, not SIGPIPE */
    signal(SIGPIPE, SIG_IGN);

    connect_socket(opts.socket_path);
    negotiate();
    if (!capacity) {
        die("the back-end gave no capacity (no VHOST_USER_PROTOCOL_F_CONFIG)");
    }
    if (opts.block_size % blk_size) {
        die("--block-size %u is not a multiple of the export's logical "
            "block size %u", opts.block_size, blk_size);
    }
    if (!blocks()) {
        die("the disk (%" PRIu64 " bytes) is smaller than one block",
            capacity);
    }
    setup_memory();
    for (unsigned i = 0; i < opts.queues; i++) {
        setup_queue(&queues[i]);
    }

    if (opts.cpu_pid >= 0) {
        cpu_before = calloc(4096, sizeof(ThreadCpu));
        cpu_after = calloc(4096, sizeof(ThreadCpu));
        if (!cpu_before || !cpu_after) {
            die("out of memory");
        }
    }
    pthread_barrier_init(&start_barrier, NULL, opts.queues + 1);
    start = now_ns();
    window_start_ns = start + (uint64_t)(opts.warmup * 1e9);
    window_end_ns = window_start_ns + (uint64_t)(opts.secs * 1e9);
    stop_ns = opts.fill ? UINT64_MAX : window_end_ns;
    for (unsigned i = 0; i < opts.queues; i++) {
        if (pthread_create(&queues[i].thread, NULL, queue_thread,
                           &queues[i])) {
            die("pthread_create failed");
        }
    }
    pthread_barrier_wait(&start_barrier);
    if (!opts.fill) {
        sleep_until(window_start_ns);
        if (cpu_before) {
            n_before = sample_threads(opts.cpu_pid, cpu_before, 4096);
        }
        cpu0 = cpu_self_s();
        sleep_until(window_end_ns);
        if (cpu_after) {
            n_after = sample_threads(opts.cpu_pid, cpu_after, 4096);
        }
        cpu1 = cpu_self_s();
    }

    /*
     * The requests still in flight complete after the window.  A back-end
     * that does not complete them within 3 s is broken: report it rather
     * than hang (exit() ends the threads blocked on their eventfds).
     */
    for (unsigned i = 0; i < opts.queues; i++) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += opts.fill ? 600 : 3;
        if (pthread_timedjoin_np(queues[i].thread, NULL, &ts)) {
            Queue *q = &queues[i];

            die("queue %u: requests did not complete within %d s "
                "(back-end stuck?): avail idx %u, used idx %u, %u used "
                "entries read", i, opts.fill ? 600 : 3,
                le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_RELAXED)),
                le16toh(__atomic_load_n(&q->used->idx, __ATOMIC_RELAXED)),
                q->last_used);
        }
    }
    for (unsigned i = 0; i < opts.queues; i++) {
        Queue *q = &queues[i];

        if (q->error[0]) {
            fprintf(stderr, "vhost-user-bench: %s\n", q->error);
            failed = true;
        }
        ios += q->ios;
        lat_sum += q->lat_sum_ns;
        lat_max = q->lat_max_ns > lat_max ? q->lat_max_ns : lat_max;
        io_errors += q->io_errors;
        verify_errors += q->verify_errors;
        for (unsigned b = 0; b < HIST_BUCKETS; b++) {
            hist[b] += q->hist[b];
        }
    }
    /* Stop the rings before leaving, as a front-end being reset would */
    for (unsigned i = 0; i < opts.queues; i++) {
        struct vu_vring_state s = { .index = i };

        vu_send(VU_GET_VRING_BASE, 0, &s, sizeof(s), -1);
        vu_recv(VU_GET_VRING_BASE, &s, sizeof(s));
    }

    secs = opts.fill ? (now_ns() - start) / 1e9
                     : (window_end_ns - window_start_ns) / 1e9;
    for (unsigned p = 0; p < 3; p++) {
        uint64_t rank = (uint64_t)(pct_of[p] * ios), seen = 0;

        for (unsigned b = 0; b < HIST_BUCKETS && ios; b++) {
            seen += hist[b];
            if (seen > rank) {
                pct[p] = hist_value(b) / 1000;
                break;
            }
        }
    }

    printf("{\"rw\": \"%s\", \"bs\": %u, \"queues\": %u, \"depth\": %u, "
           "\"poll\": %s, \"secs\": %.3f, \"ios\": %" PRIu64 ", "
           "\"iops\": %.1f, \"lat_mean_us\": %.2f, \"lat_p50_us\": %.2f, "
           "\"lat_p99_us\": %.2f, \"lat_p999_us\": %.2f, "
           "\"lat_max_us\": %.2f, \"io_errors\": %" PRIu64 ", "
           "\"verify_errors\": %" PRIu64 ", \"capacity\": %" PRIu64 ", "
           "\"blk_size\": %u, \"export_queues\": %" PRIu64 ", "
           "\"client_cpu_s\": %.4f",
           opts.write ? "write" : "read", opts.block_size, opts.queues,
           opts.depth, opts.poll ? "true" : "false", secs, ios,
           ios / secs, ios ? lat_sum / 1000.0 / ios : 0, pct[0], pct[1],
           pct[2], lat_max / 1000.0, io_errors, verify_errors, capacity,
           blk_size, export_queues, cpu1 - cpu0);
    if (cpu_after) {
        /* Per thread of the daemon over the window: the caller knows
         * which tid is the main loop and which are IOThreads */
        printf(", \"daemon_threads\": [");
        for (unsigned a = 0; a < n_after; a++) {
            uint64_t before = 0;

            for (unsigned b = 0; b < n_before; b++) {
                if (cpu_before[b].tid == cpu_after[a].tid) {
                    before = cpu_before[b].ns;
                    break;
                }
            }
            printf("%s{\"tid\": %d, \"comm\": ", a ? ", " : "",
                   cpu_after[a].tid);
            json_string(cpu_after[a].comm);
            printf(", \"cpu_s\": %.6f}", (cpu_after[a].ns - before) / 1e9);
        }
        printf("]");
    }
    printf("}\n");
    fflush(stdout);

    fprintf(stderr, "%s %u x QD%u%s: %.0f IOPS, mean %.1f us, p99 %.1f us, "
            "%" PRIu64 " I/Os in %.2f s\n", opts.write ? "write" : "read",
            opts.queues, opts.depth, opts.poll ? " poll" : "", ios / secs,
            ios ? lat_sum / 1000.0 / ios : 0, pct[1], ios, secs);
    if (io_errors) {
        fprintf(stderr, "vhost-user-bench: %" PRIu64 " requests failed "
                "(status not VIRTIO_BLK_S_OK)\n", io_errors);
        failed = true;
    }
    if (verify_errors) {
        fprintf(stderr, "vhost-user-bench: %" PRIu64 " reads did not match "
                "the pattern\n", verify_errors);
        failed = true;
    }
    if (!ios) {
        fprintf(stderr, "vhost-user-bench: no request completed\n");
        failed = true;
    }
    close(sock);
    return failed ? 1 : 0;
}
