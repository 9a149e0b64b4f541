//! Boot layouts: Xen-like page tables written into simulated memory, and random layouts for
//! property tests (shared tables, recursive slots, L1 tables under the image map, extra
//! leaves elsewhere, noisy flag bits).
//!
//! A layout is described by a [`LayoutSpec`] and written by [`LayoutSpec::build`], which maps
//! leaves one by one from the top-level table, allocating tables inside the image as it goes
//! (Xen's premise: every table lives in the image). [`XenLayout`] gives Xen's parameters;
//! [`random_layout`] derives a whole machine (RAM, layout, target) from a seed, and
//! [`arb_layout`] is the proptest strategy over it.

use std::fmt;

#[cfg(feature = "proptest")]
use proptest::prelude::*;
use reloc_core::switch::VirtualLayout;
use reloc_core::{DirectMapLayout, PagingMode, PhysAddr, PhysRange, VirtAddr};

use crate::machine::{Machine, CR4_LA57, CR4_PGE};
use crate::mem::{PhysFault, SparseMemory, PAGE_SIZE};
use crate::paging::canonical;

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// Xen's `XEN_VIRT_START`.
pub const XEN_VIRT_START: u64 = 0xffff_82d0_4000_0000;
/// Xen's `DIRECTMAP_VIRT_START`.
pub const DIRECTMAP_VIRT_START: u64 = 0xffff_8300_0000_0000;

/// Xen's `__PAGE_HYPERVISOR` for pointers: P, RW, A, D.
pub const PTR_FLAGS: u64 = 0x63;
/// Xen's image leaves: P, RW, A, D, PS, G (`0x1e3`).
pub const IMAGE_LEAF_FLAGS: u64 = 0x1e3;
/// A huge leaf: P, RW, A, D, PS.
pub const HUGE_FLAGS: u64 = 0xe3;
/// A 4 KiB leaf: P, RW, A, D.
pub const SMALL_FLAGS: u64 = 0x63;
/// XD.
pub const NX: u64 = 1 << 63;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;

/// Size of the directmap's leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirectmapLeaf {
    /// 2 MiB leaves in L2 tables.
    Size2M,
    /// 1 GiB leaves in the directmap's L3 table.
    Size1G,
}

impl DirectmapLeaf {
    fn size(self) -> u64 {
        match self {
            DirectmapLeaf::Size2M => 2 * MIB,
            DirectmapLeaf::Size1G => GIB,
        }
    }
}

/// Everything that shapes a boot layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutSpec {
    /// 4 or 5 levels.
    pub paging: PagingMode,
    /// Physical start of the image, 2 MiB-aligned.
    pub image_base: u64,
    /// Bytes, 4 KiB-aligned.
    pub image_size: u64,
    /// Virtual address of the image start, 2 MiB-aligned.
    pub virt_base: u64,
    /// Virtual address of physical 0 in the directmap, 1 GiB-aligned.
    pub directmap_base: u64,
    /// Physical bytes the directmap maps from 0 (a multiple of the leaf size, at most
    /// 512 GiB).
    pub directmap_extent: u64,
    /// Leaf size of the directmap.
    pub directmap_leaf: DirectmapLeaf,
    /// With 2 MiB leaves, map physical 0-2 MiB with 4 KiB leaves (Xen's `l1_directmap`).
    pub directmap_low_l1: bool,
    /// Xen's fixmap L1 tables: one under the image map (slot 511, `l1_fixmap_x`) and one
    /// under `l2_fixmap` (L3 slot 319), mapping MMIO with 4 KiB leaves.
    pub fixmap_l1: bool,
    /// Set G on the image leaves (Xen does).
    pub global_image_leaves: bool,
    /// Identity-map the image footprint with 2 MiB leaves (Xen's `l3_bootmap`; must not move).
    pub bootmap: bool,
    /// Where the tables start in the image, page-aligned.
    pub tables_offset: u64,
    /// Bytes of stack at the image's end.
    pub stack_size: u64,
    /// MAXPHYADDR.
    pub max_phys_bits: u8,
    /// Point a top-level slot at the top-level table itself.
    pub recursive_slot: Option<u16>,
    /// A second top-level slot points at the directmap's L3 table.
    pub shared_l3: Option<u16>,
    /// A second L3 slot (in the image's L3) points at the image map.
    pub shared_image_map: Option<u16>,
    /// Map these image pages (page indices) again with 4 KiB leaves at `EXTRA_VIRT`: an L1
    /// table outside the image map whose leaves must not move.
    pub extra_image_pages: Vec<u64>,
    /// Map physical 0 with a 1 GiB leaf at `EXTRA_VIRT + 1 GiB`.
    pub extra_1g_leaf: bool,
    /// Seed for noise in non-address bits (NX, PAT, PCD, PWT, software bits); 0 for Xen's
    /// exact flags.
    pub flag_noise: u64,
    /// Fill one image page in `data_every` with a pattern (1 = every page).
    pub data_every: u64,
}

