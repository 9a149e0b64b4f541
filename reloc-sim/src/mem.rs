//! Sparse simulated physical memory over declared RAM ranges.
//!
//! Memory is allocated in 4 KiB pages on first write; a read of RAM never written returns
//! zero. An access outside the declared RAM is a typed [`PhysFault`], never a host panic.
//! Copies skip unallocated source pages, so a 4 GiB machine holding an 8 MiB image costs
//! about 8 MiB of host memory and a copy touches only the pages that exist.

use std::collections::BTreeMap;
use std::fmt;

use reloc_core::{MemoryFault, PhysMemory, PhysRange};

/// Size of a simulated page (the allocation unit).
pub const PAGE_SIZE: u64 = 4096;
const WORDS_PER_PAGE: usize = 512;

type Page = Box<[u64; WORDS_PER_PAGE]>;

/// An access to physical memory that no RAM range backs, or that is misaligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhysFault {
    /// No declared RAM range holds this byte.
    NotRam {
        /// The first address outside RAM.
        addr: u64,
    },
    /// A qword access at an address that is not 8-byte aligned.
    Misaligned {
        /// The address as given.
        addr: u64,
    },
}

impl fmt::Display for PhysFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhysFault::NotRam { addr } => write!(f, "physical address {addr:#x} is not RAM"),
            PhysFault::Misaligned { addr } => {
                write!(f, "physical address {addr:#x} is not 8-byte aligned")
            }
        }
    }
}

impl std::error::Error for PhysFault {}

/// Read access to physical memory by qword: what page walkers need. Implemented by
/// [`SparseMemory`] and by raw dumps ([`crate::dump::RawDump`]).
pub trait PhysRead {
    /// The little-endian qword at `addr` (8-byte aligned).
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault>;
}

/// Sparse physical memory: declared RAM ranges, 4 KiB pages allocated on first write.
#[derive(Clone, Debug, Default)]
pub struct SparseMemory {
    /// Sorted, merged RAM ranges.
    ram: Vec<PhysRange>,
    /// Allocated pages by page number.
    pages: BTreeMap<u64, Page>,
}

impl SparseMemory {
    /// Memory backed by `ram` (ranges may be unsorted, adjacent or overlapping; empty ones are
    /// ignored).
    pub fn new(ram: &[PhysRange]) -> Self {
        let mut ranges: Vec<PhysRange> = ram.iter().copied().filter(|r| !r.is_empty()).collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<PhysRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        Self {
            ram: merged,
            pages: BTreeMap::new(),
        }
    }

