//! Streaming SHA3-256 of files, for signing and verifying artifacts.
//!
//! [`sha3_256_file`] reads a file once, front to back, in [`CHUNK`]-sized reads into
//! one reused buffer, so memory stays constant whatever the file's size. It returns
//! the digest and the number of bytes hashed, which callers compare with the length
//! they expect: a file that changes while it is read is not detected here (sign and
//! verify what you hashed, not the path).
//!
//! The hash is the plain FIPS 202 SHA3-256 of the file's bytes, without a pqcc label,
//! so anyone can recompute it with `sha3sum -a 256` or Python's `hashlib.sha3_256`;
//! the signed statement that carries it supplies the domain separation.
//!
//! # Backends
//!
//! SHA3-256 of a large file is bound by the Keccak-f\[1600\] permutation. On x86-64
//! CPUs with AVX-512F and AVX-512VL (checked at run time) [`StreamingSha3`] uses
//! [`Backend::Avx512`], a permutation written here that keeps each of the 25 lanes in
//! its own vector register, does θ's column parities and most of χ with one
//! `vpternlogq` each and ρ with `vprolq`, and builds each round's output one row at a
//! time (θ's update and ρ of five lanes, then χ of that row); elsewhere it uses RustCrypto's `sha3`
//! ([`Backend::Portable`]). Both give the same bytes: the tests run the official
//! vectors through each.

use std::{
    fs::File,
    io::{ErrorKind, Read},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use sha3::{Digest, Sha3_256};

/// Bytes per read: 1 MiB.
pub const CHUNK: usize = 1 << 20;

/// SHA3-256's rate: 1088 bits, 136 bytes, 17 lanes (FIPS 202 §6.1, c = 512).
const RATE: usize = 136;

/// Which Keccak implementation a [`StreamingSha3`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// RustCrypto `sha3` (portable Rust).
    Portable,
    /// The AVX-512 permutation in this module (x86-64 with AVX-512F and AVX-512VL).
    Avx512,
}

impl Backend {
    /// The fastest backend this CPU runs.
    pub fn detect() -> Self {
        if avx512::available() {
            Backend::Avx512
        } else {
            Backend::Portable
        }
    }

    /// `portable` or `avx512`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Avx512 => "avx512",
        }
    }
}

#[derive(Clone)]
enum Inner {
    Portable(Sha3_256),
    Avx512 {
        state: [u64; 25],
        buf: [u8; RATE],
        buffered: usize,
    },
}

/// An incremental SHA3-256 over a byte stream, counting the bytes it absorbed.
#[derive(Clone)]
pub struct StreamingSha3 {
    inner: Inner,
    len: u64,
}

impl Default for StreamingSha3 {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamingSha3 {
    /// An empty hash on the fastest backend for this CPU ([`Backend::detect`]).
    pub fn new() -> Self {
        Self::with_backend(Backend::detect())
    }

    /// An empty hash on `backend`. [`Backend::Avx512`] on a CPU without it falls back
    /// to [`Backend::Portable`].
    pub fn with_backend(backend: Backend) -> Self {
        let inner = match backend {
            Backend::Avx512 if avx512::available() => Inner::Avx512 {
                state: [0; 25],
                buf: [0; RATE],
                buffered: 0,
            },
            _ => Inner::Portable(Sha3_256::new()),
        };
        Self { inner, len: 0 }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Portable(_) => Backend::Portable,
            Inner::Avx512 { .. } => Backend::Avx512,
        }
    }