/// Virtual address of the extra mappings of random layouts (lower half).
pub const EXTRA_VIRT: u64 = 0x0000_4000_0000_0000;

/// Xen's layout: an image at `image_base` of `image_size` bytes, directmap of
/// `directmap_extent` bytes with 2 MiB leaves.
pub struct XenLayout;

impl XenLayout {
    /// The spec of Xen's boot layout.
    pub fn spec(image_base: u64, image_size: u64, directmap_extent: u64) -> LayoutSpec {
        LayoutSpec {
            paging: PagingMode::FourLevel,
            image_base,
            image_size,
            virt_base: XEN_VIRT_START,
            directmap_base: DIRECTMAP_VIRT_START,
            directmap_extent,
            directmap_leaf: DirectmapLeaf::Size2M,
            directmap_low_l1: true,
            fixmap_l1: true,
            global_image_leaves: true,
            bootmap: true,
            tables_offset: (image_size / 2) & !(PAGE_SIZE - 1),
            stack_size: 32 * KIB,
            max_phys_bits: 46,
            recursive_slot: None,
            shared_l3: None,
            shared_image_map: None,
            extra_image_pages: Vec::new(),
            extra_1g_leaf: false,
            flag_noise: 0,
            data_every: 1,
        }
    }
}

/// The virtual addresses the switch needs: where the image runs, where the directmap maps
/// physical memory, and the boot stack, as scenario files and the fuzzer give them.
/// [`SwitchAddresses::core`] (reloc-core's `VirtualLayout`: image and stack) and
/// [`SwitchAddresses::directmap`] are reloc-core's typed views, which reloc-core checks.
/// (Named apart from reloc-core's `VirtualLayout`, which holds only the image and stack.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchAddresses {
    /// Virtual image start.
    pub image_start: u64,
    /// Virtual address of physical 0 in the directmap.
    pub directmap_base: u64,
    /// Physical bytes the directmap covers from 0.
    pub directmap_size: u64,
    /// Lowest byte of the boot stack.
    pub stack_bottom: u64,
    /// One past the stack's highest byte.
    pub stack_top: u64,
}

impl SwitchAddresses {
    /// reloc-core's view of the image and the stack.
    pub fn core(&self) -> VirtualLayout {
        VirtualLayout {
            image_start: VirtAddr::new(self.image_start),
            stack_bottom: VirtAddr::new(self.stack_bottom),
            stack_top: VirtAddr::new(self.stack_top),
        }
    }

    /// reloc-core's view of the directmap: physical `[0, directmap_size)` at
    /// `directmap_base`.
    pub fn directmap(&self) -> DirectMapLayout {
        DirectMapLayout {
            virt_start: VirtAddr::new(self.directmap_base),
            window: PhysRange::new(0, self.directmap_size),
        }
    }
}

/// A layout written into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootLayout {
    /// The image, `[image_base, image_base + image_size)`.
    pub image: PhysRange,
    /// The top-level table.
    pub top_table: u64,
    /// CR3 to load.
    pub cr3: u64,
    /// CR4 to load (PGE, and LA57 for 5 levels).
    pub cr4: u64,
    /// The L2 tables holding the image's 2 MiB leaves.
    pub image_maps: Vec<u64>,
    /// Virtual layout for the switch.
    pub virt: SwitchAddresses,
    /// A stack pointer inside the stack, below live frames.
    pub rsp: u64,
    /// Every table the builder allocated.
    pub tables: Vec<u64>,
    /// Paging mode.
    pub paging: PagingMode,
    /// MAXPHYADDR.
    pub max_phys_bits: u8,
}

