//! Physical memory as the engine sees it, and the bare-metal directmap implementation.
//!
//! The engine never dereferences an address itself: it reads and writes through
//! [`PhysMemory`]. Planning asks [`PhysMemory::check_range`] about every range it will touch
//! before it reads; apply only touches ranges the plan checked, so the access methods can be
//! infallible.

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::paging::{VirtAddr, ENTRIES_PER_TABLE, TABLE_SIZE};

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// `[start, start + len)`, or `None` if that wraps past 2^64.
    pub const fn from_start_len(start: u64, len: u64) -> Option<Self> {
        match start.checked_add(len) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    /// Length in bytes (zero for an empty or inverted range).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True when `addr` lies in the range.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// True when `[start, start + len)` lies wholly in the range. An empty span never does.
    pub const fn contains_span(&self, start: u64, len: u64) -> bool {
        match start.checked_add(len) {
            Some(end) => len > 0 && self.start <= start && end <= self.end,
            None => false,
        }
    }

    /// True when the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// A physical range that memory cannot serve: the first inaccessible byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryFault {
    /// The first address that could not be accessed.
    pub addr: u64,
}

impl fmt::Display for MemoryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "physical address {:#x} is not accessible", self.addr)
    }
}

impl core::error::Error for MemoryFault {}

/// Where a directmap puts physical memory in the virtual address space: physical
/// `window.start + n` is virtual `virt_start + n`, for every `n` below `window.len()`.
///
/// [`DirectMap::layout`] gives the layout of a real directmap; a simulator describes its own.
/// The switch validates its parameters against a layout ([`crate::switch::SwitchParams`])
/// and refuses to run through a directmap with any other ([`crate::switch::relocate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirectMapLayout {
    /// Virtual address of `window.start`.
    pub virt_start: VirtAddr,
    /// The physical range the directmap covers.
    pub window: PhysRange,
}

impl DirectMapLayout {
    /// The virtual alias of physical `addr`, or `None` when `addr` is outside the window or
    /// its alias would wrap past 2^64.
    pub fn virt_of(&self, addr: u64) -> Option<u64> {
        if !self.window.contains(addr) {
            return None;
        }
        self.virt_start
            .as_u64()
            .checked_add(addr - self.window.start)
    }

    /// True when the whole of `range` (non-empty) is in the window and its alias does not
    /// wrap.
    pub fn covers(&self, range: PhysRange) -> bool {
        self.window.contains_span(range.start, range.len())
            && self.virt_of(range.start).is_some()
            && self
                .virt_start
                .as_u64()
                .checked_add(range.end - self.window.start)
                .is_some()
    }
}

/// Physical memory, addressed by physical address.
///
/// Contract between the engine and an implementation:
/// - the engine calls `read_u64`, `read_table`, `write_u64` and `copy` only inside ranges for
///   which `check_range` returned `Ok` during planning, and only at 8-byte-aligned addresses
///   (4 KiB-aligned for `read_table`);
/// - an implementation must stay memory-safe even if that contract is broken by other callers
///   (the methods are safe): out-of-range reads may return any value and out-of-range writes
///   may be dropped, but must not touch anything else.
pub trait PhysMemory {
    /// `Ok` when every byte of `[start, start + len)` can be read and written.
    fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault>;
    /// Reads the little-endian qword at `addr`.
    fn read_u64(&self, addr: u64) -> u64;
    /// Writes the little-endian qword at `addr`.
    fn write_u64(&mut self, addr: u64, value: u64);
    /// Copies `len` bytes from `src` to `dst`. The engine never passes overlapping ranges.
    fn copy(&mut self, src: u64, dst: u64, len: u64);

