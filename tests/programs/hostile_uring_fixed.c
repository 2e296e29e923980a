/* io_uring READ_FIXED into a registered buffer the shim merges.
 *
 *   hostile_uring_fixed [--reg buffers|buffers2|update] [--iters N] [--pages P]
 *
 * Registering a buffer (IORING_REGISTER_BUFFERS, IORING_REGISTER_BUFFERS2,
 * or a sparse table filled by IORING_REGISTER_BUFFERS_UPDATE) pins its
 * pages for the long term: IORING_OP_READ_FIXED writes into those physical
 * pages, whatever the virtual addresses map later. If the shim remaps the
 * buffer's pages onto canonical pages after the registration, the read
 * succeeds, and the program never sees its bytes: silent data loss.
 *
 * Each iteration:
 *   R = [A | C] (2 * P pages) and T (P pages) hold the same fresh content X;
 *   A is registered as buffer 0; the program waits until C is merged (the
 *   scanner went over R since the registration) and a little more;
 *   READ_FIXED reads P pages of new content Y from a file into A;
 *   A must now hold Y; A's buffer is unregistered.
 * C and T make sure that merging happened around A in every iteration even
 * with a library that (correctly) leaves registered buffers alone.
 *
 * Registering itself pins the pages for writing: if a page is write-protected
 * by a scanner window at that moment, io_uring_register fails with EFAULT
 * (counted in register_efaults, and retried).
 *
 * Prints iterations, c_merged_iters (C merged before the read), a_remapped
 * (pages of A found in memfd pieces just before the read), cqe_errors,
 * short_reads, lost_pages (pages of A not holding Y after a successful
 * read), lost_bytes; exits 1 if any read failed or lost bytes.
 */
#include "hostile.h"
#include "hostile_uring.h"

#include <sys/uio.h>

#ifndef IORING_RSRC_REGISTER_SPARSE
#define IORING_RSRC_REGISTER_SPARSE (1U << 0)
#endif

static int reg_buffer(struct h_ring *r, const char *how, struct iovec *iov)
{
    uint64_t tag = 0;
    if (!strcmp(how, "buffers"))
        return (int)h_ring_register(r, IORING_REGISTER_BUFFERS, iov, 1);
    if (!strcmp(how, "buffers2")) {
        struct io_uring_rsrc_register rr;
        memset(&rr, 0, sizeof rr);
        rr.nr = 1;
        rr.data = (uint64_t)(uintptr_t)iov;
        rr.tags = (uint64_t)(uintptr_t)&tag;
        return (int)h_ring_register(r, IORING_REGISTER_BUFFERS2, &rr, sizeof rr);
    }
    if (!strcmp(how, "update")) {
        struct io_uring_rsrc_register rr;
        memset(&rr, 0, sizeof rr);
        rr.nr = 1;
        rr.flags = IORING_RSRC_REGISTER_SPARSE;
        if (h_ring_register(r, IORING_REGISTER_BUFFERS2, &rr, sizeof rr) != 0)
            return -1;
        struct io_uring_rsrc_update2 up;
        memset(&up, 0, sizeof up);
        up.offset = 0;
        up.nr = 1;
        up.data = (uint64_t)(uintptr_t)iov;
        up.tags = (uint64_t)(uintptr_t)&tag;
        long n = h_ring_register(r, IORING_REGISTER_BUFFERS_UPDATE, &up, sizeof up);
        return n == 1 ? 0 : -1;
    }
    errno = EINVAL;
    return -1;
}

