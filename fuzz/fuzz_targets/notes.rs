//! `notes` fuzz target: see `reloc_sim::fuzz::notes` for the input format and the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reloc_sim::fuzz::notes::check_bytes(data);
});
