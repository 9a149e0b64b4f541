//! The main command's machine: a Xen-like image on a QEMU `pc` machine, or a random layout
//! from a seed.

use reloc_core::select::E820_RAM;
use reloc_core::{MemoryRegion, PagingMode, PhysRange};

use crate::layout::{random_layout, DirectmapLeaf, LayoutError, Sharing, XenLayout, GIB, MIB};
use crate::mem::SparseMemory;
use crate::run::{RunInput, RunOptions, Target};

/// What `reloc-sim demo` simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoConfig {
    /// Image bytes (4 KiB multiple).
    pub image_size: u64,
    /// Physical image base (2 MiB-aligned).
    pub image_base: u64,
    /// Guest memory, as QEMU's `-m`.
    pub memory: u64,
    /// Paging depth.
    pub paging: PagingMode,
    /// Map the directmap with 1 GiB leaves.
    pub gib_directmap: bool,
    /// Use a random layout derived from this seed instead (size options are ignored).
    pub seed: Option<u64>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            image_size: 8 * MIB,
            image_base: 2 * MIB,
            memory: 4 * GIB,
            paging: PagingMode::FourLevel,
            gib_directmap: false,
            seed: None,
        }
    }
}

fn region(start: u64, end: u64, kind: u32) -> MemoryRegion {
    MemoryRegion {
        start,
        len: end - start,
        kind,
    }
}

/// Tables a demo plan holds: a 256 GiB directmap with 2 MiB leaves takes 256 L2 tables, plus
/// the image's and the identity map's; so every accepted `--memory` plans with either leaf
/// size.
pub const DEMO_PLAN_CAPACITY: usize = 512;

/// The largest simulated machine the demo builds (memory is sparse, but the directmap's
/// tables cover all of it, and a layout's directmap is at most 512 GiB).
pub const MAX_DEMO_MEMORY: u64 = 256 * GIB;

/// The E820 map QEMU 7.2's `pc` machine reports for `-m memory`: 640 KiB of low RAM, RAM from
/// 1 MiB to the low-memory top minus 128 KiB (firmware tables), and the rest above 4 GiB.
/// Low memory is all of it below 3.5 GiB, else 3 GiB (measured for 128M, 3G, 6G).
pub fn qemu_pc_memmap(memory: u64) -> Vec<MemoryRegion> {
    let low = if memory >= 0xe000_0000 {
        3 * GIB
    } else {
        memory
    };
    let mut map = vec![
        region(0, 0x9_fc00, E820_RAM),
        region(0x9_fc00, 0xa_0000, 2),
        region(0xf_0000, 0x10_0000, 2),
        region(0x10_0000, low - 0x2_0000, E820_RAM),
        region(low - 0x2_0000, low, 2),
        region(0xfffc_0000, 0x1_0000_0000, 2),
    ];
    if memory > low {
        map.push(region(4 * GIB, 4 * GIB + (memory - low), E820_RAM));
    }
    map
}

/// Builds the machine and request for `config`; also says whether the layout shares tables
/// (where the naive walk is expected to differ).
pub fn demo_input(config: &DemoConfig) -> Result<(RunInput, bool), LayoutError> {
    if let Some(seed) = config.seed {
        let rl = random_layout(seed, Sharing::Allowed);
        let (machine, layout) = rl.build()?;
        let shares = rl.spec.recursive_slot.is_some()
            || rl.spec.shared_l3.is_some()
            || rl.spec.shared_image_map.is_some();
        let memmap = rl
            .ram
            .iter()
            .map(|r| region(r.start, r.end, E820_RAM))
            .collect();
        let request = layout.request(0);
        return Ok((
            RunInput {
                machine,
                memmap,
                request,
                target: Target::Auto,
                virt: Some(layout.virt),
            },
            shares,
        ));
    }
    if config.memory < 16 * MIB || config.memory > MAX_DEMO_MEMORY {
        return Err(LayoutError::Invalid(
            "memory must be between 16 MiB and 256 GiB",
        ));
    }
    let memmap = qemu_pc_memmap(config.memory);
    let ram: Vec<PhysRange> = memmap
        .iter()
        .filter(|r| r.is_ram())
        .map(|r| r.range())
        .collect();
    let ram_top = ram.iter().map(|r| r.end).max().unwrap_or(0);
    let mut spec = XenLayout::spec(config.image_base, config.image_size, 0);
    spec.paging = config.paging;
    if config.gib_directmap {
        spec.directmap_leaf = DirectmapLeaf::Size1G;
        spec.directmap_extent = ram_top.next_multiple_of(GIB);
    } else {
        spec.directmap_extent = ram_top.next_multiple_of(GIB);
    }
    let mut mem = SparseMemory::new(&ram);
    let layout = spec.build(&mut mem)?;
    let request = layout.request(0);
    Ok((
        RunInput {
            machine: layout.machine(mem),
            memmap,
            request,
            target: Target::Auto,
            virt: Some(layout.virt),
        },
        false,
    ))
}

/// The options the demo runs with: reloc-core, its switch, the naive comparison where it is
/// claimed to hold, and the PGE control.
pub fn demo_options(shares_tables: bool) -> RunOptions {
    RunOptions {
        compare_naive: !shares_tables,
        pge_control: true,
        ..RunOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::run_with_capacity;
    use reloc_core::{select_target, TargetRequest};

    /// Issue 11: `--memory 54G` (and every size above about 48 GiB up to the 256 GiB the
    /// option accepts) failed with TooManyTables: a 2 MiB-leaf directmap needs an L2 table
    /// per GiB, more than a 64-table plan holds.
    #[test]
    fn every_accepted_memory_size_relocates_with_either_directmap_leaf() {
        for (memory, gib_directmap) in [
            (54 * GIB, false),
            (MAX_DEMO_MEMORY, false),
            (MAX_DEMO_MEMORY, true),
        ] {
            let config = DemoConfig {
                memory,
                gib_directmap,
                ..DemoConfig::default()
            };
            let (input, shares) = demo_input(&config).unwrap();
            let report = run_with_capacity::<DEMO_PLAN_CAPACITY>(input, demo_options(shares))
                .unwrap_or_else(|e| panic!("{memory:#x}, 1 GiB leaves {gib_directmap}: {e}"));
            assert!(report.passed(), "{:?}", report.first_violation());
            assert!(report.apply.tables_rebased.total() > 0);
        }
    }

    #[test]
    fn qemu_maps_match_measurements() {
        let ram = |m: u64| -> Vec<(u64, u64)> {
            qemu_pc_memmap(m)
                .iter()
                .filter(|r| r.is_ram())
                .map(|r| (r.start, r.start + r.len))
                .collect()
        };
        assert_eq!(ram(128 * MIB), vec![(0, 0x9fc00), (0x10_0000, 0x7fe_0000)]);
        assert_eq!(ram(3 * GIB), vec![(0, 0x9fc00), (0x10_0000, 0xbffe_0000)]);
        assert_eq!(
            ram(6 * GIB),
            vec![
                (0, 0x9fc00),
                (0x10_0000, 0xbffe_0000),
                (0x1_0000_0000, 0x1_c000_0000)
            ]
        );
        let avoid = [PhysRange::new(2 * MIB, 10 * MIB)];
        let pick = select_target(
            &qemu_pc_memmap(4 * GIB),
            &TargetRequest::new(8 * MIB, &avoid),
        );
        assert_eq!(pick.map(|p| p.as_u64()), Ok(0xbf60_0000));
    }
}
