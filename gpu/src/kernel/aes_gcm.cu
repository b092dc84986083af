// AES-256-GCM decryption in VRAM for pqcc-gpu (compiled at run time by NVRTC).
//
// NIST SP 800-38D, decryption (section 7.2) split over two kernels per frame:
//   gcm_open_main   CTR keystream (steps 3-4: GCTR with inc32 from J0+1) XORed into the
//                   ciphertext in place, and GHASH (step 5) over the virtual sequence
//                   zeros || A || 0-pad || C || 0-pad || len(A)||len(C), one partial
//                   value per thread block;
//   gcm_open_final  combines the partials, S = GHASH, T' = MSB(GCTR(J0, S)) (step 6),
//                   compares T' with the received tag in constant time (step 7), writes
//                   status 1 (tag verified) or 2 (tag mismatch), and on a mismatch zeroes
//                   the frame's bytes in VRAM, so a frame whose tag failed never leaves
//                   plaintext behind.
// gcm_open_tensor does the work of both for every frame of a small tensor in one launch
// that waits for each frame's copy (see the section before it, at the end of the file).
// Keys: gcm_setup expands the AES-256 key (FIPS 197, 5.2) and H = CIPH_K(0^128), and
// stores H^(2^k) for k < 64, H^i for i < THREADS and the part weights W(lb, m) (below),
// then zeroes the raw key it was given.
//
// GHASH in parallel. With X_0..X_{N-1} the GHASH input blocks, GHASH = sum X_i H^(N-i)
// = R * H with R = sum X_i H^(N-1-i). Leading zero blocks change nothing, so the input
// is front-padded to V = blocks * THREADS * seg blocks. Thread t of a block handles the
// virtual blocks t, t+THREADS, ... (Horner with H^THREADS); the threads' sums are
// weighted by H^(THREADS-1-t) and XORed into one value per block (a part of 2^lb =
// THREADS*seg virtual blocks). Part i of n is weighted by W(lb, n-1-i) = H^(2^lb (n-1-i)
// + 1), its place in R times the final H, from a table the key setup computes: the
// tag check multiplies every partial by its weight at once (one product per thread)
// and XORs them, so nothing after the last part is a chain of products.
//
// Side channels: AES uses one T-table replicated 32 times in shared memory, entry x of
// lane l at [x*32 + l], so every lane reads its own bank: no bank conflicts, and the
// time does not depend on the data. Single-thread code (key setup, the tag mask) reads
// an unreplicated shared table from one thread only. GF(2^128) products are computed
// with integer multiplies on masked operands (no tables, no data-dependent branches).

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned char u8;

#define THREADS 256
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 1  // resident blocks per SM the compiler must allow (register cap)
#endif
#define FINAL_THREADS 1024
#define INLINE_AAD 272  // a frame header (FRAME_HEADER_MAX_LEN = 269) travels in the launch
#define CTX_RK 0
#define CTX_HPOW 64
#define CTX_HLIN (64 + 4 * 64)
#define CTX_WEIGHTS (CTX_HLIN + 4 * THREADS)
#define WEIGHT_LB0 8     // log2(THREADS): the smallest log_blk (seg = 1)
#define WEIGHT_ROWS 8    // log_blk from 8 to 15 (seg up to 128)
#define CTX_WORDS (CTX_WEIGHTS + 4 * WEIGHT_ROWS * FINAL_THREADS)

