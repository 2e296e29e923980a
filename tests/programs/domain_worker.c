/* A worker of a merge domain: holds a data set every worker holds, plus data
 * of its own, as N web or inference workers that each load the same model.
 *
 *   domain_worker [--shared-mib S] [--own-mib O] [--own-seed K] [--wait-ms T]
 *                 [--want F] [--write-after] [--hold] [--advise] [--shared-seed Z]
 *
 * The shared data is the same in every worker with the same Z (seeded by
 * page number and Z, default 0), the
 * own data differs (seeded by K). After filling both it prints ready=filled,
 * waits until a fraction F (default 0.95) of the shared pages map the
 * canonical store (pagemap file bit), up to T ms, and prints shared_merged
 * (pages) and merge_wait_ms (-1 if not reached). Then it checks every byte
 * (mismatches=), and with --write-after writes one byte into the first and
 * the last shared page and checks they read back while every other page is
 * unchanged (write_ok=). With --hold it prints ready=held and waits for a
 * line (or EOF) on stdin before checking its data again (final_mismatches=)
 * and exiting: a test measures the group's Pss meanwhile, and may kill
 * other members first. --advise marks both with MADV_MERGEABLE (for
 * DEDUP_SCOPE=advised).
 */
#include "dtest.h"

static uint64_t shared_seed;

static void fill_shared(unsigned char *p, size_t pages)
{
    for (size_t i = 0; i < pages; i++)
        dt_fill_random(p + i * DT_PAGE, DT_PAGE, shared_seed + i);
}

/* Mismatching bytes in shared pages [first, first + n). */
static size_t check_shared_pages(const unsigned char *p, size_t first, size_t n)
{
    size_t bad = 0;
    for (size_t i = first; i < first + n; i++)
        bad += dt_check_random(p + i * DT_PAGE, DT_PAGE, shared_seed + i);
    return bad;
}

static size_t check_shared(const unsigned char *p, size_t pages)
{
    return check_shared_pages(p, 0, pages);
}

int main(int argc, char **argv)
{
    size_t shared_len = (size_t)dt_arg_long(argc, argv, "--shared-mib", 64) << 20;
    size_t own_len = (size_t)dt_arg_long(argc, argv, "--own-mib", 4) << 20;
    long seed = dt_arg_long(argc, argv, "--own-seed", 1);
    double wait_ms = (double)dt_arg_long(argc, argv, "--wait-ms", 20000);
    double want = atof(dt_arg_str(argc, argv, "--want", "0.95"));
    size_t pages = shared_len / DT_PAGE;
    shared_seed = 0x5eed0000u + ((uint64_t)dt_arg_long(argc, argv, "--shared-seed", 0) << 32);

    unsigned char *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *own = mmap(NULL, own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || own == MAP_FAILED)
        dt_die("mmap");
    fill_shared(shared, pages);
    dt_fill_random(own, own_len, 0x0e0e0000u + (uint64_t)seed);
    if (dt_arg_flag(argc, argv, "--advise")) {
        madvise(shared, shared_len, MADV_MERGEABLE);
        madvise(own, own_len, MADV_MERGEABLE);
    }
    dt_out("ready", "filled");

    struct dt_range r = {shared, shared_len};
    double w = dt_wait_merged(&r, 1, want, wait_ms);
    dt_out("merge_wait_ms", "%.0f", w);
    dt_out("shared_merged", "%zu", dt_file_pages(shared, shared_len));
    size_t bad = check_shared(shared, pages) + dt_check_random(own, own_len, 0x0e0e0000u + (uint64_t)seed);
    dt_out("mismatches", "%zu", bad);

    if (dt_arg_flag(argc, argv, "--write-after")) {
        unsigned char first[DT_PAGE], last[DT_PAGE];
        dt_fill_random(first, DT_PAGE, shared_seed);
        dt_fill_random(last, DT_PAGE, shared_seed + pages - 1);
        shared[0] ^= 0xff;
        shared[shared_len - 1] ^= 0xff;
        size_t wrong = shared[0] != (unsigned char)(first[0] ^ 0xff);
        wrong += shared[shared_len - 1] != (unsigned char)(last[DT_PAGE - 1] ^ 0xff);
        wrong += memcmp(shared + 1, first + 1, DT_PAGE - 1) != 0;
        wrong += memcmp(shared + shared_len - DT_PAGE, last, DT_PAGE - 1) != 0;
        wrong += check_shared_pages(shared, 1, pages - 2);
        shared[0] ^= 0xff; /* back, so that the final check holds */
        shared[shared_len - 1] ^= 0xff;
        dt_out("write_ok", "%d", wrong == 0);
    }
    if (dt_arg_flag(argc, argv, "--hold")) {
        dt_out("pss_kb", "%ld", dt_rollup_pss_kb());
        dt_out("ready", "held");
        char line[16];
        if (!fgets(line, sizeof line, stdin)) { /* EOF: go on */ }
        size_t fb = check_shared(shared, pages) + dt_check_random(own, own_len, 0x0e0e0000u + (uint64_t)seed);
        dt_out("final_mismatches", "%zu", fb);
        bad += fb;
    }
    return bad ? 1 : 0;
}
