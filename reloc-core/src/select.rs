//! Choosing where the image goes: the rule of Xen's `__start_xen`, on the memory map as Xen's
//! `sanitize_e820_map` cleans it, with two deliberate improvements.
//!
//! # The rule
//! 1. **Usable RAM** is every byte that a RAM entry (type 1) covers and no other entry does.
//!    RAM entries that overlap or touch form one *extent*; a non-RAM entry cuts it. The map
//!    may be unsorted and overlapping; it is read in place (no copy, no allocation).
//! 2. An extent **qualifies** when its end, rounded down to `align` and clipped to
//!    [`PHYS_ADDR_END`], is at or below `limit` (4 GiB by default).
//! 3. The pick is the highest `align`-aligned slot of `image_size` rounded up to `align`
//!    that starts at or above `min_base` and lies in one qualifying extent, overlapping no
//!    avoided range (the running image, boot data, modules).
//!
//! On QEMU's maps this is the address Xen 4.17 picks (measured: `-m 3G` gives 0xbf800000,
//! `-m 1G` gives 0x3f800000 for a 6 MiB image; the tests below hold both).
//!
//! # What Xen does (xen/arch/x86/setup.c, e820.c)
//! - `sanitize_e820_map` sorts the map, resolves overlaps ("larger value takes precedence --
//!   1=usable, 2,3,4,4+=unusable") and starts a new entry only `if (current_type !=
//!   last_type)`, so adjacent RAM entries become one. Rule 1 gives the same extents.
//! - `__start_xen` walks `boot_e820.map` from the top; per RAM entry
//!   `s = (addr + mask) & ~mask; e = (addr + size) & ~mask; s = max(s, PREBUILT_MAP_LIMIT)`,
//!   clips `e` to the directmap's reach, and considers the entry only
//!   `if ( !xen_phys_start && e <= limit )`: the *rounded* end meets the limit (rule 2).
//!   A RAM entry `[1 MiB, 4 GiB + 4 KiB)` therefore qualifies, with its top at 4 GiB.
//! - `end = consider_modules(s, e, reloc_size + mask, ...); end &= ~mask;` finds the highest
//!   gap between modules, and the slot `end - reloc_size` is taken
//!   `if ( (end > s) && (end - reloc_size + XEN_IMG_OFFSET >= __pa(_end)) )`.
//!
//! # Where this differs from Xen, and why
//! - **Exact fit.** Xen asks `consider_modules` for `reloc_size + mask` bytes: module bounds
//!   are only page-aligned, and the extra `2 MiB - 1` guarantees that `end &= ~mask` still
//!   leaves `reloc_size` above the gap's start. It refuses an aligned gap of exactly
//!   `reloc_size` (up to `reloc_size + 2 MiB - 1`). Here each gap is rounded inward (start up,
//!   end down) before it is measured, which gives the same guarantee without the slack.
//! - **Moving down.** Xen accepts only a slot at or above the running image's end. Xen is
//!   loaded at 2 MiB and `consider_modules` is not told about the running image, so "above
//!   it" is Xen's overlap check and loses nothing. Here the running image is an avoided range
//!   like any module, so a slot below it is as clear of it as one above (and
//!   [`crate::Plan::new`] checks the two ranges do not overlap before anything is written).
//!   A loader that put the image high, under everything else, is still served.
//! - **Address ceiling.** Xen clips `e` to `min(HYPERVISOR_VIRT_END - DIRECTMAP_VIRT_START,
//!   1UL << (PAGE_SHIFT + 32))` before the limit check; here the clip is [`PHYS_ADDR_END`]
//!   (2^52, x86_64's architectural MAXPHYADDR), so that every pick is a valid [`PhysAddr`].
//!   Only a `limit` above 4 GiB can tell the two apart.
//! - **Type 0.** `sanitize_e820_map` ranks an entry of type 0 below RAM (and otherwise
//!   drops it); here every non-RAM entry, type 0 included, blocks and cuts extents. A sized
//!   type-0 entry is a firmware bug; leaving its memory alone is the safe reading.
//! - **Entries that wrap past 2^64.** Xen does not sanitise such a map ("bail out if we find
//!   any unreasonable addresses in bios map") and `copy_e820_map` drops it ("Overflow in 64
//!   bits? Ignore the memory map."); here such an entry is cut at 2^64 - 1 and the rest of
//!   the map is still used.
//! - **Avoided ranges are byte-exact.** Xen rounds module ends up to a page
//!   (`PAGE_ALIGN(mod_end)`); a slot aligned to 4 KiB or more clears both the same way.
//!
//! # Cost
//! Each candidate slot top (the rounded ends of RAM entries, the starts of non-RAM entries and
//! of avoided ranges) is tried from the highest down and the first that fits is taken. For
//! `n` map entries and `m` avoided ranges a candidate costs `O((n + m)²)` at worst (walking an
//! extent's chain of entries), so a full scan is `O((n + m)³)`; on usual maps the first
//! candidate fits. The stack use is constant. `benches/select.rs` measures 128-entry maps:
//! about 5 µs when the first candidate fits, 5 ms for a failing scan of one extent chained
//! through all 128 entries (the worst shape), on the project's development machine.