__device__ const u32 T0G[256] = {
    0xc66363a5u, 0xf87c7c84u, 0xee777799u, 0xf67b7b8du, 0xfff2f20du, 0xd66b6bbdu, 0xde6f6fb1u, 0x91c5c554u,
    0x60303050u, 0x02010103u, 0xce6767a9u, 0x562b2b7du, 0xe7fefe19u, 0xb5d7d762u, 0x4dababe6u, 0xec76769au,
    0x8fcaca45u, 0x1f82829du, 0x89c9c940u, 0xfa7d7d87u, 0xeffafa15u, 0xb25959ebu, 0x8e4747c9u, 0xfbf0f00bu,
    0x41adadecu, 0xb3d4d467u, 0x5fa2a2fdu, 0x45afafeau, 0x239c9cbfu, 0x53a4a4f7u, 0xe4727296u, 0x9bc0c05bu,
    0x75b7b7c2u, 0xe1fdfd1cu, 0x3d9393aeu, 0x4c26266au, 0x6c36365au, 0x7e3f3f41u, 0xf5f7f702u, 0x83cccc4fu,
    0x6834345cu, 0x51a5a5f4u, 0xd1e5e534u, 0xf9f1f108u, 0xe2717193u, 0xabd8d873u, 0x62313153u, 0x2a15153fu,
    0x0804040cu, 0x95c7c752u, 0x46232365u, 0x9dc3c35eu, 0x30181828u, 0x379696a1u, 0x0a05050fu, 0x2f9a9ab5u,
    0x0e070709u, 0x24121236u, 0x1b80809bu, 0xdfe2e23du, 0xcdebeb26u, 0x4e272769u, 0x7fb2b2cdu, 0xea75759fu,
    0x1209091bu, 0x1d83839eu, 0x582c2c74u, 0x341a1a2eu, 0x361b1b2du, 0xdc6e6eb2u, 0xb45a5aeeu, 0x5ba0a0fbu,
    0xa45252f6u, 0x763b3b4du, 0xb7d6d661u, 0x7db3b3ceu, 0x5229297bu, 0xdde3e33eu, 0x5e2f2f71u, 0x13848497u,
    0xa65353f5u, 0xb9d1d168u, 0x00000000u, 0xc1eded2cu, 0x40202060u, 0xe3fcfc1fu, 0x79b1b1c8u, 0xb65b5bedu,
    0xd46a6abeu, 0x8dcbcb46u, 0x67bebed9u, 0x7239394bu, 0x944a4adeu, 0x984c4cd4u, 0xb05858e8u, 0x85cfcf4au,
    0xbbd0d06bu, 0xc5efef2au, 0x4faaaae5u, 0xedfbfb16u, 0x864343c5u, 0x9a4d4dd7u, 0x66333355u, 0x11858594u,
    0x8a4545cfu, 0xe9f9f910u, 0x04020206u, 0xfe7f7f81u, 0xa05050f0u, 0x783c3c44u, 0x259f9fbau, 0x4ba8a8e3u,
    0xa25151f3u, 0x5da3a3feu, 0x804040c0u, 0x058f8f8au, 0x3f9292adu, 0x219d9dbcu, 0x70383848u, 0xf1f5f504u,
    0x63bcbcdfu, 0x77b6b6c1u, 0xafdada75u, 0x42212163u, 0x20101030u, 0xe5ffff1au, 0xfdf3f30eu, 0xbfd2d26du,
    0x81cdcd4cu, 0x180c0c14u, 0x26131335u, 0xc3ecec2fu, 0xbe5f5fe1u, 0x359797a2u, 0x884444ccu, 0x2e171739u,
    0x93c4c457u, 0x55a7a7f2u, 0xfc7e7e82u, 0x7a3d3d47u, 0xc86464acu, 0xba5d5de7u, 0x3219192bu, 0xe6737395u,
    0xc06060a0u, 0x19818198u, 0x9e4f4fd1u, 0xa3dcdc7fu, 0x44222266u, 0x542a2a7eu, 0x3b9090abu, 0x0b888883u,
    0x8c4646cau, 0xc7eeee29u, 0x6bb8b8d3u, 0x2814143cu, 0xa7dede79u, 0xbc5e5ee2u, 0x160b0b1du, 0xaddbdb76u,
    0xdbe0e03bu, 0x64323256u, 0x743a3a4eu, 0x140a0a1eu, 0x924949dbu, 0x0c06060au, 0x4824246cu, 0xb85c5ce4u,
    0x9fc2c25du, 0xbdd3d36eu, 0x43acacefu, 0xc46262a6u, 0x399191a8u, 0x319595a4u, 0xd3e4e437u, 0xf279798bu,
    0xd5e7e732u, 0x8bc8c843u, 0x6e373759u, 0xda6d6db7u, 0x018d8d8cu, 0xb1d5d564u, 0x9c4e4ed2u, 0x49a9a9e0u,
    0xd86c6cb4u, 0xac5656fau, 0xf3f4f407u, 0xcfeaea25u, 0xca6565afu, 0xf47a7a8eu, 0x47aeaee9u, 0x10080818u,
    0x6fbabad5u, 0xf0787888u, 0x4a25256fu, 0x5c2e2e72u, 0x381c1c24u, 0x57a6a6f1u, 0x73b4b4c7u, 0x97c6c651u,
    0xcbe8e823u, 0xa1dddd7cu, 0xe874749cu, 0x3e1f1f21u, 0x964b4bddu, 0x61bdbddcu, 0x0d8b8b86u, 0x0f8a8a85u,
    0xe0707090u, 0x7c3e3e42u, 0x71b5b5c4u, 0xcc6666aau, 0x904848d8u, 0x06030305u, 0xf7f6f601u, 0x1c0e0e12u,
    0xc26161a3u, 0x6a35355fu, 0xae5757f9u, 0x69b9b9d0u, 0x17868691u, 0x99c1c158u, 0x3a1d1d27u, 0x279e9eb9u,
    0xd9e1e138u, 0xebf8f813u, 0x2b9898b3u, 0x22111133u, 0xd26969bbu, 0xa9d9d970u, 0x078e8e89u, 0x339494a7u,
    0x2d9b9bb6u, 0x3c1e1e22u, 0x15878792u, 0xc9e9e920u, 0x87cece49u, 0xaa5555ffu, 0x50282878u, 0xa5dfdf7au,
    0x038c8c8fu, 0x59a1a1f8u, 0x09898980u, 0x1a0d0d17u, 0x65bfbfdau, 0xd7e6e631u, 0x844242c6u, 0xd06868b8u,
    0x824141c3u, 0x299999b0u, 0x5a2d2d77u, 0x1e0f0f11u, 0x7bb0b0cbu, 0xa85454fcu, 0x6dbbbbd6u, 0x2c16163au,
};

struct gf { u64 lo, hi; };  // polynomial form: bit k of (hi:lo) is the coefficient of x^k

__device__ __forceinline__ u32 bswap32(u32 x) { return __byte_perm(x, 0, 0x0123); }
__device__ __forceinline__ u32 ror8(u32 x) { return __byte_perm(x, x, 0x0321); }
__device__ __forceinline__ u32 ror16(u32 x) { return __byte_perm(x, x, 0x1032); }
__device__ __forceinline__ u32 ror24(u32 x) { return __byte_perm(x, x, 0x2103); }

// GCM block (16 bytes read as four little-endian words) <-> polynomial form: the leftmost
// bit of the block is x^0 (SP 800-38D 6.3), so reverse the bits of every byte.
__device__ __forceinline__ gf gf_from_words(u32 w0, u32 w1, u32 w2, u32 w3) {
    gf r;
    r.lo = (u64)__brev(bswap32(w0)) | ((u64)__brev(bswap32(w1)) << 32);
    r.hi = (u64)__brev(bswap32(w2)) | ((u64)__brev(bswap32(w3)) << 32);
    return r;
}
__device__ __forceinline__ void gf_to_words(gf a, u32 *w) {
    w[0] = bswap32(__brev((u32)a.lo));
    w[1] = bswap32(__brev((u32)(a.lo >> 32)));
    w[2] = bswap32(__brev((u32)a.hi));
    w[3] = bswap32(__brev((u32)(a.hi >> 32)));
}