impl BootLayout {
    /// The relocation request for this layout, moving the image to `new_base`.
    pub fn request(&self, new_base: u64) -> crate::relocators::Request {
        crate::relocators::Request {
            paging: self.paging,
            top_table: PhysAddr::new_truncate(self.top_table),
            image: self.image,
            new_base: PhysAddr::new_truncate(new_base),
            image_maps: self
                .image_maps
                .iter()
                .map(|&m| PhysAddr::new_truncate(m))
                .collect(),
            max_phys_bits: self.max_phys_bits,
            encryption_mask: 0,
        }
    }
}

/// Why a layout could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The spec is inconsistent.
    Invalid(&'static str),
    /// More tables than fit between the table area and the stack.
    TablesDoNotFit {
        /// Tables needed so far.
        tables: usize,
    },
    /// Two mappings want the same entry.
    Conflict {
        /// The virtual address of the second mapping.
        virt: u64,
    },
    /// The layout touches memory that is not RAM.
    Memory(PhysFault),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Invalid(why) => write!(f, "invalid layout: {why}"),
            LayoutError::TablesDoNotFit { tables } => {
                write!(f, "{tables} page tables do not fit in the image")
            }
            LayoutError::Conflict { virt } => {
                write!(f, "two mappings collide at virtual address {virt:#x}")
            }
            LayoutError::Memory(fault) => write!(f, "layout outside RAM: {fault}"),
        }
    }
}

impl std::error::Error for LayoutError {}

impl From<PhysFault> for LayoutError {
    fn from(f: PhysFault) -> Self {
        LayoutError::Memory(f)
    }
}

/// splitmix64: a tiny deterministic generator for layout details.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The pattern the builder writes into image data pages: distinct per address.
pub fn data_pattern(pa: u64) -> u64 {
    pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_0000_0000_0001
}

struct Builder<'m> {
    mem: &'m mut SparseMemory,
    la57: bool,
    top: u64,
    next: u64,
    limit: u64,
    tables: Vec<u64>,
    noise: Option<SplitMix>,
    /// The last table [`Builder::slot`] reached: (level, `virt` above that level's index,
    /// table). The builder only fills empty entries, so a path once walked stays; maps come
    /// in runs through one table.
    last_slot: Option<(u8, u64, u64)>,
}

fn shift(level: u8) -> u32 {
    12 + 9 * u32::from(level - 1)
}

const ADDR: u64 = 0x000f_ffff_ffff_f000;

