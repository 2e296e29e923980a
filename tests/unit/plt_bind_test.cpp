// plt_bind: the imports of the object the scanner is linked into (here the
// test binary, linked with -z lazy like the library) are listed with their
// versions, and bound at once to what the lazy resolver would have chosen.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include "scanner/os/plt_bind.h"

using namespace dedup;

namespace {

struct Seen {
    std::string name, version;
    void** slot;
};

void collect(const PltImport& imp, void* ctx) {
    static_cast<std::vector<Seen>*>(ctx)->push_back({imp.name, imp.version ? imp.version : "", imp.slot});
}

std::vector<Seen> imports() {
    std::vector<Seen> v;
    EXPECT_GT(plt_imports_for_each(collect, &v), 0);
    return v;
}

const Seen* find(const std::vector<Seen>& v, const char* name) {
    for (const Seen& s : v)
        if (s.name == name) return &s;
    return nullptr;
}

// The object an address belongs to.
const void* object_of(const void* p) {
    Dl_info info;
    return dladdr(p, &info) ? info.dli_fbase : nullptr;
}

const void* this_binary() { return object_of(reinterpret_cast<const void*>(&object_of)); }

// Referenced so that the binary imports it, called only after the binding:
// no earlier call can have bound it lazily.
int call_strverscmp(const char* a, const char* b) { return strverscmp(a, b); }

}  // namespace

TEST(PltBind, ListsImportsWithTheirVersions) {
    std::vector<Seen> v = imports();
    const Seen* s = find(v, "strverscmp");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->version, "GLIBC_2.2.5");
    // Unversioned references (a sanitizer's interceptors) have no version.
    ASSERT_NE(find(v, "pthread_create"), nullptr);
    for (const Seen& i : v) EXPECT_NE(i.slot, nullptr) << i.name;
}

TEST(PltBind, BindsEveryImportToWhatTheResolverWouldChoose) {
    std::vector<Seen> before = imports();
    const Seen* s = find(before, "strverscmp");
    ASSERT_NE(s, nullptr);
    // Not called yet: its slot still points at this binary's PLT stub.
    if (!getenv("LD_BIND_NOW")) {
        EXPECT_EQ(object_of(*s->slot), this_binary());
    }

    EXPECT_EQ(plt_bind_all(), 0);

    for (const Seen& i : imports()) {
        EXPECT_NE(object_of(*i.slot), this_binary()) << i.name << " still goes through the lazy resolver";
        void* want = i.version.empty() ? dlsym(RTLD_DEFAULT, i.name.c_str())
                                       : dlvsym(RTLD_DEFAULT, i.name.c_str(), i.version.c_str());
        EXPECT_EQ(*i.slot, want) << i.name << "@" << i.version;
    }
    EXPECT_LT(call_strverscmp("a9", "a10"), 0);  // through the slot just written
}
