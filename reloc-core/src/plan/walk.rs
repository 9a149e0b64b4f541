//! The walk behind [`Plan::new`]: every table reachable from the top level, each recorded
//! once with every level it is reached at, every entry checked. Reads only.
//!
//! Exactly-once: a table is a record keyed by its address, not a visit. A table reached
//! again (shared, or through a recursive slot) only adds a level to its record, and each
//! (table, level) pair is scanned once, so the walk terminates on cycles and apply rebases
//! each table once.
//!
//! Cost: each table is read once per level, in place where memory lends it
//! ([`PhysMemory::table`], as `DirectMap` does), [`CHUNK`] entries at a time (each entry read
//! once, with a relaxed atomic load from live tables), or else from a 4 KiB snapshot
//! ([`PhysMemory::read_table`]) taken in a function of its own, so that the snapshot's stack
//! is spent only by memory that lends nothing. A branch-free filter ([`EntryFilter`]) picks
//! out the few entries of each chunk that need more than a glance: pointers, image-map leaves
//! and malformed entries. Only those take the exact
//! per-entry checks, which also record in the table's rewrite bitmap what apply will rewrite.
//! Records are found through an open-addressing index, and the search for the next table to
//! scan resumes where it stopped, so planning costs time linear in the tables and entries.

use x86_64::PhysAddr;

use crate::paging::{
    address_field, Entry, EntryKind, Level, MaxPhysAddr, ARCH_ADDRESS_BITS, ENTRIES_PER_TABLE,
    PAGE_SIZE, PRESENT, TABLE_SIZE,
};
use crate::phys::{LentTable, PhysMemory};

use super::{EntryLocation, Plan, PlanError, RelocationRequest};

/// A set of levels as a bitmask (bit n for level n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct LevelSet(u8);

impl LevelSet {
    fn with(self, level: Level) -> Self {
        Self(self.0 | 1 << level.number())
    }
    pub(super) fn contains(self, level: Level) -> bool {
        self.0 & 1 << level.number() != 0
    }
    /// True when some level holding pointers (L2 and up) is in the set.
    pub(super) fn any_above_l1(self) -> bool {
        self.0 & !(1 << Level::L1.number()) != 0
    }
    pub(super) fn highest(self) -> Option<Level> {
        // Bit n is level n, and `Level::ALL[n - 1]` is level n.
        let top_bit = 7usize.checked_sub(self.0.leading_zeros() as usize)?;
        Level::ALL.get(top_bit.checked_sub(1)?).copied()
    }
    fn minus(self, other: LevelSet) -> Self {
        Self(self.0 & !other.0)
    }
}

/// Entries read from a table at a time, into a buffer the filter screens (512 bytes of the
/// walk's frame): the filter's bitmask is 64 bits, and smaller chunks measured slower (a
/// relaxed atomic load is never vectorised, so the copy costs a load and a store per entry
/// whatever the chunk; the screen of a chunk does not).
pub(super) const CHUNK: usize = 64;

/// Qwords of a table's rewrite bitmap: one bit per entry.
pub(super) const REWRITE_WORDS: usize = ENTRIES_PER_TABLE / 64;

/// One distinct page table found by the walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct TableRecord {
    /// Physical address in the old image (below 2^52: it was decoded from an entry or given
    /// as a `PhysAddr`).
    pub(super) addr: u64,
    /// Every level the table is reached at (more than one with recursive or odd layouts).
    pub(super) reached: LevelSet,
    /// The levels whose entries have been checked.
    scanned: LevelSet,
    /// A declared image map reached as L2: its present 2 MiB leaves move.
    pub(super) image_map: bool,
    /// Bit `i % 64` of word `i / 64` set: apply rewrites entry `i`, whose rebase planning
    /// proved in range. Pointers (present, PS clear) of a table scanned at L2 or above, and
    /// present 2 MiB leaves of an image map scanned at L2; nothing else.
    pub(super) rewrite: [u64; REWRITE_WORDS],
}

impl TableRecord {
    /// No table: what an empty plan's slots hold (`Default` is not `const`).
    pub(super) const EMPTY: Self = Self {
        addr: 0,
        reached: LevelSet(0),
        scanned: LevelSet(0),
        image_map: false,
        rewrite: [0; REWRITE_WORDS],
    };

    fn mark_rewrite(&mut self, index: u16) {
        let index = usize::from(index);
        if let Some(word) = self.rewrite.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    /// The indices of the entries apply rewrites, ascending.
    pub(super) fn rewrites(&self) -> impl Iterator<Item = u16> + '_ {
        self.rewrite
            .iter()
            .zip(0u16..)
            .flat_map(|(&word, w)| set_bits(word).map(move |bit| w * 64 + bit))
    }
}

/// The positions of the set bits of `word`, ascending.
pub(super) fn set_bits(mut word: u64) -> impl Iterator<Item = u16> {
    core::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        // Below 64: fits.
        let bit = word.trailing_zeros() as u16;
        word &= word - 1;
        Some(bit)
    })
    // A qword has at most 64 set bits: the bound keeps every loop over them finite whatever
    // the arithmetic above does.
    .take(64)
}

