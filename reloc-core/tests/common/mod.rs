//! Test support: flat physical memory over a heap buffer, a reference page walker, and a
//! Xen-like boot layout written entry by entry.
#![allow(dead_code)]

use reloc_core::{DirectMap, PagingMode, PhysAddr};

/// A physical address of the test layouts (all far below 2^52).
pub fn pa(addr: u64) -> PhysAddr {
    PhysAddr::new(addr)
}

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Xen's `__PAGE_HYPERVISOR` (P, RW, A, D) for pointers.
pub const PTR: u64 = 0x63;
/// Xen's image leaves: P, RW, A, D, PS, G.
pub const IMAGE_LEAF: u64 = 0x1e3;
/// A 2 MiB / 1 GiB directmap leaf: P, RW, A, D, PS.
pub const HUGE: u64 = 0xe3;
pub const NX: u64 = 1 << 63;
pub const PAT_HUGE: u64 = 1 << 12;
pub const SOFTWARE_52: u64 = 1 << 52;

/// Flat physical memory `[0, size)`.
#[derive(Clone, PartialEq, Eq)]
pub struct TestMem {
    pub words: Vec<u64>,
}

impl TestMem {
    pub fn new(size: u64) -> Self {
        Self {
            words: vec![0; (size / 8) as usize],
        }
    }
    pub fn get(&self, pa: u64) -> u64 {
        self.words[(pa / 8) as usize]
    }
    pub fn set(&mut self, pa: u64, value: u64) {
        self.words[(pa / 8) as usize] = value;
    }
    pub fn entry(&self, table: u64, index: u64) -> u64 {
        self.get(table + index * 8)
    }
    pub fn set_entry(&mut self, table: u64, index: u64, value: u64) {
        self.set(table + index * 8, value);
    }
    pub fn directmap(&mut self) -> DirectMap<'_> {
        DirectMap::from_slice(&mut self.words, 0)
    }
    /// Fills `[start, end)` with a pattern derived from each address, so that copies are
    /// checkable byte for byte.
    pub fn fill_pattern(&mut self, start: u64, end: u64) {
        for pa in (start..end).step_by(8) {
            self.set(
                pa,
                pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 0x8000_0000_0000_0000,
            );
        }
    }
}

/// A reference walk, independent of reloc-core: virtual -> (physical, leaf entry).
pub fn translate(mem: &TestMem, cr3: u64, mode: PagingMode, va: u64) -> Option<(u64, u64)> {
    let levels = match mode {
        PagingMode::FourLevel => 4,
        PagingMode::FiveLevel => 5,
    };
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in (1..=levels).rev() {
        let index = (va >> (12 + 9 * (level - 1))) & 511;
        let entry = mem.entry(table, index);
        if entry & 1 == 0 {
            return None;
        }
        let is_leaf = level == 1 || (level <= 3 && entry & 0x80 != 0);
        if is_leaf {
            let page_bits = 12 + 9 * (level - 1);
            let frame = entry & 0x000f_ffff_ffff_f000 & !((1u64 << page_bits) - 1);
            return Some((frame | (va & ((1u64 << page_bits) - 1)), entry));
        }
        table = entry & 0x000f_ffff_ffff_f000;
    }
    None
}

/// Xen's virtual layout.
pub const XEN_VIRT_START: u64 = 0xffff_82d0_4000_0000;
pub const DIRECTMAP_VIRT_START: u64 = 0xffff_8300_0000_0000;

/// Where each table of the Xen-like layout lives (all inside the image).
#[derive(Clone, Copy, Debug)]
pub struct XenLayout {
    pub image_start: u64,
    pub image_len: u64,
    pub top: u64,
    pub l3_bootmap: u64,
    pub l2_bootmap: u64,
    pub l3_xenmap: u64,
    pub l2_xenmap: u64,
    pub l2_fixmap: u64,
    pub l1_fixmap_x: u64,
    pub l1_fixmap: u64,
    pub l3_directmap: u64,
    /// Four consecutive pages.
    pub l2_directmap: u64,
    pub l1_directmap: u64,
}

impl XenLayout {
    /// Image leaves in `l2_xenmap`.
    pub fn image_leaves(&self) -> u64 {
        self.image_len.div_ceil(2 * MIB)
    }
}

