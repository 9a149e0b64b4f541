//! `SwitchParams` and `relocate`'s refusals: every one before the first write, each typed.
//! Each of these layouts was accepted before the switch validated its layout (issue 9), or
//! before it walked the whole stack and the directmap's whole alias (issue 19, item 3).
#![cfg(not(miri))]

mod common;

use common::*;
use reloc_core::{
    DirectMapLayout, PagingMode, PhysAddr, PhysRange, Plan, RelocateError, RelocationRequest,
    SimulatedDirectMap, SwitchError, SwitchParams, VirtAddr, VirtualLayout,
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

    /// `SwitchParams::new` through the test memory's own directmap.
    fn params<'p>(
        &mut self,
        plan: &'p Plan,
        layout: &VirtualLayout,
    ) -> Result<SwitchParams<'p>, SwitchError> {
        SwitchParams::new(plan, &self.mem.directmap(), layout)
    }

    /// `SwitchParams::new` reading the test memory, for a directmap laid out as `directmap`.
    fn params_with<'p>(
        &mut self,
        plan: &'p Plan,
        directmap: DirectMapLayout,
        layout: &VirtualLayout,
    ) -> Result<SwitchParams<'p>, SwitchError> {
        SwitchParams::new(
            plan,
            &SimulatedDirectMap::new(&self.mem.directmap(), directmap),
            layout,
        )
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
    let params = f.params(&plan, &layout(STACK)).expect("valid layout");
    // A stack qword at virtual v lands at the directmap alias of its new physical address.
    let v = STACK.1 - 8;
    let new_phys = NEW_BASE + (v - XEN_VIRT_START);
    assert_eq!(
        v.wrapping_add(params.stack_copy_offset()),
        dm.virt_of(new_phys).unwrap()
    );
    assert_eq!(params.stack_bottom(), va(STACK.0));
    assert_eq!(params.stack_top(), va(STACK.1));
    assert_eq!(params.plan().new_top_table(), plan.new_top_table());
}

#[test]
fn image_start_two_mib_off_is_a_layout_mismatch() {
    let mut f = fixture();
    let plan = f.plan();
    // The image linked 2 MiB higher than it is mapped: the stack re-copy used to land 2 MiB
    // off inside the destination.
    let wrong = VirtualLayout {
        image_start: va(XEN_VIRT_START + 2 * MIB),
        stack_bottom: va(XEN_VIRT_START + 2 * MIB),
        stack_top: va(XEN_VIRT_START + 2 * MIB + 0x8000),
    };
    let err = f.params(&plan, &wrong).unwrap_err();
    assert_eq!(
        err,
        SwitchError::LayoutMismatch {
            virt: va(XEN_VIRT_START + 2 * MIB),
            expected: pa(NEW_BASE),
            found: Some(pa(NEW_BASE + 2 * MIB)),
        }
    );
    // The message names where the image start must go and where it would go instead.
    let text = err.to_string();
    assert!(
        text.contains("must translate to 0x2000000 in the copy")
            && text.ends_with(", but would translate to 0x2200000"),
        "{text}"
    );
}

#[test]
fn image_start_mapped_by_a_leaf_that_does_not_move_is_a_layout_mismatch() {
    let mut f = fixture();
    let plan = f.plan();
    // The identity bootmap maps the image too, with leaves that stay: running there, the
    // code would keep executing the old copy after the switch.
    let identity = VirtualLayout {
        image_start: va(IMAGE_START),
        stack_bottom: va(IMAGE_START),
        stack_top: va(IMAGE_START + 0x8000),
    };
    assert_eq!(
        f.params(&plan, &identity).unwrap_err(),
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
        f.params_with(&plan, small, &layout(STACK)).unwrap_err(),
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
        f.params_with(&plan, wrapping, &layout(STACK)),
        Err(SwitchError::DestinationOutsideDirectMap { .. })
    ));
}

#[test]
fn stack_overlapping_a_page_table_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    // The tables start 1 MiB into the image: a stack across that boundary would re-copy old
    // entries over the rebased ones.
    let stack = (XEN_VIRT_START + MIB - 0x1000, XEN_VIRT_START + MIB + 0x1000);
    assert_eq!(
        f.params(&plan, &layout(stack)).unwrap_err(),
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
    for stack in [
        (STACK.0, STACK.0),
        (STACK.1, STACK.0),
        (XEN_VIRT_START - 8, STACK.1),
        (STACK.0, XEN_VIRT_START + IMAGE_LEN + 8),
    ] {
        assert!(
            matches!(
                f.params(&plan, &layout(stack)),
                Err(SwitchError::StackOutsideImage { .. })
            ),
            "{stack:x?}"
        );
    }
    let odd = (STACK.0, STACK.1 - 4);
    assert_eq!(
        f.params(&plan, &layout(odd)).unwrap_err(),
        SwitchError::StackMisaligned {
            stack: (va(odd.0), va(odd.1))
        }
    );
}

