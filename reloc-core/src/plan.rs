//! The relocation request, its validation (planning) and its infallible application.
//!
//! [`Plan::new`] only reads memory. It walks every table reachable from the top-level table,
//! checks every entry it will later rebase, and records each distinct table once. Only a plan
//! can be applied, and [`Plan::apply`] has nothing left to check: it copies, then rewrites the
//! address fields the plan proved safe to rewrite.

use core::fmt;

use x86_64::PhysAddr;

use crate::paging::{
    address_field, Entry, EntryKind, Level, Malformed, MaxPhysAddr, PagingMode, ENTRIES_PER_TABLE,
    SIZE_2M, TABLE_SIZE,
};
use crate::phys::{MemoryFault, PhysMemory, PhysRange};

/// The image start and every move distance are multiples of this: the size of the image-map
/// leaves (Xen's `l2_xenmap` maps the image with 2 MiB pages).
pub const IMAGE_ALIGN: u64 = SIZE_2M;

/// Default capacity of a [`Plan`]: distinct page tables reachable from the top-level table.
/// Xen's boot layout has about 18.
pub const DEFAULT_MAX_TABLES: usize = 64;

/// What the caller asks for.
#[derive(Clone, Copy, Debug)]
pub struct RelocationRequest<'a> {
    /// 4- or 5-level paging: the level of `top_table`.
    pub paging: PagingMode,
    /// Physical address of the top-level table (what CR3 points to), inside `image`.
    pub top_table: u64,
    /// The running image, `[_start, _end)`: start 2 MiB-aligned, end 4 KiB-aligned. Every
    /// page table reachable from `top_table` must lie inside it.
    pub image: PhysRange,
    /// Where the image goes; 2 MiB-aligned.
    pub new_base: u64,
    /// L2 tables whose 2 MiB leaves map the image (Xen's `l2_xenmap`). Their present
    /// leaves move with the image; leaves anywhere else (directmap, identity maps) stay.
    pub image_maps: &'a [u64],
    /// The CPU's MAXPHYADDR, 32 to 52.
    pub max_phys_bits: u8,
}

/// Which caller-named table an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableRole {
    /// `RelocationRequest::top_table`.
    TopLevel,
    /// One of `RelocationRequest::image_maps`.
    ImageMap,
}

impl fmt::Display for TableRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableRole::TopLevel => "top-level table",
            TableRole::ImageMap => "image-map table",
        })
    }
}

/// Which of the two image ranges an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RangeRole {
    /// The running image.
    Old,
    /// The destination: `new_base` plus the image size rounded up to 2 MiB.
    New,
}

impl fmt::Display for RangeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeRole::Old => "image",
            RangeRole::New => "destination",
        })
    }
}

/// One entry of one table: where an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryLocation {
    /// Physical address of the table.
    pub table: u64,
    /// The level the table was reached at.
    pub level: Level,
    /// Index of the entry, 0 to 511.
    pub index: u16,
    /// The raw entry.
    pub entry: u64,
}

impl fmt::Display for EntryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} table {:#x}[{}] = {:#018x}",
            self.level, self.table, self.index, self.entry
        )
    }
}

