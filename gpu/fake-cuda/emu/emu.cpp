// FakeCuda's kernel emulator: runs the real kernel source (gpu/src/kernel/aes_gcm.cu,
// included unchanged) on the CPU, one block after another, the threads of a block as
// fibers (ucontext) of the calling thread. __syncthreads and shuffles are scheduler
// barriers: every thread runs until it reaches the next barrier, then all go on (the
// order alternates, see run_block). A block
// whose threads do not all reach the same barrier fails the launch (on a GPU that is
// undefined behaviour).
//
// gcm_open_tensor waits in the kernel for frames that copies on other streams deliver
// during the launch. Its __nanosleep switches back to the scheduler, which calls the
// launch's progress callback (FakeCuda runs one operation queued on another stream, on
// this thread's own stack, not the fiber's) and advances an emulated clock, the one
// now_ns() reads: by the nanoseconds asked for when an operation ran, by one second when
// none could. A wait for a frame that no queued operation can deliver thus reaches the
// kernel's 10 s timeout after about ten fruitless sleeps instead of hanging. With the
// blocks run one after another, block 0 takes every part of the tensor (its loop pulls
// parts from the counter until none is left); the other blocks find none.
//
// This checks the kernel's arithmetic, indexing and synchronisation structure, not its
// speed or anything specific to GPU hardware (memory model, bank conflicts).

#include "cuda_shim.h"

#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <vector>

#include "aes_gcm.cu"

uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

constexpr size_t STACK = 64 * 1024;
enum State { RUNNABLE, AT_BARRIER, DONE };

struct Fiber {
    ucontext_t ctx;
    char *stack = nullptr;
    State state = DONE;
    int kind = 0;
};

ucontext_t sched;
std::vector<Fiber> fibers;
unsigned current;
unsigned long long slots[FINAL_THREADS];
void (*body)(const void *);
const void *body_arg;

// The launch's progress callback (or null) and its argument; the emulated clock; a sleep
// the current fiber asked the scheduler for.
int (*progress_fn)(void *);
void *progress_ctx;
unsigned long long clock_ns;
bool sleep_pending;
unsigned sleep_for;

// On the scheduler's stack: lets the other streams progress, advances the clock.
void do_sleep() {
    const bool moved = progress_fn != nullptr && progress_fn(progress_ctx) != 0;
    clock_ns += moved ? sleep_for : 1000000000ull;
}

void trampoline() {
    body(body_arg);
    fibers[current].state = DONE;
    // Returning resumes `sched` (uc_link).
}

// Runs one block of `n` threads; 0 on success.
int run_block(unsigned n) {
    if (fibers.size() < n) fibers.resize(n);
    for (unsigned t = 0; t < n; t++) {
        Fiber &f = fibers[t];
        if (!f.stack) {
            f.stack = static_cast<char *>(std::malloc(STACK));
            if (!f.stack) return 3;
        }
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = &sched;
        makecontext(&f.ctx, trampoline, 0);
        f.state = RUNNABLE;
    }
    // Between barriers the threads run one after another, in ascending order in one phase
    // and descending in the next (starting direction alternating by block), so a missing
    // barrier between a write and another thread's read shows in one of them.
    for (unsigned phase = 0;; phase++) {
        bool down = ((phase + blockIdx.x) & 1u) != 0;
        for (unsigned i = 0; i < n; i++) {
            unsigned t = down ? n - 1 - i : i;
            if (fibers[t].state != RUNNABLE) continue;
            current = t;
            threadIdx = uint3{t, 0, 0};
            swapcontext(&sched, &fibers[t].ctx);
            while (sleep_pending) {  // the fiber sleeps: progress, then resume it
                sleep_pending = false;
                do_sleep();
                swapcontext(&sched, &fibers[t].ctx);
            }
        }
        unsigned done = 0, waiting = 0;
        int kind = -1;
        bool mixed = false;
        for (unsigned t = 0; t < n; t++) {
            if (fibers[t].state == DONE) done++;
            if (fibers[t].state == AT_BARRIER) {
                waiting++;
                if (kind >= 0 && kind != fibers[t].kind) mixed = true;
                kind = fibers[t].kind;
            }
        }
        if (done == n) return 0;
        if (done > 0 || mixed) return 1;  // divergent barrier
        for (unsigned t = 0; t < n; t++) fibers[t].state = RUNNABLE;
    }
}

