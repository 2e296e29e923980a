/*
 * workload — a deduplication benchmark workload.
 *
 * Allocates one anonymous private mapping, fills it with a deterministic mix
 * of zero pages, duplicates drawn from a pool of distinct pages and unique
 * pages, holds it while an outside harness samples memory use, then verifies
 * every page against content regenerated from the seed and exits nonzero on
 * any mismatch.
 *
 * Layouts (-l):
 *   runs       chunks of RUN pages; each chunk is all zero, all unique, or a
 *              run of RUN consecutive pool pages starting at a random pool
 *              page (copied buffers).  Chunk kinds follow the mix exactly.
 *   scattered  the same mix decided page by page; a duplicate page is a
 *              random pool page.
 *   copies     COPIES copies of one buffer of SIZE/COPIES distinct pages.
 *   churn      the first (1-CHURN) of the memory is duplicates (runs of RUN
 *              pool pages); the rest is rewritten continuously during the
 *              hold with pool pages that change every pass.  The ideal counts
 *              only the static part.  Rewrite throughput is reported.
 *   unique     only unique pages: nothing to save.
 *
 * The ideal saving is every zero page plus every duplicate beyond the first
 * copy of each pool page that occurs.
 *
 * Output: one JSON object per line on stdout:
 *   {"event":"start",...}   after mmap (and madvise), before the write phase
 *   {"event":"ready",...}   after the write phase (write_s)
 *   {"event":"result",...}  after verification
 * Exit status: 0 = all pages verified, 2 = mismatch, 1 = usage/system error.
 *
 * The hold (-t SECONDS) ends early on SIGUSR1, SIGINT or SIGTERM; -t 0 holds
 * until signalled.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define PAGE 4096u
#define WORDS (PAGE / sizeof(uint64_t))

enum kind { K_ZERO = 0, K_POOL = 1, K_UNIQUE = 2 };
enum layout { L_RUNS, L_SCATTERED, L_COPIES, L_CHURN, L_UNIQUE };
static const char *layout_names[] = {"runs", "scattered", "copies", "churn", "unique"};

struct desc {
    enum kind kind;
    uint64_t id; /* pool page index or unique page index */
};

static struct {
    uint64_t size, pages;
    unsigned zero_pct, dup_pct, uniq_pct;
    enum layout layout;
    uint64_t pool, run, copies;
    double hold;
    int mergeable;
    int corrupt; /* self-test: damage one page before verifying */
    uint64_t seed;
    double churn_frac;
    uint64_t static_pages; /* churn: pages [0, static_pages) are static */
    uint64_t nchunks;      /* runs/churn: number of chunks */
    uint64_t chunk_zero, chunk_dup;
} cfg = {
    .size = 256ull << 20,
    .zero_pct = 25, .dup_pct = 50, .uniq_pct = 25,
    .layout = L_RUNS,
    .pool = 4096, .run = 256, .copies = 8,
    .hold = 10.0,
    .seed = 1,
    .churn_frac = 0.5,
};

static inline uint64_t h3(uint64_t a, uint64_t b, uint64_t c)
{
    return mix64(mix64(mix64(a) ^ b) ^ c);
}

/* Keyed permutation of [0, n) (Feistel network with cycle walking), so that
 * kinds follow the mix exactly without a per-page table. */
