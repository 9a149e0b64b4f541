//! `select_target` fuzz target: see `reloc_sim::fuzz::select` for the input format and the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reloc_sim::fuzz::select::check_bytes(data);
});
