//! The relocation request, its validation (planning) and its infallible application.
//!
//! [`Plan::new`] only reads memory. It walks every table reachable from the top-level table,
//! checks every entry it will later rebase, and records each distinct table once. Only a plan
//! can be applied, and [`Plan::apply`] has nothing left to check: it copies, then rewrites the
//! address fields the plan proved safe to rewrite.
//!
//! - [`error`]: why a request is refused, and where.
//! - `walk`: the exactly-once walk that builds the table set.
//! - `apply`: the copy and the rebase, and their report.

use x86_64::PhysAddr;

use crate::paging::{MaxPhysAddr, PagingMode, SIZE_2M, TABLE_SIZE};
use crate::phys::{PhysMemory, PhysRange};

mod apply;
pub mod error;
mod walk;

pub use apply::{ApplyReport, PerLevel};
pub use error::{EntryLocation, PlanError, RangeRole, TableRole};
use walk::TableRecord;

/// The image start and every move distance are multiples of this: the size of the image-map
/// leaves (Xen's `l2_xenmap` maps the image with 2 MiB pages).
pub const IMAGE_ALIGN: u64 = SIZE_2M;

/// Default capacity of a [`Plan`]: distinct page tables reachable from the top-level table.
/// Xen's boot layout has about 18.
pub const DEFAULT_MAX_TABLES: usize = 64;

/// What the caller asks for. Nothing here is trusted: [`Plan::new`] checks all of it.
#[derive(Clone, Copy, Debug)]
pub struct RelocationRequest<'a> {
    /// 4- or 5-level paging: the level of `top_table`.
    pub paging: PagingMode,
    /// Physical address of the top-level table (what CR3 points to), inside `image`.
    pub top_table: PhysAddr,
    /// The running image, `[_start, _end)`: start 2 MiB-aligned, end 4 KiB-aligned. Every
    /// page table reachable from `top_table` must lie inside it.
    pub image: PhysRange,
    /// Where the image goes; 2 MiB-aligned.
    pub new_base: PhysAddr,
    /// L2 tables whose 2 MiB leaves map the image (Xen's `l2_xenmap`). Their present
    /// leaves move with the image; leaves anywhere else (directmap, identity maps) stay.
    pub image_maps: &'a [PhysAddr],
    /// The CPU's MAXPHYADDR (CPUID 0x80000008 EAX bits 7..0), 32 to 52.
    pub max_phys_bits: u8,
    /// Memory-encryption bits inside the address field (the SME/SEV C-bit, TME-MK KeyID
    /// bits), kept as they are in every rebased entry; zero without memory encryption. See
    /// [`MaxPhysAddr::with_encryption_mask`].
    pub encryption_mask: u64,
}

/// A validated relocation: every table found, every rebase proven in range. Apply it with
/// [`Plan::apply`] (host, simulator) or [`crate::switch::relocate`] (bare metal).
///
/// # Invariants
/// A `Plan` is either [`Plan::empty`] (it applies nothing) or holds a request
/// [`Plan::new`] (or [`Plan::new_in_place`]) accepted, and then:
/// - the image and the destination (the image size rounded up to 2 MiB) are 2 MiB-aligned,
///   disjoint, below the physical address limit, and served by the memory planning read;
/// - every table reachable from the top-level table lies in the image and is recorded once,
///   with every level it is reached at; its every entry decodes without a reserved-bit fault;
/// - every entry [`Plan::apply`] will rewrite stays inside its address field once rebased, so
///   apply has no check left and cannot fail or panic.
///
/// The plan describes memory as it was read: page tables in the image must not change
/// between planning and apply (nothing enforces this; the plan does not borrow memory).
///
/// # Size
/// `MAX_TABLES` bounds the number of distinct tables; exceeding it is
/// [`PlanError::TooManyTables`]. Each table costs 88 bytes: its record (address, levels,
/// and the 64-byte bitmap of the entries apply rewrites) and two slots of the record index.
/// A plan is therefore `88 * MAX_TABLES` bytes plus under 128 bytes of fixed fields: about
/// 5.6 KiB for the default 64 tables, 2.2 KiB for `Plan<24>` (room for Xen's 18), 352 KiB for
/// 4,096. Build it where it is to stay with [`Plan::new_in_place`] (a `static`,
/// caller-provided storage) to keep it off a small boot stack, or keep `MAX_TABLES` near the
/// layout's real table count. Planning itself takes about 1.4 KiB of stack when memory
/// lends its tables ([`PhysMemory::table`]), and two 4 KiB snapshots more when it does not.
#[derive(Clone, Debug)]
pub struct Plan<const MAX_TABLES: usize = DEFAULT_MAX_TABLES> {
    paging: PagingMode,
    max_phys: MaxPhysAddr,
    image: PhysRange,
    /// The image rounded up to 2 MiB: what the image-map leaves may map.
    footprint: PhysRange,
    new_base: PhysAddr,
    /// `new_base - image.start` in two's complement.
    delta: u64,
    top_table: PhysAddr,
    tables: [TableRecord; MAX_TABLES],
    table_count: usize,
    /// Record index: `2 * MAX_TABLES` slots (pairs, as stable Rust cannot size an array
    /// `2 * MAX_TABLES`), each a record number plus one, zero when vacant.
    index: [[u32; 2]; MAX_TABLES],
    /// Every record before this one has had all its reached levels scanned.
    scan_from: usize,
}