/// Writes Xen's boot page tables for an image at `image_start` (2 MiB-aligned) of `image_len`
/// bytes, with the tables starting at `image_start + tables_offset`. Directmap: physical
/// 0-4 GiB with 2 MiB leaves (the first 2 MiB as 4 KiB leaves), 4-8 GiB with 1 GiB leaves.
pub fn build_xen(
    mem: &mut TestMem,
    image_start: u64,
    image_len: u64,
    tables_offset: u64,
) -> XenLayout {
    let mut next = image_start + tables_offset;
    let mut alloc = |pages: u64| {
        let at = next;
        next += pages * 4 * KIB;
        at
    };
    let l = XenLayout {
        image_start,
        image_len,
        top: alloc(1),
        l3_bootmap: alloc(1),
        l2_bootmap: alloc(1),
        l3_xenmap: alloc(1),
        l2_xenmap: alloc(1),
        l2_fixmap: alloc(1),
        l1_fixmap_x: alloc(1),
        l1_fixmap: alloc(1),
        l3_directmap: alloc(1),
        l2_directmap: alloc(4),
        l1_directmap: alloc(1),
    };
    assert!(
        next <= image_start + image_len,
        "tables must fit in the image"
    );
    for t in (image_start + tables_offset..next).step_by(8) {
        mem.set(t, 0);
    }
    // Top level: 0 bootmap, 261 xenmap, 262 directmap.
    mem.set_entry(l.top, 0, l.l3_bootmap | PTR);
    mem.set_entry(l.top, 261, l.l3_xenmap | PTR);
    mem.set_entry(l.top, 262, l.l3_directmap | PTR);
    // Identity bootmap of the image with 2 MiB leaves: must not move.
    mem.set_entry(l.l3_bootmap, 0, l.l2_bootmap | PTR);
    for i in 0..l.image_leaves() {
        let pa = image_start + i * 2 * MIB;
        mem.set_entry(l.l2_bootmap, pa >> 21, pa | HUGE);
    }
    // Xen map.
    mem.set_entry(l.l3_xenmap, 321, l.l2_xenmap | PTR);
    mem.set_entry(l.l3_xenmap, 319, l.l2_fixmap | PTR);
    for i in 0..l.image_leaves() {
        let mut leaf = (image_start + i * 2 * MIB) | IMAGE_LEAF;
        // Vary the non-address bits: they must survive bit-identically.
        if i == 0 {
            leaf |= PAT_HUGE;
        }
        if i == 1 {
            leaf |= NX | SOFTWARE_52;
        }
        mem.set_entry(l.l2_xenmap, i, leaf);
    }
    mem.set_entry(l.l2_xenmap, 511, l.l1_fixmap_x | PTR);
    mem.set_entry(l.l1_fixmap_x, 0, 0xfee0_0000 | 0x173); // local APIC, PCD
    mem.set_entry(l.l1_fixmap_x, 1, 0xfed0_0000 | 0x163 | NX);
    mem.set_entry(l.l2_fixmap, 511, l.l1_fixmap | PTR);
    mem.set_entry(l.l1_fixmap, 0, 0xfec0_0000 | 0x173 | NX); // IOAPIC
                                                             // Directmap 0-4 GiB with 2 MiB leaves, first 2 MiB by 4 KiB leaves; 4-8 GiB by 1 GiB.
    for i in 0..4 {
        mem.set_entry(l.l3_directmap, i, (l.l2_directmap + i * 4 * KIB) | PTR);
        for j in 0..512 {
            let pa = (i * 512 + j) * 2 * MIB;
            mem.set_entry(l.l2_directmap + i * 4 * KIB, j, pa | HUGE | NX);
        }
    }
    mem.set_entry(l.l2_directmap, 0, l.l1_directmap | PTR);
    for k in 0..512 {
        mem.set_entry(l.l1_directmap, k, (k * 4 * KIB) | PTR | NX);
    }
    for g in 4..8 {
        mem.set_entry(
            l.l3_directmap,
            g,
            (g * GIB) | HUGE | NX | if g == 5 { PAT_HUGE } else { 0 },
        );
    }
    l
}
