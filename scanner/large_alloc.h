// Large allocations served from memory the shim maps itself, so that the
// registry sees every change to them (glibc's own mmaps are invisible to an
// interposer). docs/DESIGN.md, "Large allocations", has the design.
//
// Blocks of up to 4 MiB come from big registered arenas (LargeHeap: a
// page-granular good-fit allocator with out-of-band metadata); bigger ones,
// and every block while allocation sites are captured, get a mapping each.
// Every block starts on a page boundary. A block whose pointer is not page
// aligned has a 16-byte header just before the pointer, shaped like a glibc
// mmapped chunk: [magic | offset from the block's start][usable size | 2].
// Copies of one buffer made with the same size therefore have identical
// first pages, and their data lies at the same page offsets.
#pragma once
#include <atomic>
#include <stddef.h>
#include <stdint.h>

namespace dedup {

namespace large_detail {
constexpr uint32_t kMagicTag = 0xded0a11c;
constexpr uint64_t kMagic = (uint64_t)kMagicTag << 32;
constexpr uint64_t kMagicMask = 0xffffffffull << 32;
constexpr uint64_t kMmappedBit = 2;  // glibc's IS_MMAPPED
// large_owns for a page-aligned pointer: a table lookup (out of line, rare).
bool owns_page_aligned(uintptr_t p);
}  // namespace large_detail

// nullptr if no memory could be mapped (the caller falls back to libc). With
// `zero`, the block reads zero (calloc): only pages that may hold old
// contents are cleared.
void* large_alloc(size_t size, size_t align, bool zero = false);
// True if p came from large_alloc. p must be a live pointer from some
// malloc-family function (the header words are then readable). Inline: every
// free and realloc asks. It reads only the 16 bytes before p, which are on
// p's own page; a page-aligned pointer is looked up instead.
inline bool large_owns(const void* p) {
    uintptr_t a = (uintptr_t)p;
    // Within 16 bytes of a page start (nullptr and page-aligned pointers
    // included): the header would be on another page, which for a foreign
    // allocator may not be mapped. Ours are 16-aligned there, so only a
    // page-aligned one can be ours, and the lookup knows it.
    if (__builtin_expect((a & 4095) < 16, 0)) return p && (a & 4095) == 0 && large_detail::owns_page_aligned(a);
    const uint64_t* h = static_cast<const uint64_t*>(p) - 2;
    if (__builtin_expect(!(h[1] & large_detail::kMmappedBit), 1)) return false;  // a glibc heap chunk: never ours
    return !(a & 15) && (h[0] & large_detail::kMagicMask) == large_detail::kMagic;
}

// The common case of !large_owns(p) in two tests, for free's fast path: p is
// not near a page start (so not nullptr), and the upper half of the word
// 16 bytes before it is not our magic, which every header of ours has, and
// the shim's bootstrap blocks too (see next_allocator.cpp). False means "ask
// large_owns", not "ours". The magic rather than the IS_MMAPPED bit: below a
// jemalloc or tcmalloc block lies the neighbour's data, where that bit is a
// coin toss and the branch would mispredict on every other free.
inline bool large_surely_foreign(const void* p) {
    uintptr_t a = (uintptr_t)p;
    if (__builtin_expect((a & 4095) < 16, 0)) return false;
    uint32_t tag;
    __builtin_memcpy(&tag, static_cast<const char*>(p) - 12, sizeof(tag));  // h[0] >> 32 (little-endian)
    return __builtin_expect(tag != large_detail::kMagicTag, 1);
}

// The rest take a pointer for which large_owns() is true.
size_t large_usable(const void* p);  // exact: the bytes from p to the block's end
void large_free(void* p);
// realloc in place: true if p now has at least n usable bytes (it shrank,
// or grew into free memory after it); false leaves p as it was.
bool large_resize(void* p, size_t n);
// realloc of a block with a mapping of its own by mremap (LargeHeap::remap):
// the new pointer, or nullptr with p as it was.
void* large_remap(void* p, size_t n);

// The scanner thread calls this once per wake-up: every 200 ms or so, memory
// free for a second or more goes back to the kernel (through rt_madvise, so
// that merged pages read zero afterwards), and arenas free for as long are
// unmapped. Cheap when there is nothing to do.
void large_trim();

// fork(): registered with pthread_atfork at the first large allocation. A
// process made without glibc's fork (a raw clone or fork system call) must
// call them too, prepare before the runtime's own prepare (this lock comes
// before the mm lock), child and parent after the runtime's.
void large_fork_prepare();
void large_fork_parent();
void large_fork_child();

// ---- the arena allocator itself (one instance serves large_alloc; unit tests
// make their own with raw system calls) ---------------------------------------

// How a heap gets and gives back memory; each returns an address or 0, or -errno.
struct LargeBackend {
    // Private anonymous read-write memory: anywhere (addr nullptr), or at
    // addr replacing what is there (MAP_FIXED).
    long (*map)(void* addr, size_t len);
    long (*unmap)(void* addr, size_t len);
    // Makes [addr, addr+len) read zero and gives its memory back.
    long (*discard)(void* addr, size_t len);
    // Moves or resizes the mapping at addr (mremap with MREMAP_MAYMOVE), its
    // pages with it; the new address or -errno. nullptr: blocks with a
    // mapping of their own are resized by copying.
    long (*remap)(void* addr, size_t old_len, size_t new_len);
};

class LargeHeap {
public:
    static constexpr size_t kPage = 4096;
    static constexpr int kGranuleShift = 21;  // arenas are 2 MiB aligned and sized
    static constexpr size_t kGranule = size_t(1) << kGranuleShift;
    static constexpr size_t kArenaMin = 4u << 20;
    static constexpr size_t kArenaMax = 64u << 20;
    static constexpr uint32_t kArenaMaxPages = kArenaMax / kPage;  // 16384: 14 bits
    static constexpr uint32_t kBlockMaxPages = (4u << 20) / kPage;  // bigger: a mapping of its own
    static constexpr int kMaxArenas = 2048;
    static constexpr int kBins = 104;
    static constexpr uint32_t kTrimAgeMs = 1000;    // free this long: given back
    static constexpr uint32_t kTrimEveryMs = 200;   // how often trim() looks
    static constexpr int kMaxPending = 32;          // ranges given back per look
    static constexpr uint32_t kHotMaxPages = 256;   // blocks up to 1 MiB may wait in the hot cache
    static constexpr int kHotWays = 2;              // blocks of one size per stripe
    static constexpr int kHotStripes = 8;           // threads use their own (by thread id)

