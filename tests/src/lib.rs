//! Integration tests for reloc: build the boot-stub image and boot it under QEMU.
//!
//! - [`qemu`]: builds the image (release, `x86_64-unknown-none`, once per test process),
//!   starts QEMU with extra arguments and optionally an HMP monitor on a unix socket, collects
//!   the serial output, waits with a timeout, kills.
//! - [`output`]: parses what the stub printed (memory map, avoided ranges, image, summary)
//!   so a test can recompute the target with reloc-core and compare.
//!
//! The boot tests live in `tests/boot.rs`. QEMU missing is a test failure with an install
//! hint, never a skip.
#![forbid(unsafe_code)]

pub mod output;
pub mod qemu;
