//! The `relocate` fuzz target: arbitrary page tables and requests, run end to end.
//!
//! An input is a compact [`Description`], not raw memory, so the fuzzer reaches deep layouts
//! at once: a base (a random reloc-sim layout from a seed, Xen-like with sharing and noise, or
//! a bare image of 4 KiB to 8 MiB, or a bare image of any range at all), up to [`MAX_TABLES`] extra tables placed in or around the
//! image, and up to [`MAX_EDITS`] entries written into any table: pointers to any table
//! (itself, an ancestor: cycles and recursion), 4 KiB / 2 MiB / 1 GiB leaves into or out of
//! the image, pointers anywhere, raw values, each with chosen flag bits (PAT, G, NX, software
//! bits, reserved bits, a set or cleared PS). Then sparse RAM, 4 or 5 levels, MAXPHYADDR,
//! declared image maps and a target (automatic, 2 MiB units or any value).
//!
//! [`check()`] plans first. Rejected: memory must be
//! bit-identical. Accepted: the copy check must hold, and then (when enumerating the
//! mappings is affordable) the whole [`crate::run`] pipeline, switch included, must pass
//! every property.

use arbitrary::Unstructured;
use reloc_core::{
    select_target, MemoryRegion, PagingMode, PhysAddr, PhysRange, Plan, SimulatedDirectMap,
    SwitchParams, TargetRequest,
};

use crate::layout::SwitchAddresses;

use super::{Reader, Writer};
use crate::check::{check_copy, check_untouched, entries_that_move};
use crate::layout::{data_pattern, random_layout, BootLayout, RandomLayout, Sharing, MIB};
use crate::machine::{Machine, CR4_LA57, CR4_PGE};
use crate::mem::{SparseMemory, TableView, PAGE_SIZE};
use crate::paging::{enumerate, walk, WalkConfig};
use crate::relocators::{Relocator, Request};
use crate::run::{plan_error_kind, run_planned, RunInput, RunOptions, Target};

/// `PlanError` variants no `relocate` input can reach, with the reason; every other variant
/// is reached by a checked-in seed (`reloc-sim/tests/fuzz_regressions.rs` checks both).
pub const PLAN_ERRORS_UNREACHED: &[(&str, &str)] = &[(
    "InvalidEncryptionMask",
    "a description has no encryption mask (requests carry 0); the scenario \
     err-encryption-mask.json and reloc-core's unit tests cover it",
)];

/// Destination pages (from the first) that get garbage before the move, one in 16.
const GARBAGE_PAGES: u64 = 10 * MIB / PAGE_SIZE;

/// Most extra tables.
pub const MAX_TABLES: usize = 24;
/// Most entries written.
pub const MAX_EDITS: usize = 64;
/// Most RAM ranges of a bare base.
pub const MAX_RAM: usize = 4;
/// Most declared image maps.
pub const MAX_IMAGE_MAPS: usize = 4;
/// Table visits (a table once per path) above which the mapping check is skipped.
pub const VISIT_BUDGET: u64 = 1024;
/// Leaves above which the mapping check is skipped.
pub const LEAF_BUDGET: u64 = 1 << 16;

/// `mode` bit: the base is a random reloc-sim layout from `seed` (else a bare image).
pub const MODE_LAYOUT: u8 = 1;
/// `mode` bit: five levels (bare base).
pub const MODE_FIVE_LEVEL: u8 = 1 << 1;
/// `mode` bit: the image is not added to RAM (bare base with RAM ranges).
pub const MODE_IMAGE_NOT_RAM: u8 = 1 << 2;
/// `mode` bit: the image starts 4 KiB past its 2 MiB boundary (bare base).
pub const MODE_IMAGE_START_OFF: u8 = 1 << 3;
/// `mode` bit: the image ends 8 bytes short of a page (bare base).
pub const MODE_IMAGE_END_OFF: u8 = 1 << 4;
/// `mode` bit: do not warm the TLB before relocating.
pub const MODE_COLD_TLB: u8 = 1 << 5;
/// `mode` bit: no virtual layout (layout base): no stack spill or re-copy.
pub const MODE_NO_VIRT: u8 = 1 << 6;
/// `mode` bit: CR3 carries PWT and PCD.
pub const MODE_CR3_FLAGS: u8 = 1 << 7;

/// A RAM range of a bare base: `[start, start + len + 1)` in 2 MiB units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRange {
    /// Start, 2 MiB units.
    pub start: u16,
    /// Length minus one, 2 MiB units.
    pub len: u8,
}

/// Where the image goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetDesc {
    /// The layout's valid target (layout base) or automatic selection (bare base).
    #[default]
    Default,
    /// reloc-core's selection over the memory map.
    Auto,
    /// This many 2 MiB units.
    Units(u16),
    /// Any value.
    Raw(u64),
}

/// One entry value. `flags` bits: 0 clear P, 1 RW, 2 U/S, 3 PWT, 4 PCD, 5 A, 6 D, 7 toggle PS,
/// 8 G, 9 PAT (bit 12 in huge leaves, bit 7 otherwise), 10 NX, 11 software bits 9-11,
/// 12 software bits 52-58, 13 the address bit at MAXPHYADDR, 14 bit 13, 15 bits 59-62.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntryDesc {
    /// Zero.
    #[default]
    Zero,
    /// A pointer to table `table` (index into all tables, modulo their number).
    Pointer {
        /// Table index.
        table: u8,
        /// Flag bits.
        flags: u16,
    },
    /// A 2 MiB leaf to the image's 2 MiB slot `slot` (past the footprint: outside).
    Leaf2M {
        /// Slot from the image's 2 MiB boundary.
        slot: u8,
        /// Flag bits.
        flags: u16,
    },
    /// A 1 GiB leaf to `gib` GiB.
    Leaf1G {
        /// GiB.
        gib: u8,
        /// Flag bits.
        flags: u16,
    },
    /// A 4 KiB leaf to image page `page` (past the image: outside).
    Leaf4K {
        /// Page from the image's first page.
        page: u16,
        /// Flag bits.
        flags: u16,
    },
    /// A leaf (PS clear unless toggled) to frame `frame` anywhere.
    LeafAt {
        /// 4 KiB frame number.
        frame: u32,
        /// Flag bits.
        flags: u16,
    },
    /// A pointer to frame `frame` anywhere (RAM or not, image or not).
    PointerAt {
        /// 4 KiB frame number.
        frame: u32,
        /// Flag bits.
        flags: u16,
    },
    /// This exact value.
    Raw(u64),
}

