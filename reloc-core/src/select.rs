//! Choosing where the image goes, the way Xen's `__start_xen` does.
//!
//! Xen scans the firmware memory map for the highest 2 MiB-aligned slot in a RAM region that
//! ends at or below 4 GiB (the directmap is prebuilt to 4 GiB), at least 2 MiB up, clear of
//! the running image and the boot modules. This module computes the same pick from an
//! unsorted, possibly overlapping map.

use core::fmt;

use crate::paging::SIZE_2M;
use crate::phys::PhysRange;

/// The E820 / `hvm_memmap_table_entry` type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One firmware memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes (zero-sized entries are ignored).
    pub len: u64,
    /// E820 type: 1 is RAM; anything else (reserved, ACPI, NVS, unknown) is not.
    pub kind: u32,
}

impl MemoryRegion {
    /// The region as a range; a region wrapping past 2^64 is cut at 2^64 - 1.
    pub fn range(&self) -> PhysRange {
        PhysRange::new(self.start, self.start.saturating_add(self.len))
    }

    /// True for usable RAM.
    pub fn is_ram(&self) -> bool {
        self.kind == E820_RAM
    }
}

/// What to place and what to keep clear of.
#[derive(Clone, Copy, Debug)]
pub struct TargetRequest<'a> {
    /// Bytes to place; the slot is this rounded up to `align`.
    pub image_size: u64,
    /// Ranges the slot must not overlap: the running image, boot data, modules, command line.
    /// Non-RAM map entries are avoided as well, even where they overlap RAM entries.
    pub avoid: &'a [PhysRange],
    /// Only RAM regions ending at or below this qualify (Xen: 4 GiB).
    pub limit: u64,
    /// Slot alignment, a power of two (Xen: 2 MiB).
    pub align: u64,
    /// Lowest acceptable slot start (Xen: 2 MiB).
    pub min_base: u64,
}