    /// Absorbs `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        match &mut self.inner {
            Inner::Portable(h) => Digest::update(h, data),
            Inner::Avx512 {
                state,
                buf,
                buffered,
            } => {
                if *buffered > 0 {
                    let take = data.len().min(RATE - *buffered);
                    buf[*buffered..*buffered + take].copy_from_slice(&data[..take]);
                    *buffered += take;
                    data = &data[take..];
                    if *buffered < RATE {
                        return;
                    }
                    avx512::absorb(state, &buf[..]);
                    *buffered = 0;
                }
                let full = data.len() - data.len() % RATE;
                avx512::absorb(state, &data[..full]);
                let rest = &data[full..];
                buf[..rest.len()].copy_from_slice(rest);
                *buffered = rest.len();
            }
        }
    }

    /// The digest and the total length absorbed.
    pub fn finish(self) -> ([u8; 32], u64) {
        let digest = match self.inner {
            Inner::Portable(h) => h.finalize().into(),
            Inner::Avx512 {
                mut state,
                mut buf,
                buffered,
            } => {
                // FIPS 202 §6.1: SHA3-256(M) = KECCAK[512](M ‖ 01, 256); with pad10*1
                // the byte after the message gets 0x06 and the last byte of the block
                // gets 0x80 (the same byte when only one is free: 0x86).
                buf[buffered..].fill(0);
                buf[buffered] ^= 0x06;
                buf[RATE - 1] ^= 0x80;
                avx512::absorb(&mut state, &buf[..]);
                let mut out = [0u8; 32];
                for (o, lane) in out.chunks_exact_mut(8).zip(state) {
                    o.copy_from_slice(&lane.to_le_bytes());
                }
                out
            }
        };
        (digest, self.len)
    }
}