/// Which entries of a table scanned at one level need the exact per-entry checks: the present
/// ones that are malformed, that point to a table, or that are image-map leaves. Every other
/// entry (not present, or a well-formed leaf that stays) passes with no further work, which is
/// what makes scanning 512 leaves of a directmap table cheap.
///
/// The test is `present && entry & mask != 0`, with one mask for entries with PS (bit 7) set
/// and one for entries with it clear; bit 0 (present) in a mask selects every present entry of
/// that kind. The masks hold the reserved bits of [`Entry::decode`], so no entry the exact
/// checks would reject is ever skipped (tested against `decode` in this module's tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryFilter {
    /// For PS clear.
    plain: u64,
    /// For PS set.
    page_size: u64,
}

impl EntryFilter {
    /// The filter for a table scanned at `level`; `image_map` for a declared image map
    /// scanned at L2.
    pub(crate) fn new(level: Level, image_map: bool, max_phys: MaxPhysAddr) -> Self {
        // Address bits at or above the limit: malformed in any present entry.
        let beyond = ARCH_ADDRESS_BITS & !max_phys.address_mask(12) & !max_phys.encryption_mask();
        // Bits between the PAT bit and a huge leaf's alignment: malformed in that leaf.
        let misaligned = |level| {
            ARCH_ADDRESS_BITS
                & !address_field(level, true, max_phys)
                & !(1 << 12)
                & !max_phys.encryption_mask()
        };
        let every = PRESENT;
        match level {
            // Bit 7 is PAT: every entry is a 4 KiB leaf.
            Level::L1 => Self {
                plain: beyond,
                page_size: beyond,
            },
            Level::L2 => Self {
                plain: every,
                page_size: beyond | misaligned(Level::L2) | if image_map { every } else { 0 },
            },
            Level::L3 => Self {
                plain: every,
                page_size: beyond | misaligned(Level::L3),
            },
            // PS set is malformed here.
            Level::L4 | Level::L5 => Self {
                plain: every,
                page_size: every,
            },
        }
    }

    /// True when `entry` needs the exact checks.
    #[inline(always)]
    pub(crate) fn selects(&self, entry: u64) -> bool {
        self.hit(entry) != 0
    }

    /// Nonzero when `entry` needs the exact checks; branch-free, so that a loop over a table
    /// compiles to straight-line (vectorisable) code.
    #[inline(always)]
    fn hit(&self, entry: u64) -> u64 {
        let present = 0u64.wrapping_sub(entry & PRESENT);
        let page_size = 0u64.wrapping_sub((entry & PAGE_SIZE) >> 7);
        let mask = self.plain ^ ((self.plain ^ self.page_size) & page_size);
        entry & present & mask
    }

    /// Bit `j` set when entry `j` of `chunk` needs the exact checks.
    #[inline]
    fn select_chunk(&self, chunk: &[u64; 64]) -> u64 {
        // Most chunks hold nothing to check and `may_select` proves it cheaply; where it
        // cannot, eighths of the chunk are screened again before the exact per-entry test.
        if !self.may_select(chunk) {
            return 0;
        }
        let (eighths, _) = chunk.as_chunks::<8>();
        eighths
            .iter()
            .zip((0u32..64).step_by(8))
            .filter(|(part, _)| self.may_select(part))
            .fold(0, |bits, (part, first)| {
                part.iter().zip(first..).fold(bits, |bits, (&entry, j)| {
                    bits | u64::from(self.selects(entry)) << j
                })
            })
    }

    /// False only when no entry of `entries` needs the exact checks: two ORs over the
    /// entries, a few vector operations per pair of entries. `hit` can select an entry only
    /// through a bit of `page_size` (PS set), a non-present bit of `plain`, or the present
    /// bit of `plain` in an entry with PS clear, so this tests a superset.
    ///
    /// When the present bit of `plain` is clear (L1), or set in both masks (L4, L5, image
    /// maps: every present entry is selected), PS does not matter and one OR suffices.
    #[inline(always)]
    fn may_select<const N: usize>(&self, entries: &[u64; N]) -> bool {
        let any_plain = self.plain & PRESENT;
        if any_plain == 0 || self.page_size & PRESENT != 0 {
            let all = entries.iter().fold(0, |all, &entry| all | entry);
            return all & (self.page_size | self.plain) != 0;
        }
        let any_bits = self.page_size | (self.plain & !PRESENT);
        let mut all = 0;
        let mut plain = 0;
        for &entry in entries {
            all |= entry;
            plain |= entry & !(entry >> 7);
        }
        // One test, not `||`: a short circuit splits the loop in two and spills.
        (all & any_bits) | (plain & any_plain) != 0
    }
}

