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
//! - [`mod@check`]: the properties every relocation must satisfy, and [`check()`], all of them
//!   in one call.
//! - [`run`]: one relocation end to end (select, plan, apply, switch, verify): what `demo`
//!   and `replay` run.
//! - [`demo`]: the main command's machine (Xen-like image on QEMU `pc`).
//! - [`scenario`]: the JSON scenario format.
//! - [`dump`]: page-table listing of raw physical memory dumps (QEMU `pmemsave`).
//! - [`notes`]: an image's Xen ELF notes (gzip or not), feature sets and lints: what
//!   `reloc-sim notes` prints.
//! - `fuzz` (feature `fuzz`, off by default): the project's fuzz targets' input decoding and
//!   oracles (`fuzz/` and the regression tests call them).
//! - [`case`]: generated machines around a user's own tables, and their proptest strategy.
//!
//! # Using reloc-sim as a library
//!
//! Write your boot tables with your own code, relocate them with your own call sequence (or
//! reloc-core's), and check every property in one call: [`check()`] takes a [`Snapshot`]
//! before, one after and the [`Expectation`], and returns a [`Report`]. [`case::arb_case`]
//! varies the machine around your tables (paging mode, RAM, target, extra tables). The
//! README's "Using reloc-sim as a library" and `examples/own_tables.rs` show the whole
//! property test; this is the smallest complete check, with tables written by hand:
//!
//! ```
//! use reloc_core::{PagingMode, PhysAddr, PhysRange, Plan, RelocationRequest};
//! use reloc_sim::mem::SparseMemory;
//! use reloc_sim::paging::WalkConfig;
//! use reloc_sim::{check, Expectation, Snapshot};
//!
//! const MIB: u64 = 1 << 20;
//! // A 2 MiB image at 2 MiB holding its own tables: L4 -> L3 -> L2, whose entry 0 maps the
//! // image at virtual 0 with a 2 MiB leaf (P, RW, PS).
//! let image = PhysRange::new(2 * MIB, 4 * MIB);
//! let (l4, l3, l2) = (image.start + 0x1000, image.start + 0x2000, image.start + 0x3000);
//! let mut mem = SparseMemory::new(&[PhysRange::new(0, 16 * MIB)]);
//! mem.write(l4, l3 | 0x3).unwrap();
//! mem.write(l3, l2 | 0x3).unwrap();
//! mem.write(l2, image.start | 0x83).unwrap();
//!
//! let image_maps = [PhysAddr::new(l2)];
//! let request = RelocationRequest {
//!     paging: PagingMode::FourLevel,
//!     top_table: PhysAddr::new(l4),
//!     image,
//!     new_base: PhysAddr::new(8 * MIB),
//!     image_maps: &image_maps,
//!     max_phys_bits: 46,
//!     encryption_mask: 0,
//! };
//! let paging = WalkConfig::of_request(&request);
//! let before = Snapshot::of_memory(&mem, paging);
//! let plan = Plan::new(&mem, &request).unwrap();
//! plan.apply(&mut mem);
//! let report = check(&before, &Snapshot::of_memory(&mem, paging), &Expectation::moved(&request));
//! assert!(report.passed(), "{report}");
//!
//! // The oracle is not a rubber stamp: a copy whose leaf was not rebased fails `mappings`.
//! mem.write(l2 + 6 * MIB, image.start | 0x83).unwrap();
//! let report = check(&before, &Snapshot::of_memory(&mem, paging), &Expectation::moved(&request));
//! assert!(!report.passed());
//! ```
//!
//! # Features
//!
//! `proptest` (default): [`case::arb_case`] and `layout::arb_layout`. `cli` (default): the
//! command, the `scenario` and `notes` modules. `fuzz` (off): the project's own fuzz harness
//! and the `arbitrary` dependency; not part of the API.
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
