//! Sparse simulated physical memory over declared RAM ranges.
//!
//! Memory is allocated in 4 KiB pages on first write; a read of RAM never written returns
//! zero. An access outside the declared RAM is a typed [`PhysFault`], never a host panic.
//!
//! Every cost follows the pages that hold data, never the size of RAM or of a range: pages
//! are shared between clones (`Arc`, copied on first write), so cloning a machine costs a
//! reference count per written page and comparing two clones skips the pages they still
//! share; copies and comparisons visit allocated pages only. A 16 TiB image holding a few
//! written pages costs those pages.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reloc_core::{LentTable, MemoryFault, PhysMemory, PhysRange};

/// Size of a simulated page (the allocation unit).
pub const PAGE_SIZE: u64 = 4096;
const WORDS_PER_PAGE: usize = 512;

type Page = Arc<[u64; WORDS_PER_PAGE]>;

const ZERO_PAGE: [u64; WORDS_PER_PAGE] = [0; WORDS_PER_PAGE];
/// What a lent page of RAM never written holds (a `static`, so it can be lent).
static ZEROS: [u64; WORDS_PER_PAGE] = [0; WORDS_PER_PAGE];

/// Most pages kept for reuse per thread (16 MiB).
const FREE_PAGES_MAX: usize = 4096;

thread_local! {
    /// Pages no memory holds any more, kept for reuse: a simulation allocates and drops
    /// hundreds of pages per run, and the allocator (under a sanitizer above all) costs more
    /// than copying 4 KiB.
    static FREE_PAGES: std::cell::RefCell<Vec<Page>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A page holding `words`, reused from [`FREE_PAGES`] when one is there.
fn new_page(words: &[u64; WORDS_PER_PAGE]) -> Page {
    let reused = FREE_PAGES
        .try_with(|free| free.borrow_mut().pop())
        .ok()
        .flatten();
    match reused {
        Some(mut page) => {
            // Only unshared pages are kept (see `recycle`), so this always writes.
            if let Some(slot) = Arc::get_mut(&mut page) {
                *slot = *words;
                return page;
            }
            Arc::new(*words)
        }
        None => Arc::new(*words),
    }
}

/// Keeps `page` for reuse when nothing else holds it.
fn recycle(mut page: Page) {
    if Arc::get_mut(&mut page).is_some() {
        let _ = FREE_PAGES.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_PAGES_MAX {
                free.push(page);
            }
        });
    }
}

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

    /// Reads the 512 qwords of the table at `table` into `out`, as 512 calls of
    /// [`PhysRead::read_phys_u64`] would: on a fault, `out[..index]` holds the qwords before
    /// it and the error names `index`. Implementations override it to read a whole table at
    /// once (walkers read tables whole).
    fn read_table(&self, table: u64, out: &mut [u64; 512]) -> Result<(), (usize, PhysFault)> {
        for (index, slot) in out.iter_mut().enumerate() {
            *slot = self
                .read_phys_u64(table.wrapping_add(index as u64 * 8))
                .map_err(|fault| (index, fault))?;
        }
        Ok(())
    }

    /// The table at `table` in place, when all of it is readable and this memory can lend
    /// it: walkers then read it with no copy. The default, `None`, makes [`TableView::read`]
    /// take a snapshot with [`PhysRead::read_table`].
    fn table_ref(&self, table: u64) -> Option<&[u64; 512]> {
        let _ = table;
        None
    }
}

/// Any reloc-core [`PhysMemory`] seen as a [`PhysRead`], so reloc-sim's walkers and checker
/// read the memory the engine ran on (a user's own memory type). [`reloc_core::DirectMap`]
/// implements [`PhysRead`] itself; this adapter is for other `PhysMemory` types. A qword
/// outside what `check_range` accepts is a [`PhysFault::NotRam`] naming the address it gives.
#[derive(Debug, Clone, Copy)]
pub struct CoreMemory<'a, M: ?Sized>(pub &'a M);

/// The qword at `addr` of a reloc-core memory, faults typed as reloc-sim's.
fn read_core<M: PhysMemory + ?Sized>(mem: &M, addr: u64) -> Result<u64, PhysFault> {
    if !addr.is_multiple_of(8) {
        return Err(PhysFault::Misaligned { addr });
    }
    mem.check_range(addr, 8)
        .map_err(|f| PhysFault::NotRam { addr: f.addr })?;
    Ok(mem.read_u64(addr))
}

