// Large zero-initialised tables are placed in .lbss, which the linker lays out
// after .bss. The few small globals every process touches at start-up then
// share one or two pages instead of being spread between the tables: each
// page touched is a page fault (about 2 µs on these machines) paid by every
// process the shim is preloaded into, shells and compilers included.
// Only for zero-initialised objects (a non-zero initialiser fails to assemble).
#pragma once

#define DEDUP_LARGE_BSS __attribute__((section(".lbss")))
