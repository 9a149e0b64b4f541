//! The `select_target` fuzz target: small memory maps and avoid lists, against two
//! oracles written independently of `reloc_core::select_target`:
//!
//! - **the rule** its docs state, computed with plain interval arithmetic on `Vec`s: sort the
//!   map's boundaries, mark each piece usable when a RAM entry covers it and no other entry
//!   does, merge usable pieces into extents, keep the extents whose aligned end (clipped to
//!   2^52) is at or below the limit, subtract the avoided ranges, and take the highest
//!   aligned slot (and, for `NoRoom`, the largest aligned free span);
//! - **Xen**: a literal model of `__start_xen`'s loop and `consider_modules` on the same
//!   sanitised map. Whenever Xen would relocate, `select_target` must pick a slot at the same
//!   address or higher (it keeps exact fits that Xen's `size + 2 MiB - 1` misses).
//!
//! Addresses are 2 MiB units plus a byte offset (up to about 500 MiB), or, for unit bytes
//! from 0xf8 up, values near 4 GiB, 2^52, 2^63 and 2^64 (see [`Addr::value`]), so that
//! wrapping, saturation and the 2^52 ceiling are searched too.

use arbitrary::Unstructured;
use reloc_core::select::{E820_RAM, PHYS_ADDR_END};
use reloc_core::{select_target, MemoryRegion, PhysRange, SelectError, TargetRequest};

use super::{Reader, Writer};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Most regions in a map.
pub const MAX_REGIONS: usize = 6;
/// Most avoided ranges.
pub const MAX_AVOID: usize = 4;

/// An address: `units` × 2 MiB + `offset` bytes, or for `units` from 0xf8 up a value near
/// a boundary (see [`Addr::value`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    /// 2 MiB units, or a boundary selector from 0xf8 up.
    pub units: u8,
    /// Bytes (2 MiB units for 0xfd and 0xfe).
    pub offset: u16,
}

impl Addr {
    /// The value: for `units` below 0xf8, `units` × 2 MiB + `offset`; else
    /// 0xf8: 4 GiB − `offset`; 0xf9: 4 GiB + `offset`; 0xfa: 2^52 − `offset`;
    /// 0xfb: 2^52 + `offset`; 0xfc: 2^63 + `offset`; 0xfd: 2^64 − `offset` × 2 MiB;
    /// 0xfe: 2^52 − `offset` × 2 MiB; 0xff: 2^64 − 1 − `offset`.
    pub fn value(self) -> u64 {
        let off = u64::from(self.offset);
        match self.units {
            0xf8 => 4 * GIB - off,
            0xf9 => 4 * GIB + off,
            0xfa => PHYS_ADDR_END - off,
            0xfb => PHYS_ADDR_END + off,
            0xfc => (1 << 63) + off,
            0xfd => 0u64.wrapping_sub(off * 2 * MIB),
            0xfe => PHYS_ADDR_END - off * 2 * MIB,
            0xff => u64::MAX - off,
            units => u64::from(units) * 2 * MIB + off,
        }
    }
    fn read(r: &mut Reader) -> Self {
        Self {
            units: r.u8(),
            offset: r.u16(),
        }
    }
    fn write(self, w: &mut Writer) {
        w.u8(self.units);
        w.u16(self.offset);
    }
    /// `units` × 2 MiB.
    pub const fn units(units: u8) -> Self {
        Self { units, offset: 0 }
    }
}

/// A map entry: start, length, and a type byte (below 0xc0: RAM; else its low 3 bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: Addr,
    /// Length.
    pub len: Addr,
    /// Type byte.
    pub kind: u8,
}

/// One decoded input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// The memory map.
    pub regions: Vec<Region>,
    /// Bytes to place.
    pub image_size: Addr,
    /// Avoided ranges (start, end; possibly empty or inverted).
    pub avoid: Vec<(Addr, Addr)>,
    /// 0: 4 GiB (Xen); 0xff: no limit; 0xfe: 2^52; 0xfd: 2^52 − 2 MiB; else units of 2 MiB.
    pub limit: u8,
    /// Alignment choice (see [`Description::align`]).
    pub align: u8,
    /// 0: 2 MiB (Xen); 0xff: 2^64 − 1; 0xfe: 2^52; else units of 512 KiB.
    pub min_base: u8,
}