/// Why a request was rejected. Planning only reads, so memory is as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanError {
    /// MAXPHYADDR outside 32..=52.
    InvalidMaxPhysBits {
        /// What was asked.
        bits: u8,
    },
    /// The image holds no byte.
    EmptyImage {
        /// The image as given.
        image: PhysRange,
    },
    /// The image start is not 2 MiB-aligned or its end not 4 KiB-aligned.
    ImageMisaligned {
        /// The image as given.
        image: PhysRange,
    },
    /// The new base is not a multiple of the image-map leaf size (2 MiB).
    NewBaseMisaligned {
        /// The new base as given.
        new_base: u64,
    },
    /// `start + len` passes 2^64.
    RangeWraps {
        /// Which range.
        role: RangeRole,
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// A range reaches MAXPHYADDR.
    RangeBeyondMaxPhys {
        /// Which range.
        role: RangeRole,
        /// The range.
        range: PhysRange,
        /// MAXPHYADDR.
        max_phys_bits: u8,
    },
    /// The destination overlaps the running image: the copy would overwrite live tables.
    RangesOverlap {
        /// The running image.
        old: PhysRange,
        /// The destination.
        new: PhysRange,
    },
    /// Physical memory cannot serve a range the relocation must read or write.
    Inaccessible {
        /// Which range.
        role: RangeRole,
        /// The range.
        range: PhysRange,
        /// What the memory reported.
        fault: MemoryFault,
    },
    /// A table named in the request is not 4 KiB-aligned.
    TableMisaligned {
        /// Which table.
        role: TableRole,
        /// Its address.
        table: u64,
    },
    /// A table named in the request lies outside the image.
    TableOutsideImage {
        /// Which table.
        role: TableRole,
        /// Its address.
        table: u64,
    },
    /// A pointer entry leads to a table outside the image: every table must live in the
    /// image, or the copy would not contain it.
    PointerOutsideImage {
        /// The pointer.
        at: EntryLocation,
    },
    /// A present entry the CPU would fault on.
    MalformedEntry {
        /// The entry.
        at: EntryLocation,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// An image-map leaf maps memory outside the image (rounded up to 2 MiB): moving it would
    /// point it at memory that was never copied.
    ImageLeafOutsideImage {
        /// The leaf.
        at: EntryLocation,
    },
    /// A 4 KiB leaf under an image-map table maps image memory: it would keep pointing at the
    /// old copy (the precise form of Xen's "no 4k mappings in l2_xenmap").
    ImageMappedBy4KiBLeaf {
        /// The image-map entry pointing to the L1 table.
        image_map: EntryLocation,
        /// The 4 KiB leaf in that L1 table.
        leaf: EntryLocation,
    },
    /// A declared image-map table is never reached as an L2 table from the top level.
    ImageMapNotReached {
        /// The table as declared.
        table: u64,
    },
    /// A declared image-map table is also reached as an L3 (or higher) table, where its
    /// leaves would be 1 GiB leaves: no single rebase is right for both readings.
    ImageMapAliased {
        /// The table as declared.
        table: u64,
        /// The higher level it is also reached at.
        level: Level,
    },
    /// Adding the move distance to this entry's address would leave the address field
    /// (reach MAXPHYADDR, or drop below zero).
    RebasedEntryBeyondMaxPhys {
        /// The entry.
        at: EntryLocation,
        /// MAXPHYADDR.
        max_phys_bits: u8,
    },
    /// More distinct tables than the plan can hold.
    TooManyTables {
        /// The plan's capacity.
        capacity: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::InvalidMaxPhysBits { bits } => {
                write!(f, "MAXPHYADDR of {bits} bits is outside 32..=52")
            }
            PlanError::EmptyImage { image } => write!(f, "image {image} is empty"),
            PlanError::ImageMisaligned { image } => write!(
                f,
                "image {image} must start on a 2 MiB boundary and end on a 4 KiB boundary"
            ),
            PlanError::NewBaseMisaligned { new_base } => {
                write!(f, "new base {new_base:#x} is not 2 MiB-aligned")
            }
            PlanError::RangeWraps { role, start, len } => {
                write!(f, "{role} at {start:#x} of {len:#x} bytes wraps past 2^64")
            }
            PlanError::RangeBeyondMaxPhys {
                role,
                range,
                max_phys_bits,
            } => write!(f, "{role} {range} reaches MAXPHYADDR (2^{max_phys_bits})"),
            PlanError::RangesOverlap { old, new } => {
                write!(f, "destination {new} overlaps the image {old}")
            }
            PlanError::Inaccessible { role, range, fault } => {
                write!(f, "{role} {range} is not accessible: {fault}")
            }
            PlanError::TableMisaligned { role, table } => {
                write!(f, "{role} {table:#x} is not 4 KiB-aligned")
            }
            PlanError::TableOutsideImage { role, table } => {
                write!(f, "{role} {table:#x} lies outside the image")
            }
            PlanError::PointerOutsideImage { at } => {
                write!(f, "{at} points to a table outside the image")
            }
            PlanError::MalformedEntry { at, reason } => write!(f, "{at} is malformed: {reason}"),
            PlanError::ImageLeafOutsideImage { at } => {
                write!(f, "image-map leaf {at} maps memory outside the image")
            }
            PlanError::ImageMappedBy4KiBLeaf { image_map, leaf } => write!(
                f,
                "4 KiB leaf {leaf} under image map {image_map} maps image memory and would not move"
            ),
            PlanError::ImageMapNotReached { table } => write!(
                f,
                "image-map table {table:#x} is not reached as an L2 table from the top level"
            ),
            PlanError::ImageMapAliased { table, level } => write!(
                f,
                "image-map table {table:#x} is also reached as an {level} table; its leaves cannot be rebased for both"
            ),
            PlanError::RebasedEntryBeyondMaxPhys { at, max_phys_bits } => write!(
                f,
                "{at} would leave the address field (MAXPHYADDR 2^{max_phys_bits}) once rebased"
            ),
            PlanError::TooManyTables { capacity } => {
                write!(f, "more than {capacity} distinct page tables are reachable")
            }
        }
    }
}

