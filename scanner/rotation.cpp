#include "scanner/rotation.h"

#include "scanner/log.h"
#include "scanner/merge.h"
#include "scanner/meta_alloc.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

constexpr size_t kMaxRun = 512;
constexpr int kLeftoverTries = 5;

bool maps_retiring_slot(const SlotStore& st, uint32_t state) {
    return has_slot(state) && st.is_retiring(slot_of(state));
}

bool begin(State& s) {
    SlotStore& st = s.store;
    Rotation& rot = s.rotation;
    uint64_t first = st.retiring_end();  // before the rotation: the current generation's ids
    uint64_t count = st.slots_allocated();
    uint32_t* to_new = static_cast<uint32_t*>(meta_alloc(count * sizeof(uint32_t)));
    if (!to_new) return false;
    if (!st.begin_rotation()) {
        meta_free(to_new, count * sizeof(uint32_t));
        return false;
    }
    rot.to_new = to_new;
    rot.old_first = first;
    rot.old_count = count;
    rot.cursor = 0;
    // Its canonical entries name old slots: no new merge may map them.
    s.index.clear();
    return true;
}

// The new slot holding old's content, copied on first use. -1 if the store
// has no room.
int64_t new_slot_for(State& s, uint32_t old) {
    SlotStore& st = s.store;
    uint32_t& t = s.rotation.to_new[old - s.rotation.old_first];
    uint64_t h = st.hash(old);
    // A copy whose pages all went away may have been freed, or reused for
    // other content.
    if (t && !st.is_free(t - 1) && st.hash(t - 1) == h) return t - 1;
    int64_t n = st.alloc_run(1);
    if (n < 0) return -1;
    st.fill((uint32_t)n, st.content(old), h);
    t = (uint32_t)n + 1;
    PageIndex::Entry* e = s.index.find(h);
    if (!e || !PageIndex::is_slot(e->value())) s.index.put(h, PageIndex::slot_value((uint32_t)n));
    return n;
}

// Step 2: up to max_pages pages moved onto the new file. 0 when a sweep over
// every region ended without work.
size_t move_pages(State& s, size_t max_pages) {
    Rotation& rot = s.rotation;
    size_t work = 0, looks = 0;
    const size_t max_looks = max_pages * 64;  // reading PageMeta is cheap
    while (work < max_pages && looks < max_looks) {
        size_t i = s.regions.lower_bound(rot.cursor);
        if (i == s.regions.count()) {  // a sweep ended: the scanner gets a turn
            rot.cursor = 0;
            break;
        }
        Region& r = s.regions[i];
        uintptr_t a = rot.cursor > r.start ? rot.cursor : r.start;
        while (a < r.end && !maps_retiring_slot(s.store, r.at(a).state) && looks < max_looks) {
            a += kPageSize;
            ++looks;
        }
        rot.cursor = a;
        if (a >= r.end || looks >= max_looks) continue;
        uint32_t first_new = 0;
        size_t n = 0;
        for (uintptr_t p = a; p < r.end && n < kMaxRun; p += kPageSize) {
            uint32_t state = r.at(p).state;
            if (!maps_retiring_slot(s.store, state)) break;
            int64_t slot = new_slot_for(s, slot_of(state));
            if (slot < 0) break;
            if (n == 0) first_new = (uint32_t)slot;
            else if ((uint32_t)slot != first_new + n) break;
            ++n;
        }
        if (n == 0) {  // the store is full: try again on the next sweep
            rot.cursor = a + kPageSize;
            ++work;
            continue;
        }
        long k = merge_onto_slots(s, r, a, n, first_new);
        work += n;
        if (k < 0) {  // not now (a kernel write into it, VMA budget): next sweep
            rot.cursor = a + n * kPageSize;
            continue;
        }
        uintptr_t next = a + (size_t)k * kPageSize;
        if ((size_t)k < n) {
            // Differs from its canonical page: written since its merge, so it
            // is a private copy the kernel made. Step 3 makes it anonymous.
            note_cow_break(s, r.at(next));
            next += kPageSize;
        }
        rot.cursor = next;
    }
    return work;
}

// Step 3: pages of the old file left in the program's memory (private
// copies inside old-file VMAs) become anonymous, 64 VMAs per step. Given up
// (said once) only when several tries in a row make no progress: an unmerge
// may fail for want of memory, and memory the shim does not track cannot be
// unmerged.
size_t finish_leftovers(State& s) {
    Rotation& rot = s.rotation;
    uint64_t now = monotonic_ns();
    if (now < rot.next_try_ns) return 0;
    constexpr long kBatch = 64;
    uintptr_t lo[kBatch], hi[kBatch];
    long n = find_vmas_of_file(rot.leftover_ino, SlotStore::kMemfdName, lo, hi, kBatch);
    if (n > 0 && (uint64_t)n >= rot.leftover_last) ++rot.leftover_tries;  // no progress
    else rot.leftover_tries = 0;
    rot.leftover_last = n > 0 ? (uint64_t)n : 0;
    if (n <= 0 || rot.leftover_tries >= kLeftoverTries) {
        if (n > 0)
            log_warning("%ld mappings of a retired canonical memfd could not be made anonymous; "
                        "its memory stays in use while they exist",
                        n);
        rot.leftover_ino = 0;
        return n == 0 ? 1 : 0;
    }
    for (long i = 0; i < n && i < kBatch; ++i) unmerge_range(s, lo[i], hi[i], Unmerge::kWhenFree);
    if (rot.leftover_tries) rot.next_try_ns = now + 100 * 1000000ull;  // wait before trying again
    return 1;
}

void end(State& s) {
    SlotStore& st = s.store;
    Rotation& rot = s.rotation;
    // Copies made for pages that then could not move (written, or gone).
    for (uint64_t i = 0; i < rot.old_count; ++i) {
        uint32_t t = rot.to_new[i];
        if (!t || st.refs(t - 1) != 0) continue;
        forget_slot_entry(s, t - 1);
        st.release_unused(t - 1);
    }
    meta_free(rot.to_new, rot.old_count * sizeof(uint32_t));
    rot.to_new = nullptr;
    rot.leftover_ino = st.retiring_inode();
    rot.leftover_tries = 0;
    rot.leftover_last = UINT64_MAX;
    rot.next_try_ns = 0;
    st.end_rotation();
    s.stats.store_rotations.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

size_t rotation_step(State& s, size_t max_pages) {
    SlotStore& st = s.store;
    if (s.rotation.leftover_ino) return finish_leftovers(s);
    if (!st.retiring() && (!st.rotation_due() || !begin(s))) return 0;
    if (st.retiring_refs() == 0) {
        end(s);
        return 1;
    }
    return move_pages(s, max_pages);
}

void rotation_reset_in_child(Rotation& rot) {
    if (rot.to_new) meta_free(rot.to_new, rot.old_count * sizeof(uint32_t));
    rot = Rotation();
}

}  // namespace dedup
