//! What relocation needs from a loader's boot information, whichever protocol delivered it.
//!
//! PVH ([`hvm::BootInfo`]) and multiboot2 ([`multiboot2::Multiboot2Info`]) both
//! reduce to the same boot data: a firmware memory map for [`crate::select::select_target`],
//! the boot modules, the command line, and the ranges a relocation target must not overlap.
//! [`LoaderInfo`] names that common shape so one target-selection path can serve both
//! entries. Both types keep their inherent methods of the same names; the trait only adds a
//! way to be generic over them.
//!
//! This module holds what both parsers share (the module record, the capacities, the word
//! rule) and imports neither parser: `hvm` and `multiboot2` import from here and never from
//! each other, and each implements [`LoaderInfo`] beside its own type.
//!
// The parsers are features: without one, its link points at the features section.
#![cfg_attr(feature = "hvm", doc = "[`hvm::BootInfo`]: crate::hvm::BootInfo")]
#![cfg_attr(not(feature = "hvm"), doc = "[`hvm::BootInfo`]: crate#features")]
#![cfg_attr(
    feature = "multiboot2",
    doc = "[`multiboot2::Multiboot2Info`]: crate::multiboot2::Multiboot2Info"
)]
#![cfg_attr(
    not(feature = "multiboot2"),
    doc = "[`multiboot2::Multiboot2Info`]: crate#features"
)]

use crate::phys::{PhysMemory, PhysRange};

/// The E820 / `hvm_memmap_table_entry` type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One firmware memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes (zero-sized entries are ignored).
    pub len: u64,
    /// E820 type: 1 is RAM; anything else (reserved, ACPI, NVS, unknown) is not.
    pub kind: u32,
}

impl MemoryRegion {
    /// The region as a range; a region wrapping past 2^64 is cut at 2^64 - 1.
    pub fn range(&self) -> PhysRange {
        PhysRange::new(self.start, self.start.saturating_add(self.len))
    }

    /// True for usable RAM.
    pub fn is_ram(&self) -> bool {
        self.kind == E820_RAM
    }
}

/// Default capacity for memory-map entries in a parsed boot information.
pub const DEFAULT_MEMMAP_CAPACITY: usize = 128;

/// Default capacity for modules in a parsed boot information.
pub const DEFAULT_MODULE_CAPACITY: usize = 16;

/// Bytes of the kernel command line the parsers copy. A longer line is accepted whole: its
/// copy is cut here (`cmdline_truncated()` says so) and words are looked up over the whole
/// line in memory (`cmdline_has_word`).
pub const CMDLINE_CAPACITY: usize = 1024;

/// One boot module: where it is and where its command line is (empty when it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BootModule {
    /// The module's bytes.
    pub range: PhysRange,
    /// Its command line, NUL included (empty when absent).
    pub cmdline: PhysRange,
}

impl BootModule {
    /// A module with no bytes and no command line (the value capacity slots start as).
    pub const EMPTY: Self = Self {
        range: PhysRange::new(0, 0),
        cmdline: PhysRange::new(0, 0),
    };
}

/// True when `cmdline` holds `word` as a whitespace-separated token: the one rule both
/// loaders' `cmdline_has_word` follow.
pub(crate) fn has_word(cmdline: &[u8], word: &str) -> bool {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .any(|token| token == word.as_bytes())
}

