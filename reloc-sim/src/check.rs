//! The properties every relocation must satisfy, checked against the simulated machine.
//!
//! The checks are an oracle written from the specification, not from reloc-core's code:
//! they find the tables with their own walk ([`reached_tables`]), decide what must move from
//! the rule stated in reloc-core's documentation, and compare what the CPU would translate
//! (with [`crate::paging`]'s independent walker) before and after.
//!
//! What moves: every present entry with PS clear in a table reached at L2 or above (a
//! pointer), and every present PS entry of a declared image map reached at L2 (an image
//! leaf). So a virtual address mapped by an image leaf translates to its old physical
//! address plus delta; one whose leaf entry is a pointer seen through a recursive slot (it
//! maps a page table, which moved) does too; every other mapping stays.
//!
//! # One call
//!
//! [`check`] checks every property of one relocation: a [`Snapshot`] of memory before it,
//! one after it, and the [`Expectation`] (the move that was asked for, or a rejection). The
//! snapshots come from reloc-sim's [`Machine`], its [`SparseMemory`], a `DirectMap` buffer or
//! any [`PhysRead`] memory, so the tables can be written and relocated
//! by any code. It returns a [`Report`] of every property, held, violated or not checked
//! (and why not).
//!
//! The functions below it (`check_mappings`, `check_copy`, ...) are the single properties
//! [`check`] and [`crate::run`] are made of.

use std::collections::BTreeMap;
use std::fmt;

use reloc_core::PhysRange;

use crate::machine::Machine;
use crate::mem::{PhysFault, PhysRead, Scope, SparseMemory, TableView, PAGE_SIZE};
use crate::paging::{enumerate, walk, LeafMapping, Perms, WalkConfig, DEFAULT_LEAF_LIMIT};
use crate::relocators::Request;

/// The properties, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// Every mapped virtual address translates to old + delta if the image map maps it,
    /// unchanged otherwise, with identical flags; unmapped stays unmapped.
    Mappings,
    /// The new copy equals the old image except the rebased address fields.
    Copy,
    /// No byte outside the new image range changes.
    OutsideUntouched,
    /// The old image is untouched.
    OldImageUntouched,
    /// A rejected request leaves memory bit-identical.
    RejectedUntouched,
    /// After the switch every TLB entry agrees with the page tables: none reaches the old
    /// copy through a stale translation.
    TlbCoherent,
    /// No read after the switch returned data older than a write made through the old
    /// alias during the critical region (and the code after the switch ran without a fault).
    NoStaleReads,
    /// A naive add-per-visit walk gives the same memory (only claimed for layouts without
    /// sharing).
    NaiveAgrees,
}

impl Property {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Property::Mappings => "mappings",
            Property::Copy => "copy",
            Property::OutsideUntouched => "outside-untouched",
            Property::OldImageUntouched => "old-image-untouched",
            Property::RejectedUntouched => "rejected-untouched",
            Property::TlbCoherent => "tlb-coherent",
            Property::NoStaleReads => "no-stale-reads",
            Property::NaiveAgrees => "naive-agrees",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mapping as compared: everything but the entry's location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapped {
    /// Virtual start.
    pub virt: u64,
    /// Physical start.
    pub frame: u64,
    /// Page size.
    pub size: u64,
    /// Effective permissions.
    pub perms: Perms,
    /// G bit.
    pub global: bool,
    /// The leaf entry's non-address bits.
    pub flags: u64,
}

impl fmt::Display for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} -> {:#x} ({:#x} bytes, flags {:#x})",
            self.virt, self.frame, self.size, self.flags
        )
    }
}

fn mapped(l: &LeafMapping) -> Mapped {
    let shift = l.size.trailing_zeros();
    let address = (((1u64 << 52) - 1) >> shift) << shift;
    Mapped {
        virt: l.virt,
        frame: l.frame,
        size: l.size,
        perms: l.perms,
        global: l.global,
        flags: l.site.entry & !address,
    }
}