// Carry-less 32x32 -> 64 multiply. The operands are split into four parts with a set bit
// every fourth position; in each integer product every 4-bit slot counts at most 8 terms,
// so no carry reaches the next slot of the same residue and bit p holds the parity.
__device__ __forceinline__ u64 clmul32(u32 x, u32 y) {
    u32 x0 = x & 0x11111111u, x1 = x & 0x22222222u, x2 = x & 0x44444444u, x3 = x & 0x88888888u;
    u32 y0 = y & 0x11111111u, y1 = y & 0x22222222u, y2 = y & 0x44444444u, y3 = y & 0x88888888u;
    u64 z0 = ((u64)x0 * y0) ^ ((u64)x1 * y3) ^ ((u64)x2 * y2) ^ ((u64)x3 * y1);
    u64 z1 = ((u64)x0 * y1) ^ ((u64)x1 * y0) ^ ((u64)x2 * y3) ^ ((u64)x3 * y2);
    u64 z2 = ((u64)x0 * y2) ^ ((u64)x1 * y1) ^ ((u64)x2 * y0) ^ ((u64)x3 * y3);
    u64 z3 = ((u64)x0 * y3) ^ ((u64)x1 * y2) ^ ((u64)x2 * y1) ^ ((u64)x3 * y0);
    return (z0 & 0x1111111111111111ull) | (z1 & 0x2222222222222222ull) |
           (z2 & 0x4444444444444444ull) | (z3 & 0x8888888888888888ull);
}

// Carry-less 64x64 -> 128 (Karatsuba): result in (*hi:*lo).
__device__ __forceinline__ void clmul64(u64 a, u64 b, u64 *lo, u64 *hi) {
    u32 a0 = (u32)a, a1 = (u32)(a >> 32), b0 = (u32)b, b1 = (u32)(b >> 32);
    u64 l = clmul32(a0, b0);
    u64 h = clmul32(a1, b1);
    u64 m = clmul32(a0 ^ a1, b0 ^ b1) ^ l ^ h;
    *lo = l ^ (m << 32);
    *hi = h ^ (m >> 32);
}

// a * b in GF(2^128) mod x^128 + x^7 + x^2 + x + 1.
__device__ __forceinline__ gf gf_mul(gf a, gf b) {
    u64 r0, r1, r2, r3, m0, m1;
    clmul64(a.lo, b.lo, &r0, &r1);
    clmul64(a.hi, b.hi, &r2, &r3);
    clmul64(a.lo ^ a.hi, b.lo ^ b.hi, &m0, &m1);
    m0 ^= r0 ^ r2;
    m1 ^= r1 ^ r3;
    r1 ^= m0;
    r2 ^= m1;
    // Fold x^(128+k) = x^k (x^7 + x^2 + x + 1) for the high 128 bits (r3:r2).
    u64 d0 = r2 ^ (r2 << 1) ^ (r2 << 2) ^ (r2 << 7);
    u64 d1 = r3 ^ ((r3 << 1) | (r2 >> 63)) ^ ((r3 << 2) | (r2 >> 62)) ^ ((r3 << 7) | (r2 >> 57));
    u64 t = (r3 >> 63) ^ (r3 >> 62) ^ (r3 >> 57);
    d0 ^= t ^ (t << 1) ^ (t << 2) ^ (t << 7);
    gf r;
    r.lo = r0 ^ d0;
    r.hi = r1 ^ d1;
    return r;
}

__device__ __forceinline__ gf gf_xor(gf a, gf b) { gf r; r.lo = a.lo ^ b.lo; r.hi = a.hi ^ b.hi; return r; }
__device__ __forceinline__ gf ctx_pow(const u32 *ctx, int k) {
    const u32 *p = ctx + CTX_HPOW + 4 * k;
    gf r;
    r.lo = (u64)p[0] | ((u64)p[1] << 32);
    r.hi = (u64)p[2] | ((u64)p[3] << 32);
    return r;
}

// One AES-256 block with an unreplicated T-table (single-thread use only).
__device__ void aes_block_single(const u32 *t, const u32 *rk, const u32 in[4], u32 out[4]) {
    u32 s0 = in[0] ^ rk[0], s1 = in[1] ^ rk[1], s2 = in[2] ^ rk[2], s3 = in[3] ^ rk[3];
    for (int r = 1; r < 14; r++) {
        const u32 *k = rk + 4 * r;
        u32 n0 = t[s0 >> 24] ^ ror8(t[(s1 >> 16) & 255]) ^ ror16(t[(s2 >> 8) & 255]) ^ ror24(t[s3 & 255]) ^ k[0];
        u32 n1 = t[s1 >> 24] ^ ror8(t[(s2 >> 16) & 255]) ^ ror16(t[(s3 >> 8) & 255]) ^ ror24(t[s0 & 255]) ^ k[1];
        u32 n2 = t[s2 >> 24] ^ ror8(t[(s3 >> 16) & 255]) ^ ror16(t[(s0 >> 8) & 255]) ^ ror24(t[s1 & 255]) ^ k[2];
        u32 n3 = t[s3 >> 24] ^ ror8(t[(s0 >> 16) & 255]) ^ ror16(t[(s1 >> 8) & 255]) ^ ror24(t[s2 & 255]) ^ k[3];
        s0 = n0; s1 = n1; s2 = n2; s3 = n3;
    }
    const u32 *k = rk + 56;
#define SB(x) ((t[(x)] >> 16) & 255u)
    out[0] = ((SB(s0 >> 24) << 24) | (SB((s1 >> 16) & 255) << 16) | (SB((s2 >> 8) & 255) << 8) | SB(s3 & 255)) ^ k[0];
    out[1] = ((SB(s1 >> 24) << 24) | (SB((s2 >> 16) & 255) << 16) | (SB((s3 >> 8) & 255) << 8) | SB(s0 & 255)) ^ k[1];
    out[2] = ((SB(s2 >> 24) << 24) | (SB((s3 >> 16) & 255) << 16) | (SB((s0 >> 8) & 255) << 8) | SB(s1 & 255)) ^ k[2];
    out[3] = ((SB(s3 >> 24) << 24) | (SB((s0 >> 16) & 255) << 16) | (SB((s1 >> 8) & 255) << 8) | SB(s2 & 255)) ^ k[3];
#undef SB
}

