#include "table.h"
#include <stdlib.h>
#include <string.h>

/* One pseudo-random buffer, copied nbuf times (the duplicates). */
int table_init(struct table *t, size_t nbuf, size_t bufsize, uint32_t seed)
{
    t->nbuf = nbuf;
    t->bufsize = bufsize;
    t->buf = calloc(nbuf, sizeof *t->buf);
    if (!t->buf)
        return -1;
    uint32_t x = seed;
    for (size_t i = 0; i < nbuf; i++) {
        t->buf[i] = malloc(bufsize);
        if (!t->buf[i])
            return -1;
        if (i == 0) {
            for (size_t j = 0; j < bufsize; j++) {
                x ^= x << 13; x ^= x >> 17; x ^= x << 5;
                t->buf[0][j] = (unsigned char)x;
            }
        } else {
            memcpy(t->buf[i], t->buf[0], bufsize);
        }
    }
    return 0;
}

/* Write one byte per page into every `every`-th copy (copy-on-write). */
void table_touch(struct table *t, size_t every)
{
    for (size_t i = every; i < t->nbuf; i += every)
        for (size_t j = 0; j < t->bufsize; j += 4096)
            t->buf[i][j] ^= 0x5a;
}

uint64_t table_checksum(const struct table *t)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < t->nbuf; i++)
        h = fnv1a(t->buf[i], t->bufsize, h);
    return h;
}

size_t table_count_equal(const struct table *t)
{
    size_t n = 0;
    for (size_t i = 1; i < t->nbuf; i++)
        n += memcmp(t->buf[i], t->buf[0], t->bufsize) == 0;
    return n;
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nbuf; i++)
        free(t->buf[i]);
    free(t->buf);
}
