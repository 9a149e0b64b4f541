//! A hypervisor's own boot tables, written by its own code (not reloc-sim's builders): the
//! image at `KERNEL_VIRT` by 2 MiB leaves of one L2 table (the image map), a directmap of
//! 1 GiB leaves at `DIRECTMAP_VIRT`, every table inside the image. Generic over reloc-core's
//! `PhysMemory`, so the same code writes reloc-sim's memory or a `DirectMap` buffer.

use reloc_core::{PagingMode, PhysAddr, PhysMemory, PhysRange, RelocationRequest};

/// Where the image runs (L4 slot 511, L3 slot 510; under LA57 also L5 slot 511).
pub const KERNEL_VIRT: u64 = 0xffff_ffff_8000_0000;
/// Where physical 0 is mapped (L4 slot 273).
pub const DIRECTMAP_VIRT: u64 = 0xffff_8880_0000_0000;
/// Physical memory the directmap covers from 0.
pub const DIRECTMAP_SIZE: u64 = 8 << 30;
/// MAXPHYADDR the tables are written for.
pub const MAX_PHYS_BITS: u8 = 46;

const PRESENT_RW: u64 = 0x3;
const HUGE: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// What the table writer made.
pub struct BootTables {
    /// The top-level table (CR3).
    pub top: PhysAddr,
    /// The L2 table holding the image's 2 MiB leaves.
    pub image_map: [PhysAddr; 1],
    /// The next free table page in the image.
    pub next_free: u64,
}

impl BootTables {
    /// The relocation request that moves `image` to `new_base`.
    pub fn request(
        &self,
        paging: PagingMode,
        image: PhysRange,
        new_base: u64,
    ) -> RelocationRequest<'_> {
        RelocationRequest {
            paging,
            top_table: self.top,
            image,
            new_base: PhysAddr::new(new_base),
            image_maps: &self.image_map,
            max_phys_bits: MAX_PHYS_BITS,
            encryption_mask: 0,
        }
    }
}

/// A bump allocator over the image's pages from offset 4 KiB (page 0 holds the entry code).
struct Alloc(u64);

impl Alloc {
    fn table<M: PhysMemory + ?Sized>(&mut self, mem: &mut M) -> u64 {
        let table = self.0;
        self.0 += 0x1000;
        for i in 0..512 {
            mem.write_u64(table + i * 8, 0);
        }
        table
    }
}

/// The entry for `virt` at `level` under `top`, creating the tables above it.
fn entry_slot<M: PhysMemory + ?Sized>(
    mem: &mut M,
    alloc: &mut Alloc,
    top: u64,
    levels: u32,
    virt: u64,
    level: u32,
) -> u64 {
    let mut table = top;
    for l in (level + 1..=levels).rev() {
        let at = table + ((virt >> (12 + 9 * (l - 1))) & 511) * 8;
        let e = mem.read_u64(at);
        table = if e & 1 != 0 {
            e & ADDR
        } else {
            let new = alloc.table(mem);
            mem.write_u64(at, new | PRESENT_RW);
            new
        };
    }
    table + ((virt >> (12 + 9 * (level - 1))) & 511) * 8
}

/// Writes the tables for `image` into `mem` (which must hold the image) and data into
/// every other image page, so the copy is visible.
pub fn write_boot_tables<M: PhysMemory + ?Sized>(
    mem: &mut M,
    paging: PagingMode,
    image: PhysRange,
) -> BootTables {
    let levels = if paging == PagingMode::FiveLevel {
        5
    } else {
        4
    };
    let mut alloc = Alloc(image.start + 0x1000);
    let top = alloc.table(mem);
    let mut image_map = 0;
    for offset in (0..image.len()).step_by(2 << 20) {
        let slot = entry_slot(mem, &mut alloc, top, levels, KERNEL_VIRT + offset, 2);
        image_map = slot & ADDR;
        mem.write_u64(slot, (image.start + offset) | PRESENT_RW | HUGE | GLOBAL);
    }
    for gib in (0..DIRECTMAP_SIZE).step_by(1 << 30) {
        let slot = entry_slot(mem, &mut alloc, top, levels, DIRECTMAP_VIRT + gib, 3);
        mem.write_u64(slot, gib | PRESENT_RW | HUGE | NX);
    }
    // Data: the first qword of every page after the tables' area names its page.
    let data_start = image.start + 0x10_0000;
    for page in (data_start..image.end).step_by(0x1000) {
        mem.write_u64(page, page ^ 0xda7a_0000_0000_0000);
    }
    BootTables {
        top: PhysAddr::new(top),
        image_map: [PhysAddr::new(image_map)],
        next_free: alloc.0,
    }
}
