// A merge domain (DEDUP_DOMAIN=NAME): processes of one user that share their
// canonical pages, as KSM shares pages across processes.
//
// What is shared is one memfd, handed from member to member over an abstract
// unix socket ("\0libdedup-domain.<uid>.<name>") with SCM_RIGHTS:
//   - a header: a robust process-shared mutex, the member table, the slot
//     allocator (bump pointer and free stack);
//   - the slot table: per canonical slot, its content hash and a word of
//     user bits (one per member that maps it) with a FREED mark;
//   - a hint table (hash -> member that saw a stable page with that hash), a
//     lossy hint checked against the slot table;
//   - the canonical pages themselves.
// No file is left anywhere: the memfd goes with the last process that maps
// it or holds it, whatever way it ends. Nothing needs a daemon or root; the
// first member creates the domain, any member accepts newcomers, and when
// the one that listens dies another takes the name over.
//
// Trust: a domain never spans users. The socket's peer must have our uid
// (SO_PEERCRED, both ways), the memfd must be ours and not accessible by
// group or others; anything else is refused with one log line, and the
// process merges alone.
//
// Lifetime of a canonical slot: a member sets its bit before it compares
// with the slot (so the slot cannot be freed under it) and clears it when its
// last page of the slot goes; the slot is freed (index entry erased, page
// punched, id reused) by whoever clears the last bit. A member that dies
// keeps its bits until another notices (its OFD lock on the memfd is gone:
// checked every second) and clears them: canonical memory nobody maps any
// more is given back within about a second of the last user's death.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

struct DomainShared;  // the shared memfd's layout (domain.cpp)

class Domain {
public:
    static constexpr int kMaxMembers = 63;

    // Joins domain `name` of this uid, creating it if nobody holds it.
    // False (said once in the log) when it cannot: the process then merges
    // alone.
    bool join(const char* name);
    bool joined() const { return shared_ != nullptr; }
    const char* name() const { return name_; }

    // The canonical pages: slot i is at data_offset() + i * 4096 of data_fd().
    int data_fd() const;
    uint64_t data_offset() const;
    uint64_t capacity() const;

    // n consecutive new slots for this member (its bit set), or -1.
    int64_t alloc_run(uint32_t n);
    // A slot this member filled: its content hash, for others to learn.
    void publish(uint32_t slot, uint64_t hash);
    // Calls fn(hash, slot) for the live canonical slots published since the
    // last call (all: every one, to catch slots freed and filled again):
    // each member keeps its own index of them (a shared index would touch a
    // page of shared memory per entry).
    void learn(bool all, void (*fn)(uint64_t hash, uint32_t slot, void* ctx), void* ctx);
    // Sets this member's bit on slot if it is a live canonical page of this
    // hash (then it cannot be freed until drop()); false otherwise.
    bool take(uint32_t slot, uint64_t hash);
    // Clears this member's bit; frees the slot if nobody uses it any more.
    void drop(uint32_t slot);
    uint64_t hash(uint32_t slot) const;
    // Whether another member maps slot too.
    bool used_by_others(uint32_t slot) const;
    // Whether another member saw a stable page with this hash (then a page
    // of ours with it is worth publishing); else remembers that we did.
    bool hint(uint64_t hash);

    // The scanner's housekeeping, about every 100 ms: accept newcomers (the
    // listening member), take over the name when its holder died, give back
    // the slots of dead members, publish this member's counters.
    void tick(uint64_t pages_mapped);

    // Fork: the child is a new member with the parent's bits (it maps the
    // same slots); until it claims them, a lock the parent took for it keeps
    // them.
    void before_fork();
    void after_fork_parent();
    void after_fork_child();
    // The member's descriptors, hidden from the program (runtime.h: rt_fds).
    int fds(int out[3]) const;
    void vacate_fd(int fd);

    // Counters: members alive, canonical pages in use, pages mapping them in
    // all members (saved = mapped - canonical).
    uint32_t members() const;
    uint64_t canonical_pages() const;
    uint64_t pages_mapped_all() const;
    bool full_warned() const { return full_warned_; }

    // Tests: this member dies as SIGKILL would leave it (its lock goes, its
    // bits stay); a thread takes the domain's lock and dies holding it.
    void vanish_for_test();
    void abandon_lock_for_test();
    // A holder dies and the kernel's one wake-up is lost (it went to a
    // waiter killed too): returns the lock word once wait_for_waiter(arg)
    // returned and the word says its owner died, with nobody woken.
    int* lose_wakeup_for_test(int (*wait_for_waiter)(void*), void* arg);

private:
    bool connect_and_receive(int* memfd);
    bool create_and_listen(int* memfd);
    bool attach(int memfd, bool fresh);
    bool claim_member();
    void lock() const;
    void unlock() const;
    void reap_dead_members();
    void free_slot(uint32_t slot);
    void accept_newcomers();
    void take_over_name();
    uint64_t bit() const { return 1ull << member_; }

    DomainShared* shared_ = nullptr;
    char name_[65] = "";
    int memfd_ = -1;        // the domain's memfd (kept, hidden)
    int member_fd_ = -1;    // our own open file description of it: holds our member lock
    int listen_fd_ = -1;    // the abstract socket, while we hold the name
    int child_fd_ = -1;     // during a fork: the child's member lock
    int member_ = -1;
    int child_member_ = -1;
    uint64_t next_reap_ns_ = 0, next_take_over_ns_ = 0;
    uint64_t learned_ = 0;  // slots below this were passed to learn()
    uint32_t hint_clock_ = 0;  // picks which hint of a full bucket goes
    bool full_warned_ = false;
};

}  // namespace dedup
