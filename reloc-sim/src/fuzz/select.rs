//! The `select_target` fuzz target: small memory maps and avoid lists, with a brute-force
//! oracle of the rule `reloc_core::select_target` documents.
//!
//! Addresses are 2 MiB units plus a byte offset, so maps stay within about 512 MiB and the
//! oracle can try every aligned slot; a unit byte of 0xff gives an address just below 2^64
//! (wrapping and saturation paths), where only the validity of a pick is checked.

use arbitrary::Unstructured;
use reloc_core::select::E820_RAM;
use reloc_core::{select_target, MemoryRegion, PhysRange, SelectError, TargetRequest};

use super::{Reader, Writer};

const MIB: u64 = 1 << 20;
/// Most regions in a map.
pub const MAX_REGIONS: usize = 6;
/// Most avoided ranges.
pub const MAX_AVOID: usize = 4;
/// The oracle tries at most this many slots per region; beyond, only validity is checked.
const ORACLE_SLOTS: u64 = 1 << 17;

/// An address: `units` × 2 MiB + `offset` bytes, or `u64::MAX - offset` when `units` is 0xff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    /// 2 MiB units.
    pub units: u8,
    /// Bytes.
    pub offset: u16,
}

impl Addr {
    /// The value.
    pub fn value(self) -> u64 {
        if self.units == 0xff {
            u64::MAX - u64::from(self.offset)
        } else {
            u64::from(self.units) * 2 * MIB + u64::from(self.offset)
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
    /// 0: 4 GiB (Xen); 0xff: no limit; else units of 2 MiB.
    pub limit: u8,
    /// Alignment choice (see [`Description::align`]).
    pub align: u8,
    /// 0: 2 MiB (Xen); else units of 512 KiB.
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
        [2 * MIB, 4096, 64 << 10, MIB, 4 * MIB, 1 << 30, 0, 3 * MIB][usize::from(self.align % 8)]
    }

    /// The request, over `avoid`.
    pub fn request<'a>(&self, avoid: &'a [PhysRange]) -> TargetRequest<'a> {
        TargetRequest {
            image_size: self.image_size.value(),
            avoid,
            limit: match self.limit {
                0 => 1 << 32,
                0xff => u64::MAX,
                l => u64::from(l) * 2 * MIB,
            },
            align: self.align(),
            min_base: match self.min_base {
                0 => 2 * MIB,
                m => u64::from(m) << 19,
            },
        }
    }
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A slot, and whether the oracle confirmed it is the highest.
    Picked {
        /// The slot's start.
        base: u64,
        /// The brute-force oracle ran (small map) and agreed.
        oracle: bool,
    },
    /// No room, and whether the oracle confirmed it (and the largest span).
    NoRoom {
        /// The brute-force oracle ran and agreed.
        oracle: bool,
    },
    /// Empty image or bad alignment, as expected.
    BadRequest,
}

/// Decodes `data` and checks it; panics on a violation.
pub fn check_bytes(data: &[u8]) -> Outcome {
    check(&Description::decode(&mut Unstructured::new(data)))
}

fn end_of(r: &MemoryRegion) -> u64 {
    r.start.saturating_add(r.len)
}

/// Runs `select_target` on the description and checks its answer; panics on a violation.
pub fn check(d: &Description) -> Outcome {
    let map = d.map();
    let avoid = d.avoid_ranges();
    let req = d.request(&avoid);
    let result = select_target(&map, &req);
    let align = req.align;
    if align == 0 || !align.is_power_of_two() {
        assert_eq!(result, Err(SelectError::BadAlignment { align }), "{d:?}");
        return Outcome::BadRequest;
    }
    if req.image_size == 0 {
        assert_eq!(result, Err(SelectError::EmptyImage), "{d:?}");
        return Outcome::BadRequest;
    }
    let needed = req.image_size.checked_next_multiple_of(align);
    // Everything a slot must not overlap, as plain (start, end) pairs, empty ones dropped.
    let blockers: Vec<(u64, u64)> = avoid
        .iter()
        .map(|r| (r.start, r.end))
        .chain(
            map.iter()
                .filter(|r| r.kind != E820_RAM)
                .map(|r| (r.start, end_of(r))),
        )
        .filter(|(s, e)| s < e)
        .collect();
    let clear = |s: u64, e: u64| blockers.iter().all(|&(bs, be)| be <= s || e <= bs);
    let qualifying: Vec<(u64, u64)> = map
        .iter()
        .filter(|r| r.kind == E820_RAM && r.len > 0 && end_of(r) <= req.limit)
        .map(|r| (r.start, end_of(r)))
        .collect();
    let valid = |s: u64, len: u64| {
        s.checked_add(len).is_some_and(|e| {
            s.is_multiple_of(align)
                && s >= req.min_base
                && qualifying.iter().any(|&(rs, re)| rs <= s && e <= re)
                && clear(s, e)
        })
    };
    let Some(needed) = needed else {
        assert!(
            matches!(result, Err(SelectError::NoRoom { .. })),
            "{d:?}: {result:?}"
        );
        return Outcome::NoRoom { oracle: false };
    };
    // Brute force: every aligned block of every qualifying region, when there are few.
    let oracle = (|| {
        let mut best: Option<u64> = None;
        let mut largest = 0u64;
        for &(rs, re) in &qualifying {
            let low = rs.max(req.min_base).checked_next_multiple_of(align)?;
            let high = re & !(align - 1);
            if high <= low {
                continue;
            }
            if (high - low) / align > ORACLE_SLOTS {
                return None;
            }
            let mut run = 0u64;
            let mut b = low;
            while b < high {
                if clear(b, b + align) {
                    run += align;
                    largest = largest.max(run);
                    if run >= needed {
                        let base = b + align - needed;
                        best = Some(best.map_or(base, |x| x.max(base)));
                    }
                } else {
                    run = 0;
                }
                b += align;
            }
        }
        Some((best, largest))
    })();
    match result {
        Ok(base) => {
            assert!(
                valid(base, needed),
                "{d:?}: pick {base:#x} of {needed:#x} bytes breaks the rule"
            );
            if let Some((best, _)) = oracle {
                assert_eq!(Some(base), best, "{d:?}: not the highest slot");
            }
            Outcome::Picked {
                base,
                oracle: oracle.is_some(),
            }
        }
        Err(SelectError::NoRoom {
            needed: n,
            largest_candidate,
        }) => {
            assert_eq!(n, needed, "{d:?}");
            assert!(largest_candidate < needed, "{d:?}: {result:?}");
            if let Some((best, largest)) = oracle {
                assert_eq!(best, None, "{d:?}: NoRoom but a slot fits");
                assert_eq!(largest_candidate, largest, "{d:?}: largest free span");
            }
            Outcome::NoRoom {
                oracle: oracle.is_some(),
            }
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
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn oracle_confirms_seed_picks() {
        let outcomes: Vec<Outcome> = seeds().iter().map(|(_, d)| check(d)).collect();
        assert_eq!(
            outcomes[0],
            Outcome::Picked {
                base: 120 * MIB,
                oracle: true
            }
        );
        assert!(outcomes.contains(&Outcome::NoRoom { oracle: true }));
    }
}
