//! Generated test cases for a user's own boot tables: the machine around the tables (paging
//! mode, RAM map, where the image is, where it goes, extra tables that must not move), varied
//! as a [`CaseSpec`] says, while the user's code writes and relocates the tables.
//!
//! A case is a pure function of a list of choices ([`CaseSpec::case`]), so the same spec
//! serves proptest ([`arb_case`], whose choices shrink towards 0: the first paging mode, the
//! smallest image, the plainest RAM) and fuzzing (choices read from the fuzzer's bytes, for
//! example with `arbitrary`).
//!
//! ```
//! use reloc_sim::case::{CaseSpec, TargetSpec};
//!
//! let spec = CaseSpec { target: TargetSpec::Above, ..CaseSpec::default() };
//! let case = spec.case(&[3, 1, 4, 1, 5, 9, 2, 6]).unwrap();
//! assert!(case.target > case.image.start);
//! assert!(case.ram.iter().any(|r| r.contains(case.target)));
//! ```

use std::fmt;

use reloc_core::{PagingMode, PhysMemory, PhysRange};

use crate::layout::{LayoutError, GIB, MIB, PTR_FLAGS, SMALL_FLAGS};
use crate::mem::{SparseMemory, PAGE_SIZE};

/// Choices [`arb_case`] draws: more than [`CaseSpec::case`] reads, so none is cut short.
pub const CHOICES: usize = 16;

/// Virtual start of [`ExtraMappings`] (lower half: L4 slot 128, L5 slot 0): 4 KiB leaves
/// here, a 1 GiB leaf 1 GiB above.
pub const EXTRA_VIRT: u64 = 0x0000_4000_0000_0000;

/// The RAM map of generated cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RamSpec {
    /// Exactly these ranges.
    Fixed(Vec<PhysRange>),
    /// Conventional memory below 640 KiB, RAM from 1 MiB to a top of 64-256 MiB, sometimes a
    /// 2-8 MiB hole in its upper half and sometimes 64 MiB at 4 GiB.
    Random,
}

/// Where generated cases move the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// This 2 MiB-aligned base.
    Fixed(u64),
    /// Any 2 MiB-aligned base in RAM clear of the image's footprint.
    Anywhere,
    /// As `Anywhere`, above the image.
    Above,
    /// As `Anywhere`, below the image.
    Below,
}

/// What generated cases vary, and what they keep fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseSpec {
    /// Paging modes to draw from (at least one).
    pub paging: Vec<PagingMode>,
    /// Image sizes in bytes, `[min, max]`, 4 KiB multiples drawn between.
    pub image_size: (u64, u64),
    /// The image's physical start: fixed (2 MiB-aligned), or `None` for any 2 MiB-aligned
    /// base in the lower half of the first RAM range that holds it.
    pub image_base: Option<u64>,
    /// The RAM map.
    pub ram: RamSpec,
    /// The destination.
    pub target: TargetSpec,
    /// Whether cases may carry [`ExtraMappings`].
    pub extra_tables: bool,
}

impl Default for CaseSpec {
    /// Everything varies: 4 and 5 levels, images of 2-4 MiB, random RAM, any target, extra
    /// tables.
    fn default() -> Self {
        Self {
            paging: vec![PagingMode::FourLevel, PagingMode::FiveLevel],
            image_size: (2 * MIB, 4 * MIB),
            image_base: None,
            ram: RamSpec::Random,
            target: TargetSpec::Anywhere,
            extra_tables: true,
        }
    }
}

/// Why a spec gave no case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaseError {
    /// `paging` is empty.
    NoPagingMode,
    /// `image_size` is empty, zero or not 4 KiB-aligned.
    BadImageSize {
        /// The range given.
        min: u64,
        /// The range given.
        max: u64,
    },
    /// No RAM range holds the image at a 2 MiB-aligned base (or the fixed base is not in
    /// RAM or not aligned).
    NoRoomForImage {
        /// The image size drawn.
        size: u64,
    },
    /// No 2 MiB-aligned destination of the kind asked for fits in RAM clear of the image.
    NoRoomForTarget {
        /// The image's physical start.
        image_base: u64,
    },
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::NoPagingMode => f.write_str("case spec: no paging mode to draw from"),
            CaseError::BadImageSize { min, max } => write!(
                f,
                "case spec: image sizes {min:#x}..={max:#x} hold no non-zero 4 KiB multiple"
            ),
            CaseError::NoRoomForImage { size } => write!(
                f,
                "case spec: no RAM range holds a {size:#x}-byte image at a 2 MiB-aligned base"
            ),
            CaseError::NoRoomForTarget { image_base } => write!(
                f,
                "case spec: no destination fits in RAM clear of the image at {image_base:#x}"
            ),
        }
    }
}

