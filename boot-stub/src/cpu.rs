//! What the 32-bit entry decided from CPUID before paging (CR4.PGE, CR4.LA57), read back from
//! CR4, checked against CPUID and printed, so a boot log says which way each went.

use reloc_core::PagingMode;
use x86_64::registers::control::{Cr4, Cr4Flags};

use crate::println;

/// CPUID.01H:EDX[13]: the CPU has global pages (CR4.PGE).
fn has_pge() -> bool {
    core::arch::x86_64::__cpuid(1).edx & (1 << 13) != 0
}

/// CPUID.(EAX=7,ECX=0):ECX[16]: the CPU has 5-level paging (CR4.LA57).
fn has_la57() -> bool {
    core::arch::x86_64::__cpuid(0).eax >= 7
        && core::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << 16) != 0
}

/// A paging mode as the summary line spells it.
pub fn mode_name(mode: PagingMode) -> &'static str {
    match mode {
        PagingMode::FourLevel => "4-level",
        PagingMode::FiveLevel => "5-level",
    }
}

/// Prints what the entry did with CR4.PGE and CR4.LA57 and returns the paging mode in use.
/// `la57_requested`: the command line holds the word `la57`. An `Err` names the CR4 value
/// when it disagrees with CPUID and the request (the entry code and this check differ).
pub fn report(la57_requested: bool) -> Result<PagingMode, u64> {
    let cr4 = Cr4::read();
    let pge = cr4.contains(Cr4Flags::PAGE_GLOBAL);
    if has_pge() {
        println!("cpu: PGE present (CPUID.01H:EDX[13]): CR4.PGE set, image leaves are global");
    } else {
        println!("cpu: no PGE (CPUID.01H:EDX[13] clear): CR4.PGE left clear, global bits unused");
    }
    if pge != has_pge() {
        return Err(cr4.bits());
    }
    let la57 = cr4.contains(Cr4Flags::L5_PAGING);
    match (la57_requested, has_la57(), la57) {
        (true, true, true) => {
            println!("paging: 5-level (CPUID.(7,0):ECX[16] LA57 and `la57` on the command line)");
            Ok(PagingMode::FiveLevel)
        }
        (true, false, false) => {
            println!(
                "paging: la57 requested but the CPU has no LA57 (CPUID.(7,0):ECX[16] clear): \
                 falling back to 4-level"
            );
            Ok(PagingMode::FourLevel)
        }
        (false, _, false) => {
            println!("paging: 4-level");
            Ok(PagingMode::FourLevel)
        }
        _ => Err(cr4.bits()),
    }
}
