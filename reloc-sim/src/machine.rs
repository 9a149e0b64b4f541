//! The simulated CPU: CR3, CR4 (PGE, LA57), a TLB that keeps global translations across CR3
//! loads, virtual accesses through the TLB, and the critical region of a relocation.
//!
//! # TLB
//! A translation is cached on first use, keyed by its page (4 KiB, 2 MiB or 1 GiB). A CR3
//! load drops non-global entries only; any change of CR4.PGE drops every entry; `invlpg`
//! drops the entries covering one address. Entries are global only when the leaf has G set
//! and CR4.PGE is on when it is filled. This is what QEMU's TCG does not model (it flushes
//! global entries on every CR3 load), so a missing PGE toggle shows here and not there.
//!
//! # Critical region
//! [`Machine::apply`] copies and rebases (reloc-core's `Plan::apply`) and opens the critical
//! region; [`Machine::switch`] closes it, mirroring reloc-core's asm block: optional stack
//! re-copy through the directmap alias, CR4.PGE clear, CR3 load, CR4 restore. In between,
//! every virtual write that lands in the old image is recorded as *lost*. After the switch a
//! virtual read that lands in the new copy, at the alias of a lost write, and returns
//! something else is a [`StaleRead`]: the stack-spill hazard.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use reloc_core::switch::SwitchParams;
use reloc_core::{ApplyReport, PhysRange, Plan};

use crate::mem::{PhysFault, SparseMemory};
use crate::paging::{walk, Perms, WalkConfig, WalkFault};

/// CR4.PGE: global pages enabled.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57: five-level paging.
pub const CR4_LA57: u64 = 1 << 12;

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbEntry {
    /// Virtual start of the page.
    pub page_virt: u64,
    /// Physical start of the page.
    pub frame: u64,
    /// Page size.
    pub size: u64,
    /// Effective permissions.
    pub perms: Perms,
    /// Survives CR3 loads.
    pub global: bool,
}

/// A translation lookaside buffer with global entries.
#[derive(Clone, Debug, Default)]
pub struct Tlb {
    entries: BTreeMap<(u64, u64), TlbEntry>,
    /// The last two lookups: their 4 KiB page and the entry found. A result depends only
    /// on that page, and code touches a page or two many times in a row (the stack re-copy
    /// reads one page and writes another, qword by qword). Cleared whenever entries change.
    recent: Cell<[Option<(u64, TlbEntry)>; 2]>,
}

const PAGE_SIZES: [u64; 3] = [1 << 12, 1 << 21, 1 << 30];

impl Tlb {
    /// The entry covering `virt`, if cached (the smallest page first).
    pub fn lookup(&self, virt: u64) -> Option<TlbEntry> {
        let page = virt & !0xfff;
        let recent = self.recent.get();
        if let Some((_, e)) = recent.iter().flatten().find(|(p, _)| *p == page) {
            return Some(*e);
        }
        let found = PAGE_SIZES
            .iter()
            .find_map(|&size| self.entries.get(&(virt & !(size - 1), size)).copied());
        if let Some(e) = found {
            self.recent.set([Some((page, e)), recent[0]]);
        }
        found
    }

    fn insert(&mut self, entry: TlbEntry) {
        self.recent.set([None; 2]);
        self.entries.insert((entry.page_virt, entry.size), entry);
    }

    /// Every cached entry.
    pub fn entries(&self) -> impl Iterator<Item = &TlbEntry> {
        self.entries.values()
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn flush(&mut self, keep: impl Fn(&TlbEntry) -> bool) -> usize {
        self.recent.set([None; 2]);
        let before = self.entries.len();
        self.entries.retain(|_, e| keep(e));
        before - self.entries.len()
    }
}

/// Why a virtual access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessFault {
    /// The walk faulted.
    Walk(WalkFault),
    /// A write to a page that is not writable.
    WriteProtected {
        /// The virtual address.
        virt: u64,
    },
    /// A qword access at an address that is not 8-byte aligned.
    Misaligned {
        /// The virtual address.
        virt: u64,
    },
    /// The translation points outside RAM.
    Phys {
        /// The virtual address.
        virt: u64,
        /// What memory reported.
        fault: PhysFault,
    },
}