/// A property that does not hold, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A mapping differs from what the move should give.
    MappingChanged {
        /// Virtual address.
        virt: u64,
        /// What it should be (`None`: unmapped).
        expected: Option<Mapped>,
        /// What it is.
        actual: Option<Mapped>,
    },
    /// The tables could not be enumerated.
    Unwalkable(String),
    /// A qword of the new copy differs from the expected one.
    CopyMismatch {
        /// Physical address in the new copy.
        phys: u64,
        /// Expected value.
        expected: u64,
        /// Actual value.
        actual: u64,
    },
    /// A qword outside the new image changed.
    OutsideChanged {
        /// Physical address.
        phys: u64,
        /// Before.
        before: u64,
        /// After.
        after: u64,
    },
    /// A qword of the old image changed.
    OldImageChanged {
        /// Physical address.
        phys: u64,
        /// Before.
        before: u64,
        /// After.
        after: u64,
    },
    /// A rejected request changed memory.
    RejectedChangedMemory {
        /// Physical address.
        phys: u64,
        /// Before.
        before: u64,
        /// After.
        after: u64,
    },
    /// A cached translation disagrees with the page tables.
    StaleTlbEntry {
        /// Virtual page.
        virt: u64,
        /// Cached physical page.
        cached: u64,
        /// What the tables say now (`None`: fault).
        current: Option<u64>,
        /// The entry is global.
        global: bool,
        /// The cached page lies in the old copy.
        in_old_copy: bool,
    },
    /// The simulated code faulted after the switch: on hardware, a crash.
    Crash(crate::machine::AccessFault),
    /// A stale read (stack-spill hazard).
    StaleRead(crate::machine::StaleRead),
    /// The naive walk produced different memory.
    NaiveDiffers {
        /// Physical address.
        phys: u64,
        /// reloc-core's value.
        core: u64,
        /// The naive walk's value.
        naive: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |m: &Option<Mapped>| m.map_or("unmapped".to_string(), |m| m.to_string());
        match self {
            Violation::MappingChanged {
                virt,
                expected,
                actual,
            } => write!(
                f,
                "mapping at {virt:#x}: expected {}, found {}",
                opt(expected),
                opt(actual)
            ),
            Violation::Unwalkable(why) => write!(f, "page tables cannot be enumerated: {why}"),
            Violation::CopyMismatch {
                phys,
                expected,
                actual,
            } => write!(
                f,
                "new copy at {phys:#x} holds {actual:#x}, expected {expected:#x}"
            ),
            Violation::OutsideChanged {
                phys,
                before,
                after,
            } => write!(
                f,
                "{phys:#x}, outside the new image, changed from {before:#x} to {after:#x}"
            ),
            Violation::OldImageChanged {
                phys,
                before,
                after,
            } => write!(
                f,
                "old image at {phys:#x} changed from {before:#x} to {after:#x}"
            ),
            Violation::RejectedChangedMemory {
                phys,
                before,
                after,
            } => write!(
                f,
                "a rejected request changed {phys:#x} from {before:#x} to {after:#x}"
            ),
            Violation::StaleTlbEntry {
                virt,
                cached,
                current,
                global,
                in_old_copy,
            } => write!(
                f,
                "{}TLB entry {virt:#x} -> {cached:#x}{} but the tables say {}",
                if *global { "global " } else { "" },
                if *in_old_copy { " (old copy)" } else { "" },
                current.map_or("not mapped".to_string(), |c| format!("{c:#x}"))
            ),
            Violation::StaleRead(s) => write!(f, "stale read: {s}"),
            Violation::Crash(fault) => write!(f, "the code after the switch faulted: {fault}"),
            Violation::NaiveDiffers { phys, core, naive } => write!(
                f,
                "naive walk wrote {naive:#x} at {phys:#x} where reloc-core wrote {core:#x}"
            ),
        }
    }
}

/// Levels (bit n = level n) each table is reached at from the top, by the checker's own walk.
pub fn reached_tables(mem: &SparseMemory, cfg: &WalkConfig) -> BTreeMap<u64, u8> {
    let addr = ((1u64 << cfg.max_phys_bits) - 1) & !0xfff;
    let mut reached: BTreeMap<u64, u8> = BTreeMap::new();
    let mut queue = vec![(cfg.top_table(), cfg.levels())];
    while let Some((table, level)) = queue.pop() {
        let seen = reached.entry(table).or_insert(0);
        if *seen & (1 << level) != 0 {
            continue;
        }
        *seen |= 1 << level;
        if level == 1 {
            continue;
        }
        // Entries up to the first one outside RAM.
        for &e in TableView::read(mem, table).readable() {
            let pointer = e & 1 != 0 && (level >= 4 || e & (1 << 7) == 0);
            if pointer {
                queue.push((e & addr, level - 1));
            }
        }
    }
    reached
}