/// A distinct table found by planning, as reported by [`Plan::tables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlannedTable {
    /// Physical address in the old image.
    pub addr: PhysAddr,
    /// The highest level it is reached at.
    pub level: crate::paging::Level,
    /// True when its entries are rebased (reached at L2 or above).
    pub rebased: bool,
    /// True for a declared image map.
    pub image_map: bool,
}

impl Plan {
    /// Validates `request` against the memory it describes and returns the plan, with the
    /// default capacity ([`DEFAULT_MAX_TABLES`]). Reads only: on `Err`, memory is as it was,
    /// and no input (however large or wrapping) panics.
    ///
    /// # Stack
    /// The plan is built in the returned value: about 5.6 KiB for the default capacity, on
    /// the caller's stack unless the result goes straight into a heap or static place, plus
    /// [`Plan::new_in_place`]'s 1.4 KiB. On a small boot stack use [`Plan::new_in_place`] on a
    /// `static` or caller-owned plan.
    pub fn new<M: PhysMemory + ?Sized>(
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<Self, PlanError> {
        Self::new_with_capacity(mem, request)
    }
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// A plan of nothing: no image, no tables; applying it copies and writes nothing. What
    /// [`Plan::new_in_place`] fills, and what it leaves on `Err`. `const`, so that a plan can
    /// be a `static` (in a boot image's `.bss`, off a small boot stack).
    pub const fn empty() -> Self {
        Self {
            paging: PagingMode::FourLevel,
            max_phys: MaxPhysAddr::ARCHITECTURAL,
            image: PhysRange::new(0, 0),
            footprint: PhysRange::new(0, 0),
            new_base: PhysAddr::zero(),
            delta: 0,
            top_table: PhysAddr::zero(),
            tables: [TableRecord::EMPTY; MAX_TABLES],
            table_count: 0,
            index: [[0; 2]; MAX_TABLES],
            scan_from: 0,
        }
    }

    /// [`Plan::new`] for any capacity: `Plan::<24>::new_with_capacity(..)`. The plan
    /// (`88 * MAX_TABLES` bytes plus under 128) is built in the returned value.
    pub fn new_with_capacity<M: PhysMemory + ?Sized>(
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<Self, PlanError> {
        // Built in the result that is returned, so that the plan (kilobytes) is not copied
        // out of a local on success.
        let mut result = Ok(Self::empty());
        if let Ok(plan) = &mut result {
            plan.new_in_place(mem, request)?;
        }
        result
    }

    /// [`Plan::new`] into `self`, whatever it held, with no plan-sized temporary: a plan in
    /// a `static` or caller-provided storage is built on a small stack. Reads only: on `Err`,
    /// memory is as it was and `self` is [`Plan::empty`] (applying it does nothing).
    ///
    /// # Stack
    /// About 1.4 KiB (1,360 bytes measured from the object code for the bare target, see
    /// [`crate::STACK_BUDGET`]) when memory lends its tables ([`PhysMemory::table`], as
    /// [`crate::DirectMap`] does), whatever `MAX_TABLES` is. Memory that lends no table costs
    /// up to 8 KiB more (two 4 KiB snapshots, [`PhysMemory::read_table`]).
    pub fn new_in_place<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        let outcome = self.plan(mem, request);
        if outcome.is_err() {
            self.clear();
        }
        outcome
    }

    /// Resets `self` to [`Plan::empty`] field by field, with no plan-sized temporary: the
    /// records in use are reset (so no stale record shows, in `Debug` or anywhere), and the
    /// index is zeroed.
    fn clear(&mut self) {
        if let Some(used) = self.tables.get_mut(..self.table_count) {
            used.fill(TableRecord::EMPTY);
        }
        self.paging = PagingMode::FourLevel;
        self.max_phys = MaxPhysAddr::ARCHITECTURAL;
        self.image = PhysRange::new(0, 0);
        self.footprint = PhysRange::new(0, 0);
        self.new_base = PhysAddr::zero();
        self.delta = 0;
        self.top_table = PhysAddr::zero();
        self.table_count = 0;
        self.index.as_flattened_mut().fill(0);
        self.scan_from = 0;
    }

    /// The checks and the walk of [`Plan::new_in_place`], from a cleared plan.
    fn plan<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        request: &RelocationRequest<'_>,
    ) -> Result<(), PlanError> {
        self.clear();
        let max_phys = MaxPhysAddr::new(request.max_phys_bits)
            .ok_or(PlanError::InvalidMaxPhysBits {
                bits: request.max_phys_bits,
            })?
            .with_encryption_mask(request.encryption_mask)
            .ok_or(PlanError::InvalidEncryptionMask {
                mask: request.encryption_mask,
                max_phys_bits: request.max_phys_bits,
            })?;
        let image = request.image;
        let (footprint, new) = ranges(request, max_phys)?;
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

        self.paging = request.paging;
        self.max_phys = max_phys;
        self.image = image;
        self.footprint = footprint;
        self.new_base = request.new_base;
        self.delta = request.new_base.as_u64().wrapping_sub(image.start);
        self.top_table = request.top_table;
        self.walk(mem, request)?;
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
        Ok(())
    }

