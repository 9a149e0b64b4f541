//! What the stub does once in long mode: read the boot information, choose a target, plan,
//! relocate, and check on the CPU that the image now runs from the new physical copy.

use core::fmt;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU64, Ordering};

use reloc_core::switch::{self, RelocateError, SwitchError, SwitchParams, VirtualLayout};
use reloc_core::{
    DirectMap, MaxPhysAddr, PagingMode, PhysAddr, PhysMemory, PhysRange, Plan, PlanError,
    RelocationRequest, SelectError, VirtAddr, IMAGE_ALIGN,
};
use x86_64::registers::control::Cr3;

use crate::boot::{Boot, BootError};

use crate::exit::{exit, halt_forever, ExitCode};
use crate::in_place::InPlace;
use crate::layout::{
    DIRECTMAP_BASE, DIRECTMAP_SIZE, IMAGE_PHYS, IMAGE_VIRT, KERNEL_VIRT_OFFSET, STACK_SIZE,
};
use crate::walk::translate;
use crate::{cpu, entry, fault, idt, println, ram, serial, stack};

/// The plan, built in place (`Plan::new_in_place`).
static PLAN: InPlace<Plan> = InPlace::new(Plan::empty());

/// A global written before the copy (in the old image) and again after the switch (which must
/// land in the new copy only).
static SWITCH_MARK: AtomicU64 = AtomicU64::new(0);
/// What `SWITCH_MARK` holds before the copy: "PRE_SWIT".
const PRE_SWITCH_MARK: u64 = 0x5449_5753_5f45_5250;
/// Mixed into the post-switch value of `SWITCH_MARK`: "POSTSWIT".
const POST_SWITCH_SALT: u64 = 0x5449_5753_5453_4f50;