/// Entries that must move: (table address, index) -> the address-field mask to add delta to.
pub type Moving = BTreeMap<(u64, u64), u64>;

/// Entries that must move, per the rule in the module documentation. Computed once per run
/// from the memory before the move and given to [`check_copy`] and [`check_mappings`].
pub fn entries_that_move(mem: &SparseMemory, cfg: &WalkConfig, image_maps: &[u64]) -> Moving {
    let mp = u32::from(cfg.max_phys_bits);
    let field = |low: u32| ((1u64 << mp) - 1) & !((1u64 << low) - 1);
    let mut out = BTreeMap::new();
    for (&table, &levels) in &reached_tables(mem, cfg) {
        if levels & !0b11 == 0 {
            continue; // reached only at L1
        }
        let image_map = image_maps.contains(&table) && levels & (1 << 2) != 0;
        for (i, &e) in (0u64..).zip(TableView::read(mem, table).readable()) {
            if e & 1 == 0 {
                continue;
            }
            if e & (1 << 7) == 0 {
                out.insert((table, i), field(12));
            } else if image_map {
                out.insert((table, i), field(21));
            }
        }
    }
    out
}

/// Statistics of a successful mapping check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingStats {
    /// Leaves compared.
    pub leaves: usize,
    /// Coalesced virtual ranges compared.
    pub ranges: usize,
    /// Leaves that moved.
    pub moved: usize,
}

/// Checks [`Property::Mappings`]: `before` with `before_cfg` against `after` with
/// `after_cfg`; `moving` is [`entries_that_move`] of `before`.
pub fn check_mappings(
    before: &SparseMemory,
    before_cfg: &WalkConfig,
    after: &SparseMemory,
    after_cfg: &WalkConfig,
    request: &Request,
    moving: &Moving,
) -> Result<MappingStats, Violation> {
    let unwalkable = |e: crate::paging::EnumerateError| Violation::Unwalkable(e.to_string());
    let old = enumerate(before, before_cfg, DEFAULT_LEAF_LIMIT).map_err(unwalkable)?;
    let new = enumerate(after, after_cfg, DEFAULT_LEAF_LIMIT).map_err(unwalkable)?;
    let delta = request.delta();
    let mut stats = MappingStats::default();
    let expected: Vec<Mapped> = old
        .leaves
        .iter()
        .map(|l| {
            let mut m = mapped(l);
            if moving.contains_key(&(l.site.table, u64::from(l.site.index))) {
                m.frame = m.frame.wrapping_add(delta);
                stats.moved += 1;
            }
            m
        })
        .collect();
    let actual: Vec<Mapped> = new.leaves.iter().map(mapped).collect();
    let n = expected.len().max(actual.len());
    for i in 0..n {
        let (e, a) = (expected.get(i).copied(), actual.get(i).copied());
        if e != a {
            let virt = match (e, a) {
                (Some(e), Some(a)) => e.virt.min(a.virt),
                (Some(m), None) | (None, Some(m)) => m.virt,
                (None, None) => 0,
            };
            // Report the mapping at the smaller address from both sides.
            let find = |v: &[Mapped]| v.iter().find(|m| m.virt == virt).copied();
            return Err(Violation::MappingChanged {
                virt,
                expected: find(&expected),
                actual: find(&actual),
            });
        }
    }
    let old_faults: Vec<(u64, u64)> = old.faults.iter().map(|f| (f.virt, f.size)).collect();
    let new_faults: Vec<(u64, u64)> = new.faults.iter().map(|f| (f.virt, f.size)).collect();
    if old_faults != new_faults {
        return Err(Violation::Unwalkable(format!(
            "reserved-bit faults changed: {} before, {} after",
            old_faults.len(),
            new_faults.len()
        )));
    }
    stats.leaves = actual.len();
    stats.ranges = coalesced_count(&actual);
    Ok(stats)
}

