/* read(2) into a merged region while a store rotation unmerges it.
 *
 *   hostile_rotation_read [--rounds N] [--pages P] [--threads K] [--wait-ms T]
 *                         [--no-fork]
 *
 * Each round:
 *   1. A and B, P pages each, hold the same distinct pages: the shim merges
 *      them pairwise onto P canonical slots (long memfd pieces).
 *   2. fork; the child exits at once. Every slot that exists is now kept
 *      for the child (scanner/rotation.cpp).
 *   3. K reader threads start to pread(2)/read(2) random runs of A from a
 *      file holding A's final content F (the bytes the program then writes;
 *      a read never changes what A holds).
 *   4. The program writes F over A (copy-on-write: A's pages become private
 *      copies inside the old memfd pieces) and unmaps B. Now no page maps
 *      the P slots, they are kept only for the child, and a rotation is due.
 *      Its last step makes the old file's pieces left in memory ("leftover"
 *      VMAs: all of A) anonymous with unmerge_range, which write-protects
 *      each piece while it copies it, with no regard for syscalls writing
 *      into it. A read(2) meanwhile fails with EFAULT or returns short.
 *   5. Wait (at most T ms) until A holds no memfd piece, read 200 ms more,
 *      stop the readers, check every byte of A.
 *
 * --no-fork: no fork, so no rotation (an attribution check: the same
 * readers, writes and unmap, and the scanner's merges alone).
 *
 * Prints reads, efaults, short_reads, read_errors, mismatches,
 * merged_rounds (rounds in which A was merged before the fork),
 * rotated_rounds (rounds in which A's memfd pieces went away while the
 * readers ran), final_bad_bytes; exits 1 if a kernel write failed or a byte
 * differs.
 */
#include "hostile.h"

int main(int argc, char **argv)
{
    long rounds = dt_arg_long(argc, argv, "--rounds", 3);
    long pages = dt_arg_long(argc, argv, "--pages", 2048);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long wait_ms = dt_arg_long(argc, argv, "--wait-ms", 5000);
    int no_fork = dt_arg_flag(argc, argv, "--no-fork");
    size_t np = (size_t)(pages < 512 ? 512 : pages);
    size_t len = np * DT_PAGE;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);

    unsigned char *final = (unsigned char *)dt_scratch(len);
    static struct h_readers rd;
    unsigned long tot[5] = {0};
    long merged_rounds = 0, rotated_rounds = 0;
    size_t bad_total = 0;
    for (long round = 0; round < rounds; round++) {
        unsigned char *a = h_map(np), *b = h_map(np);
        for (size_t i = 0; i < np; i++) {
            dt_fill_random(a + i * DT_PAGE, DT_PAGE, (uint64_t)(round * 1000003 + (long)i + 1));
            dt_fill_random(final + i * DT_PAGE, DT_PAGE, (uint64_t)(round * 1000003 + (long)i + 1) ^ 0xF1F1F1F1ULL);
        }
        memcpy(b, a, len);
        int fd = h_file_from(final, len);
        if (shim) {
            int ok = h_wait_file_vmas(a, len, len * 95 / 100, 15000) && h_wait_file_vmas(b, len, len * 95 / 100, 15000);
            merged_rounds += ok;
            if (!ok)
                fprintf(stderr, "round %ld: A/B not merged in time (%zu, %zu bytes in memfd pieces)\n", round,
                        h_file_vma_bytes(a, len), h_file_vma_bytes(b, len));
        }

        fflush(stdout);
        pid_t pid = no_fork ? 0 : fork();
        if (pid < 0)
            dt_die("fork");
        if (pid == 0 && !no_fork)
            _exit(0);
        int st;
        while (!no_fork && waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }

        memset(&rd, 0, sizeof rd);
        rd.base = a;
        rd.pages = np;
        rd.max_run = 4;
        rd.fd = fd;
        rd.expect = final;
        rd.kinds = H_READ_PREAD | H_READ_READ;
        rd.nthreads = (int)threads;
        h_readers_start(&rd);

        memcpy(a, final, len);
        if (munmap(b, len) != 0)
            dt_die("munmap B");

        int rotated = 0;
        double t0 = dt_now_ms();
        while (shim && dt_now_ms() - t0 < (no_fork ? 1000 : wait_ms)) {
            if (h_file_vma_bytes(a, len) == 0) {
                rotated = 1;
                break;
            }
            dt_sleep_ms(10);
        }
        rotated_rounds += rotated;
        fprintf(stderr, "round %ld: A's memfd pieces %s after %.0f ms\n", round, rotated ? "gone" : "still there",
                dt_now_ms() - t0);
        dt_sleep_ms(200);
        h_readers_stop(&rd);
        size_t bad = dt_count_diff(a, final, len);
        bad_total += bad;
        tot[0] += atomic_load(&rd.calls);
        tot[1] += atomic_load(&rd.efaults);
        tot[2] += atomic_load(&rd.shorts);
        tot[3] += atomic_load(&rd.errors);
        tot[4] += atomic_load(&rd.mismatches);
        fprintf(stderr, "round %ld: reads %lu efaults %lu short %lu bad bytes %zu\n", round,
                atomic_load(&rd.calls), atomic_load(&rd.efaults), atomic_load(&rd.shorts), bad);
        close(fd);
        if (munmap(a, len) != 0)
            dt_die("munmap A");
    }
    dt_out("reads", "%lu", tot[0]);
    dt_out("efaults", "%lu", tot[1]);
    dt_out("short_reads", "%lu", tot[2]);
    dt_out("read_errors", "%lu", tot[3]);
    dt_out("mismatches", "%lu", tot[4]);
    dt_out("merged_rounds", "%ld", merged_rounds);
    dt_out("rotated_rounds", "%ld", rotated_rounds);
    dt_out("final_bad_bytes", "%zu", bad_total);
    return tot[1] || tot[2] || tot[3] || tot[4] || bad_total ? 1 : 0;
}