use core::fmt;

use x86_64::PhysAddr;

use crate::boot::LoaderInfo;
pub use crate::boot::{MemoryRegion, E820_RAM};
use crate::paging::SIZE_2M;
use crate::phys::PhysRange;

/// One past the highest physical address x86_64 can form (2^52, the architectural
/// MAXPHYADDR); RAM above it is never picked.
pub const PHYS_ADDR_END: u64 = 1 << 52;

/// What to place and what to keep clear of.
#[derive(Clone, Copy, Debug)]
pub struct TargetRequest<'a> {
    /// Bytes to place; the slot is this rounded up to `align`.
    pub image_size: u64,
    /// Ranges the slot must not overlap: the running image, boot data, modules, command line.
    /// Unlike non-RAM map entries they do not cut RAM extents (Xen's modules do not either).
    pub avoid: &'a [PhysRange],
    /// Only RAM extents whose end, rounded down to `align` (and clipped to
    /// [`PHYS_ADDR_END`]), is at or below this qualify (Xen: 4 GiB).
    pub limit: u64,
    /// Slot alignment, a power of two (Xen: 2 MiB).
    pub align: u64,
    /// Lowest acceptable slot start (Xen: 2 MiB).
    pub min_base: u64,
}

impl<'a> TargetRequest<'a> {
    /// Xen's defaults: 2 MiB alignment, at least 2 MiB up, RAM extents whose rounded end is
    /// at or below 4 GiB.
    pub fn new(image_size: u64, avoid: &'a [PhysRange]) -> Self {
        Self {
            image_size,
            avoid,
            limit: 1 << 32,
            align: SIZE_2M,
            min_base: SIZE_2M,
        }
    }
}

/// Why no target was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SelectError {
    /// Nothing to place.
    EmptyImage,
    /// `align` is zero or not a power of two.
    BadAlignment {
        /// As given.
        align: u64,
    },
    /// No slot fits.
    NoRoom {
        /// The slot size needed (image size rounded up to the alignment; `u64::MAX` if that
        /// rounding overflows).
        needed: u64,
        /// The largest aligned free span seen in a qualifying RAM extent (zero if none).
        largest_candidate: u64,
    },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::EmptyImage => f.write_str("image size is zero"),
            SelectError::BadAlignment { align } => {
                write!(f, "alignment {align:#x} is not a power of two")
            }
            SelectError::NoRoom {
                needed,
                largest_candidate,
            } => write!(
                f,
                "not enough memory to relocate: need {needed:#x} bytes, largest free aligned span is {largest_candidate:#x}"
            ),
        }
    }
}

impl core::error::Error for SelectError {}

/// The map and the avoided ranges, read in place: `avoid` yields the avoided ranges afresh
/// each time it is called (a slice's, or a loader's boot data and the image), so that no list
/// of them is ever built.
struct Layout<'m, F> {
    map: &'m [MemoryRegion],
    avoid: F,
}