fn coalesced_count(m: &[Mapped]) -> usize {
    let mut count = 0;
    let mut prev: Option<Mapped> = None;
    for &cur in m {
        let joins = prev.is_some_and(|p| {
            p.virt.wrapping_add(p.size) == cur.virt
                && p.frame.wrapping_add(p.size) == cur.frame
                && p.perms == cur.perms
                && p.global == cur.global
        });
        if !joins {
            count += 1;
        }
        prev = Some(cur);
    }
    count
}

/// Statistics of a successful copy check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries found rebased as expected.
    pub entries_rebased: usize,
    /// Bytes compared in the new copy.
    pub bytes_compared: u64,
}

/// Checks [`Property::Copy`], [`Property::OldImageUntouched`] and
/// [`Property::OutsideUntouched`]: `after` is memory right after copy and rebase; `moving` is
/// [`entries_that_move`] of `before`.
pub fn check_copy(
    before: &SparseMemory,
    after: &SparseMemory,
    request: &Request,
    moving: &Moving,
) -> Vec<(Property, Result<CopyStats, Violation>)> {
    let image = request.image;
    let delta = request.delta();
    let new = PhysRange::new(
        request.new_base.as_u64(),
        request.new_base.as_u64() + image.len(),
    );
    let old_result = match after.first_difference(before, Scope::Inside(image)) {
        Some((phys, a, b)) => Err(Violation::OldImageChanged {
            phys,
            before: b,
            after: a,
        }),
        None => Ok(CopyStats::default()),
    };
    let outside = match after.first_difference(before, Scope::Outside(new)) {
        Some((phys, a, b)) => Err(Violation::OutsideChanged {
            phys,
            before: b,
            after: a,
        }),
        None => Ok(CopyStats::default()),
    };
    let mut tables_in_image: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (&(table, index), &field) in moving {
        tables_in_image
            .entry(table)
            .or_default()
            .push((index, field));
    }
    // Only pages allocated on either side can differ from zero: a page never written in the
    // old image nor in the new copy holds zeros on both sides (a table there has no present
    // entry, so nothing in it moves). So the cost follows written pages, not the image size.
    let mut pages: Vec<u64> = before
        .allocated_in(image.start, image.end)
        .chain(
            after
                .allocated_in(new.start, new.end)
                .map(|p| p.wrapping_sub(delta)),
        )
        .collect();
    pages.sort_unstable();
    pages.dedup();
    let zero = [0u64; 512];
    let mut stats = CopyStats {
        entries_rebased: 0,
        bytes_compared: image.len(),
    };
    let mut copy = Ok(());
    'pages: for page in pages {
        let old = before.page(page).unwrap_or(&zero);
        let mut expected = *old;
        // Bytes of the first or last page outside the image are not part of the copy.
        let in_image = |i: usize| image.contains(page + i as u64 * 8);
        if let Some(entries) = tables_in_image.get(&page) {
            for &(index, field) in entries {
                let e = expected[index as usize];
                expected[index as usize] = (e & !field) | ((e & field).wrapping_add(delta) & field);
                stats.entries_rebased += 1;
            }
        }
        let got = after.page(page.wrapping_add(delta)).unwrap_or(&zero);
        if *got != expected {
            for i in (0..512).filter(|&i| in_image(i)) {
                if got[i] != expected[i] {
                    copy = Err(Violation::CopyMismatch {
                        phys: page.wrapping_add(delta) + i as u64 * 8,
                        expected: expected[i],
                        actual: got[i],
                    });
                    break 'pages;
                }
            }
        }
    }
    vec![
        (Property::Copy, copy.map(|()| stats)),
        (Property::OldImageUntouched, old_result),
        (Property::OutsideUntouched, outside),
    ]
}

/// Checks [`Property::RejectedUntouched`].
pub fn check_untouched(before: &SparseMemory, after: &SparseMemory) -> Result<(), Violation> {
    match after.first_difference(before, Scope::All) {
        Some((phys, a, b)) => Err(Violation::RejectedChangedMemory {
            phys,
            before: b,
            after: a,
        }),
        None => Ok(()),
    }
}

