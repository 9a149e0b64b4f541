//! Relocation of Xen-like layouts, checked byte for byte against hand-listed expectations.
// 48 MiB of simulated RAM is beyond what Miri interprets in reasonable time; tests/miri.rs
// runs the same pipeline on a small layout under Miri.
#![cfg(not(miri))]

mod common;

use common::*;
use reloc_core::{
    Level, PagingMode, PhysAddr, PhysRange, Plan, RelocationRequest, DEFAULT_MAX_TABLES,
};

const MEM: u64 = 48 * MIB;
const IMAGE_START: u64 = 2 * MIB;
const IMAGE_LEN: u64 = 6 * MIB;
const NEW_BASE: u64 = 32 * MIB;
const MAX_PHYS: u8 = 46;

fn request<'a>(l: &XenLayout, maps: &'a [PhysAddr], new_base: u64) -> RelocationRequest<'a> {
    RelocationRequest {
        paging: PagingMode::FourLevel,
        top_table: pa(l.top),
        image: PhysRange::new(l.image_start, l.image_start + l.image_len),
        new_base: pa(new_base),
        image_maps: maps,
        max_phys_bits: MAX_PHYS,
        encryption_mask: 0,
    }
}

/// The entries that must change, by (table, index), in the old image's coordinates.
fn xen_edits(l: &XenLayout) -> Vec<(u64, u64)> {
    let mut edits = vec![
        (l.top, 0),
        (l.top, 261),
        (l.top, 262),
        (l.l3_bootmap, 0),
        (l.l3_xenmap, 321),
        (l.l3_xenmap, 319),
        (l.l2_xenmap, 511),
        (l.l2_fixmap, 511),
        (l.l2_directmap, 0),
    ];
    edits.extend((0..4).map(|i| (l.l3_directmap, i)));
    edits.extend((0..l.image_leaves()).map(|i| (l.l2_xenmap, i)));
    edits
}