impl fmt::Display for AccessFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessFault::Walk(w) => w.fmt(f),
            AccessFault::WriteProtected { virt } => {
                write!(f, "write to read-only virtual address {virt:#x}")
            }
            AccessFault::Misaligned { virt } => {
                write!(f, "virtual address {virt:#x} is not 8-byte aligned")
            }
            AccessFault::Phys { virt, fault } => write!(f, "access to {virt:#x}: {fault}"),
        }
    }
}

impl std::error::Error for AccessFault {}

/// A write made through the old mapping between copy and switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LostWrite {
    /// Virtual address written.
    pub virt: u64,
    /// Physical address in the old image that received it.
    pub phys: u64,
    /// The value written.
    pub value: u64,
}

/// A read after the switch that returned data older than a write made through the old
/// alias during the critical region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaleRead {
    /// Virtual address read.
    pub virt: u64,
    /// Physical address in the new copy.
    pub phys: u64,
    /// What was written through the old alias.
    pub written: u64,
    /// What the read returned.
    pub read: u64,
}

impl fmt::Display for StaleRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read of {:#x} (physical {:#x}) returned {:#x}, but {:#x} was written there through the old mapping before the switch",
            self.virt, self.phys, self.read, self.written
        )
    }
}

/// How the switch runs: reloc-core's sequence has both steps; broken variants drop one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwitchOptions {
    /// Re-copy `[rsp, stack_top)` to the new copy through the directmap just before CR3.
    pub recopy_stack: bool,
    /// Clear CR4.PGE around the CR3 load.
    pub toggle_pge: bool,
}

impl SwitchOptions {
    /// reloc-core's sequence.
    pub const CORE: SwitchOptions = SwitchOptions {
        recopy_stack: true,
        toggle_pge: true,
    };
}

/// What the switch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SwitchReport {
    /// TLB entries cached when the switch reached its CR4/CR3 writes.
    pub tlb_entries_before: usize,
    /// Bytes of stack re-copied.
    pub stack_bytes_recopied: u64,
    /// TLB entries dropped by the CR4.PGE toggle (both CR4 writes).
    pub tlb_flushed_by_pge: usize,
    /// TLB entries dropped by the CR3 load.
    pub tlb_flushed_by_cr3: usize,
    /// TLB entries still cached after the switch.
    pub tlb_entries_after: usize,
}

impl SwitchReport {
    /// All TLB entries dropped.
    pub fn tlb_flushed(&self) -> usize {
        self.tlb_flushed_by_pge + self.tlb_flushed_by_cr3
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Normal,
    /// Between copy and switch.
    Critical {
        old: PhysRange,
        delta: u64,
    },
    /// After the switch of a relocation.
    Relocated {
        old: PhysRange,
        delta: u64,
    },
}

/// The simulated machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Physical memory.
    pub mem: SparseMemory,
    cr3: u64,
    cr4: u64,
    max_phys_bits: u8,
    tlb: Tlb,
    /// The stack pointer, for the stack re-copy.
    pub rsp: u64,
    phase: Phase,
    lost: BTreeMap<u64, LostWrite>,
    stale_reads: Vec<StaleRead>,
}

impl Machine {
    /// A machine with `mem`, paging on with `cr3` and `cr4`. A CPU reports at most 52
    /// physical-address bits: a larger `max_phys_bits` (a scenario testing reloc-core's
    /// rejection of it) is clamped for the machine's own walks.
    pub fn new(mem: SparseMemory, cr3: u64, cr4: u64, max_phys_bits: u8) -> Self {
        Self {
            mem,
            cr3,
            cr4,
            max_phys_bits: max_phys_bits.min(52),
            tlb: Tlb::default(),
            rsp: 0,
            phase: Phase::Normal,
            lost: BTreeMap::new(),
            stale_reads: Vec::new(),
        }
    }

    /// CR3.
    pub fn cr3(&self) -> u64 {
        self.cr3
    }

    /// CR4.
    pub fn cr4(&self) -> u64 {
        self.cr4
    }

