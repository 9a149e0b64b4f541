//! `reloc-sim notes`: an image's Xen ELF notes, the feature sets libelf derives from them, and
//! lints for what breaks boots.
//!
//! The reading is `reloc_core::notes` (libelf's rules); this module adds what a host tool
//! needs: gzip input (distributions ship hypervisors compressed), one list of the notes, and
//! the lints:
//! - **error** `entry-outside-load`: PHYS32_ENTRY lies in no loadable segment's physical
//!   range `[p_paddr, p_paddr + p_memsz)` (a `PT_LOAD` with R, W or X: libelf loads no other). QEMU loads segments at `p_paddr` and jumps to the
//!   entry; Xen's PVH loader checks only that the entry lies between the lowest `p_paddr` and
//!   the highest `p_paddr + p_memsz` of the loadable segments (`elf_xen_addr_calc_check`), so
//!   an entry in a gap between segments passes Xen and still runs unloaded memory.
//! - **warning** `not-pvh-bootable`: no PHYS32_ENTRY note (or one of 0xffffffff, libelf's
//!   unset value), so no PVH loader (QEMU `-kernel`, Xen's PVH dom0/domU builder) can start
//!   the image.
//! - **warning** `note-region-short-tail`: a note segment or section ends with 1 to 11 bytes
//!   after its last note; libelf reads a header across its end, reloc-core ignores them.
//! - **warning** `too-many-notes`, `string-too-long`: what libelf marks the image broken for
//!   and boots anyway (it stops after 65,536 notes; it skips a string over 4,096 bytes).
//! - **warning** `feature-name-unknown-to-old-xen`: a FEATURES token other than the five
//!   names the first libelf knew (bits 0-4). That libelf (Xen 4.1 among others) rejects the
//!   whole image for a name it does not know, `!` or not; the current one knows only bits
//!   0-4, 8 and 11 and ignores other optional names. SUPPORTED_FEATURES, a bitmap old
//!   hypervisors ignore, is the forward-compatible place (what Linux did for
//!   `hvm_callback_vector`).
//!
//! An unknown required feature (`!name`) is not a lint: libelf rejects the image, and so does
//! the parse.

use std::collections::HashSet;
use std::io::Read;

use reloc_core::notes::{
    feature_bit, ElfClass, ElfImage, Escaped, FeatureSet, FeatureTokens, NoteSource, NotesError,
    Phys32Reloc, XenNote, XenNoteType, XenSummary, XenValue, MAX_STRING_LEN, MAX_TOTAL_NOTES,
    ORIGINAL_LIBELF_FEATURE_BITS,
};

/// The gzip magic.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest decompressed image accepted (a hypervisor or kernel is a few tens of MiB).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Why an image could not be read.
#[derive(Debug)]
pub enum InputError {
    /// The gzip stream is corrupt.
    Gzip(std::io::Error),
    /// The gzip stream decompresses to more than [`MAX_DECOMPRESSED`] bytes.
    TooLarge,
    /// reloc-core rejected the ELF file or one of its notes.
    Notes(NotesError),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gzip(e) => write!(f, "gzip: {e}"),
            Self::TooLarge => write!(
                f,
                "gzip: decompresses to more than {MAX_DECOMPRESSED} bytes"
            ),
            Self::Notes(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InputError {}

/// The bytes of an image: decompressed when they start with the gzip magic.
pub fn decompress(bytes: &[u8]) -> Result<(Vec<u8>, bool), InputError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok((bytes.to_vec(), false));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(InputError::Gzip)?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(InputError::TooLarge);
    }
    Ok((out, true))
}

/// Lint severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The image will not boot as intended.
    Error,
    /// The image boots on some loaders only, or not by PVH.
    Warning,
}

/// One lint finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lint {
    /// Error or warning.
    pub severity: Severity,
    /// A stable identifier (`entry-outside-load`, ...).
    pub code: &'static str,
    /// What is wrong, where, and what to do.
    pub message: String,
}