    /// The running image.
    pub fn old_image(&self) -> PhysRange {
        self.image
    }

    /// Where the copy goes: `[new_base, new_base + image size)`.
    pub fn new_image(&self) -> PhysRange {
        // Cannot wrap: planning proved the destination below the physical address limit.
        PhysRange::new(
            self.new_base.as_u64(),
            self.new_base.as_u64() + self.image.len(),
        )
    }

    /// The paging mode of the request.
    pub fn paging(&self) -> PagingMode {
        self.paging
    }

    /// MAXPHYADDR and the encryption bits of the request.
    pub fn max_phys(&self) -> MaxPhysAddr {
        self.max_phys
    }

    /// Where `addr` of the old image lands in the copy, or `None` when `addr` lies outside
    /// the old image.
    pub fn relocated(&self, addr: PhysAddr) -> Option<PhysAddr> {
        if !self.image.contains(addr.as_u64()) {
            return None;
        }
        Some(PhysAddr::new_truncate(
            addr.as_u64().wrapping_add(self.delta),
        ))
    }

    /// The top-level table in the copy: the new CR3 address.
    pub fn new_top_table(&self) -> PhysAddr {
        PhysAddr::new_truncate(self.top_table.as_u64().wrapping_add(self.delta))
    }

    /// `cr3` with its address replaced by the new top-level table; PCID/PWT/PCD, the
    /// encryption bits and the other non-address bits stay. The one place the new CR3 is
    /// computed: the switch loads exactly this value.
    pub fn relocated_cr3(&self, cr3: u64) -> u64 {
        (cr3 & self.max_phys.non_address_mask()) | self.new_top_table().as_u64()
    }

    /// The distinct tables found, in discovery order.
    pub fn tables(&self) -> impl Iterator<Item = PlannedTable> + '_ {
        self.records().iter().filter_map(|r| {
            Some(PlannedTable {
                addr: PhysAddr::new_truncate(r.addr),
                level: r.reached.highest()?,
                rebased: r.reached.any_above_l1(),
                image_map: r.image_map,
            })
        })
    }

    /// The entries [`Plan::apply`] rewrites, by their address in the old image (apply
    /// rewrites their copies, `delta` higher): table by table in discovery order, ascending
    /// within a table. Exactly the pointers (present, PS clear) of every table reached at L2
    /// or above, and the present 2 MiB leaves of the image maps; each once.
    pub fn rewritten_entries(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.records().iter().flat_map(|r| {
            r.rewrites()
                .map(|index| PhysAddr::new_truncate(walk::entry_addr(r.addr, index)))
        })
    }

    /// The records of the tables found.
    fn records(&self) -> &[TableRecord] {
        self.tables.get(..self.table_count).unwrap_or(&[])
    }
}

/// Validates the image and the destination; returns the image's 2 MiB footprint and the
/// destination (`new_base` plus the image size rounded up to 2 MiB). The destination's
/// limit is checked after the walk.
///
/// Every comparison with the physical address limit happens before a length is rounded:
/// below 2^52, rounding up to 2 MiB cannot wrap.
fn ranges(
    request: &RelocationRequest<'_>,
    max_phys: MaxPhysAddr,
) -> Result<(PhysRange, PhysRange), PlanError> {
    let image = request.image;
    if image.is_empty() {
        return Err(PlanError::EmptyImage { image });
    }
    if !image.start.is_multiple_of(IMAGE_ALIGN) || !image.end.is_multiple_of(TABLE_SIZE) {
        return Err(PlanError::ImageMisaligned { image });
    }
    let beyond = |role, range| PlanError::RangeBeyondMaxPhys {
        role,
        range,
        max_phys_bits: max_phys.bits(),
    };
    if image.end > max_phys.limit() {
        return Err(beyond(RangeRole::Old, image));
    }
    let footprint = image
        .len()
        .checked_next_multiple_of(IMAGE_ALIGN)
        .and_then(|len| PhysRange::from_start_len(image.start, len))
        .filter(|f| f.end <= max_phys.limit())
        .ok_or(beyond(RangeRole::Old, image))?;
    let new_base = request.new_base.as_u64();
    if !new_base.is_multiple_of(IMAGE_ALIGN) {
        return Err(PlanError::NewBaseMisaligned {
            new_base: request.new_base,
        });
    }
    // new_base < 2^52 (a `PhysAddr`) and the length is at most 2^52: no wrap.
    let new = PhysRange::from_start_len(new_base, footprint.len())
        .ok_or(beyond(RangeRole::New, PhysRange::new(new_base, u64::MAX)))?;
    if new.overlaps(&image) {
        return Err(PlanError::RangesOverlap { old: image, new });
    }
    Ok((footprint, new))
}

