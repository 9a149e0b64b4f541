//! Applying a plan: the copy, then the rebase of the copy. Nothing here can fail.
//!
//! The copy is one bulk [`PhysMemory::copy`]; the rebase then touches only the entries
//! planning marked in each table's rewrite bitmap (Xen's layout: 18 of 7,168), so apply costs
//! the copy plus a few dozen qword updates.

use crate::paging::{address_field, Entry, Level};
use crate::phys::PhysMemory;

use super::walk::entry_addr;
use super::Plan;

/// Counts per paging level, indexed by [`Level`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerLevel([u32; 5]);

impl PerLevel {
    /// The count at `level`.
    pub fn get(&self, level: Level) -> u32 {
        self.0
            .get(usize::from(level.number() - 1))
            .copied()
            .unwrap_or(0)
    }

    /// Adds one at `level`, saturating.
    fn bump(&mut self, level: Level) {
        if let Some(count) = self.0.get_mut(usize::from(level.number() - 1)) {
            *count = count.saturating_add(1);
        }
    }

    /// Sum over all levels.
    pub fn total(&self) -> u32 {
        self.0.iter().fold(0u32, |sum, &n| sum.saturating_add(n))
    }
}

/// What [`Plan::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ApplyReport {
    /// Bytes copied from the image to the new base.
    pub bytes_copied: u64,
    /// Tables whose entries were rebased in the copy, by the highest level each was reached
    /// at. Each distinct table is counted (and rebased) once.
    pub tables_rebased: PerLevel,
    /// Pointer entries rebased, by the highest level of the table holding them.
    pub pointers_rebased: PerLevel,
    /// Image-map 2 MiB leaves rebased.
    pub image_leaves_rebased: u32,
}

impl<const MAX_TABLES: usize> Plan<MAX_TABLES> {
    /// Copies the image to the new base and rebases the copy. Cannot fail and contains no
    /// panicking operation: everything was checked by [`Plan::new`]. Writes only inside
    /// [`Plan::new_image`]; the old image is untouched.
    pub fn apply<M: PhysMemory + ?Sized>(&self, mem: &mut M) -> ApplyReport {
        mem.copy(self.image.start, self.new_base.as_u64(), self.image.len());
        let mut report = ApplyReport {
            bytes_copied: self.image.len(),
            ..ApplyReport::default()
        };
        // The address fields planning proved each rewrite stays inside.
        let pointer_field = address_field(Level::L4, false, self.max_phys);
        let leaf_field = address_field(Level::L2, true, self.max_phys);
        for record in self.records() {
            let Some(level) = record.reached.highest() else {
                continue;
            };
            if !record.reached.any_above_l1() {
                continue;
            }
            report.tables_rebased.bump(level);
            let new_table = record.addr.wrapping_add(self.delta);
            for index in record.rewrites() {
                let addr = entry_addr(new_table, index);
                let entry = Entry::new(mem.read_u64(addr));
                // Only image-map 2 MiB leaves are marked with PS set; pointers have it clear.
                let is_leaf = entry.has_page_size_bit();
                let field = if is_leaf { leaf_field } else { pointer_field };
                // Planning proved this rebase stays in the field; `unwrap_or` only keeps
                // apply free of panicking paths.
                let rebased = entry.rebased(field, self.delta).unwrap_or(entry);
                mem.write_u64(addr, rebased.raw());
                if is_leaf {
                    report.image_leaves_rebased = report.image_leaves_rebased.saturating_add(1);
                } else {
                    report.pointers_rebased.bump(level);
                }
            }
        }
        report
    }
}