#[test]
fn rsp_above_the_stack_top_or_below_its_bottom_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let params = f.params(&plan, &layout(STACK)).unwrap();
    // rsp > stack_top used to wrap the `rep movsq` count.
    for rsp in [STACK.1 + 8, STACK.0 - 8, STACK.1 - 4, 0, u64::MAX] {
        assert_eq!(
            params.check_rsp(rsp),
            Err(RelocateError::RspOutsideStack {
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
    let params = f.params(&plan, &layout(STACK)).unwrap();

    let mut other = before.clone();
    let mut other_dm = other.directmap();
    let expected = RelocateError::DirectMapMismatch {
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
        matches!(result, Err(RelocateError::RspOutsideStack { .. })),
        "{result:?}"
    );
    assert!(f.mem == before, "a refused relocate wrote memory");
}

/// Issue 19, item 3: image-map leaf 1 maps the image's physical page 2 (inside its footprint,
/// so planning accepts it). A stack whose ends lie in leaves 0 and 2 translates correctly
/// at both ends, but its middle, under leaf 1, would translate 2 MiB away from where the
/// re-copy writes it. The switch used to check only the image start and the stack's last
/// qword, and accepted this.
#[test]
fn stack_crossing_a_leaf_that_maps_another_page_is_refused() {
    let mut f = fixture();
    let l2_xenmap = f.maps[0].as_u64();
    let leaf1 = f.mem.entry(l2_xenmap, 1);
    let page2 = IMAGE_START + 4 * MIB;
    f.mem
        .set_entry(l2_xenmap, 1, (leaf1 & !0x000f_ffff_ffe0_0000) | page2);
    let plan = f.plan();
    let before = f.mem.clone();
    // Bottom in leaf 0, top in leaf 2: both ends are right, the middle is not.
    let across = (
        XEN_VIRT_START + 2 * MIB - 0x1000,
        XEN_VIRT_START + 4 * MIB + 0x1000,
    );
    let err = f.params(&plan, &layout(across)).unwrap_err();
    assert_eq!(
        err,
        SwitchError::StackMismatch {
            virt: va(XEN_VIRT_START + 2 * MIB),
            expected: pa(NEW_BASE + 2 * MIB),
            found: Some(pa(NEW_BASE + 4 * MIB)),
        }
    );
    assert!(err.to_string().contains("0xffff82d040200000"), "{err}");
    // The bottom itself is checked: a stack starting under leaf 1 and ending under leaf 2.
    let from_leaf1 = (
        XEN_VIRT_START + 4 * MIB - 0x1000,
        XEN_VIRT_START + 4 * MIB + 0x1000,
    );
    assert_eq!(
        f.params(&plan, &layout(from_leaf1)).unwrap_err(),
        SwitchError::StackMismatch {
            virt: va(from_leaf1.0),
            expected: pa(NEW_BASE + 4 * MIB - 0x1000),
            found: Some(pa(NEW_BASE + 6 * MIB - 0x1000)),
        }
    );
    // Within leaf 2 alone the stack is right.
    let in_leaf2 = (XEN_VIRT_START + 4 * MIB, XEN_VIRT_START + 4 * MIB + 0x1000);
    assert!(f.params(&plan, &layout(in_leaf2)).is_ok());
    assert!(f.mem == before, "SwitchParams::new wrote memory");
}

/// A stack whose upper part is not mapped by the image map is refused at the first byte of
/// that part, though its bottom and the image start are mapped right.
#[test]
fn stack_partly_unmapped_by_the_image_map_is_refused() {
    let mut f = fixture();
    let l2_xenmap = f.maps[0].as_u64();
    // Image-map leaf 2 unmapped: the stack's upper half has no translation after the move.
    f.mem.set_entry(l2_xenmap, 2, 0);
    let plan = f.plan();
    let stack = (
        XEN_VIRT_START + 4 * MIB - 0x1000,
        XEN_VIRT_START + 4 * MIB + 0x1000,
    );
    let err = f.params(&plan, &layout(stack)).unwrap_err();
    assert_eq!(
        err,
        SwitchError::StackMismatch {
            virt: va(XEN_VIRT_START + 4 * MIB),
            expected: pa(NEW_BASE + 4 * MIB),
            found: None,
        }
    );
    // The message says there is no translation at all.
    let text = err.to_string();
    assert!(
        text.ends_with(", but is not mapped by the validated tables"),
        "{text}"
    );
}

/// Issue 19, item 3: the directmap's start is canonical, but its alias of the destination
/// crosses the canonical hole; apply would fault in the middle of the copy. Refused before
/// the first write with the first non-canonical address named.
#[test]
fn directmap_alias_crossing_the_canonical_hole_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let before = f.mem.clone();
    let hole = 1u64 << 47;
    // Physical 0 at 2^47 - 33 MiB: the old image (2-8 MiB) aliases below the hole, the
    // destination (32-38 MiB) runs from 2^47 - 1 MiB into it.
    let crossing = DirectMapLayout {
        virt_start: va(hole - 33 * MIB),
        window: PhysRange::new(0, MEM),
    };
    let err = f.params_with(&plan, crossing, &layout(STACK)).unwrap_err();
    assert_eq!(
        err,
        SwitchError::DirectMapAliasNonCanonical {
            range: PhysRange::new(NEW_BASE, NEW_BASE + IMAGE_LEN),
            alias: (va(hole - MIB), hole - MIB + IMAGE_LEN),
            virt: va(hole),
        }
    );
    assert!(err.to_string().contains("0x800000000000"), "{err}");
    // The directmap's start is canonical, the old image's alias (read by the copy) starts in
    // the hole.
    let old_in_hole = DirectMapLayout {
        virt_start: va(0x7fff_ffff_f000),
        window: PhysRange::new(0, MEM),
    };
    assert_eq!(
        f.params_with(&plan, old_in_hole, &layout(STACK))
            .unwrap_err(),
        SwitchError::DirectMapAliasNonCanonical {
            range: PhysRange::new(IMAGE_START, IMAGE_START + IMAGE_LEN),
            alias: (
                va(0x7fff_ffff_f000 + IMAGE_START),
                0x7fff_ffff_f000 + IMAGE_START + IMAGE_LEN
            ),
            virt: va(0x7fff_ffff_f000 + IMAGE_START),
        }
    );
    // Ending right below the hole is fine.
    let below_hole = DirectMapLayout {
        virt_start: va(hole - 64 * MIB),
        window: PhysRange::new(0, MEM),
    };
    assert!(f.params_with(&plan, below_hole, &layout(STACK)).is_ok());
    // So is a directmap in the upper half, where bare-metal kernels put it (boot-stub's at
    // 0xffff800000000000): both aliases lie wholly in that half.
    let upper_half = DirectMapLayout {
        virt_start: va(0xffff_8000_0000_0000),
        window: PhysRange::new(0, MEM),
    };
    assert!(f.params_with(&plan, upper_half, &layout(STACK)).is_ok());
    assert!(f.mem == before, "SwitchParams::new wrote memory");
}

/// Review finding (second round): a directmap whose window covers the destination but not
/// the old image was accepted, and `DirectMap::copy` then silently copied nothing.
#[test]
fn old_image_outside_the_directmap_window_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let before = f.mem.clone();
    let real = f.directmap();
    // Physical 16-48 MiB: the destination (32-38 MiB) is in, the old image (2-8 MiB) is not.
    let high = DirectMapLayout {
        window: PhysRange::new(16 * MIB, MEM),
        ..real
    };
    let err = f.params_with(&plan, high, &layout(STACK)).unwrap_err();
    assert_eq!(
        err,
        SwitchError::ImageOutsideDirectMap {
            image: PhysRange::new(IMAGE_START, IMAGE_START + IMAGE_LEN),
            window: PhysRange::new(16 * MIB, MEM),
        }
    );
    assert!(err.to_string().contains("old image"), "{err}");
    // Half of the image in the window is still outside.
    let half = DirectMapLayout {
        window: PhysRange::new(4 * MIB, MEM),
        ..real
    };
    assert!(matches!(
        f.params_with(&plan, half, &layout(STACK)),
        Err(SwitchError::ImageOutsideDirectMap { .. })
    ));
    assert!(f.mem == before, "SwitchParams::new wrote memory");
}

/// Review finding (second round): a stack whose bottom is canonical but which runs into the
/// canonical hole was not refused as such (only the bottom was checked for canonicality).
#[test]
fn stack_crossing_the_canonical_hole_is_refused() {
    let mut f = fixture();
    let plan = f.plan();
    let hole = 1u64 << 47;
    let crossing = VirtualLayout {
        image_start: va(hole - 0x1000),
        stack_bottom: va(hole - 0x1000),
        stack_top: va(hole + 0x1000),
    };
    let err = f.params(&plan, &crossing).unwrap_err();
    assert_eq!(err, SwitchError::NonCanonical { virt: va(hole) });
    // Ending exactly at the hole is one half.
    let below = VirtualLayout {
        stack_top: va(hole),
        ..crossing
    };
    assert!(!matches!(
        f.params(&plan, &below),
        Err(SwitchError::NonCanonical { .. })
    ));
    // An upper-half stack whose top wraps past 2^64 is refused too.
    let wrapping = VirtualLayout {
        image_start: va(u64::MAX - 0xfff),
        stack_bottom: va(u64::MAX - 0xfff),
        stack_top: va(0x1000),
    };
    assert!(f.params(&plan, &wrapping).is_err());
}
