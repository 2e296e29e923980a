#include "scanner/sites.h"

#include <atomic>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define UNW_LOCAL_ONLY
#include <libunwind.h>  // types and constants only: the library is loaded on demand

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "scanner/log.h"
#include "scanner/meta_alloc.h"
#include "scanner/os/self_object.h"

extern char** environ;

namespace dedup {
namespace {

struct Site {
    std::atomic<uint64_t> hash{0};  // 0 = free entry
    int depth = 0;
    uintptr_t ips[kSiteFrames];
};

Site* g_sites = nullptr;  // kMaxSites entries; index = site id (0 unused)
std::atomic<uint32_t> g_used{0};
std::atomic<bool> g_enabled{false};

// libunwind, loaded with dlopen(RTLD_LOCAL) only when sites are on: as a
// dependency it would load into every program (with liblzma), cost start-up
// time, and its exported backtrace/_Unwind_Backtrace would interpose on
// libgcc's for the whole program.
struct Unwind {
    int (*backtrace)(void**, int);
    int (*set_caching_policy)(unw_addr_space_t, unw_caching_policy_t);
    unw_addr_space_t* local_addr_space;
};
Unwind g_unw;

bool load_libunwind() {
    void* h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (!h) return false;
    g_unw.backtrace = reinterpret_cast<int (*)(void**, int)>(dlsym(h, "unw_backtrace"));
    g_unw.set_caching_policy = reinterpret_cast<int (*)(unw_addr_space_t, unw_caching_policy_t)>(
        dlsym(h, "_ULx86_64_set_caching_policy"));
    g_unw.local_addr_space = static_cast<unw_addr_space_t*>(dlsym(h, "_ULx86_64_local_addr_space"));
    return g_unw.backtrace && g_unw.set_caching_policy && g_unw.local_addr_space;
}
std::atomic<int> g_table_state{0};  // 0 none, 1 allocating, 2 ready, 3 failed
uintptr_t g_self_lo = 0, g_self_hi = 0;  // libdedup's own text: frames to skip

bool ensure_table() {
    int st = g_table_state.load(std::memory_order_acquire);
    if (st == 2) return true;
    if (st == 3) return false;
    int expected = 0;
    if (g_table_state.compare_exchange_strong(expected, 1)) {
        g_sites = static_cast<Site*>(meta_alloc(sizeof(Site) * kMaxSites));
        // Per-thread caching of unwind information, as heaptrack does: the
        // second capture from a call site costs a fraction of the first.
        g_unw.set_caching_policy(*g_unw.local_addr_space, UNW_CACHE_PER_THREAD);
        SelfObject self;
        if (self_object(&self)) g_self_lo = self.base, g_self_hi = self.end;
        g_table_state.store(g_sites ? 2 : 3, std::memory_order_release);
        return g_sites != nullptr;
    }
    while ((st = g_table_state.load(std::memory_order_acquire)) == 1) {
    }
    return st == 2;
}

__thread bool t_capturing = false;

}  // namespace

bool site_capture_in_progress() { return t_capturing; }
bool sites_enabled() { return g_enabled.load(std::memory_order_relaxed); }
void sites_set_enabled(bool on) {
    if (on && !load_libunwind()) {
        log_warning("DEDUP_SITES=1 but libunwind.so.8 cannot be loaded (%s); allocation sites are off", dlerror());
        on = false;
    }
    g_enabled.store(on, std::memory_order_relaxed);
}
uint32_t site_count() { return g_used.load(); }

uint32_t site_capture() {
    if (!sites_enabled() || t_capturing || !ensure_table()) return 0;
    t_capturing = true;  // libunwind may call back into malloc/mmap
    void* raw[kSiteFrames + 8];
    int n = g_unw.backtrace(raw, kSiteFrames + 8);
    t_capturing = false;
    uintptr_t ips[kSiteFrames];
    int depth = 0;
    for (int i = 0; i < n && depth < kSiteFrames; ++i) {
        uintptr_t ip = (uintptr_t)raw[i];
        if (depth == 0 && ip >= g_self_lo && ip < g_self_hi) continue;  // our own frames
        ips[depth++] = ip;
    }
    if (depth == 0) return 0;
    uint64_t h = XXH3_64bits(ips, (size_t)depth * sizeof(uintptr_t));
    if (h == 0) h = 1;
    for (uint32_t probe = 0; probe < kMaxSites - 1; ++probe) {
        uint32_t i = 1 + (uint32_t)((h + probe) % (kMaxSites - 1));
        Site& s = g_sites[i];
        uint64_t cur = s.hash.load(std::memory_order_acquire);
        if (cur == h) return i;
        if (cur == 0) {
            uint64_t expected = 0;
            // Claim with a marker so readers never see a half-written trace.
            if (s.hash.compare_exchange_strong(expected, ~0ull)) {
                s.depth = depth;
                memcpy(s.ips, ips, sizeof(uintptr_t) * (size_t)depth);
                s.hash.store(h, std::memory_order_release);
                g_used.fetch_add(1);
                return i;
            }
            if (s.hash.load(std::memory_order_acquire) == h) return i;
        }
    }
    return 0;  // table full: "other"
}

namespace {

void copy_str(char* dst, size_t cap, const char* src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

// Runs `addr2line -f -C -e module addr` and reads "function\nfile:line".
bool addr2line(const char* module, uintptr_t addr, char* fn, size_t fncap, char* loc, size_t loccap) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return false;
    char addrbuf[32];
    snprintf(addrbuf, sizeof(addrbuf), "0x%lx", (unsigned long)addr);
    const char* argv[] = {"addr2line", "-f", "-C", "-e", module, addrbuf, nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    // The child must not deduplicate or report: it is ours.
    char* envp[] = {(char*)"DEDUP_DISABLE=1", (char*)"PATH=/usr/bin:/bin", nullptr};
    pid_t pid;
    int rc = posix_spawnp(&pid, "addr2line", &fa, nullptr, (char* const*)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) { close(pipefd[0]); return false; }
    char buf[1024];
    size_t have = 0;
    ssize_t r;
    while (have < sizeof(buf) - 1 && (r = read(pipefd[0], buf + have, sizeof(buf) - 1 - have)) > 0) have += (size_t)r;
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    buf[have] = 0;
    char* nl = strchr(buf, '\n');
    if (!nl) return false;
    *nl = 0;
    char* nl2 = strchr(nl + 1, '\n');
    if (nl2) *nl2 = 0;
    copy_str(fn, fncap, buf);
    // "file:line (discriminator N)" -> basename:line
    const char* l = nl + 1;
    const char* slash = strrchr(l, '/');
    copy_str(loc, loccap, slash ? slash + 1 : l);
    if (char* sp = strchr(loc, ' ')) *sp = 0;
    return true;
}

void describe_frame(uintptr_t ip, char* out, size_t cap) {
    Dl_info info;
    memset(&info, 0, sizeof(info));
    uintptr_t lookup = ip - 1;  // a return address points after the call
    if (!dladdr((void*)lookup, &info) || !info.dli_fname) {
        snprintf(out, cap, "0x%lx", (unsigned long)ip);
        return;
    }
    // addr2line wants file addresses: offsets for PIE/shared objects, the
    // address itself for a fixed-address executable.
    uintptr_t base = (uintptr_t)info.dli_fbase;
    const ElfW(Ehdr)* eh = (const ElfW(Ehdr)*)info.dli_fbase;
    uintptr_t file_addr = (eh && eh->e_type == ET_EXEC) ? lookup : lookup - base;
    const char* module = info.dli_fname;
    char self[256];
    if (!module[0]) {  // the main program
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) { self[n] = 0; module = self; }
    }
    char fn[256] = "", loc[256] = "";
    bool ok = module[0] && addr2line(module, file_addr, fn, sizeof(fn), loc, sizeof(loc));
    if (ok && strcmp(fn, "??") != 0) {
        if (loc[0] && strncmp(loc, "??", 2) != 0) snprintf(out, cap, "%.160s (%.150s)", fn, loc);  // within a frame's 320
        else snprintf(out, cap, "%s", fn);
        return;
    }
    const char* mod = strrchr(module, '/');
    if (info.dli_sname) snprintf(out, cap, "%s (%s)", info.dli_sname, mod ? mod + 1 : module);
    else snprintf(out, cap, "%s+0x%lx", mod ? mod + 1 : module, (unsigned long)file_addr);
}

}  // namespace

void site_describe(uint32_t id, int frames, char* out, size_t cap) {
    out[0] = 0;
    if (id == 0 || id >= kMaxSites || !g_sites || g_sites[id].hash.load() == 0) {
        snprintf(out, cap, "(unknown site)");
        return;
    }
    const Site& s = g_sites[id];
    size_t used = 0;
    for (int i = 0; i < s.depth && i < frames; ++i) {
        char f[320];
        describe_frame(s.ips[i], f, sizeof(f));
        int n = snprintf(out + used, cap - used, "%s%s", i ? " <- " : "", f);
        if (n < 0 || (size_t)n >= cap - used) break;
        used += (size_t)n;
        // Frames past main() are libc start-up: stop there.
        if (!strncmp(f, "main ", 5) || !strcmp(f, "main")) break;
    }
}

}  // namespace dedup