// The iterators below borrow `self` and name `A` (their closures are generic over it); the
// precise captures (`use<..>`) say so without requiring `A` to outlive the borrow.
impl<'m, F, A> Layout<'m, F>
where
    F: Fn() -> A,
    A: Iterator<Item = PhysRange>,
{
    fn ram(&self) -> impl Iterator<Item = PhysRange> + use<'_, 'm, F, A> {
        self.map
            .iter()
            .filter(|r| r.is_ram())
            .map(MemoryRegion::range)
            .filter(|r| !r.is_empty())
    }

    fn non_ram(&self) -> impl Iterator<Item = PhysRange> + use<'_, 'm, F, A> {
        self.map
            .iter()
            .filter(|r| !r.is_ram())
            .map(MemoryRegion::range)
            .filter(|r| !r.is_empty())
    }

    fn avoided(&self) -> impl Iterator<Item = PhysRange> + use<'_, 'm, F, A> {
        (self.avoid)().filter(|r| !r.is_empty())
    }

    /// Covered by RAM and by no non-RAM entry.
    fn is_usable(&self, addr: u64) -> bool {
        self.ram().any(|r| r.contains(addr)) && !self.non_ram().any(|r| r.contains(addr))
    }

    /// Usable and not avoided.
    fn is_clear(&self, addr: u64) -> bool {
        self.is_usable(addr) && !self.avoided().any(|r| r.contains(addr))
    }

    /// One past the last byte of the extent holding the usable byte `addr`.
    fn extent_end(&self, addr: u64) -> u64 {
        let mut at = addr;
        while self.is_usable(at) {
            // Usable up to the furthest end of the RAM entries holding `at`, unless a non-RAM
            // entry starts first (none holds `at`, so any that cuts starts above it).
            let Some(ram_end) = self.ram().filter(|r| r.contains(at)).map(|r| r.end).max() else {
                break;
            };
            let cut = self
                .non_ram()
                .map(|r| r.start)
                .filter(|&s| s > at)
                .fold(ram_end, u64::min);
            // `cut > at` (an entry holding `at` ends above it), so the walk climbs and ends
            // at u64::MAX at the latest. Stopping when it does not climb keeps that true
            // whatever the ranges say.
            if cut <= at {
                break;
            }
            at = cut;
        }
        at
    }

    /// The lowest `start` such that every byte of `[start, top)` is clear (`top` itself if
    /// the byte below it is not).
    fn clear_start(&self, top: u64) -> u64 {
        let mut at = top;
        while let Some(below) = at.checked_sub(1).filter(|&b| self.is_clear(b)) {
            // Clear down to the lowest start of the RAM entries holding `below`, unless a
            // blocker ends first (none holds `below`, so any that cuts ends at or below it).
            let Some(ram_start) = self
                .ram()
                .filter(|r| r.contains(below))
                .map(|r| r.start)
                .min()
            else {
                break;
            };
            let cut = self
                .non_ram()
                .chain(self.avoided())
                .map(|r| r.end)
                .filter(|&e| e <= below)
                .fold(ram_start, u64::max);
            // `cut <= below` (an entry holding `below` starts at or below it), so the walk
            // descends and ends at 0 at the latest. Stopping when it does not descend keeps
            // that true whatever the ranges say.
            if cut >= at {
                break;
            }
            at = cut;
        }
        at
    }

    /// Where a slot's top can be: each RAM entry's end (an extent ends there) and each
    /// blocker's start (a slot ends at or below it).
    fn top_candidates(&self) -> impl Iterator<Item = u64> + use<'_, 'm, F, A> {
        self.ram()
            .map(|r| r.end)
            .chain(self.non_ram().chain(self.avoided()).map(|r| r.start))
    }
}

/// Picks the highest `align`-aligned slot of `image_size` (rounded up to `align`) that starts
/// at or above `min_base`, lies in one RAM extent of `map` whose rounded end is at or below
/// `limit`, and overlaps no avoided range; see the [module docs](self) for the rule, how it
/// follows Xen, and where it departs from it. Returns the slot's start.
///
/// Never panics: sizes and regions up to 2^64 - 1, wrapping entries and zero sizes are all
/// handled, and no RAM at or above [`PHYS_ADDR_END`] is used.
///
/// # Stack
/// About 400 bytes (392 measured from the object code for the bare target, see
/// [`crate::STACK_BUDGET`]), whatever the map's size: the map and the avoided ranges are read
/// in place.
pub fn select_target(
    map: &[MemoryRegion],
    request: &TargetRequest<'_>,
) -> Result<PhysAddr, SelectError> {
    select(map, request, || request.avoid.iter().copied())
}