/// One note as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteLine {
    /// Position in libelf's walk.
    pub index: u32,
    /// Segment or section.
    pub source: NoteSource,
    /// File offset of its header.
    pub offset: u64,
    /// The owner as `readelf` shows it.
    pub owner: String,
    /// `type`.
    pub n_type: u32,
    /// `descsz`.
    pub desc_size: usize,
    /// The Xen type name, for a Xen note of type 0 to 19.
    pub xen_type: Option<XenNoteType>,
    /// Its decoded value, for a Xen note.
    pub value: Option<String>,
}

/// Everything `reloc-sim notes` reports about an image.
#[derive(Clone, Debug)]
pub struct NotesReport {
    /// The input was gzip-compressed.
    pub compressed: bool,
    /// Size of the ELF file (decompressed).
    pub elf_size: usize,
    /// ELF32 or ELF64.
    pub class: ElfClass,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
    /// The notes libelf walks, each listed once (a section fallback may re-read a segment's
    /// notes; the list keeps the first reading of each file offset).
    pub notes: Vec<NoteLine>,
    /// What libelf keeps.
    pub summary: XenSummary,
    /// The `PT_LOAD` segment (index, p_paddr, p_memsz) holding PHYS32_ENTRY.
    pub entry_segment: Option<(u16, u64, u64)>,
    /// Findings.
    pub lints: Vec<Lint>,
}