impl Builder<'_> {
    fn levels(&self) -> u8 {
        if self.la57 {
            5
        } else {
            4
        }
    }

    fn alloc(&mut self) -> Result<u64, LayoutError> {
        if self.next + PAGE_SIZE > self.limit {
            return Err(LayoutError::TablesDoNotFit {
                tables: self.tables.len() + 1,
            });
        }
        let t = self.next;
        self.next += PAGE_SIZE;
        // Clear whatever the data fill put there.
        self.mem.fill_page(t, |_| 0)?;
        self.tables.push(t);
        Ok(t)
    }

    /// Noise for pointer entries: bits that neither address nor restrict (A/D already set).
    fn pointer_flags(&mut self) -> u64 {
        let Some(rng) = self.noise.as_mut() else {
            return PTR_FLAGS;
        };
        let r = rng.next_u64();
        let mut f = PTR_FLAGS;
        f |= r & (0b111 << 9); // software bits 9-11
        f |= (r >> 8) & (0x7f << 52); // software bits 52-58
        f |= r & (0b11 << 3); // PWT, PCD
        if r & (1 << 20) != 0 {
            f |= 1 << 2; // U/S
        }
        f
    }

    /// Noise for leaf entries; `huge` for 2 MiB / 1 GiB leaves.
    fn leaf_noise(&mut self, flags: u64, huge: bool) -> u64 {
        let Some(rng) = self.noise.as_mut() else {
            return flags;
        };
        let r = rng.next_u64();
        let mut f = flags;
        f |= r & (0b111 << 9);
        f |= (r >> 8) & (0x7f << 52);
        f |= r & (0b11 << 3);
        if r & (1 << 20) != 0 {
            f |= NX;
        }
        if r & (1 << 21) != 0 {
            f |= if huge { 1 << 12 } else { 1 << 7 }; // PAT
        }
        if r & (1 << 22) != 0 {
            f ^= G;
        }
        f
    }

    /// The address of the entry for `virt` in the table at `level`, creating intermediate
    /// tables above it.
    fn slot(&mut self, virt: u64, level: u8) -> Result<u64, LayoutError> {
        let index = ((virt >> shift(level)) & 511) * 8;
        let above = virt >> shift(level) >> 9;
        if let Some((l, a, table)) = self.last_slot {
            if (l, a) == (level, above) {
                return Ok(table + index);
            }
        }
        let mut table = self.top;
        for l in ((level + 1)..=self.levels()).rev() {
            let at = table + ((virt >> shift(l)) & 511) * 8;
            let e = self.mem.read(at)?;
            if e & 1 == 0 {
                let t = self.alloc()?;
                let flags = self.pointer_flags();
                self.mem.write(at, t | flags)?;
                table = t;
            } else if l <= 3 && e & PS != 0 {
                return Err(LayoutError::Conflict { virt });
            } else {
                table = e & ADDR;
            }
        }
        self.last_slot = Some((level, above, table));
        Ok(table + index)
    }

    /// Maps `size` bytes at `virt` to `phys` with one leaf; returns the leaf's table.
    fn map(&mut self, virt: u64, phys: u64, size: u64, flags: u64) -> Result<u64, LayoutError> {
        let level = match size {
            s if s == PAGE_SIZE => 1,
            s if s == 2 * MIB => 2,
            s if s == GIB => 3,
            _ => return Err(LayoutError::Invalid("leaf size")),
        };
        let at = self.slot(virt, level)?;
        if self.mem.read(at)? & 1 != 0 {
            return Err(LayoutError::Conflict { virt });
        }
        let huge = level > 1;
        let flags = self.leaf_noise(flags | if huge { PS } else { 0 }, huge);
        self.mem.write(at, phys | flags)?;
        Ok(at & !(PAGE_SIZE - 1))
    }

    /// Points the entry for `dst` at `level` to whatever the entry for `src` holds.
    fn alias(&mut self, src: u64, dst: u64, level: u8) -> Result<(), LayoutError> {
        let from = self.slot(src, level)?;
        let to = self.slot(dst, level)?;
        let e = self.mem.read(from)?;
        if e & 1 == 0 || self.mem.read(to)? & 1 != 0 {
            return Err(LayoutError::Conflict { virt: dst });
        }
        self.mem.write(to, e)?;
        Ok(())
    }
}

/// The largest image a layout builds (one L2 image map holds 1 GiB of 2 MiB leaves).
pub const MAX_IMAGE_SIZE: u64 = GIB;

impl LayoutSpec {
    /// The image footprint rounded up to 2 MiB.
    pub fn footprint(&self) -> u64 {
        self.image_size.next_multiple_of(2 * MIB)
    }

    fn la57(&self) -> bool {
        self.paging == PagingMode::FiveLevel
    }

