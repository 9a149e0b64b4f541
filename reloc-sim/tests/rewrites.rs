//! The plan's rewrite bookkeeping (issue 12): apply rewrites only the entries planning marked,
//! so the marks must be exactly the entries that must change. An independent full walk over
//! every (table, level) pair, written here from the architecture's rules and sharing no code
//! with reloc-core, says which entries those are; the property compares it with the plan's
//! list and with what apply actually changed in memory, on random layouts (shared tables,
//! recursive slots, L1 tables under the image map, 4 and 5 levels).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use reloc_core::{PagingMode, Plan};
use reloc_sim::layout::{random_layout, Sharing};
use reloc_sim::mem::SparseMemory;
use reloc_sim::relocators::Request;

const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;
const MIB: u64 = 1 << 20;

/// Bits `low..high` set.
fn bits(low: u32, high: u32) -> u64 {
    ((1u64 << high) - 1) & !((1u64 << low) - 1)
}

/// Every entry a relocation must change, with the mask of its address field: every present
/// pointer (PS clear) of a table reached at L2 or above, every present 2 MiB leaf of a
/// declared image map reached at L2; each entry once, however often its table is reached.
fn must_change(mem: &SparseMemory, request: &Request) -> BTreeMap<u64, u64> {
    let address_bits = u32::from(request.max_phys_bits);
    let pointer_field = bits(12, address_bits);
    let leaf_field = bits(21, address_bits);
    let top_level = match request.paging {
        PagingMode::FourLevel => 4,
        PagingMode::FiveLevel => 5,
    };
    let image_maps: BTreeSet<u64> = request.image_maps.iter().map(|m| m.as_u64()).collect();
    let mut seen = BTreeSet::from([(request.top_table.as_u64(), top_level)]);
    let mut to_visit = vec![(request.top_table.as_u64(), top_level)];
    let mut changes = BTreeMap::new();
    while let Some((table, level)) = to_visit.pop() {
        if level == 1 {
            continue;
        }
        for index in 0..512 {
            let at = table + index * 8;
            let entry = mem.read(at).expect("tables are in RAM");
            if entry & PRESENT == 0 {
                continue;
            }
            if entry & PS != 0 {
                if level == 2 && image_maps.contains(&table) {
                    changes.insert(at, leaf_field);
                }
                continue;
            }
            changes.insert(at, pointer_field);
            let child = (entry & pointer_field, level - 1);
            if seen.insert(child) {
                to_visit.push(child);
            }
        }
    }
    changes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn apply_rewrites_exactly_the_entries_a_full_walk_says_must_change(
        seed in any::<u64>(),
        sharing in prop_oneof![Just(Sharing::None), Just(Sharing::Allowed), Just(Sharing::Required)],
    ) {
        let rl = random_layout(seed, sharing);
        let (mut machine, layout) = rl.build().expect("random layouts build");
        let request = layout.request(rl.target);
        prop_assert_eq!(request.encryption_mask, 0, "the walk above assumes no encryption bits");
        let plan: Plan = Plan::new(&machine.mem, &request.as_core()).expect("random layouts plan");
        let expected = must_change(&machine.mem, &request);
        prop_assert!(!expected.is_empty());

        let listed: BTreeSet<u64> = plan.rewritten_entries().map(|a| a.as_u64()).collect();
        prop_assert_eq!(plan.rewritten_entries().count(), listed.len(), "an entry listed twice");
        let expected_addrs: BTreeSet<u64> = expected.keys().copied().collect();
        prop_assert_eq!(&listed, &expected_addrs);

        let before = machine.mem.clone();
        plan.apply(&mut machine.mem);
        let image = request.image;
        let delta = request.new_base.as_u64().wrapping_sub(image.start);
        let mut changed = BTreeSet::new();
        for at in (image.start..image.end).step_by(8) {
            let old = before.read(at).expect("image is RAM");
            let new = machine.mem.read(at.wrapping_add(delta)).expect("destination is RAM");
            if new == old {
                continue;
            }
            changed.insert(at);
            // Changed exactly once: delta added to the address field, nothing else.
            let field = expected.get(&at).copied().unwrap_or(0);
            let rebased = (old & !field) | ((old & field).wrapping_add(delta) & field);
            prop_assert_eq!(new, rebased, "entry at {:#x} (copy {:#x})", at, at.wrapping_add(delta));
        }
        prop_assert_eq!(&changed, &expected_addrs);
        prop_assert!(delta % (2 * MIB) == 0 && delta != 0);
    }
}
