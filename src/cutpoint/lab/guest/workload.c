/*
 * cutpoint lab guest workload: an ordered-write workload across several disks.
 *
 * Every write carries a global sequence number (1, 2, 3, ...), goes to one disk and is durable (O_DIRECT|O_DSYNC)
 * before the next one is issued. So at any instant the disks hold exactly the effect of the first k writes, and a
 * crash-consistent multi-disk backup must too: cutpoint.lab.verify checks that.  The schedule is a pure function of
 * (seed, seq), so the verifier recomputes it and so does a restarted guest, which resumes after the largest sequence
 * number found on its disks.
 *
 *   r    = splitmix64(seed ^ seq)          (one splitmix64 step from state seed^seq)
 *   disk = r % ndisks,   slot = (r >> 32) % nslots
 *   slot s of a disk of S bytes is at s * stride, stride = (S / nslots) & ~4095
 *
 * Block (4096 bytes, little endian): "CUTPTWL1", u64 seed, u64 seq, u32 disk, u32 ndisks, u32 slot, u32 nslots,
 * then 507 u64 fill words: the splitmix64 stream from state seed ^ (seq * 0xD1B54A32D192ED03).
 *
 * In the guest, parameters come from /proc/cmdline: cutpoint.seed=, cutpoint.slots=, cutpoint.rate= (writes/s,
 * 0 = unlimited), cutpoint.ndisks= (disks to wait for), cutpoint.progress= (seconds between progress lines,
 * each with the largest single-write latency seen since the previous one: max_ms=),
 * cutpoint.count= (stop after that many writes, 0 = never).  Disks are /dev/vda, /dev/vdb, ... = index 0, 1, ...
 * (read-only disks are skipped and take no index).
 * On the host, `workload --files F0 F1 ... [--seed N] [--slots N] [--count N] [--rate N]` runs the same workload on
 * regular files, which the tests use to make images the real program wrote.
 *
 * `workload --fs DIR0 DIR1 ...` is the filesystem variant for application-consistent lab guests: it writes through
 * mounted filesystems instead of raw devices (so there are journals, metadata and dirty page cache for a
 * guest-fsfreeze to flush): each step writes one 4096-byte record file with write+fsync, every 8th step by
 * writing a temporary file and renaming it over the old one. Same STARTED/progress lines as the block mode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096
#define HDR 40
#define MAXDISKS 64
#define MAGIC "CUTPTWL1"
#define FILL_MUL 0xD1B54A32D192ED03ULL

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

struct disk {
    char path[256];
    int fd;
    uint64_t size, stride;
};

static struct disk disks[MAXDISKS];
static uint32_t ndisks, nslots = 256;
static uint64_t seed = 1, rate, count, progress = 1;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void schedule(uint64_t sd, uint64_t seq, uint32_t *disk, uint32_t *slot) {
    uint64_t st = sd ^ seq, r = splitmix64(&st);
    *disk = (uint32_t)(r % ndisks);
    *slot = (uint32_t)((r >> 32) % nslots);
}

static void make_block(unsigned char *b, uint64_t sd, uint64_t seq, uint32_t disk, uint32_t slot) {
    memcpy(b, MAGIC, 8);
    put64(b + 8, sd);
    put64(b + 16, seq);
    put32(b + 24, disk);
    put32(b + 28, ndisks);
    put32(b + 32, slot);
    put32(b + 36, nslots);
    uint64_t st = sd ^ (seq * FILL_MUL);
    for (int off = HDR; off < BLK; off += 8) put64(b + off, splitmix64(&st));
}

static void die(const char *what, const char *path) {
    printf("CUTPOINT-WORKLOAD-ERROR %s %s: %s\n", what, path, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void open_disk(struct disk *d, int host) {
    d->fd = open(d->path, O_RDWR | O_DIRECT | O_DSYNC);
    if (d->fd < 0 && host && errno == EINVAL) d->fd = open(d->path, O_RDWR | O_DSYNC); /* tmpfs: no O_DIRECT */
    if (d->fd < 0) die("open", d->path);
    struct stat st;
    if (fstat(d->fd, &st) < 0) die("stat", d->path);
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(d->fd, BLKGETSIZE64, &d->size) < 0) die("BLKGETSIZE64", d->path);
    } else {
        d->size = (uint64_t)st.st_size;
    }
    d->stride = (d->size / nslots) & ~(uint64_t)(BLK - 1);
    if (d->stride < BLK) {
        errno = ENOSPC;
        die("disk too small for the slot count", d->path);
    }
}

/* Linux names virtio disks like sd: vda..vdz, vdaa..vdaz, ... */
static void vd_name(unsigned idx, char *out) {
    char tmp[8];
    int n = 0;
    idx++;
    while (idx > 0 && n < 7) { idx--; tmp[n++] = (char)('a' + idx % 26); idx /= 26; }
    int o = sprintf(out, "vd");
    while (n > 0) out[o++] = tmp[--n];
    out[o] = 0;
}

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

