//! Relocators the simulator can run: reloc-core itself, and deliberately broken ones that the
//! property checks must catch (the tests assert they do). Each broken one reproduces a real
//! bug class.

use std::fmt;

use reloc_core::{
    ApplyReport, PagingMode, PhysAddr, PhysRange, Plan, PlanError, RelocationRequest,
};

use crate::machine::Machine;

/// A relocation request that owns its image-map list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// 4 or 5 levels.
    pub paging: PagingMode,
    /// Top-level table.
    pub top_table: PhysAddr,
    /// The image.
    pub image: PhysRange,
    /// Destination.
    pub new_base: PhysAddr,
    /// Image-map L2 tables.
    pub image_maps: Vec<PhysAddr>,
    /// MAXPHYADDR.
    pub max_phys_bits: u8,
    /// Memory-encryption bits (the C-bit); zero without encryption.
    pub encryption_mask: u64,
}

impl Request {
    /// reloc-core's view of it.
    pub fn as_core(&self) -> RelocationRequest<'_> {
        RelocationRequest {
            paging: self.paging,
            top_table: self.top_table,
            image: self.image,
            new_base: self.new_base,
            image_maps: &self.image_maps,
            max_phys_bits: self.max_phys_bits,
            encryption_mask: self.encryption_mask,
        }
    }

    /// The image maps as plain addresses.
    pub fn image_map_addrs(&self) -> Vec<u64> {
        self.image_maps.iter().map(|m| m.as_u64()).collect()
    }

    /// `new_base - image.start`, two's complement.
    pub fn delta(&self) -> u64 {
        self.new_base.as_u64().wrapping_sub(self.image.start)
    }
}

/// Which relocator copies and rebases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relocator {
    /// reloc-core: `Plan::new` then `Plan::apply`.
    Core,
    /// Xen's `move_xen()` walk: add delta to an entry at every visit. A table reached twice
    /// (shared, recursive) gets delta twice.
    NaiveXen,
    /// Rebases with `(entry & 0x000f_ffff_ffff_f000) + delta | (entry & 0xfff)`: drops NX
    /// and software bits 52-62.
    ClobberFlags,
    /// Rebases pointers but forgets the image-map 2 MiB leaves.
    ForgetImageLeaves,
    /// Copies before validating: a rejected request has already written the destination.
    EagerCopy,
    /// Copies the 2 MiB-rounded footprint instead of the image: writes past the new image.
    CopyFootprint,
    /// Rebases the old tables in place and then copies: the old image changes.
    RebaseInPlace,
}

impl Relocator {
    /// Every broken relocator.
    pub const BROKEN: [Relocator; 6] = [
        Relocator::NaiveXen,
        Relocator::ClobberFlags,
        Relocator::ForgetImageLeaves,
        Relocator::EagerCopy,
        Relocator::CopyFootprint,
        Relocator::RebaseInPlace,
    ];

    /// Copies and rebases on `machine` and opens its critical region, or rejects `request`.
    pub fn relocate(
        self,
        machine: &mut Machine,
        request: &Request,
    ) -> Result<ApplyReport, PlanError> {
        self.relocate_with::<64>(machine, request)
    }

    /// As [`Relocator::relocate`], with plans of `N` tables.
    pub fn relocate_with<const N: usize>(
        self,
        machine: &mut Machine,
        request: &Request,
    ) -> Result<ApplyReport, PlanError> {
        let core = request.as_core();
        if self == Relocator::EagerCopy {
            let _ = machine.mem.copy_range(
                request.image.start,
                request.new_base.as_u64(),
                request.image.len(),
            );
        }
        let plan: Plan<N> = Plan::new_with_capacity(&machine.mem, &core)?;
        let delta = request.delta();
        let report = match self {
            Relocator::Core | Relocator::EagerCopy => plan.apply(&mut machine.mem),
            Relocator::NaiveXen => {
                copy(machine, request);
                naive_xen(machine, request);
                copied_report(request)
            }
            Relocator::ClobberFlags => {
                copy(machine, request);
                rebase_planned(machine, &plan, delta, true, |e, d| {
                    ((e & 0x000f_ffff_ffff_f000).wrapping_add(d)) | (e & 0xfff)
                });
                copied_report(request)
            }
            Relocator::ForgetImageLeaves => {
                copy(machine, request);
                rebase_planned(machine, &plan, delta, false, add_to_address(request));
                copied_report(request)
            }
            Relocator::CopyFootprint => {
                let report = plan.apply(&mut machine.mem);
                let tail = request.image.len().next_multiple_of(2 << 20) - request.image.len();
                let _ = machine.mem.copy_range(
                    request.image.end,
                    request.new_base.as_u64() + request.image.len(),
                    tail,
                );
                report
            }
            Relocator::RebaseInPlace => {
                // Rebase the old tables (as if the copy were already made), then copy.
                rebase_tables_at(machine, &plan, 0, delta, true, add_to_address(request));
                copy(machine, request);
                copied_report(request)
            }
        };
        machine.begin_critical(request.image, request.new_base.as_u64());
        Ok(report)
    }
}

