//! Scenario files: a machine and a relocation request in JSON, replayed by
//! `reloc-sim replay FILE`.
//!
//! # Format
//! Numbers that are addresses or raw values are strings, hex with `0x` or decimal; plain
//! JSON numbers are accepted too (`target` included). A negative number, a fraction, a number
//! past 2^64 - 1 or a boolean is an error naming it.
//!
//! ```json
//! {
//!   "description": "what this scenario shows",
//!   "expect": "ok",
//!   "ram": [{"start": "0x0", "end": "0x9fc00"}, {"start": "0x100000", "end": "0x4000000"}],
//!   "memmap": [{"start": "0x100000", "end": "0x4000000", "type": 1}],
//!   "cr3": "0x300000",
//!   "cr4": "0x80",
//!   "max_phys_bits": 46,
//!   "image": {"start": "0x200000", "end": "0x600000"},
//!   "image_maps": ["0x303000"],
//!   "target": "auto",
//!   "virtual": {"image_start": "0xffff82d040000000", "directmap_base": "0xffff830000000000",
//!               "stack_top": "0xffff82d040400000", "rsp": "0xffff82d0403fff00"},
//!   "tables": [{"addr": "0x300000", "entries": {"0": "0x301063", "261": "0x302063"}}],
//!   "data": [{"addr": "0x200000", "qwords": ["0x1122334455667788", "0x1"]}]
//! }
//! ```
//!
//! - `expect` (optional): `"ok"` (relocation done and every property holds), or the error
//!   kind expected: a `PlanError` variant name (`"RangesOverlap"`, `"ImageMappedBy4KiBLeaf"`,
//!   ...) or `"NoRoom"` (target selection). Tests replay every file in `scenarios/` and
//!   compare.
//! - `ram`: RAM ranges, half-open. Everything else is outside memory.
//! - `memmap` (optional): the E820 map target selection sees (`type` 1 is RAM); defaults to
//!   `ram` as type 1.
//! - `cr3`, `cr4`: control registers; CR4 bit 7 is PGE, bit 12 LA57 (five levels).
//! - `max_phys_bits`: MAXPHYADDR, default 46.
//! - `image`: the running image; `image_maps`: the L2 tables whose 2 MiB leaves map it.
//! - `target`: `"auto"` (reloc-core's selection over `memmap`, avoiding the image) or a base.
//! - `virtual` (optional): where the image and directmap are mapped, the stack top and
//!   `rsp`. With it the run warms the TLB, spills to the stack in the critical region, and
//!   re-copies the stack at the switch; without it the switch only loads CR3. A layout the
//!   code cannot run in before the move (`image_start` plus the image length past 2^64, `rsp`
//!   misaligned or unmapped, the image not mapped there) is bad input, as `RunError::Virtual`.
//! - `tables`: page tables by physical address, entries by index (`"0"`..`"511"`);
//!   unlisted entries are zero. An index given twice, or two keys naming one index (`"5"` and
//!   `"05"`), is an error.
//! - `data`: raw qwords from `addr` on.

use std::collections::BTreeMap;
use std::fmt;

use reloc_core::select::E820_RAM;
use reloc_core::{MemoryRegion, PagingMode, PhysAddr, PhysRange};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::check::reached_tables;
use crate::layout::SwitchAddresses;
use crate::machine::{Machine, CR4_LA57};
use crate::mem::{PhysFault, SparseMemory};
use crate::relocators::Request;
use crate::run::{RunInput, Target};

/// A u64 written as a hex string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor).map(Hex)
    }
}

/// Reads a u64 from a JSON number or a string (hex with `0x`, or decimal), naming what is
/// wrong with anything else: a negative number, a fraction, a number past 2^64 (JSON reads
/// it as a float), a boolean.
struct NumberVisitor;

/// What a number field accepts, for error messages.
const NUMBER_EXPECTED: &str =
    "a whole number from 0 to 2^64 - 1, or a string of one (hex with 0x, or decimal)";

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NUMBER_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("{v} is negative: expected {NUMBER_EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!(
            "{v} is not a whole number from 0 to 2^64 - 1 (a fraction, or too large; write large values as strings)"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_u64(v).map_err(E::custom)
    }
}

