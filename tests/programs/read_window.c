/* Kernel writes against the scanner's write-protect windows.
 *
 *   read_window [--ms T] [--threads N] [--pages P]
 *
 * A registered region of P pages (a multiple of 16) holds copies of a 16-page pattern (so the
 * scanner merges it over and over). N threads read(2)/pread(2)/readv(2)/recv/fread/syscall(SYS_pread64)
 * the same pattern from a file and a socketpair into random runs of the
 * region for T ms: the kernel writes into pages the scanner keeps merging.
 * Without the shim's pinning such a call can land in a write-protect window
 * and fail with EFAULT. Prints efaults=<n> and mismatches=<n>; exits 1 if
 * either is nonzero.
 */
#include "dtest.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define PATTERN_PAGES 16
static unsigned char *region;
static size_t npages;
static int file_fd;
static atomic_int stop;
static atomic_ulong efaults, mismatches, calls, shared_seen;

static unsigned char byte_at(size_t page, size_t off) { return (unsigned char)((page % PATTERN_PAGES) * 31 + off * 7); }

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); exit(2); }
    unsigned char *src = mmap(NULL, PATTERN_PAGES * DT_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (size_t p = 0; p < PATTERN_PAGES; p++)
        for (size_t o = 0; o < DT_PAGE; o++) src[p * DT_PAGE + o] = byte_at(p, o);
    int pmfd = open("/proc/self/pagemap", O_RDONLY);
    /* Unbuffered stdio: fread reads straight into dst with glibc's internal
     * read, which only an fread wrapper can see. */
    char fpath[64];
    snprintf(fpath, sizeof fpath, "/proc/self/fd/%d", file_fd);
    FILE *fp = fopen(fpath, "r");  /* its own file offset, unlike a dup */
    if (!fp) { perror("fdopen"); exit(2); }
    setvbuf(fp, NULL, _IONBF, 0);
    while (!atomic_load(&stop)) {
        size_t run = 1 + rand_r(&seed) % 4;
        size_t first = (rand_r(&seed) % (npages / PATTERN_PAGES)) * PATTERN_PAGES + rand_r(&seed) % (PATTERN_PAGES - run);
        unsigned char *dst = region + first * DT_PAGE;
        size_t len = run * DT_PAGE;
        off_t off = (off_t)(first % PATTERN_PAGES) * DT_PAGE;
        uint64_t pm = 0;
        if (pmfd >= 0 && pread(pmfd, &pm, 8, (off_t)((uintptr_t)dst / DT_PAGE * 8)) == 8 && (pm & PM_FILE))
            atomic_fetch_add(&shared_seen, 1);
        ssize_t r;
        int kind = rand_r(&seed) % 6;
        if (kind == 0) {
            r = pread(file_fd, dst, len, off);
        } else if (kind == 5) {
            /* glibc's generic syscall(): only a syscall() wrapper can see it */
            r = syscall(SYS_pread64, file_fd, dst, len, off);
        } else if (kind == 4) {
            if (fseeko(fp, off, SEEK_SET) != 0) { perror("fseeko"); exit(2); }
            errno = 0;
            size_t n = fread(dst, 1, len, fp);
            r = (ssize_t)n;
            if (n < len) {
                r = -1;
                if (!errno) errno = EIO;
                clearerr(fp);
            }
        } else if (kind == 1) {
            struct iovec iov[2] = {{dst, DT_PAGE}, {dst + DT_PAGE, len - DT_PAGE}};
            r = preadv(file_fd, iov, run > 1 ? 2 : 1, off);
        } else {
            /* through a socket: the data is consumed even when the copy fails */
            if (write(sv[1], src + (first % PATTERN_PAGES) * DT_PAGE, len) != (ssize_t)len) { perror("write"); exit(2); }
            size_t got = 0;
            r = 0;
            while (got < len) {
                ssize_t n = kind == 2 ? read(sv[0], dst + got, len - got) : recv(sv[0], dst + got, len - got, 0);
                if (n < 0) { r = n; break; }
                got += (size_t)n;
                r = (ssize_t)got;
            }
            if (r < 0 && errno == EFAULT) {
                /* drain what is left so the next round starts clean */
                char tmp[4 * 4096];
                while (got < len) { ssize_t n = read(sv[0], tmp, len - got < sizeof tmp ? len - got : sizeof tmp); if (n <= 0) break; got += (size_t)n; }
            }
        }
        atomic_fetch_add(&calls, 1);
        if (r < 0) {
            if (errno == EFAULT) atomic_fetch_add(&efaults, 1);
            else { perror("read"); exit(2); }
        }
        for (size_t p = 0; p < run; p++)
            for (size_t o = 0; o < DT_PAGE; o += 509)
                if (dst[p * DT_PAGE + o] != byte_at(first + p, o)) { atomic_fetch_add(&mismatches, 1); break; }
    }
    close(sv[0]);
    close(sv[1]);
    fclose(fp);
    return NULL;
}

int main(int argc, char **argv)
{
    long ms = 3000, threads = 3, pages = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--ms")) ms = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--pages")) pages = atol(argv[i + 1]);
    }
    npages = (size_t)(pages < 32 ? 32 : pages) / PATTERN_PAGES * PATTERN_PAGES;
    region = mmap(NULL, npages * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { perror("mmap"); return 2; }
    for (size_t p = 0; p < npages; p++)
        for (size_t o = 0; o < DT_PAGE; o++) region[p * DT_PAGE + o] = byte_at(p, o);
    char path[] = "/tmp/read_window-XXXXXX";
    file_fd = mkstemp(path);
    if (file_fd < 0) { perror("mkstemp"); return 2; }
    unlink(path);
    for (size_t p = 0; p < PATTERN_PAGES; p++) {
        unsigned char page[DT_PAGE];
        for (size_t o = 0; o < DT_PAGE; o++) page[o] = byte_at(p, o);
        if (write(file_fd, page, DT_PAGE) != DT_PAGE) { perror("write"); return 2; }
    }
    usleep(300 * 1000); /* let the scanner merge the copies first */
    pthread_t t[16];
    if (threads > 16) threads = 16;
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    usleep((useconds_t)ms * 1000);
    atomic_store(&stop, 1);
    for (long i = 0; i < threads; i++) pthread_join(t[i], NULL);
    dt_out("calls", "%lu", atomic_load(&calls));
    dt_out("shared_seen", "%lu", atomic_load(&shared_seen));
    dt_out("efaults", "%lu", atomic_load(&efaults));
    dt_out("mismatches", "%lu", atomic_load(&mismatches));
    return atomic_load(&efaults) || atomic_load(&mismatches) ? 1 : 0;
}
