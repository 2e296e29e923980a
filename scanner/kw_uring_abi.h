// The io_uring ABI as the shim reads it: constants from linux/io_uring.h, as
// of Linux 6.18 (Debian 12's header is 6.1's), and the layout of liburing's
// struct io_uring (stable since 2.0). Only the kw_uring*.cpp files include it.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {
namespace uring {

constexpr uint32_t kSetupSqpoll = 1u << 1, kSetupSqe128 = 1u << 10, kSetupCqe32 = 1u << 11,
                   kSetupNoMmap = 1u << 14, kSetupRegisteredFdOnly = 1u << 15, kSetupNoSqarray = 1u << 16,
                   kSetupCqeMixed = 1u << 18, kSetupSqeMixed = 1u << 19;
constexpr uint32_t kFeatSingleMmap = 1u << 0;
constexpr unsigned kEnterRegisteredRing = 1u << 4;
constexpr unsigned kRegisterUseRegisteredRing = 1u << 31;
constexpr uint64_t kOffSqRing = 0, kOffCqRing = 0x8000000ull, kOffSqes = 0x10000000ull;
constexpr uint8_t kSqeBufferSelect = 1u << 5, kSqeCqeSkipSuccess = 1u << 6;
constexpr uint32_t kCqeMore = 1u << 1, kCqeNotif = 1u << 3, kCqe32 = 1u << 15, kCqeSkip = 1u << 16;
constexpr uint16_t kRecvMultishot = 1u << 1, kAcceptMultishot = 1u << 0;
constexpr uint32_t kRsrcRegisterSparse = 1u << 0;

enum Op : uint8_t {
    kReadv = 1, kReadFixed = 4, kRecvmsg = 10, kAccept = 13, kFilesUpdate = 20, kStatx = 21, kRead = 22,
    kMadvise = 25, kRecv = 27, kProvideBuffers = 31, kFgetxattr = 43, kGetxattr = 44, kUringCmd = 46,
    kReadMultishot = 49, kWaitid = 50, kRecvZc = 58, kEpollWait = 59, kReadvFixed = 60, kPipe = 62,
    kNop128 = 63, kUringCmd128 = 64, kLastKnown = 64,
};

enum RegOp : unsigned {
    kRegBuffers = 0, kRegProbe = 8, kRegBuffers2 = 15, kRegBuffersUpdate = 16, kRegIowqMaxWorkers = 19,
    kRegRingFds = 20, kUnregRingFds = 21, kRegPbufRing = 22, kRegPbufStatus = 26, kRegNapi = 27,
    kUnregNapi = 28, kRegZcrxIfq = 32, kRegResizeRings = 33, kRegMemRegion = 34, kRegQuery = 35,
    kRegLastKnown = 37,
};

struct SqOffsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};
struct CqOffsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};
struct Params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
    SqOffsets sq_off;
    CqOffsets cq_off;
};
static_assert(sizeof(Params) == 120, "struct io_uring_params");

struct Sqe {
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;  // addr2
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags;
    uint64_t user_data;
    uint16_t buf_index, personality;
    int32_t splice_fd_in;
    uint64_t addr3, pad2;
};
static_assert(sizeof(Sqe) == 64, "struct io_uring_sqe");

struct Cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct RsrcRegister {  // io_uring_rsrc_register
    uint32_t nr, flags;
    uint64_t resv2, data, tags;
};
struct RsrcUpdate2 {  // io_uring_rsrc_update2
    uint32_t offset, resv;
    uint64_t data, tags;
    uint32_t nr, resv2;
};
struct RsrcUpdate {  // io_uring_rsrc_update (IORING_REGISTER_RING_FDS)
    uint32_t offset, resv;
    uint64_t data;
};
struct QueryHdr {
    uint64_t next_entry, query_data;
    uint32_t query_op, size;
    int32_t result;
    uint32_t resv[3];
};

// liburing's struct io_uring.
struct LibSq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
    void* sqes;
    unsigned sqe_head, sqe_tail;
    size_t ring_sz;
    void* ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct LibCq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
    void* cqes;
    size_t ring_sz;
    void* ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct LibRing {
    LibSq sq;
    LibCq cq;
    unsigned flags;
    int ring_fd;
    unsigned features;
    int enter_ring_fd;
    uint8_t int_flags, pad[3];
    unsigned pad2;
};
static_assert(sizeof(LibRing) == 216, "liburing's struct io_uring");

}  // namespace uring
}  // namespace dedup