impl<'a> TargetRequest<'a> {
    /// Xen's defaults: 2 MiB alignment, at least 2 MiB up, RAM regions ending at or below
    /// 4 GiB.
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
        /// The slot size needed (image size rounded up to the alignment).
        needed: u64,
        /// The largest aligned free span seen in a qualifying RAM region (zero if none).
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

/// Picks the highest `align`-aligned slot of `image_size` (rounded up) that lies in one RAM
/// region of `map` ending at or below `limit`, starts at or above `min_base`, and overlaps
/// neither an avoided range nor a non-RAM map entry. Returns the slot's start.
pub fn select_target(
    map: &[MemoryRegion],
    request: &TargetRequest<'_>,
) -> Result<u64, SelectError> {
    let align = request.align;
    if align == 0 || !align.is_power_of_two() {
        return Err(SelectError::BadAlignment { align });
    }
    if request.image_size == 0 {
        return Err(SelectError::EmptyImage);
    }
    let round_down = |x: u64| x & !(align - 1);
    let round_up = |x: u64| {
        x.checked_next_multiple_of(align)
            .unwrap_or(round_down(u64::MAX))
    };
    let needed = request
        .image_size
        .checked_next_multiple_of(align)
        .ok_or(SelectError::NoRoom {
            needed: u64::MAX,
            largest_candidate: 0,
        })?;

    // Everything a slot must stay clear of.
    let blockers = || {
        request
            .avoid
            .iter()
            .copied()
            .chain(map.iter().filter(|r| !r.is_ram()).map(MemoryRegion::range))
            .filter(|r| !r.is_empty())
    };

    let mut best: Option<u64> = None;
    let mut largest = 0u64;
    for region in map.iter().filter(|r| r.is_ram() && r.len > 0) {
        let range = region.range();
        if range.end > request.limit {
            continue;
        }
        let low = round_up(range.start).max(round_up(request.min_base));
        let high = round_down(range.end);
        if high <= low {
            continue;
        }
        // The highest clear slot ends either at the region's top or just below the start
        // of some blocker (rounded down): those are the only tops worth trying.
        let tops = core::iter::once(high).chain(
            blockers()
                .map(|b| round_down(b.start))
                .filter(|&t| low < t && t < high),
        );
        for top in tops {
            // The free span below `top`: up to the highest blocker end under it.
            let bottom = blockers()
                .filter(|b| b.start < top && b.end > low)
                .map(|b| round_up(b.end))
                .fold(low, u64::max);
            let span = top.saturating_sub(bottom);
            largest = largest.max(span);
            if span >= needed {
                let base = top - needed;
                best = Some(best.map_or(base, |b| b.max(base)));
            }
        }
    }
    best.ok_or(SelectError::NoRoom {
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

    /// The running image at 2 MiB, as the boot-stub and Xen under QEMU have it.
    const IMAGE: PhysRange = PhysRange::new(2 * MIB, 8 * MIB);

    #[test]
    fn qemu_3g_pc_matches_xen() {
        // Measured: Xen 4.17, -m 3G, reloc_size 6 MiB -> 0xbf800000.
        let map = [ram(0, 0x9fc00), ram(0x100000, 0xbffe0000)];
        let pick = select_target(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0xbf80_0000));
    }

    #[test]
    fn qemu_1g_matches_xen() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0x3ffe0000)];
        let pick = select_target(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x3f80_0000));
    }

    #[test]
    fn qemu_128m_pc() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0x7fe0000)];
        let pick = select_target(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        // 0x7fe0000 rounds down to 0x7e00000.
        assert_eq!(pick, Ok(0x7e0_0000 - 4 * MIB));
    }

    #[test]
    fn qemu_q35_3g_ignores_ram_above_4g() {
        let map = [ram(0x100000, 0x7ffdf000), ram(0x1_0000_0000, 0x1_4000_0000)];
        let pick = select_target(&map, &TargetRequest::new(8 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x7fe0_0000 - 8 * MIB));
    }

    #[test]
    fn qemu_6g_pc_and_q35() {
        let pc = [ram(0x100000, 0xbffe0000), ram(0x1_0000_0000, 0x1_c000_0000)];
        let q35 = [ram(0x100000, 0x7ffdf000), ram(0x1_0000_0000, 0x2_0000_0000)];
        let req = TargetRequest::new(4 * MIB, &[IMAGE]);
        assert_eq!(select_target(&pc, &req), Ok(0xbfe0_0000 - 4 * MIB));
        assert_eq!(select_target(&q35, &req), Ok(0x7fe0_0000 - 4 * MIB));
        // With no limit the high region wins.
        let unlimited = TargetRequest {
            limit: u64::MAX,
            ..req
        };
        assert_eq!(select_target(&q35, &unlimited), Ok(0x2_0000_0000 - 4 * MIB));
    }

    #[test]
    fn region_crossing_limit_is_not_used() {
        let map = [ram(0x100000, 0x7fe0000), ram(3 * GIB, 5 * GIB)];
        let pick = select_target(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
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
        let pick = select_target(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        assert_eq!(pick, Ok(0x7e0_0000 - 4 * MIB));
    }

    #[test]
    fn reserved_entry_inside_ram_is_avoided() {
        let map = [ram(0x100000, 0x8000000), other(0x7d00000, 0x7d01000, 2)];
        let pick = select_target(&map, &TargetRequest::new(4 * MIB, &[IMAGE]));
        // The reserved page at 125 MiB blocks [124 MiB, 126 MiB); only 2 MiB are clear above
        // it, so the slot ends at 124 MiB.
        assert_eq!(pick, Ok(0x7c0_0000 - 4 * MIB));
    }

    #[test]
    fn avoids_modules_and_finds_gap_below() {
        let map = [ram(0x100000, 0x1000_0000)];
        let module = PhysRange::new(0xf00_0000 + 0x1234, 0x1000_0000);
        let cmdline = PhysRange::new(0xd00_0000, 0xd00_0100);
        let pick = select_target(
            &map,
            &TargetRequest::new(4 * MIB, &[IMAGE, module, cmdline]),
        );
        // Above cmdline: [0xd200000, 0xf000000) holds 30 MiB: the slot ends at 0xf000000.
        assert_eq!(pick, Ok(0xf00_0000 - 4 * MIB));
        let tight = select_target(
            &map,
            &TargetRequest::new(40 * MIB, &[IMAGE, module, cmdline]),
        );
        // Between the image (ends 8 MiB) and cmdline (0xd000000): 200 MiB.
        assert_eq!(tight, Ok(0xd00_0000 - 40 * MIB));
    }

    #[test]
    fn no_room_reports_need_and_largest() {
        let map = [ram(0, 0x9fc00), ram(0x100000, 0xa00000)];
        let err = select_target(&map, &TargetRequest::new(6 * MIB, &[IMAGE]));
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
            select_target(&map, &TargetRequest::new(0, &[])),
            Err(SelectError::EmptyImage)
        );
        let req = TargetRequest {
            align: 3 * MIB,
            ..TargetRequest::new(MIB, &[])
        };
        assert_eq!(
            select_target(&map, &req),
            Err(SelectError::BadAlignment { align: 3 * MIB })
        );
        let huge = TargetRequest::new(u64::MAX, &[]);
        assert!(matches!(
            select_target(&map, &huge),
            Err(SelectError::NoRoom { .. })
        ));
    }

    #[test]
    fn rounding_of_image_size() {
        let map = [ram(0x100000, 0x1000_0000)];
        let pick = select_target(&map, &TargetRequest::new(5 * MIB + 1, &[IMAGE]));
        assert_eq!(pick, Ok(0x1000_0000 - 6 * MIB));
    }
}