    /// The page table at `addr`, lent in place, when this memory can lend it: planning then
    /// reads each entry once from it, with no 4 KiB copy. The default, `None`, makes planning
    /// read a snapshot with [`PhysMemory::read_table`] (4 KiB more stack).
    ///
    /// Lend tables that something else may update while the borrow lasts (the CPU setting
    /// accessed and dirty bits in the tables it runs on) as [`LentTable::Live`]: planning reads
    /// those with relaxed atomic loads. [`LentTable::Stable`] is for memory nothing writes
    /// while the borrow lasts (the borrow of `self` keeps the engine's own writes out).
    fn table(&self, addr: u64) -> Option<LentTable<'_>> {
        let _ = addr;
        None
    }

    /// Reads the 512 qwords of the page table at `addr` into `table`: the snapshot planning
    /// decodes, each entry read once, when [`PhysMemory::table`] lends nothing. Called only
    /// then, from a function of its own that holds the 4 KiB snapshot, so that memory that
    /// lends its tables never pays that stack.
    ///
    /// Provided: reads qword by qword with [`PhysMemory::read_u64`].
    fn read_table(&self, addr: u64, table: &mut [u64; ENTRIES_PER_TABLE]) {
        for (offset, slot) in (0..TABLE_SIZE).step_by(8).zip(table.iter_mut()) {
            *slot = self.read_u64(addr.wrapping_add(offset));
        }
    }
}

/// A page table lent in place by [`PhysMemory::table`].
#[derive(Clone, Copy, Debug)]
pub enum LentTable<'a> {
    /// A table something else may update while it is lent: the page tables the CPU runs on,
    /// whose accessed and dirty bits it sets at any time. Read with relaxed atomic loads (as
    /// Linux reads live entries with `READ_ONCE`), so those updates are defined behaviour;
    /// no planning decision reads the accessed or dirty bit.
    Live(&'a [AtomicU64; ENTRIES_PER_TABLE]),
    /// A table nothing writes while it is lent (a simulator's own memory).
    Stable(&'a [u64; ENTRIES_PER_TABLE]),
}

impl LentTable<'_> {
    /// Entry `index` (0 for an index past the table).
    pub fn entry(&self, index: usize) -> u64 {
        match self {
            LentTable::Live(entries) => entries.get(index).map_or(0, |e| e.load(Ordering::Relaxed)),
            LentTable::Stable(entries) => entries.get(index).copied().unwrap_or(0),
        }
    }

    /// Reads entries `first..first + N` into `out`, each once (entries past the table read 0).
    pub fn read_entries<const N: usize>(&self, first: usize, out: &mut [u64; N]) {
        match self {
            LentTable::Live(entries) => match entries.get(first..first.saturating_add(N)) {
                // The whole span inside the table (planning's case): one load per entry.
                Some(entries) => {
                    for (slot, entry) in out.iter_mut().zip(entries) {
                        *slot = entry.load(Ordering::Relaxed);
                    }
                }
                None => {
                    let entries = entries.get(first..).unwrap_or(&[]);
                    out.fill(0);
                    for (slot, entry) in out.iter_mut().zip(entries) {
                        *slot = entry.load(Ordering::Relaxed);
                    }
                }
            },
            LentTable::Stable(entries) => match entries.get(first..first.saturating_add(N)) {
                Some(entries) => out.copy_from_slice(entries),
                None => {
                    let entries = entries.get(first..).unwrap_or(&[]);
                    out.fill(0);
                    for (slot, &entry) in out.iter_mut().zip(entries) {
                        *slot = entry;
                    }
                }
            },
        }
    }
}

/// Physical memory seen through a linear mapping: physical `window.start + n` is the byte at
/// `base + n`. On bare metal `base` is the directmap's virtual address of `window.start`
/// ([`DirectMap::new`]); on the host it is a buffer ([`DirectMap::from_slice`]).
#[derive(Debug)]
pub struct DirectMap<'a> {
    base: *mut u8,
    window: PhysRange,
    _memory: PhantomData<&'a mut [u64]>,
}

impl DirectMap<'static> {
    /// A directmap of `window`, whose first byte is at virtual address `base`.
    ///
    /// # Safety
    /// For as long as the returned value is used the caller guarantees that:
    /// - `base` is 8-byte aligned and `[base, base + window.len())` is mapped, readable and
    ///   writable, and valid for reads and writes as raw memory;
    /// - nothing else holds a Rust reference into that memory while the engine writes it
    ///   (the engine writes only the destination range and reads only the image);
    /// - nothing but the CPU writes the page tables in the window while the engine plans and
    ///   applies. The CPU's accessed and dirty bit updates are fine, at any time: planning
    ///   reads every qword with relaxed atomic loads ([`LentTable::Live`]) and no decision
    ///   reads those bits, and apply copies the image (tables included) with `rep movsb` in
    ///   an `asm!` block, whose reads are hardware reads outside Rust's data-race rules.
    pub unsafe fn new(base: *mut u8, window: PhysRange) -> Self {
        Self {
            base,
            window,
            _memory: PhantomData,
        }
    }
}

