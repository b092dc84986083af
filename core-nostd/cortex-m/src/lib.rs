//! Support for running pqcc-core's self-tests on a Cortex-M4 under QEMU (mps2-an386).
//!
//! Linking this crate provides the defmt logger (semihosting stdout, decoded on the
//! host by `defmt-print`), panic and fault handlers that log and make QEMU exit with
//! status 1 through semihosting, and a stack-usage probe over the paint that
//! cortex-m-rt's `paint-stack` feature lays down at reset.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use cortex_m_semihosting::debug;
// The global defmt logger.
use defmt_semihosting as _;

/// Any panic (a failed test assertion included) is logged, then QEMU exits with
/// status 1 (semihosting `SYS_EXIT` with `ADP_Stopped_RunTimeErrorUnknown`).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("{}", defmt::Display2Format(info));
    exit_failure()
}

/// A fault (bad address, undefined instruction, ...) ends the run as a failure instead
/// of spinning in cortex-m-rt's default handler until the QEMU timeout.
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    defmt::error!(
        "HardFault: pc {=u32:#010x}, lr {=u32:#010x}",
        frame.pc(),
        frame.lr()
    );
    exit_failure()
}

/// Any other unexpected exception or interrupt: same.
#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    defmt::error!("unexpected exception {=i16}", irqn);
    exit_failure()
}

/// `defmt::panic!` (used by defmt-test for a failed outcome) logs its message itself;
/// then this runs instead of the core panic machinery.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    exit_failure()
}

/// Ends the run with a failure status.
pub fn exit_failure() -> ! {
    defmt::println!("pqcc-cortex-m: FAILED");
    loop {
        debug::exit(debug::EXIT_FAILURE);
    }
}

/// Where the stack is and how much of it was ever used.
#[derive(Debug, Clone, Copy, defmt::Format)]
pub struct StackUsage {
    /// Bytes between the stack's lowest allowed address and its top.
    pub size: usize,
    /// Bytes between the lowest written (unpainted) word and the top.
    pub peak: usize,
}

/// Measures the stack's high-water mark from the reset-time paint (`0xCCCC_CCCC`,
/// cortex-m-rt's `paint-stack`), scanning up from `_stack_end` (the end of `.bss`) to
/// the first word that no longer holds the paint.
pub fn stack_usage() -> StackUsage {
    unsafe extern "C" {
        // Provided by cortex-m-rt's link.x: the stack spans [_stack_end, _stack_start).
        static _stack_end: u32;
        static _stack_start: u32;
    }
    let bottom = (&raw const _stack_end) as usize;
    let top = (&raw const _stack_start) as usize;
    let mut addr = bottom;
    while addr < top {
        // SAFETY: [_stack_end, _stack_start) is RAM reserved for the stack by the linker
        // script, word-aligned (asserted by link.x); everything below this function's
        // frame is unused stack, so a volatile read of a plain u32 races with nothing.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    StackUsage {
        size: top - bottom,
        peak: top - addr,
    }
}
