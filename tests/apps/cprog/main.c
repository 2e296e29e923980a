#include "table.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    size_t nbuf = argc > 1 ? strtoul(argv[1], 0, 10) : 32;
    size_t kib = argc > 2 ? strtoul(argv[2], 0, 10) : 1024;
    struct table t;
    if (table_init(&t, nbuf, kib * 1024, 2463534242u) != 0) {
        fprintf(stderr, "cprog: out of memory\n");
        return 2;
    }
    struct timespec ts = { 1, 500000000 };    /* let the scanner merge */
    nanosleep(&ts, 0);
    uint64_t before = table_checksum(&t);
    size_t eq_before = table_count_equal(&t);
    table_touch(&t, 4);
    nanosleep(&ts, 0);
    uint64_t after = table_checksum(&t);
    size_t eq_after = table_count_equal(&t);
    printf("cprog: buffers=%zu kib=%zu equal_before=%zu equal_after=%zu "
           "checksum_before=%016" PRIx64 " checksum_after=%016" PRIx64 "\n",
           nbuf, kib, eq_before, eq_after, before, after);
    table_free(&t);
    return eq_before == nbuf - 1 ? 0 : 1;
}
