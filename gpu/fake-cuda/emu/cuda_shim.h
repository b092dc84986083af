// The CUDA built-ins that aes_gcm.cu uses, for compiling it as C++ and running it on a CPU
// in FakeCuda (a test fake standing in for a GPU; see emu.cpp).
//
// - Qualifiers (__device__, __global__, __launch_bounds__, __grid_constant__) vanish.
// - __shared__ becomes `static`: the blocks of a grid run one after another, the threads of
//   a block as fibers of one OS thread, so a static is exactly one block's shared memory.
// - __syncthreads() and __shfl_xor_sync() are barriers of the fiber scheduler.
// - __byte_perm and __brev follow the CUDA Math API definitions.
// - For gcm_open_tensor: __ldcg is a plain load, atomicAdd/atomicExch are plain
//   read-modify-writes (fibers are cooperative: nothing runs between the read and the
//   write), __threadfence() does nothing (one OS thread, nothing to order). __nanosleep
//   and now_ns() (the kernel's clock, left to this shim under PQCC_EMU) belong to the
//   emulator: sleeping lets the other streams' queued work progress, and the clock is
//   emulated (see emu.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__

// aes_gcm.cu reads %globaltimer through now_ns() unless PQCC_EMU is defined; the
// emulator's clock stands in for it.
#define PQCC_EMU

struct uint3 {
    unsigned x, y, z;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

extern uint3 threadIdx, blockIdx, blockDim, gridDim;

// The scheduler's barriers (emu.cpp). `kind` tells __syncthreads (0) from a shuffle (1):
// every live thread of the block must reach the same kind, or the launch fails.
void emu_barrier(int kind);
unsigned long long *emu_exchange_slots();

inline void __syncthreads() { emu_barrier(0); }

// Every lane of the warp must call it, as the real instruction requires (with a full
// mask); the emulator checks that all threads of the block arrive.
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;
    unsigned long long *slot = emu_exchange_slots();
    slot[threadIdx.x] = (unsigned long long)v;
    emu_barrier(1);
    unsigned src = (threadIdx.x & ~31u) | ((threadIdx.x & 31u) ^ (unsigned)lane_mask);
    T r = (T)slot[src];
    emu_barrier(1);
    return r;
}

// Byte n of the result is byte (s >> 4n) & 7 of the 8-byte value y:x (x in bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = (unsigned long long)x | ((unsigned long long)y << 32);
    unsigned r = 0;
    for (int n = 0; n < 4; n++) {
        unsigned sel = (s >> (4 * n)) & 7u;
        r |= (unsigned)((v >> (8 * sel)) & 0xffu) << (8 * n);
    }
    return r;
}

inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

// Loads through L2 only (ld.global.cg): on one CPU thread, plain loads.
inline uint4 __ldcg(const uint4 *p) { return *p; }
inline unsigned char __ldcg(const unsigned char *p) { return *p; }

// Atomics return the old value. Fibers switch only at barriers (a sleep resumes the same
// fiber), so a plain read-modify-write is atomic here.
inline unsigned atomicAdd(unsigned *p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}
inline unsigned atomicExch(unsigned *p, unsigned v) {
    unsigned old = *p;
    *p = v;
    return old;
}

inline void __threadfence() {}

// The emulator's (emu.cpp): a sleep lets FakeCuda run one operation queued on another
// stream (one a real GPU would run concurrently) and advances the emulated clock, which
// now_ns() reads. `unsigned long long` is the kernel's u64, typedef'd only in aes_gcm.cu.
void __nanosleep(unsigned ns);
unsigned long long now_ns();