impl<'a> DirectMap<'a> {
    /// A directmap over `memory`, whose first byte is physical `phys_start`: how the engine
    /// runs on the host. The borrow keeps the buffer alive and unaliased.
    pub fn from_slice(memory: &'a mut [u64], phys_start: u64) -> Self {
        let len = u64::try_from(core::mem::size_of_val(memory)).unwrap_or(u64::MAX);
        Self {
            base: memory.as_mut_ptr().cast(),
            window: PhysRange::new(phys_start, phys_start.saturating_add(len)),
            _memory: PhantomData,
        }
    }

    /// The physical window this directmap covers.
    pub fn window(&self) -> PhysRange {
        self.window
    }

    /// Where this directmap sits in the virtual address space. On the host
    /// ([`DirectMap::from_slice`]) the "virtual address" is the buffer's address.
    pub fn layout(&self) -> DirectMapLayout {
        DirectMapLayout {
            virt_start: VirtAddr::new(self.base.addr() as u64),
            window: self.window,
        }
    }

    /// The pointer for `[addr, addr + len)`, if that span lies in the window.
    fn ptr(&self, addr: u64, len: u64) -> Option<*mut u8> {
        if !self.window.contains_span(addr, len) {
            return None;
        }
        let offset = usize::try_from(addr - self.window.start).ok()?;
        // wrapping_add keeps the provenance of `base` and cannot overflow: offset + len is
        // inside the mapped window by the constructor's contract.
        Some(self.base.wrapping_add(offset))
    }
}

impl PhysMemory for DirectMap<'_> {
    fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault> {
        if len == 0 || self.window.contains_span(start, len) {
            return Ok(());
        }
        let addr = if self.window.contains(start) {
            self.window.end
        } else {
            start
        };
        Err(MemoryFault { addr })
    }

    fn read_u64(&self, addr: u64) -> u64 {
        match self.ptr(addr, 8) {
            Some(p) if addr.is_multiple_of(8) => {
                let atomic = p.cast::<AtomicU64>();
                if atomic.is_aligned() {
                    // SAFETY: `ptr` checked that the 8 bytes lie in the window, which the
                    // constructor's caller guarantees is mapped and valid for reads and
                    // writes, and written by nothing but the engine (through `&mut self`,
                    // so not now) and the CPU's atomic accessed/dirty updates; `atomic` is
                    // aligned for `AtomicU64` (checked on the `AtomicU64` pointer itself, whose
                    // alignment may exceed `u64`'s on other targets).
                    let entry = unsafe { &*atomic };
                    // Relaxed atomic: the qword may be a live page-table entry the CPU updates.
                    entry.load(Ordering::Relaxed)
                } else {
                    // A window starting off an 8-byte boundary (`from_slice` accepts any
                    // `phys_start`) puts aligned physical qwords at unaligned host addresses.
                    // SAFETY: the 8 bytes lie in the valid window (checked by `ptr`);
                    // `read_unaligned` has no alignment requirement.
                    unsafe { p.cast::<u64>().read_unaligned() }
                }
            }
            _ => 0,
        }
    }

    fn write_u64(&mut self, addr: u64, value: u64) {
        if let Some(p) = self.ptr(addr, 8) {
            if addr.is_multiple_of(8) {
                let p = p.cast::<u64>();
                if p.cast::<AtomicU64>().is_aligned() {
                    // SAFETY: as in `read_u64`; `&mut self` means no other engine access is
                    // live.
                    unsafe { p.write_volatile(value) }
                } else {
                    // SAFETY: as in `read_u64` (unaligned window start).
                    unsafe { p.write_unaligned(value) }
                }
            }
        }
    }

    /// One bounds check, then the table in place as [`LentTable::Live`]: planning reads each
    /// entry once with a relaxed atomic load, no copy. `None` (so a snapshot of `read_u64`s)
    /// for a window that starts off an 8-byte boundary.
    fn table(&self, addr: u64) -> Option<LentTable<'_>> {
        let p = self
            .ptr(addr, TABLE_SIZE)?
            .cast::<[AtomicU64; ENTRIES_PER_TABLE]>();
        if !addr.is_multiple_of(8) || !p.is_aligned() {
            return None;
        }
        // SAFETY: `ptr` checked that the 4 KiB lie in the window, which the constructor's
        // caller guarantees is mapped and valid for reads and writes, and written by nothing
        // but the engine and the CPU's atomic accessed/dirty updates; `p` is aligned
        // (checked) and `AtomicU64` has the size and alignment of `u64`. The borrow of `self`
        // keeps this directmap's own writes (`&mut self`) out while the reference lives, so
        // every access through it is atomic.
        Some(LentTable::Live(unsafe { &*p }))
    }

    /// Copies nothing when either span is not wholly in the window (the trait's rule for
    /// out-of-range access). The engine cannot get there: [`crate::Plan::new`] checks both
    /// spans with [`PhysMemory::check_range`] on the memory it plans over, and
    /// [`crate::switch::SwitchParams::new`] refuses a directmap whose window misses the old
    /// image or the destination, so `relocate` copies through a window that holds both.
    fn copy(&mut self, src: u64, dst: u64, len: u64) {
        let (Some(s), Some(d), Ok(n)) = (self.ptr(src, len), self.ptr(dst, len), len.try_into())
        else {
            return;
        };
        if PhysRange::new(src, src + len).overlaps(&PhysRange::new(dst, dst + len)) {
            // The engine never overlaps; other callers of this safe method may.
            // SAFETY: both spans lie in the window (checked by `ptr`), which the constructor's
            // caller guarantees is valid for reads and writes; `ptr::copy` tolerates overlap.
            unsafe { core::ptr::copy(s, d, n) }
        } else {
            // SAFETY: as above, and the spans are disjoint (checked just above).
            unsafe { copy_live(s, d, n) }
        }
    }
}