fn check_named_table(table: PhysAddr, role: TableRole, image: PhysRange) -> Result<(), PlanError> {
    if !table.is_aligned(TABLE_SIZE) {
        return Err(PlanError::TableMisaligned { role, table });
    }
    if !image.contains_span(table.as_u64(), TABLE_SIZE) {
        return Err(PlanError::TableOutsideImage { role, table });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::MemoryFault;

    /// Memory that serves every range and reads as zeros: a top-level table with nothing in
    /// it, anywhere.
    struct ServesEverything;

    impl PhysMemory for ServesEverything {
        fn check_range(&self, _: u64, _: u64) -> Result<(), MemoryFault> {
            Ok(())
        }
        fn read_u64(&self, _: u64) -> u64 {
            0
        }
        fn write_u64(&mut self, _: u64, _: u64) {}
        fn copy(&mut self, _: u64, _: u64, _: u64) {}
    }

    const LIMIT: u64 = 1 << 36;

    fn request(image: PhysRange, new_base: u64) -> RelocationRequest<'static> {
        RelocationRequest {
            paging: PagingMode::FourLevel,
            top_table: PhysAddr::new(image.start),
            image,
            new_base: PhysAddr::new(new_base),
            image_maps: &[],
            max_phys_bits: 36,
            encryption_mask: 0,
        }
    }

    /// The physical address limit is one past the last address: an image or a destination
    /// may end exactly there, and not a byte further.
    #[test]
    fn ranges_may_end_exactly_at_the_physical_address_limit() {
        let last_2m = PhysRange::new(LIMIT - SIZE_2M, LIMIT);
        let low = PhysRange::new(SIZE_2M, SIZE_2M + 0x5000);
        let plan = Plan::<4>::new_with_capacity(&ServesEverything, &request(last_2m, SIZE_2M))
            .expect("image ending at the limit");
        assert_eq!(plan.old_image(), last_2m);
        assert_eq!(plan.new_image(), PhysRange::new(SIZE_2M, 2 * SIZE_2M));
        let plan = Plan::<4>::new_with_capacity(&ServesEverything, &request(low, LIMIT - SIZE_2M))
            .expect("destination ending at the limit");
        assert_eq!(
            plan.new_image(),
            PhysRange::new(LIMIT - SIZE_2M, LIMIT - SIZE_2M + 0x5000)
        );
        let beyond = PhysRange::new(LIMIT - SIZE_2M, LIMIT + TABLE_SIZE);
        assert_eq!(
            Plan::<4>::new_with_capacity(&ServesEverything, &request(beyond, SIZE_2M)).err(),
            Some(PlanError::RangeBeyondMaxPhys {
                role: RangeRole::Old,
                range: beyond,
                max_phys_bits: 36,
            })
        );
        assert_eq!(
            Plan::<4>::new_with_capacity(&ServesEverything, &request(low, LIMIT)).err(),
            Some(PlanError::RangeBeyondMaxPhys {
                role: RangeRole::New,
                range: PhysRange::new(LIMIT, LIMIT + SIZE_2M),
                max_phys_bits: 36,
            })
        );
    }

    /// `relocated` moves exactly the addresses of the old image, first byte to last.
    #[test]
    fn only_addresses_in_the_old_image_are_relocated() {
        let image = PhysRange::new(SIZE_2M, SIZE_2M + 0x5000);
        let new_base = 16 * SIZE_2M;
        let plan = Plan::<4>::new_with_capacity(&ServesEverything, &request(image, new_base))
            .expect("plans");
        let relocated = |addr| plan.relocated(PhysAddr::new(addr)).map(PhysAddr::as_u64);
        assert_eq!(relocated(image.start), Some(new_base));
        assert_eq!(relocated(image.end - 1), Some(new_base + 0x4fff));
        assert_eq!(relocated(image.start - 1), None);
        assert_eq!(relocated(image.end), None);
        assert_eq!(plan.new_top_table().as_u64(), new_base);
    }
}
