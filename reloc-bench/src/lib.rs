//! Support for reloc's benchmarks (`cargo bench`, see BENCHMARKS.md): flat physical memory
//! over a heap buffer, Xen-like boot layouts of any image size and table count, and Xen's
//! `move_xen()` in C as the peer to beat.
//!
//! The layouts are those of reloc-core's tests (Xen's 14 boot tables: bootmap, xenmap,
//! fixmaps, a 0-8 GiB directmap), optionally grown by directmap tables full of 2 MiB leaves
//! to reach a given table count.

use reloc_core::{DirectMap, PagingMode, PhysAddr, PhysRange, RelocationRequest};

/// One KiB.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Tables of the Xen-like layout: top, bootmap L3 and L2, xenmap L3 and L2, fixmap L2, two
/// fixmap L1, directmap L3, four directmap L2, directmap L1.
pub const XEN_TABLES: usize = 14;

/// Xen's `__PAGE_HYPERVISOR` (P, RW, A, D) for pointers.
const PTR: u64 = 0x63;
/// Xen's image leaves: P, RW, A, D, PS, G.
const IMAGE_LEAF: u64 = 0x1e3;
/// A 2 MiB / 1 GiB directmap leaf: P, RW, A, D, PS, and NX.
const HUGE: u64 = 0xe3 | 1 << 63;
/// MAXPHYADDR of every layout (a common server value; the 4,096-table directmap reaches
/// about 4 TiB).
pub const MAX_PHYS_BITS: u8 = 46;

extern "C" {
    fn move_xen_c(
        directmap: *mut u8,
        old_start: u64,
        new_start: u64,
        len: u64,
        top_table: u64,
        l2_xenmap: u64,
    );
}

/// Flat physical memory `[0, size)` in a heap buffer.
pub struct Memory {
    words: Vec<u64>,
}

impl Memory {
    /// Zeroed memory of `size` bytes (a multiple of 8).
    pub fn new(size: u64) -> Self {
        let words = usize::try_from(size / 8).expect("fits the host");
        Self {
            words: vec![0; words],
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    fn index(pa: u64) -> usize {
        usize::try_from(pa / 8).expect("fits the host")
    }

    /// The qword at `pa`.
    pub fn get(&self, pa: u64) -> u64 {
        self.words[Self::index(pa)]
    }

    /// Writes the qword at `pa`.
    pub fn set(&mut self, pa: u64, value: u64) {
        self.words[Self::index(pa)] = value;
    }

    fn set_entry(&mut self, table: u64, index: u64, value: u64) {
        self.set(table + index * 8, value);
    }

    /// reloc-core's view: a directmap of the whole buffer, physical 0 at its start.
    pub fn directmap(&mut self) -> DirectMap<'_> {
        DirectMap::from_slice(&mut self.words, 0)
    }

    /// Fills `range` with distinct non-zero data (so that every page is touched and copies
    /// are checkable).
    pub fn fill(&mut self, range: PhysRange) {
        for pa in (range.start..range.end).step_by(8) {
            self.set(pa, pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 62);
        }
    }

    /// A plain `core::ptr::copy_nonoverlapping` of `len` bytes: the baseline every figure is
    /// a ratio of.
    pub fn memcpy(&mut self, src: u64, dst: u64, len: u64) {
        let len = usize::try_from(len).expect("fits the host");
        assert!(src.max(dst) as usize + len <= self.words.len() * 8);
        assert!(src + len as u64 <= dst || dst + len as u64 <= src);
        let base = self.words.as_mut_ptr().cast::<u8>();
        // SAFETY: both spans lie in the buffer and do not overlap (asserted above); `base`
        // comes from the exclusively borrowed buffer.
        unsafe {
            core::ptr::copy_nonoverlapping(base.add(src as usize), base.add(dst as usize), len)
        }
    }

    /// Xen's `move_xen()` in C on `layout`, moving it to `new_base`: copy, then add delta to
    /// the copied tables without any validation.
    pub fn move_xen_c(&mut self, layout: &XenLayout, new_base: u64) {
        let image = layout.image;
        assert!(image.end <= self.size() && new_base + image.len() <= self.size());
        assert!(new_base >= image.end || new_base + image.len() <= image.start);
        // SAFETY: the C code copies the image (in the buffer, asserted) to the destination
        // (in the buffer, disjoint, asserted) and then writes only entries of the copied
        // tables, which the layout puts inside the image; every pointer it follows is an
        // entry of those tables, rebased into the copy, so inside the buffer.
        unsafe {
            move_xen_c(
                self.words.as_mut_ptr().cast(),
                image.start,
                new_base,
                image.len(),
                layout.top,
                layout.l2_xenmap,
            )
        }
    }
}

/// A Xen-like layout written into [`Memory`].
#[derive(Clone, Copy, Debug)]
pub struct XenLayout {
    /// The image, 2 MiB-aligned.
    pub image: PhysRange,
    /// The top-level table.
    pub top: u64,
    /// The image map (Xen's `l2_xenmap`).
    pub l2_xenmap: u64,
    /// Distinct tables.
    pub tables: usize,
    /// Present entries over all tables: what planning must look at.
    pub present_entries: u64,
}

impl XenLayout {
    /// The request moving this layout to `new_base`; `image_maps` must hold `self.l2_xenmap`.
    pub fn request<'a>(&self, new_base: u64, image_maps: &'a [PhysAddr]) -> RelocationRequest<'a> {
        RelocationRequest {
            paging: PagingMode::FourLevel,
            top_table: PhysAddr::new(self.top),
            image: self.image,
            new_base: PhysAddr::new(new_base),
            image_maps,
            max_phys_bits: MAX_PHYS_BITS,
            encryption_mask: 0,
        }
    }

    /// The image-map list for [`XenLayout::request`].
    pub fn image_maps(&self) -> [PhysAddr; 1] {
        [PhysAddr::new(self.l2_xenmap)]
    }
}