    // Construct in zeroed memory, default-initialised (`new (mem) LargeHeap`,
    // which writes only the few members with initialisers); valid once
    // init() ran.
    void init(const LargeBackend& be) { be_ = be; }

    // Arena block, or a mapping of its own (see large_alloc; always with
    // own_mapping). nullptr if no memory could be mapped.
    void* alloc(size_t size, size_t align, bool zero, bool own_mapping = false);
    // For a pointer alloc() returned.
    void free(void* p);
    size_t usable(const void* p);
    bool resize(void* p, size_t n);
    // realloc of a block with a mapping of its own that resize() could not
    // do: its mapping is resized or moved, pages and all (no copy, no
    // fault), as glibc does for its mmapped chunks. The new pointer, or
    // nullptr (an arena block, a page-aligned one, no remap in the backend,
    // or the kernel refused) with p unchanged.
    void* remap(void* p, size_t n);
    // Is p inside one of this heap's arenas? Two loads, no lock.
    bool in_arena(uintptr_t p) const;
    // A page-aligned pointer this heap returned?
    bool owns_page_aligned(uintptr_t p) const;
    // Gives back free ranges untouched for at least min_age_ms (and unmaps
    // arenas free that long). Returns the bytes given back or unmapped. With
    // `periodic`, does nothing unless kTrimEveryMs passed since the last look.
    size_t trim(uint32_t min_age_ms, bool periodic);

    struct Counters {
        size_t arenas, arena_bytes;    // mapped arenas
        size_t used_bytes;             // allocated arena pages
        size_t free_bytes;             // free arena pages (in bins)
        size_t dirty_free_bytes;       // of those, pages that may hold old contents
        size_t free_ranges;
        size_t dedicated_blocks;       // blocks with a mapping of their own
    };
    Counters counters();
    // Returns the blocks waiting in the hot cache to the bins (trim() and a
    // heap about to grow do it).
    void flush_hot();
    // Checks every invariant (tiling, bins, counters); false and a message
    // on the first violation. For tests.
    bool check(char* why, size_t cap);

    // pthread_atfork: the lock is held across fork; the child takes back
    // what was in flight in other threads (ranges being given back, arenas
    // being unmapped).
    void fork_prepare();
    void fork_parent();
    void fork_child();

    // Milliseconds on the heap's coarse clock.
    static uint32_t now_ms();

private:
    struct PageInfo {
        uint32_t head;   // at a block's first page: pages | kFree | kBusy
        uint32_t tail;   // at a block's last page: its first page
        uint32_t next;   // free blocks: bin list (refs)
        uint32_t prev;
        uint32_t stamp;  // free blocks: now_ms() when trim() first saw them free (0: not yet)
    };
    struct Arena {
        uintptr_t base;  // 0: slot unused
        uint32_t pages;
        uint32_t used;   // allocated pages
        bool dying;      // being unmapped
        PageInfo* info;
        uint64_t* dirty;  // a bit per page: may hold old contents
        size_t meta_bytes;
    };
    struct Pending {
        uint32_t ref;    // a busy free block being given back
        uint32_t pages;
        bool ok;
    };
    class Lock {
    public:
        void lock();
        void unlock();
        void reset() { word_.store(0, std::memory_order_relaxed); }

    private:
        std::atomic<int> word_{0};  // 0 free, 1 held, 2 held with sleepers
    };

