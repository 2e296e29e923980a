#include "scanner/os/proc.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "scanner/large_bss.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {

// Reads up to cap-1 bytes of a small file, NUL-terminated; -errno or bytes.
long read_small_file(const char* path, char* buf, size_t cap) {
    long fd = sys::call(SYS_open, (long)path, O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return fd;
    long n = sys::call(SYS_read, fd, (long)buf, (long)(cap - 1));
    sys::close((int)fd);
    buf[n > 0 ? n : 0] = 0;
    return n;
}

uint64_t parse_number(const char*& p, const char* end, int base) {
    uint64_t v = 0;
    for (; p < end; ++p) {
        int d;
        if (*p >= '0' && *p <= '9') d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
        else break;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    return v;
}

const char* skip_field(const char* p, const char* end) {  // past the field and the spaces after it
    while (p < end && *p != ' ') ++p;
    while (p < end && *p == ' ') ++p;
    return p;
}

// Calls line(start, end) for each whole line of a kept file, read with pread
// in 64 KiB pieces; false if it could not be read. The buffer is static, not
// on the stack (program threads with small stacks call in): callers hold the
// mm lock.
DEDUP_LARGE_BSS char g_line_buf[65536];
template <typename F>
bool for_each_line(KeptFile& f, F&& line) {
    char* buf = g_line_buf;
    const size_t cap = sizeof(g_line_buf);
    size_t have = 0;  // bytes of an unfinished line kept at the front of buf
    for (off_t off = 0;;) {
        long n = f.pread(buf + have, cap - have, off);
        if (n < 0) return false;
        if (n == 0) return true;
        off += n;
        const char* p = buf;
        const char* end = buf + have + n;
        for (const char* nl; (nl = (const char*)memchr(p, '\n', (size_t)(end - p))) != nullptr; p = nl + 1)
            line(p, nl);
        have = (size_t)(end - p);
        if (have == cap) have = 0;  // a line longer than buf: drop it
        memmove(buf, p, have);
    }
}

uint32_t vm_flags_of(const char* line) {
    struct Known {
        char a, b;
        uint32_t bit;
    };
    static const Known kKnown[] = {{'d', 'c', kVmDontfork}, {'d', 'd', kVmDontdump},  {'h', 'g', kVmHugepage},
                                   {'n', 'h', kVmNohugepage}, {'r', 'r', kVmRandom},   {'s', 'r', kVmSequential},
                                   {'w', 'f', kVmWipeonfork}, {'l', 'o', kVmLocked}};
    uint32_t flags = 0;
    for (const char* p = line; *p; ++p) {
        if (p[0] != ' ' || !p[1] || !p[2] || (p[3] != ' ' && p[3] != 0)) continue;
        for (const Known& k : kKnown)
            if (p[1] == k.a && p[2] == k.b) flags |= k.bit;
    }
    return flags;
}

}  // namespace

uint64_t read_number_file(const char* path, uint64_t fallback) {
    char buf[32];
    if (read_small_file(path, buf, sizeof(buf)) <= 0) return fallback;
    const char* p = buf;
    uint64_t v = parse_number(p, buf + strlen(buf), 10);
    return p == buf ? fallback : v;
}

bool thp_enabled_always() {
    char buf[128];
    return read_small_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)) > 0 &&
           strstr(buf, "[always]");
}

uint64_t rlimit_soft(int resource) {
    struct rlimit rl;
    if (sys::failed(sys::call(SYS_getrlimit, resource, (long)&rl)) || rl.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return rl.rlim_cur & ~4095ull;
}

bool open_pagemap() { return kept_files().pagemap.ensure("/proc/self/pagemap", O_RDONLY); }

bool read_pagemap(uintptr_t addr, size_t n, uint64_t* out) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!open_pagemap()) return false;
        if (kept_files().pagemap.pread(out, n * 8, (off_t)(addr / 4096 * 8)) == (long)(n * 8)) return true;
        kept_files().pagemap.close();
    }
    return false;
}

