//! reloc-sim: a simulated x86_64 machine that proves reloc-core relocations.
//!
//! Placeholder until the reloc-sim issue lands.