    static constexpr uint32_t kFree = 1u << 31;
    static constexpr uint32_t kBusy = 1u << 30;
    static constexpr uint32_t kLenMask = (1u << 30) - 1;
    static constexpr uint32_t kNil = 0xffffffffu;
    static constexpr int kPageBits = 14;
    static constexpr int kL1Shift = 34;  // 2^13 tables of 2^13 granules cover 47 bits
    static constexpr int kL2Bits = kL1Shift - kGranuleShift;
    static constexpr int kL1Size = 1 << (47 - kL1Shift);
    static constexpr int kAlignedSlots = 1024;

    static uint32_t ref(uint32_t slot, uint32_t page) { return slot << kPageBits | page; }
    Arena& arena_of_ref(uint32_t r) { return arenas_[r >> kPageBits]; }
    PageInfo& info(uint32_t r) { return arenas_[r >> kPageBits].info[r & (kArenaMaxPages - 1)]; }
    static int bin_of(uint32_t pages);
    int next_bin(int from) const;

    // Under the lock.
    void bin_insert(uint32_t r);
    void bin_remove(uint32_t r);
    void make_free(uint32_t slot, uint32_t first, uint32_t pages, uint32_t stamp);  // no coalescing
    void release(uint32_t slot, uint32_t first, uint32_t pages, uint32_t stamp);  // coalesces, inserts
    bool fits(uint32_t r, uint32_t pages, uint32_t align_pages, uint32_t* start) const;
    uint32_t find(uint32_t pages, uint32_t align_pages, uint32_t* start);
    void set_dirty(Arena& a, uint32_t first, uint32_t pages, bool dirty);
    uint32_t dirty_span(const Arena& a, uint32_t first, uint32_t pages, uint32_t* last) const;
    int radix_slot(uintptr_t p) const;  // -1 if not an arena's
    bool radix_set(uintptr_t base, size_t len, uint32_t value);

    void* arena_alloc(uint32_t pages, uint32_t align_pages, size_t off, size_t size, bool zero);
    void* hot_take(uint32_t pages);
    bool hot_put(uintptr_t p, uint32_t pages);
    // Under the lock: takes the allocated block at `first` out of the hot
    // cache if it waits there (then it is free; not binned).
    bool hot_reclaim(uint32_t slot, uint32_t first);
    bool grow(uint32_t min_pages);
    bool map_arena(size_t len, uintptr_t* base);
    void arena_free(int slot, uintptr_t p);
    bool arena_resize(int slot, void* p, size_t n);

    void* dedicated_alloc(size_t size, size_t align);
    void dedicated_free(void* p);

    // trim(): the work picked under the lock and done outside it.
    struct TrimWork;
    // Under the lock: free ranges untouched for min_age_ms, to give back (busy
    // meanwhile) or, whole arenas, to unmap (dying meanwhile).
    void trim_pick(uint32_t now, uint32_t min_age_ms, TrimWork& w);
    // Under the lock, the work done: ranges are free again (clean if given
    // back), arenas unmapped are forgotten (their metadata to meta[], for
    // meta_free outside the lock), the others are arenas again. Returns how
    // many went to meta[].
    int trim_settle(uint32_t now, const TrimWork& w, void** meta, size_t* meta_len);
    bool aligned_insert(uintptr_t p);
    bool aligned_contains(uintptr_t p) const;
    void aligned_erase(uintptr_t p);

    LargeBackend be_;
    Lock lock_;
    std::atomic<int> growing_{0};
    uint32_t slots_used_ = 0;  // high-water mark of arenas_
    size_t arena_bytes_ = 0;
    uint32_t arena_count_ = 0;
    std::atomic<uint32_t> last_look_ms_{0};
    std::atomic<bool> looked_{false};
    uint32_t bin_head_[kBins];
    uint64_t bin_map_[2] = {0, 0};
    Pending pending_[kMaxPending];
    int npending_ = 0;
    int dying_[kMaxPending];
    int ndying_ = 0;
    std::atomic<size_t> dedicated_{0};
    std::atomic<int> aligned_count_{0};
    std::atomic<uintptr_t> aligned_[kAlignedSlots];
    std::atomic<std::atomic<uint32_t>*> radix_[kL1Size];
    // Freed blocks with the default header (the pointer 16 bytes into its
    // first page), by exact size in pages: a malloc of that size takes one
    // without the lock. Still allocated as far as the bins know. A thread
    // puts into and takes from its own stripe first, so that threads do not
    // pass the same cache lines back and forth.
    std::atomic<uintptr_t> hot_[kHotStripes][kHotMaxPages + 1][kHotWays];
    // A bit per stripe and size: a block may wait there. Set after the
    // block is put (a hint: take and flush read only the slots it names, so
    // that they do not touch a page of slots per stripe).
    std::atomic<uint64_t> hot_sizes_[kHotStripes][(kHotMaxPages + 64) / 64];
    std::atomic<bool> hot_any_{false};  // something may have been put since the last flush
    Arena arenas_[kMaxArenas];
};

}  // namespace dedup