long pagemap_huge_ranges(uintptr_t lo, uintptr_t hi, uintptr_t (*ranges)[2], long max) {
    struct PageRegion {
        uint64_t start, end, categories;
    };
    struct PmScanArg {
        uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
            category_anyof_mask, return_mask;
    };
    constexpr uint64_t kPageIsHuge = 1ull << 6;
    if (!open_pagemap() || max <= 0) return -EINVAL;
    PageRegion vec[8];
    if (max > 8) max = 8;
    PmScanArg arg = {sizeof(PmScanArg), 0, lo, hi, 0, (uint64_t)(uintptr_t)vec, (uint64_t)max, 0, 0, 0,
                     kPageIsHuge, kPageIsHuge};
    const unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
    long n = sys::call(SYS_ioctl, kept_files().pagemap.fd(), (long)kPagemapScan, (long)&arg);
    for (long i = 0; i < n; ++i) {
        ranges[i][0] = (uintptr_t)vec[i].start;
        ranges[i][1] = (uintptr_t)vec[i].end;
    }
    return n;
}

bool open_maps() { return kept_files().maps.ensure("/proc/self/maps", O_RDONLY); }

std::atomic<bool> g_procmap_query{true};  // the kernel answers PROCMAP_QUERY

bool vma_at(uintptr_t addr, uintptr_t* start, uintptr_t* end, int* prot) {
    struct ProcmapQuery {  // struct procmap_query (linux/fs.h, 6.11)
        uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
        uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
        uint64_t vma_name_addr, build_id_addr;
    } q;
    memset(&q, 0, sizeof(q));
    q.size = sizeof(q);
    q.query_addr = addr;
    const unsigned long kProcmapQuery = _IOWR('f', 17, ProcmapQuery);
    if (!open_maps()) return false;
    long r = sys::call(SYS_ioctl, kept_files().maps.fd(), (long)kProcmapQuery, (long)&q);
    if (r == -ENOTTY || r == -EINVAL) g_procmap_query = false;  // before 6.11
    if (sys::failed(r)) return false;
    constexpr uint64_t kReadable = 1, kWritable = 2, kExecutable = 4;
    *start = q.vma_start;
    *end = q.vma_end;
    *prot = ((q.vma_flags & kReadable) ? PROT_READ : 0) | ((q.vma_flags & kWritable) ? PROT_WRITE : 0) |
            ((q.vma_flags & kExecutable) ? PROT_EXEC : 0);
    return true;
}

bool kernel_protection_is(uintptr_t a, size_t len, int prot) {
    if (!g_procmap_query) return true;  // no way to ask: the shim's record stands
    for (uintptr_t p = a; p < a + len;) {
        uintptr_t s, e;
        int vp;
        if (!vma_at(p, &s, &e, &vp) || s > p || vp != prot) return false;
        p = e;
    }
    return true;
}

uint64_t count_vmas() {
    if (!open_maps()) return 0;
    uint64_t lines = 0;
    for_each_line(kept_files().maps, [&](const char*, const char*) { ++lines; });
    return lines;
}

// Lines look like "lo-hi perms offset dev inode path".
long find_vmas_of_file(uint64_t ino, const char* name, uintptr_t* lo, uintptr_t* hi, long max) {
    if (!open_maps()) return -1;
    long found = 0;
    size_t name_len = strlen(name);
    bool ok = for_each_line(kept_files().maps, [&](const char* p, const char* nl) {
        const char* q = p;
        uint64_t a = parse_number(q, nl, 16);
        ++q;
        uint64_t b = parse_number(q, nl, 16);
        q = skip_field(skip_field(skip_field(skip_field(q, nl), nl), nl), nl);  // end, perms, offset, dev
        uint64_t vma_ino = parse_number(q, nl, 10);
        if ((ino && vma_ino != ino) || !memmem(q, (size_t)(nl - q), name, name_len)) return;
        if (found < max) {
            lo[found] = (uintptr_t)a;
            hi[found] = (uintptr_t)b;
        }
        ++found;
    });
    return ok ? found : -1;
}