/// The smallest image (a multiple of 2 MiB, at least `min_len`) that holds `tables` page
/// tables starting 1 MiB into it.
pub fn image_len_for(tables: usize, min_len: u64) -> u64 {
    (MIB + tables as u64 * 4 * KIB)
        .next_multiple_of(2 * MIB)
        .max(min_len)
}

/// Writes Xen's boot tables for the image `[image_start, image_start + image_len)` with the
/// tables from 1 MiB into it, filling the image with data first. With `tables` above
/// [`XEN_TABLES`], the directmap grows past 8 GiB by L3 tables (top-level slots 263 on) and
/// L2 tables of 512 2 MiB leaves each, until the layout has exactly `tables` tables.
pub fn build_xen(mem: &mut Memory, image_start: u64, image_len: u64, tables: usize) -> XenLayout {
    mem.fill(PhysRange::new(image_start, image_start + image_len));
    write_xen_tables(mem, image_start, image_len, tables)
}

/// [`build_xen`] without filling the image: only the table pages are written (and touched),
/// so that many layouts can share one sparse buffer, their images overlapping. Planning
/// reads nothing but the tables.
pub fn write_xen_tables(
    mem: &mut Memory,
    image_start: u64,
    image_len: u64,
    tables: usize,
) -> XenLayout {
    assert!(tables >= XEN_TABLES && image_start.is_multiple_of(2 * MIB));
    assert!(image_len_for(tables, 0) <= image_len.next_multiple_of(2 * MIB));
    let image = PhysRange::new(image_start, image_start + image_len);
    let first_table = image_start + MIB;
    let mut next = first_table;
    let mut alloc = |pages: u64| {
        let at = next;
        next += pages * 4 * KIB;
        at
    };
    let top = alloc(1);
    let l3_bootmap = alloc(1);
    let l2_bootmap = alloc(1);
    let l3_xenmap = alloc(1);
    let l2_xenmap = alloc(1);
    let l2_fixmap = alloc(1);
    let l1_fixmap_x = alloc(1);
    let l1_fixmap = alloc(1);
    let l3_directmap = alloc(1);
    let l2_directmap = alloc(4);
    let l1_directmap = alloc(1);
    let mut extra = tables - XEN_TABLES;
    let extra_start = alloc(extra as u64);
    let tables_end = alloc(0);
    assert!(tables_end <= image.end, "tables must fit in the image");
    for pa in (first_table..tables_end).step_by(8) {
        mem.set(pa, 0);
    }

    // Top level: 0 bootmap, 261 xenmap, 262 directmap.
    mem.set_entry(top, 0, l3_bootmap | PTR);
    mem.set_entry(top, 261, l3_xenmap | PTR);
    mem.set_entry(top, 262, l3_directmap | PTR);
    // Identity bootmap of the image (must not move).
    mem.set_entry(l3_bootmap, image_start >> 30, l2_bootmap | PTR);
    let image_leaves = image_len.div_ceil(2 * MIB);
    for i in 0..image_leaves {
        let pa = image_start + i * 2 * MIB;
        mem.set_entry(l2_bootmap, (pa >> 21) & 511, pa | HUGE);
    }
    // Xen map: the image's 2 MiB leaves, the fixmaps.
    mem.set_entry(l3_xenmap, 321, l2_xenmap | PTR);
    mem.set_entry(l3_xenmap, 319, l2_fixmap | PTR);
    for i in 0..image_leaves {
        mem.set_entry(l2_xenmap, i, (image_start + i * 2 * MIB) | IMAGE_LEAF);
    }
    mem.set_entry(l2_xenmap, 511, l1_fixmap_x | PTR);
    mem.set_entry(l1_fixmap_x, 0, 0xfee0_0000 | 0x173);
    mem.set_entry(l1_fixmap_x, 1, 0xfed0_0000 | 0x163 | 1 << 63);
    mem.set_entry(l2_fixmap, 511, l1_fixmap | PTR);
    mem.set_entry(l1_fixmap, 0, 0xfec0_0000 | 0x173 | 1 << 63);
    // Directmap: 0-4 GiB by 2 MiB leaves (the first 2 MiB by 4 KiB leaves), 4-8 GiB by 1 GiB.
    for i in 0..4 {
        mem.set_entry(l3_directmap, i, (l2_directmap + i * 4 * KIB) | PTR);
        for j in 0..512 {
            let pa = (i * 512 + j) * 2 * MIB;
            mem.set_entry(l2_directmap + i * 4 * KIB, j, pa | HUGE);
        }
    }
    mem.set_entry(l2_directmap, 0, l1_directmap | PTR);
    for k in 0..512 {
        mem.set_entry(l1_directmap, k, (k * 4 * KIB) | 0x63 | 1 << 63);
    }
    for g in 4..8 {
        mem.set_entry(l3_directmap, g, (g * GIB) | HUGE);
    }

    // More directmap from 8 GiB: one L3 table per top-level slot, each with up to 512 L2
    // tables of 2 MiB leaves.
    let mut page = extra_start;
    let mut slot = 263;
    let mut gib = 8;
    while extra > 0 {
        let l3 = page;
        page += 4 * KIB;
        extra -= 1;
        mem.set_entry(top, slot, l3 | PTR);
        slot += 1;
        for j in 0..512 {
            if extra == 0 {
                break;
            }
            let l2 = page;
            page += 4 * KIB;
            extra -= 1;
            mem.set_entry(l3, j, l2 | PTR);
            for k in 0..512 {
                mem.set_entry(l2, k, (gib * GIB + k * 2 * MIB) | HUGE);
            }
            gib += 1;
        }
    }

    let present_entries = (first_table..tables_end)
        .step_by(8)
        .filter(|&pa| mem.get(pa) & 1 != 0)
        .count() as u64;
    XenLayout {
        image,
        top,
        l2_xenmap,
        tables,
        present_entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reloc_core::Plan;

    /// The C peer and reloc-core produce the same copy on the Xen-like layout (no sharing, so
    /// Xen's walk is correct there), and the layouts have the table counts asked for.
    #[test]
    fn c_peer_and_reloc_core_agree() {
        for tables in [XEN_TABLES, 18, 600] {
            let len = image_len_for(tables, 6 * MIB);
            let new_base = 2 * MIB + len.next_multiple_of(2 * MIB);
            let mut mem = Memory::new(new_base + len);
            let layout = build_xen(&mut mem, 2 * MIB, len, tables);
            let maps = layout.image_maps();
            let plan: Plan<1024> =
                Plan::new_with_capacity(&mem.directmap(), &layout.request(new_base, &maps))
                    .unwrap();
            assert_eq!(plan.tables().count(), tables);
            plan.apply(&mut mem.directmap());
            let by_reloc: Vec<u64> = (0..len).step_by(8).map(|o| mem.get(new_base + o)).collect();
            for o in (0..len).step_by(8) {
                mem.set(new_base + o, 0);
            }
            mem.move_xen_c(&layout, new_base);
            let by_c: Vec<u64> = (0..len).step_by(8).map(|o| mem.get(new_base + o)).collect();
            assert!(by_reloc == by_c, "{tables} tables: copies differ");
            let old: Vec<u64> = (0..len).step_by(8).map(|o| mem.get(2 * MIB + o)).collect();
            assert_ne!(by_c, old, "nothing was rebased");
        }
    }
}