    /// Writes the layout (tables, image data, stack) into `mem`.
    pub fn build(&self, mem: &mut SparseMemory) -> Result<BootLayout, LayoutError> {
        let la57 = self.la57();
        if !self.image_base.is_multiple_of(2 * MIB)
            || self.image_size == 0
            || !self.image_size.is_multiple_of(PAGE_SIZE)
        {
            return Err(LayoutError::Invalid(
                "image must start 2 MiB-aligned and have a non-zero 4 KiB-multiple size",
            ));
        }
        if self.image_size > MAX_IMAGE_SIZE
            || self
                .image_base
                .checked_add(self.footprint())
                .is_none_or(|end| end > 1 << 52)
        {
            return Err(LayoutError::Invalid(
                "image must be at most 1 GiB and end below 2^52",
            ));
        }
        if !self.virt_base.is_multiple_of(2 * MIB)
            || canonical(self.virt_base, la57) != self.virt_base
        {
            return Err(LayoutError::Invalid(
                "image virtual base must be canonical and 2 MiB-aligned",
            ));
        }
        if !self.directmap_base.is_multiple_of(GIB)
            || canonical(self.directmap_base, la57) != self.directmap_base
            || self.directmap_extent > 512 * GIB
            || !self
                .directmap_extent
                .is_multiple_of(self.directmap_leaf.size())
        {
            return Err(LayoutError::Invalid(
                "directmap must be canonical, 1 GiB-aligned and at most 512 GiB",
            ));
        }
        if !self.tables_offset.is_multiple_of(PAGE_SIZE)
            || self.stack_size < 4 * KIB
            || !self.stack_size.is_multiple_of(PAGE_SIZE)
            || self.tables_offset + self.stack_size >= self.image_size
        {
            return Err(LayoutError::Invalid(
                "tables and stack must fit in the image, page-aligned",
            ));
        }
        let image = PhysRange::new(self.image_base, self.image_base + self.image_size);
        mem.check(image.start, image.len())?;
        let stack_start = image.end - self.stack_size;

        // Image data first; tables and stack overwrite their pages.
        for (i, page) in (image.start..image.end)
            .step_by(PAGE_SIZE as usize)
            .enumerate()
        {
            if (i as u64).is_multiple_of(self.data_every.max(1)) {
                mem.fill_page(page, data_pattern)?;
            }
        }
        for page in (stack_start..image.end).step_by(PAGE_SIZE as usize) {
            mem.fill_page(page, |pa| data_pattern(pa) ^ 0x57ac_0000_0000_0000)?;
        }

        let mut b = Builder {
            mem,
            la57,
            top: 0,
            next: image.start + self.tables_offset,
            limit: stack_start,
            tables: Vec::new(),
            noise: (self.flag_noise != 0).then(|| SplitMix::new(self.flag_noise)),
            last_slot: None,
        };
        b.top = b.alloc()?;

        let leaves = self.footprint() / (2 * MIB);
        // The image map(s).
        let mut image_maps = Vec::new();
        for i in 0..leaves {
            let flags = if self.global_image_leaves {
                IMAGE_LEAF_FLAGS
            } else {
                IMAGE_LEAF_FLAGS & !G
            };
            let va = canonical(self.virt_base.wrapping_add(i * 2 * MIB), la57);
            let t = b.map(va, self.image_base + i * 2 * MIB, 2 * MIB, flags)?;
            if !image_maps.contains(&t) {
                image_maps.push(t);
            }
        }
        if self.fixmap_l1 {
            // l2_xenmap[511] -> l1_fixmap_x, if the image leaves leave that slot free.
            let fix_x = (self.virt_base & !(GIB - 1)) | (511 * 2 * MIB);
            if b.slot(fix_x, 2).and_then(|at| Ok(b.mem.read(at)?))? & 1 == 0 {
                b.map(fix_x, 0xfee0_0000, PAGE_SIZE, 0x173)?;
                b.map(fix_x + PAGE_SIZE, 0xfed0_0000, PAGE_SIZE, 0x163 | NX)?;
            }
            // l3_xenmap[319] -> l2_fixmap, [511] -> l1_fixmap.
            let fix = canonical(
                (self.virt_base & !((512 * GIB) - 1)) | (319 * GIB) | (511 * 2 * MIB),
                la57,
            );
            if (self.virt_base >> 30) & 511 != 319 {
                b.map(fix, 0xfec0_0000, PAGE_SIZE, 0x173 | NX)?;
            }
        }
        if self.bootmap {
            for i in 0..leaves {
                let pa = self.image_base + i * 2 * MIB;
                b.map(pa, pa, 2 * MIB, HUGE_FLAGS)?;
            }
        }
        // Directmap.
        let leaf = self.directmap_leaf.size();
        let mut pa = 0;
        while pa < self.directmap_extent {
            let va = self.directmap_base + pa;
            if self.directmap_leaf == DirectmapLeaf::Size2M && self.directmap_low_l1 && pa == 0 {
                for k in 0..512 {
                    b.map(
                        va + k * PAGE_SIZE,
                        k * PAGE_SIZE,
                        PAGE_SIZE,
                        SMALL_FLAGS | NX,
                    )?;
                }
            } else {
                b.map(va, pa, leaf, HUGE_FLAGS | NX)?;
            }
            pa += leaf;
        }
        // Random extras.
        for &page in &self.extra_image_pages {
            let pa = self.image_base + (page * PAGE_SIZE) % self.image_size;
            b.map(EXTRA_VIRT + page * PAGE_SIZE, pa, PAGE_SIZE, SMALL_FLAGS)?;
        }
        if self.extra_1g_leaf {
            b.map(EXTRA_VIRT + GIB, 0, GIB, HUGE_FLAGS)?;
        }
        let top_level = if la57 { 5 } else { 4 };
        if let Some(slot) = self.shared_l3 {
            let dst = canonical(
                (self.directmap_base & !(511 << 39)) | (u64::from(slot) << 39),
                la57,
            );
            b.alias(self.directmap_base, dst, 4)?;
        }
        if let Some(slot) = self.shared_image_map {
            let dst = (self.virt_base & !(511 << 30) & !(GIB - 1)) | (u64::from(slot) << 30);
            b.alias(self.virt_base, canonical(dst, la57), 3)?;
        }
        if let Some(slot) = self.recursive_slot {
            let at = b.top + u64::from(slot) * 8;
            if b.mem.read(at)? & 1 != 0 {
                return Err(LayoutError::Conflict {
                    virt: canonical(u64::from(slot) << shift(top_level), la57),
                });
            }
            let flags = b.pointer_flags();
            b.mem.write(at, b.top | flags)?;
        }

        let stack_top = self.virt_base + self.image_size;
        Ok(BootLayout {
            image,
            top_table: b.top,
            cr3: b.top,
            cr4: CR4_PGE | if la57 { CR4_LA57 } else { 0 },
            image_maps,
            virt: SwitchAddresses {
                image_start: self.virt_base,
                directmap_base: self.directmap_base,
                directmap_size: 1u64
                    .checked_shl(self.max_phys_bits.into())
                    .unwrap_or(u64::MAX),
                stack_bottom: stack_top - self.stack_size,
                stack_top,
            },
            rsp: stack_top - (self.stack_size / 2).max(256).min(self.stack_size),
            tables: b.tables,
            paging: self.paging,
            max_phys_bits: self.max_phys_bits,
        })
    }
}