/// [`select_target`] for a loader's boot information, with Xen's defaults
/// ([`TargetRequest::new`]): the slot for the running `image` avoids the image itself and
/// every range of boot data the loader handed over ([`LoaderInfo::avoid_ranges`]: the
/// boot-information structures, the memory map, modules, command lines). The avoid list is
/// read from `info` in place, so the caller sizes no array.
///
/// # Stack
/// About 1.3 KiB (1,312 bytes for PVH's `BootInfo`, measured from the object code for the
/// bare target, see [`crate::STACK_BUDGET`]), whatever the map's size and the number of
/// avoided ranges: the iterators over `info` live in the frame, no list.
pub fn select_target_for<I: LoaderInfo + ?Sized>(
    info: &I,
    image: PhysRange,
) -> Result<PhysAddr, SelectError> {
    let request = TargetRequest::new(image.len(), &[]);
    select(info.memory_map(), &request, || {
        core::iter::once(image).chain(info.avoid_ranges())
    })
}

/// The rule of [`select_target`], with the avoided ranges yielded by `avoid` (not
/// `request.avoid`).
fn select<F, A>(
    map: &[MemoryRegion],
    request: &TargetRequest<'_>,
    avoid: F,
) -> Result<PhysAddr, SelectError>
where
    F: Fn() -> A,
    A: Iterator<Item = PhysRange>,
{
    let align = request.align;
    if align == 0 || !align.is_power_of_two() {
        return Err(SelectError::BadAlignment { align });
    }
    if request.image_size == 0 {
        return Err(SelectError::EmptyImage);
    }
    let round_down = |x: u64| x & !(align - 1);
    // An address with no aligned address at or above it: past every slot.
    let round_up = |x: u64| x.checked_next_multiple_of(align).unwrap_or(u64::MAX);
    let needed = request
        .image_size
        .checked_next_multiple_of(align)
        .ok_or(SelectError::NoRoom {
            needed: u64::MAX,
            largest_candidate: 0,
        })?;
    let lowest = round_up(request.min_base);
    let layout = Layout { map, avoid };
    // The aligned slot tops, highest first, each once; and how many candidates there are.
    let next_top = |above: Option<u64>| {
        let mut candidates = 0usize;
        let top = layout
            .top_candidates()
            .inspect(|_| candidates += 1)
            .map(|c| round_down(c.min(PHYS_ADDR_END)))
            .filter(|&t| above.is_none_or(|a| t < a))
            .max();
        (top, candidates)
    };

    let mut largest = 0u64;
    let (mut top, candidates) = next_top(None);
    // Each pass takes a lower top than the last, so there are at most as many passes as
    // candidates: with that bound the walk ends even if the ordering were wrong.
    for _ in 0..candidates {
        let Some(t) = top else {
            break;
        };
        (top, _) = next_top(Some(t));
        let Some(below) = t.checked_sub(1).filter(|&b| layout.is_clear(b)) else {
            continue;
        };
        let extent_top = round_down(layout.extent_end(below).min(PHYS_ADDR_END));
        if extent_top > request.limit {
            continue;
        }
        let bottom = round_up(layout.clear_start(t)).max(lowest);
        let span = t.saturating_sub(bottom);
        largest = largest.max(span);
        if span >= needed {
            // `t <= PHYS_ADDR_END`, so the start always is a valid physical address.
            if let Ok(base) = PhysAddr::try_new(t - needed) {
                return Ok(base);
            }
        }
    }
    Err(SelectError::NoRoom {
        needed,
        largest_candidate: largest,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram(start: u64, end: u64) -> MemoryRegion {
        MemoryRegion {
            start,
            len: end - start,
            kind: E820_RAM,
        }
    }

    fn other(start: u64, end: u64, kind: u32) -> MemoryRegion {
        MemoryRegion {
            start,
            len: end - start,
            kind,
        }
    }

    /// `select_target`, with the address as a plain number for readable assertions.
    fn select(map: &[MemoryRegion], request: &TargetRequest<'_>) -> Result<u64, SelectError> {
        select_target(map, request).map(PhysAddr::as_u64)
    }

    /// The running image at 2 MiB, as the boot-stub and Xen under QEMU have it.
    const IMAGE: PhysRange = PhysRange::new(2 * MIB, 8 * MIB);

    #[test]
    fn qemu_3g_pc_matches_xen() {
        // Measured: Xen 4.17, -m 3G, reloc_size 6 MiB -> 0xbf800000.
        let map = [ram(0, 0x9fc00), ram(0x100000, 0xbffe0000)];
        let pick = select(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0xbf80_0000));
    }

    #[test]
    fn qemu_1g_matches_xen() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0x3ffe0000)];
        let pick = select(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x3f80_0000));
    }

    #[test]
    fn qemu_128m_pc() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0x7fe0000)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        // 0x7fe0000 rounds down to 0x7e00000.
        assert_eq!(pick, Ok(0x7e0_0000 - 4 * MIB));
    }

    #[test]
    fn qemu_q35_3g_ignores_ram_above_4g() {
        let map = [ram(0x100000, 0x7ffdf000), ram(0x1_0000_0000, 0x1_4000_0000)];
        let pick = select(&map, &TargetRequest::new(8 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x7fe0_0000 - 8 * MIB));
    }

    #[test]
    fn qemu_6g_pc_and_q35() {
        let pc = [ram(0x100000, 0xbffe0000), ram(0x1_0000_0000, 0x1_c000_0000)];
        let q35 = [ram(0x100000, 0x7ffdf000), ram(0x1_0000_0000, 0x2_0000_0000)];
        let req = TargetRequest::new(4 * MIB, &[IMAGE]);
        assert_eq!(select(&pc, &req), Ok(0xbfe0_0000 - 4 * MIB));
        assert_eq!(select(&q35, &req), Ok(0x7fe0_0000 - 4 * MIB));
        // With no limit the high region wins.
        let unlimited = TargetRequest {
            limit: u64::MAX,
            ..req
        };
        assert_eq!(select(&q35, &unlimited), Ok(0x2_0000_0000 - 4 * MIB));
    }

    #[test]
    fn region_crossing_limit_is_not_used() {
        let map = [ram(0x100000, 0x7fe0000), ram(3 * GIB, 5 * GIB)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x7e0_0000 - 4 * MIB));
    }

    #[test]
    fn qboot_style_unsorted_map_with_junk() {
        // Unsorted, a type-4 region, a zero-size type-0 terminator, an overlap.
        let map = [
            ram(0x100000, 0x7fe0000),
            other(0xfeffc000, 0xff000000, 2),
            ram(0, 0x9fc00),
            other(0x7fe0000, 0x8000000, 4),
            MemoryRegion {
                start: 0,
                len: 0,
                kind: 0,
            },
            ram(0x200000, 0x400000),
        ];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x7e0_0000 - 4 * MIB));
    }

    #[test]
    fn reserved_entry_inside_ram_is_avoided() {
        let map = [ram(0x100000, 0x8000000), other(0x7d00000, 0x7d01000, 2)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        // The reserved page at 125 MiB blocks [124 MiB, 126 MiB); only 2 MiB are clear above
        // it, so the slot ends at 124 MiB.
        assert_eq!(pick, Ok(0x7c0_0000 - 4 * MIB));
    }

    #[test]
    fn avoids_modules_and_finds_gap_below() {
        let map = [ram(0x100000, 0x1000_0000)];
        let module = PhysRange::new(0xf00_0000 + 0x1234, 0x1000_0000);
        let cmdline = PhysRange::new(0xd00_0000, 0xd00_0100);
        let pick = select(
            &map,
            &TargetRequest::new(4 * MIB, &[IMAGE, module, cmdline]),
        );
        // Above cmdline: [0xd200000, 0xf000000) holds 30 MiB: the slot ends at 0xf000000.
        assert_eq!(pick, Ok(0xf00_0000 - 4 * MIB));
        let tight = select(
            &map,
            &TargetRequest::new(40 * MIB, &[IMAGE, module, cmdline]),
        );
        // Between the image (ends 8 MiB) and cmdline (0xd000000): 200 MiB.
        assert_eq!(tight, Ok(0xd00_0000 - 40 * MIB));
    }

    #[test]
    fn no_room_reports_need_and_largest() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0xa00000)];
        let err = select(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
        assert_eq!(
            err,
            Err(SelectError::NoRoom {
                needed: 6 * MIB,
                largest_candidate: 2 * MIB
            })
        );
        let text = err.unwrap_err().to_string();
        assert!(
            text.contains("0x600000") && text.contains("0x200000"),
            "{text}"
        );
    }

    #[test]
    fn bad_requests() {
        let map = [ram(0, GIB)];
        assert_eq!(
            select(&map, &TargetRequest::new(0, &[])),
            Err(SelectError::EmptyImage)
        );
        let req = TargetRequest {
            align: 3 * MIB,
            ..TargetRequest::new(MIB, &[])
        };
        assert_eq!(
            select(&map, &req),
            Err(SelectError::BadAlignment { align: 3 * MIB })
        );
        let huge = TargetRequest::new(u64::MAX, &[]);
        assert!(matches!(
            select(&map, &huge),
            Err(SelectError::NoRoom { .. })
        ));
    }

    #[test]
    fn rounding_of_image_size() {
        let map = [ram(0x100000, 0x1000_0000)];
        let pick = select(&map, &TargetRequest::new(5 * MIB + 1, &[IMAGE]));
        assert_eq!(pick, Ok(0x1000_0000 - 6 * MIB));
    }

    // Issue 9, item 4: where the pick used to diverge from Xen.

    #[test]
    fn adjacent_ram_entries_merge_before_slots_are_considered() {
        // EFI-converted maps split RAM into touching entries; Xen's sanitize_e820_map merges
        // them. Per entry, the 8 MiB slot would end at 60 MiB (0x3400000); merged, at 66 MiB.
        let map = [ram(MIB, 61 * MIB), ram(61 * MIB, 67 * MIB)];
        let pick = select(&map, &TargetRequest::new(8 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x3a0_0000));
    }

    #[test]
    fn overlapping_ram_entries_merge() {
        // Neither entry alone holds 40 MiB above the image; their union does.
        let map = [ram(MIB, 40 * MIB), ram(30 * MIB, 67 * MIB)];
        let pick = select(&map, &TargetRequest::new(40 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(66 * MIB - 40 * MIB));
    }

    #[test]
    fn many_touching_entries_form_one_extent() {
        // 200 touching 1 MiB entries, unsorted (the high half first): one 200 MiB extent.
        let mut map = [ram(0, 0); 200];
        for (k, slot) in map.iter_mut().enumerate() {
            let k = (k as u64 + 100) % 200;
            *slot = ram((k + 1) * MIB, (k + 2) * MIB);
        }
        let pick = select(&map, &TargetRequest::new(150 * MIB, &[IMAGE]));
        // Extent [1 MiB, 201 MiB) rounds down to 200 MiB.
        assert_eq!(pick, Ok(50 * MIB));
    }

    #[test]
    fn rounded_down_end_is_compared_with_the_limit() {
        // Xen: `e = (addr + size) & ~mask` then `e <= limit`: this region tops out at 4 GiB.
        let map = [ram(MIB, 4 * GIB + 4096)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0xffc0_0000));
    }

    #[test]
    fn region_whose_rounded_end_passes_the_limit_is_not_used() {
        let map = [ram(MIB, 64 * MIB), ram(128 * MIB, 4 * GIB + 2 * MIB)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(60 * MIB));
    }

    #[test]
    fn reserved_entry_splits_ram_for_the_limit_check() {
        // Xen's sanitised map has RAM [1 MiB, 3 GiB) (qualifies) and [3 GiB + 4 KiB, 5 GiB).
        let map = [ram(MIB, 5 * GIB), other(3 * GIB, 3 * GIB + 4096, 2)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(3 * GIB - 4 * MIB));
    }

    #[test]
    fn avoided_ranges_do_not_split_ram_for_the_limit_check() {
        // A module is not a map entry: the region still crosses 4 GiB, as in Xen.
        let module = PhysRange::new(3 * GIB, 3 * GIB + 4096);
        let map = [ram(MIB, 64 * MIB), ram(128 * MIB, 5 * GIB)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE, module]));
        assert_eq!(pick, Ok(60 * MIB));
    }

    #[test]
    fn type_zero_entry_blocks() {
        // Xen ranks type 0 below RAM; here any non-RAM entry is left alone (module docs).
        let map = [ram(MIB, 64 * MIB), other(62 * MIB, 63 * MIB, 0)];
        let pick = select(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(58 * MIB));
    }

    // Kept on purpose where Xen is stricter (module docs, "Where this differs").

    #[test]
    fn moves_below_the_image_when_nothing_fits_above() {
        // Xen only accepts a slot above the running image; only 2 MiB is free above it here.
        let image = PhysRange::new(100 * MIB, 110 * MIB);
        let map = [ram(MIB, 112 * MIB)];
        let pick = select(&map, &TargetRequest::new(8 * MIB, &[image]));
        assert_eq!(pick, Ok(92 * MIB));
    }

    #[test]
    fn exact_fit_between_modules_is_taken() {
        // The 8 MiB gap [50 MiB, 58 MiB) is aligned and exactly the slot; Xen would need
        // 8 MiB + 2 MiB - 1 there and go below the lower module.
        let map = [ram(MIB, 64 * MIB)];
        let below = PhysRange::new(40 * MIB, 50 * MIB);
        let above = PhysRange::new(58 * MIB, 64 * MIB);
        let pick = select(&map, &TargetRequest::new(8 * MIB, &[IMAGE, below, above]));
        assert_eq!(pick, Ok(50 * MIB));
    }

    // Extremes: typed results, no panics.

    #[test]
    fn ram_above_2_pow_52_is_never_picked() {
        // With no limit, the extent is clipped at 2^52 (as Xen clips at its directmap's reach).
        let map = [ram(GIB, 1 << 53)];
        let unlimited = TargetRequest {
            limit: u64::MAX,
            ..TargetRequest::new(4 * MIB, &[])
        };
        assert_eq!(select(&map, &unlimited), Ok(PHYS_ADDR_END - 4 * MIB));
        // Entirely above it: nothing.
        let high = [ram(1 << 53, 1 << 54)];
        assert_eq!(
            select(&high, &unlimited),
            Err(SelectError::NoRoom {
                needed: 4 * MIB,
                largest_candidate: 0
            })
        );
    }

    #[test]
    fn extreme_values_give_typed_answers() {
        let max = u64::MAX;
        let map = [
            ram(0, max),
            MemoryRegion {
                start: max - 5,
                len: max,
                kind: E820_RAM,
            },
            MemoryRegion {
                start: max,
                len: 0,
                kind: 2,
            },
            other(max - 4096, max, 2),
        ];
        let avoid = [
            PhysRange::new(max, 0),
            PhysRange::new(max - 1, max),
            PhysRange::new(0, 2 * MIB),
        ];
        for (size, align, min_base, limit) in [
            (max, SIZE_2M, SIZE_2M, max),
            (max - SIZE_2M, SIZE_2M, 0, max),
            (1, 1, 0, max),
            (1, 1 << 63, 0, max),
            (4096, 4096, max, max),
            (4096, 4096, 0, 0),
            (PHYS_ADDR_END, 4096, 0, max),
        ] {
            let req = TargetRequest {
                image_size: size,
                avoid: &avoid,
                limit,
                align,
                min_base,
            };
            match select(&map, &req) {
                Ok(base) => {
                    let needed = size.next_multiple_of(align);
                    assert!(base.is_multiple_of(align) && base >= min_base, "{base:#x}");
                    assert!(base + needed <= PHYS_ADDR_END.min(limit), "{base:#x}");
                }
                Err(SelectError::NoRoom { .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        // The whole addressable range with 4 KiB alignment: the top 4 KiB under 2^52.
        let req = TargetRequest {
            image_size: 1,
            avoid: &[],
            limit: max,
            align: 4096,
            min_base: 0,
        };
        assert_eq!(select(&map, &req), Ok(PHYS_ADDR_END - 4096));
    }

    #[test]
    fn select_error_is_an_error() {
        let err: &dyn core::error::Error = &SelectError::EmptyImage;
        assert_eq!(err.to_string(), "image size is zero");
    }

    /// Boot information reduced to what `select_target_for` reads: a map and boot data.
    struct Loader {
        map: std::vec::Vec<MemoryRegion>,
        boot_data: std::vec::Vec<PhysRange>,
    }

    impl LoaderInfo for Loader {
        const MAX_AVOID_RANGES: usize = usize::MAX;
        fn memory_map(&self) -> &[MemoryRegion] {
            &self.map
        }
        fn modules(&self) -> &[crate::boot::BootModule] {
            &[]
        }
        fn cmdline(&self) -> &[u8] {
            &[]
        }
        fn cmdline_truncated(&self) -> bool {
            false
        }
        fn cmdline_range(&self) -> PhysRange {
            PhysRange::new(0, 0)
        }
        fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
            self.boot_data.iter().copied()
        }
    }

    /// The image and each range of boot data are avoided: without any one of them the pick
    /// (16 MiB) would be higher, over that range (28, 24 or 20 MiB).
    #[test]
    fn select_target_for_avoids_the_image_and_every_range_of_boot_data() {
        let image = PhysRange::new(28 * MIB, 32 * MIB);
        let boot_data = [
            PhysRange::new(24 * MIB + 0x1000, 24 * MIB + 0x2000),
            PhysRange::new(20 * MIB + 100, 20 * MIB + 200),
        ];
        let loader = |boot_data: &[PhysRange]| Loader {
            map: std::vec![ram(0, 32 * MIB)],
            boot_data: boot_data.to_vec(),
        };
        let pick = |info: &Loader, image| select_target_for(info, image).map(PhysAddr::as_u64);
        assert_eq!(pick(&loader(&boot_data), image), Ok(16 * MIB));
        // Each avoided range moves the pick: without it, the pick lands on it.
        assert_eq!(
            select(
                &[ram(0, 32 * MIB)],
                &TargetRequest::new(4 * MIB, &boot_data)
            ),
            Ok(28 * MIB),
            "without the image"
        );
        assert_eq!(pick(&loader(&boot_data[1..]), image), Ok(24 * MIB));
        assert_eq!(pick(&loader(&boot_data[..1]), image), Ok(20 * MIB));
        // An image elsewhere frees the top slot.
        let elsewhere = PhysRange::new(40 * MIB, 44 * MIB);
        assert_eq!(pick(&loader(&boot_data), elsewhere), Ok(28 * MIB));
        assert_eq!(
            pick(&loader(&boot_data), PhysRange::new(0, 0)),
            Err(SelectError::EmptyImage)
        );
    }

    /// More boot data than any array a caller would size by hand: all of it is avoided.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "509 ranges make the scan's cubic worst case minutes long under Miri; safe code"
    )]
    fn select_target_for_reads_any_number_of_ranges() {
        // A 4 KiB module at the top of every 2 MiB slot of [4 MiB, 1 GiB): 509 ranges.
        let boot_data: std::vec::Vec<PhysRange> = (3..512)
            .map(|slot| PhysRange::new(slot * 2 * MIB - 0x1000, slot * 2 * MIB))
            .collect();
        let info = Loader {
            map: std::vec![ram(MIB, GIB)],
            boot_data,
        };
        let image = PhysRange::new(GIB - 2 * MIB, GIB);
        assert_eq!(
            select_target_for(&info, image).map(PhysAddr::as_u64),
            Ok(2 * MIB)
        );
        assert_eq!(
            select_target_for(&info, PhysRange::new(0, 4 * MIB)),
            Err(SelectError::NoRoom {
                needed: 4 * MIB,
                largest_candidate: 2 * MIB
            }),
            "the one free slot, [1022 MiB, 1 GiB), is too small"
        );
    }
}