struct Args {
    int kernel;
    const unsigned long long *ptrs;
    const unsigned char *params;
};

static_assert(sizeof(frame_params) == 4 * 15 + INLINE_AAD, "frame_params layout");
static_assert(sizeof(tensor_params) == 2768, "tensor_params layout (FakeCuda's TENSOR_PARAMS_LEN)");

void thunk(const void *a) {
    const Args *x = static_cast<const Args *>(a);
    frame_params p;
    if (x->params && x->kernel != 3) std::memcpy(&p, x->params, sizeof p);
    auto P = [&](int i) { return reinterpret_cast<void *>(static_cast<uintptr_t>(x->ptrs[i])); };
    switch (x->kernel) {
        case 0:
            gcm_setup(static_cast<u32 *>(P(0)), static_cast<u32 *>(P(1)));
            break;
        case 1:
            gcm_open_main(static_cast<u8 *>(P(0)), static_cast<const u8 *>(P(1)),
                          static_cast<const u32 *>(P(2)), p, static_cast<u32 *>(P(3)));
            break;
        case 2:
            gcm_open_final(static_cast<const u32 *>(P(0)), p, static_cast<const u32 *>(P(1)),
                           static_cast<u32 *>(P(2)), static_cast<u8 *>(P(3)));
            break;
        case 3: {
            tensor_params tp;
            std::memcpy(&tp, x->params, sizeof tp);
            gcm_open_tensor(static_cast<const u32 *>(P(0)), tp, static_cast<const u32 *>(P(1)),
                            static_cast<u32 *>(P(2)), static_cast<u32 *>(P(3)),
                            static_cast<u32 *>(P(4)));
            break;
        }
    }
}

}  // namespace

void emu_barrier(int kind) {
    fibers[current].state = AT_BARRIER;
    fibers[current].kind = kind;
    swapcontext(&fibers[current].ctx, &sched);
}

unsigned long long *emu_exchange_slots() { return slots; }

void __nanosleep(unsigned ns) {
    sleep_pending = true;
    sleep_for = ns;
    swapcontext(&fibers[current].ctx, &sched);
}

unsigned long long now_ns() { return clock_ns; }

// kernel: 0 gcm_setup, 1 gcm_open_main, 2 gcm_open_final, 3 gcm_open_tensor. `ptrs`
// are the pointer arguments in order (the struct argument left out), `params` the
// struct's bytes (frame_params; tensor_params for kernel 3) or null. `progress(ctx)`
// (may be null) is called on this thread's stack whenever a kernel thread sleeps
// (__nanosleep); it returns nonzero when it let some queued work progress. It must not
// launch a kernel (the emulator is not reentrant). The emulated clock starts at 0.
// Returns 0, 1 (threads diverged at a barrier), 2 (bad geometry) or 3 (out of memory).
extern "C" int pqcc_emu_launch(int kernel, unsigned grid, unsigned block,
                               const unsigned long long *ptrs, const unsigned char *params,
                               int (*progress)(void *), void *ctx) {
    if (grid == 0 || block == 0 || block > FINAL_THREADS) return 2;
    if (kernel == 3 && !params) return 2;
    static Args a;
    a = Args{kernel, ptrs, params};
    body = thunk;
    body_arg = &a;
    progress_fn = progress;
    progress_ctx = ctx;
    clock_ns = 0;
    sleep_pending = false;
    gridDim = uint3{grid, 1, 1};
    blockDim = uint3{block, 1, 1};
    int r = 0;
    for (unsigned b = 0; b < grid && r == 0; b++) {
        blockIdx = uint3{b, 0, 0};
        r = run_block(block);
    }
    progress_fn = nullptr;  // the callback's argument does not outlive the call
    progress_ctx = nullptr;
    return r;
}