/// The physical address of entry `index` of the table at `table`.
pub(super) fn entry_addr(table: u64, index: u16) -> u64 {
    table.wrapping_add(u64::from(index) * 8)
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// Walks every table reachable from the top level and checks the declared image maps.
    /// (An image map also reached above L2 is refused by [`Plan::reach`] the moment it is
    /// reached both ways, so a map reached as an L2 is not aliased here.)
    pub(super) fn walk<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        self.reach(
            request.top_table.as_u64(),
            request.paging.top_level(),
            request,
        )?;
        while let Some((index, level)) = self.next_unscanned() {
            self.scan(mem, index, level, request)?;
        }
        for &map in request.image_maps {
            if !self.record(map.as_u64()).is_some_and(|r| r.image_map) {
                return Err(PlanError::ImageMapNotReached { table: map });
            }
        }
        Ok(())
    }

    /// The record of the table at `addr`, if the walk found it.
    pub(super) fn record(&self, addr: u64) -> Option<&TableRecord> {
        match self.index_probe(addr) {
            Probe::Found { record, .. } => self.tables.get(record),
            Probe::Vacant { .. } | Probe::Full => None,
        }
    }

    /// Looks `addr` up in the index: open addressing with linear probing over
    /// `2 * MAX_TABLES` slots, so the index is at most half full and a probe is short. A slot
    /// holds a record number plus one; zero is vacant.
    fn index_probe(&self, addr: u64) -> Probe {
        let slots = self.index.as_flattened();
        let Ok(len) = u64::try_from(slots.len()) else {
            return Probe::Full;
        };
        // Fibonacci hashing of the page number, scaled onto the slots (no division).
        let hash = (addr >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let start = ((u128::from(hash) * u128::from(len)) >> 64) as usize;
        let wrapped = slots.get(start..).into_iter().flatten().zip(start..);
        let from_zero = slots.get(..start).into_iter().flatten().zip(0..);
        for (&slot, at) in wrapped.chain(from_zero) {
            let Some(record) = (slot as usize).checked_sub(1) else {
                return Probe::Vacant { slot: at };
            };
            if self.tables.get(record).is_some_and(|r| r.addr == addr) {
                return Probe::Found { record };
            }
        }
        Probe::Full
    }

    /// Notes that the table at `addr` is reached at `level`.
    fn reach(
        &mut self,
        addr: u64,
        level: Level,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let is_image_map =
            level == Level::L2 && request.image_maps.iter().any(|m| m.as_u64() == addr);
        let too_many = PlanError::TooManyTables {
            capacity: MAX_TABLES,
        };
        let slot = match self.index_probe(addr) {
            Probe::Found { record: index } => {
                if let Some(record) = self.tables.get_mut(index) {
                    if !record.reached.contains(level) {
                        // A new level to scan, possibly behind the scan cursor.
                        self.scan_from = self.scan_from.min(index);
                    }
                    record.reached = record.reached.with(level);
                    record.image_map |= is_image_map;
                    // A declared image map reached both as an L2 and higher is aliased: say
                    // so now, before scanning it as an L2 reads its L3 entries as L2 ones
                    // (and names the levels wrongly in another error).
                    let declared = request.image_maps.iter().any(|m| m.as_u64() == addr);
                    if let Some(higher) = record.reached.highest().filter(|&l| {
                        declared && l > Level::L2 && record.reached.contains(Level::L2)
                    }) {
                        return Err(PlanError::ImageMapAliased {
                            table: PhysAddr::new_truncate(addr),
                            level: higher,
                        });
                    }
                }
                return Ok(());
            }
            Probe::Vacant { slot } => slot,
            Probe::Full => return Err(too_many),
        };
        let count = self.table_count;
        let number = count
            .checked_add(1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(too_many)?;
        let record = self.tables.get_mut(count).ok_or(too_many)?;
        *record = TableRecord {
            addr,
            reached: LevelSet::default().with(level),
            scanned: LevelSet::default(),
            image_map: is_image_map,
            rewrite: [0; REWRITE_WORDS],
        };
        if let Some(vacant) = self.index.as_flattened_mut().get_mut(slot) {
            *vacant = number;
        }
        self.table_count += 1;
        Ok(())
    }

    /// Records that the table at `addr` needs no scan at `level`.
    fn mark_scanned(&mut self, addr: u64, level: Level) {
        if let Probe::Found { record } = self.index_probe(addr) {
            if let Some(record) = self.tables.get_mut(record) {
                record.scanned = record.scanned.with(level);
            }
        }
    }

    /// A table with a level reached but not yet scanned, now marked scanned at that level:
    /// the first in discovery order, its highest such level. Every record before `scan_from` is fully scanned, so the search
    /// starts there.
    fn next_unscanned(&mut self) -> Option<(usize, Level)> {
        let count = self.table_count;
        let found = self
            .tables
            .get(..count)?
            .iter()
            .enumerate()
            .skip(self.scan_from)
            .find_map(|(i, r)| Some((i, r.reached.minus(r.scanned).highest()?)));
        self.scan_from = found.map_or(count, |(i, _)| i);
        let (index, level) = found?;
        // Marked scanned here, as it is handed out, not by `scan`: each pair is handed out
        // once, so the walk ends whatever a scan does.
        if let Some(record) = self.tables.get_mut(index) {
            record.scanned = record.scanned.with(level);
        }
        Some((index, level))
    }

    /// Checks every entry of table `index` read at `level`, reaches its children and marks
    /// the entries apply will rewrite.
    fn scan<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: usize,
        level: Level,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let Some(table) = self.tables.get(index).map(|slot| slot.addr) else {
            return Ok(());
        };
        match mem.table(table) {
            Some(entries) => self.scan_entries(mem, index, level, entries, request),
            None => self.scan_snapshot(mem, index, level, request),
        }
    }

    /// [`Plan::scan`] for memory that lends no table: the 4 KiB snapshot lives in this
    /// frame, which the walk over lent tables never enters.
    #[inline(never)]
    fn scan_snapshot<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: usize,
        level: Level,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let Some(table) = self.tables.get(index).map(|r| r.addr) else {
            return Ok(());
        };
        let mut snapshot = [0; ENTRIES_PER_TABLE];
        mem.read_table(table, &mut snapshot);
        self.scan_entries(mem, index, level, LentTable::Stable(&snapshot), request)
    }

    /// The scan of table `index` at `level` over its `entries`, [`CHUNK`] at a time.
    fn scan_entries<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: usize,
        level: Level,
        entries: LentTable<'_>,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let Some(record) = self.tables.get(index) else {
            return Ok(());
        };
        let (table, is_image_map) = (record.addr, record.image_map && level == Level::L2);
        let filter = EntryFilter::new(level, is_image_map, self.max_phys);
        let mut chunk = [0; CHUNK];
        for first in (0u16..ENTRIES_PER_TABLE as u16).step_by(CHUNK) {
            entries.read_entries(usize::from(first), &mut chunk);
            for bit in set_bits(filter.select_chunk(&chunk)) {
                let entry_index = first + bit;
                let raw = chunk.get(usize::from(bit)).copied().unwrap_or(0);
                let at = location(table, level, entry_index, Entry::new(raw));
                if self.check_entry(mem, at, is_image_map, request)? {
                    if let Some(record) = self.tables.get_mut(index) {
                        record.mark_rewrite(entry_index);
                    }
                }
            }
        }
        Ok(())
    }

    /// The exact checks of one entry the filter selected; reaches the table it points to.
    /// `Ok(true)` when apply must rewrite it (the rebase was proven in range).
    fn check_entry<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        at: EntryLocation,
        is_image_map: bool,
        request: &RelocationRequest<'_>,
    ) -> Result<bool, PlanError> {
        let (entry, level) = (Entry::new(at.entry), at.level);
        let kind = entry
            .decode(level, self.max_phys)
            .map_err(|reason| PlanError::MalformedEntry { at, reason })?;
        let rebased = match kind {
            EntryKind::NotPresent => return Ok(false),
            EntryKind::Table { table } => {
                if !self.image.contains_span(table, TABLE_SIZE) {
                    return Err(PlanError::PointerOutsideImage { at });
                }
                if is_image_map {
                    self.check_image_map_l1(mem, at, table)?;
                }
                if let Some(below) = level.below() {
                    self.reach(table, below, request)?;
                }
                if is_image_map {
                    // The check just decoded every entry at L1, which is all an L1 scan
                    // does (L1 holds nothing to rewrite or reach): no second pass.
                    self.mark_scanned(table, Level::L1);
                }
                entry.rebased(address_field(level, false, self.max_phys), self.delta)
            }
            EntryKind::Leaf { frame, size } if is_image_map => {
                if !self.footprint.contains_span(frame, size) {
                    return Err(PlanError::ImageLeafOutsideImage { at });
                }
                entry.rebased(address_field(level, true, self.max_phys), self.delta)
            }
            EntryKind::Leaf { .. } => return Ok(false),
        };
        if rebased.is_none() {
            return Err(PlanError::RebasedEntryBeyondMaxPhys {
                at,
                max_phys_bits: self.max_phys.bits(),
            });
        }
        Ok(true)
    }

    /// No 4 KiB leaf under an image map may map image memory: it would not move.
    fn check_image_map_l1<M: PhysMemory + ?Sized>(
        &self,
        mem: &M,
        image_map: EntryLocation,
        l1_table: u64,
    ) -> Result<(), PlanError> {
        match mem.table(l1_table) {
            Some(entries) => self.check_image_map_l1_entries(image_map, l1_table, entries),
            None => self.check_image_map_l1_snapshot(mem, image_map, l1_table),
        }
    }

    /// [`Plan::check_image_map_l1`] for memory that lends no table: the 4 KiB snapshot lives
    /// in this frame only.
    #[inline(never)]
    fn check_image_map_l1_snapshot<M: PhysMemory + ?Sized>(
        &self,
        mem: &M,
        image_map: EntryLocation,
        l1_table: u64,
    ) -> Result<(), PlanError> {
        let mut snapshot = [0; ENTRIES_PER_TABLE];
        mem.read_table(l1_table, &mut snapshot);
        self.check_image_map_l1_entries(image_map, l1_table, LentTable::Stable(&snapshot))
    }

    /// The check of [`Plan::check_image_map_l1`] over the L1 table's `entries`.
    fn check_image_map_l1_entries(
        &self,
        image_map: EntryLocation,
        l1_table: u64,
        entries: LentTable<'_>,
    ) -> Result<(), PlanError> {
        // Rarely reached (an image map pointing to an L1 table), so a small chunk: this frame
        // sits on top of the scan's.
        let mut chunk = [0; 16];
        for first in (0u16..ENTRIES_PER_TABLE as u16).step_by(chunk.len()) {
            entries.read_entries(usize::from(first), &mut chunk);
            // Only present entries can fail, and `decode` turns any other away at once.
            for (&raw, index) in chunk.iter().zip(first..) {
                let entry = Entry::new(raw);
                let leaf = || location(l1_table, Level::L1, index, entry);
                match entry.decode(Level::L1, self.max_phys) {
                    Err(reason) => return Err(PlanError::MalformedEntry { at: leaf(), reason }),
                    Ok(EntryKind::Leaf { frame, .. }) if self.image.contains(frame) => {
                        return Err(PlanError::ImageMappedBy4KiBLeaf {
                            image_map,
                            leaf: leaf(),
                        });
                    }
                    Ok(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// Where `addr` is, or would go, in the record index.
enum Probe {
    /// Record number `record` holds it.
    Found { record: usize },
    /// Not recorded; index slot `slot` is free for it.
    Vacant { slot: usize },
    /// Not recorded, and no slot is free (only with `MAX_TABLES == 0`).
    Full,
}

fn location(table: u64, level: Level, index: u16, entry: Entry) -> EntryLocation {
    EntryLocation {
        table: PhysAddr::new_truncate(table),
        level,
        index,
        entry: entry.raw(),
    }
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// Where `virt` will translate once the CPU runs on the relocated tables, computed from
    /// the old tables before anything is written: every pointer is rebased along with its
    /// table, so the walk is the old one, and only a leaf of an image map (which apply moves)
    /// lands `delta` higher. `None` when `virt` is not mapped, or the walk leaves the tables
    /// this plan validated. Also returns the size of the leaf that maps `virt`: the
    /// translation is linear up to that leaf's end.
    pub(crate) fn translation_after_move<M: PhysMemory + ?Sized>(
        &self,
        mem: &M,
        virt: u64,
    ) -> Option<(u64, u64)> {
        let mut table = self.top_table.as_u64();
        let mut level = self.paging.top_level();
        loop {
            let record = self.record(table)?;
            let index = u16::try_from((virt >> level.index_shift()) & 511).ok()?;
            let entry = Entry::new(mem.read_u64(entry_addr(table, index)));
            match entry.decode(level, self.max_phys).ok()? {
                EntryKind::NotPresent => return None,
                EntryKind::Table { table: next } => {
                    table = next;
                    level = level.below()?;
                }
                EntryKind::Leaf { frame, size } => {
                    // A leaf at L2 is a 2 MiB leaf: an image map's, it moves.
                    let moves = record.image_map && level == Level::L2;
                    let frame = if moves {
                        frame.wrapping_add(self.delta)
                    } else {
                        frame
                    };
                    return Some((frame | (virt & (size - 1)), size));
                }
            }
        }
    }

    /// The top-level table in the old image (the current CR3 address).
    pub fn top_table(&self) -> PhysAddr {
        self.top_table
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::RefCell;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;
    use crate::paging::{Malformed, PagingMode};
    use crate::phys::{MemoryFault, PhysRange};
    use proptest::prelude::*;

    /// What the exact per-entry checks do with `entry`: `true` unless they skip it with no
    /// error (not present, or a leaf that stays and decodes).
    fn needs_exact_checks(entry: u64, level: Level, image_map: bool, mp: MaxPhysAddr) -> bool {
        match Entry::new(entry).decode(level, mp) {
            Err(_) | Ok(EntryKind::Table { .. }) => true,
            Ok(EntryKind::NotPresent) => false,
            Ok(EntryKind::Leaf { .. }) => image_map && level == Level::L2,
        }
    }

    /// Entries near every case: random, present or not, PS or not, bits near the limits.
    fn entry() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u64..4, prop_oneof![Just(0u64), any::<u64>()]).prop_map(
            |(raw, flags, noise)| {
                // Mostly clean addresses (low bits), sometimes noise anywhere.
                let addr = raw & 0x0000_00ff_ffff_f000;
                (addr | (flags & 1) | ((flags >> 1) << 7)) ^ (noise & raw.rotate_left(7))
            },
        )
    }

    fn max_phys() -> impl Strategy<Value = MaxPhysAddr> {
        (32u8..=52, any::<bool>()).prop_map(|(bits, c_bit)| {
            let mp = MaxPhysAddr::new(bits).unwrap_or(MaxPhysAddr::new(52).unwrap());
            match c_bit.then(|| mp.with_encryption_mask(1 << (bits - 1))) {
                Some(Some(encrypted)) => encrypted,
                _ => mp,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The filter selects exactly the entries the exact checks would not skip: none it
        /// passes over could have been an error or a rewrite.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system, which Miri isolates; the filter is safe code")]
        fn filter_selects_exactly_what_the_exact_checks_need(
            entries in proptest::collection::vec(entry(), 64),
            level in 1u8..=5,
            image_map in any::<bool>(),
            mp in max_phys(),
        ) {
            let level = Level::ALL[usize::from(level - 1)];
            let filter = EntryFilter::new(level, image_map, mp);
            let mut expected_bits = 0u64;
            for (j, &e) in entries.iter().enumerate() {
                let expected = needs_exact_checks(e, level, image_map, mp);
                prop_assert_eq!(filter.selects(e), expected, "entry {:#x} at {}", e, level);
                expected_bits |= u64::from(expected) << j;
            }
            let chunk: [u64; 64] = entries.try_into().unwrap();
            prop_assert_eq!(filter.select_chunk(&chunk), expected_bits);
        }
    }

    #[test]
    fn filter_passes_plain_leaves_and_catches_a_lone_pointer() {
        let mp = MaxPhysAddr::new(46).unwrap();
        // A directmap L2 table: 2 MiB leaves everywhere, one pointer in the middle.
        let mut chunk = [0u64; 64];
        for (i, e) in chunk.iter_mut().enumerate() {
            *e = (i as u64) << 21 | 0xe3;
        }
        let filter = EntryFilter::new(Level::L2, false, mp);
        assert_eq!(filter.select_chunk(&chunk), 0);
        chunk[37] = 0x20_3000 | 0x63;
        assert_eq!(filter.select_chunk(&chunk), 1 << 37);
        // The same leaves in an image map all need checking.
        let image_map = EntryFilter::new(Level::L2, true, mp);
        assert_eq!(image_map.select_chunk(&chunk), u64::MAX);
    }

    /// The bound `Plan`'s documentation states: 88 bytes per table plus under 128.
    #[test]
    fn plan_size_is_88_bytes_per_table_plus_fixed_fields() {
        for (size, tables) in [
            (core::mem::size_of::<Plan<0>>(), 0),
            (core::mem::size_of::<Plan<24>>(), 24),
            (
                core::mem::size_of::<Plan>(),
                super::super::DEFAULT_MAX_TABLES,
            ),
            (core::mem::size_of::<Plan<4096>>(), 4096),
        ] {
            assert!(
                size >= 88 * tables && size < 88 * tables + 128,
                "{tables}: {size}"
            );
        }
    }

    #[test]
    fn highest_level_of_a_set() {
        assert_eq!(LevelSet::default().highest(), None);
        for level in Level::ALL {
            let set = LevelSet::default().with(level);
            assert_eq!(set.highest(), Some(level));
            assert_eq!(set.with(Level::L1).highest(), Some(level));
        }
    }

    #[test]
    fn set_bits_lists_positions_ascending() {
        assert!(set_bits(0).next().is_none());
        let bits: std::vec::Vec<u16> = set_bits(1 | 1 << 5 | 1 << 63).collect();
        assert_eq!(bits, [0, 5, 63]);
    }

    /// P, RW, A, D: a pointer's flags.
    const PTR: u64 = 0x63;
    /// A 2 MiB leaf: P, RW, A, D, PS.
    const HUGE: u64 = 0xe3;
    const IMAGE: PhysRange = PhysRange::new(0x20_0000, 0x40_0000);
    const NEW_BASE: u64 = 0x60_0000;

    /// Page tables only: every range is served, a table never written reads as zeros, and
    /// nothing is lent, so planning reads each table through `read_table`, which counts.
    #[derive(Default)]
    struct CountingTables {
        tables: BTreeMap<u64, [u64; ENTRIES_PER_TABLE]>,
        reads: RefCell<BTreeMap<u64, usize>>,
    }

    impl CountingTables {
        fn set(&mut self, table: u64, index: usize, entry: u64) {
            self.tables.entry(table).or_insert([0; ENTRIES_PER_TABLE])[index] = entry;
        }

        fn reads_of(&self, table: u64) -> usize {
            self.reads.borrow().get(&table).copied().unwrap_or(0)
        }
    }

    impl PhysMemory for CountingTables {
        fn check_range(&self, _: u64, _: u64) -> Result<(), MemoryFault> {
            Ok(())
        }
        fn read_u64(&self, addr: u64) -> u64 {
            let table = addr & !(TABLE_SIZE - 1);
            let index = (addr % TABLE_SIZE / 8) as usize;
            self.tables.get(&table).map_or(0, |t| t[index])
        }
        fn write_u64(&mut self, _: u64, _: u64) {}
        fn copy(&mut self, _: u64, _: u64, _: u64) {}
        fn read_table(&self, addr: u64, table: &mut [u64; ENTRIES_PER_TABLE]) {
            *self.reads.borrow_mut().entry(addr).or_insert(0) += 1;
            *table = self
                .tables
                .get(&addr)
                .copied()
                .unwrap_or([0; ENTRIES_PER_TABLE]);
        }
    }

    fn request<'a>(
        paging: PagingMode,
        top: u64,
        image_maps: &'a [PhysAddr],
    ) -> RelocationRequest<'a> {
        RelocationRequest {
            paging,
            top_table: PhysAddr::new(top),
            image: IMAGE,
            new_base: PhysAddr::new(NEW_BASE),
            image_maps,
            max_phys_bits: 46,
            encryption_mask: 0,
        }
    }

    /// A 5-level layout whose second L4 table points back to the first (so the first is
    /// reached again, as an L3, after the scan has passed it), and an image map pointing to an
    /// L1 table (which the image-map check reads, standing for its L1 scan).
    struct FiveLevel {
        mem: CountingTables,
        maps: [PhysAddr; 1],
    }

    const P: u64 = 0x20_1000; // L5, the top
    const A: u64 = 0x20_2000; // L4 under P[0], L3 under B[0]
    const B: u64 = 0x20_3000; // L4 under P[1]
    const D: u64 = 0x20_4000; // L4 under P[2]
    const E: u64 = 0x20_5000; // L3
    const M: u64 = 0x20_6000; // L2, the image map
    const F: u64 = 0x20_7000; // L1 under M[511]
    const G: u64 = 0x20_8000; // L2 under E[2], whose G[0] shows M as an L1

    fn five_level() -> FiveLevel {
        let mut mem = CountingTables::default();
        mem.set(P, 0, A | PTR);
        mem.set(P, 1, B | PTR);
        mem.set(P, 2, D | PTR);
        mem.set(B, 0, A | PTR);
        mem.set(D, 0, E | PTR);
        mem.set(E, 0, M | PTR);
        mem.set(E, 1, M | PTR);
        mem.set(E, 2, G | PTR);
        mem.set(G, 0, M | PTR);
        mem.set(M, 0, IMAGE.start | HUGE);
        mem.set(M, 511, F | PTR);
        mem.set(F, 0, 0xfee0_0000 | PTR);
        FiveLevel {
            mem,
            maps: [PhysAddr::new(M)],
        }
    }

    /// The cost the module documentation states: each table is read once per level it is
    /// reached at, including a level it gains after the scan has passed it (A as an L3, the
    /// image map M as an L1), and an L1 table under an image map is read once (by the
    /// image-map check, which does the L1 scan's work). The image map, shared by two entries
    /// and also reached as an L1, stays the image map.
    #[test]
    fn every_table_is_read_once_per_level_it_is_reached_at() {
        let layout = five_level();
        let req = request(PagingMode::FiveLevel, P, &layout.maps);
        let plan = Plan::<16>::new_with_capacity(&layout.mem, &req).expect("plans");
        for (table, levels) in [
            (P, 1),
            (A, 2),
            (B, 1),
            (D, 1),
            (E, 1),
            (M, 2),
            (G, 1),
            (F, 1),
        ] {
            assert_eq!(layout.mem.reads_of(table), levels, "table {table:#x}");
        }
        let found: Vec<_> = plan
            .tables()
            .map(|t| (t.addr.as_u64(), t.level, t.rebased, t.image_map))
            .collect();
        assert_eq!(
            found,
            [
                (P, Level::L5, true, false),
                (A, Level::L4, true, false),
                (B, Level::L4, true, false),
                (D, Level::L4, true, false),
                (E, Level::L3, true, false),
                (M, Level::L2, true, true),
                (G, Level::L2, true, false),
                (F, Level::L1, false, false),
            ]
        );
        let rewritten: Vec<u64> = plan.rewritten_entries().map(|a| a.as_u64()).collect();
        assert_eq!(
            rewritten,
            [P, P + 8, P + 16, B, D, E, E + 8, E + 16, M, M + 511 * 8, G]
        );
    }

    fn location_of(table: u64, level: Level, index: u16, entry: u64) -> EntryLocation {
        location(table, level, index, Entry::new(entry))
    }

    /// The exact per-entry check on its own, whatever the screen in front of it passes: a
    /// leaf moves (and must map the image) only in an image map; anywhere else it stays, even
    /// one mapping memory far outside the image.
    #[test]
    fn the_exact_check_moves_only_image_map_leaves() {
        let layout = five_level();
        let req = request(PagingMode::FiveLevel, P, &layout.maps);
        let mut plan = Plan::<16>::new_with_capacity(&layout.mem, &req).expect("plans");
        let outside = 0x4000_0000 | HUGE;
        let inside = IMAGE.start | HUGE;
        for (level, entry) in [
            (Level::L2, outside),
            (Level::L2, inside),
            (Level::L3, 0x4000_0000 | HUGE),
            (Level::L1, 0xfee0_0000 | PTR),
            (Level::L1, IMAGE.start | PTR),
        ] {
            let at = location_of(E, level, 3, entry);
            assert_eq!(
                plan.check_entry(&layout.mem, at, false, &req),
                Ok(false),
                "{at}"
            );
        }
        let at = location_of(M, Level::L2, 3, inside);
        assert_eq!(plan.check_entry(&layout.mem, at, true, &req), Ok(true));
        let at = location_of(M, Level::L2, 3, outside);
        assert_eq!(
            plan.check_entry(&layout.mem, at, true, &req),
            Err(PlanError::ImageLeafOutsideImage { at })
        );
    }

    /// A declared image map hung under the top level as well reads there as an L3 table,
    /// whose 2 MiB leaves would be misaligned 1 GiB leaves. The refusal names the aliasing,
    /// as soon as the table is reached both ways, not the leaves it would misread.
    #[test]
    fn an_image_map_also_reached_as_l3_is_refused_as_aliased_before_its_leaves_are_misread() {
        const T: u64 = 0x20_1000;
        const X: u64 = 0x20_2000;
        let mut mem = CountingTables::default();
        mem.set(T, 0, X | PTR);
        mem.set(T, 1, M | PTR);
        mem.set(X, 0, M | PTR);
        mem.set(M, 0, IMAGE.start | HUGE);
        let maps = [PhysAddr::new(M)];
        let req = request(PagingMode::FourLevel, T, &maps);
        assert_eq!(
            Plan::<16>::new_with_capacity(&mem, &req).err(),
            Some(PlanError::ImageMapAliased {
                table: PhysAddr::new(M),
                level: Level::L3,
            })
        );
    }

    /// A declared image map reached only as an L3 table is not an image map anywhere.
    #[test]
    fn an_image_map_reached_only_as_l3_is_not_reached() {
        const T: u64 = 0x20_1000;
        let mut mem = CountingTables::default();
        mem.set(T, 1, M | PTR);
        let maps = [PhysAddr::new(M)];
        let req = request(PagingMode::FourLevel, T, &maps);
        assert_eq!(
            Plan::<16>::new_with_capacity(&mem, &req).err(),
            Some(PlanError::ImageMapNotReached {
                table: PhysAddr::new(M)
            })
        );
    }

    /// The chunk screen is what keeps a table of plain leaves cheap, so besides never
    /// missing an entry the filter selects, it must pass a chunk that holds none: over
    /// entries that are empty or present (the screen may only be loose about the stray bits
    /// of entries that are not present), its verdict is exactly "some entry is selected".
    /// Crafted entries set each bit in turn over a clean 1 GiB-aligned frame, with PS clear
    /// and set, one at a time, behind seven empty slots and next to a clean 2 MiB leaf.
    #[test]
    fn the_chunk_screen_passes_exactly_the_chunks_with_nothing_selected() {
        let widths = [
            MaxPhysAddr::new(36).unwrap(),
            MaxPhysAddr::new(46).unwrap(),
            MaxPhysAddr::new(52).unwrap(),
            MaxPhysAddr::new(46)
                .unwrap()
                .with_encryption_mask(1 << 45)
                .unwrap(),
        ];
        let frame = 0x4000_0000;
        let mut entries = Vec::new();
        for bit in 0..64 {
            for flags in [PRESENT, PRESENT | PAGE_SIZE] {
                entries.push(frame | flags | 1 << bit);
            }
        }
        for mp in widths {
            for level in Level::ALL {
                for image_map in [false, true] {
                    let filter = EntryFilter::new(level, image_map, mp);
                    for &entry in &entries {
                        let selected = filter.selects(entry);
                        let mut eight = [0u64; 8];
                        eight[7] = entry;
                        assert_eq!(filter.may_select(&eight), selected, "{entry:#x} at {level}");
                        let mut chunk = [0u64; CHUNK];
                        chunk[0] = frame | HUGE;
                        chunk[63] = entry;
                        assert_eq!(
                            filter.may_select(&chunk),
                            selected || filter.selects(frame | HUGE),
                            "{entry:#x} at {level} after a 2 MiB leaf"
                        );
                    }
                }
            }
        }
    }

    /// Under an image map, every entry of the L1 table it points to is checked, in every
    /// chunk of the table and through a snapshot as well as in place: a malformed one is
    /// refused where it is, and so is a 4 KiB leaf mapping the image (it would not move).
    #[test]
    fn every_entry_of_an_l1_table_under_an_image_map_is_checked() {
        let malformed = 1 << 50 | PTR;
        let image_leaf = (IMAGE.start + 0x5000) | PTR;
        for index in [0, 17, 300, 511] {
            for (entry, reason) in [
                (malformed, Some(Malformed::AddressBeyondMaxPhys)),
                (image_leaf, None),
            ] {
                let mut layout = five_level();
                layout.mem.set(F, index, entry);
                let image_map = location_of(M, Level::L2, 511, F | PTR);
                let leaf = location_of(F, Level::L1, index as u16, entry);
                let expected = match reason {
                    Some(reason) => PlanError::MalformedEntry { at: leaf, reason },
                    None => PlanError::ImageMappedBy4KiBLeaf { image_map, leaf },
                };
                let req = request(PagingMode::FiveLevel, P, &layout.maps);
                assert_eq!(
                    Plan::<16>::new_with_capacity(&layout.mem, &req).err(),
                    Some(expected),
                    "snapshot, entry {index}"
                );
                // The same tables lent in place, through a directmap over the image (2 MiB:
                // once per kind of entry, which keeps the test quick under Miri).
                if index != 300 {
                    continue;
                }
                let mut words = std::vec![0u64; (IMAGE.len() / 8) as usize];
                for (&table, entries) in &layout.mem.tables {
                    let first = ((table - IMAGE.start) / 8) as usize;
                    words[first..first + ENTRIES_PER_TABLE].copy_from_slice(entries);
                }
                let lent = crate::phys::DirectMap::from_slice(&mut words, IMAGE.start);
                assert_eq!(
                    Plan::<16>::new_with_capacity(&lent, &req).err(),
                    Some(expected),
                    "lent, entry {index}"
                );
            }
        }
    }

    /// A plan with room for no table refuses every layout (the index has no slot at all).
    #[test]
    fn a_plan_of_no_capacity_refuses_the_top_table() {
        let layout = five_level();
        let req = request(PagingMode::FiveLevel, P, &layout.maps);
        assert_eq!(
            Plan::<0>::new_with_capacity(&layout.mem, &req).err(),
            Some(PlanError::TooManyTables { capacity: 0 })
        );
    }
}
