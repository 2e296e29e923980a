// Domain: the shared slot table of a merge domain. Two Domain objects in one
// process are two members (each has its own open file description of the
// memfd, so its own member lock), which lets these tests drive both sides
// of the protocol step by step, and kill one.
#include <gtest/gtest.h>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include "scanner/domain.h"

using namespace dedup;

namespace {

std::string fresh_name(const char* what) {
    static int n = 0;
    return std::string("ut-") + what + "-" + std::to_string(getpid()) + "-" + std::to_string(n++);
}

// b joins a's domain; a accepts it from its tick (as its scanner would).
bool join_second(Domain& a, Domain& b, const std::string& name) {
    std::atomic<bool> done{false};
    bool ok = false;
    std::thread t([&] {
        ok = b.join(name.c_str());
        done = true;
    });
    while (!done) {
        a.tick(0);
        usleep(1000);
    }
    t.join();
    return ok;
}

struct TwoMembers : testing::Test {
    void SetUp() override {
        name = fresh_name("two");
        ASSERT_TRUE(a.join(name.c_str()));
        ASSERT_TRUE(join_second(a, b, name));
        ASSERT_EQ(a.members(), 2u);
    }
    std::string name;
    Domain a, b;
};

}  // namespace

TEST_F(TwoMembers, TheLastDropFreesASlotAndItsIdIsReused) {
    int64_t s = a.alloc_run(1);
    ASSERT_GE(s, 0);
    a.publish((uint32_t)s, 0x1234);
    EXPECT_TRUE(b.take((uint32_t)s, 0x1234));
    EXPECT_TRUE(a.used_by_others((uint32_t)s));
    EXPECT_EQ(a.canonical_pages(), 1u);
    a.drop((uint32_t)s);
    EXPECT_EQ(b.hash((uint32_t)s), 0x1234u) << "b still maps it";
    EXPECT_EQ(a.canonical_pages(), 1u);
    b.drop((uint32_t)s);
    EXPECT_EQ(a.hash((uint32_t)s), 0u);
    EXPECT_EQ(a.canonical_pages(), 0u);
    EXPECT_EQ(b.alloc_run(1), s) << "a freed id is handed out again";
}

TEST_F(TwoMembers, TakeRefusesAFreedOrRefilledSlot) {
    int64_t s = a.alloc_run(1);
    ASSERT_GE(s, 0);
    EXPECT_FALSE(b.take((uint32_t)s, 0)) << "not published yet";
    a.publish((uint32_t)s, 0x1111);
    a.drop((uint32_t)s);
    EXPECT_FALSE(b.take((uint32_t)s, 0x1111)) << "freed";
    ASSERT_EQ(a.alloc_run(1), s);
    a.publish((uint32_t)s, 0x2222);
    EXPECT_FALSE(b.take((uint32_t)s, 0x1111)) << "filled again with other content";
    EXPECT_TRUE(b.take((uint32_t)s, 0x2222));
}

// kill -9 of a member: within about a second another member clears its
// bits; slots only it used are freed, shared ones live on.
TEST_F(TwoMembers, ADeadMembersSlotsAreReaped) {
    int64_t shared = b.alloc_run(1), own = b.alloc_run(1);
    ASSERT_GE(shared, 0);
    ASSERT_GE(own, 0);
    b.publish((uint32_t)shared, 0xaaaa);
    b.publish((uint32_t)own, 0xbbbb);
    ASSERT_TRUE(a.take((uint32_t)shared, 0xaaaa));
    b.vanish_for_test();
    for (int i = 0; i < 300 && a.members() > 1; ++i) {
        a.tick(0);
        usleep(10 * 1000);
    }
    EXPECT_EQ(a.members(), 1u);
    EXPECT_EQ(a.hash((uint32_t)own), 0u) << "only the dead member used it";
    EXPECT_EQ(a.hash((uint32_t)shared), 0xaaaau);
    EXPECT_FALSE(a.used_by_others((uint32_t)shared));
    EXPECT_EQ(a.canonical_pages(), 1u);
}

// A member died holding the domain's lock while another dropped its last
// use of a slot: the one that recovers the lock rebuilds the free stack, and
// the dropper must not push the slot a second time (two owners of one id
// would write two contents into one canonical page).
// One member with one published slot, whose lock the tests take from it.
struct DomainLock : testing::Test {
    void SetUp() override {
        ASSERT_TRUE(a.join(fresh_name("lock").c_str()));
        s = a.alloc_run(1);
        ASSERT_GE(s, 0);
        a.publish((uint32_t)s, 0x77);
    }
    Domain a;
    int64_t s = -1;
};

TEST_F(DomainLock, RecoveryFromADeadHolderStacksEverySlotOnce) {
    a.abandon_lock_for_test();
    a.drop((uint32_t)s);  // recovers the lock, then frees
    EXPECT_EQ(a.canonical_pages(), 0u);
    int64_t x = a.alloc_run(1), y = a.alloc_run(1);
    EXPECT_EQ(x, s);
    EXPECT_NE(x, y) << "one slot handed out twice";
}

// A member dies holding the lock while two others wait: the kernel wakes
// one of them, and if that one is being killed too, its wake-up is lost.
// The other must still get the lock (it waits in slices and reads the word
// again) instead of sleeping for good with its scanner, and its process's
// exit behind it.
TEST_F(DomainLock, AWaiterGetsTheLockWhenTheWakeUpIsLost) {
    struct Waiter {
        Domain* d;
        uint32_t slot;
        std::atomic<bool> done{false};
        std::thread t;
    } w;
    w.d = &a;
    w.slot = (uint32_t)s;
    int* word = a.lose_wakeup_for_test(
        [](void* p) {
            Waiter* w = static_cast<Waiter*>(p);
            w->t = std::thread([w] {
                w->d->drop(w->slot);  // waits for the lock the holder keeps
                w->done = true;
            });
            usleep(100 * 1000);  // long enough to be asleep in the kernel
            return 0;
        },
        &w);
    for (int i = 0; i < 200 && !w.done; ++i) usleep(10 * 1000);
    EXPECT_TRUE(w.done) << "the waiter still sleeps 2 s after its lock's holder died";
    if (!w.done) syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);  // let it go: no hang here
    w.t.join();
    EXPECT_EQ(a.canonical_pages(), 0u) << "the drop after recovering the lock freed the slot";
}

// Hints: members that scan the same data in the same order put many
// contents into the hint table; a hint must survive other contents landing
// in its bucket, up to the bucket's size.
TEST_F(TwoMembers, AHintSurvivesOtherContentsInItsBucket) {
    const uint64_t h = 0x9d2c5680a1b2c3d4ull;
    auto bucket = [](uint64_t x) { return (x * 0x9e3779b97f4a7c15ull) >> 49; };
    std::vector<uint64_t> same;
    std::mt19937_64 rng(3);
    while (same.size() < 7) {
        uint64_t x = rng();
        if (bucket(x) == bucket(h) && (x >> 8) != (h >> 8)) same.push_back(x);
    }
    EXPECT_FALSE(a.hint(h)) << "nobody saw it before";
    for (uint64_t x : same) EXPECT_FALSE(a.hint(x));
    EXPECT_TRUE(b.hint(h)) << "a saw it: worth publishing";
    EXPECT_FALSE(a.hint(h)) << "a hint of a's own is no reason";
}