// An element stored as four little-endian words (low word first).
__device__ __forceinline__ gf gf_from_u4(const uint4 q) {
    gf r;
    r.lo = (u64)q.x | ((u64)q.y << 32);
    r.hi = (u64)q.z | ((u64)q.w << 32);
    return r;
}

__device__ __forceinline__ gf ctx_hlin(const u32 *ctx, u32 i) {
    return gf_from_u4(*(const uint4 *)(ctx + CTX_HLIN + 4 * i));
}

__device__ __forceinline__ void gf_store(u32 *d, gf p) {
    d[0] = (u32)p.lo; d[1] = (u32)(p.lo >> 32); d[2] = (u32)p.hi; d[3] = (u32)(p.hi >> 32);
}

// The serial part of gcm_setup (thread 0): round keys, H^(2^k), H^i; zeroes the raw key.
__device__ void setup_serial(u32 *key, u32 *ctx, u32 *t, u32 *rk) {
    for (int i = 0; i < 256; i++) t[i] = T0G[i];
    // FIPS 197 5.2, Nk = 8, Nr = 14.
    for (int i = 0; i < 8; i++) rk[i] = bswap32(key[i]);
    u32 rcon = 1;
    for (int i = 8; i < 60; i++) {
        u32 temp = rk[i - 1];
        if (i % 8 == 0) {
            temp = (temp << 8) | (temp >> 24);  // RotWord
            temp = (((t[temp >> 24] >> 16) & 255u) << 24) | (((t[(temp >> 16) & 255] >> 16) & 255u) << 16) |
                   (((t[(temp >> 8) & 255] >> 16) & 255u) << 8) | ((t[temp & 255] >> 16) & 255u);
            temp ^= rcon << 24;
            rcon <<= 1;
        } else if (i % 8 == 4) {
            temp = (((t[temp >> 24] >> 16) & 255u) << 24) | (((t[(temp >> 16) & 255] >> 16) & 255u) << 16) |
                   (((t[(temp >> 8) & 255] >> 16) & 255u) << 8) | ((t[temp & 255] >> 16) & 255u);
        }
        rk[i] = rk[i - 8] ^ temp;
    }
    for (int i = 0; i < 60; i++) ctx[CTX_RK + i] = rk[i];
    for (int i = 60; i < 64; i++) ctx[i] = 0;
    u32 zero[4] = {0, 0, 0, 0}, hb[4];
    aes_block_single(t, rk, zero, hb);
    // hb is big-endian words of H; as little-endian memory words that is bswap32.
    gf p = gf_from_words(bswap32(hb[0]), bswap32(hb[1]), bswap32(hb[2]), bswap32(hb[3]));
    for (int k = 0; k < 64; k++) {
        gf_store(ctx + CTX_HPOW + 4 * k, p);
        p = gf_mul(p, p);
    }
    // H^i for i < THREADS: the weights of the threads' partial sums.
    gf h = ctx_pow(ctx, 0), q;
    q.lo = 1; q.hi = 0;
    for (int i = 0; i < THREADS; i++) {
        gf_store(ctx + CTX_HLIN + 4 * i, q);
        q = gf_mul(q, h);
    }
    for (int i = 0; i < 8; i++) key[i] = 0;
    for (int i = 0; i < 60; i++) rk[i] = 0;
    hb[0] = hb[1] = hb[2] = hb[3] = 0;
}

// Key setup, one block of THREADS threads: key = 32 raw bytes (8 little-endian words as
// copied), ctx out. Thread 0 expands the key and computes the powers of H; then every
// thread computes its share of the part weights (below).
extern "C" __global__ void __launch_bounds__(THREADS, 1) gcm_setup(u32 *key, u32 *ctx) {
    __shared__ u32 t[256];
    __shared__ u32 rk[60];
    if (blockIdx.x != 0) return;
    if (threadIdx.x == 0) setup_serial(key, ctx, t, rk);
    __syncthreads();
    // The weight of part i of a frame of n parts of 2^lb virtual blocks each is
    // W(lb, n-1-i) with W(lb, m) = H^(2^lb * m + 1): the part's place in GHASH, times the
    // final H (GHASH = R * H). Row lb - WEIGHT_LB0, column m < FINAL_THREADS. The
    // exponent is public (a part number), so the products may depend on its bits.
    for (u32 i = threadIdx.x; i < WEIGHT_ROWS * FINAL_THREADS; i += blockDim.x) {
        const u32 lb = WEIGHT_LB0 + i / FINAL_THREADS, m = i % FINAL_THREADS;
        gf w = ctx_pow(ctx, 0);
        for (u32 k = 0; (m >> k) != 0; k++) {
            if ((m >> k) & 1u) w = gf_mul(w, ctx_pow(ctx, lb + k));
        }
        gf_store(ctx + CTX_WEIGHTS + 4 * i, w);
    }
}

