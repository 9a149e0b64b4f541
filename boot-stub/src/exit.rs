//! How the stub ends: a code written to QEMU's `isa-debug-exit` port. QEMU exits with status
//! `(code << 1) | 1`, so success (0x10) is status 33.

/// One code per outcome class. The tests in `tests/` repeat this table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Relocated and verified (QEMU status 33).
    Success = 0x10,
    /// `hvm_start_info` missing, malformed or version 0 (status 35).
    BadBootInfo = 0x11,
    /// No RAM slot for a second copy of the image (status 37).
    NoRoom = 0x12,
    /// reloc-core rejected the relocation or the switch parameters (status 39).
    PlanError = 0x13,
    /// The post-switch checks on the CPU found a difference (status 41).
    VerifyFailed = 0x14,
    /// A panic or a CPU exception (status 43).
    Panic = 0x15,
    /// The image lies over memory the loader's map does not report as RAM (status 45).
    ImageNotRam = 0x16,
}

impl ExitCode {
    /// The status QEMU exits with.
    #[cfg_attr(target_os = "none", allow(dead_code))]
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

/// `isa-debug-exit` I/O port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
#[cfg(target_os = "none")]
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Writes `code` to the debug-exit port; if QEMU has no such device, halts forever.
#[cfg(target_os = "none")]
pub fn exit(code: ExitCode) -> ! {
    let mut port = x86_64::instructions::port::Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit, or nothing; writing it has no effect on
    // memory.
    unsafe { port.write(code as u32) };
    halt_forever()
}

/// Disables interrupts and halts, forever.
#[cfg(target_os = "none")]
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_odd() {
        let all = [
            ExitCode::Success,
            ExitCode::BadBootInfo,
            ExitCode::NoRoom,
            ExitCode::PlanError,
            ExitCode::VerifyFailed,
            ExitCode::Panic,
            ExitCode::ImageNotRam,
        ];
        let statuses: Vec<i32> = all.iter().map(|c| c.qemu_status()).collect();
        assert_eq!(statuses, [33, 35, 37, 39, 41, 43, 45]);
    }
}
