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
//! The boot tests live in `tests/boot.rs` (PVH), `tests/grub.rs` (GRUB, multiboot2, on
//! SeaBIOS and on OVMF), `tests/stack.rs` (the stack high-water mark against the budget) and
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

/// A command line of exactly `len` bytes: filler words (`pad00000 pad00001 ...`, none of
/// them a word the stub knows) then `last` as the final word. Panics when `len` leaves no
/// room for `last`.
pub fn long_command_line(len: usize, last: &str) -> String {
    assert!(len > last.len(), "{len} bytes cannot end in `{last}`");
    let mut line = String::with_capacity(len);
    let mut n = 0;
    // Each filler word is 8 bytes plus a space; what is left before `last` becomes one more
    // word of `x`s and its space (or a lone space, a second separator).
    while line.len() + 9 + last.len() <= len {
        line.push_str(&format!("pad{n:05} "));
        n += 1;
    }
    let rest = len - line.len() - last.len();
    if rest > 0 {
        line.push_str(&"x".repeat(rest - 1));
        line.push(' ');
    }
    line.push_str(last);
    assert_eq!(line.len(), len);
    line
}

#[cfg(test)]
mod tests {
    use super::long_command_line;

    #[test]
    fn long_command_lines_have_the_length_and_end_in_the_word() {
        for len in [5, 6, 13, 14, 4096, 8192] {
            let line = long_command_line(len, "la57");
            assert_eq!(line.len(), len);
            assert!(line.ends_with(" la57") || line == "la57", "{line}");
            assert_eq!(line.split_whitespace().filter(|w| *w == "la57").count(), 1);
        }
    }
}