/// Every TLB entry that disagrees with a fresh walk of the current tables.
pub fn stale_tlb_entries(machine: &Machine, old_image: PhysRange) -> Vec<Violation> {
    let cfg = machine.walk_config();
    machine
        .tlb()
        .entries()
        .filter_map(|e| {
            let current = walk(&machine.mem, &cfg, e.page_virt).ok();
            let agrees = current
                .is_some_and(|t| t.frame == e.frame && t.page_size == e.size && t.perms == e.perms);
            (!agrees).then(|| Violation::StaleTlbEntry {
                virt: e.page_virt,
                cached: e.frame,
                current: current.map(|t| t.frame),
                global: e.global,
                in_old_copy: old_image.overlaps(&PhysRange::new(e.frame, e.frame + e.size)),
            })
        })
        .collect()
}

/// Checks [`Property::TlbCoherent`]; returns the number of entries checked.
pub fn check_tlb(machine: &Machine, old_image: PhysRange) -> Result<usize, Violation> {
    match stale_tlb_entries(machine, old_image).into_iter().next() {
        Some(v) => Err(v),
        None => Ok(machine.tlb().len()),
    }
}

/// Checks [`Property::NoStaleReads`].
pub fn check_stale_reads(machine: &Machine) -> Result<(), Violation> {
    match machine.stale_reads().first() {
        Some(s) => Err(Violation::StaleRead(*s)),
        None => Ok(()),
    }
}

/// Checks [`Property::NaiveAgrees`]: `core` and `naive` are memories after each relocator's
/// copy and rebase.
pub fn check_naive(core: &SparseMemory, naive: &SparseMemory) -> Result<(), Violation> {
    match core.first_difference(naive, Scope::All) {
        Some((phys, c, n)) => Err(Violation::NaiveDiffers {
            phys,
            core: c,
            naive: n,
        }),
        None => Ok(()),
    }
}

/// [`check_copy`]'s results as report outcomes, each with its one-line account of what was
/// verified.
pub fn copy_outcomes(
    before: &SparseMemory,
    after: &SparseMemory,
    request: &Request,
    moving: &Moving,
) -> impl Iterator<Item = PropertyOutcome> {
    check_copy(before, after, request, moving)
        .into_iter()
        .map(|(property, result)| PropertyOutcome {
            property,
            result: result.map(|s| match property {
                Property::Copy => format!(
                    "{} bytes compared, {} entries rebased as specified",
                    s.bytes_compared, s.entries_rebased
                ),
                Property::OldImageUntouched => "old image bit-identical".into(),
                _ => "every byte outside the new image bit-identical".into(),
            }),
        })
}

/// The outcome of one property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyOutcome {
    /// Which.
    pub property: Property,
    /// What was verified, or the violation.
    pub result: Result<String, Violation>,
}

/// Memory and paging at one moment, for [`check`]: before a relocation, or after it (then
/// optionally with the machine after the switch, [`Snapshot::with_switch`]).
#[derive(Clone, Debug)]
pub struct Snapshot {
    mem: SparseMemory,
    paging: WalkConfig,
    switched: Option<Machine>,
}

impl Snapshot {
    /// `mem` as it is now, walked with `paging` (cheap: pages are shared until written).
    pub fn of_memory(mem: &SparseMemory, paging: WalkConfig) -> Self {
        Self {
            mem: mem.clone(),
            paging,
            switched: None,
        }
    }

    /// `machine`'s memory and paging (CR3, LA57, MAXPHYADDR) as they are now.
    pub fn of_machine(machine: &Machine) -> Self {
        Self::of_memory(&machine.mem, machine.walk_config())
    }

