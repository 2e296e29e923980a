// The scanner thread's life: once the exit path has stopped it, nothing
// starts it again. Each test runs in a forked child: scanner_stop() is for
// good, and the parent's other tests may need the thread.
#include <gtest/gtest.h>

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scanner/os/clock.h"
#include "scanner/scanner_thread.h"
#include "scanner/state.h"

using namespace dedup;

namespace {

// Threads of this process named dedup-scan.
int scanner_threads() {
    int n = 0;
    DIR* d = opendir("/proc/self/task");
    if (!d) return -1;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        if (FILE* f = fopen(path, "r")) {
            if (fgets(name, sizeof name, f) && strncmp(name, "dedup-scan", 10) == 0) ++n;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}

// Waits up to 1 s for the count to become `want`.
bool scanner_threads_become(int want) {
    for (int i = 0; i < 100; ++i) {
        if (scanner_threads() == want) return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, nullptr);
    }
    return false;
}

}  // namespace

// rt_without_scanner (unshare, setuid, prctl...) pauses the scanner, makes
// its call, and resumes it. When another thread's exit() stopped the
// scanner meanwhile, the resume started it again, and the pause's end
// cleared the stop, under the exiting process.
TEST(ScannerThread, PauseAndResumeAfterStopDoNotRestartIt) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        scanner_ensure_started();
        if (!scanner_threads_become(1)) _exit(2);
        scanner_stop();             // exit()'s path
        bool paused = scanner_pause();  // a thread in rt_without_scanner
        scanner_resume();
        if (!paused) _exit(3);
        if (!scanner_threads_become(0)) _exit(4);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, nullptr);
        _exit(scanner_threads() == 0 ? 0 : 5);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "2: no scanner started; 3: pause found none running; "
                                          "4/5: the scanner runs again after the stop";
}

// A young process's scanner makes no pass until the process is 100 ms old,
// in one sleep; registering 64 MiB ends the wait at once.
TEST(ScannerThread, YoungWaitEndsWhenTheProcessGrows) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        State& s = state();
        s.start_ns = monotonic_ns();  // a process born now
        scanner_ensure_started();
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, nullptr);
        if (s.stats.full_scans.load() != 0) _exit(2);  // scanned while young
        s.stats.registered_bytes_total += 64ull << 20;
        scanner_note_registered();
        while (s.stats.full_scans.load() == 0 && monotonic_ns() - s.start_ns < 95 * 1000000ull) {
            struct timespec t = {0, 1000 * 1000};
            nanosleep(&t, nullptr);
        }
        _exit(s.stats.full_scans.load() != 0 ? 0 : 3);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "2: a pass while young; 3: no pass before 95 ms after 64 MiB registered";
}