/// Copies `n` bytes from `src` to `dst` with `rep movsb`: apply's image copy.
///
/// The image holds the live page tables, whose accessed and dirty bits the CPU sets at any
/// time, including in the directmap's own tables while this copy writes the destination
/// through it. A Rust read (`copy_nonoverlapping`) racing with those hardware writes would be
/// a data race; the reads of an `asm!` block are hardware reads outside Rust's memory model
/// (as the stack re-copy in [`crate::switch`] is). A bit the CPU sets after its byte was
/// copied is lost in the copy, which is harmless: accessed and dirty are hints the copy's
/// users re-derive.
///
/// # Safety
/// `[src, src + n)` is valid for reads and `[dst, dst + n)` for writes, and they are disjoint.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn copy_live(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller guarantees both spans are valid and disjoint; `rep movsb` touches
    // exactly them. DF is clear on entry to asm (the Rust reference guarantees it), so the
    // copy runs forwards. No `nomem`: the compiler must treat the block as reading `src` and
    // writing `dst`.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Under Miri (which cannot run `asm!`) and on other architectures: `copy_nonoverlapping`.
/// Miri's memory is not written by a CPU behind its back, so its plain reads race with
/// nothing; a non-x86_64 host only runs the engine on buffers it owns.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
unsafe fn copy_live(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller guarantees both spans are valid and disjoint.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, n) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn directmap_over_heap_buffer() {
        let mut buf = vec![0u64; 1024];
        let mut mem = DirectMap::from_slice(&mut buf, 0x10_0000);
        assert_eq!(mem.window(), PhysRange::new(0x10_0000, 0x10_2000));
        mem.write_u64(0x10_0008, 0xdead_beef);
        assert_eq!(mem.read_u64(0x10_0008), 0xdead_beef);
        mem.copy(0x10_0000, 0x10_1000, 16);
        assert_eq!(mem.read_u64(0x10_1008), 0xdead_beef);
        assert_eq!(mem.check_range(0x10_0000, 8192), Ok(()));
        assert_eq!(
            mem.check_range(0x10_1000, 8192),
            Err(MemoryFault { addr: 0x10_2000 })
        );
        assert_eq!(
            mem.check_range(0xf_f000, 8),
            Err(MemoryFault { addr: 0xf_f000 })
        );
        assert_eq!(
            mem.check_range(u64::MAX - 4, 8),
            Err(MemoryFault { addr: u64::MAX - 4 })
        );
        // Out-of-window and misaligned accesses are inert.
        mem.write_u64(0x10_2000, 1);
        mem.write_u64(0x10_0004, 1);
        assert_eq!(mem.read_u64(0x10_2000), 0);
        assert_eq!(mem.read_u64(0x10_0004), 0);
        mem.copy(0x10_0000, 0x10_1ff8, 16);
        assert_eq!(buf[1], 0xdead_beef);
        assert_eq!(buf[513], 0xdead_beef);
        assert_eq!(buf.iter().filter(|&&w| w != 0).count(), 2);
    }

    #[test]
    fn directmap_over_window_not_8_aligned() {
        // Found by the boot_info fuzz target: a window starting at ...4 put aligned
        // physical qwords at unaligned host addresses, and `read_volatile` required alignment.
        let mut buf = vec![0u64; 4];
        let mut mem = DirectMap::from_slice(&mut buf, 0x1004);
        mem.write_u64(0x1008, 0x1122_3344_5566_7788);
        assert_eq!(mem.read_u64(0x1008), 0x1122_3344_5566_7788);
        assert_eq!(mem.read_u64(0x1020), 0);
        assert_eq!(buf[0], 0x5566_7788_0000_0000);
        assert_eq!(buf[1], 0x1122_3344);
    }

    #[test]
    fn directmap_lends_tables_in_the_window_only() {
        let mut buf = vec![0u64; 1024];
        buf[512 + 3] = 0x1234;
        buf[512 + 510] = 0x77;
        let mem = DirectMap::from_slice(&mut buf, 0x10_0000);
        let table = mem.table(0x10_1000).expect("in the window, aligned");
        assert!(
            matches!(table, LentTable::Live(_)),
            "a directmap's tables are live"
        );
        assert_eq!(table.entry(3), 0x1234);
        let mut snapshot = [0u64; ENTRIES_PER_TABLE];
        mem.read_table(0x10_1000, &mut snapshot);
        let mut lent = [0u64; ENTRIES_PER_TABLE];
        table.read_entries(0, &mut lent);
        assert_eq!(snapshot, lent);
        let mut tail = [u64::MAX; 8];
        table.read_entries(508, &mut tail);
        assert_eq!(
            tail,
            [0, 0, 0x77, 0, 0, 0, 0, 0],
            "entries past the table read 0"
        );
        // Past the window, straddling its end, misaligned: nothing lent.
        assert!(mem.table(0x10_2000).is_none());
        assert!(mem.table(0x10_1008).is_none());
        assert!(mem.table(0x10_0004).is_none());
        // A window starting off an 8-byte boundary lends nothing; snapshots still work.
        let mut odd = vec![0u64; 1025];
        odd[1] = 0x5566_7788_0000_0000;
        let mem = DirectMap::from_slice(&mut odd, 0xffc);
        assert!(mem.table(0x1000).is_none());
        mem.read_table(0x1000, &mut snapshot);
        assert_eq!(snapshot[0], mem.read_u64(0x1000));
    }

    #[test]
    fn range_helpers() {
        let r = PhysRange::new(0x1000, 0x3000);
        assert!(r.contains_span(0x1000, 0x2000));
        assert!(!r.contains_span(0x1000, 0x2001));
        assert!(!r.contains_span(0x1000, 0));
        assert!(!r.contains_span(u64::MAX, 2));
        assert!(r.overlaps(&PhysRange::new(0x2fff, 0x4000)));
        assert!(!r.overlaps(&PhysRange::new(0x3000, 0x4000)));
        assert!(!r.overlaps(&PhysRange::new(0x2000, 0x2000)));
        assert_eq!(PhysRange::from_start_len(u64::MAX, 1), None);
    }

    #[test]
    fn a_range_contains_its_start_and_not_its_end() {
        let r = PhysRange::new(0x1000, 0x3000);
        assert!(r.contains(0x1000));
        assert!(r.contains(0x2fff));
        assert!(!r.contains(0xfff));
        assert!(!r.contains(0x3000));
        assert!(!PhysRange::new(0x1000, 0x1000).contains(0x1000));
        assert!(!PhysRange::new(0x2000, 0x1000).contains(0x1800));
    }

    /// Ranges overlap when they share a byte: touching ends do not, nor does an empty range.
    #[test]
    fn ranges_overlap_only_when_they_share_a_byte() {
        let r = PhysRange::new(0x1000, 0x3000);
        for (other, shares) in [
            (PhysRange::new(0, 0x1000), false),
            (PhysRange::new(0, 0x1001), true),
            (PhysRange::new(0x2fff, 0x4000), true),
            (PhysRange::new(0x3000, 0x4000), false),
            (PhysRange::new(0x1800, 0x2000), true),
            (PhysRange::new(0, 0x4000), true),
            (r, true),
            (PhysRange::new(0x2000, 0x2000), false),
            (PhysRange::new(0x2800, 0x1800), false),
        ] {
            assert_eq!(r.overlaps(&other), shares, "{other}");
            assert_eq!(other.overlaps(&r), shares, "{other}");
        }
        assert!(!PhysRange::new(0x2000, 0x2000).overlaps(&PhysRange::new(0x1000, 0x3000)));
    }

    #[test]
    fn a_span_is_contained_only_from_the_range_start_to_its_end() {
        let r = PhysRange::new(0x1000, 0x3000);
        assert!(r.contains_span(0x2fff, 1));
        assert!(!r.contains_span(0xfff, 0x10));
        assert!(!r.contains_span(0x800, 0x1000));
        assert!(!r.contains_span(0x3000, 1));
    }

    /// A directmap whose window starts above zero: physical `window.start + n` is virtual
    /// `virt_start + n`, inside the window only, and never wrapping.
    #[test]
    fn a_directmap_layout_maps_its_window_and_nothing_else() {
        let layout = DirectMapLayout {
            virt_start: VirtAddr::new(0xffff_8300_0000_0000),
            window: PhysRange::new(0x10_0000, 0x50_0000),
        };
        assert_eq!(layout.virt_of(0x10_0000), Some(0xffff_8300_0000_0000));
        assert_eq!(layout.virt_of(0x4f_ffff), Some(0xffff_8300_003f_ffff));
        assert_eq!(layout.virt_of(0x50_0000), None);
        assert_eq!(layout.virt_of(0xf_ffff), None);
        assert!(layout.covers(PhysRange::new(0x10_0000, 0x50_0000)));
        assert!(layout.covers(PhysRange::new(0x20_0000, 0x20_1000)));
        assert!(!layout.covers(PhysRange::new(0x4f_f000, 0x50_1000)));
        assert!(!layout.covers(PhysRange::new(0xf_f000, 0x10_1000)));
        assert!(!layout.covers(PhysRange::new(0x20_0000, 0x20_0000)));
        // A window whose alias would run past 2^64: the part that fits is covered.
        let top = DirectMapLayout {
            virt_start: VirtAddr::new(u64::MAX - 0xfff),
            window: PhysRange::new(0x10_0000, 0x10_2000),
        };
        assert_eq!(top.virt_of(0x10_0fff), Some(u64::MAX));
        assert_eq!(top.virt_of(0x10_1000), None);
        assert!(!top.covers(PhysRange::new(0x10_0000, 0x10_1000)));
        assert!(top.covers(PhysRange::new(0x10_0000, 0x10_0fff)));
        assert!(!top.covers(PhysRange::new(0x10_0800, 0x10_1800)));
    }

    /// `copy` between overlapping spans moves the bytes as `memmove` does, in both
    /// directions, from physical 0 too.
    #[test]
    fn an_overlapping_copy_moves_the_bytes_as_memmove_does() {
        for (src, dst) in [(0, 8), (8, 0), (0x18, 0x20), (0x20, 0x18)] {
            let mut buf = [1u64, 2, 3, 4, 5, 6, 7, 8];
            let mut expected = buf;
            expected.copy_within(src / 8..src / 8 + 3, dst / 8);
            let mut mem = DirectMap::from_slice(&mut buf, 0);
            mem.copy(src as u64, dst as u64, 24);
            assert_eq!(buf, expected, "{src:#x} -> {dst:#x}");
        }
    }
}