    /// Any memory reloc-sim can read: a copy of `ram` (every byte readable) taken through
    /// [`PhysRead`]. Costs a read of every page of `ram`; pages holding only zeros are not
    /// stored. For a `DirectMap`, [`Snapshot::of_directmap`] gives `ram`.
    pub fn capture<M: PhysRead + ?Sized>(
        mem: &M,
        ram: &[PhysRange],
        paging: WalkConfig,
    ) -> Result<Self, PhysFault> {
        let mut copy = SparseMemory::new(ram);
        let mut words = Box::new([0u64; 512]);
        for r in copy.ram().to_vec() {
            let mut page = r.start & !(PAGE_SIZE - 1);
            while page < r.end {
                let whole = page >= r.start && page + PAGE_SIZE <= r.end;
                if let Some(lent) = mem.table_ref(page).filter(|_| whole) {
                    *words = *lent;
                } else if whole {
                    mem.read_table(page, &mut words).map_err(|(_, f)| f)?;
                } else {
                    // A page RAM covers in part (RAM is byte-granular): its qwords in RAM.
                    for (i, w) in words.iter_mut().enumerate() {
                        let at = page + i as u64 * 8;
                        *w = if r.contains(at) {
                            mem.read_phys_u64(at)?
                        } else {
                            0
                        };
                    }
                }
                if words.iter().any(|&w| w != 0) {
                    for (i, &w) in words.iter().enumerate() {
                        let at = page + i as u64 * 8;
                        if w != 0 || copy.is_ram(at) {
                            copy.write(at, w)?;
                        }
                    }
                }
                page = match page.checked_add(PAGE_SIZE) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
        Ok(Self::of_memory(&copy, paging))
    }

    /// The memory behind a directmap (on the host, a `DirectMap::from_slice` buffer): its
    /// window is the RAM.
    pub fn of_directmap(directmap: &reloc_core::DirectMap<'_>, paging: WalkConfig) -> Self {
        // Every byte of the window is readable by the directmap's contract.
        Self::capture(directmap, &[directmap.window()], paging)
            .unwrap_or_else(|_| unreachable!("a directmap reads its whole window"))
    }

    /// This snapshot (memory right after the copy and rebase) with `machine` after the
    /// switch: [`check`] then also checks TLB coherence and stale reads on it, and walks its
    /// CR3 (so a wrong CR3 shows as changed mappings).
    pub fn with_switch(mut self, machine: &Machine) -> Self {
        self.switched = Some(machine.clone());
        self
    }

    /// The memory.
    pub fn memory(&self) -> &SparseMemory {
        &self.mem
    }

    /// The paging configuration.
    pub fn paging(&self) -> WalkConfig {
        self.paging
    }
}

/// What a relocation should have done, for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// The image moved to `new_base`; `image_maps` are the L2 tables whose 2 MiB leaves map
    /// the image (the request's).
    Moved {
        /// The old image.
        image: PhysRange,
        /// Its new physical start.
        new_base: u64,
        /// The declared image maps.
        image_maps: Vec<u64>,
    },
    /// The relocation was rejected: memory must be bit-identical.
    Rejected,
}

impl Expectation {
    /// The move `request` asks for.
    pub fn moved(request: &reloc_core::RelocationRequest<'_>) -> Self {
        Expectation::Moved {
            image: request.image,
            new_base: request.new_base.as_u64(),
            image_maps: request.image_maps.iter().map(|m| m.as_u64()).collect(),
        }
    }

    /// [`Expectation::moved`] for `Ok`, [`Expectation::Rejected`] for `Err`: what the
    /// relocation that returned `result` must have done.
    pub fn for_outcome<T, E>(
        request: &reloc_core::RelocationRequest<'_>,
        result: &Result<T, E>,
    ) -> Self {
        match result {
            Ok(_) => Self::moved(request),
            Err(_) => Expectation::Rejected,
        }
    }
}

impl From<&Request> for Expectation {
    fn from(request: &Request) -> Self {
        Self::moved(&request.as_core())
    }
}

/// What [`check`] found: every property, held or violated, and those it could not check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The properties checked, in [`Property`] order.
    pub outcomes: Vec<PropertyOutcome>,
    /// The properties not checked, and why (a rejected request has no copy; without
    /// [`Snapshot::with_switch`] there is no TLB).
    pub not_checked: Vec<(Property, &'static str)>,
}

impl Report {
    /// True when every property checked held.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|p| p.result.is_ok())
    }

    /// Every violation.
    pub fn violations(&self) -> impl Iterator<Item = (Property, &Violation)> {
        self.outcomes
            .iter()
            .filter_map(|p| p.result.as_ref().err().map(|v| (p.property, v)))
    }

    /// The outcome of `property`, if it was checked.
    pub fn outcome(&self, property: Property) -> Option<&Result<String, Violation>> {
        self.outcomes
            .iter()
            .find(|p| p.property == property)
            .map(|p| &p.result)
    }