    /// MAXPHYADDR in bits.
    pub fn max_phys_bits(&self) -> u8 {
        self.max_phys_bits
    }

    /// The walk configuration of the current CR3/CR4.
    pub fn walk_config(&self) -> WalkConfig {
        WalkConfig {
            cr3: self.cr3,
            la57: self.cr4 & CR4_LA57 != 0,
            max_phys_bits: self.max_phys_bits,
        }
    }

    /// The TLB.
    pub fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    /// `mov cr3, value`: drops non-global TLB entries; returns how many.
    pub fn load_cr3(&mut self, value: u64) -> usize {
        self.cr3 = value;
        self.tlb.flush(|e| e.global)
    }

    /// `mov cr4, value`: a change of PGE drops every TLB entry; returns how many.
    pub fn write_cr4(&mut self, value: u64) -> usize {
        let changed = (self.cr4 ^ value) & CR4_PGE != 0;
        self.cr4 = value;
        if changed {
            self.tlb.flush(|_| false)
        } else {
            0
        }
    }

    /// `invlpg virt`: drops the entries covering `virt`, global ones included.
    pub fn invlpg(&mut self, virt: u64) -> usize {
        self.tlb
            .flush(|e| !(e.page_virt <= virt && virt - e.page_virt < e.size))
    }

    /// Translates through the TLB, walking and filling on a miss.
    pub fn translate(&mut self, virt: u64, write: bool) -> Result<u64, AccessFault> {
        let entry = match self.tlb.lookup(virt) {
            Some(e) => e,
            None => {
                let t = walk(&self.mem, &self.walk_config(), virt).map_err(AccessFault::Walk)?;
                let e = TlbEntry {
                    page_virt: t.page_virt,
                    frame: t.frame,
                    size: t.page_size,
                    perms: t.perms,
                    global: t.global && self.cr4 & CR4_PGE != 0,
                };
                self.tlb.insert(e);
                e
            }
        };
        if write && !entry.perms.writable {
            return Err(AccessFault::WriteProtected { virt });
        }
        Ok(entry.frame + (virt - entry.page_virt))
    }

    /// Reads the qword at virtual `virt`.
    pub fn read_virt(&mut self, virt: u64) -> Result<u64, AccessFault> {
        if !virt.is_multiple_of(8) {
            return Err(AccessFault::Misaligned { virt });
        }
        let phys = self.translate(virt, false)?;
        let value = self
            .mem
            .read(phys)
            .map_err(|fault| AccessFault::Phys { virt, fault })?;
        self.read_check(virt, phys, value);
        Ok(value)
    }

    /// Records a stale read: `value` read at `phys` (from `virt`) after the switch where a
    /// write through the old mapping left something else.
    fn read_check(&mut self, virt: u64, phys: u64, value: u64) {
        if let Phase::Relocated { old, delta } = self.phase {
            let old_phys = phys.wrapping_sub(delta);
            if old.contains(old_phys) {
                if let Some(lost) = self.lost.get(&old_phys) {
                    if lost.value != value {
                        self.stale_reads.push(StaleRead {
                            virt,
                            phys,
                            written: lost.value,
                            read: value,
                        });
                    }
                }
            }
        }
    }

    /// Writes the qword at virtual `virt`.
    pub fn write_virt(&mut self, virt: u64, value: u64) -> Result<(), AccessFault> {
        if !virt.is_multiple_of(8) {
            return Err(AccessFault::Misaligned { virt });
        }
        let phys = self.translate(virt, true)?;
        self.write_phys_as(virt, phys, value)
    }

    /// Writes `value` at `phys`, the translation of `virt`, and records what the write means
    /// for the critical region.
    fn write_phys_as(&mut self, virt: u64, phys: u64, value: u64) -> Result<(), AccessFault> {
        self.mem
            .write(phys, value)
            .map_err(|fault| AccessFault::Phys { virt, fault })?;
        match self.phase {
            Phase::Critical { old, .. } if old.contains(phys) => {
                self.lost.insert(phys, LostWrite { virt, phys, value });
            }
            Phase::Relocated { old, delta } => {
                // A fresh write supersedes whatever was lost at this place.
                self.lost.remove(&phys.wrapping_sub(delta));
                let _ = old;
            }
            _ => {}
        }
        Ok(())
    }