/// Checks that the copy at `new_base` equals the old image with exactly `edits` rebased by
/// the move distance, and that nothing else in memory changed.
fn assert_copy_exact(
    before: &TestMem,
    after: &TestMem,
    l: &XenLayout,
    new_base: u64,
    edits: &[(u64, u64)],
) {
    let delta = new_base.wrapping_sub(l.image_start);
    let mut expected = before.clone();
    for pa in (l.image_start..l.image_start + l.image_len).step_by(8) {
        expected.set(pa.wrapping_add(delta), before.get(pa));
    }
    for &(table, index) in edits {
        let old = before.entry(table, index);
        let at = (table + index * 8).wrapping_add(delta);
        // Address fields here never carry bits near 2^52: a plain add is the expectation.
        expected.set(at, old.wrapping_add(delta));
    }
    let mismatches: Vec<_> = (0..MEM)
        .step_by(8)
        .filter(|&pa| expected.get(pa) != after.get(pa))
        .take(8)
        .map(|pa| {
            format!(
                "{pa:#x}: expected {:#x}, got {:#x}",
                expected.get(pa),
                after.get(pa)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "memory differs:\n{}",
        mismatches.join("\n")
    );
}

fn relocate(mem: &mut TestMem, req: &RelocationRequest<'_>) -> reloc_core::ApplyReport {
    let plan: Plan = Plan::new(&mem.directmap(), req).expect("plan");
    plan.apply(&mut mem.directmap())
}

#[test]
fn xen_layout_relocates_byte_exact() {
    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE_START, IMAGE_START + IMAGE_LEN);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    let report = relocate(&mut mem, &request(&l, &maps, NEW_BASE));

    assert_copy_exact(&before, &mem, &l, NEW_BASE, &xen_edits(&l));

    // Spot checks with literal values, independent of the helpers above.
    let d = NEW_BASE - IMAGE_START;
    assert_eq!(l.top, 0x30_0000);
    assert_eq!(mem.entry(l.top + d, 261), 0x0210_3063);
    assert_eq!(mem.entry(l.l2_xenmap + d, 0), 0x0200_11e3, "PAT bit kept");
    assert_eq!(
        mem.entry(l.l2_xenmap + d, 1),
        0x8010_0000_0220_01e3,
        "NX and bit 52 kept"
    );
    assert_eq!(
        mem.entry(l.l2_bootmap + d, 1),
        0x0020_00e3,
        "bootmap leaf unchanged"
    );
    assert_eq!(
        mem.entry(l.l3_directmap + d, 5),
        0x8000_0001_4000_10e3,
        "1 GiB leaf unchanged"
    );
    assert_eq!(
        mem.entry(l.l1_fixmap_x + d, 0),
        0xfee0_0173,
        "fixmap leaf unchanged"
    );

    assert_eq!(report.bytes_copied, IMAGE_LEN);
    assert_eq!(report.tables_rebased.get(Level::L4), 1);
    assert_eq!(report.tables_rebased.get(Level::L3), 3);
    assert_eq!(report.tables_rebased.get(Level::L2), 7);
    assert_eq!(report.tables_rebased.get(Level::L1), 0);
    assert_eq!(report.pointers_rebased.get(Level::L4), 3);
    assert_eq!(report.pointers_rebased.get(Level::L3), 7);
    assert_eq!(report.pointers_rebased.get(Level::L2), 3);
    assert_eq!(report.image_leaves_rebased, 3);

    // The new tables map the image's virtual range to the copy, everything else as before.
    let new_cr3 = l.top + d;
    for off in [0, 0x1234, MIB + 8, 2 * MIB, 5 * MIB + 0xfff8] {
        let (pa, _) =
            translate(&mem, new_cr3, PagingMode::FourLevel, XEN_VIRT_START + off).unwrap();
        assert_eq!(pa, NEW_BASE + off);
    }
    for va in [
        DIRECTMAP_VIRT_START + 0x5000,
        DIRECTMAP_VIRT_START + IMAGE_START + 8,
        DIRECTMAP_VIRT_START + 5 * GIB + 3,
    ] {
        let old = translate(&before, l.top, PagingMode::FourLevel, va);
        assert!(old.is_some());
        assert_eq!(translate(&mem, new_cr3, PagingMode::FourLevel, va), old);
    }
    assert_eq!(
        translate(&mem, new_cr3, PagingMode::FourLevel, IMAGE_START + 0x10).map(|t| t.0),
        Some(IMAGE_START + 0x10)
    );
}

#[test]
fn move_to_a_lower_base() {
    let mut mem = TestMem::new(MEM);
    let old = 32 * MIB;
    mem.fill_pattern(old, old + IMAGE_LEN);
    let l = build_xen(&mut mem, old, IMAGE_LEN, MIB);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    relocate(&mut mem, &request(&l, &maps, 4 * MIB));
    assert_copy_exact(&before, &mem, &l, 4 * MIB, &xen_edits(&l));
}

#[test]
fn five_level_paging() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let l5 = IMAGE_START + 0x8_0000;
    // The L4 is shared by two L5 slots.
    mem.set_entry(l5, 0, l.top | PTR);
    mem.set_entry(l5, 1, l.top | PTR);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    let req = RelocationRequest {
        paging: PagingMode::FiveLevel,
        top_table: pa(l5),
        ..request(&l, &maps, NEW_BASE)
    };
    let report = relocate(&mut mem, &req);
    let mut edits = xen_edits(&l);
    edits.extend([(l5, 0), (l5, 1)]);
    assert_copy_exact(&before, &mem, &l, NEW_BASE, &edits);
    assert_eq!(report.tables_rebased.get(Level::L5), 1);
    assert_eq!(report.pointers_rebased.get(Level::L5), 2);
    assert_eq!(report.tables_rebased.get(Level::L4), 1);
    let d = NEW_BASE - IMAGE_START;
    let va = (1u64 << 48) | (XEN_VIRT_START & 0xffff_ffff_ffff) | 0x4321;
    let (pa, _) = translate(&mem, l5 + d, PagingMode::FiveLevel, va).unwrap();
    assert_eq!(pa, NEW_BASE + 0x4321);
}

