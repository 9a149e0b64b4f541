//! Requests drawn from the whole 64-bit range: images, bases and tables anywhere, any
//! MAXPHYADDR. Planning must end in a plan or a typed error, never a panic (debug builds check
//! every arithmetic overflow), and an accepted plan must describe sane ranges. The review that
//! found `[0, 0xffff_ffff_ffe0_1000)` wrapping showed the old strategies never left 40 MiB.
#![cfg(not(miri))]

use proptest::prelude::*;
use reloc_core::{
    MemoryFault, PagingMode, PhysAddr, PhysMemory, PhysRange, Plan, PlanError, RelocationRequest,
};

/// Memory that serves every range and holds one fixed qword everywhere: no check can lean on
/// `check_range` to stop an absurd request.
struct Everywhere(u64);

impl PhysMemory for Everywhere {
    fn check_range(&self, _: u64, _: u64) -> Result<(), MemoryFault> {
        Ok(())
    }
    fn read_u64(&self, _: u64) -> u64 {
        self.0
    }
    fn write_u64(&mut self, _: u64, _: u64) {}
    fn copy(&mut self, _: u64, _: u64, _: u64) {}
}

/// Values near every boundary that matters: zero, 2 MiB multiples, MAXPHYADDR limits, 2^52,
/// 2^63, 2^64, and anything.
fn wide() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u32..64, -3i64..=3).prop_map(|(bit, off)| (1u64 << bit).wrapping_add_signed(off * 4096)),
        (0u32..64).prop_map(|bit| (1u64 << bit).wrapping_neg()),
        (0u64..1 << 31).prop_map(|n| n << 21),
        Just(0xffff_ffff_ffe0_1000),
        Just(u64::MAX),
    ]
}

fn phys() -> impl Strategy<Value = PhysAddr> {
    wide().prop_map(PhysAddr::new_truncate)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn any_request_plans_or_is_refused_without_panic(
        start in wide(),
        end in wide(),
        new_base in phys(),
        top in phys(),
        map in phys(),
        bits in prop_oneof![32u8..=52, any::<u8>()],
        mask in prop_oneof![Just(0u64), wide()],
        entry in any::<u64>(),
        five in any::<bool>(),
    ) {
        let maps = [map];
        let request = RelocationRequest {
            paging: if five { PagingMode::FiveLevel } else { PagingMode::FourLevel },
            top_table: top,
            image: PhysRange::new(start, end),
            new_base,
            image_maps: &maps,
            max_phys_bits: bits,
            encryption_mask: mask,
        };
        match Plan::<8>::new_with_capacity(&Everywhere(entry), &request) {
            Ok(plan) => {
                let (old, new) = (plan.old_image(), plan.new_image());
                prop_assert!(!old.is_empty() && old.len() == new.len());
                prop_assert!(new.start < new.end, "inverted destination {new}");
                prop_assert!(new.end <= plan.max_phys().limit() && old.end <= plan.max_phys().limit());
                prop_assert!(!old.overlaps(&new));
                let report = plan.apply(&mut Everywhere(entry));
                prop_assert_eq!(report.bytes_copied, old.len());
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                if let PlanError::RangeBeyondMaxPhys { range, .. } = e {
                    prop_assert!(!range.is_empty());
                }
            }
        }
    }
}
