//! The walk behind [`Plan::new`]: every table reachable from the top level, each recorded
//! once with every level it is reached at, every entry checked. Reads only.
//!
//! Exactly-once: a table is a record keyed by its address, not a visit. A table reached
//! again (shared, or through a recursive slot) only adds a level to its record, and each
//! (table, level) pair is scanned once, so the walk terminates on cycles and apply rebases
//! each table once.

use x86_64::PhysAddr;

use crate::paging::{
    address_field, Entry, EntryKind, Level, MaxPhysAddr, ENTRIES_PER_TABLE, TABLE_SIZE,
};
use crate::phys::PhysMemory;

use super::{EntryLocation, Plan, PlanError, RelocationRequest};

/// A set of levels as a bitmask (bit n for level n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct LevelSet(u8);

impl LevelSet {
    fn with(self, level: Level) -> Self {
        Self(self.0 | 1 << level.number())
    }
    fn contains(self, level: Level) -> bool {
        self.0 & 1 << level.number() != 0
    }
    /// True when some level holding pointers (L2 and up) is in the set.
    pub(super) fn any_above_l1(self) -> bool {
        self.0 & !(1 << Level::L1.number()) != 0
    }
    pub(super) fn highest(self) -> Option<Level> {
        Level::ALL.into_iter().rev().find(|&l| self.contains(l))
    }
    fn minus(self, other: LevelSet) -> Self {
        Self(self.0 & !other.0)
    }
}

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
}

impl TableRecord {
    /// The mask of the address field to rebase in `entry`, or `None` to leave it alone.
    ///
    /// The one rule shared by planning (which proves each such rebase stays in range) and
    /// apply (which performs it): pointers (present, PS clear) in any table reached at L2 or
    /// above, and present 2 MiB leaves of image maps.
    pub(super) fn rebase_field(&self, entry: Entry, max_phys: MaxPhysAddr) -> Option<u64> {
        if !entry.is_present() {
            return None;
        }
        if entry.has_page_size_bit() {
            self.image_map
                .then(|| address_field(Level::L2, true, max_phys))
        } else if self.reached.any_above_l1() {
            Some(address_field(Level::L4, false, max_phys))
        } else {
            None
        }
    }
}

/// The physical address of entry `index` of the table at `table`.
pub(super) fn entry_addr(table: u64, index: u16) -> u64 {
    table.wrapping_add(u64::from(index) * 8)
}

/// The entry indices of a table.
pub(super) fn entry_indices() -> impl Iterator<Item = u16> {
    0..ENTRIES_PER_TABLE as u16
}

/// The 512 entries of the table at `table`, with their indices.
fn table_entries<M: PhysMemory + ?Sized>(
    mem: &M,
    table: u64,
) -> impl Iterator<Item = (u16, Entry)> + '_ {
    entry_indices().map(move |i| (i, Entry::new(mem.read_u64(entry_addr(table, i)))))
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// Walks every table reachable from the top level and checks the declared image maps.
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
            let Some(record) = self.record(map.as_u64()).filter(|r| r.image_map) else {
                return Err(PlanError::ImageMapNotReached { table: map });
            };
            if let Some(level) = record.reached.highest().filter(|&l| l > Level::L2) {
                return Err(PlanError::ImageMapAliased { table: map, level });
            }
        }
        Ok(())
    }

    fn record(&self, addr: u64) -> Option<&TableRecord> {
        self.records().iter().find(|r| r.addr == addr)
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
        let count = self.table_count;
        if let Some(record) = self
            .tables
            .get_mut(..count)
            .and_then(|known| known.iter_mut().find(|r| r.addr == addr))
        {
            record.reached = record.reached.with(level);
            record.image_map |= is_image_map;
            return Ok(());
        }
        let record = self.tables.get_mut(count).ok_or(PlanError::TooManyTables {
            capacity: MAX_TABLES,
        })?;
        *record = TableRecord {
            addr,
            reached: LevelSet::default().with(level),
            scanned: LevelSet::default(),
            image_map: is_image_map,
        };
        self.table_count += 1;
        Ok(())
    }

    /// A table with a level reached but not yet scanned.
    fn next_unscanned(&self) -> Option<(usize, Level)> {
        self.records()
            .iter()
            .enumerate()
            .find_map(|(i, r)| Some((i, r.reached.minus(r.scanned).highest()?)))
    }

    /// Checks every entry of table `index` read at `level`, and reaches its children.
    fn scan<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: usize,
        level: Level,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let Some(slot) = self.tables.get_mut(index) else {
            return Ok(());
        };
        let record = *slot;
        slot.scanned = record.scanned.with(level);
        let is_image_map = record.image_map && level == Level::L2;
        for (index, entry) in table_entries(mem, record.addr) {
            let at = location(record.addr, level, index, entry);
            let kind = entry
                .decode(level, self.max_phys)
                .map_err(|reason| PlanError::MalformedEntry { at, reason })?;
            let rebased = match kind {
                EntryKind::NotPresent => continue,
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
                    entry.rebased(address_field(level, false, self.max_phys), self.delta)
                }
                EntryKind::Leaf { frame, size } if is_image_map => {
                    if !self.footprint.contains_span(frame, size) {
                        return Err(PlanError::ImageLeafOutsideImage { at });
                    }
                    entry.rebased(address_field(level, true, self.max_phys), self.delta)
                }
                EntryKind::Leaf { .. } => continue,
            };
            if rebased.is_none() {
                return Err(PlanError::RebasedEntryBeyondMaxPhys {
                    at,
                    max_phys_bits: self.max_phys.bits(),
                });
            }
        }
        Ok(())
    }

    /// No 4 KiB leaf under an image map may map image memory: it would not move.
    fn check_image_map_l1<M: PhysMemory + ?Sized>(
        &self,
        mem: &M,
        image_map: EntryLocation,
        l1_table: u64,
    ) -> Result<(), PlanError> {
        for (index, entry) in table_entries(mem, l1_table) {
            let leaf = location(l1_table, Level::L1, index, entry);
            match entry.decode(Level::L1, self.max_phys) {
                Err(reason) => return Err(PlanError::MalformedEntry { at: leaf, reason }),
                Ok(EntryKind::Leaf { frame, .. }) if self.image.contains(frame) => {
                    return Err(PlanError::ImageMappedBy4KiBLeaf { image_map, leaf });
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
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
    /// this plan validated.
    pub(crate) fn translation_after_move<M: PhysMemory + ?Sized>(
        &self,
        mem: &M,
        virt: u64,
    ) -> Option<u64> {
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
                    let moves = record.image_map && level == Level::L2 && size > TABLE_SIZE;
                    let frame = if moves {
                        frame.wrapping_add(self.delta)
                    } else {
                        frame
                    };
                    return Some(frame | (virt & (size - 1)));
                }
            }
        }
    }

    /// The top-level table in the old image (the current CR3 address).
    pub fn top_table(&self) -> PhysAddr {
        self.top_table
    }
}