#[test]
fn shared_table_and_recursive_slot_are_rebased_once() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    // l3_xenmap reached from two top-level slots; the top level maps itself at slot 510.
    mem.set_entry(l.top, 300, l.l3_xenmap | PTR);
    mem.set_entry(l.top, 510, l.top | PTR | NX);
    // l2_fixmap shared by l3_xenmap and l3_bootmap.
    mem.set_entry(l.l3_bootmap, 7, l.l2_fixmap | PTR);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    let report = relocate(&mut mem, &request(&l, &maps, NEW_BASE));
    let mut edits = xen_edits(&l);
    edits.extend([(l.top, 300), (l.top, 510), (l.l3_bootmap, 7)]);
    assert_copy_exact(&before, &mem, &l, NEW_BASE, &edits);
    let d = NEW_BASE - IMAGE_START;
    assert_eq!(mem.entry(l.top + d, 510), (l.top + d) | PTR | NX);
    assert_eq!(mem.entry(l.l3_xenmap + d, 321), (l.l2_xenmap + d) | PTR);
    assert_eq!(mem.entry(l.l2_fixmap + d, 511), (l.l1_fixmap + d) | PTR);
    // Same table count as without sharing: each table once.
    assert_eq!(report.tables_rebased.total(), 11);
    // The recursive view (510, 510, 261, 321) shows l2_xenmap as a page: now the new copy.
    let va = 0xffff_0000_0000_0000 | (510 << 39) | (510 << 30) | (261 << 21) | (321 << 12);
    let (pa, _) = translate(&mem, l.top + d, PagingMode::FourLevel, va).unwrap();
    assert_eq!(pa, l.l2_xenmap + d);
}

#[test]
fn page_tables_starting_on_a_2mib_boundary() {
    // The igvm bug class: the table region starts exactly where a new image-map leaf starts.
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, 2 * MIB);
    assert_eq!(l.top % (2 * MIB), 0);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    relocate(&mut mem, &request(&l, &maps, NEW_BASE));
    assert_copy_exact(&before, &mem, &l, NEW_BASE, &xen_edits(&l));
    let d = NEW_BASE - IMAGE_START;
    // The tables' own virtual mapping follows them.
    for off in [2 * MIB, 2 * MIB + 0x3000, 2 * MIB - 8] {
        let (pa, _) =
            translate(&mem, l.top + d, PagingMode::FourLevel, XEN_VIRT_START + off).unwrap();
        assert_eq!(pa, NEW_BASE + off);
    }
}

#[test]
fn image_not_a_multiple_of_2mib() {
    let mut mem = TestMem::new(MEM);
    let len = 5 * MIB + 12 * KIB;
    mem.fill_pattern(IMAGE_START, IMAGE_START + len);
    let l = build_xen(&mut mem, IMAGE_START, len, MIB);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    let report = relocate(&mut mem, &request(&l, &maps, NEW_BASE));
    assert_eq!(report.bytes_copied, len);
    assert_eq!(report.image_leaves_rebased, 3);
    assert_copy_exact(&before, &mem, &l, NEW_BASE, &xen_edits(&l));
}

#[test]
fn plan_reports_tables_and_cr3() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let maps = [pa(l.l2_xenmap)];
    let plan: Plan<DEFAULT_MAX_TABLES> =
        Plan::new(&mem.directmap(), &request(&l, &maps, NEW_BASE)).unwrap();
    let tables: Vec<_> = plan.tables().collect();
    assert_eq!(tables.len(), 14);
    assert_eq!(tables.iter().filter(|t| t.rebased).count(), 11);
    assert_eq!(
        tables
            .iter()
            .filter(|t| t.image_map)
            .map(|t| t.addr)
            .collect::<Vec<_>>(),
        vec![pa(l.l2_xenmap)]
    );
    let d = NEW_BASE - IMAGE_START;
    assert_eq!(plan.new_top_table().as_u64(), l.top + d);
    // PCID and PWT/PCD bits survive.
    assert_eq!(plan.relocated_cr3(l.top | 0x18), (l.top + d) | 0x18);
    assert_eq!(
        plan.new_image(),
        PhysRange::new(NEW_BASE, NEW_BASE + IMAGE_LEN)
    );
}

/// The SME/SEV C-bit at bit 45 (MAXPHYADDR 46) on every present entry of every table, as an
/// encrypted guest's tables have it.
fn set_c_bit_everywhere(mem: &mut TestMem, l: &XenLayout) -> u64 {
    const C_BIT: u64 = 1 << 45;
    let tables_start = l.top;
    let tables_end = l.l1_directmap + 4 * KIB;
    for at in (tables_start..tables_end).step_by(8) {
        let e = mem.get(at);
        if e & 1 != 0 {
            mem.set(at, e | C_BIT);
        }
    }
    C_BIT
}