static int read_only(const char *name) {
    char p[64], v[4] = "";
    snprintf(p, sizeof p, "/sys/block/%s/ro", name);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    if (!fgets(v, sizeof v, f)) v[0] = 0;
    fclose(f);
    return v[0] == '1';
}

/* Waits for `want` virtio disks (all present ones if 0); read-only disks are left out of the workload, so the
 * writable ones are indices 0, 1, ... in device order. */
static void find_guest_disks(uint32_t want) {
    double deadline = now() + 20;
    for (;;) {
        uint32_t n = 0;
        char name[16], sys[64], dev[64];
        for (; n < MAXDISKS; n++) {
            vd_name(n, name);
            snprintf(sys, sizeof sys, "/sys/block/%s", name);
            snprintf(dev, sizeof dev, "/dev/%s", name);
            if (!exists(sys) || !exists(dev)) break;
        }
        if ((want && n >= want) || (!want && n > 0)) {
            ndisks = 0;
            for (uint32_t i = 0; i < (want ? want : n); i++) {
                vd_name(i, name);
                if (read_only(name)) {
                    printf("CUTPOINT-WORKLOAD skipping read-only /dev/%s\n", name);
                    continue;
                }
                snprintf(disks[ndisks++].path, sizeof disks[0].path, "/dev/%s", name);
            }
            if (ndisks == 0) {
                printf("CUTPOINT-WORKLOAD-ERROR no writable virtio disk\n");
                exit(1);
            }
            return;
        }
        if (now() > deadline) {
            printf("CUTPOINT-WORKLOAD-ERROR found %u of %u virtio disks\n", n, want);
            exit(1);
        }
        usleep(50000);
    }
}

static uint64_t param(const char *cmdline, const char *key, uint64_t dflt) {
    char pat[64];
    snprintf(pat, sizeof pat, "cutpoint.%s=", key);
    for (const char *p = cmdline; (p = strstr(p, pat)); p++)
        if (p == cmdline || p[-1] == ' ') return strtoull(p + strlen(pat), NULL, 0);
    return dflt;
}

/* Largest valid sequence number on the disks; adopts their seed so a restarted guest continues the same order. */
static uint64_t resume(unsigned char *buf, unsigned char *want) {
    uint64_t maxseq = 0, found_seed = 0;
    int have_seed = 0;
    for (uint32_t d = 0; d < ndisks; d++) {
        for (uint32_t s = 0; s < nslots; s++) {
            ssize_t n = pread(disks[d].fd, buf, BLK, (off_t)(s * disks[d].stride));
            if (n != BLK) die("read", disks[d].path);
            if (memcmp(buf, MAGIC, 8) != 0) continue;
            uint64_t sd = get64(buf + 8), seq = get64(buf + 16);
            uint32_t bd = get32(buf + 24), bnd = get32(buf + 28), bs = get32(buf + 32), bns = get32(buf + 36);
            make_block(want, sd, seq, d, s);
            if (bns != nslots || bnd != ndisks || bd != d || bs != s || memcmp(buf, want, BLK) != 0) {
                printf("CUTPOINT-WORKLOAD-ERROR %s slot %u holds a foreign block (seq %" PRIu64 " disk %u/%u "
                       "slot %u/%u); not resuming on mismatched disks\n",
                       disks[d].path, s, seq, bd, bnd, bs, bns);
                fflush(stdout);
                exit(1);
            }
            if (have_seed && sd != found_seed) {
                printf("CUTPOINT-WORKLOAD-ERROR disks hold two seeds\n");
                fflush(stdout);
                exit(1);
            }
            have_seed = 1;
            found_seed = sd;
            if (seq > maxseq) maxseq = seq;
        }
    }
    if (have_seed) seed = found_seed;
    return maxseq;
}