/// One entry written: `tables[table % n][index % 512] = value`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// Table index.
    pub table: u8,
    /// Entry index (modulo 512).
    pub index: u16,
    /// The value.
    pub value: EntryDesc,
}

/// One decoded input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// `MODE_*` bits.
    pub mode: u8,
    /// Layout base: the random layout's seed.
    pub seed: u64,
    /// Bare base: image start, `(1 + image_units % 16)` × 2 MiB.
    pub image_units: u8,
    /// Bare base: image size, `(1 + image_pages % 2048)` pages.
    pub image_pages: u16,
    /// Bare base: RAM (none: 256 MiB from 0); the image footprint is added unless
    /// [`MODE_IMAGE_NOT_RAM`].
    pub ram: Vec<RamRange>,
    /// MAXPHYADDR: 0 keeps the base's (46 for a bare base); 32..=52 and 0xf0.. (invalid) as
    /// they are; any other value maps into 32..=52.
    pub max_phys: u8,
    /// Extra tables: below 0xc0, image page `p % pages`; else a page just past the footprint
    /// (0xc0..0xe0) or just below the image (0xe0..).
    pub tables: Vec<u8>,
    /// Bare base: the top-level table (index; 0xf8 and up: a misaligned address).
    pub top: u8,
    /// Image maps (table indices; 0xf0 and up: an odd address in the image's first page).
    /// Layout base: empty keeps the layout's.
    pub image_maps: Vec<u8>,
    /// The target.
    pub target: TargetDesc,
    /// Entries written, in order.
    pub edits: Vec<Edit>,
    /// Bare base: when set, the image is exactly `[start, end)` as given, over all of `u64`
    /// (empty, inverted, beyond MAXPHYADDR, or rounding past 2^64 to 2 MiB), and
    /// `image_units`, `image_pages`, [`MODE_IMAGE_START_OFF`] and [`MODE_IMAGE_END_OFF`] are
    /// ignored: no RAM is added for it and no image data written. Encoded last, as a flag
    /// byte (bit 0) then two u64s, only for a bare base, so inputs from before it decode as
    /// they did.
    pub wide_image: Option<(u64, u64)>,
    /// Bare base: `(table, count)`: `count` more empty tables, in image pages counted down
    /// from the last, linked from entries `0..count` of table `table`. Enough of them make
    /// more distinct tables than a plan holds (`TooManyTables`). Encoded after
    /// `wide_image`, as bit 1 of the same flag byte then two bytes.
    pub fan_out: Option<(u8, u8)>,
}

/// Flag byte after the edits (bare base): a wide image follows.
const FLAG_WIDE: u8 = 1;
/// Flag byte after the edits (bare base): a fan-out follows.
const FLAG_FAN_OUT: u8 = 1 << 1;

fn read_entry(r: &mut Reader) -> EntryDesc {
    match r.u8() % 8 {
        0 => EntryDesc::Zero,
        1 => EntryDesc::Pointer {
            table: r.u8(),
            flags: r.u16(),
        },
        2 => EntryDesc::Leaf2M {
            slot: r.u8(),
            flags: r.u16(),
        },
        3 => EntryDesc::Leaf1G {
            gib: r.u8(),
            flags: r.u16(),
        },
        4 => EntryDesc::Leaf4K {
            page: r.u16(),
            flags: r.u16(),
        },
        5 => EntryDesc::LeafAt {
            frame: r.u32(),
            flags: r.u16(),
        },
        6 => EntryDesc::PointerAt {
            frame: r.u32(),
            flags: r.u16(),
        },
        _ => EntryDesc::Raw(r.u64()),
    }
}

fn write_entry(w: &mut Writer, e: EntryDesc) {
    match e {
        EntryDesc::Zero => w.u8(0),
        EntryDesc::Pointer { table, flags } => {
            w.u8(1);
            w.u8(table);
            w.u16(flags);
        }
        EntryDesc::Leaf2M { slot, flags } => {
            w.u8(2);
            w.u8(slot);
            w.u16(flags);
        }
        EntryDesc::Leaf1G { gib, flags } => {
            w.u8(3);
            w.u8(gib);
            w.u16(flags);
        }
        EntryDesc::Leaf4K { page, flags } => {
            w.u8(4);
            w.u16(page);
            w.u16(flags);
        }
        EntryDesc::LeafAt { frame, flags } => {
            w.u8(5);
            w.u32(frame);
            w.u16(flags);
        }
        EntryDesc::PointerAt { frame, flags } => {
            w.u8(6);
            w.u32(frame);
            w.u16(flags);
        }
        EntryDesc::Raw(v) => {
            w.u8(7);
            w.u64(v);
        }
    }
}

impl Description {
    /// Decodes fuzzer bytes.
    pub fn decode(u: &mut Unstructured<'_>) -> Self {
        let mut r = Reader(u);
        let mut d = Description {
            mode: r.u8(),
            ..Description::default()
        };
        if d.mode & MODE_LAYOUT != 0 {
            d.seed = r.u64();
        } else {
            d.image_units = r.u8();
            d.image_pages = r.u16();
            let n = r.count(MAX_RAM);
            d.ram = (0..n)
                .map(|_| RamRange {
                    start: r.u16(),
                    len: r.u8(),
                })
                .collect();
        }
        d.max_phys = r.u8();
        let n = r.count(MAX_TABLES);
        d.tables = (0..n).map(|_| r.u8()).collect();
        d.top = r.u8();
        let n = r.count(MAX_IMAGE_MAPS);
        d.image_maps = (0..n).map(|_| r.u8()).collect();
        d.target = match r.u8() % 4 {
            0 => TargetDesc::Default,
            1 => TargetDesc::Auto,
            2 => TargetDesc::Units(r.u16()),
            _ => TargetDesc::Raw(r.u64()),
        };
        let n = r.count(MAX_EDITS);
        d.edits = (0..n)
            .map(|_| Edit {
                table: r.u8(),
                index: r.u16(),
                value: read_entry(&mut r),
            })
            .collect();
        if d.mode & MODE_LAYOUT == 0 {
            let flags = r.u8();
            if flags & FLAG_WIDE != 0 {
                let start = r.u64();
                d.wide_image = Some((start, r.u64()));
            }
            if flags & FLAG_FAN_OUT != 0 {
                let table = r.u8();
                d.fan_out = Some((table, r.u8()));
            }
        }
        d
    }

