//! One relocation end to end on a simulated machine: choose the target, plan, copy and
//! rebase, run code in the critical region (a stack spill), switch, and verify every
//! property. This is what `reloc-sim demo` and `reloc-sim replay` run.

use std::fmt;
use std::time::{Duration, Instant};

use reloc_core::switch::{RelocateError, SimulatedDirectMap, SwitchError, SwitchParams};
use reloc_core::{
    select_target, ApplyReport, Level, MemoryRegion, PhysAddr, PhysRange, Plan, PlanError,
    SelectError, TargetRequest,
};

use crate::check::{self, Property, Violation};
use crate::layout::SwitchAddresses;
use crate::machine::{AccessFault, Machine, SwitchFault, SwitchOptions, SwitchReport};
use crate::relocators::{Relocator, Request};

/// Where the image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This base.
    Fixed(u64),
    /// reloc-core's selection over the memory map.
    Auto,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunInput {
    /// The machine, paging on.
    pub machine: Machine,
    /// The firmware memory map (for automatic selection).
    pub memmap: Vec<MemoryRegion>,
    /// The request; `new_base` is replaced when `target` is `Auto`.
    pub request: Request,
    /// Target.
    pub target: Target,
    /// Virtual layout for the switch; without it the stack is not re-copied and no spill is
    /// simulated.
    pub virt: Option<SwitchAddresses>,
}

impl RunInput {
    /// A random machine moved to its chosen target, with its virtual layout (so the run
    /// warms the TLB, spills to the stack and re-copies it).
    pub fn from_random(
        rl: &crate::layout::RandomLayout,
    ) -> Result<Self, crate::layout::LayoutError> {
        let (machine, layout) = rl.build()?;
        Ok(Self {
            machine,
            memmap: Vec::new(),
            request: layout.request(rl.target),
            target: Target::Fixed(rl.target),
            virt: Some(layout.virt),
        })
    }
}

/// How to run.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Which relocator copies and rebases.
    pub relocator: Relocator,
    /// The switch sequence.
    pub switch: SwitchOptions,
    /// Also run the naive walk on a copy of the machine and check it agrees (claimed only
    /// for layouts without sharing).
    pub compare_naive: bool,
    /// Re-run the switch without the PGE toggle on a copy and count the stale entries it
    /// leaves (a control showing what the toggle prevents).
    pub pge_control: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            relocator: Relocator::Core,
            switch: SwitchOptions::CORE,
            compare_naive: false,
            pge_control: false,
        }
    }
}

/// Why a run stopped before the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// No target fits.
    Select(SelectError),
    /// reloc-core rejected the request.
    Plan(PlanError),
    /// The virtual layout does not fit the plan (`SwitchParams::new` refused).
    Switch(SwitchError),
    /// The switch refused to start (`relocate`'s checks: the stack pointer).
    Relocate(RelocateError),
    /// The simulated code faulted.
    Access(AccessFault),
    /// The virtual layout does not hold before the move: bad input, not a finding.
    Virtual(VirtualError),
}

/// Why the code could not run in its virtual layout before the move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualError {
    /// The image's virtual range passes 2^64.
    ImageWraps {
        /// Virtual image start.
        image_start: u64,
        /// Image length.
        len: u64,
    },
    /// Touching the image or writing the stack faulted (`rsp` misaligned, a page unmapped or
    /// read-only, a frame outside RAM).
    Fault(AccessFault),
}

impl fmt::Display for VirtualError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtualError::ImageWraps { image_start, len } => write!(
                f,
                "virtual image start {image_start:#x} plus the image length {len:#x} passes 2^64"
            ),
            VirtualError::Fault(e) => write!(
                f,
                "the image or stack is not usable at its virtual addresses before the move: {e}"
            ),
        }
    }
}

