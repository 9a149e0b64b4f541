//! Whether the image lies in RAM by the memory map, with reloc-core's selection rule, so the
//! stub's check and `reloc_core::select_target` never disagree about an address. Built on the
//! host too, for its unit tests.

use reloc_core::{MemoryRegion, PhysRange};

/// The first address of `range` that is not RAM, or `None` when all of it is. An address is
/// RAM when a RAM region covers it and no non-RAM region does (reloc-core's selection rule:
/// non-RAM entries cut RAM, whatever their order); regions may come in any order, overlap or
/// touch.
pub fn first_non_ram(map: &[MemoryRegion], range: PhysRange) -> Option<u64> {
    let mut at = range.start;
    while at < range.end {
        if map
            .iter()
            .any(|region| !region.is_ram() && region.range().contains(at))
        {
            return Some(at);
        }
        // The furthest a RAM region containing `at` reaches; none: `at` is not RAM.
        let Some(reach) = map
            .iter()
            .filter(|region| region.is_ram() && region.range().contains(at))
            .map(|region| region.range().end)
            .max()
        else {
            return Some(at);
        };
        // ... up to where a non-RAM region begins inside that stretch.
        at = map
            .iter()
            .filter(|region| !region.is_ram() && !region.range().is_empty())
            .map(|region| region.start)
            .filter(|&start| start > at && start < reach)
            .fold(reach, u64::min);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u32 = 1;
    const RESERVED: u32 = 2;

    fn region(start: u64, len: u64, kind: u32) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    fn image() -> PhysRange {
        PhysRange::new(0x20_0000, 0x40_0000)
    }

    #[test]
    fn ram_covering_the_image_is_ram() {
        assert_eq!(first_non_ram(&[region(0, 0x100_0000, RAM)], image()), None);
        // Split over touching and overlapping entries, in any order.
        let map = [
            region(0x30_0000, 0x20_0000, RAM),
            region(0x10_0000, 0x28_0000, RAM),
        ];
        assert_eq!(first_non_ram(&map, image()), None);
    }

    #[test]
    fn a_gap_or_a_non_ram_entry_is_reported_where_it_starts() {
        assert_eq!(
            first_non_ram(&[region(0, 0x30_0000, RAM)], image()),
            Some(0x30_0000)
        );
        assert_eq!(
            first_non_ram(&[region(0x20_0000, 0x10_0000, RESERVED)], image()),
            Some(0x20_0000)
        );
    }

    #[test]
    fn a_non_ram_entry_overlapping_ram_is_not_ram() {
        // RAM covers the image, but a reserved entry inside it wins, as it does in
        // reloc-core's selection; the old check (any RAM entry covers it) passed this map.
        let map = [
            region(0, 0x100_0000, RAM),
            region(0x38_0000, 0x1000, RESERVED),
        ];
        assert_eq!(first_non_ram(&map, image()), Some(0x38_0000));
        // Listed first, or covering the image's first byte.
        let map = [
            region(0x1f_f000, 0x2000, RESERVED),
            region(0, 0x100_0000, RAM),
        ];
        assert_eq!(first_non_ram(&map, image()), Some(0x20_0000));
        // An empty non-RAM entry covers nothing.
        let map = [region(0, 0x100_0000, RAM), region(0x30_0000, 0, RESERVED)];
        assert_eq!(first_non_ram(&map, image()), None);
    }
}
