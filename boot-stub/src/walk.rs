//! A software walk of the live page tables, read through the directmap: what the CPU's MMU
//! does, used to check after the switch where the image's virtual addresses now lead.

use core::fmt;

use reloc_core::{Entry, EntryKind, Level, MaxPhysAddr, MemoryFault, PhysMemory};

/// Why a virtual address did not translate.
#[derive(Clone, Copy, Debug)]
pub enum WalkError {
    /// An entry on the path is not present.
    NotPresent { level: Level, entry: u64 },
    /// An entry on the path is malformed.
    Malformed { level: Level, entry: u64 },
    /// A table on the path is outside the directmap.
    Unreadable(MemoryFault),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NotPresent { level, entry } => {
                write!(f, "{level} entry {entry:#018x} not present")
            }
            WalkError::Malformed { level, entry } => {
                write!(f, "{level} entry {entry:#018x} malformed")
            }
            WalkError::Unreadable(fault) => write!(f, "{fault}"),
        }
    }
}

/// Translates `virt` through the tables at `top_table`, whose level is `top_level` (L4, or L5
/// with LA57).
pub fn translate<M: PhysMemory + ?Sized>(
    mem: &M,
    top_table: u64,
    top_level: Level,
    virt: u64,
    max_phys: MaxPhysAddr,
) -> Result<u64, WalkError> {
    let mut table = top_table;
    let mut level = top_level;
    loop {
        let index = (virt >> level.index_shift()) & 511;
        let addr = table + index * 8;
        mem.check_range(addr, 8).map_err(WalkError::Unreadable)?;
        let raw = mem.read_u64(addr);
        match Entry::new(raw).decode(level, max_phys) {
            Ok(EntryKind::NotPresent) => return Err(WalkError::NotPresent { level, entry: raw }),
            Ok(EntryKind::Leaf { frame, size }) => return Ok(frame + (virt & (size - 1))),
            Ok(EntryKind::Table { table: next }) => {
                table = next;
                level = match level.below() {
                    Some(below) => below,
                    None => return Err(WalkError::Malformed { level, entry: raw }),
                };
            }
            Err(_) => return Err(WalkError::Malformed { level, entry: raw }),
        }
    }
}