static uint64_t perm_bits;
static void perm_init(uint64_t n)
{
    perm_bits = 2;
    while ((1ull << perm_bits) < n) perm_bits += 2;
}
static uint64_t perm(uint64_t x, uint64_t n, uint64_t key)
{
    uint64_t half = perm_bits / 2, mask = (1ull << half) - 1;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t t = l ^ (h3(key, (uint64_t)round, r) & mask);
            l = r;
            r = t;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

static struct desc page_desc(uint64_t i)
{
    struct desc d = {K_UNIQUE, i};
    switch (cfg.layout) {
    case L_UNIQUE:
        break;
    case L_COPIES: {
        uint64_t buf = cfg.pages / cfg.copies;
        d.kind = K_POOL;
        d.id = (i % buf);
        if (i >= buf * cfg.copies) { d.kind = K_UNIQUE; d.id = i; }
        break;
    }
    case L_SCATTERED: {
        uint64_t p = perm(i, cfg.pages, cfg.seed ^ 0x5ca7);
        uint64_t nz = cfg.pages * cfg.zero_pct / 100, nd = cfg.pages * cfg.dup_pct / 100;
        if (p < nz) d.kind = K_ZERO, d.id = 0;
        else if (p < nz + nd) d.kind = K_POOL, d.id = h3(cfg.seed, 0xd0b, i) % cfg.pool;
        break;
    }
    case L_RUNS:
    case L_CHURN: {
        uint64_t c = i / cfg.run, off = i % cfg.run;
        uint64_t p;
        if (cfg.layout == L_CHURN) {
            /* static part: all duplicates; churn part handled by caller */
            p = cfg.chunk_zero; /* always "dup" */
        } else {
            p = (c < cfg.nchunks) ? perm(c, cfg.nchunks, cfg.seed ^ 0x7275) : ~0ull;
        }
        if (p < cfg.chunk_zero) {
            d.kind = K_ZERO, d.id = 0;
        } else if (p < cfg.chunk_zero + cfg.chunk_dup) {
            uint64_t span = cfg.pool > cfg.run ? cfg.pool - cfg.run + 1 : 1;
            uint64_t start = h3(cfg.seed, 0x7275, c) % span;
            d.kind = K_POOL;
            d.id = (start + off) % cfg.pool;
        }
        break;
    }
    }
    return d;
}

/* Churn part: page i in pass g holds a pool page that changes every pass. */
static inline uint64_t churn_pool_id(uint64_t i, uint64_t g)
{
    return h3(cfg.seed ^ 0xc4, i, g) % cfg.pool;
}

static inline uint64_t content_key(struct desc d)
{
    return h3(cfg.seed, d.kind == K_POOL ? 0x9001 : 0x0111, d.id);
}

static void fill_page(uint64_t *p, struct desc d)
{
    if (d.kind == K_ZERO) {
        memset(p, 0, PAGE);
        return;
    }
    uint64_t k = content_key(d);
    for (unsigned w = 0; w < WORDS; w++) p[w] = mix64(k + w);
}

static int check_page(const uint64_t *p, struct desc d)
{
    if (d.kind == K_ZERO) {
        for (unsigned w = 0; w < WORDS; w++)
            if (p[w]) return 0;
        return 1;
    }
    uint64_t k = content_key(d);
    for (unsigned w = 0; w < WORDS; w++)
        if (p[w] != mix64(k + w)) return 0;
    return 1;
}

static uint64_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; end++; break;
    case 'm': case 'M': v *= 1024 * 1024; end++; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
    case 'p': case 'P': v *= PAGE; end++; break; /* pages */
    default: break;
    }
    if (*end == 'i' || *end == 'B' || *end == 'b') end++;
    if (*end == 'B') end++;
    if (v <= 0 || *end) {
        fprintf(stderr, "workload: bad size '%s'\n", s);
        exit(1);
    }
    return (uint64_t)v;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: workload [options]\n"
        "  -s, --size=SIZE       memory to allocate (K/M/G suffix; default 256M)\n"
        "  -m, --mix=Z,D,U       percent zero, duplicate, unique pages (default 25,50,25)\n"
        "  -l, --layout=L        runs | scattered | copies | churn | unique (default runs)\n"
        "  -p, --pool=N          distinct pool pages (default 4096)\n"
        "  -r, --run=N           run length in pages for runs/churn (default 256)\n"
        "  -c, --copies=N        copies for the copies layout (default 8)\n"
        "  -f, --churn=F         fraction of memory rewritten in churn (default 0.5)\n"
        "  -t, --hold=SECONDS    hold time after the write phase; 0 = until signalled (default 10)\n"
        "  -M, --mergeable       madvise(MADV_MERGEABLE) the mapping (for kernel KSM)\n"
        "  -S, --seed=N          content seed (default 1)\n"
        "  -X, --self-test-corrupt  flip one byte before verifying (must exit 2)\n"
        "SIGUSR1/SIGINT/SIGTERM end the hold early; the pages are then verified.\n");
    exit(1);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"size", required_argument, 0, 's'},   {"mix", required_argument, 0, 'm'},
        {"layout", required_argument, 0, 'l'}, {"pool", required_argument, 0, 'p'},
        {"run", required_argument, 0, 'r'},    {"copies", required_argument, 0, 'c'},
        {"churn", required_argument, 0, 'f'},  {"hold", required_argument, 0, 't'},
        {"mergeable", no_argument, 0, 'M'},    {"seed", required_argument, 0, 'S'},
        {"self-test-corrupt", no_argument, 0, 'X'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "s:m:l:p:r:c:f:t:MS:Xh", opts, NULL)) != -1) {
        switch (c) {
        case 's': cfg.size = parse_size(optarg); break;
        case 'm':
            if (sscanf(optarg, "%u,%u,%u", &cfg.zero_pct, &cfg.dup_pct, &cfg.uniq_pct) != 3 ||
                cfg.zero_pct + cfg.dup_pct + cfg.uniq_pct != 100) {
                fprintf(stderr, "workload: --mix wants Z,D,U summing to 100\n");
                exit(1);
            }
            break;
        case 'l': {
            int found = 0;
            for (unsigned k = 0; k < sizeof layout_names / sizeof *layout_names; k++)
                if (!strcmp(optarg, layout_names[k])) cfg.layout = (enum layout)k, found = 1;
            if (!found) usage();
            break;
        }
        case 'p': cfg.pool = strtoull(optarg, NULL, 0); break;
        case 'r': cfg.run = strtoull(optarg, NULL, 0); break;
        case 'c': cfg.copies = strtoull(optarg, NULL, 0); break;
        case 'f': cfg.churn_frac = atof(optarg); break;
        case 't': cfg.hold = atof(optarg); break;
        case 'M': cfg.mergeable = 1; break;
        case 'S': cfg.seed = strtoull(optarg, NULL, 0); break;
        case 'X': cfg.corrupt = 1; break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    cfg.pages = cfg.size / PAGE;
    cfg.size = cfg.pages * PAGE;
    if (!cfg.pages || !cfg.pool || !cfg.run || !cfg.copies || cfg.copies > cfg.pages ||
        cfg.churn_frac < 0 || cfg.churn_frac > 1 || cfg.hold < 0) {
        fprintf(stderr, "workload: bad parameters\n");
        exit(1);
    }
    if (cfg.layout == L_COPIES) {
        cfg.pool = cfg.pages / cfg.copies; /* the buffer is the pool */
    } else if (cfg.layout == L_RUNS) {
        cfg.nchunks = (cfg.pages + cfg.run - 1) / cfg.run;
        cfg.chunk_zero = cfg.nchunks * cfg.zero_pct / 100;
        cfg.chunk_dup = cfg.nchunks * cfg.dup_pct / 100;
        perm_init(cfg.nchunks);
    } else if (cfg.layout == L_SCATTERED) {
        perm_init(cfg.pages);
    } else if (cfg.layout == L_CHURN) {
        cfg.static_pages = (uint64_t)((double)cfg.pages * (1.0 - cfg.churn_frac));
        cfg.chunk_zero = 0;
        cfg.chunk_dup = ~0ull;
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    end_hold_on_signals();

    /* Dry pass: exact counts and ideal saving. */
    uint64_t nzero = 0, npool = 0, nuniq = 0, distinct = 0;
    uint64_t static_end = cfg.layout == L_CHURN ? cfg.static_pages : cfg.pages;
    unsigned char *seen = calloc((cfg.pool + 7) / 8, 1);
    if (!seen) { perror("calloc"); return 1; }
    for (uint64_t i = 0; i < static_end; i++) {
        struct desc d = page_desc(i);
        if (d.kind == K_ZERO) nzero++;
        else if (d.kind == K_UNIQUE) nuniq++;
        else {
            npool++;
            if (!(seen[d.id / 8] & (1u << (d.id % 8)))) {
                seen[d.id / 8] |= (unsigned char)(1u << (d.id % 8));
                distinct++;
            }
        }
    }
    free(seen);
    uint64_t ideal = nzero + npool - distinct;
    uint64_t churn_pages = cfg.pages - static_end;

    double t_map = now();
    uint64_t *mem = mmap(NULL, cfg.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    if (cfg.mergeable && madvise(mem, cfg.size, MADV_MERGEABLE)) {
        perror("madvise(MADV_MERGEABLE)");
        return 1;
    }
    printf("{\"event\":\"start\",\"pid\":%d,\"layout\":\"%s\",\"size_bytes\":%" PRIu64
           ",\"pages\":%" PRIu64 ",\"zero_pages\":%" PRIu64 ",\"dup_pages\":%" PRIu64
           ",\"unique_pages\":%" PRIu64 ",\"churn_pages\":%" PRIu64 ",\"pool\":%" PRIu64
           ",\"pool_pages_used\":%" PRIu64 ",\"run\":%" PRIu64 ",\"copies\":%" PRIu64
           ",\"mergeable\":%d,\"seed\":%" PRIu64 ",\"ideal_pages\":%" PRIu64
           ",\"ideal_bytes\":%" PRIu64 ",\"addr\":\"%p\"}\n",
           (int)getpid(), layout_names[cfg.layout], cfg.size, cfg.pages, nzero, npool, nuniq,
           churn_pages, cfg.pool, distinct, cfg.run, cfg.copies, cfg.mergeable, cfg.seed, ideal,
           ideal * PAGE, (void *)mem);

    /* Write phase. */
    double t0 = now();
    for (uint64_t i = 0; i < static_end; i++) fill_page(mem + i * WORDS, page_desc(i));
    for (uint64_t i = static_end; i < cfg.pages; i++)
        fill_page(mem + i * WORDS, (struct desc){K_POOL, churn_pool_id(i, 0)});
    double write_s = now() - t0;
    printf("{\"event\":\"ready\",\"write_s\":%.6f,\"write_mib_per_s\":%.1f,\"map_s\":%.6f}\n",
           write_s, (double)cfg.size / 1048576.0 / write_s, t0 - t_map);

    /* Hold (and churn). */
    double th = now(), deadline = cfg.hold > 0 ? th + cfg.hold : 1e300;
    uint64_t pass = 0, pos = 0, rewritten = 0;
    if (churn_pages) {
        /* Pages [static_end, static_end+pos) hold pass+1, the rest pass. */
        while (!stop_hold) {
            for (int k = 0; k < 64; k++) {
                uint64_t i = static_end + pos;
                fill_page(mem + i * WORDS, (struct desc){K_POOL, churn_pool_id(i, pass + 1)});
                rewritten++;
                if (++pos == churn_pages) pos = 0, pass++;
            }
            if (now() >= deadline) break;
        }
    } else {
        while (!stop_hold && now() < deadline) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    double hold_s = now() - th;

    if (cfg.corrupt) ((volatile unsigned char *)mem)[(cfg.pages / 2) * PAGE + 123] ^= 1;

    /* Verify every page. */
    double tv = now();
    uint64_t bad = 0;
    for (uint64_t i = 0; i < cfg.pages; i++) {
        struct desc d;
        if (i < static_end) d = page_desc(i);
        else d = (struct desc){K_POOL, churn_pool_id(i, (i - static_end) < pos ? pass + 1 : pass)};
        if (!check_page(mem + i * WORDS, d)) {
            if (bad < 10)
                fprintf(stderr, "workload: MISMATCH page %" PRIu64 " (addr %p, kind %d, id %" PRIu64 ")\n",
                        i, (void *)(mem + i * WORDS), (int)d.kind, d.id);
            bad++;
        }
    }
    double verify_s = now() - tv;
    printf("{\"event\":\"result\",\"verified_pages\":%" PRIu64 ",\"mismatches\":%" PRIu64
           ",\"hold_s\":%.3f,\"verify_s\":%.3f,\"churn_rewrites\":%" PRIu64
           ",\"churn_passes\":%" PRIu64 ",\"churn_mib_per_s\":%.1f,\"signalled\":%d}\n",
           cfg.pages, bad, hold_s, verify_s, rewritten, pass,
           hold_s > 0 ? (double)rewritten * PAGE / 1048576.0 / hold_s : 0.0, (int)stop_hold);
    if (bad) fprintf(stderr, "workload: %" PRIu64 " of %" PRIu64 " pages wrong\n", bad, cfg.pages);
    munmap(mem, cfg.size);
    return bad ? 2 : 0;
}
