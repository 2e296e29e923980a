// Queries: calls that answer into the caller's buffer (a link's target, the
// working directory, the system's name, limits and usage, the CPU affinity,
// the groups, extended attributes). The kernel writes the answer before the
// call returns; each wrapper pins the buffer for the call, as reads.cpp
// explains.
#include <grp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/span.h"

using dedup::KernelWritePin;
using dedup::NextSymbol;

#define NEXT(name, ret, ...) static NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

NEXT(readlink, ssize_t, const char*, char*, size_t);
EXPORT ssize_t readlink(const char* path, char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_readlink.get()(path, buf, n);
}

NEXT(readlinkat, ssize_t, int, const char*, char*, size_t);
EXPORT ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_readlinkat.get()(dirfd, path, buf, n);
}

NEXT(__readlink_chk, ssize_t, const char*, char*, size_t, size_t);
EXPORT ssize_t __readlink_chk(const char* path, char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___readlink_chk.get()(path, buf, n, buflen);
}

NEXT(__readlinkat_chk, ssize_t, int, const char*, char*, size_t, size_t);
EXPORT ssize_t __readlinkat_chk(int dirfd, const char* path, char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___readlinkat_chk.get()(dirfd, path, buf, n, buflen);
}

NEXT(getcwd, char*, char*, size_t);
EXPORT char* getcwd(char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_getcwd.get()(buf, n);
}

NEXT(__getcwd_chk, char*, char*, size_t, size_t);
EXPORT char* __getcwd_chk(char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___getcwd_chk.get()(buf, n, buflen);
}

NEXT(uname, int, struct utsname*);
EXPORT int uname(struct utsname* u) {
    KernelWritePin pin(u, sizeof *u);
    return next_uname.get()(u);
}

NEXT(getrlimit, int, int, struct rlimit*);
EXPORT int getrlimit(__rlimit_resource_t res, struct rlimit* rl) {
    KernelWritePin pin(rl, sizeof *rl);
    return next_getrlimit.get()(res, rl);
}

NEXT(getrlimit64, int, int, struct rlimit64*);
EXPORT int getrlimit64(__rlimit_resource_t res, struct rlimit64* rl) {
    KernelWritePin pin(rl, sizeof *rl);
    return next_getrlimit64.get()(res, rl);
}

NEXT(prlimit, int, pid_t, int, const struct rlimit*, struct rlimit*);
EXPORT int prlimit(pid_t pid, __rlimit_resource res, const struct rlimit* nl, struct rlimit* old) {
    KernelWritePin pin(old, sizeof *old);
    return next_prlimit.get()(pid, res, nl, old);
}

NEXT(prlimit64, int, pid_t, int, const struct rlimit64*, struct rlimit64*);
EXPORT int prlimit64(pid_t pid, __rlimit_resource res, const struct rlimit64* nl, struct rlimit64* old) {
    KernelWritePin pin(old, sizeof *old);
    return next_prlimit64.get()(pid, res, nl, old);
}

NEXT(getrusage, int, int, struct rusage*);
EXPORT int getrusage(__rusage_who_t who, struct rusage* ru) {
    KernelWritePin pin(ru, sizeof *ru);
    return next_getrusage.get()(who, ru);
}

NEXT(sysinfo, int, struct sysinfo*);
EXPORT int sysinfo(struct sysinfo* info) {
    KernelWritePin pin(info, sizeof *info);
    return next_sysinfo.get()(info);
}

NEXT(sched_getaffinity, int, pid_t, size_t, cpu_set_t*);
EXPORT int sched_getaffinity(pid_t pid, size_t size, cpu_set_t* mask) {
    KernelWritePin pin(mask, size);
    return next_sched_getaffinity.get()(pid, size, mask);
}

NEXT(getgroups, int, int, gid_t*);
EXPORT int getgroups(int n, gid_t* list) {
    KernelWritePin pin(list, n > 0 ? (size_t)n * sizeof *list : 0);
    return next_getgroups.get()(n, list);
}

NEXT(__getgroups_chk, int, int, gid_t*, size_t);
EXPORT int __getgroups_chk(int n, gid_t* list, size_t listlen) {
    KernelWritePin pin(list, n > 0 ? (size_t)n * sizeof *list : 0);
    return next___getgroups_chk.get()(n, list, listlen);
}

NEXT(getxattr, ssize_t, const char*, const char*, void*, size_t);
EXPORT ssize_t getxattr(const char* path, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_getxattr.get()(path, name, val, n);
}

NEXT(lgetxattr, ssize_t, const char*, const char*, void*, size_t);
EXPORT ssize_t lgetxattr(const char* path, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_lgetxattr.get()(path, name, val, n);
}

NEXT(fgetxattr, ssize_t, int, const char*, void*, size_t);
EXPORT ssize_t fgetxattr(int fd, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_fgetxattr.get()(fd, name, val, n);
}

NEXT(listxattr, ssize_t, const char*, char*, size_t);
EXPORT ssize_t listxattr(const char* path, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_listxattr.get()(path, list, n);
}

NEXT(llistxattr, ssize_t, const char*, char*, size_t);
EXPORT ssize_t llistxattr(const char* path, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_llistxattr.get()(path, list, n);
}

NEXT(flistxattr, ssize_t, int, char*, size_t);
EXPORT ssize_t flistxattr(int fd, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_flistxattr.get()(fd, list, n);
}
