//! boot-stub: an image that boots like a hypervisor (QEMU's `-kernel` through PVH, GRUB
//! through multiboot2) and relocates itself with reloc-core, the way Xen's `move_xen()` does,
//! then proves on the CPU that it moved.
//!
//! Built for `x86_64-unknown-none` it is a freestanding image linked at
//! `0xffffffff80200000` and loaded at physical `0x200000` (`linker.ld`); see `entry` for
//! the two entries and the boot page tables, `idt` for the stub's own IDT and the CPU state
//! the loader left, `boot` for the boot information, `cpu` for the PGE and LA57 choices,
//! `stub` for the relocation and its checks, `ram` for the image-in-RAM rule, `stack` for the stack high-water mark of the
//! relocation path, and `fault` for the `keep-pge` fault injection. Output goes to COM1; the
//! outcome is an `isa-debug-exit` code (`exit::ExitCode`).
//!
//! On the host the crate is an empty program, so workspace builds, tests and clippy work.
#![cfg_attr(target_os = "none", no_std, no_main)]

// On the host only the constants' compile-time checks and unit tests use these.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod exit;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod layout;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod ram;

#[cfg(target_os = "none")]
mod serial;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod fault;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod in_place;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod stub;
#[cfg(target_os = "none")]
mod walk;

#[cfg(not(target_os = "none"))]
fn main() {}
