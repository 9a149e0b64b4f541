//! reloc-sim: a simulated x86_64 machine that proves reloc-core relocations.
//!
//! The same reloc-core code that runs on bare metal runs here, through its
//! [`reloc_core::PhysMemory`] trait, against a machine model precise enough to catch what
//! QEMU and hardware hide:
//!
//! - [`mem`]: sparse physical memory over declared RAM ranges; an access outside RAM is a
//!   typed fault.
//! - [`paging`]: a 4/5-level page walker written from the SDM, independent of reloc-core's
//!   decoder, and an enumerator of everything a set of tables maps.
//! - [`machine`]: CR3, CR4 (PGE, LA57), a TLB that keeps global entries across CR3 loads,
//!   virtual accesses through the TLB, and the critical region between copy and switch.
//! - [`layout`]: Xen-like and random boot layouts.
//! - [`relocators`]: reloc-core, plus deliberately broken relocators the checks must catch.
//! - [`check`]: the properties every relocation must satisfy.
//! - [`run`]: one relocation end to end (select, plan, apply, switch, verify): what `demo`
//!   and `replay` run.
//! - [`demo`]: the main command's machine (Xen-like image on QEMU `pc`).
//! - [`scenario`]: the JSON scenario format.
//! - [`dump`]: page-table listing of raw physical memory dumps (QEMU `pmemsave`).
//! - [`notes`]: an image's Xen ELF notes (gzip or not), feature sets and lints: what
//!   `reloc-sim notes` prints.
//! - [`fuzz`]: the fuzz targets' input decoding and oracles (`fuzz/` and the regression
//!   tests call them).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod case;
pub mod check;
pub use check::{check, Expectation, Report, Snapshot};
pub mod demo;
pub mod dump;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod layout;
pub mod machine;
pub mod mem;
#[cfg(feature = "cli")]
pub mod notes;
pub mod paging;
pub mod relocators;
pub mod run;
#[cfg(feature = "cli")]
pub mod scenario;