/// Why the stub stopped, one class per exit code.
enum Failure {
    BootInfo(BootError),
    NoRoom(SelectError),
    Layout(&'static str, u64),
    Plan(PlanError),
    Switch(SwitchError),
    Relocate(RelocateError),
    Verify(u32),
    /// The image's range is not all RAM in the memory map: the first address that is not.
    ImageNotRam(PhysRange, u64),
}

impl Failure {
    fn code(&self) -> ExitCode {
        match self {
            Failure::BootInfo(_) => ExitCode::BadBootInfo,
            Failure::NoRoom(_) => ExitCode::NoRoom,
            Failure::Layout(..) | Failure::Plan(_) | Failure::Switch(_) | Failure::Relocate(_) => {
                ExitCode::PlanError
            }
            Failure::Verify(_) => ExitCode::VerifyFailed,
            Failure::ImageNotRam(..) => ExitCode::ImageNotRam,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BootInfo(e) => write!(f, "bad boot info: {e}"),
            Failure::NoRoom(e) => write!(f, "no room: {e}"),
            Failure::Layout(what, value) => write!(f, "plan error: unexpected {what} {value:#x}"),
            Failure::Plan(e) => write!(f, "plan error: {e}"),
            Failure::Switch(e) => write!(f, "plan error: switch parameters: {e}"),
            Failure::Relocate(e) => write!(f, "plan error: switch refused: {e}"),
            Failure::Verify(n) => write!(f, "verification failed: {n} check(s) differ"),
            Failure::ImageNotRam(image, at) => write!(
                f,
                "image not in RAM: the image {image} is loaded over {at:#x}, which the memory \
                 map does not report as RAM"
            ),
        }
    }
}

enum Outcome {
    Exit,
    Hold,
}

/// Called by the entry code on the boot stack, interrupts off, with the entry the loader used
/// (`entry::ENTRY_*`), the loader's `%eax` and the physical address of its boot information
/// (`hvm_start_info` or the multiboot2 MBI).
#[unsafe(no_mangle)]
pub extern "C" fn stub_main(entry: u32, loader_eax: u32, info_paddr: u32) -> ! {
    idt::install();
    serial::init();
    if entry == entry::ENTRY_MULTIBOOT2 {
        println!("boot-stub: multiboot2 entry, eax {loader_eax:#x}, MBI at {info_paddr:#x}");
    } else {
        println!("boot-stub: PVH entry, hvm_start_info at {info_paddr:#x}");
    }
    idt::report_inherited();
    // The high-water mark counts from here: everything `run` does up to the switch.
    let stack_base = stack::repaint_unused(&raw const entry::stack_bottom as u64);
    match run(entry, loader_eax, info_paddr, stack_base) {
        Ok(Outcome::Exit) => exit(ExitCode::Success),
        Ok(Outcome::Hold) => {
            println!("reloc: holding");
            halt_forever()
        }
        Err(failure) => {
            println!("reloc: FAILED: {failure}");
            exit(failure.code())
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!("panic: {} at {}:{}", info.message(), at.file(), at.line()),
        None => println!("panic: {} at an unknown location", info.message()),
    }
    exit(ExitCode::Panic)
}

/// Physical address of an image symbol before relocation.
fn image_phys(virt: u64) -> u64 {
    virt - KERNEL_VIRT_OFFSET
}

/// CPUID 0x80000008 EAX[7:0]; 36 if the leaf is missing (the architectural minimum).
fn max_phys_bits() -> u8 {
    let max_leaf = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_leaf >= 0x8000_0008 {
        (core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff) as u8
    } else {
        36
    }
}

/// An address in L4 slot 1, which no boot table maps: the `pf` fault injection reads it.
const UNMAPPED_VIRT: u64 = 1 << 39;

/// The time-stamp counter, for the cycle counts of planning and of the relocation.
fn tsc() -> u64 {
    // SAFETY: RDTSC has no memory effect; CR4.TSD is clear at ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Where image address `addr` lands in the copy.
fn relocated(plan: &Plan, addr: u64) -> Result<u64, Failure> {
    PhysAddr::try_new(addr)
        .ok()
        .and_then(|a| plan.relocated(a))
        .map(PhysAddr::as_u64)
        .ok_or(Failure::Layout("image address", addr))
}

/// FNV-1a over the loader's boot information (`hvm_start_info` or the MBI, outside the
/// image), salted with `salt`: recomputable after the switch from memory that did not move.
fn fingerprint<M: PhysMemory + ?Sized>(mem: &M, range: PhysRange, salt: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    let mut addr = range.start & !7;
    while addr < range.end {
        if mem.check_range(addr, 8).is_ok() {
            for byte in mem.read_u64(addr).to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
            }
        }
        addr += 8;
    }
    hash
}

/// Counts failed checks, printing each check as it goes.
struct Checks(u32);

impl Checks {
    fn check(&mut self, ok: bool, args: fmt::Arguments<'_>) {
        println!("verify: {args} {}", if ok { "ok" } else { "MISMATCH" });
        if !ok {
            self.0 += 1;
        }
    }
}

fn run(entry: u32, loader_eax: u32, info_paddr: u32, stack_base: u64) -> Result<Outcome, Failure> {
    // SAFETY: the entry code maps physical [0, 4 GiB) at DIRECTMAP_BASE with writable 2 MiB
    // leaves held in tables inside the image, so the mapping stays valid after the switch.
    // The engine writes only the destination, which no Rust reference points into; it reads
    // the image and the boot data, which Rust code only reads meanwhile.
    let mut mem =
        unsafe { DirectMap::new(DIRECTMAP_BASE as *mut u8, PhysRange::new(0, DIRECTMAP_SIZE)) };

    let boot = Boot::parse(&mut mem, entry, loader_eax, info_paddr).map_err(Failure::BootInfo)?;
    if boot.cmdline_has_word(&mem, "panic") {
        panic!("panic requested on the command line");
    }
    if boot.cmdline_has_word(&mem, "ud2") {
        // Fault injection: an invalid opcode, which the stub's IDT must report (exit 0x15).
        println!("boot: ud2 requested");
        // SAFETY: raises #UD, which `idt::stub_exception` turns into a panic: never returns.
        unsafe { core::arch::asm!("ud2", options(noreturn)) };
    }
    if boot.cmdline_has_word(&mem, "pf") {
        // Fault injection: a read of an address no table maps (L4 slot 1 is empty), a page
        // fault whose error code the CPU pushes; the stub's IDT must report it with CR2.
        println!("boot: pf requested: reading {UNMAPPED_VIRT:#x}");
        // SAFETY: the read faults (nothing maps L4 slot 1: `entry`'s tables fill slots 0,
        // 256 and 511 only), and `idt::stub_exception` turns #PF into a panic: it never
        // returns a value, so no memory is read.
        let value = unsafe { core::ptr::read_volatile(UNMAPPED_VIRT as *const u64) };
        panic!("pf: read of unmapped {UNMAPPED_VIRT:#x} returned {value:#x}");
    }

    let image = PhysRange::new(
        image_phys(&raw const entry::__image_start as u64),
        image_phys(&raw const entry::__image_end as u64),
    );
    if image.start != IMAGE_PHYS {
        return Err(Failure::Layout("image start", image.start));
    }
    println!(
        "image: {:#x} {:#x} virt {:#x}",
        image.start, image.end, IMAGE_VIRT
    );
    // A loader that does not check a fixed-address image against its map (GRUB-EFI does
    // not) may have put it over firmware memory (ACPI NVS, runtime services): refuse to run
    // from there rather than copy it on.
    if let Some(at) = ram::first_non_ram(boot.memory_map(), image) {
        return Err(Failure::ImageNotRam(image, at));
    }

    // The image first, then every piece of boot data.
    // What select_target_for avoids, printed for the tests' recomputation: the image first,
    // then every piece of boot data.
    for range in core::iter::once(image).chain(boot.avoid_ranges()) {
        println!("avoid: {:#x} {:#x}", range.start, range.end);
    }
    let target = boot.select_target(image).map_err(Failure::NoRoom)?;
    println!("target: {:#x}", target.as_u64());

    let bits = max_phys_bits();
    let max_phys = MaxPhysAddr::new(bits).ok_or(Failure::Layout("MAXPHYADDR", u64::from(bits)))?;
    let paging = cpu::report(boot.cmdline_has_word(&mem, "la57"))
        .map_err(|cr4| Failure::Layout("CR4 for this CPU and command line", cr4))?;
    let (cr3_frame, _) = Cr3::read_raw();
    let top_table = cr3_frame.start_address().as_u64();
    let boot_top = match paging {
        PagingMode::FourLevel => &raw const entry::pml4 as u64,
        PagingMode::FiveLevel => &raw const entry::pml5 as u64,
    };
    if top_table != image_phys(boot_top) {
        return Err(Failure::Layout("CR3", top_table));
    }
    let image_maps = [PhysAddr::new_truncate(image_phys(
        &raw const entry::l2_xenmap as u64,
    ))];
    let request = RelocationRequest {
        paging,
        top_table: cr3_frame.start_address(),
        image,
        new_base: target,
        image_maps: &image_maps,
        max_phys_bits: bits,
        encryption_mask: 0,
    };
    let tsc_plan = tsc();
    // Planned in place, in a static: a plan is several KiB, which the stack does not hold.
    let plan = PLAN.take().ok_or(Failure::Layout("plan taken twice", 0))?;
    plan.new_in_place(&mem, &request).map_err(Failure::Plan)?;
    let plan: &Plan = plan;
    let plan_cycles = tsc().wrapping_sub(tsc_plan);
    println!(
        "plan: {} -> {} top table {:#x} -> {:#x} MAXPHYADDR {bits}",
        plan.old_image(),
        plan.new_image(),
        top_table,
        plan.new_top_table().as_u64()
    );
    for table in plan.tables() {
        println!(
            "plan: table {:#x} {} rebased={} image_map={}",
            table.addr.as_u64(),
            table.level,
            table.rebased,
            table.image_map
        );
    }
    let stack_top = &raw const entry::stack_top as u64;
    let stack_bottom = &raw const entry::stack_bottom as u64;
    let layout = VirtualLayout {
        image_start: VirtAddr::new(IMAGE_VIRT),
        stack_bottom: VirtAddr::new(stack_bottom),
        stack_top: VirtAddr::new(stack_top),
    };
    let params = SwitchParams::new(plan, &mem, &layout).map_err(Failure::Switch)?;
    if x86_64::instructions::interrupts::are_enabled() {
        return Err(Failure::Layout("RFLAGS.IF", 1));
    }

    // Kept on the stack across the copy and the switch: computed from firmware memory that
    // does not move, so it can be recomputed afterwards and compared.
    let start_info = boot.info_range();
    let kept: [u64; 2] = {
        let fp = fingerprint(&mem, start_info, target.as_u64());
        [fp, !fp]
    };
    let kept_ptr: *const [u64; 2] = core::hint::black_box(&kept);
    SWITCH_MARK.store(PRE_SWITCH_MARK, Ordering::SeqCst);

    let skip_switch = boot.cmdline_has_word(&mem, "no-switch");
    let mut split_probe = None;
    let mut keep_pge = false;
    let tsc_apply = tsc();
    let report = if skip_switch {
        // Fault injection for the tests: copy and rebase but stay on the old tables. The
        // checks below must catch it.
        println!("reloc: no-switch requested: applying without switching");
        plan.apply(&mut mem)
    } else if let Some(toggle) = fault::requested(&boot, &mem) {
        // SAFETY: as for `switch::relocate` below, whose contract this function shares;
        // SWITCH_MARK is a static of the image.
        let (report, probed) =
            unsafe { fault::relocate_split(&params, &mut mem, &SWITCH_MARK, toggle) }
                .map_err(Failure::Relocate)?;
        split_probe = Some(probed);
        keep_pge = toggle == fault::PgeToggle::Keep;
        report
    } else {
        // SAFETY: ring 0, long mode, interrupts off since the entry's `cli` (checked just
        // above), one CPU. `mem` is the directmap, whose tables are in the image and so stay
        // mapped after the switch. `params` came from `SwitchParams::new` for this plan with
        // the real layout: the code, the statics and the whole boot stack (up to `stack_top`)
        // lie in the image. Nothing wrote the page tables since planning, and `l2_xenmap`
        // maps the image's own code, so the code after the CR3 load runs at the same virtual
        // address from the copy.
        unsafe { switch::relocate(&params, &mut mem) }.map_err(Failure::Relocate)?
    };
    let apply_cycles = tsc().wrapping_sub(tsc_apply);
    // First thing after the switch, before any check or print (see `stack`). Not with
    // `keep-pge`: there a stale global TLB entry may still send the live stack page to the
    // old copy, and reading that copy through the directmap (whose alias shares the stack
    // page's slot in Bochs' direct-mapped TLB) would evict it and lose the stack writes made
    // through it, which is not the failure that fault injection is there to show.
    if keep_pge {
        println!("stack: not measured under keep-pge (reading the old copy would evict the stale TLB entry)");
    } else {
        let stack_bottoms = [
            image_phys(stack_bottom),
            relocated(plan, image_phys(stack_bottom))?,
        ];
        let high_water = stack::high_water(&mem, stack_bottoms, stack_bottom, stack_base);
        println!("stack: high-water mark {high_water} bytes (parse + select + plan + switch)");
    }
    // Printed after the switch: nothing but the relocation runs in between. Under QEMU's TCG
    // the TSC does not follow guest instructions, so the counts are only indicative.
    println!(
        "tsc: plan {plan_cycles} cycles, apply{} {apply_cycles} cycles (copy of {:#x} bytes; indicative only under QEMU TCG)",
        if skip_switch { "" } else { "+switch" },
        image.len()
    );

    // From here on every check reads the live state.
    let mut checks = Checks(0);
    if let Some(probed) = split_probe {
        checks.check(
            probed == PRE_SWITCH_MARK,
            format_args!("global read between copy and switch {probed:#018x}"),
        );
    }
    let new_image = plan.new_image();
    println!(
        "apply: copied {:#x} tables {} pointers {} image leaves {}",
        report.bytes_copied,
        report.tables_rebased.total(),
        report.pointers_rebased.total(),
        report.image_leaves_rebased
    );
    // `report` was written to the stack after the bulk copy: it reads back right only if the
    // switch re-copied the live stack.
    let leaves_expected = image.len().div_ceil(IMAGE_ALIGN);
    checks.check(
        report.bytes_copied == image.len()
            && u64::from(report.image_leaves_rebased) == leaves_expected,
        format_args!(
            "apply report copied {:#x} (image {:#x}) leaves {} (expected {leaves_expected})",
            report.bytes_copied,
            image.len(),
            report.image_leaves_rebased
        ),
    );
    let (live_frame, _) = Cr3::read_raw();
    let live_top = live_frame.start_address().as_u64();
    checks.check(
        live_top == plan.new_top_table().as_u64(),
        format_args!(
            "cr3 {live_top:#x} expected {:#x}",
            plan.new_top_table().as_u64()
        ),
    );

    let mark_virt = SWITCH_MARK.as_ptr() as u64;
    let image_end_virt = &raw const entry::__image_end as u64;
    let probes = [
        ("image-start", IMAGE_VIRT),
        ("code", stub_main as *const () as u64),
        ("stack-value", kept_ptr as u64),
        ("global", mark_virt),
        ("stack-top", stack_top - 8),
        ("image-last", image_end_virt - 1),
    ];
    for (name, virt) in probes {
        let expected = new_image.start + (virt - IMAGE_VIRT);
        match translate(&mem, live_top, paging.top_level(), virt, max_phys) {
            Ok(phys) => checks.check(
                phys == expected,
                format_args!("walk {name} {virt:#x} -> {phys:#x} expected {expected:#x}"),
            ),
            Err(e) => checks.check(
                false,
                format_args!("walk {name} {virt:#x} failed: {e} (expected {expected:#x})"),
            ),
        }
    }
    // The directmap's leaves must not have moved: it still maps the old image where it was.
    let dm_probe = DIRECTMAP_BASE + image.start;
    let dm_phys = translate(&mem, live_top, paging.top_level(), dm_probe, max_phys).ok();
    checks.check(
        dm_phys == Some(image.start),
        format_args!(
            "walk directmap {dm_probe:#x} -> {:#x} expected {:#x}",
            dm_phys.unwrap_or(u64::MAX),
            image.start
        ),
    );

    // SAFETY: `kept_ptr` points to `kept`, a live local of this frame; volatile so the read
    // really goes to the (relocated) stack rather than a register copy.
    let kept_now = unsafe { core::ptr::read_volatile(kept_ptr) };
    let fp_now = fingerprint(&mem, start_info, target.as_u64());
    checks.check(
        kept_now == [fp_now, !fp_now],
        format_args!(
            "stack value {:#018x} recomputed {fp_now:#018x}",
            kept_now[0]
        ),
    );

    let post_mark = new_image.start ^ POST_SWITCH_SALT;
    SWITCH_MARK.store(post_mark, Ordering::SeqCst);
    let mark_old = image_phys(mark_virt);
    let mark_new = relocated(plan, mark_old)?;
    let seen_new = mem.read_u64(mark_new);
    let seen_old = mem.read_u64(mark_old);
    checks.check(
        seen_new == post_mark,
        format_args!(
            "global write read at new {mark_new:#x} = {seen_new:#018x} expected {post_mark:#018x}"
        ),
    );
    checks.check(
        seen_old == PRE_SWITCH_MARK,
        format_args!(
            "global at old {mark_old:#x} = {seen_old:#018x} expected the pre-switch {PRE_SWITCH_MARK:#018x}"
        ),
    );

    // Overflow check on the live (new) copy: the stack's top down to the lowest qword
    // overwritten since `stub_main` repainted below its frame (use before that repaint, and
    // frames only in the old copy, are not seen; the `stack:` line has the relocation path's
    // mark). No painted qword left at the bottom means it overflowed into the statics below.
    let bottom_new = relocated(plan, image_phys(stack_bottom))?;
    let untouched = stack::untouched_qwords(&mem, bottom_new);
    let peak = STACK_SIZE as u64 - untouched * 8;
    checks.check(
        untouched > 0,
        format_args!("stack use since the repaint, live copy: {peak:#x} of {STACK_SIZE:#x} bytes"),
    );

    if checks.0 > 0 {
        return Err(Failure::Verify(checks.0));
    }
    println!(
        "reloc: moved {:#x}+{:#x} -> {:#x} tables={} leaves={} paging={} ok",
        image.start,
        image.len(),
        new_image.start,
        report.tables_rebased.total(),
        report.image_leaves_rebased,
        cpu::mode_name(paging)
    );
    Ok(if boot.cmdline_has_word(&mem, "hold") {
        Outcome::Hold
    } else {
        Outcome::Exit
    })
}