impl RunError {
    /// The error kind, as scenario files name it (`NoRoom`, `RangesOverlap`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Select(e) => match e {
                SelectError::EmptyImage => "SelectEmptyImage",
                SelectError::BadAlignment { .. } => "BadAlignment",
                SelectError::NoRoom { .. } => "NoRoom",
                // `SelectError` is `#[non_exhaustive]`: a variant added later.
                _ => "SelectOther",
            },
            RunError::Plan(e) => plan_error_kind(e),
            RunError::Switch(e) => switch_error_kind(e),
            RunError::Relocate(e) => relocate_error_kind(e),
            RunError::Access(_) => "Access",
            RunError::Virtual(_) => "VirtualLayout",
        }
    }
}

/// The variant name of a [`SwitchError`].
pub fn switch_error_kind(e: &SwitchError) -> &'static str {
    match e {
        SwitchError::StackOutsideImage { .. } => "StackOutsideImage",
        SwitchError::StackMisaligned { .. } => "StackMisaligned",
        SwitchError::LayoutMismatch { .. } => "LayoutMismatch",
        SwitchError::StackMismatch { .. } => "StackMismatch",
        SwitchError::DestinationOutsideDirectMap { .. } => "DestinationOutsideDirectMap",
        SwitchError::ImageOutsideDirectMap { .. } => "ImageOutsideDirectMap",
        SwitchError::StackOverlapsTable { .. } => "StackOverlapsTable",
        SwitchError::NonCanonical { .. } => "NonCanonical",
        SwitchError::DirectMapAliasNonCanonical { .. } => "DirectMapAliasNonCanonical",
        // `SwitchError` is non-exhaustive: a variant added later is named by its step.
        _ => "Switch",
    }
}

/// The variant name of a [`RelocateError`].
pub fn relocate_error_kind(e: &RelocateError) -> &'static str {
    match e {
        RelocateError::DirectMapMismatch { .. } => "DirectMapMismatch",
        RelocateError::RspOutsideStack { .. } => "RspOutsideStack",
        // Non-exhaustive, as above.
        _ => "Relocate",
    }
}

/// Every [`PlanError`] variant name, as [`plan_error_kind`] gives it.
pub const PLAN_ERROR_KINDS: [&str; 18] = [
    "InvalidMaxPhysBits",
    "EmptyImage",
    "ImageMisaligned",
    "NewBaseMisaligned",
    "InvalidEncryptionMask",
    "RangeBeyondMaxPhys",
    "RangesOverlap",
    "Inaccessible",
    "TableMisaligned",
    "TableOutsideImage",
    "PointerOutsideImage",
    "MalformedEntry",
    "ImageLeafOutsideImage",
    "ImageMappedBy4KiBLeaf",
    "ImageMapNotReached",
    "ImageMapAliased",
    "RebasedEntryBeyondMaxPhys",
    "TooManyTables",
];