/// `target`: `"auto"`, or an address as a string or a plain JSON number.
fn target_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct TargetVisitor;
    impl<'de> Visitor<'de> for TargetVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "\"auto\" or {NUMBER_EXPECTED}")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            NumberVisitor.visit_i64(v).map(|n| n.to_string())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            NumberVisitor.visit_f64(v).map(|n| n.to_string())
        }
    }
    d.deserialize_any(TargetVisitor)
}

/// A table's `entries`: each index once. JSON allows a key twice, and `"5"` and `"05"` name
/// the same entry; either would let key order pick the value, so both are errors.
fn unique_entries<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Hex>, D::Error> {
    struct EntriesVisitor;
    impl<'de> Visitor<'de> for EntriesVisitor {
        type Value = BTreeMap<String, Hex>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from entry index (\"0\" to \"511\") to the entry's value")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let mut by_index: BTreeMap<u64, String> = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, Hex>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("entry `{key}` is given twice")));
                }
                if let Ok(index) = key.parse::<u64>() {
                    if let Some(first) = by_index.insert(index, key.clone()) {
                        return Err(de::Error::custom(format!(
                            "keys `{first}` and `{key}` both name entry {index}"
                        )));
                    }
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(EntriesVisitor)
}

/// Parses `0x...` hex or decimal, with optional `_` separators.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number (hex with 0x, or decimal)"))
}

/// A half-open range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// First byte.
    pub start: Hex,
    /// One past the last.
    pub end: Hex,
}

/// An E820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemmapEntry {
    /// First byte.
    pub start: Hex,
    /// One past the last.
    pub end: Hex,
    /// E820 type (1 = RAM).
    #[serde(rename = "type")]
    pub kind: u32,
}

/// The virtual layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Virtual {
    /// Virtual image start.
    pub image_start: Hex,
    /// Virtual address of physical 0 in the directmap.
    pub directmap_base: Hex,
    /// Stack top (inside the image's virtual range).
    pub stack_top: Hex,
    /// Lowest stack byte (default: `rsp`, the live part only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_bottom: Option<Hex>,
    /// Physical bytes the directmap maps from 0 (default: 2^MAXPHYADDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directmap_size: Option<Hex>,
    /// Stack pointer.
    pub rsp: Hex,
}

/// One page table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Physical address.
    pub addr: Hex,
    /// Entries by index (as a decimal string key), each index once.
    #[serde(deserialize_with = "unique_entries")]
    pub entries: BTreeMap<String, Hex>,
}

/// Raw data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// Physical address of the first qword (8-byte aligned).
    pub addr: Hex,
    /// The qwords.
    pub qwords: Vec<Hex>,
}

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Expected outcome: `ok` or an error kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// RAM ranges.
    pub ram: Vec<Range>,
    /// E820 map for selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memmap: Option<Vec<MemmapEntry>>,
    /// CR3.
    pub cr3: Hex,
    /// CR4.
    pub cr4: Hex,
    /// MAXPHYADDR.
    #[serde(default = "default_max_phys")]
    pub max_phys_bits: u8,
    /// Memory-encryption bits (the SME/SEV C-bit) of the entries; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_mask: Option<Hex>,
    /// The image.
    pub image: Range,
    /// Image-map tables.
    pub image_maps: Vec<Hex>,
    /// `auto` or an address (a string, or a plain JSON number).
    #[serde(deserialize_with = "target_text")]
    pub target: String,
    /// Virtual layout.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virt: Option<Virtual>,
    /// Page tables.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// Raw data.
    #[serde(default)]
    pub data: Vec<Data>,
}

fn default_max_phys() -> u8 {
    46
}

