//! `boot_info` fuzz target: see `reloc_sim::fuzz::boot_info` for the input format and the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reloc_sim::fuzz::boot_info::check_bytes(data);
});