    /// Copies the qwords of `[from, to)` to `offset` bytes above, through the TLB, as a
    /// loop of [`Machine::read_virt`] and [`Machine::write_virt`] would (same faults, same
    /// critical-region records), translating once per 4 KiB page on each side.
    fn copy_virt(&mut self, from: u64, to: u64, offset: u64) -> Result<(), AccessFault> {
        if !from.is_multiple_of(8) {
            return Err(AccessFault::Misaligned { virt: from });
        }
        let mut at = from;
        while at < to {
            let chunk_end = to.min((at | 0xfff).saturating_add(1));
            let dst = at.wrapping_add(offset);
            // A destination page boundary inside the chunk: translate again there.
            let dst_room = 0x1000 - (dst & 0xfff);
            let chunk_end = chunk_end.min(at.saturating_add(dst_room));
            let src_phys = self.translate(at, false)?;
            if self.copy_chunk_fast(src_phys, dst, (chunk_end - at) / 8)? {
                at = chunk_end;
                continue;
            }
            // Translated after the first read, in the order the qword loop faults.
            let mut dst_phys = None;
            let mut k = 0;
            while at + k < chunk_end {
                let value = self
                    .mem
                    .read(src_phys + k)
                    .map_err(|fault| AccessFault::Phys {
                        virt: at + k,
                        fault,
                    })?;
                self.read_check(at + k, src_phys + k, value);
                let d = match dst_phys {
                    Some(d) => d,
                    None => *dst_phys.insert(self.translate(dst, true)?),
                };
                self.write_phys_as(dst.wrapping_add(k), d + k, value)?;
                k += 8;
            }
            at = chunk_end;
        }
        Ok(())
    }

    /// Copies `count` qwords from `src_phys` to the translation of `dst` at once, when that
    /// is what the qword loop would do without a fault or a critical-region record: the
    /// source RAM, the destination writable RAM in one page outside the old image, and no
    /// switch made yet (reads record nothing before it). `Ok(false)`: nothing done, go qword
    /// by qword.
    fn copy_chunk_fast(
        &mut self,
        src_phys: u64,
        dst: u64,
        count: u64,
    ) -> Result<bool, AccessFault> {
        let in_old = |phys: u64, old: &PhysRange| {
            old.overlaps(&PhysRange::new(phys, phys.saturating_add(count * 8)))
        };
        let old = match self.phase {
            Phase::Normal => None,
            Phase::Critical { old, .. } => Some(old),
            Phase::Relocated { .. } => return Ok(false),
        };
        let mut words = [0u64; 512];
        let Some(words) = words.get_mut(..count as usize) else {
            return Ok(false);
        };
        if self.mem.read_words(src_phys, words).is_none() {
            return Ok(false);
        }
        let dst_phys = self.translate(dst, true)?;
        if old.is_some_and(|old| in_old(dst_phys, &old)) {
            return Ok(false);
        }
        Ok(self.mem.write_words(dst_phys, words).is_some())
    }

    /// Runs reloc-core's `Plan::apply` on this machine's memory (copy and rebase) and opens
    /// the critical region.
    pub fn apply<const N: usize>(&mut self, plan: &Plan<N>) -> ApplyReport {
        let report = plan.apply(&mut self.mem);
        self.begin_critical(plan.old_image(), plan.new_image().start);
        report
    }

    /// Opens the critical region of a move from `old` to `new_base` (for relocators other
    /// than reloc-core's apply).
    pub fn begin_critical(&mut self, old: PhysRange, new_base: u64) {
        self.lost.clear();
        self.stale_reads.clear();
        self.phase = Phase::Critical {
            old,
            delta: new_base.wrapping_sub(old.start),
        };
    }

