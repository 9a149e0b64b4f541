//! One error type for the whole boot path, so that a caller's `?` needs no `From` of its own.
//!
//! Each step keeps its own error type for those who match on it (`hvm::BootInfoError`,
//! `multiboot2::Multiboot2Error`, [`SelectError`], [`PlanError`], [`SwitchError`],
//! [`RelocateError`]); every one of them converts into [`Error`], which names only the step
//! that failed and hands the step's error back through [`core::error::Error::source`]. An
//! error reporter that walks the chain prints each message once; to print the detail
//! yourself, print `source()` (or the step's error) as well.
//!
//! ```
//! fn boot_step(image_size: u64) -> Result<reloc_core::PhysAddr, reloc_core::Error> {
//!     let map = [reloc_core::MemoryRegion { start: 0, len: 1 << 30, kind: 1 }];
//!     let request = reloc_core::TargetRequest::new(image_size, &[]);
//!     Ok(reloc_core::select_target(&map, &request)?)
//! }
//! assert!(matches!(
//!     boot_step(0),
//!     Err(reloc_core::Error::Select(reloc_core::SelectError::EmptyImage))
//! ));
//! ```

use core::fmt;

#[cfg(feature = "hvm")]
use crate::hvm::BootInfoError;
#[cfg(feature = "multiboot2")]
use crate::multiboot2::Multiboot2Error;
use crate::plan::PlanError;
use crate::select::SelectError;
use crate::switch::{RelocateError, SwitchError};

/// Why a step of the boot path failed: which step, and the step's own error.
///
/// Every refusal it carries happened before memory was written (see each step's error type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The PVH boot information (`hvm_start_info`) was rejected
    /// ([`crate::hvm::BootInfo::parse`]).
    #[cfg(feature = "hvm")]
    BootInfo(BootInfoError),
    /// The multiboot2 boot information was rejected
    /// ([`crate::multiboot2::Multiboot2Info::parse`]).
    #[cfg(feature = "multiboot2")]
    Multiboot2(Multiboot2Error),
    /// No relocation target was found ([`crate::select::select_target`]).
    Select(SelectError),
    /// The relocation request was refused while planning ([`crate::plan::Plan::new`]).
    Plan(PlanError),
    /// The switch parameters were refused ([`crate::switch::SwitchParams::new`]).
    Switch(SwitchError),
    /// The relocation refused to start ([`crate::switch::relocate`]): memory is untouched.
    Relocate(RelocateError),
}

/// Names the step only: the step's error is [`core::error::Error::source`], which error
/// reporters print after this (printing it here too would repeat it).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "hvm")]
            Error::BootInfo(_) => f.write_str("PVH boot information rejected"),
            #[cfg(feature = "multiboot2")]
            Error::Multiboot2(_) => f.write_str("multiboot2 boot information rejected"),
            Error::Select(_) => f.write_str("no relocation target selected"),
            Error::Plan(_) => f.write_str("relocation plan refused"),
            Error::Switch(_) => f.write_str("switch parameters refused"),
            Error::Relocate(_) => f.write_str("relocation refused to start"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(match self {
            #[cfg(feature = "hvm")]
            Error::BootInfo(e) => e,
            #[cfg(feature = "multiboot2")]
            Error::Multiboot2(e) => e,
            Error::Select(e) => e,
            Error::Plan(e) => e,
            Error::Switch(e) => e,
            Error::Relocate(e) => e,
        })
    }
}

#[cfg(feature = "hvm")]
impl From<BootInfoError> for Error {
    fn from(e: BootInfoError) -> Self {
        Error::BootInfo(e)
    }
}

#[cfg(feature = "multiboot2")]
impl From<Multiboot2Error> for Error {
    fn from(e: Multiboot2Error) -> Self {
        Error::Multiboot2(e)
    }
}

impl From<SelectError> for Error {
    fn from(e: SelectError) -> Self {
        Error::Select(e)
    }
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Self {
        Error::Plan(e)
    }
}

impl From<SwitchError> for Error {
    fn from(e: SwitchError) -> Self {
        Error::Switch(e)
    }
}

impl From<RelocateError> for Error {
    fn from(e: RelocateError) -> Self {
        Error::Relocate(e)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::error::Error as _;
    use std::string::ToString;

    use super::*;
    use crate::paging::VirtAddr;

    /// Each step's error converts, is the source, and its message is not repeated in the
    /// step's name (an error reporter prints the chain).
    #[test]
    fn every_step_converts_and_is_the_source() {
        let select = SelectError::EmptyImage;
        let plan = PlanError::TooManyTables { capacity: 3 };
        let switch = SwitchError::StackMisaligned {
            stack: (VirtAddr::new(0x1001), VirtAddr::new(0x2000)),
        };
        let relocate = RelocateError::RspOutsideStack {
            rsp: 0x3000,
            stack: (VirtAddr::new(0x1000), VirtAddr::new(0x2000)),
        };
        let cases = [
            #[cfg(feature = "hvm")]
            (
                BootInfoError::NoMemoryMap.into(),
                BootInfoError::NoMemoryMap.to_string(),
                "PVH boot information rejected",
            ),
            #[cfg(feature = "multiboot2")]
            (
                Multiboot2Error::MissingMemoryMap.into(),
                Multiboot2Error::MissingMemoryMap.to_string(),
                "multiboot2 boot information rejected",
            ),
            (
                Error::from(select),
                select.to_string(),
                "no relocation target selected",
            ),
            (plan.into(), plan.to_string(), "relocation plan refused"),
            (
                switch.into(),
                switch.to_string(),
                "switch parameters refused",
            ),
            (
                relocate.into(),
                relocate.to_string(),
                "relocation refused to start",
            ),
        ];
        for (error, inner, step) in cases {
            assert_eq!(error.to_string(), step);
            assert!(
                !error.to_string().contains(&inner),
                "{error} repeats {inner}"
            );
            let source = error.source().expect("a step error is the source");
            assert_eq!(source.to_string(), inner);
        }
        assert_eq!(Error::from(select), Error::Select(select));
        assert_eq!(Error::from(plan), Error::Plan(plan));
        assert_eq!(Error::from(relocate), Error::Relocate(relocate));
    }
}