impl Description {
    /// Decodes fuzzer bytes.
    pub fn decode(u: &mut Unstructured<'_>) -> Self {
        let mut r = Reader(u);
        let n = r.count(MAX_REGIONS);
        let regions = (0..n)
            .map(|_| Region {
                start: Addr::read(&mut r),
                len: Addr::read(&mut r),
                kind: r.u8(),
            })
            .collect();
        let image_size = Addr::read(&mut r);
        let n = r.count(MAX_AVOID);
        let avoid = (0..n)
            .map(|_| (Addr::read(&mut r), Addr::read(&mut r)))
            .collect();
        Self {
            regions,
            image_size,
            avoid,
            limit: r.u8(),
            align: r.u8(),
            min_base: r.u8(),
        }
    }

    /// The bytes that decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.count(self.regions.len());
        for r in &self.regions {
            r.start.write(&mut w);
            r.len.write(&mut w);
            w.u8(r.kind);
        }
        self.image_size.write(&mut w);
        w.count(self.avoid.len());
        for (s, e) in &self.avoid {
            s.write(&mut w);
            e.write(&mut w);
        }
        w.u8(self.limit);
        w.u8(self.align);
        w.u8(self.min_base);
        w.0
    }

    /// The memory map.
    pub fn map(&self) -> Vec<MemoryRegion> {
        self.regions
            .iter()
            .map(|r| MemoryRegion {
                start: r.start.value(),
                len: r.len.value(),
                kind: if r.kind < 0xc0 {
                    E820_RAM
                } else {
                    u32::from(r.kind & 7)
                },
            })
            .collect()
    }

    /// The avoided ranges.
    pub fn avoid_ranges(&self) -> Vec<PhysRange> {
        self.avoid
            .iter()
            .map(|(s, e)| PhysRange::new(s.value(), e.value()))
            .collect()
    }

    /// The alignment: 2 MiB, 4 KiB, 64 KiB, 1 MiB, 4 MiB, 1 GiB, 0 (invalid), 3 MiB (invalid).
    pub fn align(&self) -> u64 {
        [2 * MIB, 4096, 64 << 10, MIB, 4 * MIB, GIB, 0, 3 * MIB][usize::from(self.align % 8)]
    }

    /// The request, over `avoid`.
    pub fn request<'a>(&self, avoid: &'a [PhysRange]) -> TargetRequest<'a> {
        TargetRequest {
            image_size: self.image_size.value(),
            avoid,
            limit: match self.limit {
                0 => 4 * GIB,
                0xff => u64::MAX,
                0xfe => PHYS_ADDR_END,
                0xfd => PHYS_ADDR_END - 2 * MIB,
                l => u64::from(l) * 2 * MIB,
            },
            align: self.align(),
            min_base: match self.min_base {
                0 => 2 * MIB,
                0xff => u64::MAX,
                0xfe => PHYS_ADDR_END,
                m => u64::from(m) << 19,
            },
        }
    }
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The oracle's slot.
    Picked {
        /// The slot's start.
        base: u64,
        /// Where the Xen model would relocate (`None`: Xen would panic "Not enough memory").
        xen: Option<u64>,
    },
    /// No room, as the oracle (and the Xen model) found.
    NoRoom,
    /// Empty image or bad alignment, as expected.
    BadRequest,
}

/// Decodes `data` and checks it; panics on a violation.
pub fn check_bytes(data: &[u8]) -> Outcome {
    check(&Description::decode(&mut Unstructured::new(data)))
}

/// A half-open range as a pair; `None` when empty. Map entries wrapping past 2^64 are cut at
/// 2^64 − 1, as `select_target` documents.
fn span(start: u64, end: u64) -> Option<(u64, u64)> {
    (start < end).then_some((start, end))
}

