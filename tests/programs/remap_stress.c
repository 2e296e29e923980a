/* munmap / mremap / partial munmap of registered regions of duplicates while
 * the scanner runs (run it with DEDUP_SLEEP_MS=0). Up to 4 regions live at a
 * time; each has an expected image in unregistered shared memory and is
 * verified after every operation. Must never crash nor lose a byte.
 *
 *   remap_stress [--ms T] [--seed S]
 */
#include "dtest.h"

#define SLOTS 4
#define MAXLEN (4UL << 20)

struct slot {
    unsigned char *p;
    size_t len;
    unsigned char *ex; /* expected image, MAXLEN bytes */
};

static uint64_t rng = 88172645463325252ULL;
static size_t rnd(size_t n) { return (size_t)(dt_rng_next(&rng) % n); }

static void fill_dups(unsigned char *p, unsigned char *ex, size_t len)
{
    for (size_t off = 0; off < len; off += DT_PAGE) {
        size_t k = rnd(8);
        if (k == 7) { /* unique page */
            dt_fill_random(p + off, DT_PAGE, dt_rng_next(&rng));
        } else {
            memset(p + off, 0x40 + (int)k, DT_PAGE);
        }
        memcpy(ex + off, p + off, DT_PAGE);
    }
}

static size_t verify(struct slot *s, const char *when)
{
    size_t bad = dt_count_diff(s->p, s->ex, s->len);
    if (bad)
        dt_fail("%zu bytes wrong in a %zu-byte region after %s", bad, s->len, when);
    return bad;
}

int main(int argc, char **argv)
{
    double ms = (double)dt_arg_long(argc, argv, "--ms", 3000);
    rng ^= (uint64_t)dt_arg_long(argc, argv, "--seed", 1) * 0x9E3779B97F4A7C15ULL;
    struct slot s[SLOTS];
    for (int i = 0; i < SLOTS; i++) {
        s[i].p = NULL;
        s[i].len = 0;
        s[i].ex = dt_scratch(MAXLEN);
    }
    size_t bad = 0, ops = 0, maps = 0, unmaps = 0, partial = 0, grows = 0, shrinks = 0,
           moves = 0, shared_max = 0;
    double t0 = dt_now_ms();
    while (dt_now_ms() - t0 < ms) {
        struct slot *sl = &s[rnd(SLOTS)];
        ops++;
        if (!sl->p) {
            sl->len = (64 + rnd(449)) * DT_PAGE; /* 256 KiB .. 2 MiB */
            sl->p = mmap(NULL, sl->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (sl->p == MAP_FAILED)
                dt_die("mmap");
            fill_dups(sl->p, sl->ex, sl->len);
            maps++;
            continue;
        }
        size_t sh = dt_file_pages(sl->p, sl->len);
        if (sh > shared_max)
            shared_max = sh;
        switch (rnd(8)) {
        case 0: /* munmap all */
            bad += verify(sl, "nothing (before munmap)");
            if (munmap(sl->p, sl->len))
                dt_die("munmap");
            sl->p = NULL;
            unmaps++;
            break;
        case 1: { /* munmap the tail */
            if (sl->len < 2 * DT_PAGE)
                break;
            size_t keep = (1 + rnd(sl->len / DT_PAGE - 1)) * DT_PAGE;
            if (munmap(sl->p + keep, sl->len - keep))
                dt_die("munmap tail");
            sl->len = keep;
            bad += verify(sl, "munmap of the tail");
            partial++;
            break;
        }
        case 2: { /* mremap grow, may move */
            size_t nl = sl->len * 2 > MAXLEN ? MAXLEN : sl->len * 2;
            if (nl == sl->len)
                break;
            unsigned char *np = mremap(sl->p, sl->len, nl, MREMAP_MAYMOVE);
            if (np == MAP_FAILED)
                dt_die("mremap grow");
            memset(sl->ex + sl->len, 0, nl - sl->len);
            size_t old = sl->len;
            sl->p = np;
            sl->len = nl;
            bad += verify(sl, "mremap grow");
            fill_dups(sl->p + old, sl->ex + old, nl - old);
            grows++;
            break;
        }
        case 3: { /* mremap shrink */
            if (sl->len < 2 * DT_PAGE)
                break;
            size_t nl = (1 + rnd(sl->len / DT_PAGE - 1)) * DT_PAGE;
            unsigned char *np = mremap(sl->p, sl->len, nl, 0);
            if (np == MAP_FAILED)
                dt_die("mremap shrink");
            sl->p = np;
            sl->len = nl;
            bad += verify(sl, "mremap shrink");
            shrinks++;
            break;
        }
        case 4: { /* mremap to a fixed new place */
            unsigned char *dst = mmap(NULL, sl->len, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (dst == MAP_FAILED)
                dt_die("mmap dst");
            unsigned char *np = mremap(sl->p, sl->len, sl->len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
            if (np == MAP_FAILED)
                dt_die("mremap fixed");
            sl->p = np;
            bad += verify(sl, "mremap to a fixed address");
            moves++;
            break;
        }
        case 5: { /* pokes */
            for (int k = 0; k < 16; k++) {
                size_t off = rnd(sl->len);
                unsigned char v = (unsigned char)rnd(256);
                sl->p[off] = v;
                sl->ex[off] = v;
            }
            break;
        }
        default: /* let the scanner work, then verify */
            dt_sleep_ms((double)rnd(8));
            bad += verify(sl, "a pause");
            break;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (s[i].p) {
            bad += verify(&s[i], "the run (final check)");
            munmap(s[i].p, s[i].len);
        }
    dt_out("ops", "%zu", ops);
    dt_out("maps", "%zu", maps);
    dt_out("unmaps", "%zu", unmaps);
    dt_out("partial_unmaps", "%zu", partial);
    dt_out("grows", "%zu", grows);
    dt_out("shrinks", "%zu", shrinks);
    dt_out("moves", "%zu", moves);
    dt_out("shared_pages_max", "%zu", shared_max);
    dt_out("mismatches", "%zu", bad);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
