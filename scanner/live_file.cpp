#include "scanner/live_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "scanner/os/kept_file.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {

constexpr size_t kLiveBytes = 16384;

struct LiveFile {
    char* map = nullptr;
    unsigned long ino = 0;   // the mapped file's inode
    size_t longest = 0;      // longest JSON written: padding to clear after a shorter one
    bool linked = false;     // named in /dev/shm by this process
};
LiveFile g_live;
unsigned long g_pidns = 0;

void live_path(char* out, size_t cap) {
    snprintf(out, cap, "/dev/shm/libdedup.%lu.%ld.json", live_file_pidns(), sys::getpid());
}

unsigned long file_inode(int fd) {
    struct stat st;
    return sys::failed(sys::call(SYS_fstat, fd, (long)&st)) ? 0 : (unsigned long)st.st_ino;
}

void unmap() {
    if (g_live.map) sys::munmap(g_live.map, kLiveBytes);
    g_live = LiveFile();
}

// Named, locked first: a reader never sees our file unlocked.
void link_now() {
    KeptFile& f = kept_files().live;
    if (g_live.linked || f.fd() < 0) return;
    struct flock lk;
    memset(&lk, 0, sizeof(lk));
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_len = 1;
    if (sys::failed(sys::call(SYS_fcntl, f.fd(), F_OFD_SETLK, (long)&lk))) return;
    char path[96], self[64];
    live_path(path, sizeof(path));
    snprintf(self, sizeof(self), "/proc/self/fd/%d", f.fd());
    sys::call(SYS_unlink, (long)path);  // a stale file of an earlier process with our pid
    g_live.linked = !sys::failed(sys::call(SYS_linkat, AT_FDCWD, (long)self, AT_FDCWD, (long)path, AT_SYMLINK_FOLLOW));
}

}  // namespace

unsigned long live_file_pidns() {
    if (!g_pidns) {
        struct stat st;
        if (!sys::failed(sys::call(SYS_stat, (long)"/proc/self/ns/pid", (long)&st))) g_pidns = st.st_ino;
    }
    return g_pidns;
}

bool live_file_open() {
    KeptFile& f = kept_files().live;
    bool had = f.fd() >= 0;
    if (!f.ensure("/dev/shm", O_TMPFILE | O_RDWR, 0644)) return false;
    // Our descriptor may have been closed behind our back (a raw
    // close_range) and a new file opened: map that one.
    unsigned long ino = file_inode(f.fd());
    if (g_live.map && had && ino == g_live.ino) return true;
    bool was_linked = g_live.linked;
    if (was_linked) live_file_remove();
    unmap();
    long err = 0;
    void* m = MAP_FAILED;
    if (!sys::failed(sys::call(SYS_ftruncate, f.fd(), (long)kLiveBytes)))
        m = sys::mmap(nullptr, kLiveBytes, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd(), 0, &err);
    if (m == MAP_FAILED) {
        f.close();
        return false;
    }
    sys::madvise(m, kLiveBytes, MADV_DONTFORK);  // a forked child must not write its parent's file
    memset(m, ' ', kLiveBytes);
    g_live.map = static_cast<char*>(m);
    g_live.ino = ino;
    if (was_linked) link_now();
    return true;
}

void live_file_write(const char* json, size_t n) {
    if (n > kLiveBytes || !live_file_open()) return;
    memcpy(g_live.map, json, n);
    if (g_live.longest > n) memset(g_live.map + n, ' ', g_live.longest - n);
    if (n > g_live.longest) g_live.longest = n;
    link_now();
}

void live_file_remove() {
    if (!g_live.linked) return;
    char path[96];
    live_path(path, sizeof(path));
    sys::call(SYS_unlink, (long)path);
    g_live.linked = false;
}

void live_file_relink() {
    if (g_live.map) link_now();
}

void live_file_reset_in_child() {
    // The mapping is DONTFORK (not in the child); the kept descriptor, which
    // holds the parent's lock, is closed with the other kept files.
    g_live = LiveFile();
}

}  // namespace dedup