// Parameters of one frame, passed by value.
struct frame_params {
    u32 iv[3];      // nonce as little-endian memory words
    u32 len;        // ciphertext bytes
    u32 aad_len;    // AAD bytes (at most 4096)
    u32 n_blocks;   // N = ceil(aad/16) + ceil(len/16) + 1
    u32 zpad;       // leading zero blocks: blocks * THREADS * seg - N
    u32 seg;        // virtual blocks per thread (power of two)
    u32 log_blk;    // log2(THREADS * seg)
    u32 n_parts;    // thread blocks of gcm_open_main
    u32 index;      // this frame's status slot
    u32 tag[4];     // received tag as little-endian memory words
    u32 aad_inline[INLINE_AAD / 4];  // the AAD itself when aad_len <= INLINE_AAD
};

// Loads of frame bytes. The resident kernel (gcm_open_tensor) reads a frame only after the
// copy engine wrote it during the same launch, and L1 is not coherent with those writes:
// its loads go to L2 (ld.global.cg). The per-frame kernels use plain loads.
template <bool CG> __device__ __forceinline__ uint4 ld16(const uint4 *p) { return CG ? __ldcg(p) : *p; }
template <bool CG> __device__ __forceinline__ u8 ld1(const u8 *p) { return CG ? __ldcg(p) : *p; }

// Virtual block v of the GHASH input, for the slow path (edges and unaligned data).
template <bool CG>
__device__ __forceinline__ gf ghash_block(const frame_params &p, const u8 *data, const u8 *aad, u64 v, bool *is_ct, u32 *ct_index) {
    *is_ct = false;
    gf z; z.lo = 0; z.hi = 0;
    if (v < p.zpad) return z;
    u64 i = v - p.zpad;
    u32 a = (p.aad_len + 15) / 16;
    u32 c = (p.len + 15) / 16;
    u32 w[4];
    u8 b[16];
    if (i < a) {
        for (int k = 0; k < 16; k++) { u64 o = i * 16 + k; b[k] = o < p.aad_len ? aad[o] : 0; }
    } else if (i < (u64)a + c) {
        u64 j = i - a;
        *is_ct = true;
        *ct_index = (u32)j;
        for (int k = 0; k < 16; k++) { u64 o = j * 16 + k; b[k] = o < p.len ? ld1<CG>(data + o) : 0; }
    } else {
        u64 abits = (u64)p.aad_len * 8, cbits = (u64)p.len * 8;
        for (int k = 0; k < 8; k++) { b[k] = (u8)(abits >> (56 - 8 * k)); b[8 + k] = (u8)(cbits >> (56 - 8 * k)); }
    }
    for (int k = 0; k < 4; k++) w[k] = (u32)b[4 * k] | ((u32)b[4 * k + 1] << 8) | ((u32)b[4 * k + 2] << 16) | ((u32)b[4 * k + 3] << 24);
    return gf_from_words(w[0], w[1], w[2], w[3]);
}

// CTR keystream block for ciphertext block j: CIPH_K(IV || be32(j + 2)), as
// little-endian memory words. tsh is the replicated table, lane = threadIdx.x & 31.
__device__ __forceinline__ void aes_ctr(const u32 *tsh, const u32 *rk, const frame_params &p, u32 j, u32 lane, u32 out[4]) {
    // Byte k of a state word, as a table index: __byte_perm moves it to the low byte.
    const u32 *tl = tsh + lane;
#define B3(x) (tl[__byte_perm((x), 0, 0x4443) << 5])
#define B2(x) (tl[__byte_perm((x), 0, 0x4442) << 5])
#define B1(x) (tl[__byte_perm((x), 0, 0x4441) << 5])
#define B0(x) (tl[__byte_perm((x), 0, 0x4440) << 5])
    u32 s0 = bswap32(p.iv[0]) ^ rk[0], s1 = bswap32(p.iv[1]) ^ rk[1], s2 = bswap32(p.iv[2]) ^ rk[2], s3 = (j + 2u) ^ rk[3];
#pragma unroll
    for (int r = 1; r < 14; r++) {
        const u32 *k = rk + 4 * r;
        u32 n0 = B3(s0) ^ ror8(B2(s1)) ^ ror16(B1(s2)) ^ ror24(B0(s3)) ^ k[0];
        u32 n1 = B3(s1) ^ ror8(B2(s2)) ^ ror16(B1(s3)) ^ ror24(B0(s0)) ^ k[1];
        u32 n2 = B3(s2) ^ ror8(B2(s3)) ^ ror16(B1(s0)) ^ ror24(B0(s1)) ^ k[2];
        u32 n3 = B3(s3) ^ ror8(B2(s0)) ^ ror16(B1(s1)) ^ ror24(B0(s2)) ^ k[3];
        s0 = n0; s1 = n1; s2 = n2; s3 = n3;
    }
    const u32 *k = rk + 56;
    // Last round: SubBytes only; S[x] is byte 2 of T0[x] (T0[x] = 2S, S, S, 3S).
#define LASTW(a, b, c, d) __byte_perm(__byte_perm((c), (d), 0x0026), __byte_perm((a), (b), 0x2600), 0x7610)
    u32 o0 = LASTW(B3(s0), B2(s1), B1(s2), B0(s3));
    u32 o1 = LASTW(B3(s1), B2(s2), B1(s3), B0(s0));
    u32 o2 = LASTW(B3(s2), B2(s3), B1(s0), B0(s1));
    u32 o3 = LASTW(B3(s3), B2(s0), B1(s1), B0(s2));
#undef LASTW
    out[0] = bswap32(o0 ^ k[0]);
    out[1] = bswap32(o1 ^ k[1]);
    out[2] = bswap32(o2 ^ k[2]);
    out[3] = bswap32(o3 ^ k[3]);
#undef B3
#undef B2
#undef B1
#undef B0
}