impl std::error::Error for CaseError {}

/// Mappings a case adds to the user's tables that reloc-core must leave alone: image pages
/// mapped again with 4 KiB leaves (an L1 table outside every image map), and physical 0 by a
/// 1 GiB leaf. Written by [`Case::write_extra`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraMappings {
    /// Image pages (indices from the image start) mapped at `EXTRA_VIRT + 4 KiB × i`.
    pub image_pages: Vec<u64>,
    /// Map physical 0 with a 1 GiB leaf at `EXTRA_VIRT + 1 GiB`.
    pub gib_leaf: bool,
}

/// One generated machine around the user's tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// 4 or 5 levels.
    pub paging: PagingMode,
    /// RAM ranges.
    pub ram: Vec<PhysRange>,
    /// The image: 2 MiB-aligned start, inside RAM.
    pub image: PhysRange,
    /// The destination: 2 MiB-aligned, its footprint in RAM and clear of the image's.
    pub target: u64,
    /// Extra tables to add ([`Case::write_extra`]).
    pub extra: ExtraMappings,
}

/// Reads the choices in order; past the end every choice is 0.
struct Choices<'a>(std::slice::Iter<'a, u64>);

impl Choices<'_> {
    /// A value in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0.next().map_or(0, |c| c.checked_rem(n).unwrap_or(0))
    }
}

const TWO_MIB: u64 = 2 * MIB;

/// 2 MiB-aligned bases `t` with `[t, t + footprint)` inside one range of `ram`.
fn slots(ram: &[PhysRange], footprint: u64) -> impl Iterator<Item = u64> + '_ {
    ram.iter().flat_map(move |r| {
        let first = r.start.next_multiple_of(TWO_MIB);
        let last = r.end.saturating_sub(footprint);
        (first..=last)
            .step_by(TWO_MIB as usize)
            .filter(move |&t| t + footprint <= r.end && r.end >= footprint)
    })
}

impl CaseSpec {
    /// The case `choices` pick (missing choices count as 0), or why the spec has none.
    pub fn case(&self, choices: &[u64]) -> Result<Case, CaseError> {
        let mut c = Choices(choices.iter());
        let paging = *self
            .paging
            .get(c.below(self.paging.len() as u64) as usize)
            .ok_or(CaseError::NoPagingMode)?;
        let (min, max) = self.image_size;
        let (lo, hi) = (min.div_ceil(PAGE_SIZE).max(1), max / PAGE_SIZE);
        if lo > hi {
            return Err(CaseError::BadImageSize { min, max });
        }
        let size = (lo + c.below(hi - lo + 1)) * PAGE_SIZE;
        let footprint = size.next_multiple_of(TWO_MIB);
        let ram = match &self.ram {
            RamSpec::Fixed(ram) => ram.clone(),
            RamSpec::Random => {
                let top = (64 + 2 * c.below(97)) * MIB;
                let mut ram = vec![PhysRange::new(0, 0x9_fc00)];
                let hole = c.below(2) == 1;
                let (hole_start, hole_len) = (
                    top / 2 + c.below(top / 4 / TWO_MIB) * TWO_MIB,
                    (1 + c.below(4)) * TWO_MIB,
                );
                if hole {
                    ram.push(PhysRange::new(MIB, hole_start));
                    ram.push(PhysRange::new(hole_start + hole_len, top));
                } else {
                    ram.push(PhysRange::new(MIB, top));
                }
                if c.below(3) == 2 {
                    ram.push(PhysRange::new(4 * GIB, 4 * GIB + 64 * MIB));
                }
                ram
            }
        };
        let base = match self.image_base {
            Some(base) => {
                let fits =
                    base.is_multiple_of(TWO_MIB) && ram.iter().any(|r| r.contains_span(base, size));
                fits.then_some(base)
                    .ok_or(CaseError::NoRoomForImage { size })?
            }
            None => {
                // The lower half of the first range that holds it, so targets above exist.
                let r = ram
                    .iter()
                    .find(|r| slots(std::slice::from_ref(*r), footprint).next().is_some())
                    .ok_or(CaseError::NoRoomForImage { size })?;
                let candidates: Vec<u64> = slots(std::slice::from_ref(r), footprint).collect();
                let half = candidates.len().div_ceil(2) as u64;
                candidates[c.below(half) as usize]
            }
        };
        let image = PhysRange::new(base, base + size);
        let image_footprint = PhysRange::new(base, base + footprint);
        let targets: Vec<u64> = match self.target {
            TargetSpec::Fixed(t) => vec![t],
            _ => slots(&ram, footprint)
                .filter(|&t| !PhysRange::new(t, t + footprint).overlaps(&image_footprint))
                .filter(|&t| match self.target {
                    TargetSpec::Above => t > base,
                    TargetSpec::Below => t < base,
                    _ => true,
                })
                .collect(),
        };
        if targets.is_empty() {
            return Err(CaseError::NoRoomForTarget { image_base: base });
        }
        let target = targets[c.below(targets.len() as u64) as usize];
        let mut extra = ExtraMappings::default();
        if self.extra_tables && c.below(2) == 1 {
            let pages = size / PAGE_SIZE;
            let mut picked: Vec<u64> = (0..1 + c.below(6)).map(|_| c.below(pages)).collect();
            picked.sort_unstable();
            picked.dedup();
            extra.image_pages = picked;
            extra.gib_leaf = c.below(2) == 1;
        }
        Ok(Case {
            paging,
            ram,
            image,
            target,
            extra,
        })
    }
}

