//! Why a relocation request is refused. Every refusal happens during planning, which only
//! reads: memory is exactly as it was.

use core::fmt;

use x86_64::PhysAddr;

use crate::paging::{Level, Malformed};
use crate::phys::{MemoryFault, PhysRange};

/// Which caller-named table an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableRole {
    /// `RelocationRequest::top_table`.
    TopLevel,
    /// One of `RelocationRequest::image_maps`.
    ImageMap,
}

impl fmt::Display for TableRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableRole::TopLevel => "top-level table",
            TableRole::ImageMap => "image-map table",
        })
    }
}

/// Which of the two image ranges an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RangeRole {
    /// The running image.
    Old,
    /// The destination: `new_base` plus the image size rounded up to 2 MiB.
    New,
}

impl fmt::Display for RangeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeRole::Old => "image",
            RangeRole::New => "destination",
        })
    }
}

/// One entry of one table: where an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryLocation {
    /// Physical address of the table.
    pub table: PhysAddr,
    /// The level the table was reached at.
    pub level: Level,
    /// Index of the entry, 0 to 511.
    pub index: u16,
    /// The raw entry.
    pub entry: u64,
}

impl fmt::Display for EntryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} table {:#x}[{}] = {:#018x}",
            self.level,
            self.table.as_u64(),
            self.index,
            self.entry
        )
    }
}

/// Why a request was rejected. Planning only reads, so memory is as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlanError {
    /// MAXPHYADDR outside 32..=52.
    InvalidMaxPhysBits {
        /// What was asked.
        bits: u8,
    },
    /// The image holds no byte.
    EmptyImage {
        /// The image as given.
        image: PhysRange,
    },
    /// The image start is not 2 MiB-aligned or its end not 4 KiB-aligned.
    ImageMisaligned {
        /// The image as given.
        image: PhysRange,
    },
    /// The new base is not a multiple of the image-map leaf size (2 MiB).
    NewBaseMisaligned {
        /// The new base as given.
        new_base: PhysAddr,
    },
    /// The encryption mask has bits outside `12..MAXPHYADDR`, or leaves fewer than 32
    /// address bits below its lowest bit.
    InvalidEncryptionMask {
        /// The mask as given.
        mask: u64,
        /// MAXPHYADDR as given.
        max_phys_bits: u8,
    },
    /// A range reaches past the highest physical address (MAXPHYADDR, or the lowest
    /// encryption bit). Checked before any length is rounded, so no arithmetic can wrap.
    RangeBeyondMaxPhys {
        /// Which range.
        role: RangeRole,
        /// The range.
        range: PhysRange,
        /// MAXPHYADDR.
        max_phys_bits: u8,
    },
    /// The destination overlaps the running image: the copy would overwrite live tables.
    RangesOverlap {
        /// The running image.
        old: PhysRange,
        /// The destination.
        new: PhysRange,
    },
    /// Physical memory cannot serve a range the relocation must read or write.
    Inaccessible {
        /// Which range.
        role: RangeRole,
        /// The range.
        range: PhysRange,
        /// What the memory reported.
        fault: MemoryFault,
    },
    /// A table named in the request is not 4 KiB-aligned.
    TableMisaligned {
        /// Which table.
        role: TableRole,
        /// Its address.
        table: PhysAddr,
    },
    /// A table named in the request lies outside the image.
    TableOutsideImage {
        /// Which table.
        role: TableRole,
        /// Its address.
        table: PhysAddr,
    },
    /// A pointer entry leads to a table outside the image: every table must live in the
    /// image, or the copy would not contain it.
    PointerOutsideImage {
        /// The pointer.
        at: EntryLocation,
    },
    /// A present entry the CPU would fault on.
    MalformedEntry {
        /// The entry.
        at: EntryLocation,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// An image-map leaf maps memory outside the image (rounded up to 2 MiB): moving it would
    /// point it at memory that was never copied.
    ImageLeafOutsideImage {
        /// The leaf.
        at: EntryLocation,
    },
    /// A 4 KiB leaf under an image-map table maps image memory: it would keep pointing at the
    /// old copy (the precise form of Xen's "no 4k mappings in l2_xenmap").
    ImageMappedBy4KiBLeaf {
        /// The image-map entry pointing to the L1 table.
        image_map: EntryLocation,
        /// The 4 KiB leaf in that L1 table.
        leaf: EntryLocation,
    },
    /// A declared image-map table is never reached as an L2 table from the top level.
    ImageMapNotReached {
        /// The table as declared.
        table: PhysAddr,
    },
    /// A declared image-map table is also reached as an L3 (or higher) table, where its
    /// leaves would be 1 GiB leaves: no single rebase is right for both readings.
    ImageMapAliased {
        /// The table as declared.
        table: PhysAddr,
        /// The higher level it is also reached at.
        level: Level,
    },
    /// Adding the move distance to this entry's address would leave the address field
    /// (reach MAXPHYADDR, or drop below zero).
    RebasedEntryBeyondMaxPhys {
        /// The entry.
        at: EntryLocation,
        /// MAXPHYADDR.
        max_phys_bits: u8,
    },
    /// More distinct tables than the plan can hold.
    TooManyTables {
        /// The plan's capacity.
        capacity: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::InvalidMaxPhysBits { bits } => {
                write!(f, "MAXPHYADDR of {bits} bits is outside 32..=52")
            }
            PlanError::EmptyImage { image } => write!(f, "image {image} is empty"),
            PlanError::ImageMisaligned { image } => write!(
                f,
                "image {image} must start on a 2 MiB boundary and end on a 4 KiB boundary"
            ),
            PlanError::NewBaseMisaligned { new_base } => {
                write!(f, "new base {:#x} is not 2 MiB-aligned", new_base.as_u64())
            }
            PlanError::InvalidEncryptionMask { mask, max_phys_bits } => write!(
                f,
                "encryption mask {mask:#x} must lie in bits 12..{max_phys_bits} and leave at least 32 address bits"
            ),
            PlanError::RangeBeyondMaxPhys {
                role,
                range,
                max_phys_bits,
            } => write!(
                f,
                "{role} {range} reaches past the physical address limit (MAXPHYADDR {max_phys_bits})"
            ),
            PlanError::RangesOverlap { old, new } => {
                write!(f, "destination {new} overlaps the image {old}")
            }
            PlanError::Inaccessible { role, range, fault } => {
                write!(f, "{role} {range} is not accessible: {fault}")
            }
            PlanError::TableMisaligned { role, table } => {
                write!(f, "{role} {:#x} is not 4 KiB-aligned", table.as_u64())
            }
            PlanError::TableOutsideImage { role, table } => {
                write!(f, "{role} {:#x} lies outside the image", table.as_u64())
            }
            PlanError::PointerOutsideImage { at } => {
                write!(f, "{at} points to a table outside the image")
            }
            PlanError::MalformedEntry { at, reason } => write!(f, "{at} is malformed: {reason}"),
            PlanError::ImageLeafOutsideImage { at } => {
                write!(f, "image-map leaf {at} maps memory outside the image")
            }
            PlanError::ImageMappedBy4KiBLeaf { image_map, leaf } => write!(
                f,
                "4 KiB leaf {leaf} under image map {image_map} maps image memory and would not move"
            ),
            PlanError::ImageMapNotReached { table } => write!(
                f,
                "image-map table {:#x} is not reached as an L2 table from the top level",
                table.as_u64()
            ),
            PlanError::ImageMapAliased { table, level } => write!(
                f,
                "image-map table {:#x} is also reached as an {level} table; its leaves cannot be rebased for both",
                table.as_u64()
            ),
            PlanError::RebasedEntryBeyondMaxPhys { at, max_phys_bits } => write!(
                f,
                "{at} would leave the address field (MAXPHYADDR 2^{max_phys_bits}) once rebased"
            ),
            PlanError::TooManyTables { capacity } => {
                write!(f, "more than {capacity} distinct page tables are reachable")
            }
        }
    }
}