#[test]
fn encrypted_tables_relocate_with_the_c_bit_preserved() {
    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE_START, IMAGE_START + IMAGE_LEN);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let c_bit = set_c_bit_everywhere(&mut mem, &l);
    let before = mem.clone();
    let maps = [pa(l.l2_xenmap)];
    // Without the mask the C-bit reads as an address bit: every pointer leaves the image.
    let plain = request(&l, &maps, NEW_BASE);
    assert!(matches!(
        Plan::<64>::new(&mem.directmap(), &plain),
        Err(reloc_core::PlanError::PointerOutsideImage { .. })
    ));
    assert!(mem == before);
    let encrypted = RelocationRequest {
        encryption_mask: c_bit,
        ..plain
    };
    let plan: Plan = Plan::new(&mem.directmap(), &encrypted).expect("plan");
    // CR3 of an encrypted guest carries the C-bit too; it stays.
    assert_eq!(
        plan.relocated_cr3(l.top | c_bit | 0x8),
        (l.top + NEW_BASE - IMAGE_START) | c_bit | 0x8
    );
    plan.apply(&mut mem.directmap());
    // Every rebased entry moved by delta with its C-bit kept (a plain add leaves bit 45 set).
    assert_copy_exact(&before, &mem, &l, NEW_BASE, &xen_edits(&l));
    assert_ne!(mem.entry(l.top + NEW_BASE - IMAGE_START, 261) & c_bit, 0);
}

#[test]
fn encryption_mask_outside_the_address_field_is_refused() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let maps = [pa(l.l2_xenmap)];
    for mask in [1 << 46, 1 << 31, 1 << 5, 1 << 63, (1 << 45) | (1 << 20)] {
        let req = RelocationRequest {
            encryption_mask: mask,
            ..request(&l, &maps, NEW_BASE)
        };
        let err = Plan::<64>::new(&mem.directmap(), &req).unwrap_err();
        assert_eq!(
            err,
            reloc_core::PlanError::InvalidEncryptionMask {
                mask,
                max_phys_bits: MAX_PHYS
            }
        );
        assert!(err.to_string().contains(&format!("{mask:#x}")), "{err}");
    }
}

/// A destination that would need the encryption bit as an address bit is beyond the limit.
#[test]
fn encryption_bit_lowers_the_physical_address_limit() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let maps = [pa(l.l2_xenmap)];
    let req = RelocationRequest {
        encryption_mask: 1 << 40,
        ..request(&l, &maps, (1 << 40) - 4 * MIB)
    };
    assert!(matches!(
        Plan::<64>::new(&mem.directmap(), &req),
        Err(reloc_core::PlanError::RebasedEntryBeyondMaxPhys { .. }
            | reloc_core::PlanError::RangeBeyondMaxPhys { .. })
    ));
}

/// Review finding (second round): `new_in_place` over a plan that had succeeded, failing,
/// leaves `Plan::empty()` behind in everything it exposes, Debug included (the old table
/// records used to stay in the Debug output).
#[test]
fn failing_new_in_place_over_a_plan_leaves_an_empty_plan() {
    let mut mem = TestMem::new(MEM);
    let l = build_xen(&mut mem, IMAGE_START, IMAGE_LEN, MIB);
    let maps = [pa(l.l2_xenmap)];
    let mut plan: Plan = Plan::empty();
    plan.new_in_place(&mem.directmap(), &request(&l, &maps, NEW_BASE))
        .expect("plan");
    assert_eq!(plan.tables().count(), 14);
    // A destination overlapping the image is refused.
    let err = plan
        .new_in_place(&mem.directmap(), &request(&l, &maps, IMAGE_START + 2 * MIB))
        .unwrap_err();
    assert!(
        matches!(err, reloc_core::PlanError::RangesOverlap { .. }),
        "{err:?}"
    );
    let empty: Plan = Plan::empty();
    assert_eq!(plan.tables().count(), 0);
    assert!(plan.new_image().is_empty());
    assert_eq!(plan.new_image(), empty.new_image());
    assert_eq!(plan.old_image(), empty.old_image());
    assert_eq!(plan.new_top_table(), empty.new_top_table());
    assert_eq!(plan.relocated_cr3(0x1018), empty.relocated_cr3(0x1018));
    assert_eq!(format!("{plan:?}"), format!("{empty:?}"));
}
