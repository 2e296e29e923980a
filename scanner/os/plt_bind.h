// Binding the library's own imports, once the runtime starts.
//
// The library is linked for lazy binding (-z lazy): ld.so binds an import
// (memcpy, pthread_create, ...) on its first call instead of all of them at
// load. A process that never starts the runtime (DEDUP_DISABLE=1, a
// set-user-ID program) then binds only the few it calls: binding the ~75
// imports at load was ~1% of a `bash -c true`, paid by every process of an
// environment that preloads the shim.
//
// A process that starts the runtime binds them all at once, before it
// installs the fault handler, opens a write window or starts the scanner
// thread (lifecycle.cpp, init_now): from then on no code of the shim enters
// ld.so's lazy resolver, which saves the vector registers on the stack
// (~3 KiB with AVX-512): the fault handler may run on the program's small
// alternate signal stack.
#pragma once
#include <stddef.h>

namespace dedup {

struct PltImport {
    const char* name;
    const char* version;  // "GLIBC_2.34", or nullptr for an unversioned reference
    void** slot;          // the GOT entry the PLT jumps through
};

// Calls fn for every lazily bound import (R_X86_64_JUMP_SLOT relocation) of
// the object this code is linked into: the library, or a test binary that
// links the scanner. Returns how many, or -1 if the object or its dynamic
// section was not found.
int plt_imports_for_each(void (*fn)(const PltImport&, void*), void* ctx);

// Binds every import now, to what ld.so's resolver would have bound it to:
// the definition dlvsym finds in this object's scope (RTLD_DEFAULT from
// here) at the referenced version. Returns the number of imports that found
// no definition (left to the lazy resolver, which fails the same way), or
// -1 if the imports could not be read.
int plt_bind_all();

}  // namespace dedup
