// File status by path, and file system status: the stat and statfs
// families (and glibc's older __xstat names) fill the caller's struct
// before they return; each wrapper pins it for the call, as reads.cpp
// explains. fstat, fstatat and statx, which must also hide the shim's own
// descriptors, are in fds.cpp.
#include <sys/stat.h>
#include <sys/statfs.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/span.h"

using dedup::KernelWritePin;
using dedup::NextSymbol;

#define NEXT(name, ret, ...) static NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

// ---- file status by path (by descriptor: fds.cpp) ------------------------------

NEXT(stat, int, const char*, struct stat*);
EXPORT int stat(const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_stat.get()(path, st);
}

NEXT(stat64, int, const char*, struct stat64*);
EXPORT int stat64(const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_stat64.get()(path, st);
}

NEXT(lstat, int, const char*, struct stat*);
EXPORT int lstat(const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_lstat.get()(path, st);
}

NEXT(lstat64, int, const char*, struct stat64*);
EXPORT int lstat64(const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_lstat64.get()(path, st);
}

// glibc before 2.33 compiled calls to these.
NEXT(__xstat, int, int, const char*, struct stat*);
EXPORT int __xstat(int ver, const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___xstat.get()(ver, path, st);
}

NEXT(__xstat64, int, int, const char*, struct stat64*);
EXPORT int __xstat64(int ver, const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___xstat64.get()(ver, path, st);
}

NEXT(__lxstat, int, int, const char*, struct stat*);
EXPORT int __lxstat(int ver, const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___lxstat.get()(ver, path, st);
}

NEXT(__lxstat64, int, int, const char*, struct stat64*);
EXPORT int __lxstat64(int ver, const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___lxstat64.get()(ver, path, st);
}

NEXT(__fxstatat, int, int, int, const char*, struct stat*, int);
EXPORT int __fxstatat(int ver, int dirfd, const char* path, struct stat* st, int flags) {
    KernelWritePin pin(st, sizeof *st);
    return next___fxstatat.get()(ver, dirfd, path, st, flags);
}

NEXT(__fxstatat64, int, int, int, const char*, struct stat64*, int);
EXPORT int __fxstatat64(int ver, int dirfd, const char* path, struct stat64* st, int flags) {
    KernelWritePin pin(st, sizeof *st);
    return next___fxstatat64.get()(ver, dirfd, path, st, flags);
}

NEXT(statfs, int, const char*, struct statfs*);
EXPORT int statfs(const char* path, struct statfs* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_statfs.get()(path, st);
}

NEXT(statfs64, int, const char*, struct statfs64*);
EXPORT int statfs64(const char* path, struct statfs64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_statfs64.get()(path, st);
}

NEXT(fstatfs, int, int, struct statfs*);
EXPORT int fstatfs(int fd, struct statfs* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_fstatfs.get()(fd, st);
}

NEXT(fstatfs64, int, int, struct statfs64*);
EXPORT int fstatfs64(int fd, struct statfs64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_fstatfs64.get()(fd, st);
}