impl NotesReport {
    /// Reads an image (gzip or not), its notes and lints.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InputError> {
        let (elf, compressed) = decompress(bytes)?;
        let image = ElfImage::parse(&elf).map_err(InputError::Notes)?;
        let summary = image.xen_summary().map_err(InputError::Notes)?;
        let mut seen = HashSet::new();
        let mut notes = Vec::new();
        let mut lints = Vec::new();
        for note in image.notes() {
            let note = note.map_err(InputError::Notes)?;
            if !seen.insert(note.offset()) {
                continue;
            }
            let xen = XenNote::decode(&note)
                .transpose()
                .map_err(InputError::Notes)?;
            if let Some(x) = &xen {
                if let XenValue::Features { text, .. } = x.value() {
                    feature_lints(text, note.index(), &mut lints);
                }
            }
            notes.push(NoteLine {
                index: note.index(),
                source: note.source(),
                offset: note.offset(),
                owner: Escaped(note.owner()).to_string(),
                n_type: note.n_type(),
                desc_size: note.desc().len(),
                xen_type: xen.as_ref().and_then(XenNote::note_type),
                value: xen.as_ref().map(|x| value_text(&x.value())),
            });
        }
        let entry_segment = summary.phys32_entry.and_then(|e| {
            image
                .load_segment_at_paddr(u64::from(e))
                .map(|p| (p.index, p.paddr, p.memsz))
        });
        match summary.phys32_entry {
            None => lints.push(Lint {
                severity: Severity::Warning,
                code: "not-pvh-bootable",
                message: "no PHYS32_ENTRY note: not PVH-bootable (QEMU -kernel and Xen's PVH \
                          loader start an image only at its PHYS32_ENTRY)"
                    .into(),
            }),
            Some(e) if entry_segment.is_none() => lints.push(Lint {
                severity: Severity::Error,
                code: "entry-outside-load",
                message: format!(
                    "PHYS32_ENTRY {e:#x} is outside every PT_LOAD segment's physical range \
                     [p_paddr, p_paddr + p_memsz): the loader would jump to memory the image \
                     does not load"
                ),
            }),
            Some(_) => {}
        }
        if let Some(tail) = summary.short_tail {
            lints.push(Lint {
                severity: Severity::Warning,
                code: "note-region-short-tail",
                message: format!(
                    "{} ends with {} byte(s) after its last note at offset {:#x}, fewer than a                      12-byte note header: libelf reads a note header there across the end                      (usually padding, read as a note it ignores); reloc-core ignores the bytes.                      Make the segment's size cover whole notes",
                    tail.source, tail.len, tail.offset
                ),
            });
        }
        if summary.note_limit_reached {
            lints.push(Lint {
                severity: Severity::Warning,
                code: "too-many-notes",
                message: format!(
                    "more than {MAX_TOTAL_NOTES} notes: libelf marks the image broken (\"too many \
                     ELF notes\") and ignores every note after that many"
                ),
            });
        }
        if summary.strings_too_long > 0 {
            lints.push(Lint {
                severity: Severity::Warning,
                code: "string-too-long",
                message: format!(
                    "{} Xen string note(s) longer than {MAX_STRING_LEN} bytes: libelf marks the \
                     image broken (\"excessively long string\") and skips them (a FEATURES \
                     string that long sets and requires nothing)",
                    summary.strings_too_long
                ),
            });
        }
        Ok(Self {
            compressed,
            elf_size: elf.len(),
            class: image.class(),
            machine: image.machine(),
            entry: image.entry(),
            notes,
            summary,
            entry_segment,
            lints,
        })
    }

    /// Whether a lint is an error.
    pub fn has_errors(&self) -> bool {
        self.lints.iter().any(|l| l.severity == Severity::Error)
    }

    /// The report as text.
    pub fn text(&self, file: &str) -> String {
        let s = &self.summary;
        let mut out = format!(
            "reloc-sim notes: {file}{}\n",
            if self.compressed {
                format!(" (gzip, {} bytes decompressed)", self.elf_size)
            } else {
                String::new()
            }
        );
        out += &format!(
            "  {} {}, entry {:#x}\n",
            self.class,
            machine_name(self.machine),
            self.entry
        );
        out += &format!("  notes             {}\n", self.notes.len());
        for n in &self.notes {
            let t = match n.xen_type {
                Some(t) => format!("{} {}", n.n_type, t.name()),
                None => format!("{:#x}", n.n_type),
            };
            out += &format!(
                "    {:<3} {:<6} type {:<24} {:>5} bytes  {} @{:#x}{}\n",
                n.index,
                n.owner,
                t,
                n.desc_size,
                n.source,
                n.offset,
                n.value
                    .as_ref()
                    .map(|v| format!("  {v}"))
                    .unwrap_or_default()
            );
        }
        out += &format!("  xen notes         {}\n", s.xen_notes);
        out += &format!(
            "  phys32 entry      {}\n",
            match (s.phys32_entry, self.entry_segment) {
                (None, _) => "none".into(),
                (Some(e), Some((i, start, size))) =>
                    format!("{e:#x} (PT_LOAD segment {i}, physical {start:#x}+{size:#x})"),
                (Some(e), None) => format!("{e:#x} (in no PT_LOAD segment)"),
            }
        );
        out += &format!(
            "  phys32 reloc      {}\n",
            match s.phys32_reloc {
                None => "none (not relocatable)".into(),
                Some(r) => reloc_text(&r),
            }
        );
        out += &format!("  supported         {}\n", s.supported);
        out += &format!("  required          {}\n", s.required);
        for l in &self.lints {
            out += &format!(
                "  {:<7} {}: {}\n",
                match l.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                l.code,
                l.message
            );
        }
        let count = |sev| self.lints.iter().filter(|l| l.severity == sev).count();
        out += &format!(
            "result: {}PVH-bootable, {} error(s), {} warning(s)\n",
            if s.phys32_entry.is_some() && !self.has_errors() {
                ""
            } else {
                "not "
            },
            count(Severity::Error),
            count(Severity::Warning)
        );
        out
    }

    /// The report as JSON.
    pub fn json(&self, file: &str) -> serde_json::Value {
        let s = &self.summary;
        let set = |f: &FeatureSet| {
            serde_json::json!({
                "bits": format!("{:#x}", f.0),
                "names": f.iter().map(|(bit, name)| match name {
                    Some(n) => n.to_string(),
                    None => format!("bit {bit}"),
                }).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({
            "file": file,
            "compressed": self.compressed,
            "elf_size": self.elf_size,
            "class": self.class.to_string(),
            "machine": self.machine,
            "entry": format!("{:#x}", self.entry),
            "notes": self.notes.iter().map(|n| serde_json::json!({
                "index": n.index,
                "source": n.source.to_string(),
                "offset": n.offset,
                "owner": n.owner,
                "type": n.n_type,
                "xen_type": n.xen_type.map(XenNoteType::name),
                "desc_size": n.desc_size,
                "value": n.value,
            })).collect::<Vec<_>>(),
            "xen_notes": s.xen_notes,
            "phys32_entry": s.phys32_entry.map(|e| format!("{e:#x}")),
            "entry_segment": self.entry_segment.map(|(i, _, _)| i),
            "phys32_reloc": s.phys32_reloc.map(|r| serde_json::json!({
                "align": format!("{:#x}", r.align_or_default()),
                "min": format!("{:#x}", r.min_or_default()),
                "max": format!("{:#x}", r.max_or_default()),
                "given": [r.align.is_some(), r.min.is_some(), r.max.is_some()],
            })),
            "supported": set(&s.supported),
            "required": set(&s.required),
            "pvh_bootable": s.phys32_entry.is_some() && !self.has_errors(),
            "lints": self.lints,
        })
    }
}

fn machine_name(m: u16) -> String {
    match m {
        3 => "i386".into(),
        62 => "x86-64".into(),
        other => format!("machine {other}"),
    }
}

fn reloc_text(r: &Phys32Reloc) -> String {
    let given = |v: Option<u32>| if v.is_some() { "" } else { " (default)" };
    format!(
        "align {:#x}{}, min {:#x}{}, max {:#x}{}",
        r.align_or_default(),
        given(r.align),
        r.min_or_default(),
        given(r.min),
        r.max_or_default(),
        given(r.max)
    )
}

fn value_text(v: &XenValue<'_>) -> String {
    match v {
        XenValue::Number(n) => format!("{n:#x}"),
        XenValue::OtherSizeNumber(d) => {
            format!("{} bytes {} (libelf reads 0)", d.len(), hex(d))
        }
        XenValue::String(s) => format!("\"{}\"", Escaped(s)),
        XenValue::Features {
            text,
            supported,
            required,
        } => format!(
            "\"{}\" (supported {:#x}, required {:#x})",
            Escaped(text),
            supported.0,
            required.0
        ),
        XenValue::SupportedFeatures(f) => f.to_string(),
        XenValue::Phys32Entry(e) => format!("{e:#x}"),
        XenValue::Phys32Reloc(r) => reloc_text(r),
        XenValue::Ignored(d) => format!("ignored by libelf: {}", hex(d)),
        XenValue::StringTooLong => format!(
            "string longer than {MAX_STRING_LEN} bytes: skipped by libelf (\"excessively long string\")"
        ),
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Warnings for FEATURES tokens outside the names every libelf knows.
fn feature_lints(text: &[u8], index: u32, lints: &mut Vec<Lint>) {
    for token in FeatureTokens::new(text) {
        let name = Escaped(token.name);
        let bit = feature_bit(token.name);
        if bit.is_some_and(|b| ORIGINAL_LIBELF_FEATURE_BITS & (1 << b) != 0) {
            continue;
        }
        let what = if token.name.is_empty() {
            format!("an empty token at byte {}", token.start)
        } else {
            format!("`{}{name}`", if token.required { "!" } else { "" })
        };
        let current = match (token.libelf_bit(), bit) {
            (Some(_), _) => "current libelf knows it".to_string(),
            (None, Some(b)) => {
                format!(
                    "current libelf does not know it either and ignores it (bit {b} stays unset)"
                )
            }
            (None, None) => "it is no XENFEAT name; current libelf ignores it".to_string(),
        };
        let fix = match bit {
            Some(b) if token.required => format!(
                "if it need not be required, set bit {b} in SUPPORTED_FEATURES instead, which \
                 old hypervisors ignore"
            ),
            Some(b) => {
                format!("set bit {b} in SUPPORTED_FEATURES instead, which old hypervisors ignore")
            }
            None => "remove it".to_string(),
        };
        lints.push(Lint {
            severity: Severity::Warning,
            code: "feature-name-unknown-to-old-xen",
            message: format!(
                "Xen note {index} (FEATURES) names {what}: hypervisors whose libelf knows only \
                 bits 0-4 (Xen 4.1 and older) reject the image; {current}; {fix}"
            ),
        });
    }
}