impl Case {
    /// The image's 2 MiB-rounded footprint.
    pub fn footprint(&self) -> PhysRange {
        PhysRange::new(
            self.image.start,
            self.image.start + self.image.len().next_multiple_of(TWO_MIB),
        )
    }

    /// reloc-sim memory with this case's RAM, and garbage at the destination and between
    /// the image's end and its footprint's end ([`Case::scribble`]).
    pub fn memory(&self) -> SparseMemory {
        let mut mem = SparseMemory::new(&self.ram);
        self.scribble(&mut mem);
        mem
    }

    /// Writes garbage into `mem` (any reloc-core memory: a `DirectMap` buffer too) where a
    /// correct relocation must overwrite it (the destination) or ignore it (past the image's
    /// end, inside its footprint): a qword in every 4 KiB page of those ranges in RAM.
    pub fn scribble<M: PhysMemory + ?Sized>(&self, mem: &mut M) {
        let dest = PhysRange::new(self.target, self.target + self.footprint().len());
        let tail = PhysRange::new(self.image.end, self.footprint().end);
        for (n, range) in [dest, tail].into_iter().enumerate() {
            let mut page = range.start.next_multiple_of(8);
            while page < range.end {
                let value = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (n as u64 + 1) | 1;
                if mem.check_range(page, 8).is_ok() {
                    mem.write_u64(page, value);
                }
                page = (page & !(PAGE_SIZE - 1)) + PAGE_SIZE + 8 * (page % 61);
            }
        }
    }

    /// Adds this case's [`ExtraMappings`] to the tables under `top_table` in `mem`, taking
    /// new tables from `alloc_table` (page addresses inside the image, where reloc-core
    /// requires every table; they are zeroed here). Mapping over an existing leaf is
    /// [`LayoutError::Conflict`]; a table outside `mem` is [`LayoutError::Memory`].
    pub fn write_extra<M: PhysMemory + ?Sized>(
        &self,
        mem: &mut M,
        top_table: u64,
        alloc_table: &mut dyn FnMut() -> u64,
    ) -> Result<(), LayoutError> {
        let levels = match self.paging {
            PagingMode::FiveLevel => 5,
            _ => 4,
        };
        for (i, &page) in self.extra.image_pages.iter().enumerate() {
            let virt = EXTRA_VIRT + i as u64 * PAGE_SIZE;
            let phys = self.image.start + page * PAGE_SIZE;
            map(
                mem,
                top_table,
                levels,
                virt,
                1,
                phys | SMALL_FLAGS,
                alloc_table,
            )?;
        }
        if self.extra.gib_leaf {
            map(
                mem,
                top_table,
                levels,
                EXTRA_VIRT + GIB,
                3,
                0x83,
                alloc_table,
            )?;
        }
        Ok(())
    }
}