/// True when the bytes of `line` in `mem` hold `word` as a whitespace-separated token: the
/// rule of [`has_word`], streamed over memory so a line of any length is searched whole
/// without a copy. Memory that cannot be read holds no word.
///
/// Bytes are read as whole aligned qwords ([`PhysMemory::read_u64`] takes 8-byte-aligned
/// addresses), so what is checked is the line widened to qword boundaries: every qword read
/// lies in a range [`PhysMemory::check_range`] accepted.
pub(crate) fn line_has_word<M: PhysMemory + ?Sized>(mem: &M, line: PhysRange, word: &str) -> bool {
    let qwords_start = line.start & !7;
    let Some(qwords_end) = line.end.checked_next_multiple_of(8) else {
        return false;
    };
    if mem
        .check_range(qwords_start, qwords_end.saturating_sub(qwords_start))
        .is_err()
    {
        return false;
    }
    let word = word.as_bytes();
    // How much of `word` the current token has matched; None once it cannot match. Tokens
    // end at whitespace and at the end of the line, as `split` cuts them.
    let mut matched = Some(0usize);
    for addr in line.start..line.end {
        let byte = (mem.read_u64(addr & !7) >> ((addr & 7) * 8)) as u8;
        if byte.is_ascii_whitespace() {
            if matched == Some(word.len()) {
                return true;
            }
            matched = Some(0);
        } else {
            matched = matched
                .filter(|&n| word.get(n) == Some(&byte))
                .map(|n| n + 1);
        }
    }
    matched == Some(word.len())
}

/// The line of a string range that includes its NUL: the range without the NUL.
pub(crate) fn without_nul(range: PhysRange) -> PhysRange {
    PhysRange::new(range.start, range.end.saturating_sub(1).max(range.start))
}

/// Boot data a loader handed over, reduced to what relocation needs.
pub trait LoaderInfo {
    /// The most ranges [`LoaderInfo::avoid_ranges`] can yield.
    const MAX_AVOID_RANGES: usize;

    /// The memory map, in the loader's order, as [`crate::select::select_target`] takes it.
    fn memory_map(&self) -> &[MemoryRegion];

    /// The boot modules.
    fn modules(&self) -> &[BootModule];

    /// The copy of the kernel command line without its NUL (empty when absent): the whole
    /// line, or its first [`CMDLINE_CAPACITY`] bytes when
    /// [`LoaderInfo::cmdline_truncated`].
    fn cmdline(&self) -> &[u8];

    /// True when the line was longer than [`CMDLINE_CAPACITY`] and
    /// [`LoaderInfo::cmdline`] holds only its start. By default false: the copy is the
    /// whole line.
    fn cmdline_truncated(&self) -> bool {
        false
    }

    /// Where the whole command line is, NUL included (empty when absent). By default empty:
    /// only needed when [`LoaderInfo::cmdline_truncated`] can be true.
    fn cmdline_range(&self) -> PhysRange {
        PhysRange::default()
    }

    /// True when the whole command line holds `word` as a whitespace-separated token. A
    /// line that fits is searched in the copy; a longer one is read again through `mem`
    /// (it is among [`LoaderInfo::avoid_ranges`], so it is still there when the caller has
    /// kept clear of those).
    fn cmdline_has_word<M: PhysMemory + ?Sized>(&self, mem: &M, word: &str) -> bool {
        if self.cmdline_truncated() {
            line_has_word(mem, without_nul(self.cmdline_range()), word)
        } else {
            has_word(self.cmdline(), word)
        }
    }

    /// Every non-empty range of boot data a relocation target must not overlap.
    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_;
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::phys::MemoryFault;

    /// Memory of `bytes` at physical `start` that panics on any read outside a range it
    /// accepted in `check_range` (PhysMemory's rule), and on any write.
    struct StrictMem {
        start: u64,
        bytes: Vec<u8>,
    }

    impl StrictMem {
        fn end(&self) -> u64 {
            self.start + self.bytes.len() as u64
        }
    }

    impl PhysMemory for StrictMem {
        fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault> {
            if len == 0 || (self.start <= start && start.saturating_add(len) <= self.end()) {
                Ok(())
            } else {
                Err(MemoryFault {
                    addr: start.max(self.start).min(self.end()),
                })
            }
        }
        fn read_u64(&self, addr: u64) -> u64 {
            assert!(addr.is_multiple_of(8), "unaligned read at {addr:#x}");
            assert!(
                self.start <= addr && addr + 8 <= self.end(),
                "read of {addr:#x} outside the checked memory"
            );
            let at = (addr - self.start) as usize;
            u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
        }
        fn write_u64(&mut self, _: u64, _: u64) {
            panic!("line_has_word writes nothing");
        }
        fn copy(&mut self, _: u64, _: u64, _: u64) {
            panic!("line_has_word copies nothing");
        }
    }