bool for_each_anon_vma_fn(uintptr_t start, uintptr_t end, AnonVmaFn fn, void* ctx) {
    long fd = sys::call(SYS_open, (long)"/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return false;
    char buf[8192];
    size_t have = 0;
    bool eof = false;
    AnonVma vma = {0, 0, 0, 0};
    bool wanted = false;  // the VMA whose lines we are in is one to report
    while (!eof || have) {
        if (!eof && have < sizeof(buf)) {
            long n = sys::call(SYS_read, fd, (long)(buf + have), (long)(sizeof(buf) - have));
            if (n <= 0) eof = true;
            else have += (size_t)n;
        }
        char* nl = (char*)memchr(buf, '\n', have);
        if (!nl) {
            if (eof || have == sizeof(buf)) break;
            continue;
        }
        *nl = 0;
        unsigned long lo, hi, off, inode;
        char perms[8] = "", path[32] = "";
        unsigned dmaj, dmin;
        int f = sscanf(buf, "%lx-%lx %7s %lx %x:%x %lu %31s", &lo, &hi, perms, &off, &dmaj, &dmin, &inode, path);
        if (f >= 7) {  // a VMA's header line
            wanted = perms[3] == 'p' && inode == 0 && (f == 7 || path[0] == 0) && lo < end && hi > start;
            vma.start = lo > start ? lo : start;
            vma.end = hi < end ? hi : end;
            vma.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                       (perms[2] == 'x' ? PROT_EXEC : 0);
        } else if (wanted && strncmp(buf, "VmFlags:", 8) == 0) {
            wanted = false;
            vma.vm_flags = vm_flags_of(buf + 8);
            fn(vma, ctx);
        }
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, have - used);
        have -= used;
    }
    sys::close((int)fd);
    return true;
}

namespace {
// The kept /proc/self/status read into buf (NUL-terminated): no descriptor
// of the program's. False if it cannot be read.
bool read_status(char* buf, size_t cap) {
    KeptFile& status = kept_files().status;
    if (!status.ensure("/proc/self/status", O_RDONLY)) return false;
    long n = status.pread(buf, cap - 1, 0);
    if (n <= 0) return false;
    buf[n] = 0;
    return true;
}

// The value of one of its lines (key "\nState:"), past the blanks; nullptr
// if there is no such line.
const char* status_field(const char* buf, const char* key) {
    const char* f = strstr(buf, key);
    if (!f) return nullptr;
    f += strlen(key);
    while (*f == ' ' || *f == '\t') ++f;
    return f;
}
}  // namespace

bool read_thread_state(int* threads, bool* leader_zombie) {
    char buf[4096];
    if (!read_status(buf, sizeof buf)) return false;
    const char* t = status_field(buf, "\nThreads:");
    const char* st = status_field(buf, "\nState:");
    if (!t || !st) return false;
    *threads = atoi(t);
    *leader_zombie = *st == 'Z';
    return true;
}

int read_leader_seccomp_mode() {
    char buf[4096];
    if (!read_status(buf, sizeof buf)) return -1;
    const char* f = status_field(buf, "\nSeccomp:");
    return f && *f >= '0' && *f <= '9' ? *f - '0' : -1;
}

void read_process_name(char* out, size_t cap) {
    if (!cap) return;
    out[0] = 0;
    char buf[256];  // "Name:" is the first line
    if (!read_status(buf, sizeof buf) || strncmp(buf, "Name:", 5) != 0) return;
    const char* c = status_field(buf, "Name:");
    size_t o = 0;
    // The kernel escapes a newline and a backslash in the name there.
    for (; *c && *c != '\n' && o + 1 < cap; ++c) {
        if (c[0] == '\\' && (c[1] == 'n' || c[1] == '\\')) {
            out[o++] = c[1] == 'n' ? '\n' : '\\';
            ++c;
        } else {
            out[o++] = *c;
        }
    }
    out[o] = 0;
}

bool pidfd_is_self(int pidfd) {
    if (pidfd == PIDFD_SELF_THREAD || pidfd == PIDFD_SELF_THREAD_GROUP) return true;
    struct PidfdInfo {  // struct pidfd_info, PIDFD_INFO_SIZE_VER0
        uint64_t mask, cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid, spare0;
    } info;
    memset(&info, 0, sizeof(info));
    info.mask = 1;  // PIDFD_INFO_PID
    const unsigned long kGetInfo = _IOWR(0xFF, 11, PidfdInfo);
    if (sys::failed(sys::call(SYS_ioctl, pidfd, (long)kGetInfo, (long)&info))) return false;
    return (long)info.tgid == sys::getpid();
}

}  // namespace dedup