impl fmt::Display for Relocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relocator::Core => "reloc-core",
            Relocator::NaiveXen => "naive add-per-visit walk",
            Relocator::ClobberFlags => "rebase that clobbers flag bits",
            Relocator::ForgetImageLeaves => "rebase that forgets image leaves",
            Relocator::EagerCopy => "copy before validating",
            Relocator::CopyFootprint => "copy of the 2 MiB footprint",
            Relocator::RebaseInPlace => "rebase in place, then copy",
        })
    }
}

fn copy(machine: &mut Machine, request: &Request) {
    let _ = machine.mem.copy_range(
        request.image.start,
        request.new_base.as_u64(),
        request.image.len(),
    );
}

fn copied_report(request: &Request) -> ApplyReport {
    ApplyReport {
        bytes_copied: request.image.len(),
        ..ApplyReport::default()
    }
}

/// Adds delta to the address field (bits 12..MAXPHYADDR; 21.. for huge leaves), correctly.
fn add_to_address(request: &Request) -> impl Fn(u64, u64) -> u64 {
    let field = crate::paging::bits(12, u32::from(request.max_phys_bits));
    move |e, d| (e & !field) | ((e & field).wrapping_add(d) & field)
}

const ADDR: u64 = 0x000f_ffff_ffff_f000;
const PS: u64 = 1 << 7;

/// Rebases, in the copy, what reloc-core's plan says moves, with `rebase` doing the
/// arithmetic; `leaves` says whether image-map leaves move too.
fn rebase_planned<const N: usize>(
    machine: &mut Machine,
    plan: &Plan<N>,
    delta: u64,
    leaves: bool,
    rebase: impl Fn(u64, u64) -> u64,
) {
    rebase_tables_at(machine, plan, delta, delta, leaves, rebase);
}

/// Rebases the planned tables located at `addr + offset`.
fn rebase_tables_at<const N: usize>(
    machine: &mut Machine,
    plan: &Plan<N>,
    offset: u64,
    delta: u64,
    leaves: bool,
    rebase: impl Fn(u64, u64) -> u64,
) {
    for t in plan.tables().filter(|t| t.rebased) {
        let base = t.addr.as_u64().wrapping_add(offset);
        for i in 0..512 {
            let at = base + i * 8;
            let Ok(e) = machine.mem.read(at) else {
                continue;
            };
            if e & 1 == 0 {
                continue;
            }
            let moves = if e & PS == 0 {
                true
            } else {
                leaves && t.image_map
            };
            if moves {
                let _ = machine.mem.write(at, rebase(e, delta));
            }
        }
    }
}

/// Xen's walk over the copied tables: top level, every present entry; L3 and L2 (and L4
/// under an L5), present non-leaf entries; never L1; then the image maps' leaves. Each visit
/// adds delta again.
fn naive_xen(machine: &mut Machine, request: &Request) {
    let delta = request.delta();
    let top_level = match request.paging {
        PagingMode::FourLevel => 4,
        PagingMode::FiveLevel => 5,
    };
    visit(
        machine,
        request.top_table.as_u64().wrapping_add(delta),
        top_level,
        top_level,
        delta,
    );
    for &map in &request.image_maps {
        let table = map.as_u64().wrapping_add(delta);
        for i in 0..512 {
            let at = table + i * 8;
            let Ok(e) = machine.mem.read(at) else {
                continue;
            };
            if e & 1 != 0 && e & PS != 0 {
                let _ = machine.mem.write(at, e.wrapping_add(delta));
            }
        }
    }
}

fn visit(machine: &mut Machine, table: u64, level: u8, top: u8, delta: u64) {
    for i in 0..512 {
        let at = table.wrapping_add(i * 8);
        let Ok(e) = machine.mem.read(at) else {
            continue;
        };
        if e & 1 == 0 || (level != top && e & PS != 0) {
            continue;
        }
        let moved = e.wrapping_add(delta);
        let _ = machine.mem.write(at, moved);
        if level > 2 {
            visit(machine, moved & ADDR, level - 1, top, delta);
        }
    }
}