/// The table at `table` of a reloc-core memory: lent in one piece when it lends it, else
/// qword by qword up to the first fault.
fn read_core_table<M: PhysMemory + ?Sized>(
    mem: &M,
    table: u64,
    out: &mut [u64; 512],
) -> Result<(), (usize, PhysFault)> {
    if let Some(lent) = mem.table(table) {
        lent.read_entries(0, out);
        return Ok(());
    }
    for (index, slot) in out.iter_mut().enumerate() {
        *slot = read_core(mem, table.wrapping_add(index as u64 * 8)).map_err(|f| (index, f))?;
    }
    Ok(())
}

impl<M: PhysMemory + ?Sized> PhysRead for CoreMemory<'_, M> {
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault> {
        read_core(self.0, addr)
    }

    fn read_table(&self, table: u64, out: &mut [u64; 512]) -> Result<(), (usize, PhysFault)> {
        read_core_table(self.0, table, out)
    }

    fn table_ref(&self, table: u64) -> Option<&[u64; 512]> {
        stable_table(self.0, table)
    }
}

/// A directmap (on the host, a buffer made with `DirectMap::from_slice`): the window is the
/// RAM; reads outside it fault.
impl PhysRead for reloc_core::DirectMap<'_> {
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault> {
        read_core(self, addr)
    }

    fn read_table(&self, table: u64, out: &mut [u64; 512]) -> Result<(), (usize, PhysFault)> {
        read_core_table(self, table, out)
    }

    fn table_ref(&self, table: u64) -> Option<&[u64; 512]> {
        stable_table(self, table)
    }
}

/// A table the memory lends as [`LentTable::Stable`], in place. A live table (a directmap's:
/// something may update it while lent) is read with its relaxed loads instead
/// ([`read_core_table`]), into the walkers' snapshot.
fn stable_table<M: PhysMemory + ?Sized>(mem: &M, table: u64) -> Option<&[u64; 512]> {
    match mem.table(table)? {
        LentTable::Stable(entries) => Some(entries),
        LentTable::Live(_) => None,
    }
}

/// A table as walkers read it: lent in place ([`PhysRead::table_ref`]) or a snapshot on the
/// heap ([`PhysRead::read_table`]), never 4 KiB on the stack (walkers recurse, and under
/// AddressSanitizer every large frame is a heap-like allocation).
#[derive(Debug)]
pub enum TableView<'a> {
    /// All 512 entries, in place.
    Lent(&'a [u64; 512]),
    /// A snapshot: the entries before `fault` (all 512 when there is none).
    Read {
        /// The qwords read; those from the fault on are zero.
        entries: Box<[u64; 512]>,
        /// The index of the first qword that could not be read, and why.
        fault: Option<(usize, PhysFault)>,
    },
}

impl<'a> TableView<'a> {
    /// The table at `table` in `mem`.
    pub fn read<M: PhysRead + ?Sized>(mem: &'a M, table: u64) -> Self {
        if let Some(entries) = mem.table_ref(table) {
            return TableView::Lent(entries);
        }
        let mut entries = Box::new([0u64; 512]);
        let fault = mem.read_table(table, &mut entries).err();
        TableView::Read { entries, fault }
    }

    /// The entries readable before the first fault, in order.
    pub fn readable(&self) -> &[u64] {
        match self {
            TableView::Lent(entries) => &entries[..],
            TableView::Read { entries, fault } => &entries[..fault.map_or(512, |(index, _)| index)],
        }
    }

    /// The fault that ended the table early, if one did.
    pub fn fault(&self) -> Option<PhysFault> {
        match self {
            TableView::Lent(_) => None,
            TableView::Read { fault, .. } => fault.map(|(_, f)| f),
        }
    }
}

/// Which addresses [`SparseMemory::first_difference`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every address.
    All,
    /// The qwords that start inside this range.
    Inside(PhysRange),
    /// The qwords that start outside this range.
    Outside(PhysRange),
}

/// The index of the qword holding `addr` (rounded up) in the page at `page`, up to 512.
fn word_index(addr: u64, page: u64) -> usize {
    ((addr - page).div_ceil(8)) as usize
}