    /// The bytes that decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.mode);
        if self.mode & MODE_LAYOUT != 0 {
            w.u64(self.seed);
        } else {
            w.u8(self.image_units);
            w.u16(self.image_pages);
            w.count(self.ram.len());
            for r in &self.ram {
                w.u16(r.start);
                w.u8(r.len);
            }
        }
        w.u8(self.max_phys);
        w.count(self.tables.len());
        self.tables.iter().for_each(|&t| w.u8(t));
        w.u8(self.top);
        w.count(self.image_maps.len());
        self.image_maps.iter().for_each(|&m| w.u8(m));
        match self.target {
            TargetDesc::Default => w.u8(0),
            TargetDesc::Auto => w.u8(1),
            TargetDesc::Units(u) => {
                w.u8(2);
                w.u16(u);
            }
            TargetDesc::Raw(v) => {
                w.u8(3);
                w.u64(v);
            }
        }
        w.count(self.edits.len());
        for e in &self.edits {
            w.u8(e.table);
            w.u16(e.index);
            write_entry(&mut w, e.value);
        }
        // Absent means no flag byte: missing bytes decode as zero, so seeds stay as they were.
        if self.mode & MODE_LAYOUT == 0 && (self.wide_image.is_some() || self.fan_out.is_some()) {
            let flag = |on: bool, bit: u8| if on { bit } else { 0 };
            w.u8(flag(self.wide_image.is_some(), FLAG_WIDE)
                | flag(self.fan_out.is_some(), FLAG_FAN_OUT));
            if let Some((start, end)) = self.wide_image {
                w.u64(start);
                w.u64(end);
            }
            if let Some((table, count)) = self.fan_out {
                w.u8(table);
                w.u8(count);
            }
        }
        w.0
    }
}

/// A described machine, ready to run.
#[derive(Clone, Debug)]
pub struct Built {
    /// The machine (paging on).
    pub machine: Machine,
    /// The request (`new_base` is set when the target is fixed).
    pub request: Request,
    /// The firmware memory map.
    pub memmap: Vec<MemoryRegion>,
    /// The target.
    pub target: Target,
    /// The virtual layout, when the base has one.
    pub virt: Option<SwitchAddresses>,
    /// Every table of the description (base tables, then extra ones).
    pub tables: Vec<u64>,
}

const P: u64 = 1;
const PS: u64 = 1 << 7;

fn flag_bits(flags: u16, huge: bool, max_phys: u8) -> u64 {
    let f = u64::from(flags);
    let mut v = if f & 1 != 0 { 0 } else { P };
    v |= f & 0x7e; // RW, U/S, PWT, PCD, A, D: bits 1-6 as they are
    if huge ^ (f & 0x80 != 0) {
        v |= PS;
    }
    if f & 0x100 != 0 {
        v |= 1 << 8;
    }
    if f & 0x200 != 0 {
        v |= if huge { 1 << 12 } else { 1 << 7 };
    }
    if f & 0x400 != 0 {
        v |= 1 << 63;
    }
    if f & 0x800 != 0 {
        v |= 0xe00;
    }
    if f & 0x1000 != 0 {
        v |= 0x7f << 52;
    }
    if f & 0x2000 != 0 {
        v |= 1 << max_phys.clamp(12, 51);
    }
    if f & 0x4000 != 0 {
        v |= 1 << 13;
    }
    if f & 0x8000 != 0 {
        v |= 0xf << 59;
    }
    v
}