/// Writes `entry` for `virt` at level `leaf_level`, creating tables from `alloc`.
fn map<M: PhysMemory + ?Sized>(
    mem: &mut M,
    top: u64,
    levels: u8,
    virt: u64,
    leaf_level: u8,
    entry: u64,
    alloc: &mut dyn FnMut() -> u64,
) -> Result<(), LayoutError> {
    let slot =
        |table: u64, level: u8| table + ((virt >> (12 + 9 * (u32::from(level) - 1))) & 511) * 8;
    let in_mem = |mem: &M, at: u64| {
        mem.check_range(at, 8)
            .map_err(|f| LayoutError::Memory(crate::mem::PhysFault::NotRam { addr: f.addr }))
    };
    let mut table = top;
    for level in (leaf_level + 1..=levels).rev() {
        let at = slot(table, level);
        in_mem(mem, at)?;
        let e = mem.read_u64(at);
        if e & 1 == 0 {
            let new = alloc();
            in_mem(mem, new)?;
            in_mem(mem, new + PAGE_SIZE - 8)?;
            for i in 0..512 {
                mem.write_u64(new + i * 8, 0);
            }
            mem.write_u64(at, new | PTR_FLAGS);
            table = new;
        } else if e & (1 << 7) != 0 && level <= 3 {
            return Err(LayoutError::Conflict { virt });
        } else {
            table = e & 0x000f_ffff_ffff_f000;
        }
    }
    let at = slot(table, leaf_level);
    in_mem(mem, at)?;
    if mem.read_u64(at) & 1 != 0 {
        return Err(LayoutError::Conflict { virt });
    }
    mem.write_u64(at, entry);
    Ok(())
}

/// Proptest strategy: cases of `spec`, shrinking towards the simplest.
#[cfg(feature = "proptest")]
pub fn arb_case(spec: CaseSpec) -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::prelude::*;
    proptest::collection::vec(any::<u64>(), CHOICES).prop_filter_map(
        "the case spec admits no case for these choices",
        move |choices| spec.case(&choices).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_list_gives_a_consistent_case() {
        let mut r = crate::layout::SplitMix::new(7);
        for target in [TargetSpec::Anywhere, TargetSpec::Above, TargetSpec::Below] {
            let spec = CaseSpec {
                target,
                ..CaseSpec::default()
            };
            for _ in 0..500 {
                let choices: Vec<u64> = (0..CHOICES).map(|_| r.next_u64()).collect();
                let case = match spec.case(&choices) {
                    Ok(c) => c,
                    // An image in the lowest slot has nothing below it.
                    Err(CaseError::NoRoomForTarget { .. }) if target == TargetSpec::Below => {
                        continue
                    }
                    Err(e) => panic!("{e}"),
                };
                let fp = case.footprint();
                let dest = PhysRange::new(case.target, case.target + fp.len());
                assert!(case.ram.iter().any(|r| r.contains_span(fp.start, fp.len())));
                assert!(case
                    .ram
                    .iter()
                    .any(|r| r.contains_span(dest.start, dest.len())));
                assert!(!dest.overlaps(&fp), "{case:?}");
                assert!(case.image.start.is_multiple_of(TWO_MIB));
                assert!(case.target.is_multiple_of(TWO_MIB));
                match target {
                    TargetSpec::Above => assert!(case.target > case.image.start),
                    TargetSpec::Below => assert!(case.target < case.image.start),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn no_choices_give_the_simplest_case() {
        let case = CaseSpec::default().case(&[]).unwrap();
        assert_eq!(case.paging, PagingMode::FourLevel);
        assert_eq!(case.image, PhysRange::new(2 * MIB, 4 * MIB));
        assert_eq!(case.extra, ExtraMappings::default());
    }

    #[test]
    fn a_spec_without_room_is_a_typed_error() {
        let spec = CaseSpec {
            ram: RamSpec::Fixed(vec![PhysRange::new(0, 3 * MIB)]),
            ..CaseSpec::default()
        };
        assert_eq!(
            spec.case(&[]),
            Err(CaseError::NoRoomForTarget { image_base: 0 })
        );
        let spec = CaseSpec {
            paging: Vec::new(),
            ..CaseSpec::default()
        };
        assert_eq!(spec.case(&[]), Err(CaseError::NoPagingMode));
    }

    #[test]
    fn extra_mappings_refuse_to_overwrite_a_leaf() {
        let case = Case {
            paging: PagingMode::FourLevel,
            ram: vec![PhysRange::new(0, 8 * MIB)],
            image: PhysRange::new(2 * MIB, 4 * MIB),
            target: 4 * MIB,
            extra: ExtraMappings {
                image_pages: vec![0, 0],
                gib_leaf: false,
            },
        };
        let mut mem = SparseMemory::new(&case.ram);
        let mut next = 2 * MIB + 0x1000;
        let mut alloc = || {
            next += 0x1000;
            next
        };
        // Two extra pages: the second maps a different virtual page, so no conflict.
        case.write_extra(&mut mem, 2 * MIB, &mut alloc).unwrap();
        // Writing the same mappings again hits the leaves just written.
        assert_eq!(
            case.write_extra(&mut mem, 2 * MIB, &mut alloc),
            Err(LayoutError::Conflict { virt: EXTRA_VIRT })
        );
    }
}