/* The filesystem workload (see the header): churns data and metadata on every directory in turn. */
static int fs_workload(char **dirs, int n) {
    char path[512], tmp[512];
    unsigned char *b;
    if (posix_memalign((void **)&b, BLK, BLK)) return 1;
    double t0 = now(), last = t0;
    for (uint64_t seq = 1; !count || seq <= count; seq++) {
        const char *dir = dirs[seq % (uint64_t)n];
        make_block(b, seed, seq, (uint32_t)(seq % (uint64_t)n), (uint32_t)(seq % 64));
        snprintf(path, sizeof path, "%s/rec-%02u", dir, (unsigned)(seq % 64));
        snprintf(tmp, sizeof tmp, "%s/.rec.tmp", dir);
        int renamed = seq % 8 == 0;
        int fd = open(renamed ? tmp : path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) die("open", renamed ? tmp : path);
        if (write(fd, b, BLK) != BLK) die("write", path);
        if (fsync(fd) < 0) die("fsync", path);
        close(fd);
        if (renamed && rename(tmp, path) < 0) die("rename", path);
        if (seq == 1) printf("CUTPOINT-WORKLOAD-STARTED seq=1 seed=%" PRIu64 " ndirs=%d fs=1\n", seed, n);
        double t = now();
        if (progress && t - last >= (double)progress) {
            printf("CUTPOINT-WORKLOAD seq=%" PRIu64 " rate=%.0f/s\n", seq, (double)seq / (t - t0));
            last = t;
        }
        if (rate) {
            double due = t0 + (double)seq / (double)rate;
            if (due > t) usleep((useconds_t)((due - t) * 1e6));
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int host = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 2 && strcmp(argv[1], "--fs") == 0) {
        char cmdline[4096] = "";
        FILE *f = fopen("/proc/cmdline", "r");
        if (f) { if (!fgets(cmdline, sizeof cmdline, f)) cmdline[0] = 0; fclose(f); }
        seed = param(cmdline, "seed", seed);
        rate = param(cmdline, "rate", 0);
        count = param(cmdline, "count", 0);
        progress = param(cmdline, "progress", 1);
        return fs_workload(argv + 2, argc - 2);
    }
    if (argc > 1 && strcmp(argv[1], "--files") == 0) {
        host = 1;
        for (int i = 2; i < argc; i++) {
            if (argv[i][0] == '-' && argv[i][1] == '-' && i + 1 < argc) {
                uint64_t v = strtoull(argv[i + 1], NULL, 0);
                if (!strcmp(argv[i], "--seed")) seed = v;
                else if (!strcmp(argv[i], "--slots")) nslots = (uint32_t)v;
                else if (!strcmp(argv[i], "--count")) count = v;
                else if (!strcmp(argv[i], "--rate")) rate = v;
                else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
                i++;
            } else if (ndisks < MAXDISKS) {
                snprintf(disks[ndisks++].path, sizeof disks[0].path, "%s", argv[i]);
            }
        }
        progress = 0;
        if (!ndisks) {
            fprintf(stderr, "usage: workload --files F0 F1 ... [--seed N] [--slots N] [--count N] [--rate N]\n");
            return 2;
        }
    } else {
        char cmdline[4096] = "";
        FILE *f = fopen("/proc/cmdline", "r");
        if (f) { if (!fgets(cmdline, sizeof cmdline, f)) cmdline[0] = 0; fclose(f); }
        seed = param(cmdline, "seed", seed);
        nslots = (uint32_t)param(cmdline, "slots", nslots);
        rate = param(cmdline, "rate", 0);
        count = param(cmdline, "count", 0);
        progress = param(cmdline, "progress", 1);
        find_guest_disks((uint32_t)param(cmdline, "ndisks", 0));
    }
    if (nslots == 0) { printf("CUTPOINT-WORKLOAD-ERROR slots must be > 0\n"); return 1; }
    for (uint32_t d = 0; d < ndisks; d++) open_disk(&disks[d], host);

    unsigned char *buf, *want;
    if (posix_memalign((void **)&buf, BLK, BLK) || posix_memalign((void **)&want, BLK, BLK)) return 1;
    uint64_t first = resume(buf, want) + 1;
    double t0 = now(), last_progress = t0, max_lat = 0;
    for (uint64_t seq = first; !count || seq < first + count; seq++) {
        uint32_t d, s;
        schedule(seed, seq, &d, &s);
        make_block(buf, seed, seq, d, s);
        double before = now();
        ssize_t n = pwrite(disks[d].fd, buf, BLK, (off_t)(s * disks[d].stride));
        if (n != BLK) {
            printf("CUTPOINT-WORKLOAD-ERROR pwrite seq=%" PRIu64 " %s: %s\n", seq, disks[d].path,
                   n < 0 ? strerror(errno) : "short write");
            return 1;
        }
        if (seq == first)
            printf("CUTPOINT-WORKLOAD-STARTED seq=%" PRIu64 " seed=%" PRIu64 " ndisks=%u slots=%u\n", seq, seed, ndisks,
                   nslots);
        double t = now();
        if (t - before > max_lat) max_lat = t - before;   /* the guest's own view of an I/O pause */
        if (progress && t - last_progress >= (double)progress) {
            printf("CUTPOINT-WORKLOAD seq=%" PRIu64 " rate=%.0f/s max_ms=%.2f\n", seq,
                   (double)(seq - first + 1) / (t - t0), max_lat * 1e3);
            last_progress = t;
            max_lat = 0;
        }
        if (rate) {
            double due = t0 + (double)(seq - first + 1) / (double)rate;
            if (due > t) usleep((useconds_t)((due - t) * 1e6));
        }
    }
    if (host) printf("CUTPOINT-WORKLOAD-DONE seq=%" PRIu64 "\n", first + count - 1);
    return 0;
}
