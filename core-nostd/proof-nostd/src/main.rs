//! Proof that pqcc-core runs with nothing but `core`.
//!
//! A freestanding x86_64 Linux executable: `#![no_std]`, `#![no_main]`, no global
//! allocator, no libc, no crt0 (linked with `-nostartfiles -nostdlib -static`, see
//! `.cargo/config.toml`). If `std` or `alloc` ever enters pqcc-core's dependency
//! tree, this crate stops building: `std` brings its own `#[panic_handler]` and
//! `#[lang = "eh_personality"]` (duplicate lang items), and `alloc` needs a
//! `#[global_allocator]`, which this binary deliberately does not have.
//!
//! `_start` uses the stack the kernel gave the process (`RLIMIT_STACK`, 8 MiB by
//! default; the proof needs far less, see `PAINT_BYTES`), paints the part of it the
//! run may use so the peak usage can be reported, and calls `run_all` with the
//! deterministic [`InsecureTestRng`]. It exits through a raw `exit_group` syscall:
//! 0 when every self-test passed, 1 otherwise.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::{asm, naked_asm};
use core::fmt::{self, Write};

use pqcc_core::selftest::{self, InsecureTestRng};

/// Bytes of stack painted below the entry stack pointer before the self-tests run.
/// 1 MiB: several times what ML-DSA-65 signing needs (about 112 KiB in release), and
/// well inside the default 8 MiB `RLIMIT_STACK` (the CI script checks the limit).
const PAINT_BYTES: usize = 1 << 20;
const PAINT_WORDS: usize = PAINT_BYTES / 8;
/// The paint pattern; a word still holding it after the run was never written.
const PAINT: u64 = 0x5eed_5eed_5eed_5eed;

/// Process entry point. On entry `rsp` points at `argc` and is 16-byte aligned.
///
/// The kernel maps the main stack lazily and grows it on access, so the paint loop
/// uses `push`, which moves `rsp` down with each store (a store far below `rsp`
/// could be refused by older kernels). `rsp` is then restored, re-aligned and passed
/// to `rust_main` as the top of the stack it may use.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "mov rcx, {words}",
        "movabs rax, {paint}",
        "2:",
        "push rax",
        "dec rcx",
        "jnz 2b",
        "add rsp, {bytes}",
        "mov rdi, rsp",
        "call {main}",
        "ud2",
        words = const PAINT_WORDS,
        bytes = const PAINT_BYTES,
        paint = const PAINT,
        main = sym rust_main,
    )
}

extern "C" fn rust_main(stack_top: usize) -> ! {
    let mut rng = InsecureTestRng::new(*b"pqcc/proof-nostd/seed/0000000001");
    let result = selftest::run_all(&mut rng);
    let peak = peak_stack(stack_top);
    let mut out = Buf::new();
    let code = match result {
        Ok(()) => {
            let _ = writeln!(
                out,
                "pqcc-core self-tests passed (sign/verify, handshake, seal/open, signed statement); peak stack {} bytes of {} painted",
                peak, PAINT_BYTES
            );
            0
        }
        Err(what) => {
            let _ = writeln!(out, "pqcc-core self-test FAILED: {what}");
            1
        }
    };
    write_stdout(out.as_bytes());
    exit_group(code)
}

/// Highest stack use below `top`, found as the lowest painted word that was written.
fn peak_stack(top: usize) -> usize {
    let bottom = top - PAINT_BYTES;
    let mut addr = bottom;
    while addr < top {
        // SAFETY: `[bottom, top)` is the part of the main-thread stack `_start` painted
        // with `push`; those pages stay mapped for the life of the process (Linux never
        // shrinks a stack mapping) and the address is 8-byte aligned. Only words below
        // this function's own frame are read, by volatile read of plain integers.
        let word = unsafe { core::ptr::read_volatile(addr as *const u64) };
        if word != PAINT {
            break;
        }
        addr += 8;
    }
    top - addr
}

fn write_stdout(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let ret: isize;
        // SAFETY: `write(1, ptr, len)` (syscall 1) only reads `len` bytes from `ptr`,
        // which `bytes` keeps valid; the kernel clobbers rcx and r11 and nothing else.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") 1isize => ret,
                in("rdi") 1usize,
                in("rsi") bytes.as_ptr(),
                in("rdx") bytes.len(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, readonly),
            );
        }
        if ret <= 0 {
            return;
        }
        bytes = &bytes[ret.unsigned_abs().min(bytes.len())..];
    }
}

fn exit_group(code: i32) -> ! {
    // SAFETY: `exit_group(code)` (syscall 231) ends every thread of the process and
    // never returns; it reads no memory.
    unsafe {
        asm!(
            "syscall",
            in("rax") 231usize,
            in("rdi") code as isize,
            options(noreturn, nostack, nomem),
        )
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut out = Buf::new();
    let _ = writeln!(out, "pqcc-core self-test PANICKED: {info}");
    write_stdout(out.as_bytes());
    exit_group(1)
}

/// The precompiled `core` is built with unwinding tables that name this symbol; with
/// `panic = "abort"` nothing ever unwinds, so it is never called. Release builds (fat
/// LTO) drop the reference; unoptimised ones still need the symbol to exist.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// A fixed-size line buffer for `core::fmt` (no allocator); output past 512 bytes is cut.
struct Buf {
    bytes: [u8; 512],
    len: usize,
}

impl Buf {
    const fn new() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

// ---- the memory routines LLVM may emit calls to -------------------------------------
//
// Without libc nobody provides these (compiler_builtins only does on bare-metal
// targets). They are written with `rep movsb`/`rep stosb` so the compiler cannot
// turn them back into calls to themselves.

/// `memcpy`: copies `n` bytes; the regions must not overlap.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes and not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both regions are valid for `n` bytes; the direction
    // flag is clear per the SysV ABI, so `rep movsb` copies forward.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// `memmove`: copies `n` bytes; the regions may overlap.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dest;
    }
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is before src, or after the end of src: a forward copy is safe.
        // SAFETY: as for `memcpy`; a forward copy never overwrites unread source bytes
        // when `dest` does not start inside `[src, src + n)`.
        unsafe {
            asm!(
                "rep movsb",
                inout("rcx") n => _,
                inout("rdi") dest => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags),
            );
        }
    } else {
        // dest starts inside src: copy backwards, last byte first.
        // SAFETY: both regions are valid for `n` bytes (caller), so `ptr + n - 1` is in
        // bounds; the direction flag is set only for this copy and cleared again, as
        // the ABI requires.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack),
            );
        }
    }
    dest
}

/// `memset`: fills `n` bytes with the low byte of `c`.
///
/// # Safety
/// `dest` must be valid for writes of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; DF is clear.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// `memcmp`: compares `n` bytes as unsigned chars.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and the caller guarantees both are readable for `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// `bcmp`: zero when the `n` bytes are equal.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { memcmp(a, b, n) }
}