/// The variant name of a [`PlanError`].
pub fn plan_error_kind(e: &PlanError) -> &'static str {
    match e {
        PlanError::InvalidMaxPhysBits { .. } => "InvalidMaxPhysBits",
        PlanError::EmptyImage { .. } => "EmptyImage",
        PlanError::ImageMisaligned { .. } => "ImageMisaligned",
        PlanError::NewBaseMisaligned { .. } => "NewBaseMisaligned",
        PlanError::InvalidEncryptionMask { .. } => "InvalidEncryptionMask",
        PlanError::RangeBeyondMaxPhys { .. } => "RangeBeyondMaxPhys",
        PlanError::RangesOverlap { .. } => "RangesOverlap",
        PlanError::Inaccessible { .. } => "Inaccessible",
        PlanError::TableMisaligned { .. } => "TableMisaligned",
        PlanError::TableOutsideImage { .. } => "TableOutsideImage",
        PlanError::PointerOutsideImage { .. } => "PointerOutsideImage",
        PlanError::MalformedEntry { .. } => "MalformedEntry",
        PlanError::ImageLeafOutsideImage { .. } => "ImageLeafOutsideImage",
        PlanError::ImageMappedBy4KiBLeaf { .. } => "ImageMappedBy4KiBLeaf",
        PlanError::ImageMapNotReached { .. } => "ImageMapNotReached",
        PlanError::ImageMapAliased { .. } => "ImageMapAliased",
        PlanError::RebasedEntryBeyondMaxPhys { .. } => "RebasedEntryBeyondMaxPhys",
        PlanError::TooManyTables { .. } => "TooManyTables",
        // `PlanError` is `#[non_exhaustive]`: a variant added later (name it here and in
        // `PLAN_ERROR_KINDS`).
        _ => "PlanOther",
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Select(e) => write!(f, "target selection failed: {e}"),
            RunError::Plan(e) => write!(f, "relocation rejected: {e}"),
            RunError::Switch(e) => write!(f, "switch parameters rejected: {e}"),
            RunError::Relocate(e) => write!(f, "switch refused: {e}"),
            RunError::Access(e) => write!(f, "simulated code faulted: {e}"),
            RunError::Virtual(e) => write!(f, "bad virtual layout: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

pub use crate::check::PropertyOutcome;

/// Everything a run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The request as run (with the chosen base).
    pub request: Request,
    /// True when reloc-core's selection chose the base.
    pub target_selected: bool,
    /// Copy and rebase.
    pub apply: ApplyReport,
    /// The switch.
    pub switch: SwitchReport,
    /// TLB entries cached before the switch.
    pub tlb_entries_before: usize,
    /// Virtual ranges (coalesced) compared by the mapping check.
    pub ranges_verified: usize,
    /// Leaves compared by the mapping check.
    pub leaves_verified: usize,
    /// Writes made through the old mapping in the critical region.
    pub critical_writes: usize,
    /// Of those, rescued by the stack re-copy.
    pub critical_writes_rescued: usize,
    /// Stale global entries left when the same switch runs without the PGE toggle.
    pub stale_without_pge: Option<usize>,
    /// Every property checked.
    pub properties: Vec<PropertyOutcome>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// The machine after the run.
    pub machine: Machine,
}

impl RunReport {
    /// True when every property held.
    pub fn passed(&self) -> bool {
        self.properties.iter().all(|p| p.result.is_ok())
    }

    /// The first violation.
    pub fn first_violation(&self) -> Option<(Property, &Violation)> {
        self.properties
            .iter()
            .find_map(|p| p.result.as_ref().err().map(|v| (p.property, v)))
    }

    /// Per-level counts of `counts` for L5..L2 as "L4 1, L3 3, ...".
    pub fn per_level(counts: &reloc_core::PerLevel) -> String {
        [Level::L5, Level::L4, Level::L3, Level::L2]
            .iter()
            .filter(|&&l| counts.get(l) > 0)
            .map(|&l| format!("{l} {}", counts.get(l)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the first qword of every page the virtual range `[start, start + len)` translates
/// through, as running code touches its image: one read per translation (4 KiB, 2 MiB or
/// 1 GiB), since every address under one leaf shares its TLB entry and its faults. The
/// range must not pass 2^64 (the caller's layout check rejects that).
fn touch_image(machine: &mut Machine, start: u64, len: u64) -> Result<(), AccessFault> {
    let mut offset = 0u64;
    while offset < len {
        let va = start.wrapping_add(offset);
        machine.read_virt(va)?;
        let size = machine.tlb().lookup(va).map_or(4096, |e| e.size);
        offset = offset.saturating_add(size - (va & (size - 1)));
    }
    Ok(())
}

/// The spill value written in the critical region.
const SPILL: u64 = 0x5917_1000_dead_beef;

/// Runs one relocation end to end. `Err` only when it could not run; property violations are
/// in the report.
pub fn run(input: RunInput, options: RunOptions) -> Result<RunReport, RunError> {
    run_planned::<DEFAULT_CAPACITY>(input, options, None)
}

/// Tables a plan holds in [`run`]: reloc-core's default, what boot code would use.
pub const DEFAULT_CAPACITY: usize = 64;

/// As [`run`], with plans of `N` tables: layouts with more tables than
/// [`DEFAULT_CAPACITY`] (a directmap of hundreds of GiB with 2 MiB leaves).
pub fn run_with_capacity<const N: usize>(
    input: RunInput,
    options: RunOptions,
) -> Result<RunReport, RunError> {
    run_planned::<N>(input, options, None)
}

/// As [`run`], given the plan of `input`'s request made on `input`'s memory (the fuzzer plans
/// first, to tell rejections apart): a plan for the same move (old image and new base) is
/// used instead of walking the tables again; any other is ignored.
pub fn run_planned<const N: usize>(
    input: RunInput,
    options: RunOptions,
    planned: Option<Plan<N>>,
) -> Result<RunReport, RunError> {
    let start = Instant::now();
    let RunInput {
        mut machine,
        memmap,
        mut request,
        target,
        virt,
    } = input;
    let footprint = PhysRange::new(
        request.image.start,
        request.image.start.saturating_add(
            request
                .image
                .len()
                .checked_next_multiple_of(2 << 20)
                .unwrap_or(u64::MAX),
        ),
    );
    if let Target::Auto = target {
        let avoid = [footprint];
        request.new_base = select_target(&memmap, &TargetRequest::new(request.image.len(), &avoid))
            .map_err(RunError::Select)?;
    }

    // Planned before the simulated code runs (it writes to its stack), as the code itself
    // would plan.
    let plan: Plan<N> = match planned {
        Some(p)
            if p.old_image() == request.image
                && p.new_image().start == request.new_base.as_u64() =>
        {
            p
        }
        _ => Plan::new_with_capacity(&machine.mem, &request.as_core()).map_err(RunError::Plan)?,
    };

    // The switch's layout checks (reloc-core's typed errors) come before the simulated code
    // runs in that layout.
    let params = match virt {
        Some(v) => Some(
            SwitchParams::new(
                &plan,
                &SimulatedDirectMap::new(&machine.mem, v.directmap()),
                &v.core(),
            )
            .map_err(RunError::Switch)?,
        ),
        None => None,
    };
    // Warm the TLB the way running code would: every image page, the stack. A fault here is
    // the layout's: the code could not have run there before the move.
    if let Some(v) = virt {
        let len = request.image.len();
        if len
            .checked_sub(1)
            .is_some_and(|last| v.image_start.checked_add(last).is_none())
        {
            return Err(RunError::Virtual(VirtualError::ImageWraps {
                image_start: v.image_start,
                len,
            }));
        }
        let fault = |e| RunError::Virtual(VirtualError::Fault(e));
        touch_image(&mut machine, v.image_start, len).map_err(fault)?;
        machine
            .write_virt(machine.rsp, 0x5eed_0000_0000_0001)
            .map_err(fault)?;
    }
    let before = machine.mem.clone();
    let before_cfg = machine.walk_config();
    let mut properties = Vec::new();

    // A rejected request must leave memory bit-identical: try one (a destination 4 KiB off
    // the 2 MiB grid) with the same relocator.
    let mut rejected = request.clone();
    rejected.new_base = PhysAddr::new_truncate(request.new_base.as_u64().wrapping_add(4096));
    let rejected_result = match options
        .relocator
        .relocate_with::<N>(&mut machine, &rejected)
    {
        Ok(_) => Err(Violation::Unwalkable(
            "a request with a misaligned destination was accepted".into(),
        )),
        Err(_) => check::check_untouched(&before, &machine.mem).map(|()| {
            "an invalid request (misaligned destination) left memory bit-identical".to_string()
        }),
    };
    if rejected_result.is_err() {
        machine.mem = before.clone();
    }
    properties.push(PropertyOutcome {
        property: Property::RejectedUntouched,
        result: rejected_result,
    });

    let naive_memory = options.compare_naive.then(|| {
        let mut m = machine.clone();
        let _ = Relocator::NaiveXen.relocate_with::<N>(&mut m, &request);
        m.mem
    });

    // reloc-core's relocator applies the plan just made (planning again would read the same
    // memory to the same plan); the others plan their own way.
    let apply = if options.relocator == Relocator::Core {
        machine.apply(&plan)
    } else {
        options
            .relocator
            .relocate_with::<N>(&mut machine, &request)
            .map_err(RunError::Plan)?
    };
    let moving = check::entries_that_move(&before, &before_cfg, &request.image_map_addrs());
    properties.extend(check::copy_outcomes(
        &before,
        &machine.mem,
        &request,
        &moving,
    ));
    if let Some(naive) = naive_memory {
        properties.push(PropertyOutcome {
            property: Property::NaiveAgrees,
            result: check::check_naive(&machine.mem, &naive)
                .map(|()| "naive add-per-visit walk wrote the same bytes".into()),
        });
    }

    // Critical region: compiled code spills a temporary to the stack, through the old
    // mapping. Only the stack re-copy carries it over.
    let spill_at = machine.rsp + 8;
    if virt.is_some() {
        machine
            .write_virt(spill_at, SPILL)
            .map_err(RunError::Access)?;
    }
    let critical_writes = machine.lost_writes().count();
    let control = options.pge_control.then(|| machine.clone());
    let switch = machine
        .switch(&plan, params.as_ref(), options.switch)
        .map_err(|f| match f {
            SwitchFault::Refused(e) => RunError::Relocate(e),
            SwitchFault::Access(e) => RunError::Access(e),
        })?;
    let critical_writes_rescued = machine
        .lost_writes()
        .filter(|w| {
            machine
                .mem
                .read(w.phys.wrapping_add(request.delta()))
                .is_ok_and(|v| v == w.value)
        })
        .count();
    // The code after the switch reloads its spill and runs on, touching its image. A fault
    // here is the machine crashing: reported as a violation, the other checks still run.
    let mut crash = None;
    if let Some(v) = virt {
        let mut touch = || -> Result<(), AccessFault> {
            machine.read_virt(spill_at)?;
            touch_image(&mut machine, v.image_start, request.image.len())
        };
        crash = touch().err();
    }
    let stale_without_pge = match control {
        Some(mut c) => {
            let opts = SwitchOptions {
                toggle_pge: false,
                ..options.switch
            };
            c.switch(&plan, params.as_ref(), opts)
                .map_err(|f| match f {
                    SwitchFault::Refused(e) => RunError::Relocate(e),
                    SwitchFault::Access(e) => RunError::Access(e),
                })?;
            Some(check::stale_tlb_entries(&c, request.image).len())
        }
        None => None,
    };

    let mapping = check::check_mappings(
        &before,
        &before_cfg,
        &machine.mem,
        &machine.walk_config(),
        &request,
        &moving,
    );
    let (ranges_verified, leaves_verified) =
        mapping.as_ref().map_or((0, 0), |s| (s.ranges, s.leaves));
    properties.push(PropertyOutcome {
        property: Property::Mappings,
        result: mapping.map(|s| {
            format!(
                "{} leaves in {} ranges, {} moved by delta, the rest unchanged",
                s.leaves, s.ranges, s.moved
            )
        }),
    });
    properties.push(PropertyOutcome {
        property: Property::TlbCoherent,
        result: check::check_tlb(&machine, request.image)
            .map(|n| format!("{n} cached entries agree with the new tables")),
    });
    properties.push(PropertyOutcome {
        property: Property::NoStaleReads,
        result: match crash {
            Some(fault) => Err(Violation::Crash(fault)),
            None => check::check_stale_reads(&machine),
        }
        .map(|()| {
            if virt.is_some() {
                "the stack spill made in the critical region was read back intact".into()
            } else {
                "no code ran in the critical region".into()
            }
        }),
    });
    properties.sort_by_key(|p| p.property);
    Ok(RunReport {
        target_selected: target == Target::Auto,
        request,
        apply,
        switch,
        tlb_entries_before: switch.tlb_entries_before,
        ranges_verified,
        leaves_verified,
        critical_writes,
        critical_writes_rescued,
        stale_without_pge,
        properties,
        elapsed: start.elapsed(),
        machine,
    })
}