    /// The RAM ranges, sorted and merged.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram
    }

    /// Number of allocated 4 KiB pages.
    pub fn allocated_pages(&self) -> usize {
        self.pages.len()
    }

    /// Page-aligned addresses of the allocated pages, ascending.
    pub fn allocated(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().map(|&n| n * PAGE_SIZE)
    }

    /// `Ok` when every byte of `[start, start + len)` is RAM; otherwise the first byte that
    /// is not.
    pub fn check(&self, start: u64, len: u64) -> Result<(), PhysFault> {
        if len == 0 {
            return Ok(());
        }
        let Some(end) = start.checked_add(len) else {
            return Err(PhysFault::NotRam {
                addr: self.first_gap(start, u64::MAX),
            });
        };
        let gap = self.first_gap(start, end);
        if gap < end {
            Err(PhysFault::NotRam { addr: gap })
        } else {
            Ok(())
        }
    }

    /// The first address in `[start, end)` not covered by RAM, or `end`.
    fn first_gap(&self, start: u64, end: u64) -> u64 {
        let mut at = start;
        for r in &self.ram {
            if r.end <= at {
                continue;
            }
            if r.start > at {
                return at;
            }
            at = r.end;
            if at >= end {
                return end;
            }
        }
        at.min(end)
    }

    /// True when `addr` is RAM.
    pub fn is_ram(&self, addr: u64) -> bool {
        self.check(addr, 1).is_ok()
    }

    /// Reads the qword at `addr`.
    pub fn read(&self, addr: u64) -> Result<u64, PhysFault> {
        if !addr.is_multiple_of(8) {
            return Err(PhysFault::Misaligned { addr });
        }
        self.check(addr, 8)?;
        Ok(self.peek(addr))
    }

    /// Writes the qword at `addr`.
    pub fn write(&mut self, addr: u64, value: u64) -> Result<(), PhysFault> {
        if !addr.is_multiple_of(8) {
            return Err(PhysFault::Misaligned { addr });
        }
        self.check(addr, 8)?;
        self.poke(addr, value);
        Ok(())
    }

    /// Reads a byte.
    pub fn read_byte(&self, addr: u64) -> Result<u8, PhysFault> {
        self.check(addr, 1)?;
        let word = self.peek(addr & !7);
        Ok(word.to_le_bytes()[(addr & 7) as usize])
    }

    /// Writes a byte.
    pub fn write_byte(&mut self, addr: u64, value: u8) -> Result<(), PhysFault> {
        self.check(addr, 1)?;
        let mut bytes = self.peek(addr & !7).to_le_bytes();
        bytes[(addr & 7) as usize] = value;
        self.poke(addr & !7, u64::from_le_bytes(bytes));
        Ok(())
    }

    /// Fills the page at `page` (4 KiB-aligned, RAM) from `f(qword address)`.
    pub fn fill_page(&mut self, page: u64, f: impl Fn(u64) -> u64) -> Result<(), PhysFault> {
        if !page.is_multiple_of(PAGE_SIZE) {
            return Err(PhysFault::Misaligned { addr: page });
        }
        self.check(page, PAGE_SIZE)?;
        let words = self.page_mut(page / PAGE_SIZE);
        for (i, w) in words.iter_mut().enumerate() {
            *w = f(page + i as u64 * 8);
        }
        Ok(())
    }

    /// The 512 qwords of the page at `page` (4 KiB-aligned), or `None` if never written.
    pub fn page(&self, page: u64) -> Option<&[u64; WORDS_PER_PAGE]> {
        self.pages.get(&(page / PAGE_SIZE)).map(|p| &**p)
    }

    /// The qword at `addr`, unchecked: zero outside allocated pages. `addr` is 8-aligned.
    fn peek(&self, addr: u64) -> u64 {
        self.pages
            .get(&(addr / PAGE_SIZE))
            .map_or(0, |p| p[((addr % PAGE_SIZE) / 8) as usize])
    }

    fn poke(&mut self, addr: u64, value: u64) {
        let page = addr / PAGE_SIZE;
        if value == 0 && !self.pages.contains_key(&page) {
            return;
        }
        self.page_mut(page)[((addr % PAGE_SIZE) / 8) as usize] = value;
    }

    fn page_mut(&mut self, page: u64) -> &mut [u64; WORDS_PER_PAGE] {
        self.pages
            .entry(page)
            .or_insert_with(|| Box::new([0; WORDS_PER_PAGE]))
    }

    /// Copies `len` bytes from `src` to `dst` (both checked to be RAM). Overlap is handled
    /// like `memmove`. Unallocated source pages are not materialised: their destination is
    /// zeroed only where it was allocated.
    pub fn copy_range(&mut self, src: u64, dst: u64, len: u64) -> Result<(), PhysFault> {
        self.check(src, len)?;
        self.check(dst, len)?;
        if len == 0 || src == dst {
            return Ok(());
        }
        let aligned = src.is_multiple_of(PAGE_SIZE)
            && dst.is_multiple_of(PAGE_SIZE)
            && len.is_multiple_of(PAGE_SIZE);
        let overlapping = PhysRange::new(src, src + len).overlaps(&PhysRange::new(dst, dst + len));
        if aligned && !overlapping {
            for i in 0..len / PAGE_SIZE {
                let (s, d) = (src / PAGE_SIZE + i, dst / PAGE_SIZE + i);
                match self.pages.get(&s) {
                    Some(page) => {
                        let copy = page.clone();
                        self.pages.insert(d, copy);
                    }
                    None => {
                        self.pages.remove(&d);
                    }
                }
            }
            return Ok(());
        }
        // General path, byte by byte, in the direction that keeps overlap safe.
        let order: Box<dyn Iterator<Item = u64>> = if dst > src {
            Box::new((0..len).rev())
        } else {
            Box::new(0..len)
        };
        for i in order {
            let b = self.read_byte(src + i)?;
            self.write_byte(dst + i, b)?;
        }
        Ok(())
    }

    /// The first qword address where `self` and `other` differ, looking only at addresses for
    /// which `in_scope` holds (never-written memory compares as zero).
    pub fn first_difference(
        &self,
        other: &SparseMemory,
        in_scope: impl Fn(u64) -> bool,
    ) -> Option<(u64, u64, u64)> {
        let pages: std::collections::BTreeSet<u64> = self
            .pages
            .keys()
            .chain(other.pages.keys())
            .copied()
            .collect();
        let zero = [0u64; WORDS_PER_PAGE];
        for page in pages {
            let a = self.pages.get(&page).map_or(&zero, |p| p);
            let b = other.pages.get(&page).map_or(&zero, |p| p);
            if a == b {
                continue;
            }
            for i in 0..WORDS_PER_PAGE {
                let addr = page * PAGE_SIZE + i as u64 * 8;
                if a[i] != b[i] && in_scope(addr) {
                    return Some((addr, a[i], b[i]));
                }
            }
        }
        None
    }

    /// Non-zero qwords in ascending address order.
    pub fn nonzero_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pages.iter().flat_map(|(&n, p)| {
            p.iter()
                .enumerate()
                .filter(|(_, &w)| w != 0)
                .map(move |(i, &w)| (n * PAGE_SIZE + i as u64 * 8, w))
        })
    }
}