/// Keccak-f\[1600\] with AVX-512 (FIPS 202 §3.3 and §3.2, Algorithm 7).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{
        __m128i, _mm_andnot_si128, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_rolv_epi64,
        _mm_set1_epi64x, _mm_setzero_si128, _mm_ternarylogic_epi64, _mm_xor_si128,
    };

    use super::RATE;

    /// ι round constants RC\[i\] (FIPS 202 §3.2.5, Algorithm 5 folded into 64-bit lanes).
    const RC: [u64; 24] = [
        0x0000_0000_0000_0001,
        0x0000_0000_0000_8082,
        0x8000_0000_0000_808a,
        0x8000_0000_8000_8000,
        0x0000_0000_0000_808b,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8009,
        0x0000_0000_0000_008a,
        0x0000_0000_0000_0088,
        0x0000_0000_8000_8009,
        0x0000_0000_8000_000a,
        0x0000_0000_8000_808b,
        0x8000_0000_0000_008b,
        0x8000_0000_0000_8089,
        0x8000_0000_0000_8003,
        0x8000_0000_0000_8002,
        0x8000_0000_0000_0080,
        0x0000_0000_0000_800a,
        0x8000_0000_8000_000a,
        0x8000_0000_8000_8081,
        0x8000_0000_0000_8080,
        0x0000_0000_8000_0001,
        0x8000_0000_8000_8008,
    ];

    /// ρ offsets for lane A\[x, y\] at index x + 5y (FIPS 202 §3.2.2, Table 2).
    const RHO: [u32; 25] = [
        0, 1, 62, 28, 27, // y = 0
        36, 44, 6, 55, 20, // y = 1
        3, 10, 43, 25, 39, // y = 2
        41, 45, 15, 21, 8, // y = 3
        18, 2, 61, 56, 14, // y = 4
    ];

    /// `vpternlogq` truth table for a ^ b ^ c.
    const XOR3: i32 = 0x96;
    /// `vpternlogq` truth table for a ^ (!b & c), χ (FIPS 202 §3.2.4).
    const CHI: i32 = 0xd2;

    /// Whether this CPU has AVX-512F and AVX-512VL.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// Absorbs whole `RATE`-byte blocks of `blocks` into `state` (FIPS 202 §4,
    /// Algorithm 8 step 6). A trailing partial block is ignored; callers pass whole
    /// blocks.
    ///
    /// # Panics
    /// If the CPU lacks AVX-512F or AVX-512VL (callers check [`available`] first).
    pub(super) fn absorb(state: &mut [u64; 25], blocks: &[u8]) {
        assert!(
            available(),
            "AVX-512 Keccak called on a CPU without AVX-512"
        );
        // SAFETY: `absorb_avx512` needs only the CPU features `avx512f` and
        // `avx512vl`, whose presence was just checked at run time.
        unsafe { absorb_avx512(state, blocks) }
    }

    /// Rotates each 64-bit lane left by `n` (`vprolq`).
    macro_rules! rol {
        ($v:expr, $n:expr) => {
            _mm_rolv_epi64($v, _mm_set1_epi64x(i64::from($n)))
        };
    }

    /// One round Rnd(A, i_r) = ι(χ(π(ρ(θ(A)))), i_r) (FIPS 202 §3.3).
    ///
    /// The output is built one row (plane) at a time: row `y'` of π's output takes one
    /// lane from each input row, so as soon as its five lanes have had θ and ρ applied
    /// χ can finish that row, and its inputs are dead. That keeps far fewer values
    /// live than "all of ρπ, then all of χ" and was 9 % faster here (Zen 4).
    ///
    /// The indices are constant expressions of `x` and `y` on purpose: LLVM unrolls
    /// the loops completely, every index becomes a constant, and the 25 lanes stay in
    /// registers. Iterator forms with computed indices were 10x slower.
    macro_rules! round {
        ($a:ident, $rc:expr) => {{
            let a = &mut $a;
            // θ (§3.2.1): C[x] = ⊕_y A[x, y]; D[x] = C[x-1] ^ rot(C[x+1], 1).
            let mut c = [_mm_setzero_si128(); 5];
            for x in 0..5 {
                let t = _mm_ternarylogic_epi64::<XOR3>(a[x], a[x + 5], a[x + 10]);
                c[x] = _mm_ternarylogic_epi64::<XOR3>(t, a[x + 15], a[x + 20]);
            }
            let mut d = [_mm_setzero_si128(); 5];
            for x in 0..5 {
                d[x] = _mm_xor_si128(c[(x + 4) % 5], rol!(c[(x + 1) % 5], 1u32));
            }
            let mut out = [_mm_setzero_si128(); 25];
            for y2 in 0..5 {
                // π (§3.2.3): output lane (x', y') = input lane (x, y) with x' = y and
                // y' = 2x + 3y, i.e. x = 3(y' - 3x') mod 5. θ's update and ρ (§3.2.2) are
                // applied on the way.
                let mut b = [_mm_setzero_si128(); 5];
                for x2 in 0..5 {
                    let (x, y) = ((3 * (y2 + 15 - 3 * x2)) % 5, x2);
                    let v = _mm_xor_si128(a[x + 5 * y], d[x]);
                    b[x2] = match RHO[x + 5 * y] {
                        0 => v,
                        r => rol!(v, r),
                    };
                }
                // χ (§3.2.4): A[x, y] = B[x, y] ^ (!B[x+1, y] & B[x+2, y]). `vpternlogq`
                // issues at most three per cycle on some cores while `vpandn`/`vpxor` go to
                // every vector pipe; rows 0 and 4 use the latter to balance the two.
                for x in 0..5 {
                    let (p, q, r) = (b[x], b[(x + 1) % 5], b[(x + 2) % 5]);
                    out[x + 5 * y2] = if y2 == 0 || y2 == 4 {
                        _mm_xor_si128(p, _mm_andnot_si128(q, r))
                    } else {
                        _mm_ternarylogic_epi64::<CHI>(p, q, r)
                    };
                }
            }
            *a = out;
            // ι (§3.2.5).
            a[0] = _mm_xor_si128(a[0], _mm_cvtsi64_si128($rc as i64));
        }};
    }

    /// `rounds!(a; 0, 1, …)` runs `round!` with `RC[i]` for each listed `i`: the rounds are
    /// written out so that no value has to be carried in a fixed register across a
    /// loop's back edge (the unrolled form was 6 % faster here).
    macro_rules! rounds {
        ($a:ident; $($i:literal),*) => { $( round!($a, RC[$i]); )* };
    }

    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn absorb_avx512(state: &mut [u64; 25], blocks: &[u8]) {
        // One lane per register (the low 64 bits of an xmm), all 25 kept in
        // registers across the whole run of blocks.
        let mut a: [__m128i; 25] = [_mm_setzero_si128(); 25];
        for (r, &lane) in a.iter_mut().zip(state.iter()) {
            *r = _mm_cvtsi64_si128(lane as i64);
        }
        for block in blocks.chunks_exact(RATE) {
            // Algorithm 8 step 6: S ⊕ (P_i ‖ 0^c), the 17 rate lanes little-endian.
            for (r, w) in a.iter_mut().zip(block.chunks_exact(8)) {
                let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                *r = _mm_xor_si128(*r, _mm_cvtsi64_si128(w as i64));
            }
            rounds!(a; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
                20, 21, 22, 23);
        }
        for (lane, r) in state.iter_mut().zip(a.iter()) {
            *lane = _mm_cvtsi128_si64(*r) as u64;
        }
    }
}