impl Description {
    /// Writes the described machine. `None` when the layout base cannot be built.
    pub fn build(&self) -> Option<Built> {
        let (mut machine, mut request, memmap, default_target, virt, mut tables);
        if self.mode & MODE_LAYOUT != 0 {
            let (rl, m, layout) = built_layout(self.seed)?;
            machine = m;
            request = Request {
                paging: layout.paging,
                top_table: PhysAddr::new_truncate(layout.top_table),
                image: layout.image,
                new_base: PhysAddr::zero(),
                image_maps: layout
                    .image_maps
                    .iter()
                    .map(|&m| PhysAddr::new_truncate(m))
                    .collect(),
                max_phys_bits: layout.max_phys_bits,
                encryption_mask: 0,
            };
            memmap = ram_map(&rl.ram);
            default_target = Target::Fixed(rl.target);
            virt = (self.mode & MODE_NO_VIRT == 0).then_some(layout.virt);
            tables = layout.tables.clone();
        } else {
            let (start, end) = self.wide_image.unwrap_or_else(|| {
                let start = (1 + u64::from(self.image_units % 16)) * 2 * MIB
                    + if self.mode & MODE_IMAGE_START_OFF != 0 {
                        PAGE_SIZE
                    } else {
                        0
                    };
                let len = (1 + u64::from(self.image_pages % 2048)) * PAGE_SIZE;
                let end = start + len
                    - if self.mode & MODE_IMAGE_END_OFF != 0 {
                        8
                    } else {
                        0
                    };
                (start, end)
            });
            let image = PhysRange::new(start, end);
            let mut ram: Vec<PhysRange> = self
                .ram
                .iter()
                .map(|r| {
                    let s = u64::from(r.start) * 2 * MIB;
                    PhysRange::new(s, s + (u64::from(r.len) + 1) * 2 * MIB)
                })
                .collect();
            if ram.is_empty() {
                ram.push(PhysRange::new(0, 256 * MIB));
            } else if self.mode & MODE_IMAGE_NOT_RAM == 0 && self.wide_image.is_none() {
                ram.push(PhysRange::new(
                    start & !(2 * MIB - 1),
                    end.next_multiple_of(2 * MIB),
                ));
            }
            let mut mem = SparseMemory::new(&ram);
            // Image data: one page in 16 and the last, so the copy check has bytes to compare.
            // Not for a wide image: its pages may number 2^52.
            if self.wide_image.is_none() {
                let first = start & !(PAGE_SIZE - 1);
                let pages = (end - first).div_ceil(PAGE_SIZE);
                for k in (0..pages).filter(|k| k % 16 == 0 || *k == pages - 1) {
                    let page = first + k * PAGE_SIZE;
                    let _ = mem.write(page, data_pattern(page));
                    let _ = mem.write(page + PAGE_SIZE - 8, data_pattern(page + 1));
                }
            }
            let paging = if self.mode & MODE_FIVE_LEVEL != 0 {
                PagingMode::FiveLevel
            } else {
                PagingMode::FourLevel
            };
            let cr4 = CR4_PGE
                | if paging == PagingMode::FiveLevel {
                    CR4_LA57
                } else {
                    0
                };
            machine = Machine::new(mem, 0, cr4, 46);
            request = Request {
                paging,
                top_table: PhysAddr::zero(),
                image,
                new_base: PhysAddr::zero(),
                image_maps: Vec::new(),
                max_phys_bits: 46,
                encryption_mask: 0,
            };
            memmap = ram_map(&ram);
            default_target = Target::Auto;
            virt = None;
            tables = Vec::new();
        }
        let image = request.image;
        let first_page = image.start & !(PAGE_SIZE - 1);
        let pages = (image.end.saturating_sub(first_page))
            .div_ceil(PAGE_SIZE)
            .max(1);
        // Wrapping from here on: a wide image may end anywhere up to 2^64 (and round past
        // it); the addresses derived from it are then just more bad input for reloc-core.
        let footprint_end = first_page.wrapping_add(wrapping_round_up_2m(image.len()));
        for &p in &self.tables {
            let t = match p {
                0..0xc0 => first_page.wrapping_add((u64::from(p) % pages) * PAGE_SIZE),
                0xc0..0xe0 => footprint_end.wrapping_add(u64::from(p - 0xc0) * PAGE_SIZE),
                _ => first_page.saturating_sub(u64::from(p - 0xdf) * PAGE_SIZE),
            };
            let _ = machine.mem.fill_page(t, |_| 0);
            tables.push(t);
        }
        request.max_phys_bits = match self.max_phys {
            0 => request.max_phys_bits,
            // Mostly valid values, so that most inputs get past the first check.
            v @ 1..0xf0 if !(32..=52).contains(&v) => 32 + v % 21,
            v => v,
        };
        let max_phys = request.max_phys_bits;
        let table = |i: u8| {
            if tables.is_empty() {
                first_page
            } else {
                tables[usize::from(i) % tables.len()]
            }
        };
        if self.mode & MODE_LAYOUT == 0 {
            request.top_table = PhysAddr::new_truncate(match self.top {
                0xf8.. => image.start.wrapping_add(8 * u64::from(self.top - 0xf7)),
                t => table(t),
            });
        }
        if self.mode & MODE_LAYOUT == 0 || !self.image_maps.is_empty() {
            request.image_maps = self
                .image_maps
                .iter()
                .map(|&m| {
                    PhysAddr::new_truncate(match m {
                        0xf0.. => first_page.wrapping_add(8 * u64::from(m - 0xf0)),
                        m => table(m),
                    })
                })
                .collect();
        }
        for e in &self.edits {
            let at = table(e.table).wrapping_add(u64::from(e.index % 512) * 8);
            let huge_base = image.start & !(2 * MIB - 1);
            let value = match e.value {
                EntryDesc::Zero => 0,
                EntryDesc::Pointer { table: t, flags } => {
                    table(t) | flag_bits(flags, false, max_phys)
                }
                EntryDesc::Leaf2M { slot, flags } => {
                    huge_base.wrapping_add(u64::from(slot) * 2 * MIB)
                        | flag_bits(flags, true, max_phys)
                }
                EntryDesc::Leaf1G { gib, flags } => {
                    (u64::from(gib) << 30) | flag_bits(flags, true, max_phys)
                }
                EntryDesc::Leaf4K { page, flags } => {
                    first_page.wrapping_add(u64::from(page) * PAGE_SIZE)
                        | flag_bits(flags, false, max_phys)
                }
                EntryDesc::LeafAt { frame, flags } | EntryDesc::PointerAt { frame, flags } => {
                    (u64::from(frame) << 12) | flag_bits(flags, false, max_phys)
                }
                EntryDesc::Raw(v) => v,
            };
            let _ = machine.mem.write(at, value);
        }
        if let (0, Some((from, count))) = (self.mode & MODE_LAYOUT, self.fan_out) {
            let parent = table(from);
            for k in 0..u64::from(count) {
                let child = first_page.wrapping_add(((pages - 1 - k % pages) % pages) * PAGE_SIZE);
                let _ = machine.mem.fill_page(child, |_| 0);
                let _ = machine.mem.write(
                    parent.wrapping_add(8 * k),
                    child | flag_bits(0x62, false, max_phys),
                );
            }
        }
        let cr3_flags = if self.mode & MODE_CR3_FLAGS != 0 {
            0x18
        } else {
            0
        };
        // The walker needs a valid MAXPHYADDR; an invalid one is the request's to reject.
        let machine_max_phys = if (32..=52).contains(&max_phys) {
            max_phys
        } else {
            46
        };
        let rsp = machine.rsp;
        let mem = std::mem::take(&mut machine.mem);
        machine = Machine::new(
            mem,
            request.top_table.as_u64() | cr3_flags,
            machine.cr4(),
            machine_max_phys,
        );
        machine.rsp = rsp;
        let target = match self.target {
            TargetDesc::Default => default_target,
            TargetDesc::Auto => Target::Auto,
            TargetDesc::Units(u) => Target::Fixed(u64::from(u) * 2 * MIB),
            TargetDesc::Raw(v) => Target::Fixed(v),
        };
        if let Target::Fixed(b) = target {
            // No physical address has bits 52..63: such a target is not a request.
            request.new_base = PhysAddr::try_new(b).ok()?;
        }
        Some(Built {
            machine,
            request,
            memmap,
            target,
            virt,
            tables,
        })
    }
}