impl PartialEq for SparseMemory {
    fn eq(&self, other: &Self) -> bool {
        self.ram == other.ram && self.first_difference(other, |_| true).is_none()
    }
}

impl Eq for SparseMemory {}

impl PhysRead for SparseMemory {
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault> {
        self.read(addr)
    }
}

/// reloc-core's view: the same memory, unchanged engine code. Per the trait contract,
/// accesses outside RAM read zero and drop writes (the engine only touches ranges it
/// checked).
impl PhysMemory for SparseMemory {
    fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault> {
        self.check(start, len).map_err(|f| MemoryFault {
            addr: match f {
                PhysFault::NotRam { addr } | PhysFault::Misaligned { addr } => addr,
            },
        })
    }

    fn read_u64(&self, addr: u64) -> u64 {
        self.read(addr).unwrap_or(0)
    }

    fn write_u64(&mut self, addr: u64, value: u64) {
        let _ = self.write(addr, value);
    }

    fn copy(&mut self, src: u64, dst: u64, len: u64) {
        let _ = self.copy_range(src, dst, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> SparseMemory {
        SparseMemory::new(&[
            PhysRange::new(0x10_0000, 0x20_0000),
            PhysRange::new(0, 0x9_fc00),
            PhysRange::new(0x20_0000, 0x40_0000),
        ])
    }

    #[test]
    fn ranges_merge_and_faults_are_typed() {
        let m = mem();
        assert_eq!(
            m.ram(),
            &[
                PhysRange::new(0, 0x9_fc00),
                PhysRange::new(0x10_0000, 0x40_0000)
            ]
        );
        assert_eq!(m.check(0x1f_f000, 0x2000), Ok(()));
        assert_eq!(
            m.check(0x9_f000, 0x1000),
            Err(PhysFault::NotRam { addr: 0x9_fc00 })
        );
        assert_eq!(
            m.read(0x40_0000),
            Err(PhysFault::NotRam { addr: 0x40_0000 })
        );
        assert_eq!(
            m.read(0x10_0004),
            Err(PhysFault::Misaligned { addr: 0x10_0004 })
        );
        assert_eq!(
            m.check(u64::MAX - 3, 8),
            Err(PhysFault::NotRam { addr: u64::MAX - 3 })
        );
    }

    #[test]
    fn unwritten_ram_reads_zero_and_allocates_nothing() {
        let mut m = mem();
        assert_eq!(m.read(0x30_0000), Ok(0));
        m.write(0x30_0000, 0).unwrap();
        assert_eq!(m.allocated_pages(), 0);
        m.write(0x30_0008, 7).unwrap();
        assert_eq!(m.allocated_pages(), 1);
        assert_eq!(m.read(0x30_0008), Ok(7));
    }

    #[test]
    fn page_copy_zeroes_destination_of_unallocated_source() {
        let mut m = mem();
        m.write(0x10_0000, 1).unwrap();
        m.write(0x30_1000, 99).unwrap(); // garbage at the destination of an empty page
        m.copy_range(0x10_0000, 0x30_0000, 0x2000).unwrap();
        assert_eq!(m.read(0x30_0000), Ok(1));
        assert_eq!(m.read(0x30_1000), Ok(0));
        assert_eq!(m.read(0x10_0000), Ok(1));
        assert_eq!(
            m.copy_range(0x3f_f000, 0x10_0000, 0x2000),
            Err(PhysFault::NotRam { addr: 0x40_0000 })
        );
    }

    #[test]
    fn byte_copy_handles_overlap() {
        let mut m = mem();
        for i in 0..16u64 {
            m.write_byte(0x10_0000 + i, i as u8 + 1).unwrap();
        }
        m.copy_range(0x10_0000, 0x10_0004, 16).unwrap();
        for i in 0..16u64 {
            assert_eq!(m.read_byte(0x10_0004 + i), Ok(i as u8 + 1));
        }
    }

    #[test]
    fn differences_are_found_and_scoped() {
        let a = mem();
        let mut b = mem();
        assert_eq!(a, b);
        b.write(0x20_0010, 5).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.first_difference(&b, |_| true), Some((0x20_0010, 0, 5)));
        assert_eq!(a.first_difference(&b, |pa| pa != 0x20_0010), None);
    }
}