fn entry_span(r: &MemoryRegion) -> Option<(u64, u64)> {
    span(r.start, r.start.saturating_add(r.len))
}

/// The usable RAM extents, sorted: pieces between consecutive boundaries of the map where a
/// RAM entry covers the piece and no entry for which `blocks` holds does, merged when
/// they touch. `blocks` is "not RAM" for `select_target`'s rule.
fn extents(map: &[MemoryRegion], blocks: impl Fn(u32) -> bool) -> Vec<(u64, u64)> {
    let entries: Vec<((u64, u64), u32)> = map
        .iter()
        .filter_map(|r| entry_span(r).map(|s| (s, r.kind)))
        .collect();
    let mut points: Vec<u64> = entries.iter().flat_map(|((s, e), _)| [*s, *e]).collect();
    points.sort_unstable();
    points.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for piece in points.windows(2) {
        let (a, b) = (piece[0], piece[1]);
        // Boundaries include every entry's ends, so an entry covers all of [a, b) or none.
        let covering = || entries.iter().filter(|((s, e), _)| *s <= a && a < *e);
        let usable =
            covering().any(|(_, k)| *k == E820_RAM) && !covering().any(|(_, k)| blocks(*k));
        if !usable {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// The highest slot and the largest aligned free span, by the documented rule.
fn rule_oracle(map: &[MemoryRegion], req: &TargetRequest<'_>, needed: u64) -> (Option<u64>, u64) {
    let align = req.align;
    let round_down = |x: u64| x / align * align;
    let mut avoid: Vec<(u64, u64)> = req
        .avoid
        .iter()
        .filter_map(|r| span(r.start, r.end))
        .collect();
    avoid.sort_unstable();
    let mut best = None;
    let mut largest = 0;
    for (start, end) in extents(map, |k| k != E820_RAM) {
        let top = round_down(end.min(PHYS_ADDR_END));
        if top > req.limit {
            continue;
        }
        // The free pieces of [max(start, min_base), top): the extent minus the avoided ranges.
        let mut free = Vec::new();
        let mut from = start.max(req.min_base);
        for &(s, e) in &avoid {
            if e <= from || s >= top {
                continue;
            }
            if s > from {
                free.push((from, s));
            }
            from = from.max(e);
        }
        if from < top {
            free.push((from, top));
        }
        for (s, e) in free {
            let Some(low) = s.checked_next_multiple_of(align) else {
                continue;
            };
            let high = round_down(e);
            if high <= low {
                continue;
            }
            largest = largest.max(high - low);
            if high - low >= needed {
                best = best.max(Some(high - needed));
            }
        }
    }
    (best, largest)
}

/// Xen's choice, modelled line by line on `__start_xen` (xen/arch/x86/setup.c) with the
/// request's alignment as `mask + 1`, `min_base` as `PREBUILT_MAP_LIMIT`, the limit as
/// `limit`, the 2^52 ceiling as the directmap's reach, and the avoided ranges as the
/// modules. The running image is one of them, so Xen's "at or above the image" test is left
/// out. Non-RAM entries of type 0 block here, as they do for `select_target`.
fn xen_model(map: &[MemoryRegion], req: &TargetRequest<'_>, reloc_size: u64) -> Option<u64> {
    let mask = req.align - 1;
    let mods: Vec<(u64, u64)> = req
        .avoid
        .iter()
        .filter_map(|r| span(r.start, r.end))
        .collect();
    // `boot_e820` after `sanitize_e820_map`, walked from the top.
    for (addr, end) in extents(map, |k| k != E820_RAM).into_iter().rev() {
        // C wraps where these overflow; no slot can start there anyway.
        let (Some(s), Some(floor)) = (addr.checked_add(mask), req.min_base.checked_add(mask))
        else {
            continue;
        };
        let s = (s & !mask).max(floor & !mask);
        let e = end & !mask;
        if s >= e {
            continue;
        }
        let e = e.min(PHYS_ADDR_END & !mask);
        if e <= req.limit {
            let end = consider_modules(s, e, reloc_size.checked_add(mask)?, &mods) & !mask;
            if end > s {
                return Some(end - reloc_size);
            }
        }
    }
    None
}

/// `consider_modules`: the end of the highest gap of `size` bytes in `[s, e)` between the
/// modules, or 0.
fn consider_modules(s: u64, e: u64, size: u64, mods: &[(u64, u64)]) -> u64 {
    if s > e || e - s < size {
        return 0;
    }
    for (i, &(start, end)) in mods.iter().enumerate() {
        if s < end && start < e {
            let above = consider_modules(end, e, size, &mods[i + 1..]);
            if above != 0 {
                return above;
            }
            return consider_modules(s, start, size, &mods[i + 1..]);
        }
    }
    e
}

/// Runs `select_target` on the description and checks its answer; panics on a violation.
pub fn check(d: &Description) -> Outcome {
    let map = d.map();
    let avoid = d.avoid_ranges();
    let req = d.request(&avoid);
    let result = select_target(&map, &req).map(|a| a.as_u64());
    let align = req.align;
    if align == 0 || !align.is_power_of_two() {
        assert_eq!(result, Err(SelectError::BadAlignment { align }), "{d:?}");
        return Outcome::BadRequest;
    }
    if req.image_size == 0 {
        assert_eq!(result, Err(SelectError::EmptyImage), "{d:?}");
        return Outcome::BadRequest;
    }
    let Some(needed) = req.image_size.checked_next_multiple_of(align) else {
        assert_eq!(
            result,
            Err(SelectError::NoRoom {
                needed: u64::MAX,
                largest_candidate: 0
            }),
            "{d:?}"
        );
        return Outcome::NoRoom;
    };
    let (best, largest) = rule_oracle(&map, &req, needed);
    let xen = xen_model(&map, &req, needed);
    match result {
        Ok(base) => {
            assert_eq!(Some(base), best, "{d:?}: not the rule's slot");
            if let Some(x) = xen {
                assert!(base >= x, "{d:?}: {base:#x} is below Xen's {x:#x}");
            }
            Outcome::Picked { base, xen }
        }
        Err(SelectError::NoRoom {
            needed: n,
            largest_candidate,
        }) => {
            assert_eq!(n, needed, "{d:?}");
            assert_eq!(best, None, "{d:?}: NoRoom but a slot fits");
            assert_eq!(xen, None, "{d:?}: NoRoom but Xen relocates");
            assert_eq!(largest_candidate, largest, "{d:?}: largest free span");
            Outcome::NoRoom
        }
        Err(e) => panic!("{d:?}: unexpected {e:?}"),
    }
}

/// Named seeds: QEMU-like maps and edge cases.
pub fn seeds() -> Vec<(&'static str, Description)> {
    let ram = |s: u8, l: u8| Region {
        start: Addr::units(s),
        len: Addr::units(l),
        kind: 0,
    };
    let image = (Addr::units(1), Addr::units(4));
    vec![
        (
            "qemu-pc-128m",
            Description {
                regions: vec![
                    Region {
                        start: Addr::units(0),
                        len: Addr {
                            units: 0,
                            offset: 0xfc00,
                        },
                        kind: 0,
                    },
                    Region {
                        start: Addr {
                            units: 0,
                            offset: 0,
                        },
                        len: Addr::units(63),
                        kind: 0,
                    },
                    Region {
                        start: Addr::units(63),
                        len: Addr::units(1),
                        kind: 0xc2,
                    },
                ],
                image_size: Addr::units(3),
                avoid: vec![image],
                ..Description::default()
            },
        ),
        (
            "module-gap",
            Description {
                regions: vec![ram(1, 200), ram(100, 10)],
                image_size: Addr {
                    units: 2,
                    offset: 1,
                },
                avoid: vec![image, (Addr::units(150), Addr::units(199))],
                align: 1,
                ..Description::default()
            },
        ),
        (
            "no-room",
            Description {
                regions: vec![ram(1, 8), ram(20, 2)],
                image_size: Addr::units(6),
                avoid: vec![image],
                min_base: 3,
                ..Description::default()
            },
        ),
        (
            "limit-and-far",
            Description {
                regions: vec![
                    ram(1, 100),
                    Region {
                        start: Addr {
                            units: 0xff,
                            offset: 0x5000,
                        },
                        len: Addr::units(200),
                        kind: 0,
                    },
                ],
                image_size: Addr::units(2),
                avoid: vec![(Addr::units(90), Addr::units(80))],
                limit: 50,
                align: 4,
                ..Description::default()
            },
        ),
        (
            // Issue 9: touching RAM entries form one extent (Xen merges them).
            "adjacent-ram-merges",
            Description {
                regions: vec![ram(1, 29), ram(30, 3)],
                image_size: Addr::units(4),
                avoid: vec![image],
                ..Description::default()
            },
        ),
        (
            // Issue 9: RAM [0, 4 GiB + 4 KiB) rounds down to 4 GiB, which meets the limit.
            "rounded-end-meets-limit",
            Description {
                regions: vec![Region {
                    start: Addr::units(0),
                    len: Addr {
                        units: 0xf9,
                        offset: 0x1000,
                    },
                    kind: 0,
                }],
                image_size: Addr::units(2),
                avoid: vec![image],
                ..Description::default()
            },
        ),
        (
            // A reserved entry at 4 GiB cuts RAM [0, 2^52): the part below qualifies.
            "reserved-cuts-extent",
            Description {
                regions: vec![
                    Region {
                        start: Addr::units(0),
                        len: Addr {
                            units: 0xfa,
                            offset: 0,
                        },
                        kind: 0,
                    },
                    Region {
                        start: Addr {
                            units: 0xf8,
                            offset: 0x1000,
                        },
                        len: Addr {
                            units: 0,
                            offset: 0x2000,
                        },
                        kind: 0xc2,
                    },
                ],
                image_size: Addr::units(2),
                avoid: vec![image],
                ..Description::default()
            },
        ),
        (
            // Kept over Xen: an aligned gap of exactly the slot, between two modules.
            "exact-fit-between-modules",
            Description {
                regions: vec![ram(1, 40)],
                image_size: Addr::units(4),
                avoid: vec![
                    image,
                    (Addr::units(20), Addr::units(25)),
                    (Addr::units(29), Addr::units(41)),
                ],
                ..Description::default()
            },
        ),
        (
            // Kept over Xen: the image sits high, only room below it.
            "moves-below-image",
            Description {
                regions: vec![ram(1, 55)],
                image_size: Addr::units(4),
                avoid: vec![(Addr::units(50), Addr::units(55))],
                ..Description::default()
            },
        ),
        (
            // No limit: RAM running past 2^52 and a wrapping entry near 2^64; the pick stays
            // below 2^52.
            "ceiling-2-pow-52-and-wrap",
            Description {
                regions: vec![
                    Region {
                        start: Addr {
                            units: 0xfe,
                            offset: 64,
                        },
                        len: Addr {
                            units: 0xff,
                            offset: 0,
                        },
                        kind: 0,
                    },
                    Region {
                        start: Addr {
                            units: 0xff,
                            offset: 0x5000,
                        },
                        len: Addr::units(200),
                        kind: 0,
                    },
                ],
                image_size: Addr::units(4),
                avoid: vec![(
                    Addr {
                        units: 0xfa,
                        offset: 0x1000,
                    },
                    Addr {
                        units: 0xfb,
                        offset: 0x1000,
                    },
                )],
                limit: 0xff,
                align: 1,
                ..Description::default()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str) -> Outcome {
        let (_, d) = seeds().into_iter().find(|(n, _)| *n == name).expect("seed");
        check(&d)
    }

    #[test]
    fn seeds_round_trip_and_pass() {
        for (name, d) in seeds() {
            let bytes = d.encode();
            assert_eq!(
                Description::decode(&mut Unstructured::new(&bytes)),
                d,
                "{name}"
            );
            check(&d);
        }
    }

    #[test]
    fn seeds_give_the_expected_picks() {
        // QEMU's 128 MiB map: the same as Xen.
        let xen_like = Outcome::Picked {
            base: 120 * MIB,
            xen: Some(120 * MIB),
        };
        assert_eq!(outcome("qemu-pc-128m"), xen_like);
        assert_eq!(outcome("no-room"), Outcome::NoRoom);
        // Merged [2 MiB, 66 MiB): both pick 58 MiB (per entry it would be 52 MiB).
        assert_eq!(
            outcome("adjacent-ram-merges"),
            Outcome::Picked {
                base: 58 * MIB,
                xen: Some(58 * MIB)
            }
        );
        assert_eq!(
            outcome("rounded-end-meets-limit"),
            Outcome::Picked {
                base: 4 * GIB - 4 * MIB,
                xen: Some(4 * GIB - 4 * MIB)
            }
        );
        assert_eq!(
            outcome("reserved-cuts-extent"),
            Outcome::Picked {
                base: 4 * GIB - 6 * MIB,
                xen: Some(4 * GIB - 6 * MIB)
            }
        );
        // Where reloc keeps more than Xen: Xen goes under the lower module, or nowhere.
        assert_eq!(
            outcome("exact-fit-between-modules"),
            Outcome::Picked {
                base: 50 * MIB,
                xen: Some(32 * MIB)
            }
        );
        // (The model leaves out Xen's "at or above the image" test; Xen itself refuses.)
        assert_eq!(
            outcome("moves-below-image"),
            Outcome::Picked {
                base: 92 * MIB,
                xen: Some(92 * MIB)
            }
        );
        // Clipped at 2^52, under the avoided page just below it.
        let top = PHYS_ADDR_END - 4096;
        assert_eq!(
            outcome("ceiling-2-pow-52-and-wrap"),
            Outcome::Picked {
                base: top - 8 * MIB,
                xen: Some(top - 8 * MIB)
            }
        );
    }

    #[test]
    fn xen_model_matches_measured_xen_on_qemu_maps() {
        // Measured: Xen 4.17 with a 6 MiB image, -m 3G -> 0xbf800000, -m 1G -> 0x3f800000.
        let ram = |start: u64, end: u64| MemoryRegion {
            start,
            len: end - start,
            kind: E820_RAM,
        };
        let avoid = [PhysRange::new(2 * MIB, 8 * MIB)];
        let req = TargetRequest::new(6 * MIB, &avoid);
        for (top, xen) in [(0xbffe_0000, 0xbf80_0000), (0x3ffe_0000, 0x3f80_0000)] {
            let map = [ram(0, 0x9fc00), ram(0x10_0000, top)];
            assert_eq!(xen_model(&map, &req, 6 * MIB), Some(xen));
            assert_eq!(select_target(&map, &req).map(|a| a.as_u64()), Ok(xen));
        }
    }

    #[test]
    fn xen_model_needs_the_extra_2_mib() {
        // Modules at [40, 50) and [58, 64) MiB leave an aligned 8 MiB gap at [50, 58).
        let mods = [(40 * MIB, 50 * MIB), (58 * MIB, 64 * MIB)];
        assert_eq!(
            consider_modules(2 * MIB, 64 * MIB, 8 * MIB, &mods),
            58 * MIB
        );
        // Asked for reloc_size + mask, it skips that gap for the one below the modules.
        assert_eq!(
            consider_modules(2 * MIB, 64 * MIB, 10 * MIB - 1, &mods),
            40 * MIB
        );
        let map = [MemoryRegion {
            start: 2 * MIB,
            len: 62 * MIB,
            kind: E820_RAM,
        }];
        let avoid = mods.map(|(s, e)| PhysRange::new(s, e));
        let req = TargetRequest::new(8 * MIB, &avoid);
        assert_eq!(xen_model(&map, &req, 8 * MIB), Some(32 * MIB));
        assert_eq!(select_target(&map, &req).map(|a| a.as_u64()), Ok(50 * MIB));
    }
}
