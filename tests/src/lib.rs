//! Integration tests for reloc: build the boot-stub image and boot it under QEMU.
//!
//! - [`qemu`]: builds the image (release, `x86_64-unknown-none`, once per test process),
//!   starts QEMU with extra arguments and optionally an HMP monitor on a unix socket, collects
//!   the serial output, waits with a timeout, kills.
//! - [`output`]: parses what the stub printed (memory map, avoided ranges, image, summary)
//!   so a test can recompute the target with reloc-core and compare;
//!   [`output::check_relocation`] is what every successful boot must show.
//! - [`grub`]: GRUB rescue images (`grub-mkrescue`) that boot the stub through multiboot2.
//! - [`bochs`]: boots such an image under Bochs, whose TLB keeps global entries.
//!
//! The boot tests live in `tests/boot.rs` (PVH), `tests/grub.rs` (GRUB, multiboot2) and
//! `tests/bochs.rs`. QEMU or the GRUB tools missing is a test failure with an install hint,
//! never a skip; Bochs missing is a printed notice (see `tests/bochs.rs`).
#![forbid(unsafe_code)]

pub mod bochs;
pub mod grub;
pub mod output;
pub mod qemu;

/// Which of `needs` (a program looked up on `path_var`, or an absolute file path, each with
/// the Debian package that provides it) are missing, as `"what (package)"`.
pub fn missing_tools(needs: &[(&str, &str)], path_var: &std::ffi::OsStr) -> Vec<String> {
    needs
        .iter()
        .filter(|(what, _)| {
            if what.starts_with('/') {
                !std::path::Path::new(what).exists()
            } else {
                !std::env::split_paths(path_var).any(|dir| dir.join(what).is_file())
            }
        })
        .map(|(what, package)| format!("{what} ({package})"))
        .collect()
}