/// Sparse physical memory: declared RAM ranges, 4 KiB pages allocated on first write.
#[derive(Debug, Default)]
pub struct SparseMemory {
    /// Sorted, merged RAM ranges.
    ram: Vec<PhysRange>,
    /// Allocated pages, sorted by page number; a page may be shared with clones.
    pages: Vec<(u64, Page)>,
    /// Index in `pages` of the last page looked up: walkers read a table's 512 entries in a
    /// row, so most lookups hit it without a search.
    hint: AtomicUsize,
    /// The hint before the last one changed it.
    previous_hint: AtomicUsize,
    /// Index in `ram` of the range that held the last access checked.
    ram_hint: AtomicUsize,
}

impl Drop for SparseMemory {
    fn drop(&mut self) {
        for (_, page) in self.pages.drain(..) {
            recycle(page);
        }
    }
}

impl Clone for SparseMemory {
    fn clone(&self) -> Self {
        Self {
            ram: self.ram.clone(),
            pages: self.pages.clone(),
            hint: AtomicUsize::new(self.hint.load(Ordering::Relaxed)),
            previous_hint: AtomicUsize::new(self.previous_hint.load(Ordering::Relaxed)),
            ram_hint: AtomicUsize::new(self.ram_hint.load(Ordering::Relaxed)),
        }
    }
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
            pages: Vec::new(),
            hint: AtomicUsize::new(0),
            previous_hint: AtomicUsize::new(0),
            ram_hint: AtomicUsize::new(0),
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
        self.pages.iter().map(|&(n, _)| n * PAGE_SIZE)
    }

    /// Page-aligned addresses of the allocated pages that overlap `[start, end)`, ascending.
    pub fn allocated_in(&self, start: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        let (first, last) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
        let from = self.pages.partition_point(|&(n, _)| n < first);
        let to = self.pages.partition_point(|&(n, _)| n < last);
        self.pages[from..to.max(from)]
            .iter()
            .map(|&(n, _)| n * PAGE_SIZE)
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
        // Most accesses fall in the range the last one did.
        let hint = self.ram_hint.load(Ordering::Relaxed);
        if self
            .ram
            .get(hint)
            .is_some_and(|r| r.start <= start && end <= r.end)
        {
            return Ok(());
        }
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
        for (i, r) in self.ram.iter().enumerate() {
            if r.end <= at {
                continue;
            }
            if r.start > at {
                return at;
            }
            self.ram_hint.store(i, Ordering::Relaxed);
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
        // Fast path, few branches: the page and the RAM range of the last access (walkers
        // read a table's entries in a row).
        if let (Some((n, page)), Some(r)) = (
            self.pages.get(self.hint.load(Ordering::Relaxed)),
            self.ram.get(self.ram_hint.load(Ordering::Relaxed)),
        ) {
            if *n == addr / PAGE_SIZE && addr & 7 == 0 && r.start <= addr && addr < r.end & !7 {
                return Ok(page[((addr % PAGE_SIZE) / 8) as usize]);
            }
        }
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

    /// Writes each `(addr, value)` qword as [`SparseMemory::write`] would, in order, stopping
    /// at the first fault (the writes before it are made); the pages it allocates are added
    /// to the page list in one pass rather than one insertion each (garbage scattered over a
    /// destination allocates dozens).
    pub fn write_batch(&mut self, writes: &[(u64, u64)]) -> Result<(), PhysFault> {
        let mut result = Ok(());
        let mut fresh: Vec<(u64, Page)> = Vec::new();
        for &(addr, value) in writes {
            if !addr.is_multiple_of(8) {
                result = Err(PhysFault::Misaligned { addr });
                break;
            }
            if let Err(fault) = self.check(addr, 8) {
                result = Err(fault);
                break;
            }
            let (n, word) = (addr / PAGE_SIZE, ((addr % PAGE_SIZE) / 8) as usize);
            if self.find(n).is_some() {
                self.poke(addr, value);
                continue;
            }
            match fresh.iter_mut().rev().find(|(m, _)| *m == n) {
                Some((_, page)) => Arc::make_mut(page)[word] = value,
                None if value != 0 => {
                    let mut page = new_page(&ZERO_PAGE);
                    Arc::make_mut(&mut page)[word] = value;
                    fresh.push((n, page));
                }
                None => {}
            }
        }
        if !fresh.is_empty() {
            self.pages.extend(fresh);
            // Two sorted runs, mostly: the sort merges them.
            self.pages.sort_by_key(|&(n, _)| n);
            self.hint.store(0, Ordering::Relaxed);
            self.previous_hint.store(0, Ordering::Relaxed);
        }
        result
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

    /// The qwords from `addr` on into `out`, all in one page of RAM (8-aligned); `None`
    /// otherwise, for a caller to go qword by qword and meet the fault where it is.
    pub fn read_words(&self, addr: u64, out: &mut [u64]) -> Option<()> {
        let first = self.words_in_one_page(addr, out.len())?;
        match self.page(addr) {
            Some(page) => out.copy_from_slice(page.get(first..first + out.len())?),
            None => out.fill(0),
        }
        Some(())
    }

    /// Writes `words` from `addr` on, all in one page of RAM (8-aligned); `None` (nothing
    /// written) otherwise.
    pub fn write_words(&mut self, addr: u64, words: &[u64]) -> Option<()> {
        let first = self.words_in_one_page(addr, words.len())?;
        if words.iter().all(|&w| w == 0) && self.page(addr).is_none() {
            return Some(()); // Zeros over a page never written: nothing to store.
        }
        self.page_mut(addr / PAGE_SIZE)
            .get_mut(first..first + words.len())?
            .copy_from_slice(words);
        Some(())
    }

    /// The index of `addr`'s qword in its page, when `count` qwords from `addr` are 8-aligned,
    /// in one page, and RAM.
    fn words_in_one_page(&self, addr: u64, count: usize) -> Option<usize> {
        let len = u64::try_from(count).ok()?.checked_mul(8)?;
        let first = (addr % PAGE_SIZE) / 8;
        let fits = addr.is_multiple_of(8) && (addr % PAGE_SIZE).checked_add(len)? <= PAGE_SIZE;
        (fits && self.check(addr, len).is_ok()).then_some(first as usize)
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

    /// The 512 qwords of the page holding `addr`, or `None` if never written.
    pub fn page(&self, addr: u64) -> Option<&[u64; WORDS_PER_PAGE]> {
        self.find(addr / PAGE_SIZE).map(|i| &*self.pages[i].1)
    }

    /// The page at `addr` when `addr` starts a page of RAM: its 512 qwords, zeros if never
    /// written.
    fn ram_page(&self, addr: u64) -> Option<&[u64; WORDS_PER_PAGE]> {
        (addr.is_multiple_of(PAGE_SIZE) && self.check(addr, PAGE_SIZE).is_ok())
            .then(|| self.page(addr).unwrap_or(&ZEROS))
    }

    /// The index in `pages` of page number `n`.
    fn find(&self, n: u64) -> Option<usize> {
        let hint = self.hint.load(Ordering::Relaxed);
        if self.pages.get(hint).is_some_and(|&(m, _)| m == n) {
            return Some(hint);
        }
        // Code that copies reads one page and writes another, in turns.
        let previous = self.previous_hint.load(Ordering::Relaxed);
        if self.pages.get(previous).is_some_and(|&(m, _)| m == n) {
            self.previous_hint.store(hint, Ordering::Relaxed);
            self.hint.store(previous, Ordering::Relaxed);
            return Some(previous);
        }
        let i = self.pages.binary_search_by_key(&n, |&(m, _)| m).ok()?;
        self.previous_hint.store(hint, Ordering::Relaxed);
        self.hint.store(i, Ordering::Relaxed);
        Some(i)
    }

    /// The qword at `addr`, unchecked: zero outside allocated pages. `addr` is 8-aligned.
    fn peek(&self, addr: u64) -> u64 {
        self.page(addr)
            .map_or(0, |p| p[((addr % PAGE_SIZE) / 8) as usize])
    }

    fn poke(&mut self, addr: u64, value: u64) {
        let n = addr / PAGE_SIZE;
        if value == 0 && self.find(n).is_none() {
            return;
        }
        self.page_mut(n)[((addr % PAGE_SIZE) / 8) as usize] = value;
    }

    /// Page number `n`, allocated if it was not, and unshared from clones.
    fn page_mut(&mut self, n: u64) -> &mut [u64; WORDS_PER_PAGE] {
        let i = match self.find(n) {
            Some(i) => i,
            None => {
                let i = self.pages.partition_point(|&(m, _)| m < n);
                self.pages.insert(i, (n, new_page(&ZERO_PAGE)));
                // Indices at and above `i` moved up by one.
                let previous = self.hint.load(Ordering::Relaxed);
                self.previous_hint
                    .store(previous + usize::from(previous >= i), Ordering::Relaxed);
                self.hint.store(i, Ordering::Relaxed);
                i
            }
        };
        let slot = &mut self.pages[i].1;
        if Arc::get_mut(slot).is_none() {
            // Shared with a clone: copy on write.
            *slot = new_page(slot);
        }
        Arc::make_mut(slot)
    }

    /// Drops the allocated pages numbered `[first, end)`; returns their index.
    fn remove_pages(&mut self, first: u64, end: u64) -> usize {
        let from = self.pages.partition_point(|&(m, _)| m < first);
        let to = self.pages.partition_point(|&(m, _)| m < end);
        for (_, page) in self.pages.drain(from..to.max(from)) {
            recycle(page);
        }
        self.hint.store(0, Ordering::Relaxed);
        from
    }

    /// Copies `len` bytes from `src` to `dst` (both checked to be RAM). Overlap is handled
    /// like `memmove`. The cost follows the allocated pages of both ranges, not `len`:
    /// unallocated source pages are not materialised, their destination is zeroed only where
    /// it was allocated, and page-aligned copies share the source pages.
    pub fn copy_range(&mut self, src: u64, dst: u64, len: u64) -> Result<(), PhysFault> {
        self.check(src, len)?;
        self.check(dst, len)?;
        if len == 0 || src == dst {
            return Ok(());
        }
        // Both ranges are RAM, so neither wraps. Snapshot the source first: memmove.
        let aligned = src.is_multiple_of(PAGE_SIZE)
            && dst.is_multiple_of(PAGE_SIZE)
            && len.is_multiple_of(PAGE_SIZE);
        if aligned {
            let (s, d, n) = (src / PAGE_SIZE, dst / PAGE_SIZE, len / PAGE_SIZE);
            let moved: Vec<(u64, Page)> = {
                let from = self.pages.partition_point(|&(m, _)| m < s);
                let to = self.pages.partition_point(|&(m, _)| m < s + n);
                self.pages[from..to]
                    .iter()
                    .map(|(m, p)| (m - s + d, Arc::clone(p)))
                    .collect()
            };
            let at = self.remove_pages(d, d + n);
            self.pages.splice(at..at, moved);
            return Ok(());
        }
        // General path: source bytes of allocated pages, then the destination zeroed where
        // it was allocated, then the bytes written.
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for page in self.allocated_in(src, src + len).collect::<Vec<_>>() {
            let (from, to) = (page.max(src), (page + PAGE_SIZE).min(src + len));
            let bytes = (from..to).map(|a| self.peek(a & !7).to_le_bytes()[(a & 7) as usize]);
            runs.push((from - src, bytes.collect()));
        }
        for page in self.allocated_in(dst, dst + len).collect::<Vec<_>>() {
            for a in page.max(dst)..(page + PAGE_SIZE).min(dst + len) {
                self.write_byte(a, 0)?;
            }
        }
        for (offset, bytes) in runs {
            for (i, b) in bytes.into_iter().enumerate() {
                self.write_byte(dst + offset + i as u64, b)?;
            }
        }
        Ok(())
    }

    /// The first qword address where `self` and `other` differ within `scope` (never-written
    /// memory compares as zero), with both values. Pages the two still share (one is a clone
    /// of the other) and pages wholly out of scope are skipped without being read.
    pub fn first_difference(&self, other: &SparseMemory, scope: Scope) -> Option<(u64, u64, u64)> {
        let (mut a, mut b) = match scope {
            // Only the pages overlapping the range.
            Scope::Inside(r) => (
                self.pages_overlapping(r).iter().peekable(),
                other.pages_overlapping(r).iter().peekable(),
            ),
            Scope::All | Scope::Outside(_) => {
                (self.pages.iter().peekable(), other.pages.iter().peekable())
            }
        };
        loop {
            let (n, pa, pb): (u64, &[u64; WORDS_PER_PAGE], &[u64; WORDS_PER_PAGE]) =
                match (a.peek(), b.peek()) {
                    (None, None) => return None,
                    (Some(&(n, p)), None) => {
                        a.next();
                        (*n, p, &ZERO_PAGE)
                    }
                    (None, Some(&(n, p))) => {
                        b.next();
                        (*n, &ZERO_PAGE, p)
                    }
                    (Some(&(n, p)), Some(&(m, q))) => {
                        if n < m {
                            a.next();
                            (*n, p, &ZERO_PAGE)
                        } else if m < n {
                            b.next();
                            (*m, &ZERO_PAGE, q)
                        } else {
                            a.next();
                            b.next();
                            if Arc::ptr_eq(p, q) {
                                continue;
                            }
                            (*n, p, q)
                        }
                    }
                };
            let page = PhysRange::new(n * PAGE_SIZE, n * PAGE_SIZE + PAGE_SIZE);
            let words = match scope {
                Scope::All => 0..WORDS_PER_PAGE,
                Scope::Inside(r) => {
                    let from = r.start.max(page.start).min(page.end);
                    let to = r.end.min(page.end).max(from);
                    word_index(from, page.start)..word_index(to, page.start)
                }
                Scope::Outside(r) if r.start <= page.start && page.end <= r.end => continue,
                Scope::Outside(_) => 0..WORDS_PER_PAGE,
            };
            if pa[words.clone()] == pb[words.clone()] {
                continue;
            }
            for i in words {
                let addr = page.start + i as u64 * 8;
                let excluded = matches!(scope, Scope::Outside(r) if r.contains(addr));
                if pa[i] != pb[i] && !excluded {
                    return Some((addr, pa[i], pb[i]));
                }
            }
        }
    }

    /// The allocated pages overlapping `r`.
    fn pages_overlapping(&self, r: PhysRange) -> &[(u64, Page)] {
        let from = self
            .pages
            .partition_point(|&(m, _)| m < r.start / PAGE_SIZE);
        let to = self
            .pages
            .partition_point(|&(m, _)| m < r.end.div_ceil(PAGE_SIZE));
        &self.pages[from..to.max(from)]
    }

    /// Non-zero qwords in ascending address order.
    pub fn nonzero_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pages.iter().flat_map(|(n, p)| {
            p.iter()
                .enumerate()
                .filter(|(_, &w)| w != 0)
                .map(move |(i, &w)| (n * PAGE_SIZE + i as u64 * 8, w))
        })
    }
}

impl PartialEq for SparseMemory {
    fn eq(&self, other: &Self) -> bool {
        self.ram == other.ram && self.first_difference(other, Scope::All).is_none()
    }
}

impl Eq for SparseMemory {}

impl PhysRead for SparseMemory {
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault> {
        self.read(addr)
    }

    fn read_table(&self, table: u64, out: &mut [u64; 512]) -> Result<(), (usize, PhysFault)> {
        // A whole page of RAM: one lookup. Anything else (unaligned, partly outside RAM)
        // qword by qword, so the fault is the same.
        if table.is_multiple_of(PAGE_SIZE) && self.check(table, PAGE_SIZE).is_ok() {
            *out = *self.page(table).unwrap_or(&ZERO_PAGE);
            return Ok(());
        }
        for (index, slot) in out.iter_mut().enumerate() {
            *slot = self
                .read(table.wrapping_add(index as u64 * 8))
                .map_err(|fault| (index, fault))?;
        }
        Ok(())
    }

    /// A whole page of RAM, in place (a page never written reads as zeros).
    fn table_ref(&self, table: u64) -> Option<&[u64; 512]> {
        self.ram_page(table)
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

    /// A whole page of RAM, in place: planning decodes it with no copy. Stable: nothing
    /// writes simulated memory while planning borrows it (the simulator sets no accessed or
    /// dirty bits then).
    fn table(&self, addr: u64) -> Option<LentTable<'_>> {
        self.ram_page(addr).map(LentTable::Stable)
    }

    /// One lookup for the whole table when it is a page of RAM (the engine's case); qword by
    /// qword otherwise, outside RAM reading zero as `read_u64` does.
    fn read_table(&self, addr: u64, table: &mut [u64; 512]) {
        if PhysRead::read_table(self, addr, table).is_err() {
            for (i, slot) in table.iter_mut().enumerate() {
                *slot = self.read(addr.wrapping_add(i as u64 * 8)).unwrap_or(0);
            }
        }
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

    /// What 512 single reads give: the entries before the first fault, and the fault.
    fn qword_by_qword(m: &SparseMemory, table: u64) -> (Vec<u64>, Option<PhysFault>) {
        let mut entries = Vec::new();
        for i in 0..512 {
            match m.read(table.wrapping_add(i * 8)) {
                Ok(v) => entries.push(v),
                Err(f) => return (entries, Some(f)),
            }
        }
        (entries, None)
    }

    #[test]
    fn table_views_lend_pages_of_ram_and_read_the_rest_as_single_reads_would() {
        let mut m = mem();
        m.write(0x1000, 0xaaaa).unwrap();
        m.write(0x1ff8, 0xbbbb).unwrap();
        m.write(0x9_f000, 0xcccc).unwrap();
        let pages_before = m.allocated_pages();
        // (table, lent in place?)
        let cases = [
            (0x1000, true),    // written page
            (0x3000, true),    // RAM never written: zeros, nothing allocated
            (0x20_0000, true), // a page of the merged range
            (0x9_f000, false), // RAM ends at 0x9_fc00, inside the table
            (0x1008, false),   // not page-aligned
            (0x1004, false),   // misaligned: the first read faults
            (0x40_0000, false),
            (!0xfff, false),
        ];
        for (table, lent) in cases {
            let view = TableView::read(&m, table);
            assert_eq!(matches!(view, TableView::Lent(_)), lent, "{table:#x}");
            assert_eq!(
                (view.readable().to_vec(), view.fault()),
                qword_by_qword(&m, table),
                "{table:#x}"
            );
            // reloc-core's view lends exactly the same pages.
            assert_eq!(PhysMemory::table(&m, table).is_some(), lent, "{table:#x}");
            if let Some(t) = PhysMemory::table(&m, table) {
                let mut entries = [0u64; 512];
                t.read_entries(0, &mut entries);
                assert_eq!(&entries[..], view.readable(), "{table:#x}");
            }
        }
        assert_eq!(TableView::read(&m, 0x1000).readable()[511], 0xbbbb);
        assert_eq!(
            m.allocated_pages(),
            pages_before,
            "lending allocates nothing"
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
    fn batched_writes_equal_single_writes() {
        let writes = [
            (0x30_0008, 7),
            (0x10_0000, 1),
            (0x30_0010, 0),
            (0x20_1000, 0),
            (0x10_0008, 2),
            (0x3f_fff8, 9),
        ];
        let mut one_by_one = mem();
        let mut batched = mem();
        batched.write(0x10_0010, 5).unwrap();
        one_by_one.write(0x10_0010, 5).unwrap();
        for &(addr, value) in &writes {
            one_by_one.write(addr, value).unwrap();
        }
        batched.write_batch(&writes).unwrap();
        assert_eq!(batched, one_by_one);
        assert_eq!(batched.allocated_pages(), one_by_one.allocated_pages());
        assert_eq!(batched.read(0x10_0008), Ok(2));
        // A fault stops the batch where a loop of writes would stop.
        assert_eq!(
            batched.write_batch(&[(0x20_0000, 3), (0x40_0000, 4), (0x20_0008, 5)]),
            Err(PhysFault::NotRam { addr: 0x40_0000 })
        );
        assert_eq!(batched.read(0x20_0000), Ok(3));
        assert_eq!(batched.read(0x20_0008), Ok(0));
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
        assert_eq!(a.first_difference(&b, Scope::All), Some((0x20_0010, 0, 5)));
        let word = PhysRange::new(0x20_0010, 0x20_0018);
        assert_eq!(a.first_difference(&b, Scope::Outside(word)), None);
        assert_eq!(
            a.first_difference(&b, Scope::Inside(word)),
            Some((0x20_0010, 0, 5))
        );
        let below = PhysRange::new(0x10_0000, 0x20_0010);
        assert_eq!(a.first_difference(&b, Scope::Inside(below)), None);
        assert_eq!(
            a.first_difference(&b, Scope::Outside(below)),
            Some((0x20_0010, 0, 5))
        );
    }
}