impl BootLayout {
    /// A machine running on this layout.
    pub fn machine(&self, mem: SparseMemory) -> Machine {
        let mut m = Machine::new(mem, self.cr3, self.cr4, self.max_phys_bits);
        m.rsp = self.rsp;
        m
    }
}

/// A whole random machine: RAM, layout and a valid target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomLayout {
    /// The seed it was derived from.
    pub seed: u64,
    /// RAM ranges.
    pub ram: Vec<PhysRange>,
    /// The layout.
    pub spec: LayoutSpec,
    /// A 2 MiB-aligned destination in RAM, clear of the image footprint.
    pub target: u64,
    /// Garbage density divisor: garbage goes into one destination page in `2 × n` and one
    /// page in `n` between the image end and its footprint end (1: the densest; the fuzzer,
    /// which adds its own, uses more so that a machine has fewer pages to clone and compare).
    pub garbage_every: u64,
}

/// What sharing a random layout may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// Every table has one parent (Xen's layouts).
    None,
    /// Shared tables and recursive slots with some probability.
    Allowed,
    /// At least one shared table or recursive slot.
    Required,
}

/// Derives a random machine from `seed`. Images are 2-4 MiB, RAM 64-256 MiB.
pub fn random_layout(seed: u64, sharing: Sharing) -> RandomLayout {
    let mut r = SplitMix::new(seed);
    let paging = if r.one_in(4) {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    };
    let la57 = paging == PagingMode::FiveLevel;
    let ram_top = (64 + 2 * r.below(97)) * MIB;
    let mut ram = vec![
        PhysRange::new(0, 0x9_fc00),
        PhysRange::new(0x10_0000, ram_top),
    ];
    if r.one_in(3) {
        ram.push(PhysRange::new(4 * GIB, 4 * GIB + 64 * MIB));
    }
    let image_size = (512 + r.below(513)) * PAGE_SIZE;
    let footprint = image_size.next_multiple_of(2 * MIB);
    let slots = (ram_top - footprint) / (2 * MIB);
    let image_base = (1 + r.below(slots / 2)) * 2 * MIB;
    // A target anywhere in low RAM clear of the footprint.
    let target = loop {
        let t = (1 + r.below(slots - 1)) * 2 * MIB;
        if !PhysRange::new(t, t + footprint)
            .overlaps(&PhysRange::new(image_base, image_base + footprint))
        {
            break t;
        }
    };
    // Distinct upper-half top-level slots for the image, the directmap and the alias.
    let upper = |r: &mut SplitMix| 257 + r.below(254);
    let l5 = |r: &mut SplitMix| if la57 { (256 + r.below(256)) << 48 } else { 0 };
    let image_slot = upper(&mut r);
    let mut dm_slot = upper(&mut r);
    while dm_slot == image_slot {
        dm_slot = upper(&mut r);
    }
    let l3_index = r.below(512);
    let leaves = footprint / (2 * MIB);
    let l2_index = r.below(511 - leaves);
    let image_l5 = l5(&mut r);
    let virt_base = canonical(
        image_l5 | (image_slot << 39) | (l3_index << 30) | (l2_index << 21),
        la57,
    );
    let dm_l5 = if la57 { 511 << 48 } else { 0 };
    let directmap_base = canonical(dm_l5 | (dm_slot << 39), la57);
    let directmap_leaf = if r.one_in(2) {
        DirectmapLeaf::Size1G
    } else {
        DirectmapLeaf::Size2M
    };
    let directmap_extent = match directmap_leaf {
        DirectmapLeaf::Size1G => GIB * (1 + r.below(5)),
        DirectmapLeaf::Size2M => ram_top.next_multiple_of(2 * MIB),
    };
    let stack_size = (1 + r.below(4)) * 4 * KIB;
    let pages = image_size / PAGE_SIZE;
    let tables_offset = (1 + r.below(pages - stack_size / PAGE_SIZE - 48)) * PAGE_SIZE;

    let want_sharing = match sharing {
        Sharing::None => false,
        Sharing::Allowed => r.one_in(2),
        Sharing::Required => true,
    };
    let (mut recursive_slot, mut shared_l3, mut shared_image_map) = (None, None, None);
    if want_sharing {
        let kind = r.below(4);
        if kind == 0 || kind == 3 {
            recursive_slot = Some(1 + r.below(127) as u16);
        }
        if kind == 1 || kind == 3 {
            let mut s = upper(&mut r);
            while s == image_slot || s == dm_slot {
                s = upper(&mut r);
            }
            shared_l3 = Some(s as u16);
        }
        if kind == 2 || kind == 3 {
            let mut s = r.below(512);
            while s == l3_index || s == 319 {
                s = r.below(512);
            }
            shared_image_map = Some(s as u16);
        }
    }
    let extra_image_pages = if r.one_in(2) {
        (0..1 + r.below(6))
            .map(|_| r.below(pages))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let mut spec = LayoutSpec {
        paging,
        image_base,
        image_size,
        virt_base,
        directmap_base,
        directmap_extent,
        directmap_leaf,
        directmap_low_l1: r.one_in(2),
        fixmap_l1: !r.one_in(4),
        global_image_leaves: !r.one_in(4),
        bootmap: !r.one_in(4),
        tables_offset,
        stack_size,
        max_phys_bits: 36 + r.below(17) as u8,
        recursive_slot,
        shared_l3,
        shared_image_map,
        extra_image_pages,
        extra_1g_leaf: r.one_in(2),
        flag_noise: if r.one_in(4) { 0 } else { r.next_u64() | 1 },
        data_every: 1 + r.below(8),
    };
    if sharing == Sharing::Required {
        // Make the sharing visible to an add-per-visit walk: the shared table must hold
        // pointers.
        if spec.shared_l3.is_some() {
            spec.directmap_leaf = DirectmapLeaf::Size2M;
            spec.directmap_extent = ram_top.next_multiple_of(2 * MIB);
        }
        if spec.shared_image_map.is_some() {
            spec.fixmap_l1 = true;
        }
    }
    RandomLayout {
        seed,
        ram,
        spec,
        target,
        garbage_every: 1,
    }
}

/// Scribbles distinct garbage over `range` (RAM parts only), one qword in `every` pages, so
/// that copies must overwrite it and changes outside the destination are visible.
pub fn scribble(mem: &mut SparseMemory, range: PhysRange, seed: u64, every: u64) {
    let mut page = range.start & !(PAGE_SIZE - 1);
    let mut r = SplitMix::new(seed);
    let mut writes = Vec::new();
    while page < range.end {
        if r.one_in(every.max(1)) {
            let at = page + r.below(512) * 8;
            if range.contains(at) && mem.is_ram(at) {
                writes.push((at, r.next_u64() | 1));
            }
        }
        page += PAGE_SIZE;
    }
    // Each write as `write` alone would make it: the ones a fault would refuse are dropped.
    writes.retain(|&(at, _)| mem.check(at, 8).is_ok());
    let _ = mem.write_batch(&writes);
}

impl RandomLayout {
    /// Builds the machine: memory, tables, and garbage at the target and around the image.
    pub fn build(&self) -> Result<(Machine, BootLayout), LayoutError> {
        let mut mem = SparseMemory::new(&self.ram);
        let fp = self.spec.footprint();
        scribble(
            &mut mem,
            PhysRange::new(self.target, self.target + fp),
            self.seed ^ 1,
            2 * self.garbage_every.max(1),
        );
        // Bytes between the image end and its 2 MiB footprint end must not be copied.
        scribble(
            &mut mem,
            PhysRange::new(
                self.spec.image_base + self.spec.image_size,
                self.spec.image_base + fp,
            ),
            self.seed ^ 2,
            self.garbage_every.max(1),
        );
        let layout = self.spec.build(&mut mem)?;
        Ok((layout.machine(mem), layout))
    }
}

/// Proptest strategy: random machines (see [`random_layout`]).
#[cfg(feature = "proptest")]
pub fn arb_layout(sharing: Sharing) -> impl Strategy<Value = RandomLayout> {
    any::<u64>().prop_map(move |seed| random_layout(seed, sharing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::{enumerate, walk, WalkConfig, DEFAULT_LEAF_LIMIT};

    #[test]
    fn xen_layout_maps_what_xen_maps() {
        let mut mem = SparseMemory::new(&[PhysRange::new(0, 4 * GIB)]);
        let spec = XenLayout::spec(2 * MIB, 8 * MIB, 4 * GIB);
        let l = spec.build(&mut mem).unwrap();
        let cfg = WalkConfig {
            cr3: l.cr3,
            la57: false,
            max_phys_bits: 46,
        };
        let t = walk(&mem, &cfg, XEN_VIRT_START + 0x12_3458).unwrap();
        assert_eq!(t.phys, 2 * MIB + 0x12_3458);
        assert!(t.global);
        let t = walk(&mem, &cfg, DIRECTMAP_VIRT_START + 0xbf60_0008).unwrap();
        assert_eq!(t.phys, 0xbf60_0008);
        assert!(t.perms.nx);
        assert_eq!(walk(&mem, &cfg, 3 * MIB).unwrap().phys, 3 * MIB);
        assert_eq!(l.image_maps.len(), 1);
        // top, l3 xen, l2 xen, l1 fixmap_x, l2 fixmap, l1 fixmap, l3 boot, l2 boot,
        // l3 directmap, 4 x l2 directmap, l1 directmap.
        assert_eq!(l.tables.len(), 14);
        let maps = enumerate(&mem, &cfg, DEFAULT_LEAF_LIMIT).unwrap();
        assert_eq!(maps.leaves.len(), 4 + 2 + 1 + 4 + 511 + 512 + 3 * 512);
        assert!(maps.faults.is_empty());
    }

    #[test]
    fn random_layouts_build() {
        for seed in 0..300 {
            for sharing in [Sharing::None, Sharing::Required] {
                let rl = random_layout(seed, sharing);
                let (m, l) = rl
                    .build()
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}: {rl:?}"));
                let cfg = m.walk_config();
                let t = walk(&m.mem, &cfg, l.virt.image_start).unwrap();
                assert_eq!(t.phys, l.image.start, "seed {seed}");
                enumerate(&m.mem, &cfg, DEFAULT_LEAF_LIMIT).unwrap();
            }
        }
    }
}