impl core::error::Error for PlanError {}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    /// The messages name the role, the range or table, and the entry, as a boot log shows
    /// them.
    #[test]
    fn refusals_name_the_role_and_the_culprit() {
        let table = PhysAddr::new(0x30_4000);
        let image = PhysRange::new(0x20_0000, 0x80_0000);
        let new = PhysRange::new(0x200_0000, 0x260_0000);
        let at = EntryLocation {
            table: PhysAddr::new(0x30_3000),
            level: Level::L3,
            index: 5,
            entry: 0x9063,
        };
        for (error, text) in [
            (
                PlanError::TableMisaligned {
                    role: TableRole::TopLevel,
                    table,
                },
                "top-level table 0x304000 is not 4 KiB-aligned",
            ),
            (
                PlanError::TableOutsideImage {
                    role: TableRole::ImageMap,
                    table,
                },
                "image-map table 0x304000 lies outside the image",
            ),
            (
                PlanError::Inaccessible {
                    role: RangeRole::New,
                    range: new,
                    fault: MemoryFault { addr: 0x240_0000 },
                },
                "destination [0x2000000, 0x2600000) is not accessible: physical address 0x2400000 is not accessible",
            ),
            (
                PlanError::RangeBeyondMaxPhys {
                    role: RangeRole::Old,
                    range: image,
                    max_phys_bits: 36,
                },
                "image [0x200000, 0x800000) reaches past the physical address limit (MAXPHYADDR 36)",
            ),
            (
                PlanError::PointerOutsideImage { at },
                "L3 table 0x303000[5] = 0x0000000000009063 points to a table outside the image",
            ),
        ] {
            assert_eq!(error.to_string(), text);
        }
    }
}