// The T-table replicated once per lane (entry x of lane l at x*32 + l) and the round keys,
// loaded into shared memory by all threads of a block; the caller synchronises.
__device__ __forceinline__ void load_tables(u32 *tsh, u32 *rk, const u32 *ctx, u32 tid) {
    for (u32 i = tid; i < 256 * 8; i += THREADS) {
        const u32 v = T0G[i >> 3];
        uint4 q; q.x = v; q.y = v; q.z = v; q.w = v;
        ((uint4 *)tsh)[i] = q;
    }
    if (tid < 60) rk[tid] = ctx[CTX_RK + tid];
}

// One Horner step y * hstep + x; the first step (y = 0) needs no product.
__device__ __forceinline__ gf horner(gf y, gf hstep, gf x, bool first) {
    return first ? x : gf_xor(gf_mul(y, hstep), x);
}

// Complete ciphertext block j of an aligned frame: decrypted in place (16-byte access),
// its GHASH input folded into y (one Horner step). Returns the new y.
template <bool CG>
__device__ __forceinline__ gf open_block16(uint4 *d4, u32 j, const u32 *tsh, const u32 *rk, const frame_params &p,
                                           u32 lane, gf y, gf hstep, bool first) {
    const uint4 c = ld16<CG>(d4 + j);
    u32 ks[4];
    aes_ctr(tsh, rk, p, j, lane, ks);
    y = horner(y, hstep, gf_from_words(c.x, c.y, c.z, c.w), first);
    uint4 o; o.x = c.x ^ ks[0]; o.y = c.y ^ ks[1]; o.z = c.z ^ ks[2]; o.w = c.w ^ ks[3];
    d4[j] = o;
    return y;
}

// XOR of every thread's y over the block (blockDim.x threads, a multiple of 32): warp
// shuffles, then the warps' sums through `red` (one entry per warp). The total is
// returned to thread 0 only; every thread must call it (it ends after a barrier).
__device__ __forceinline__ gf block_xor(gf y, u64 (*red)[2]) {
    const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) {
        y.lo ^= __shfl_xor_sync(0xffffffffu, y.lo, k);
        y.hi ^= __shfl_xor_sync(0xffffffffu, y.hi, k);
    }
    if (lane == 0) { red[warp][0] = y.lo; red[warp][1] = y.hi; }
    __syncthreads();
    gf s; s.lo = 0; s.hi = 0;
    if (tid == 0) {
        for (u32 w = 0; w < blockDim.x / 32; w++) { s.lo ^= red[w][0]; s.hi ^= red[w][1]; }
    }
    return s;
}

// Part `blk` of a frame (THREADS * seg virtual blocks): decrypts its ciphertext blocks in
// place and stores its GHASH partial at `out` (written by thread 0). All threads of the
// block call it; it ends with the block synchronised.
template <bool CG>
__device__ __forceinline__ void open_part(u8 *data, const u8 *aad, const u32 *ctx, const frame_params &p, u32 blk,
                                          const u32 *tsh, const u32 *rk, u64 (*red)[2], uint4 *out) {
    const u32 tid = threadIdx.x, lane = tid & 31;
    const gf hstep = ctx_pow(ctx, 8);  // H^THREADS
    const u64 base = (u64)blk << p.log_blk;
    const u32 a = (p.aad_len + 15) / 16;
    const u32 full = p.len / 16;  // complete ciphertext blocks
    // Fast path: every virtual block of this part is a complete ciphertext block and the
    // data is 16-byte aligned.
    const u64 first_ct = (u64)p.zpad + a;
    const bool fast = ((((size_t)data) & 15) == 0) && base >= first_ct && base + ((u64)1 << p.log_blk) <= first_ct + full;
    gf y; y.lo = 0; y.hi = 0;
    if (fast) {
        u32 j = (u32)(base - first_ct) + tid;
        for (u32 s = 0; s < p.seg; s++, j += THREADS) {
            y = open_block16<CG>((uint4 *)data, j, tsh, rk, p, lane, y, hstep, s == 0);
        }
    } else {
        // A part at an edge of the frame: the complete, aligned ciphertext blocks still
        // go the fast way, one by one; the rest (padding, AAD, a last partial block, the
        // lengths) byte by byte.
        const bool aligned = (((size_t)data) & 15) == 0;
        u64 v = base + tid;
        for (u32 s = 0; s < p.seg; s++, v += THREADS) {
            if (aligned && v >= first_ct && v < first_ct + full) {
                y = open_block16<CG>((uint4 *)data, (u32)(v - first_ct), tsh, rk, p, lane, y, hstep, s == 0);
                continue;
            }
            bool is_ct; u32 j = 0;
            gf x = ghash_block<CG>(p, data, aad, v, &is_ct, &j);
            y = horner(y, hstep, x, s == 0);
            if (is_ct) {
                u32 ks[4];
                aes_ctr(tsh, rk, p, j, lane, ks);
                u8 kb[16];
                for (int k = 0; k < 4; k++) { kb[4*k] = (u8)ks[k]; kb[4*k+1] = (u8)(ks[k] >> 8); kb[4*k+2] = (u8)(ks[k] >> 16); kb[4*k+3] = (u8)(ks[k] >> 24); }
                for (int k = 0; k < 16; k++) { u64 o = (u64)j * 16 + k; if (o < p.len) data[o] = ld1<CG>(data + o) ^ kb[k]; }
            }
        }
    }
    // Horner in H^THREADS: y_t = sum_s X_(t + s*THREADS) H^(THREADS*(seg-1-s)). The part's
    // value is sum_t y_t H^(THREADS-1-t): one product per thread with its weight (a
    // table from the key setup), then a plain XOR reduction.
    y = gf_mul(y, ctx_hlin(ctx, THREADS - 1 - tid));
    const gf sum = block_xor(y, red);
    if (tid == 0) gf_store((u32 *)out, sum);
    __syncthreads();
}

