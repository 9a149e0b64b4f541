//! The stub's own interrupt descriptor table, loaded first thing in `stub_main`, and what the
//! loader left in IDTR, CR4 and EFER (printed on every boot).
//!
//! A loader may hand over with its own IDT still loaded: OVMF's 64-bit IDT lies in
//! boot-services memory, which after ExitBootServices is free RAM the stub may pick as its
//! target. The entry code therefore loads an empty IDT (limit 0: any exception is a triple
//! fault, which stops QEMU under `-no-reboot`) before it can fault, and this module replaces
//! it with one whose exception handlers report and exit: each of vectors 0 to 31 goes through
//! an assembly stub (`entry::exception_stubs`) to [`stub_exception`], which panics with the
//! vector, error code and RIP (exit 0x15). Vectors 32 to 255 stay absent: interrupts are off,
//! and a stray vector raises #GP, which is reported.
//!
//! The table is a static of the image, so the relocation copies it and IDTR's virtual base
//! keeps pointing at it after the switch.

use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use crate::entry::{self, EXCEPTION_STUB_SIZE};
use crate::in_place::InPlace;
use crate::println;

/// The stub's IDT, filled in place by [`install`] and then read only by the CPU.
static IDT: InPlace<InterruptDescriptorTable> = InPlace::new(InterruptDescriptorTable::new());

/// Fills the exception entries of the stub's IDT and loads it.
pub fn install() {
    let stubs = &raw const entry::exception_stubs as u64;
    let stub = |vector: u64| VirtAddr::new(stubs + vector * EXCEPTION_STUB_SIZE);
    let Some(idt) = IDT.take() else {
        return; // Already installed.
    };
    macro_rules! handlers {
        ($($field:ident = $vector:literal),* $(,)?) => {$(
            // SAFETY: the stub at this address is the handler for this vector: it matches the
            // frame the CPU pushes (error code or not) and never returns.
            unsafe { idt.$field.set_handler_addr(stub($vector)) };
        )*};
    }
    handlers!(
        divide_error = 0,
        debug = 1,
        non_maskable_interrupt = 2,
        breakpoint = 3,
        overflow = 4,
        bound_range_exceeded = 5,
        invalid_opcode = 6,
        device_not_available = 7,
        double_fault = 8,
        invalid_tss = 10,
        segment_not_present = 11,
        stack_segment_fault = 12,
        general_protection_fault = 13,
        page_fault = 14,
        x87_floating_point = 16,
        alignment_check = 17,
        machine_check = 18,
        simd_floating_point = 19,
        virtualization = 20,
        cp_protection_exception = 21,
        hv_injection_exception = 28,
        vmm_communication_exception = 29,
        security_exception = 30,
    );
    // The CPU reads the table from now on: keep it only as a shared reference.
    let idt: &'static InterruptDescriptorTable = idt;
    idt.load();
}

/// Prints the IDTR, CR4 and EFER the loader left, which the entry code replaced.
pub fn report_inherited() {
    // SAFETY: the entry code wrote these statics before paging and nothing writes them since.
    let (cr4, efer, idtr) = unsafe {
        (
            entry::inherited_cr4,
            entry::inherited_efer,
            entry::inherited_idtr,
        )
    };
    let limit = u16::from_le_bytes([idtr[0], idtr[1]]);
    let base = u32::from_le_bytes([idtr[2], idtr[3], idtr[4], idtr[5]]);
    let (cr4_now, efer_now) = (
        x86_64::registers::control::Cr4::read_raw(),
        x86_64::registers::model_specific::Efer::read_raw(),
    );
    println!(
        "cpu: inherited IDTR {base:#x}+{limit:#x} CR4 {cr4:#x} EFER {efer:#x}; \
         now own IDT, CR4 {cr4_now:#x} EFER {efer_now:#x}"
    );
}

/// Where every exception stub goes: reports the exception through the panic handler (exit
/// 0x15). Page faults add CR2.
#[unsafe(no_mangle)]
extern "C" fn stub_exception(vector: u64, error_code: u64, rip: u64) -> ! {
    if vector == 14 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        panic!(
            "CPU exception 14 (page fault) error code {error_code:#x} at rip {rip:#x} cr2 {cr2:#x}"
        );
    }
    panic!("CPU exception {vector} error code {error_code:#x} at rip {rip:#x}")
}