/// Counts per paging level, indexed by [`Level`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerLevel([u32; 5]);

impl PerLevel {
    /// The count at `level`.
    pub fn get(&self, level: Level) -> u32 {
        self.0.get(slot(level)).copied().unwrap_or(0)
    }

    /// Adds one at `level`, saturating.
    fn bump(&mut self, level: Level) {
        if let Some(count) = self.0.get_mut(slot(level)) {
            *count = count.saturating_add(1);
        }
    }

    /// Sum over all levels.
    pub fn total(&self) -> u32 {
        self.0.iter().fold(0u32, |sum, &n| sum.saturating_add(n))
    }
}

fn slot(level: Level) -> usize {
    match level {
        Level::L1 => 0,
        Level::L2 => 1,
        Level::L3 => 2,
        Level::L4 => 3,
        Level::L5 => 4,
    }
}

/// What [`Plan::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ApplyReport {
    /// Bytes copied from the image to the new base.
    pub bytes_copied: u64,
    /// Tables whose entries were rebased in the copy, by the highest level each was reached
    /// at. Each distinct table is counted (and rebased) once.
    pub tables_rebased: PerLevel,
    /// Pointer entries rebased, by the highest level of the table holding them.
    pub pointers_rebased: PerLevel,
    /// Image-map 2 MiB leaves rebased.
    pub image_leaves_rebased: u32,
}

/// A set of levels as a bitmask (bit n for level n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct LevelSet(u8);

impl LevelSet {
    fn with(self, level: Level) -> Self {
        Self(self.0 | 1 << level.number())
    }
    fn contains(self, level: Level) -> bool {
        self.0 & 1 << level.number() != 0
    }
    /// True when some level holding pointers (L2 and up) is in the set.
    fn any_above_l1(self) -> bool {
        self.0 & !(1 << Level::L1.number()) != 0
    }
    fn highest(self) -> Option<Level> {
        Level::ALL.into_iter().rev().find(|&l| self.contains(l))
    }
    fn minus(self, other: LevelSet) -> Self {
        Self(self.0 & !other.0)
    }
}

/// One distinct page table found by the walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct TableRecord {
    /// Physical address in the old image.
    addr: u64,
    /// Every level the table is reached at (more than one with recursive or odd layouts).
    reached: LevelSet,
    /// The levels whose entries have been checked.
    scanned: LevelSet,
    /// A declared image map reached as L2: its present 2 MiB leaves move.
    image_map: bool,
}