/// Stand-in on other architectures: never available.
#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn absorb(_state: &mut [u64; 25], _blocks: &[u8]) {
        unreachable!("AVX-512 Keccak on a non-x86-64 target")
    }
}

/// SHA3-256 of everything `reader` yields, read in [`CHUNK`]-sized pieces into one
/// buffer. Returns `(digest, length)`.
pub fn sha3_256_reader<R: Read>(reader: &mut R) -> std::io::Result<([u8; 32], u64)> {
    sha3_256_reader_with(reader, Backend::detect())
}

/// [`sha3_256_reader`] on a chosen backend.
pub fn sha3_256_reader_with<R: Read>(
    reader: &mut R,
    backend: Backend,
) -> std::io::Result<([u8; 32], u64)> {
    let mut buf = vec![0u8; CHUNK];
    let mut h = StreamingSha3::with_backend(backend);
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// SHA3-256 of the file at `path`, read once. Returns `(digest, length)`.
///
/// The file is read and hashed in turn, [`CHUNK`] by [`CHUNK`], as long as reads come
/// from the page cache. In a file of at least [`OVERLAP_MIN`] bytes, the first read
/// slower than [`SLOW_READ`] (the bytes come from the device) moves the reading to a
/// second thread for the rest of the file ([`sha3_256_reader_adaptive`]), so the device
/// works while this thread hashes. Handing buffers between threads costs more CPU than
/// the copy out of the page cache it would hide, so a cached file is not handed over.
pub fn sha3_256_file(path: &Path) -> anyhow::Result<([u8; 32], u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let r = if len >= OVERLAP_MIN {
        sha3_256_reader_adaptive(f, Backend::detect()).map(|(d, n, _)| (d, n))
    } else {
        sha3_256_reader(&mut f)
    };
    r.with_context(|| format!("reading {}", path.display()))
}

/// Files from this size on may be read on a second thread while hashing
/// ([`sha3_256_file`]).
pub const OVERLAP_MIN: u64 = 2 * CHUNK as u64;

/// A read of one [`CHUNK`] slower than this (under 0.5 GB/s) did not come from the page
/// cache, which copies a megabyte in about a tenth of a millisecond.
pub const SLOW_READ: Duration = Duration::from_millis(2);

/// SHA3-256 of everything `reader` yields: read and hashed in turn on this thread until
/// one [`CHUNK`] takes longer than [`SLOW_READ`] to read, then on as
/// [`sha3_256_reader_overlapped`] (reading on a second thread). Returns `(digest,
/// length, whether it moved to a second thread)`.
pub fn sha3_256_reader_adaptive<R: Read + Send>(
    reader: R,
    backend: Backend,
) -> std::io::Result<([u8; 32], u64, bool)> {
    adaptive_with(reader, backend, SLOW_READ)
}

/// [`sha3_256_reader_adaptive`] with the threshold `slow_read` instead of [`SLOW_READ`].
fn adaptive_with<R: Read + Send>(
    mut reader: R,
    backend: Backend,
    slow_read: Duration,
) -> std::io::Result<([u8; 32], u64, bool)> {
    let mut buf = vec![0u8; CHUNK];
    let mut h = StreamingSha3::with_backend(backend);
    loop {
        let t = Instant::now();
        let n = read_full(&mut reader, &mut buf)?;
        let slow = t.elapsed() > slow_read;
        if n == 0 {
            let (d, len) = h.finish();
            return Ok((d, len, false));
        }
        h.update(&buf[..n]);
        if slow && n == CHUNK {
            drop(buf);
            let (d, len) = overlapped_from(reader, h)?;
            return Ok((d, len, true));
        }
    }
}

/// Buffers in flight between the reading and the hashing thread.
pub const OVERLAP_BUFFERS: usize = 3;

/// SHA3-256 of everything `reader` yields, read on a second (scoped) thread into
/// [`OVERLAP_BUFFERS`] reused [`CHUNK`]-sized buffers while this thread hashes the
/// previous ones. Same result as [`sha3_256_reader_with`]; memory stays constant.
/// A read error ends both threads and is returned.
pub fn sha3_256_reader_overlapped<R: Read + Send>(
    reader: R,
    backend: Backend,
) -> std::io::Result<([u8; 32], u64)> {
    overlapped_from(reader, StreamingSha3::with_backend(backend))
}

/// Goes on hashing into `h` what `reader` yields, reading on a second thread.
fn overlapped_from<R: Read + Send>(
    mut reader: R,
    mut h: StreamingSha3,
) -> std::io::Result<([u8; 32], u64)> {
    use std::sync::mpsc;
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(OVERLAP_BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..OVERLAP_BUFFERS {
        // The receiver is alive here; a send cannot fail.
        let _ = empty_tx.send(vec![0u8; CHUNK]);
    }
    std::thread::scope(|s| {
        let reading = s.spawn(move || -> std::io::Result<()> {
            // Ends when the hashing side hangs up (its receivers are gone) or at EOF.
            while let Ok(mut buf) = empty_rx.recv() {
                let n = read_full(&mut reader, &mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        for (buf, n) in full_rx {
            h.update(&buf[..n]);
            // The reader may already have finished; then the buffer is simply dropped.
            let _ = empty_tx.send(buf);
        }
        match reading.join() {
            Ok(Ok(())) => Ok(h.finish()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the reading thread panicked")),
        }
    })
}

/// Fills `buf` from `reader` until it is full or the reader is at its end; returns the
/// number of bytes read (0 only at the end).
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data_dir() -> PathBuf {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sha3");
        assert!(
            d.is_dir(),
            "test vectors missing: {} (the shared data directory is required)",
            d.display()
        );
        d
    }

    /// The 256 byte-aligned SHA3-256 ShortMsg KATs (0..2040 bits), see the README
    /// beside them.
    #[test]
    fn shortmsg_kats() {
        let path = data_dir().join("sha3_256_shortmsg_bytealigned.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = v
            .as_array()
            .or_else(|| v.get("cases").and_then(|c| c.as_array()))
            .or_else(|| v.get("tests").and_then(|c| c.as_array()))
            .expect("a list of cases");
        assert_eq!(cases.len(), 256);
        let mut n = 0;
        for c in cases {
            let bits = c["len_bits"].as_u64().unwrap();
            let msg = hex::decode(c["msg"].as_str().unwrap()).unwrap();
            let msg = &msg[..usize::try_from(bits / 8).unwrap()];
            let md = hex::decode(c["md"].as_str().unwrap()).unwrap();
            for backend in [Backend::Portable, Backend::Avx512] {
                // Streaming over a file-like reader, and in odd-sized pieces.
                let (got, len) = sha3_256_reader_with(&mut &msg[..], backend).unwrap();
                assert_eq!(got.to_vec(), md, "len_bits {bits} {backend:?}");
                assert_eq!(len, msg.len() as u64);
                for piece_len in [1, 7, 135, 136, 137] {
                    let mut h = StreamingSha3::with_backend(backend);
                    for piece in msg.chunks(piece_len) {
                        h.update(piece);
                    }
                    assert_eq!(
                        h.finish().0.to_vec(),
                        md,
                        "len_bits {bits} {backend:?} in {piece_len}-byte pieces"
                    );
                }
            }
            n += 1;
        }
        assert_eq!(n, 256);
    }

    /// Longer than one chunk, with a chunk edge inside: compare with one-shot hashing,
    /// and a file on disk.
    #[test]
    fn backend_detection_is_honest() {
        let h = StreamingSha3::with_backend(Backend::Avx512);
        assert_eq!(h.backend() == Backend::Avx512, avx512::available());
        assert_eq!(
            StreamingSha3::with_backend(Backend::Portable).backend(),
            Backend::Portable
        );
        eprintln!("SHA3-256 backend on this CPU: {}", Backend::detect().name());
    }

    #[test]
    fn multi_chunk_file() {
        let data: Vec<u8> = (0..(2 * CHUNK as u64 + 12345))
            .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[4])
            .collect();
        let want = pqcc_core::hash::sha3_256(&[&data]);
        let dir = std::env::temp_dir().join(format!("pqcc-hashing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("blob");
        std::fs::write(&p, &data).unwrap();
        let (got, len) = sha3_256_file(&p).unwrap();
        let mut f = File::open(&p).unwrap();
        let (portable, _) = sha3_256_reader_with(&mut f, Backend::Portable).unwrap();
        let overlapped = sha3_256_reader_overlapped(File::open(&p).unwrap(), Backend::detect());
        // Odd-sized reads: a reader that yields at most 1000 bytes per call.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let trickled = sha3_256_reader_overlapped(Trickle(&data), Backend::detect()).unwrap();
        assert_eq!(trickled, (want, data.len() as u64));
        // A read error ends the hash with that error.
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let err = sha3_256_reader_overlapped(Failing(3 * CHUNK + 5), Backend::detect());
        assert_eq!(err.unwrap_err().to_string(), "disk on fire");
        // Adaptive: bytes in memory stay on this thread; a reader as slow as a device
        // moves to a second one after its first chunk, with the same digest; an error
        // after the move still ends the hash with it.
        // (A loaded machine may pause a copy from memory for longer than SLOW_READ, so
        // "stays" is checked with a threshold no pause reaches.)
        let fast = adaptive_with(&data[..], Backend::detect(), Duration::from_secs(3600));
        assert_eq!(fast.unwrap(), (want, data.len() as u64, false));
        let any = sha3_256_reader_adaptive(&data[..], Backend::detect()).unwrap();
        assert_eq!((any.0, any.1), (want, data.len() as u64));
        struct Slow<R>(R);
        impl<R: Read> Read for Slow<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(SLOW_READ);
                self.0.read(buf)
            }
        }
        let slow = sha3_256_reader_adaptive(Slow(&data[..]), Backend::detect()).unwrap();
        assert_eq!(slow, (want, data.len() as u64, true));
        let err = sha3_256_reader_adaptive(Slow(Failing(3 * CHUNK + 5)), Backend::detect());
        assert_eq!(err.unwrap_err().to_string(), "disk on fire");
        assert_eq!(overlapped.unwrap(), (want, data.len() as u64));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, want);
        assert_eq!(portable, want);
        assert_eq!(len, data.len() as u64);
        assert!(sha3_256_file(Path::new("/nonexistent/pqcc")).is_err());
    }
}
