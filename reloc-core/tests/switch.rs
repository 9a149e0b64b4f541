//! `SwitchParams` and `relocate`'s refusals: every one before the first write, each typed.
//! Each of these layouts was accepted before the switch validated its layout (issue 9).
#![cfg(not(miri))]

mod common;

use common::*;
use reloc_core::{
    DirectMapLayout, PagingMode, PhysAddr, PhysRange, Plan, RelocationRequest, SwitchError,
    SwitchParams, VirtAddr, VirtualLayout,
};

const MEM: u64 = 48 * MIB;
const IMAGE_START: u64 = 2 * MIB;
const IMAGE_LEN: u64 = 6 * MIB;
const NEW_BASE: u64 = 32 * MIB;
/// The stack: the image's first 32 KiB (the tables start 1 MiB in).
const STACK: (u64, u64) = (XEN_VIRT_START, XEN_VIRT_START + 0x8000);

fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}

struct Fixture {
    mem: TestMem,
    maps: [PhysAddr; 1],
    top: u64,
}

fn fixture() -> Fixture {
    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE_START, IMAGE_START + IMAGE_LEN);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    Fixture {
        mem,
        maps: [pa(l.l2_xenmap)],
        top: l.top,
    }
}

impl Fixture {
    fn plan(&self) -> Plan {
        let request = RelocationRequest {
            paging: PagingMode::FourLevel,
            top_table: pa(self.top),
            image: PhysRange::new(IMAGE_START, IMAGE_START + IMAGE_LEN),
            new_base: pa(NEW_BASE),
            image_maps: &self.maps,
            max_phys_bits: 46,
            encryption_mask: 0,
        };
        let mut probe = self.mem.clone();
        Plan::new(&probe.directmap(), &request).expect("plan")
    }

    /// The test memory's directmap as the switch would see it: its buffer at its address.
    fn directmap(&mut self) -> DirectMapLayout {
        self.mem.directmap().layout()
    }
}

fn layout(stack: (u64, u64)) -> VirtualLayout {
    VirtualLayout {
        image_start: va(XEN_VIRT_START),
        stack_bottom: va(stack.0),
        stack_top: va(stack.1),
    }
}

#[test]
fn stack_is_re_copied_to_its_alias_in_the_copy() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    let params = SwitchParams::new(&plan, &f.mem.clone().directmap(), dm, &layout(STACK))
        .expect("valid layout");
    // A stack qword at virtual v lands at the directmap alias of its new physical address.
    let v = STACK.1 - 8;
    let new_phys = NEW_BASE + (v - XEN_VIRT_START);
    assert_eq!(
        v.wrapping_add(params.stack_copy_offset()),
        dm.virt_of(new_phys).unwrap()
    );
    assert_eq!(params.stack_top(), va(STACK.1));
    assert_eq!(params.plan().new_top_table(), plan.new_top_table());
}

#[test]
fn image_start_two_mib_off_is_a_layout_mismatch() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    // The image linked 2 MiB higher than it is mapped: the stack re-copy used to land 2 MiB
    // off inside the destination.
    let wrong = VirtualLayout {
        image_start: va(XEN_VIRT_START + 2 * MIB),
        stack_bottom: va(XEN_VIRT_START + 2 * MIB),
        stack_top: va(XEN_VIRT_START + 2 * MIB + 0x8000),
    };
    let err = SwitchParams::new(&plan, &f.mem.clone().directmap(), dm, &wrong).unwrap_err();
    assert_eq!(
        err,
        SwitchError::LayoutMismatch {
            virt: va(XEN_VIRT_START + 2 * MIB),
            expected: pa(NEW_BASE),
            found: Some(pa(NEW_BASE + 2 * MIB)),
        }
    );
    assert!(err.to_string().contains("0x2000000"), "{err}");
}

#[test]
fn image_start_mapped_by_a_leaf_that_does_not_move_is_a_layout_mismatch() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    // The identity bootmap maps the image too, with leaves that stay: running there, the
    // code would keep executing the old copy after the switch.
    let identity = VirtualLayout {
        image_start: va(IMAGE_START),
        stack_bottom: va(IMAGE_START),
        stack_top: va(IMAGE_START + 0x8000),
    };
    assert_eq!(
        SwitchParams::new(&plan, &f.mem.clone().directmap(), dm, &identity).unwrap_err(),
        SwitchError::LayoutMismatch {
            virt: va(IMAGE_START),
            expected: pa(NEW_BASE),
            found: Some(pa(IMAGE_START)),
        }
    );
}