/// Why a scenario cannot be loaded.
#[derive(Debug)]
pub enum ScenarioError {
    /// Not valid JSON for the format.
    Json(serde_json::Error),
    /// A field is wrong.
    Field {
        /// Which.
        what: String,
        /// Why.
        why: String,
    },
    /// Contents outside RAM.
    Memory {
        /// What was being written.
        what: String,
        /// The fault.
        fault: PhysFault,
    },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Json(e) => write!(f, "invalid scenario: {e}"),
            ScenarioError::Field { what, why } => write!(f, "scenario field {what}: {why}"),
            ScenarioError::Memory { what, fault } => write!(f, "scenario {what}: {fault}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Self, ScenarioError> {
        serde_json::from_str(text).map_err(ScenarioError::Json)
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The machine and request this scenario describes.
    pub fn to_input(&self) -> Result<RunInput, ScenarioError> {
        let ram: Vec<PhysRange> = self
            .ram
            .iter()
            .map(|r| PhysRange::new(r.start.0, r.end.0))
            .collect();
        let mut mem = SparseMemory::new(&ram);
        for t in &self.tables {
            for (key, value) in &t.entries {
                let index: u64 =
                    key.parse()
                        .ok()
                        .filter(|&i| i < 512)
                        .ok_or_else(|| ScenarioError::Field {
                            what: format!("tables[{:#x}].entries", t.addr.0),
                            why: format!("index `{key}` is not 0..=511"),
                        })?;
                let at = t
                    .addr
                    .0
                    .checked_add(index * 8)
                    .ok_or(ScenarioError::Field {
                        what: "tables".into(),
                        why: format!("table address {:#x} wraps", t.addr.0),
                    })?;
                mem.write(at, value.0)
                    .map_err(|fault| ScenarioError::Memory {
                        what: format!("table {:#x} entry {index}", t.addr.0),
                        fault,
                    })?;
            }
        }
        for d in &self.data {
            for (i, q) in d.qwords.iter().enumerate() {
                let at = d.addr.0.wrapping_add(i as u64 * 8);
                mem.write(at, q.0).map_err(|fault| ScenarioError::Memory {
                    what: format!("data at {:#x}", d.addr.0),
                    fault,
                })?;
            }
        }
        let target = if self.target.trim() == "auto" {
            Target::Auto
        } else {
            Target::Fixed(parse_u64(&self.target).map_err(|why| ScenarioError::Field {
                what: "target".into(),
                why,
            })?)
        };
        let memmap = match &self.memmap {
            Some(m) => m
                .iter()
                .map(|e| MemoryRegion {
                    start: e.start.0,
                    len: e.end.0.saturating_sub(e.start.0),
                    kind: e.kind,
                })
                .collect(),
            None => ram
                .iter()
                .map(|r| MemoryRegion {
                    start: r.start,
                    len: r.len(),
                    kind: E820_RAM,
                })
                .collect(),
        };
        let paging = if self.cr4.0 & CR4_LA57 != 0 {
            PagingMode::FiveLevel
        } else {
            PagingMode::FourLevel
        };
        let top_table = self.cr3.0 & 0x000f_ffff_ffff_f000;
        let mut machine = Machine::new(mem, self.cr3.0, self.cr4.0, self.max_phys_bits);
        let virt = self.virt.map(|v| {
            machine.rsp = v.rsp.0;
            SwitchAddresses {
                image_start: v.image_start.0,
                directmap_base: v.directmap_base.0,
                directmap_size: v.directmap_size.map_or(
                    1u64.checked_shl(self.max_phys_bits.into())
                        .unwrap_or(u64::MAX),
                    |h| h.0,
                ),
                stack_bottom: v.stack_bottom.map_or(v.rsp.0, |h| h.0),
                stack_top: v.stack_top.0,
            }
        });
        let phys = |what: &str, addr: u64| {
            PhysAddr::try_new(addr).map_err(|_| ScenarioError::Field {
                what: what.into(),
                why: format!("{addr:#x} is not a physical address (bits 52..63 set)"),
            })
        };
        Ok(RunInput {
            machine,
            memmap,
            request: Request {
                paging,
                top_table: phys("cr3", top_table)?,
                image: PhysRange::new(self.image.start.0, self.image.end.0),
                new_base: match target {
                    Target::Fixed(b) => phys("target", b)?,
                    Target::Auto => PhysAddr::zero(),
                },
                image_maps: self
                    .image_maps
                    .iter()
                    .map(|h| phys("image_maps", h.0))
                    .collect::<Result<_, _>>()?,
                max_phys_bits: self.max_phys_bits,
                encryption_mask: self.encryption_mask.map_or(0, |h| h.0),
            },
            target,
            virt,
        })
    }

    /// The state of `machine` as a scenario: tables reachable from its CR3 with their
    /// non-zero entries, every other non-zero qword as data, the image and image maps as
    /// given. `target` is `auto`.
    pub fn from_machine(
        machine: &Machine,
        image: PhysRange,
        image_maps: &[u64],
        virt: Option<Virtual>,
        description: String,
    ) -> Scenario {
        let tables: Vec<u64> = reached_tables(&machine.mem, &machine.walk_config())
            .into_keys()
            .filter(|&t| machine.mem.is_ram(t))
            .collect();
        let is_table = |pa: u64| tables.binary_search(&(pa & !0xfff)).is_ok();
        let mut out_tables = Vec::new();
        for &t in &tables {
            let entries: BTreeMap<String, Hex> = (0..512u64)
                .filter_map(|i| {
                    let v = machine.mem.read(t + i * 8).ok()?;
                    (v != 0).then(|| (i.to_string(), Hex(v)))
                })
                .collect();
            out_tables.push(Table {
                addr: Hex(t),
                entries,
            });
        }
        let mut data: Vec<Data> = Vec::new();
        for (pa, v) in machine.mem.nonzero_words().filter(|(pa, _)| !is_table(*pa)) {
            match data.last_mut() {
                Some(d) if d.addr.0 + d.qwords.len() as u64 * 8 == pa => d.qwords.push(Hex(v)),
                _ => data.push(Data {
                    addr: Hex(pa),
                    qwords: vec![Hex(v)],
                }),
            }
        }
        Scenario {
            description,
            expect: None,
            ram: machine
                .mem
                .ram()
                .iter()
                .map(|r| Range {
                    start: Hex(r.start),
                    end: Hex(r.end),
                })
                .collect(),
            memmap: None,
            encryption_mask: None,
            cr3: Hex(machine.cr3()),
            cr4: Hex(machine.cr4()),
            max_phys_bits: machine.max_phys_bits(),
            image: Range {
                start: Hex(image.start),
                end: Hex(image.end),
            },
            image_maps: image_maps.iter().map(|&m| Hex(m)).collect(),
            target: "auto".into(),
            virt,
            tables: out_tables,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parses_both_ways() {
        assert_eq!(parse_u64("0x20_0000"), Ok(0x20_0000));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert!(parse_u64("0xzz").is_err());
        let h: Hex = serde_json::from_str("\"0x10\"").unwrap();
        assert_eq!(h, Hex(16));
        let h: Hex = serde_json::from_str("17").unwrap();
        assert_eq!(h, Hex(17));
        assert_eq!(serde_json::to_string(&Hex(255)).unwrap(), "\"0xff\"");
    }

    #[test]
    fn bad_fields_are_typed() {
        let base = r#"{"ram":[{"start":"0","end":"0x100000"}],"cr3":"0x1000","cr4":"0x80",
            "image":{"start":"0","end":"0x1000"},"image_maps":[],"target":"auto","#;
        let e = Scenario::from_json(&format!(
            r#"{base}"tables":[{{"addr":"0x1000","entries":{{"600":"1"}}}}]}}"#
        ))
        .unwrap()
        .to_input()
        .err()
        .unwrap();
        assert!(e.to_string().contains("`600` is not 0..=511"), "{e}");
        let e = Scenario::from_json(&format!(
            r#"{base}"data":[{{"addr":"0x200000","qwords":["1"]}}]}}"#
        ))
        .unwrap()
        .to_input()
        .err()
        .unwrap();
        assert!(e.to_string().contains("not RAM"), "{e}");
        assert!(Scenario::from_json("{}").is_err());
    }
}