// Decrypts `data` (p.len bytes) in place and writes one GHASH partial per block.
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gcm_open_main(u8 *data, const u8 *aad_mem, const u32 *ctx, const __grid_constant__ frame_params p, u32 *partials) {
    // Short AAD (every channel header) comes with the parameters: no copy of its own.
    const u8 *aad = p.aad_len <= INLINE_AAD ? (const u8 *)p.aad_inline : aad_mem;
    __shared__ __align__(16) u32 tsh[256 * 32];
    __shared__ u32 rk[60];
    __shared__ u64 red[THREADS / 32][2];
    load_tables(tsh, rk, ctx, threadIdx.x);
    __syncthreads();
    open_part<false>(data, aad, ctx, p, blockIdx.x, tsh, rk, red, (uint4 *)(partials + 4 * blockIdx.x));
}

__device__ __forceinline__ gf ctx_weight(const u32 *ctx, u32 i) {
    return gf_from_u4(*(const uint4 *)(ctx + CTX_WEIGHTS + 4 * i));
}

// The tag check of frame p from its n_parts partials at `partials`, by every thread of
// the block (a multiple of 32 threads, at most FINAL_THREADS). GHASH = sum_i P_i W(lb,
// n-1-i): each thread multiplies its partials by their weights (a table from the key
// setup: no products in a chain), the block XOR-reduces them (warp shuffles, then `red`),
// and meanwhile the last thread computes the tag mask E_K(J0) with the unreplicated
// table `t`. Thread 0 compares T' = GHASH xor E_K(J0) with the received tag in constant
// time. Returns to every thread 1 (verified), 2 (mismatch) or 3 (`missing`: a part gave
// up waiting for its frame). CG: read the partials through L2 (they were written during
// the same launch).
template <bool CG>
__device__ u32 frame_verdict(const u32 *t, const u32 *rk, const u32 *ctx, const frame_params &p,
                             const u32 *partials, u32 missing, u64 (*red)[2], u32 *mask, u32 *verdict) {
    const u32 tid = threadIdx.x, nt = blockDim.x;
    const u32 row = (p.log_blk - WEIGHT_LB0) * FINAL_THREADS + p.n_parts - 1;
    gf y; y.lo = 0; y.hi = 0;
    for (u32 i = tid; i < p.n_parts; i += nt) {
        const gf x = gf_from_u4(ld16<CG>((const uint4 *)(partials + 4 * i)));
        y = gf_xor(y, gf_mul(x, ctx_weight(ctx, row - i)));
    }
    if (tid == nt - 1) {
        u32 j0[4] = {bswap32(p.iv[0]), bswap32(p.iv[1]), bswap32(p.iv[2]), 1u}, e[4];
        aes_block_single(t, rk, j0, e);
        for (int k = 0; k < 4; k++) { mask[k] = bswap32(e[k]); e[k] = 0; }
    }
    const gf s = block_xor(y, red);
    if (tid == 0) {
        u32 sw[4];
        gf_to_words(s, sw);
        u32 diff = 0;
        for (int k = 0; k < 4; k++) diff |= sw[k] ^ mask[k] ^ p.tag[k];
        for (int k = 0; k < 4; k++) { sw[k] = 0; mask[k] = 0; }
        *verdict = missing ? 3u : (diff == 0 ? 1u : 2u);
    }
    __syncthreads();
    return *verdict;
}

// Checks the tag from the partials (one block of 64 to FINAL_THREADS threads).
extern "C" __global__ void __launch_bounds__(FINAL_THREADS) gcm_open_final(const u32 *ctx, const __grid_constant__ frame_params p, const u32 *partials, u32 *status, u8 *data) {
    __shared__ u32 verdict;
    __shared__ u64 red[FINAL_THREADS / 32][2];
    __shared__ u32 t[256];
    __shared__ u32 rk[60];
    __shared__ u32 mask[4];
    const u32 tid = threadIdx.x;
    for (u32 i = tid; i < 256; i += blockDim.x) t[i] = T0G[i];
    if (tid < 60) rk[tid] = ctx[CTX_RK + tid];
    __syncthreads();
    const u32 v = frame_verdict<false>(t, rk, ctx, p, partials, 0, red, mask, &verdict);
    if (tid == 0) status[p.index] = v;
    // A frame whose tag failed is zeroed here, in stream order, before anyone can read it.
    if (v != 1u) {
        for (u64 i = tid; i < p.len; i += blockDim.x) data[i] = 0;
    }
}

