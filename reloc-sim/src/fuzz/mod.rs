//! The fuzz targets' logic: input decoding and the oracles, as plain functions.
//!
//! `fuzz/` (a cargo-fuzz project outside the workspace) calls these from its libFuzzer
//! targets; `tests/fuzz_regressions.rs` replays every saved input through the same functions,
//! so a crash found by the fuzzer stays a failing `cargo test` until it is fixed. Each function
//! panics with the violated property; returning means every check held.
//!
//! Inputs are decoded with [`arbitrary::Unstructured`], reading only fixed-size little-endian
//! integers (missing bytes read as zero), so every byte string is a valid input and
//! [`relocate::Description::encode`] (and its siblings) can write meaningful seeds.
//!
//! - [`relocate`]: a compact description of page tables (a random reloc-sim layout or an
//!   empty image, plus extra tables and arbitrary entries), run end to end through
//!   [`crate::run`]; on success every property must hold, on rejection memory must be
//!   bit-identical.
//! - [`select`]: small memory maps and avoid lists against a brute-force oracle of
//!   `select_target`'s documented rule.
//! - [`boot_info`]: arbitrary bytes as `hvm_start_info` and what it points to, against an
//!   independent reading of the same bytes.
//! - [`notes`]: arbitrary bytes as an ELF file, its Xen notes read by `reloc_core::notes`
//!   against an independent reading of the same bytes.
//! - [`multiboot2`]: arbitrary bytes as a multiboot2 boot information structure (MBI), read by
//!   `reloc_core::Multiboot2Info` against an independent reading of the same bytes.

pub mod boot_info;
pub mod multiboot2;
pub mod notes;
pub mod relocate;
pub mod select;

use arbitrary::Unstructured;

/// Reads fixed-size integers from fuzzer bytes; zeros once the bytes run out.
pub(crate) struct Reader<'a, 'b>(pub(crate) &'b mut Unstructured<'a>);

impl Reader<'_, '_> {
    pub(crate) fn u8(&mut self) -> u8 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub(crate) fn u16(&mut self) -> u16 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub(crate) fn u32(&mut self) -> u32 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        self.0.arbitrary().unwrap_or(0)
    }
    /// A count in `0..=max`.
    pub(crate) fn count(&mut self, max: usize) -> usize {
        usize::from(self.u8()) % (max + 1)
    }
}

/// Writes what [`Reader`] reads: the inverse used to make seeds.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn count(&mut self, n: usize) {
        self.u8(n as u8);
    }
}

/// `bytes` (a whole number of qwords) as little-endian qwords: the backing of a
/// `DirectMap::from_slice` that the boot-data targets parse.
pub(crate) fn qwords(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("whole qwords")))
        .collect()
}
