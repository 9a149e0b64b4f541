//! `reloc-sim map` against QEMU itself: boot the stub, let it relocate and hold, dump guest
//! physical memory with the monitor's `pmemsave`, and check that reloc-sim's walk of the
//! dump lists exactly what QEMU's `info tlb` (per leaf, virtual -> physical) and `info mem`
//! (coalesced ranges with protection) report for the live guest.

use std::collections::BTreeMap;

use reloc_sim::dump::{leaves, mapped_ranges, MappedRange};
use reloc_tests::qemu;

const RAM: u64 = 128 << 20;

/// One `info tlb` line: `ffffffff80200000: 0000000007c00000 --PDA---W`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct TlbLine {
    virt: u64,
    phys: u64,
    nx: bool,
    global: bool,
    huge: bool,
    user: bool,
    writable: bool,
}

fn parse_tlb(text: &str) -> Vec<TlbLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (virt, rest) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("tlb line {l:?}"));
            let mut parts = rest.split_whitespace();
            let phys = parts.next().unwrap();
            let flags: Vec<char> = parts.next().unwrap().chars().collect();
            assert_eq!(flags.len(), 9, "flags in {l:?}");
            TlbLine {
                virt: u64::from_str_radix(virt.trim(), 16).unwrap(),
                phys: u64::from_str_radix(phys, 16).unwrap(),
                nx: flags[0] == 'X',
                global: flags[1] == 'G',
                huge: flags[2] == 'P',
                user: flags[7] == 'U',
                writable: flags[8] == 'W',
            }
        })
        .collect()
}

/// One `info mem` line: `ffff800000000000-ffff800100000000 0000000100000000 -rw`.
fn parse_mem(text: &str) -> Vec<(u64, u64, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let range = parts.next().unwrap();
            let _size = parts.next().unwrap();
            let prot = parts.next().unwrap_or_else(|| panic!("mem line {l:?}"));
            let (start, end) = range.split_once('-').unwrap();
            (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(end, 16).unwrap(),
                prot.to_owned(),
            )
        })
        .collect()
}

/// QEMU's `info mem` view of leaves: virtually contiguous runs with equal user/write bits.
fn as_info_mem(leaves: &[MappedRange]) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for l in leaves {
        let prot = format!(
            "{}r{}",
            if l.user { 'u' } else { '-' },
            if l.writable { 'w' } else { '-' }
        );
        match out.last_mut() {
            Some(last) if last.1 == l.virt_start && last.2 == prot => last.1 = l.virt_end,
            _ => out.push((l.virt_start, l.virt_end, prot)),
        }
    }
    out
}

#[test]
fn map_of_a_pmemsave_dump_matches_qemu_info_tlb_and_info_mem() {
    let mut vm = qemu::boot_and_hold(&["-m", "128M"]);

    let registers = vm.monitor("info registers").expect("monitor");
    let cr3 = registers
        .split_whitespace()
        .find_map(|w| w.strip_prefix("CR3="))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .unwrap_or_else(|| panic!("no CR3 in {registers}"));
    let dir = std::env::temp_dir().join(format!("reloc-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump_path = dir.join("guest.bin");
    let reply = vm
        .monitor(&format!("pmemsave 0 {RAM:#x} \"{}\"", dump_path.display()))
        .expect("pmemsave");
    assert!(reply.trim().is_empty(), "pmemsave said {reply:?}");
    let tlb_text = vm.monitor("info tlb").expect("info tlb");
    let mem_text = vm.monitor("info mem").expect("info mem");
    vm.kill();
    let dump = std::fs::read(&dump_path).expect("read dump");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(dump.len() as u64, RAM);

    // The stub moved itself: CR3 is in the new copy, high in RAM.
    assert!(cr3 > 0x200000 + (4 << 20), "cr3 {cr3:#x} not relocated");
    let ours = leaves(&dump, 0, cr3, false).expect("walk the dump");

    // info tlb: the same leaves, the same physical addresses and leaf flags.
    let qemu_tlb = parse_tlb(&tlb_text);
    assert!(qemu_tlb.len() > 2000, "{} tlb lines", qemu_tlb.len());
    let ours_by_virt: BTreeMap<u64, &MappedRange> =
        ours.iter().map(|l| (l.virt_start, l)).collect();
    assert_eq!(ours.len(), qemu_tlb.len(), "leaf count");
    for q in &qemu_tlb {
        let l = ours_by_virt
            .get(&q.virt)
            .unwrap_or_else(|| panic!("QEMU maps {:#x}, reloc-sim does not", q.virt));
        assert_eq!(l.phys_start, q.phys, "physical address of {:#x}", q.virt);
        assert_eq!(l.page_size > 4096, q.huge, "page size of {:#x}", q.virt);
        assert_eq!(
            (l.nx, l.global, l.user, l.writable),
            (q.nx, q.global, q.user, q.writable),
            "flags of {:#x}",
            q.virt
        );
    }

    // info mem: the same coalesced ranges and protections.
    assert_eq!(as_info_mem(&ours), parse_mem(&mem_text), "info mem");

    // The coalesced listing (what `reloc-sim map` prints) covers the same bytes, and the
    // image's virtual range maps the relocated copy.
    let ranges = mapped_ranges(&dump, 0, cr3, false).unwrap();
    let mapped: u64 = ranges.iter().map(MappedRange::size).sum();
    assert_eq!(mapped, ours.iter().map(MappedRange::size).sum::<u64>());
    let image_range = ranges
        .iter()
        .find(|r| r.virt_start == 0xffff_ffff_8020_0000)
        .expect("the image's virtual range");
    assert!(image_range.global && image_range.phys_start >= 4 << 20);
    assert_eq!(
        image_range.phys_start,
        cr3 & !0x1f_ffff,
        "image copy holds CR3's table"
    );
}