// ---------------------------------------------------------------------------------------
// gcm_open_tensor: every frame of a small tensor in ONE launch that stays resident while
// the frames are still being copied. The host launches it right after queueing the first
// copy (the kernel may start before or after any copy); after each frame's copy, the
// copy's stream writes `gen` into arrived[frame] (cuStreamWriteValue32, ordered after
// the copy). The blocks take parts of frames in order from a counter, wait
// until their frame has arrived, open the part as gcm_open_main does, and the block that
// completes a frame's last part reduces its partials, checks the tag, writes the status
// word and zeroes the frame if it failed, as gcm_open_final does. No launch per frame.
//
// `work` is this launch's set of SET_WORDS words: work[0] hands out parts; work[1 + f]
// counts frame f's finished parts; work[1 + RF + f] is set when a part of frame f gave up
// waiting (RESIDENT_TIMEOUT_NS): the frame then gets status 3 and is zeroed; the status
// words follow (work + STATUS_AT). The set is all zero at launch. The host alternates two
// sets, and the block that takes part 0 zeroes the other one (`next`) for the next launch
// on the same stream, which cannot start before this one ends: no memset per tensor. (The
// host zeroes both itself when a launch may not have completed.)

#define RESIDENT_FRAMES 8
#define STATUS_AT (1 + 2 * RESIDENT_FRAMES)
#define SET_WORDS (STATUS_AT + RESIDENT_FRAMES)
#define RESIDENT_TIMEOUT_NS 10000000000ull  // 10 s: only ends a wait for a copy that never came

#ifndef PQCC_EMU
__device__ __forceinline__ u64 now_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#endif

// The parameters of gcm_open_tensor, by value (2768 bytes, under the 4 KiB launch limit).
// With flag_group k > 0 the frames were copied on k streams in turn and only each
// stream's last frame got a flag (written after that stream's copies): frame f waits for
// the flag of the last frame on its stream.
struct tensor_params {
    u64 data[RESIDENT_FRAMES];           // each frame's bytes in VRAM (ciphertext, then plaintext)
    u32 part_base[RESIDENT_FRAMES + 1];  // prefix sums of the frames' n_parts
    u32 n_frames;
    u32 gen;                             // arrived[f] == gen once frame f is in VRAM
    u32 flag_group;                      // 0, or k: only each of k streams' last frame has a flag
    frame_params f[RESIDENT_FRAMES];
};

// Thread 0: waits until *flag == gen; 1 if it did, 0 after RESIDENT_TIMEOUT_NS.
__device__ u32 wait_arrived(const u32 *flag, u32 gen) {
    const volatile u32 *v = (const volatile u32 *)flag;
    u64 start = 0;
    for (u32 spins = 0;; spins++) {
        if (*v == gen) {
            __threadfence();
            return 1;
        }
        if (spins == 0) start = now_ns();
        else if (now_ns() - start > RESIDENT_TIMEOUT_NS) return 0;
        __nanosleep(128);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gcm_open_tensor(const u32 *ctx, const __grid_constant__ tensor_params tp, const u32 *arrived, u32 *work, u32 *next, u32 *partials) {
    __shared__ __align__(16) u32 tsh[256 * 32];
    __shared__ u32 rk[60];
    __shared__ u64 red[THREADS / 32][2];
    __shared__ u64 fin[THREADS / 32][2];
    __shared__ u32 t[256];
    __shared__ u32 mask[4];
    __shared__ u32 part_sh, here_sh, last_sh, verdict_sh;
    const u32 tid = threadIdx.x;
    load_tables(tsh, rk, ctx, tid);
    for (u32 i = tid; i < 256; i += THREADS) t[i] = T0G[i];
    __syncthreads();
    const u32 nf = tp.n_frames < RESIDENT_FRAMES ? tp.n_frames : RESIDENT_FRAMES;
    const u32 total = tp.part_base[nf];
    for (;;) {
        if (tid == 0) part_sh = atomicAdd(&work[0], 1u);
        __syncthreads();
        const u32 part = part_sh;
        if (part == 0) {
            for (u32 i = tid; i < SET_WORDS; i += THREADS) next[i] = 0;
        }
        if (part >= total) break;
        u32 f = 0;
        while (f + 1 < nf && part >= tp.part_base[f + 1]) f++;
        const frame_params &p = tp.f[f];
        u8 *data = (u8 *)tp.data[f];
        const u32 fl = tp.flag_group ? f + (nf - 1 - f) / tp.flag_group * tp.flag_group : f;
        if (tid == 0) here_sh = wait_arrived(arrived + fl, tp.gen);
        __syncthreads();
        if (here_sh) {
            open_part<true>(data, (const u8 *)p.aad_inline, ctx, p, part - tp.part_base[f], tsh, rk, red,
                            (uint4 *)(partials + 4 * part));
        } else if (tid == 0) {
            atomicExch(&work[1 + RESIDENT_FRAMES + f], 1u);
        }
        if (tid == 0) {
            __threadfence();  // this part's partial (or its missing mark) before the count
            last_sh = atomicAdd(&work[1 + f], 1u) == p.n_parts - 1 ? 1u : 0u;
        }
        __syncthreads();
        if (last_sh) {
            __threadfence();
            const u32 missing = ((const volatile u32 *)work)[1 + RESIDENT_FRAMES + f];
            const u32 verdict = frame_verdict<true>(t, rk, ctx, p, partials + 4 * tp.part_base[f], missing, fin, mask, &verdict_sh);
            if (tid == 0) work[STATUS_AT + p.index] = verdict;
            // A frame whose tag failed (or that never arrived) is zeroed before the kernel ends.
            if (verdict != 1u) {
                for (u64 i = tid; i < p.len; i += THREADS) data[i] = 0;
            }
        }
        // No barrier needed here: every shared word thread 0 writes next (part_sh, then
        // here_sh, last_sh, verdict_sh) was read by all threads before a barrier that
        // thread 0 passes first.
    }
}