int main(int argc, char **argv)
{
    const char *how = dt_arg_str(argc, argv, "--reg", "buffers");
    long iters = dt_arg_long(argc, argv, "--iters", 8);
    long pages = dt_arg_long(argc, argv, "--pages", 32);
    size_t np = (size_t)(pages < 16 ? 16 : pages);
    size_t len = np * DT_PAGE;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    dt_out("reg", "%s", how);

    h_ring_probe_or_exit();
    struct h_ring ring;
    if (h_ring_init(&ring, 8) != 0)
        dt_die("io_uring_setup");
    unsigned char *r = h_map(2 * np), *t = h_map(np);
    unsigned char *a = r, *c = r + len;
    unsigned char *want = (unsigned char *)dt_scratch(len);

    long reg_efaults = 0, c_merged = 0, a_remapped = 0, cqe_errors = 0, shorts = 0, lost_pages = 0;
    size_t lost_bytes = 0;
    for (long it = 0; it < iters; it++) {
        for (size_t i = 0; i < np; i++)
            dt_fill_random(a + i * DT_PAGE, DT_PAGE, (uint64_t)(it * 7777 + (long)i + 1));
        memcpy(c, a, len);
        memcpy(t, a, len);
        for (size_t i = 0; i < np; i++)
            dt_fill_random(want + i * DT_PAGE, DT_PAGE, (uint64_t)(it * 7777 + (long)i + 1) ^ 0xABCDEFULL);
        int fd = h_file_from(want, len);

        struct iovec iov = {a, len};
        int tries = 0;
        while (reg_buffer(&ring, how, &iov) != 0) {
            /* Pinning the pages for writing fails (EFAULT) if a page is
             * write-protected at that moment: a scanner window. */
            if (errno != EFAULT || ++tries > 1000) {
                fprintf(stderr, "register (%s): %s (A has %zu bytes in memfd pieces, %ld VMAs)\n", how,
                        strerror(errno), h_file_vma_bytes(a, len), h_vmas_in(a, len));
                return 2;
            }
            reg_efaults++;
            if (!strcmp(how, "update"))
                h_ring_register(&ring, IORING_UNREGISTER_BUFFERS, NULL, 0); /* the sparse table stayed */
            dt_sleep_ms(1);
        }
        if (shim) {
            int ok = h_wait_file_vmas(c, len, len, 3000);
            c_merged += ok;
            dt_sleep_ms(30); /* a few more passes over A */
        }
        a_remapped += (long)(h_file_vma_bytes(a, len) / DT_PAGE);

        h_ring_queue_read(&ring, fd, a, (unsigned)len, 0, 0, 1);
        if (h_ring_submit_wait(&ring, 1) < 0)
            dt_die("io_uring_enter");
        struct io_uring_cqe cqe;
        while (!h_ring_reap(&ring, &cqe))
            if (h_ring_submit_wait(&ring, 0) < 0)
                dt_die("io_uring_enter wait");
        if (cqe.res < 0) {
            cqe_errors++;
            fprintf(stderr, "iteration %ld: READ_FIXED: %s\n", it, strerror(-cqe.res));
        } else if ((size_t)cqe.res < len) {
            shorts++;
        } else {
            long lp = 0;
            for (size_t i = 0; i < np; i++)
                if (memcmp(a + i * DT_PAGE, want + i * DT_PAGE, DT_PAGE) != 0)
                    lp++;
            size_t lb = dt_count_diff(a, want, len);
            if (lp)
                fprintf(stderr, "iteration %ld: %ld of %zu pages of the buffer do not hold what READ_FIXED read\n", it,
                        lp, np);
            lost_pages += lp;
            lost_bytes += lb;
        }
        if (h_ring_register(&ring, IORING_UNREGISTER_BUFFERS, NULL, 0) != 0)
            dt_die("IORING_UNREGISTER_BUFFERS");
        close(fd);
    }
    dt_out("iterations", "%ld", iters);
    dt_out("c_merged_iters", "%ld", c_merged);
    dt_out("a_remapped", "%ld", a_remapped);
    dt_out("register_efaults", "%ld", reg_efaults);
    dt_out("cqe_errors", "%ld", cqe_errors);
    dt_out("short_reads", "%ld", shorts);
    dt_out("lost_pages", "%ld", lost_pages);
    dt_out("lost_bytes", "%zu", lost_bytes);
    return cqe_errors || shorts || lost_pages || reg_efaults ? 1 : 0;
}
