/* libdedup real-programs test: a small multi-file C program built by gcc
 * under the shim and then run under it. */
#ifndef CPROG_TABLE_H
#define CPROG_TABLE_H
#include <stddef.h>
#include <stdint.h>

struct table {
    size_t nbuf;
    size_t bufsize;
    unsigned char **buf;
};

uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h);
int table_init(struct table *t, size_t nbuf, size_t bufsize, uint32_t seed);
void table_touch(struct table *t, size_t every);
uint64_t table_checksum(const struct table *t);
size_t table_count_equal(const struct table *t);
void table_free(struct table *t);
#endif
