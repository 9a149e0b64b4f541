//! `multiboot2` fuzz target: see `reloc_sim::fuzz::multiboot2` for the input format and the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reloc_sim::fuzz::multiboot2::check_bytes(data);
});