    /// The line sits in readable bytes, but the qwords holding its first and last bytes
    /// reach outside them: refused (no word), and nothing outside is read. Before the check
    /// covered the aligned span, this read outside what `check_range` accepted.
    #[test]
    fn line_whose_qwords_reach_unreadable_memory_holds_no_word() {
        // Readable: [0x1004, 0x1014). The line [0x1004, 0x1008) is in it, its qword
        // [0x1000, 0x1008) is not.
        let mem = StrictMem {
            start: 0x1004,
            bytes: b"hold la57 xx".iter().copied().chain([b' '; 4]).collect(),
        };
        assert_eq!(mem.check_range(0x1004, 4), Ok(()));
        assert!(!line_has_word(&mem, PhysRange::new(0x1004, 0x1008), "hold"));
        // Wholly unreadable line.
        assert!(!line_has_word(&mem, PhysRange::new(0x2000, 0x2008), "hold"));
        // A line in memory that is readable qword by qword is searched.
        let mem = StrictMem {
            start: 0x1000,
            bytes: b"    hold la57 xx".to_vec(),
        };
        assert!(line_has_word(&mem, PhysRange::new(0x1004, 0x1008), "hold"));
        assert!(line_has_word(&mem, PhysRange::new(0x1004, 0x100e), "la57"));
        assert!(!line_has_word(&mem, PhysRange::new(0x1004, 0x100c), "la57"));
    }

    /// Boot information that keeps its whole command line (nothing longer than the copy)
    /// implements only the required methods: by default the copy is not cut, the line has no
    /// range, and words are looked up in the copy, with no memory read.
    #[test]
    fn a_loader_info_with_only_the_required_methods_searches_its_copy() {
        struct WholeLine(&'static [u8]);
        impl LoaderInfo for WholeLine {
            const MAX_AVOID_RANGES: usize = 0;
            fn memory_map(&self) -> &[MemoryRegion] {
                &[]
            }
            fn modules(&self) -> &[BootModule] {
                &[]
            }
            fn cmdline(&self) -> &[u8] {
                self.0
            }
            fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
                core::iter::empty()
            }
        }
        let info = WholeLine(b"hold la57");
        assert!(!info.cmdline_truncated());
        assert!(info.cmdline_range().is_empty());
        // No memory at all: any read would panic.
        let mem = StrictMem {
            start: 0x1000,
            bytes: Vec::new(),
        };
        assert!(info.cmdline_has_word(&mem, "hold"));
        assert!(info.cmdline_has_word(&mem, "la57"));
        assert!(!info.cmdline_has_word(&mem, "la5"));
    }

    fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'b'),
                Just(b' '),
                Just(b'\t'),
                Just(b'\n'),
                Just(b'\r')
            ],
            0..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Streaming over memory follows `has_word`'s rule on any line (leading, trailing
        /// and doubled whitespace of every kind) at any start alignment.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system, which Miri isolates")]
        fn line_has_word_agrees_with_has_word(
            line in line_bytes(),
            word in "[ab]{0,3}",
            offset in 0usize..8,
            slack in 0usize..8,
        ) {
            let mut bytes = std::vec![0x5a_u8; offset];
            bytes.extend_from_slice(&line);
            bytes.resize((bytes.len() + slack).next_multiple_of(8), 0x5a);
            let mem = StrictMem { start: 0x4000, bytes };
            let start = 0x4000 + offset as u64;
            let range = PhysRange::new(start, start + line.len() as u64);
            prop_assert_eq!(line_has_word(&mem, range, &word), has_word(&line, &word));
        }
    }
}
