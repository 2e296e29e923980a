#include "scanner/os/self_object.h"

namespace dedup {
namespace {

// dl_iterate_phdr's callback: the object whose loaded segments contain
// this function.
int find_self(struct dl_phdr_info* info, size_t, void* data) {
    const uintptr_t probe = reinterpret_cast<uintptr_t>(&find_self);
    SelfObject o;
    bool mine = false;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_DYNAMIC) o.dynamic = reinterpret_cast<const ElfW(Dyn)*>(start);
        if (ph.p_type != PT_LOAD) continue;
        if (probe >= start && probe - start < ph.p_memsz) mine = true;
        if (start + ph.p_memsz > o.end) o.end = start + ph.p_memsz;
    }
    if (!mine) return 0;
    o.base = info->dlpi_addr;
    *static_cast<SelfObject*>(data) = o;
    return 1;
}

}  // namespace

bool self_object(SelfObject* out) { return dl_iterate_phdr(find_self, out) != 0; }

}  // namespace dedup
