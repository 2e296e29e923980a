/* A minimal io_uring for the hostile programs: raw io_uring_setup /
 * io_uring_enter / io_uring_register (no liburing), one submitter thread
 * per ring. The rings are MAP_SHARED mappings of the ring fd, which the shim
 * never registers. */
#ifndef HOSTILE_URING_H
#define HOSTILE_URING_H

#include "dtest.h"

#include <linux/io_uring.h>
#include <stdatomic.h>
#include <sys/syscall.h>

struct h_ring {
    int fd;
    unsigned sq_entries, cq_entries;
    _Atomic unsigned *sq_head, *sq_tail;
    unsigned *sq_mask, *sq_array;
    struct io_uring_sqe *sqes;
    _Atomic unsigned *cq_head, *cq_tail;
    unsigned *cq_mask;
    struct io_uring_cqe *cqes;
};

static inline int h_ring_init(struct h_ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0)
        return -1;
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (cq_sz > sq_sz)
            sq_sz = cq_sz;
        cq_sz = sq_sz;
    }
    unsigned char *sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -1;
    unsigned char *cq = sq;
    if (!single) {
        cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED)
            return -1;
    }
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        return -1;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->sq_head = (_Atomic unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (_Atomic unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (_Atomic unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (_Atomic unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Exits 0 with uring_unavailable=1 if this process cannot use io_uring
 * (io_uring_disabled, seccomp, an old kernel): the test then skips. */
static inline void h_ring_probe_or_exit(void)
{
    struct h_ring r;
    if (h_ring_init(&r, 2) == 0) {
        close(r.fd);
        return;
    }
    fprintf(stderr, "io_uring_setup: %s\n", strerror(errno));
    dt_out("uring_unavailable", "1");
    exit(0);
}

/* Queues one read (IORING_OP_READ, or READ_FIXED when buf_index >= 0). */
static inline void h_ring_queue_read(struct h_ring *r, int fd, void *buf, unsigned len, uint64_t off, int buf_index,
                                     uint64_t user_data)
{
    unsigned tail = atomic_load_explicit(r->sq_tail, memory_order_relaxed);
    unsigned idx = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = buf_index >= 0 ? IORING_OP_READ_FIXED : IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->off = off;
    if (buf_index >= 0)
        sqe->buf_index = (uint16_t)buf_index;
    sqe->user_data = user_data;
    r->sq_array[idx] = idx;
    atomic_store_explicit(r->sq_tail, tail + 1, memory_order_release);
}

/* Submits n queued entries and waits for n completions. */
static inline int h_ring_submit_wait(struct h_ring *r, unsigned n)
{
    for (;;) {
        long ret = syscall(__NR_io_uring_enter, r->fd, n, n, IORING_ENTER_GETEVENTS, NULL, 0);
        if (ret >= 0)
            return (int)ret;
        if (errno != EINTR)
            return -1;
        n = 0; /* submitted already; only wait */
    }
}

/* Takes one completion if there is one. */
static inline int h_ring_reap(struct h_ring *r, struct io_uring_cqe *out)
{
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    if (head == atomic_load_explicit(r->cq_tail, memory_order_acquire))
        return 0;
    *out = r->cqes[head & *r->cq_mask];
    atomic_store_explicit(r->cq_head, head + 1, memory_order_release);
    return 1;
}

static inline long h_ring_register(struct h_ring *r, unsigned op, void *arg, unsigned nr)
{
    return syscall(__NR_io_uring_register, r->fd, op, arg, nr);
}

#endif