    /// Panics with the whole report unless every property checked held: for tests.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "relocation properties violated:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.outcomes {
            match &p.result {
                Ok(what) => writeln!(f, "ok      {}: {what}", p.property)?,
                Err(v) => writeln!(f, "FAILED  {}: {v}", p.property)?,
            }
        }
        for (property, why) in &self.not_checked {
            writeln!(f, "skipped {property}: {why}")?;
        }
        Ok(())
    }
}

/// `cr3` with its top table moved by `delta` when that table lies in `image` (every
/// reachable table does, for reloc-core): the CR3 a correct switch loads.
fn moved_cr3(paging: &WalkConfig, image: PhysRange, delta: u64) -> u64 {
    let top = paging.top_table();
    if image.contains(top) {
        paging.cr3.wrapping_add(delta)
    } else {
        paging.cr3
    }
}

/// Checks every property of one relocation (mappings, copy, old image and everything outside
/// the new image untouched, or memory untouched for a rejection; TLB coherence and stale
/// reads when `after` carries the switched machine) and returns the [`Report`].
///
/// `before` is memory before the relocation, walked with its paging configuration; `after`
/// is memory right after the copy and rebase (before code runs in the critical region),
/// optionally [`Snapshot::with_switch`]. After the move, tables are walked from `before`'s
/// top table moved by delta (the switched machine's CR3 when there is one).
pub fn check(before: &Snapshot, after: &Snapshot, expected: &Expectation) -> Report {
    let mut report = Report {
        outcomes: Vec::new(),
        not_checked: Vec::new(),
    };
    let (image, new_base, image_maps) = match expected {
        Expectation::Rejected => {
            report.outcomes.push(PropertyOutcome {
                property: Property::RejectedUntouched,
                result: check_untouched(&before.mem, &after.mem)
                    .map(|()| "memory bit-identical".into()),
            });
            for property in [
                Property::Mappings,
                Property::Copy,
                Property::OutsideUntouched,
                Property::OldImageUntouched,
                Property::TlbCoherent,
                Property::NoStaleReads,
            ] {
                report
                    .not_checked
                    .push((property, "the relocation was rejected"));
            }
            return report;
        }
        Expectation::Moved {
            image,
            new_base,
            image_maps,
        } => (*image, *new_base, image_maps),
    };
    let delta = new_base.wrapping_sub(image.start);
    let moving = entries_that_move(&before.mem, &before.paging, image_maps);
    let request = Request {
        paging: if before.paging.la57 {
            reloc_core::PagingMode::FiveLevel
        } else {
            reloc_core::PagingMode::FourLevel
        },
        top_table: reloc_core::PhysAddr::new_truncate(before.paging.top_table()),
        image,
        new_base: reloc_core::PhysAddr::new_truncate(new_base),
        image_maps: Vec::new(),
        max_phys_bits: before.paging.max_phys_bits,
        encryption_mask: 0,
    };
    let (after_mem, after_paging) = match &after.switched {
        Some(m) => (&m.mem, m.walk_config()),
        None => (
            &after.mem,
            WalkConfig {
                cr3: moved_cr3(&before.paging, image, delta),
                ..before.paging
            },
        ),
    };
    report.outcomes.push(PropertyOutcome {
        property: Property::Mappings,
        result: check_mappings(
            &before.mem,
            &before.paging,
            after_mem,
            &after_paging,
            &request,
            &moving,
        )
        .map(|s| {
            format!(
                "{} leaves in {} ranges, {} moved by delta, the rest unchanged",
                s.leaves, s.ranges, s.moved
            )
        }),
    });
    report
        .outcomes
        .extend(copy_outcomes(&before.mem, &after.mem, &request, &moving));
    match &after.switched {
        Some(m) => {
            report.outcomes.push(PropertyOutcome {
                property: Property::TlbCoherent,
                result: check_tlb(m, image)
                    .map(|n| format!("{n} cached entries agree with the new tables")),
            });
            report.outcomes.push(PropertyOutcome {
                property: Property::NoStaleReads,
                result: check_stale_reads(m).map(|()| "no stale read".into()),
            });
        }
        None => {
            let why = "no switch recorded (Snapshot::with_switch)";
            report.not_checked.push((Property::TlbCoherent, why));
            report.not_checked.push((Property::NoStaleReads, why));
        }
    }
    report.outcomes.sort_by_key(|p| p.property);
    report
}
