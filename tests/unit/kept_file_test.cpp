// KeptFile and park_fd: the shim's kept descriptors take none of the
// program's numbers when the hard RLIMIT_NOFILE allows, and a number reused
// behind the shim's back is never mistaken for its file.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scanner/os/kept_file.h"

using namespace dedup;

namespace {

struct LimitGuard {
    struct rlimit saved;
    LimitGuard() { getrlimit(RLIMIT_NOFILE, &saved); }
    ~LimitGuard() { setrlimit(RLIMIT_NOFILE, &saved); }
};

}  // namespace

TEST(ParkFd, AboveTheSoftLimitWhenTheHardLimitAllows) {
    LimitGuard g;
    if (g.saved.rlim_max < 128) GTEST_SKIP() << "hard RLIMIT_NOFILE too low";
    struct rlimit low = {64, g.saved.rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_LT(fd, 64);
    int parked = park_fd(fd);
    EXPECT_GE(parked, 64) << "not above the soft limit";
    EXPECT_EQ(fcntl(fd, F_GETFD), -1) << "the original number is still open";
    EXPECT_EQ(fcntl(parked, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    struct rlimit now;
    getrlimit(RLIMIT_NOFILE, &now);
    EXPECT_EQ(now.rlim_cur, 64u) << "soft limit not put back";
    // A second and third one go above it too.
    int a = park_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int b = park_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    EXPECT_GE(a, 64);
    EXPECT_GE(b, 64);
    EXPECT_NE(a, b);
    close(parked);
    close(a);
    close(b);
}

TEST(ParkFd, HighestFreeNumberWhenTheLimitIsHard) {
    LimitGuard g;
    struct rlimit hard = {100, 100};
    if (g.saved.rlim_max < 100) GTEST_SKIP() << "hard RLIMIT_NOFILE too low";
    // Lowering the hard limit is for good in this process: do it in a child.
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (setrlimit(RLIMIT_NOFILE, &hard) != 0) _exit(2);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int parked = park_fd(fd);
        _exit(parked == 99 && fcntl(fd, F_GETFD) == -1 ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
}

TEST(KeptFile, OpensOnceReadsAndNoticesAReusedNumber) {
    static KeptFile f("/proc/self/status");
    ASSERT_TRUE(f.ensure("/proc/self/status", O_RDONLY));
    int fd = f.fd();
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(f.ensure("/proc/self/status", O_RDONLY));
    EXPECT_EQ(f.fd(), fd) << "reopened although still ours";
    char buf[64] = {0};
    ASSERT_GT(f.pread(buf, sizeof(buf) - 1, 0), 0);
    EXPECT_EQ(strncmp(buf, "Name:", 5), 0) << buf;
    // The number is closed and reused for another file behind its back.
    int other = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_EQ(dup2(other, fd), fd);
    close(other);
    ASSERT_TRUE(f.ensure("/proc/self/status", O_RDONLY));
    EXPECT_NE(f.fd(), fd) << "took the program's file for its own";
    EXPECT_GE(fcntl(fd, F_GETFD), 0) << "closed the program's file";
    close(fd);
    ASSERT_GT(f.pread(buf, sizeof(buf) - 1, 0), 0);
    EXPECT_EQ(strncmp(buf, "Name:", 5), 0);
    f.close();
    EXPECT_EQ(f.fd(), -1);
}

TEST(KeptFile, FailedOpenIsRetriedAtMostOnceASecond) {
    static KeptFile f("a missing file");
    EXPECT_FALSE(f.ensure("/nonexistent/libdedup-test", O_RDONLY));
    EXPECT_FALSE(f.ensure("/proc/self/status", O_RDONLY)) << "retried at once";
    usleep(1100 * 1000);
    EXPECT_TRUE(f.ensure("/proc/self/status", O_RDONLY));
    f.close();
}
