// A State of the test's own (not state()) for tests that drive scan_batch on
// real memory, with no shim and no scanner thread: set up as the runtime's
// start-up does, and cleared after each test so the next starts clean.
#pragma once
#include <gtest/gtest.h>

#include <memory>

#include "scanner/batch_scan.h"
#include "scanner/merge.h"
#include "scanner/os/kept_file.h"
#include "scanner/state.h"

namespace dedup {

struct ScanFixture : testing::Test {
    static constexpr size_t kPage = 4096;
    std::unique_ptr<State> sp;

    State& s() { return *sp; }

    void SetUp() override {
        sp.reset(new State);
        s().merge_all = true;
        static char zero[kPage];
        s().zero_hash = page_hash(zero);
        s().vmas.init(0);
    }
    void TearDown() override {
        s().regions.clear();
        s().index.clear();
        s().store.shutdown_for_test();
        kept_files().pagemap.close();
    }

    // One scanner look over [start, start + pages), batch by batch, as the
    // scanner thread makes it; the pages looked at. The caller holds the lock.
    size_t scan_range(uintptr_t start, size_t pages) {
        Region* r = s().regions.find(start);
        EXPECT_NE(r, nullptr);
        if (!r) return 0;
        size_t done = 0;
        while (done < pages) {
            size_t n = scan_batch(s(), *r, start + done * kPage, pages - done);
            if (n == 0) break;
            done += n;
        }
        return done;
    }
};

}  // namespace dedup