    /// The switch, as reloc-core's `relocate` and its asm block do it (or a broken variant,
    /// per `options`): the rsp check, the stack re-copy when there is a validated stack, the
    /// PGE toggle around the load of `plan.relocated_cr3`.
    pub fn switch<const N: usize>(
        &mut self,
        plan: &Plan<N>,
        stack: Option<&SwitchParams<'_, N>>,
        options: SwitchOptions,
    ) -> Result<SwitchReport, SwitchFault> {
        let mut report = SwitchReport::default();
        if let (true, Some(params)) = (options.recopy_stack, stack) {
            params.check_rsp(self.rsp).map_err(SwitchFault::Refused)?;
            let top = params.stack_top().as_u64();
            self.copy_virt(self.rsp, top, params.stack_copy_offset())
                .map_err(SwitchFault::Access)?;
            report.stack_bytes_recopied = top.saturating_sub(self.rsp);
        }
        let cr4 = self.cr4;
        report.tlb_entries_before = self.tlb.len();
        if options.toggle_pge {
            report.tlb_flushed_by_pge += self.write_cr4(cr4 & !CR4_PGE);
        }
        let cr3 = plan.relocated_cr3(self.cr3);
        report.tlb_flushed_by_cr3 = self.load_cr3(cr3);
        if let Phase::Critical { old, delta } = self.phase {
            self.phase = Phase::Relocated { old, delta };
        }
        report.tlb_flushed_by_pge += self.write_cr4(cr4);
        report.tlb_entries_after = self.tlb.len();
        Ok(report)
    }

    /// Writes made through the old mapping during the critical region and not re-copied or
    /// overwritten since.
    pub fn lost_writes(&self) -> impl Iterator<Item = &LostWrite> {
        self.lost.values()
    }

    /// Stale reads seen since the switch.
    pub fn stale_reads(&self) -> &[StaleRead] {
        &self.stale_reads
    }
}

/// Why the simulated switch stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchFault {
    /// reloc-core's `relocate` would have refused (rsp outside the stack).
    Refused(reloc_core::RelocateError),
    /// The simulated code faulted.
    Access(AccessFault),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Top at 0x1000 -> L3 0x2000 -> L2 0x3000: VA 0 maps 2 MiB at `frame` with G set.
    fn machine(frame: u64) -> Machine {
        let mut mem = SparseMemory::new(&[PhysRange::new(0, 0x100_0000)]);
        mem.write(0x1000, 0x2003).unwrap();
        mem.write(0x2000, 0x3003).unwrap();
        mem.write(0x3000, frame | 0x183).unwrap();
        Machine::new(mem, 0x1000, CR4_PGE, 40)
    }

    #[test]
    fn global_entries_survive_cr3_loads_until_pge_toggles() {
        let mut m = machine(0x20_0000);
        assert_eq!(m.translate(0x10, false), Ok(0x20_0010));
        // Remap the page and load CR3: the global entry still answers.
        m.mem.write(0x3000, 0x40_0000 | 0x183).unwrap();
        assert_eq!(m.load_cr3(0x1000), 0);
        assert_eq!(m.translate(0x10, false), Ok(0x20_0010));
        // invlpg drops it.
        assert_eq!(m.invlpg(0x1234), 1);
        assert_eq!(m.translate(0x10, false), Ok(0x40_0010));
        // A PGE toggle drops everything.
        m.mem.write(0x3000, 0x60_0000 | 0x183).unwrap();
        assert_eq!(m.write_cr4(0), 1);
        assert_eq!(m.translate(0x10, false), Ok(0x60_0010));
        // With PGE off, entries are not global: a CR3 load drops them.
        m.mem.write(0x3000, 0x80_0000 | 0x183).unwrap();
        assert_eq!(m.load_cr3(0x1000), 1);
        assert_eq!(m.translate(0x10, false), Ok(0x80_0010));
    }

    #[test]
    fn write_protection_and_faults() {
        let mut m = machine(0x20_0000);
        m.mem.write(0x3008, 0x40_0000 | 0x81).unwrap();
        assert_eq!(
            m.write_virt(0x20_0000, 1),
            Err(AccessFault::WriteProtected { virt: 0x20_0000 })
        );
        assert!(matches!(
            m.read_virt(0x40_0000),
            Err(AccessFault::Walk(WalkFault::Page(_)))
        ));
        assert_eq!(m.read_virt(4), Err(AccessFault::Misaligned { virt: 4 }));
    }
}
