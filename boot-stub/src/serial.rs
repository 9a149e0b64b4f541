//! COM1 (16550 UART at 0x3f8) output, polled.

use core::fmt;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// Programs 115200 8N1 with interrupts off.
pub fn init() {
    let settings: [(u16, u8); 6] = [
        (1, 0x00), // IER: no interrupts
        (3, 0x80), // LCR: DLAB on
        (0, 0x01), // divisor low: 115200
        (1, 0x00), // divisor high
        (3, 0x03), // LCR: 8N1, DLAB off
        (2, 0xc7), // FCR: FIFO on, cleared
    ];
    for (offset, value) in settings {
        // SAFETY: COM1's registers; writing them configures the UART and touches no memory.
        unsafe { Port::<u8>::new(COM1 + offset).write(value) };
    }
}

fn put(byte: u8) {
    let mut status = Port::<u8>::new(COM1 + 5);
    // Bounded wait for the transmit holding register: a missing UART must not hang the stub.
    for _ in 0..100_000 {
        // SAFETY: reading COM1's line status register has no side effect on memory.
        if unsafe { status.read() } & 0x20 != 0 {
            break;
        }
    }
    // SAFETY: COM1's data register; writing it sends a byte.
    unsafe { Port::<u8>::new(COM1).write(byte) };
}

/// A `fmt::Write` sink on COM1 (`\n` sent as `\r\n`).
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

/// `println!` to COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