impl TableRecord {
    /// The mask of the address field to rebase in `entry`, or `None` to leave it alone.
    ///
    /// The one rule shared by planning (which proves each such rebase stays in range) and
    /// apply (which performs it): pointers (present, PS clear) in any table reached at L2 or
    /// above, and present 2 MiB leaves of image maps.
    fn rebase_field(&self, entry: Entry, max_phys: MaxPhysAddr) -> Option<u64> {
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

/// A validated relocation: every table found, every rebase proven in range. Apply it with
/// [`Plan::apply`] (host, simulator) or `switch::relocate` (bare metal).
///
/// `MAX_TABLES` bounds the number of distinct tables (about 16 bytes each); exceeding it is
/// [`PlanError::TooManyTables`].
///
/// The plan describes memory as it was read: page tables in the image must not change
/// between planning and apply.
#[derive(Clone, Debug)]
pub struct Plan<const MAX_TABLES: usize = DEFAULT_MAX_TABLES> {
    paging: PagingMode,
    max_phys: MaxPhysAddr,
    image: PhysRange,
    new_base: u64,
    /// `new_base - image.start` in two's complement.
    delta: u64,
    top_table: u64,
    tables: [TableRecord; MAX_TABLES],
    table_count: usize,
}

/// A distinct table found by planning, as reported by [`Plan::tables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlannedTable {
    /// Physical address in the old image.
    pub addr: u64,
    /// The highest level it is reached at.
    pub level: Level,
    /// True when its entries are rebased (reached at L2 or above).
    pub rebased: bool,
    /// True for a declared image map.
    pub image_map: bool,
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// Validates `request` against the memory it describes. Reads only.
    pub fn new<M: PhysMemory + ?Sized>(
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<Self, PlanError> {
        let max_phys =
            MaxPhysAddr::new(request.max_phys_bits).ok_or(PlanError::InvalidMaxPhysBits {
                bits: request.max_phys_bits,
            })?;
        let image = request.image;
        let new = destination(request, max_phys)?;
        check_named_table(request.top_table, TableRole::TopLevel, image)?;
        for &map in request.image_maps {
            check_named_table(map, TableRole::ImageMap, image)?;
        }
        mem.check_range(image.start, image.len())
            .map_err(|fault| PlanError::Inaccessible {
                role: RangeRole::Old,
                range: image,
                fault,
            })?;

        let mut plan = Plan {
            paging: request.paging,
            max_phys,
            image,
            new_base: request.new_base,
            delta: request.new_base.wrapping_sub(image.start),
            top_table: request.top_table,
            tables: [TableRecord::default(); MAX_TABLES],
            table_count: 0,
        };
        plan.reach(request.top_table, request.paging.top_level(), request)?;
        while let Some((index, level)) = plan.next_unscanned() {
            plan.scan(mem, index, level, request, new)?;
        }
        for &map in request.image_maps {
            let Some(record) = plan.record(map).filter(|r| r.image_map) else {
                return Err(PlanError::ImageMapNotReached { table: map });
            };
            if let Some(level) = record.reached.highest().filter(|&l| l > Level::L2) {
                return Err(PlanError::ImageMapAliased { table: map, level });
            }
        }
        // Checked after the walk so that an entry that would overflow is named precisely.
        if new.end > max_phys.limit() {
            return Err(PlanError::RangeBeyondMaxPhys {
                role: RangeRole::New,
                range: new,
                max_phys_bits: max_phys.bits(),
            });
        }
        mem.check_range(new.start, image.len())
            .map_err(|fault| PlanError::Inaccessible {
                role: RangeRole::New,
                range: new,
                fault,
            })?;
        Ok(plan)
    }

    /// The running image.
    pub fn old_image(&self) -> PhysRange {
        self.image
    }

    /// Where the copy goes: `[new_base, new_base + image size)`.
    pub fn new_image(&self) -> PhysRange {
        PhysRange::new(self.new_base, self.new_base.wrapping_add(self.image.len()))
    }

    /// The paging mode of the request.
    pub fn paging(&self) -> PagingMode {
        self.paging
    }

    /// MAXPHYADDR of the request.
    pub fn max_phys(&self) -> MaxPhysAddr {
        self.max_phys
    }

    /// Where `addr` in the old image lands in the copy.
    pub fn relocated(&self, addr: u64) -> u64 {
        addr.wrapping_add(self.delta)
    }

    /// The top-level table in the copy: the new CR3 address.
    pub fn new_top_table(&self) -> PhysAddr {
        PhysAddr::new_truncate(self.relocated(self.top_table))
    }

    /// `cr3` with its address replaced by the new top-level table; PCID/PWT/PCD and the
    /// other non-address bits stay.
    pub fn relocated_cr3(&self, cr3: u64) -> u64 {
        let field = self.max_phys.address_mask(12);
        (cr3 & !field) | self.new_top_table().as_u64()
    }

    /// The distinct tables found, in discovery order.
    pub fn tables(&self) -> impl Iterator<Item = PlannedTable> + '_ {
        self.tables.iter().take(self.table_count).filter_map(|r| {
            Some(PlannedTable {
                addr: r.addr,
                level: r.reached.highest()?,
                rebased: r.reached.any_above_l1(),
                image_map: r.image_map,
            })
        })
    }

    /// Copies the image to the new base and rebases the copy. Cannot fail and contains no
    /// panicking operation: everything was checked by [`Plan::new`]. Writes only inside
    /// [`Plan::new_image`]; the old image is untouched.
    pub fn apply<M: PhysMemory + ?Sized>(&self, mem: &mut M) -> ApplyReport {
        mem.copy(self.image.start, self.new_base, self.image.len());
        let mut report = ApplyReport {
            bytes_copied: self.image.len(),
            ..ApplyReport::default()
        };
        for record in self.tables.iter().take(self.table_count) {
            let Some(level) = record.reached.highest() else {
                continue;
            };
            if !record.reached.any_above_l1() {
                continue;
            }
            report.tables_rebased.bump(level);
            let new_table = self.relocated(record.addr);
            for index in 0..ENTRIES_PER_TABLE as u64 {
                let addr = new_table.wrapping_add(index.wrapping_mul(8));
                let entry = Entry(mem.read_u64(addr));
                if let Some(field) = record.rebase_field(entry, self.max_phys) {
                    mem.write_u64(addr, entry.rebased_unchecked(field, self.delta).0);
                    if entry.has_page_size_bit() {
                        report.image_leaves_rebased = report.image_leaves_rebased.saturating_add(1);
                    } else {
                        report.pointers_rebased.bump(level);
                    }
                }
            }
        }
        report
    }

    fn record(&self, addr: u64) -> Option<&TableRecord> {
        self.tables
            .iter()
            .take(self.table_count)
            .find(|r| r.addr == addr)
    }

    /// Notes that the table at `addr` is reached at `level`.
    fn reach(
        &mut self,
        addr: u64,
        level: Level,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let is_image_map = level == Level::L2 && request.image_maps.contains(&addr);
        let count = self.table_count;
        if let Some(record) = self.tables[..count].iter_mut().find(|r| r.addr == addr) {
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
        self.tables
            .iter()
            .take(self.table_count)
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
        new: PhysRange,
    ) -> Result<(), PlanError> {
        let record = self.tables[index];
        self.tables[index].scanned = record.scanned.with(level);
        let is_image_map = record.image_map && level == Level::L2;
        let footprint = PhysRange::new(self.image.start, self.image.start + new.len());
        for (slot, entry) in read_table(mem, record.addr) {
            let at = EntryLocation {
                table: record.addr,
                level,
                index: slot,
                entry: entry.0,
            };
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
                    if !footprint.contains_span(frame, size) {
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
        for (index, entry) in read_table(mem, l1_table) {
            let leaf = EntryLocation {
                table: l1_table,
                level: Level::L1,
                index,
                entry: entry.0,
            };
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

/// The 512 entries of the table at `table`, with their indices.
fn read_table<M: PhysMemory + ?Sized>(
    mem: &M,
    table: u64,
) -> impl Iterator<Item = (u16, Entry)> + '_ {
    (0..ENTRIES_PER_TABLE as u16).map(move |i| (i, Entry(mem.read_u64(table + u64::from(i) * 8))))
}

/// Validates the image and the destination; returns the destination footprint
/// (`new_base` plus the image size rounded up to 2 MiB). MAXPHYADDR of the destination is
/// checked after the walk.
fn destination(
    request: &RelocationRequest<'_>,
    max_phys: MaxPhysAddr,
) -> Result<PhysRange, PlanError> {
    let image = request.image;
    if image.is_empty() {
        return Err(PlanError::EmptyImage { image });
    }
    if !image.start.is_multiple_of(IMAGE_ALIGN) || !image.end.is_multiple_of(TABLE_SIZE) {
        return Err(PlanError::ImageMisaligned { image });
    }
    let footprint_len = image.len().next_multiple_of(IMAGE_ALIGN);
    let old_footprint =
        PhysRange::from_start_len(image.start, footprint_len).ok_or(PlanError::RangeWraps {
            role: RangeRole::Old,
            start: image.start,
            len: footprint_len,
        })?;
    if old_footprint.end > max_phys.limit() {
        return Err(PlanError::RangeBeyondMaxPhys {
            role: RangeRole::Old,
            range: old_footprint,
            max_phys_bits: max_phys.bits(),
        });
    }
    if !request.new_base.is_multiple_of(IMAGE_ALIGN) {
        return Err(PlanError::NewBaseMisaligned {
            new_base: request.new_base,
        });
    }
    let new = PhysRange::from_start_len(request.new_base, footprint_len).ok_or(
        PlanError::RangeWraps {
            role: RangeRole::New,
            start: request.new_base,
            len: footprint_len,
        },
    )?;
    if new.overlaps(&image) {
        return Err(PlanError::RangesOverlap { old: image, new });
    }
    Ok(new)
}

fn check_named_table(table: u64, role: TableRole, image: PhysRange) -> Result<(), PlanError> {
    if !table.is_multiple_of(TABLE_SIZE) {
        return Err(PlanError::TableMisaligned { role, table });
    }
    if !image.contains_span(table, TABLE_SIZE) {
        return Err(PlanError::TableOutsideImage { role, table });
    }
    Ok(())
}
