// The loaded object this code is linked into: the library, or a test binary
// that links the scanner. Its extent tells allocation sites which frames
// are the shim's own (sites.cpp); its dynamic section lists the imports to
// bind when the runtime activates (plt_bind.cpp).
#pragma once
#include <link.h>
#include <stdint.h>

namespace dedup {

struct SelfObject {
    ElfW(Addr) base = 0;                 // load address (dlpi_addr)
    uintptr_t end = 0;                   // end of its highest loaded segment
    const ElfW(Dyn)* dynamic = nullptr;  // its PT_DYNAMIC, if it has one
};

// False if no loaded object contains this code (never, in practice).
bool self_object(SelfObject* out);

}  // namespace dedup