#[test]
fn destination_outside_the_directmap_window_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let real = f.directmap();
    let small = DirectMapLayout {
        window: PhysRange::new(0, 16 * MIB),
        ..real
    };
    assert_eq!(
        SwitchParams::new(&plan, &f.mem.clone().directmap(), small, &layout(STACK)).unwrap_err(),
        SwitchError::DestinationOutsideDirectMap {
            destination: PhysRange::new(NEW_BASE, NEW_BASE + IMAGE_LEN),
            window: PhysRange::new(0, 16 * MIB),
        }
    );
    // An alias that would wrap past 2^64 is outside too.
    let wrapping = DirectMapLayout {
        virt_start: va(0xffff_ffff_ffff_0000),
        ..real
    };
    assert!(matches!(
        SwitchParams::new(&plan, &f.mem.clone().directmap(), wrapping, &layout(STACK)),
        Err(SwitchError::DestinationOutsideDirectMap { .. })
    ));
}

#[test]
fn stack_overlapping_a_page_table_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    // The tables start 1 MiB into the image: a stack across that boundary would re-copy old
    // entries over the rebased ones.
    let stack = (XEN_VIRT_START + MIB - 0x1000, XEN_VIRT_START + MIB + 0x1000);
    assert_eq!(
        SwitchParams::new(&plan, &f.mem.clone().directmap(), dm, &layout(stack)).unwrap_err(),
        SwitchError::StackOverlapsTable {
            table: pa(f.top),
            stack: PhysRange::new(IMAGE_START + MIB - 0x1000, IMAGE_START + MIB + 0x1000),
        }
    );
}

#[test]
fn stack_outside_the_image_or_misaligned_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    let mem = f.mem.clone();
    for stack in [
        (STACK.0, STACK.0),
        (STACK.1, STACK.0),
        (XEN_VIRT_START - 8, STACK.1),
        (STACK.0, XEN_VIRT_START + IMAGE_LEN + 8),
    ] {
        assert!(
            matches!(
                SwitchParams::new(&plan, &mem.clone().directmap(), dm, &layout(stack)),
                Err(SwitchError::StackOutsideImage { .. })
            ),
            "{stack:x?}"
        );
    }
    let odd = (STACK.0, STACK.1 - 4);
    assert_eq!(
        SwitchParams::new(&plan, &mem.clone().directmap(), dm, &layout(odd)).unwrap_err(),
        SwitchError::StackMisaligned {
            stack: (va(odd.0), va(odd.1))
        }
    );
}

#[test]
fn rsp_above_the_stack_top_or_below_its_bottom_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    let params = SwitchParams::new(&plan, &f.mem.clone().directmap(), dm, &layout(STACK)).unwrap();
    // rsp > stack_top used to wrap the `rep movsq` count.
    for rsp in [STACK.1 + 8, STACK.0 - 8, STACK.1 - 4, 0, u64::MAX] {
        assert_eq!(
            params.check_rsp(rsp),
            Err(SwitchError::RspOutsideStack {
                rsp,
                stack: (va(STACK.0), va(STACK.1))
            })
        );
    }
    for rsp in [STACK.0, STACK.1 - 8, STACK.1] {
        assert_eq!(params.check_rsp(rsp), Ok(()));
    }
}

/// `relocate` refuses, before its first write, a directmap other than the one the
/// parameters were checked for, and (on the host, where rsp is not in the image's stack) a
/// stack pointer outside the stack. Neither path reaches a privileged instruction.
#[cfg(target_arch = "x86_64")]
#[test]
fn relocate_refuses_another_directmap_or_a_foreign_rsp_with_memory_untouched() {
    use reloc_core::switch::relocate;
    let mut f = fixture();
    let plan = f.plan();
    let dm = f.directmap();
    let before = f.mem.clone();
    let params = SwitchParams::new(&plan, &before.clone().directmap(), dm, &layout(STACK)).unwrap();

    let mut other = before.clone();
    let mut other_dm = other.directmap();
    let expected = SwitchError::DirectMapMismatch {
        expected: dm,
        found: other_dm.layout(),
    };
    // SAFETY: returns at the directmap check, before any privileged instruction or write.
    let result = unsafe { relocate(&params, &mut other_dm) };
    assert_eq!(result, Err(expected));
    assert!(other == before, "a refused relocate wrote memory");

    let mut own_dm = f.mem.directmap();
    // SAFETY: the host's rsp is not in the simulated stack, so `relocate` returns at the
    // rsp check, before reading CR3 and before any write.
    let result = unsafe { relocate(&params, &mut own_dm) };
    assert!(
        matches!(result, Err(SwitchError::RspOutsideStack { .. })),
        "{result:?}"
    );
    assert!(f.mem == before, "a refused relocate wrote memory");
}
