#include "scanner/os/plt_bind.h"

#include <dlfcn.h>
#include <elf.h>
#include <stdint.h>

#include "scanner/os/self_object.h"

namespace dedup {
namespace {

#if defined(__x86_64__)
constexpr unsigned kJumpSlot = R_X86_64_JUMP_SLOT;
#else
#error "plt_bind.cpp knows the PLT relocation of x86-64 only"
#endif

// glibc rewrites the address entries of a loaded object's dynamic section
// to absolute addresses; other loaders leave them relative to the base.
template <typename T>
const T* at(ElfW(Addr) base, ElfW(Addr) v) {
    return reinterpret_cast<const T*>(v >= base ? v : v + base);
}

// The version name that versym index idx stands for, from DT_VERNEED.
const char* version_name(const ElfW(Verneed)* need, size_t count, const char* strtab, unsigned idx) {
    for (size_t n = 0; need && n < count; ++n) {
        auto aux = reinterpret_cast<const ElfW(Vernaux)*>(reinterpret_cast<const char*>(need) + need->vn_aux);
        for (unsigned a = 0; a < need->vn_cnt; ++a) {
            if ((aux->vna_other & 0x7fff) == idx) return strtab + aux->vna_name;
            aux = reinterpret_cast<const ElfW(Vernaux)*>(reinterpret_cast<const char*>(aux) + aux->vna_next);
        }
        if (!need->vn_next) break;
        need = reinterpret_cast<const ElfW(Verneed)*>(reinterpret_cast<const char*>(need) + need->vn_next);
    }
    return nullptr;
}

void bind_one(const PltImport& imp, void* ctx) {
    void* p = imp.version ? dlvsym(RTLD_DEFAULT, imp.name, imp.version) : dlsym(RTLD_DEFAULT, imp.name);
    if (!p) {
        ++*static_cast<int*>(ctx);
        return;
    }
    // Another thread may call through the slot meanwhile: it sees the lazy
    // stub (whose resolver writes this same value) or the definition.
    __atomic_store_n(imp.slot, p, __ATOMIC_RELEASE);
}

}  // namespace

int plt_imports_for_each(void (*fn)(const PltImport&, void*), void* ctx) {
    SelfObject self;
    if (!self_object(&self) || !self.dynamic) return -1;
    const ElfW(Addr) base = self.base;
    ElfW(Addr) jmprel = 0, symtab = 0, strtab = 0, versym = 0, verneed = 0;
    size_t pltrelsz = 0, verneednum = 0;
    long pltrel = DT_RELA;
    for (const ElfW(Dyn)* d = self.dynamic; d->d_tag != DT_NULL; ++d) {
        switch (d->d_tag) {
            case DT_JMPREL: jmprel = d->d_un.d_ptr; break;
            case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
            case DT_PLTREL: pltrel = (long)d->d_un.d_val; break;
            case DT_SYMTAB: symtab = d->d_un.d_ptr; break;
            case DT_STRTAB: strtab = d->d_un.d_ptr; break;
            case DT_VERSYM: versym = d->d_un.d_ptr; break;
            case DT_VERNEED: verneed = d->d_un.d_ptr; break;
            case DT_VERNEEDNUM: verneednum = d->d_un.d_val; break;
            default: break;
        }
    }
    if (!jmprel || !pltrelsz) return 0;  // no PLT: nothing is bound lazily
    if (pltrel != DT_RELA || !symtab || !strtab) return -1;
    auto rela = at<ElfW(Rela)>(base, jmprel);
    auto syms = at<ElfW(Sym)>(base, symtab);
    auto strs = at<char>(base, strtab);
    auto vers = versym ? at<ElfW(Half)>(base, versym) : nullptr;
    auto need = verneed ? at<ElfW(Verneed)>(base, verneed) : nullptr;
    int count = 0;
    for (size_t i = 0; i < pltrelsz / sizeof(ElfW(Rela)); ++i) {
        if (ELF64_R_TYPE(rela[i].r_info) != kJumpSlot) continue;
        size_t s = ELF64_R_SYM(rela[i].r_info);
        unsigned v = vers ? (vers[s] & 0x7fff) : 0;
        PltImport imp;
        imp.name = strs + syms[s].st_name;
        imp.version = v >= 2 ? version_name(need, verneednum, strs, v) : nullptr;
        imp.slot = reinterpret_cast<void**>(base + rela[i].r_offset);
        fn(imp, ctx);
        ++count;
    }
    return count;
}

int plt_bind_all() {
    int missing = 0;
    if (plt_imports_for_each(bind_one, &missing) < 0) return -1;
    return missing;
}

}  // namespace dedup