/// Random layouts most recently built, newest last: a fuzzer mutates the bytes after the
/// seed far more often than the seed, so most inputs reuse one. A clone shares the memory
/// pages (copy on write), so a reuse costs a reference count per page.
const LAYOUT_CACHE: usize = 16;

type CachedLayout = (RandomLayout, Machine, BootLayout);

thread_local! {
    static LAYOUTS: std::cell::RefCell<Vec<(u64, Option<CachedLayout>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The random layout of `seed` as the fuzzer uses it, built (or reused from
/// [`LAYOUT_CACHE`]); `None` when it cannot be built. Building is deterministic, so a reused
/// layout is the one a fresh build gives.
fn built_layout(seed: u64) -> Option<CachedLayout> {
    LAYOUTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(at) = cache.iter().position(|(s, _)| *s == seed) {
            let hit = cache.remove(at);
            let out = hit.1.clone();
            cache.push(hit);
            return out;
        }
        let mut rl = random_layout(seed, Sharing::Allowed);
        // Data in one image page in 64 (at least, 8 to 16 pages): the copy check needs only
        // some data, and filling pages is most of a layout's build.
        rl.spec.data_every = rl.spec.data_every.max(64);
        // Garbage in one destination page in 16 (`check` adds its own, as sparse) and one
        // footprint-tail page in 8.
        rl.garbage_every = 8;
        let built = rl.build().ok().map(|(m, layout)| (rl, m, layout));
        if LAYOUT_CACHE > 0 {
            if cache.len() >= LAYOUT_CACHE {
                cache.remove(0);
            }
            cache.push((seed, built.clone()));
        }
        built
    })
}

/// `len` rounded up to 2 MiB, modulo 2^64 (a wide image's length may round past it).
fn wrapping_round_up_2m(len: u64) -> u64 {
    len.wrapping_add(2 * MIB - 1) & !(2 * MIB - 1)
}

fn ram_map(ram: &[PhysRange]) -> Vec<MemoryRegion> {
    ram.iter()
        .map(|r| MemoryRegion {
            start: r.start,
            len: r.len(),
            kind: reloc_core::select::E820_RAM,
        })
        .collect()
}

/// Table visits (once per path) and leaves the tables reachable from CR3 amount to, with
/// each (table, level) counted once by memo: what enumerating every mapping would cost.
/// Saturates; entries are classified coarsely (an over-estimate is fine).
pub fn mapping_cost(mem: &SparseMemory, cfg: &WalkConfig) -> (u64, u64) {
    use std::collections::BTreeMap;
    fn visit(
        mem: &SparseMemory,
        mask: u64,
        table: u64,
        level: u8,
        memo: &mut BTreeMap<(u64, u8), (u64, u64)>,
    ) -> (u64, u64) {
        if let Some(&c) = memo.get(&(table, level)) {
            return c;
        }
        let (mut visits, mut leaves) = (1u64, 0u64);
        for &e in TableView::read(mem, table).readable() {
            if e & P == 0 {
                continue;
            }
            if level == 1 || (level <= 3 && e & PS != 0) {
                leaves += 1;
            } else {
                let (v, l) = visit(mem, mask, e & mask, level - 1, memo);
                visits = visits.saturating_add(v);
                leaves = leaves.saturating_add(l);
            }
        }
        memo.insert((table, level), (visits, leaves));
        (visits, leaves)
    }
    let mask = ((1u64 << cfg.max_phys_bits) - 1) & !0xfff;
    visit(
        mem,
        mask,
        cfg.top_table(),
        cfg.levels(),
        &mut BTreeMap::new(),
    )
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The layout base could not be built.
    Unbuildable,
    /// Automatic selection found no target.
    NoTarget,
    /// reloc-core rejected the request (the `PlanError` variant); memory was unchanged.
    Rejected(&'static str),
    /// Relocated; the copy checks held; the mappings were too many to enumerate, so the
    /// switch and mapping checks were skipped.
    RelocatedCopyChecked,
    /// Relocated and switched; every property held.
    Relocated {
        /// Leaves compared by the mapping check.
        leaves: usize,
        /// The virtual layout was usable: stack re-copy and spill ran.
        virt: bool,
    },
}

/// Decodes `data` and checks it; panics on a violation.
pub fn check_bytes(data: &[u8]) -> Outcome {
    check(&Description::decode(&mut Unstructured::new(data)))
}

/// True when the virtual layout's preconditions hold in the machine as built: the image is
/// mapped at `image_start`, the stack is writable, and the directmap maps the destination's
/// stack pages writable. Without them the simulated code itself would fault: not a
/// relocation property.
fn virt_usable(machine: &Machine, request: &Request, v: &SwitchAddresses) -> bool {
    let cfg = machine.walk_config();
    let len = request.image.len();
    let maps = |va: u64, pa: u64, write: bool| {
        walk(&machine.mem, &cfg, va)
            .is_ok_and(|t| t.phys == pa && (!write || t.perms.writable) && machine.mem.is_ram(pa))
    };
    // Every image page mapped at its place: one walk per leaf, since the pages under one
    // leaf translate contiguously with its permissions; each page's frame must be RAM.
    let pages = len.div_ceil(PAGE_SIZE);
    let mut k = 0;
    while k < pages {
        let va = v.image_start.wrapping_add(k * PAGE_SIZE);
        let pa = request.image.start.wrapping_add(k * PAGE_SIZE);
        let Ok(t) = walk(&machine.mem, &cfg, va) else {
            return false;
        };
        if t.phys != pa {
            return false;
        }
        let in_leaf = (t.page_size - (va & (t.page_size - 1))) / PAGE_SIZE;
        let end = pages.min(k.saturating_add(in_leaf.max(1)));
        if !(k..end).all(|j| {
            machine
                .mem
                .is_ram(request.image.start.wrapping_add(j * PAGE_SIZE))
        }) {
            return false;
        }
        k = end;
    }
    let rsp = machine.rsp;
    if rsp < v.image_start || v.stack_top > v.image_start.wrapping_add(len) || rsp >= v.stack_top {
        return false;
    }
    let mut va = rsp & !(PAGE_SIZE - 1);
    while va < v.stack_top {
        let off = va - v.image_start;
        let alias = v
            .directmap_base
            .wrapping_add(request.new_base.as_u64())
            .wrapping_add(off);
        if !maps(va, request.image.start + off, true)
            || !maps(alias, request.new_base.as_u64().wrapping_add(off), true)
        {
            return false;
        }
        va += PAGE_SIZE;
    }
    true
}

/// Builds the described machine, relocates, and checks; panics on a violation.
pub fn check(d: &Description) -> Outcome {
    let Some(built) = d.build() else {
        return Outcome::Unbuildable;
    };
    let Built {
        mut machine,
        mut request,
        memmap,
        target,
        mut virt,
        ..
    } = built;
    if let Target::Auto = target {
        // As `run` does it: avoid the image footprint.
        let image = request.image;
        let footprint = PhysRange::new(
            image.start,
            image
                .len()
                .checked_next_multiple_of(2 * MIB)
                .map_or(u64::MAX, |len| image.start.saturating_add(len)),
        );
        match select_target(
            &memmap,
            &TargetRequest::new(image.len(), std::slice::from_ref(&footprint)),
        ) {
            Ok(b) => request.new_base = b,
            Err(_) => return Outcome::NoTarget,
        }
    }
    // Garbage at the destination: the copy must overwrite it. Not when the image is larger
    // than all RAM (a wide image): planning must then reject it (the image must be RAM), and
    // the loop would run over up to 2^48 pages.
    let ram_bytes = machine
        .mem
        .ram()
        .iter()
        .map(PhysRange::len)
        .fold(0, u64::saturating_add);
    let footprint = if request.image.len() > ram_bytes {
        0
    } else {
        wrapping_round_up_2m(request.image.len())
    };
    // At most the first 10 MiB (a bare image's largest footprint): a wide image's may be
    // gigabytes, and garbage in its first pages shows a copy that skips them as well.
    let garbage: Vec<(u64, u64)> = (0..(footprint / PAGE_SIZE).min(GARBAGE_PAGES))
        .step_by(16)
        .filter_map(|k| {
            let at = request
                .new_base
                .as_u64()
                .checked_add(k * PAGE_SIZE + 8 * (k % 512))?;
            // Only RAM: as separate writes would, skipping the faulting ones.
            machine
                .mem
                .check(at, 8)
                .is_ok()
                .then(|| (at, data_pattern(at) | 1))
        })
        .collect();
    let _ = machine.mem.write_batch(&garbage);
    // Planning only reads; a rejection must also leave memory bit-identical when the
    // relocator (plan, then apply) runs with write access.
    let planned = Plan::<64>::new(&machine.mem, &request.as_core());
    if let Err(e) = planned {
        let before = machine.mem.clone();
        let again = Relocator::Core.relocate(&mut machine, &request).err();
        assert_eq!(again, Some(e), "planning is not deterministic");
        if let Err(v) = check_untouched(&before, &machine.mem) {
            panic!("rejected request ({e}) changed memory: {v}\n{d:?}");
        }
        assert!(!e.to_string().is_empty());
        return Outcome::Rejected(plan_error_kind(&e));
    }
    // Warming the TLB and checking the virtual layout only read memory: done for accepted
    // requests only.
    let cfg = machine.walk_config();
    let (visits, leaves) = mapping_cost(&machine.mem, &cfg);
    let affordable = visits <= VISIT_BUDGET && leaves <= LEAF_BUDGET;
    if affordable && d.mode & MODE_COLD_TLB == 0 {
        // Cache some translations, as running code would have: the switch must flush them.
        if let Ok(m) = enumerate(&machine.mem, &cfg, LEAF_BUDGET as usize) {
            let step = (m.leaves.len() / 64).max(1);
            for l in m.leaves.iter().step_by(step) {
                let _ = machine.translate(l.virt, false);
            }
        }
    }
    if let Some(v) = virt {
        if !virt_usable(&machine, &request, &v) {
            virt = None;
        }
    }

    // The fuzzer may declare tables other than the real image map, so that the leaves mapping
    // the running image would not move: the switch must refuse that layout (the code would
    // go on running the old copy). A refused layout runs the relocation without one.
    if let (Some(v), Ok(plan)) = (virt, &planned) {
        let directmap = SimulatedDirectMap::new(&machine.mem, v.directmap());
        if let Err(e) = SwitchParams::new(plan, &directmap, &v.core()) {
            assert!(!e.to_string().is_empty());
            virt = None;
        }
    }
    if !affordable {
        // Too many mappings to enumerate: check the copy only.
        let before = machine.mem.clone();
        if let Ok(plan) = &planned {
            machine.apply(plan);
        }
        let moving = entries_that_move(&before, &cfg, &request.image_map_addrs());
        for (property, result) in check_copy(&before, &machine.mem, &request, &moving) {
            if let Err(v) = result {
                panic!("{property} violated: {v}\n{d:?}");
            }
        }
        return Outcome::RelocatedCopyChecked;
    }
    let input = RunInput {
        machine,
        memmap,
        request,
        target,
        virt,
    };
    let report = match run_planned(input, RunOptions::default(), planned.ok()) {
        Ok(r) => r,
        Err(e) => panic!("an accepted request failed to run: {e}\n{d:?}"),
    };
    if let Some((property, v)) = report.first_violation() {
        panic!("{property} violated: {v}\n{d:?}");
    }
    Outcome::Relocated {
        leaves: report.leaves_verified,
        virt: virt.is_some(),
    }
}

/// Named seeds: random layouts, a bare image with a hand-built Xen-like table tree, cycles,
/// and typical rejections.
pub fn seeds() -> Vec<(&'static str, Description)> {
    const RW_A_D: u16 = 0x62;
    let ptr = |table: u8| EntryDesc::Pointer {
        table,
        flags: RW_A_D,
    };
    let edit = |table: u8, index: u16, value: EntryDesc| Edit {
        table,
        index,
        value,
    };
    // Bare 4 MiB image at 4 MiB: tables 0 (top), 1 (L3), 2 (L2 image map), 3 (L1),
    // 4 (directmap L3), 5 (L2 identity).
    let xen_like = Description {
        mode: 0,
        image_units: 1,
        image_pages: 1023,
        ram: vec![RamRange { start: 0, len: 63 }],
        tables: vec![1, 2, 3, 4, 5, 6],
        top: 0,
        image_maps: vec![2],
        target: TargetDesc::Default,
        edits: vec![
            edit(0, 261, ptr(1)),
            edit(1, 321, ptr(2)),
            edit(
                2,
                0,
                EntryDesc::Leaf2M {
                    slot: 0,
                    flags: RW_A_D | 0x100,
                },
            ),
            edit(
                2,
                1,
                EntryDesc::Leaf2M {
                    slot: 1,
                    flags: RW_A_D | 0x100 | 0x200,
                },
            ),
            edit(2, 511, ptr(3)),
            edit(
                3,
                0,
                EntryDesc::LeafAt {
                    frame: 0xfee00,
                    flags: RW_A_D | 0x10,
                },
            ),
            edit(0, 262, ptr(4)),
            edit(
                4,
                0,
                EntryDesc::Leaf1G {
                    gib: 0,
                    flags: RW_A_D | 0x400,
                },
            ),
            edit(0, 0, ptr(5)),
            edit(5, 0, ptr(2)),
        ],
        ..Description::default()
    };
    let recursive = Description {
        edits: [xen_like.edits.clone(), vec![edit(0, 510, ptr(0))]].concat(),
        ..xen_like.clone()
    };
    let five_level = Description {
        mode: MODE_FIVE_LEVEL,
        tables: [vec![7], xen_like.tables.clone()].concat(),
        image_maps: vec![3],
        edits: [
            vec![edit(0, 300, ptr(1))],
            xen_like
                .edits
                .iter()
                .map(|e| {
                    let shift = |t: u8| t + 1;
                    Edit {
                        table: shift(e.table),
                        value: match e.value {
                            EntryDesc::Pointer { table, flags } => EntryDesc::Pointer {
                                table: shift(table),
                                flags,
                            },
                            v => v,
                        },
                        ..*e
                    }
                })
                .collect(),
        ]
        .concat(),
        ..xen_like.clone()
    };
    let mut image_4k_leaf = xen_like.clone();
    image_4k_leaf.edits.push(edit(
        3,
        5,
        EntryDesc::Leaf4K {
            page: 3,
            flags: RW_A_D,
        },
    ));
    let mut cycle_outside = xen_like.clone();
    cycle_outside.tables.push(0xc3);
    cycle_outside.edits.push(edit(1, 7, ptr(6)));
    cycle_outside.edits.push(edit(6, 0, ptr(1)));
    let overflow = Description {
        max_phys: 36,
        target: TargetDesc::Units(0x7ffe),
        ram: vec![
            RamRange { start: 0, len: 63 },
            RamRange {
                start: 0x7ffe,
                len: 3,
            },
        ],
        ..xen_like.clone()
    };
    let layout = |seed: u64| Description {
        mode: MODE_LAYOUT,
        seed,
        ..Description::default()
    };
    let mut layout_edited = layout(7);
    layout_edited.tables = vec![0x10, 0x11];
    layout_edited.edits = vec![
        edit(0, 5, ptr(0)),
        edit(
            1,
            17,
            EntryDesc::LeafAt {
                frame: 0x12345,
                flags: RW_A_D | 0x8000 | 0x1000,
            },
        ),
    ];
    // One seed per rejection the bare base can show (see `PLAN_ERRORS_UNREACHED` for the
    // rest), each a small change of `xen_like`.
    let rejected = |change: &dyn Fn(&mut Description)| {
        let mut d = xen_like.clone();
        change(&mut d);
        d
    };
    let rejections = vec![
        (
            "reject-invalid-max-phys-bits",
            rejected(&|d| d.max_phys = 0xf5),
        ),
        (
            "reject-empty-image",
            rejected(&|d| {
                d.wide_image = Some((4 * MIB, 4 * MIB));
                d.target = TargetDesc::Units(32);
            }),
        ),
        (
            "reject-image-rounds-past-2-64",
            rejected(&|d| {
                d.wide_image = Some((u64::MAX - 2 * MIB + 1, u64::MAX - 0xfff));
                d.target = TargetDesc::Units(32);
            }),
        ),
        (
            "reject-image-misaligned",
            rejected(&|d| d.mode |= MODE_IMAGE_START_OFF),
        ),
        (
            "reject-new-base-misaligned",
            rejected(&|d| d.target = TargetDesc::Raw(0x80_1000)),
        ),
        (
            "reject-ranges-overlap",
            rejected(&|d| d.target = TargetDesc::Units(3)),
        ),
        (
            "reject-inaccessible",
            rejected(&|d| d.target = TargetDesc::Units(200)),
        ),
        ("reject-table-misaligned", rejected(&|d| d.top = 0xf8)),
        (
            "reject-image-map-misaligned",
            rejected(&|d| d.image_maps = vec![0xf1]),
        ),
        (
            "reject-image-outside-ram",
            rejected(&|d| {
                d.mode |= MODE_IMAGE_NOT_RAM;
                d.ram = vec![RamRange { start: 8, len: 55 }];
            }),
        ),
        (
            "reject-table-outside-image",
            rejected(&|d| {
                d.tables.push(0xc3);
                d.edits.push(edit(6, 0, ptr(1)));
                d.top = 6;
            }),
        ),
        (
            "reject-malformed-entry",
            rejected(&|d| {
                d.edits.push(edit(
                    0,
                    7,
                    EntryDesc::Pointer {
                        table: 1,
                        flags: RW_A_D | 0x2000,
                    },
                ))
            }),
        ),
        (
            "reject-image-leaf-outside-image",
            rejected(&|d| {
                d.edits.push(edit(
                    2,
                    5,
                    EntryDesc::Leaf2M {
                        slot: 40,
                        flags: RW_A_D,
                    },
                ))
            }),
        ),
        (
            "reject-image-map-not-reached",
            rejected(&|d| {
                d.tables.push(7);
                d.image_maps.push(6);
            }),
        ),
        (
            "reject-image-map-aliased",
            // A second, empty image map, reached as an L2 and as an L3.
            rejected(&|d| {
                d.tables.push(8);
                d.image_maps.push(6);
                d.edits.push(edit(1, 322, ptr(6)));
                d.edits.push(edit(0, 3, ptr(6)));
            }),
        ),
        (
            "reject-too-many-tables",
            rejected(&|d| d.fan_out = Some((0, 80))),
        ),
        // The new image passes 2^36: the first entry that would leave the address field is
        // named (reloc-core checks the new range after the walk, to name it).
        (
            "reject-rebased-entry-beyond-max-phys",
            rejected(&|d| {
                d.max_phys = 36;
                d.ram.push(RamRange {
                    start: 0x7ffe,
                    len: 7,
                });
                d.target = TargetDesc::Units(0x8000);
            }),
        ),
    ];
    [
        ("bare-xen-like", xen_like.clone()),
        ("bare-recursive", recursive),
        ("bare-five-level", five_level),
        ("bare-image-4k-leaf", image_4k_leaf),
        ("bare-cycle-outside-image", cycle_outside),
        ("bare-beyond-maxphys", overflow),
        ("layout-1", layout(1)),
        ("layout-2-auto", {
            let mut d = layout(2);
            d.target = TargetDesc::Auto;
            d
        }),
        ("layout-3-five-level-or-not", layout(3)),
        ("layout-edited", layout_edited),
    ]
    .into_iter()
    .chain(rejections)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_reach_every_path() {
        let mut outcomes = Vec::new();
        for (name, d) in seeds() {
            let bytes = d.encode();
            assert_eq!(
                Description::decode(&mut Unstructured::new(&bytes)),
                d,
                "{name}"
            );
            outcomes.push((name, check(&d)));
        }
        let find = |n: &str| outcomes.iter().find(|(name, _)| *name == n).unwrap().1;
        assert!(
            matches!(find("bare-xen-like"), Outcome::Relocated { leaves, .. } if leaves > 0),
            "{outcomes:?}"
        );
        assert!(matches!(find("bare-recursive"), Outcome::Relocated { .. }));
        assert!(matches!(find("bare-five-level"), Outcome::Relocated { .. }));
        assert_eq!(
            find("bare-image-4k-leaf"),
            Outcome::Rejected("ImageMappedBy4KiBLeaf")
        );
        assert_eq!(
            find("bare-cycle-outside-image"),
            Outcome::Rejected("PointerOutsideImage")
        );
        assert!(matches!(
            find("layout-1"),
            Outcome::Relocated { virt: true, .. }
        ));
        // Seeds for a second role of two variants: the image map (not the top table)
        // misaligned, the image (not the destination) outside RAM. The outcome names only the
        // variant; `cargo xtask fuzz --coverage` shows which role's path the seed takes.
        assert_eq!(
            find("reject-image-map-misaligned"),
            Outcome::Rejected("TableMisaligned")
        );
        assert_eq!(
            find("reject-image-outside-ram"),
            Outcome::Rejected("Inaccessible")
        );
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn inputs_without_wide_image_encode_as_before() {
        for (name, d) in seeds()
            .into_iter()
            .filter(|(_, d)| d.wide_image.is_none() && d.fan_out.is_none())
        {
            let mut bytes = d.encode();
            // A trailing zero flag byte (or none at all) is no wide image.
            bytes.push(0);
            assert_eq!(
                Description::decode(&mut Unstructured::new(&bytes)),
                d,
                "{name}"
            );
        }
    }

    /// Random descriptions with a wide image of every class (any pair, near 2^64, rounding
    /// past 2^64, small and in RAM) decode from their bytes, round-trip, and run through the
    /// whole oracle without a panic (reloc-core or harness) or a long loop.
    #[test]
    fn wide_images_decode_and_check_without_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..3000u64 {
            let len = (next(&mut state) % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            if let Some(m) = bytes.first_mut() {
                *m &= !MODE_LAYOUT;
            }
            let mut d = Description::decode(&mut Unstructured::new(&bytes));
            let (a, b) = (next(&mut state), next(&mut state));
            let image = match i % 5 {
                0 => (a, b),
                1 => (u64::MAX - (a % (64 * MIB)), u64::MAX - (b % (8 * MIB))),
                2 => (
                    0,
                    0xffff_ffff_ffe0_1000 + (b % 0x1f_f000) / PAGE_SIZE * PAGE_SIZE,
                ),
                3 => ((a % (256 * MIB)) & !0xfff, (b % (512 * MIB)) & !0xfff),
                _ => (a & !0xfff, (a & !0xfff).wrapping_add(b >> (a % 64))),
            };
            d.wide_image = Some(image);
            let bytes = d.encode();
            // Trailing random bytes after the last field are ignored.
            let mut padded = bytes.clone();
            padded.push(next(&mut state) as u8);
            let decoded = Description::decode(&mut Unstructured::new(&padded));
            assert_eq!(decoded, d);
            let outcome = check_bytes(&bytes);
            if let Outcome::Rejected(kind) = outcome {
                kinds.insert(kind);
            }
        }
        // The wide class is searched: the rounding case and its neighbours are reached.
        assert!(kinds.contains("RangeBeyondMaxPhys"), "{kinds:?}");
        assert!(kinds.len() >= 3, "{kinds:?}");
    }

    #[test]
    fn random_bytes_with_the_wide_flag_decode_without_panic() {
        let mut state = 0x0123_4567_89ab_cdef;
        let mut wide = 0;
        for _ in 0..5000 {
            let len = (next(&mut state) % 512) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8 | 1).collect();
            if let Some(m) = bytes.first_mut() {
                *m &= !MODE_LAYOUT;
            }
            let d = Description::decode(&mut Unstructured::new(&bytes));
            wide += usize::from(d.wide_image.is_some());
            assert_eq!(Description::decode(&mut Unstructured::new(&d.encode())), d);
        }
        assert!(wide > 0, "no input reached the wide image field");
    }
}
