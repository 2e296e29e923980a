/*
 * domain_member — one member of the benchmark's merge-domain group.
 *
 * N independent processes (each started on its own, not forked from one
 * another) hold the same SHARED data set plus OWN data that differs per
 * member, as N workers that each load one model do.  Run side by side under
 * kernel KSM (-M) or libdedup with DEDUP_DOMAIN, the group's ideal saving is
 * (N - 1) x SHARED.
 *
 *   domain_member -s SHARED -o OWN -k OWN_SEED [-t HOLD] [-M]
 *
 * The shared pages depend only on the page number (every member writes the
 * same bytes); the own pages on OWN_SEED and the page number.  No page is
 * zero and no two pages within one member are equal, so a member alone has
 * nothing to save.  Two mappings, as a program holding a model and its own
 * state would have.
 *
 * Output, one JSON object per line on stdout (the protocol of workload.c):
 *   {"event":"start",...}   after mmap (and madvise), before the write phase
 *   {"event":"ready",...}   after the write phase (write_s)
 *   {"event":"result",...}  after every page was checked (mismatches)
 * Exit status: 0 = all pages verified, 2 = mismatch, 1 = usage/system error.
 * The hold (-t SECONDS) ends early on SIGUSR1, SIGINT or SIGTERM; -t 0 holds
 * until signalled.
 */
#define _GNU_SOURCE
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

/* Page i of the data set named by key: distinct for every (key, i). */
static void fill(uint64_t *p, uint64_t pages, uint64_t key)
{
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t k = mix64(key ^ mix64(i));
        for (unsigned w = 0; w < WORDS; w++) p[i * WORDS + w] = mix64(k + w);
    }
}

static uint64_t check(const uint64_t *p, uint64_t pages, uint64_t key, const char *what)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t k = mix64(key ^ mix64(i));
        for (unsigned w = 0; w < WORDS; w++) {
            if (p[i * WORDS + w] != mix64(k + w)) {
                if (bad < 10)
                    fprintf(stderr, "domain_member: MISMATCH %s page %" PRIu64 "\n", what, i);
                bad++;
                break;
            }
        }
    }
    return bad;
}

static uint64_t mib_arg(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || !v) {
        fprintf(stderr, "domain_member: bad size '%s' (MiB, at least 1)\n", s);
        exit(1);
    }
    return (uint64_t)v << 20;
}

int main(int argc, char **argv)
{
    uint64_t shared_len = 256ull << 20, own_len = 16ull << 20, own_seed = 1;
    double hold = 10.0;
    int mergeable = 0, c;
    while ((c = getopt(argc, argv, "s:o:k:t:M")) != -1) {
        switch (c) {
        case 's': shared_len = mib_arg(optarg); break;
        case 'o': own_len = mib_arg(optarg); break;
        case 'k': own_seed = strtoull(optarg, NULL, 0); break;
        case 't': hold = atof(optarg); break;
        case 'M': mergeable = 1; break;
        default:
            fprintf(stderr, "usage: domain_member [-s SHARED_MIB] [-o OWN_MIB] [-k OWN_SEED] "
                            "[-t HOLD_S] [-M]\n");
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    end_hold_on_signals();

    const uint64_t shared_key = 0x5ead0000ull, own_key = 0x0e0e000000000000ull + own_seed;
    uint64_t shared_pages = shared_len / PAGE, own_pages = own_len / PAGE;
    uint64_t *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *own = mmap(NULL, own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || own == MAP_FAILED) { perror("mmap"); return 1; }
    if (mergeable && (madvise(shared, shared_len, MADV_MERGEABLE) || madvise(own, own_len, MADV_MERGEABLE))) {
        perror("madvise(MADV_MERGEABLE)");
        return 1;
    }
    printf("{\"event\":\"start\",\"pid\":%d,\"shared_bytes\":%" PRIu64 ",\"own_bytes\":%" PRIu64
           ",\"own_seed\":%" PRIu64 ",\"mergeable\":%d}\n",
           (int)getpid(), shared_len, own_len, own_seed, mergeable);

    double t0 = now();
    fill(shared, shared_pages, shared_key);
    fill(own, own_pages, own_key);
    double write_s = now() - t0;
    printf("{\"event\":\"ready\",\"write_s\":%.6f}\n", write_s);

    double th = now(), deadline = hold > 0 ? th + hold : 1e300;
    while (!stop_hold && now() < deadline) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    double hold_s = now() - th;

    double tv = now();
    uint64_t bad = check(shared, shared_pages, shared_key, "shared") + check(own, own_pages, own_key, "own");
    printf("{\"event\":\"result\",\"verified_pages\":%" PRIu64 ",\"mismatches\":%" PRIu64
           ",\"hold_s\":%.3f,\"verify_s\":%.3f,\"signalled\":%d}\n",
           shared_pages + own_pages, bad, hold_s, now() - tv, (int)stop_hold);
    munmap(shared, shared_len);
    munmap(own, own_len);
    return bad ? 2 : 0;
}
