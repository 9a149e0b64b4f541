//! The `notes` fuzz target: arbitrary bytes as an ELF file, read by `reloc_core::notes` and
//! compared with an independent reading of the same bytes.
//!
//! Input: one flag byte, then the file. With [`FIX_IDENT`] the first six bytes of the file are
//! overwritten with the ELF magic, the class the input chose (ELF64 when the class byte is
//! even, else ELF32) and little-endian encoding, so mutations get past the identification at
//! once; the seeds ([`seeds`]) are well-formed images from [`ElfWriter`], so mutations start
//! from real note segments and sections.
//!
//! The oracle ([`oracle`]) is written separately from reloc-core, from libelf's C
//! (`elf_xen_parse`, `elf_xen_parse_notes`, `elf_note_next`, `elf_xen_parse_note`,
//! `elf_xen_parse_features`): whole-width (`u128`) arithmetic instead of checked `u64`, byte
//! loops instead of iterators, and libelf's feature loop transliterated with its 64-byte
//! buffer; sizes rounded as libelf's 32-bit `(size + 3) & ~3`, `UNSET_ADDR32`, the shared
//! note count that stops the walk, over-long strings skipped. It also applies the bounds
//! reloc-core documents as stricter than libelf (notes inside their segment or section,
//! strings terminated inside it, a tail shorter than a header ignored; its module docs list
//! every difference). Every note the walk yields, where it stops with an error, and the
//! folded summary must agree.

use arbitrary::Unstructured;
use reloc_core::notes::{
    ElfImage, NoteSource, NotesError, Phys32Reloc, ShortTail, XenNote, XenSummary, PF_R, PF_X,
    PT_LOAD, PT_NOTE, SHT_NOTE,
};

use super::Reader;

/// Most bytes of file.
pub const MAX_FILE: usize = 1 << 16;

/// Flag: write the ELF identification (magic, class, little-endian).
pub const FIX_IDENT: u8 = 1;

/// One decoded input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// `FIX_*` bits.
    pub flags: u8,
    /// The file (at most [`MAX_FILE`] bytes are used).
    pub file: Vec<u8>,
}

impl Description {
    /// Decodes fuzzer bytes.
    pub fn decode(u: &mut Unstructured<'_>) -> Self {
        let mut r = Reader(u);
        let flags = r.u8();
        let rest = r.0.len();
        let mut file = r.0.bytes(rest).map(<[u8]>::to_vec).unwrap_or_default();
        file.truncate(MAX_FILE);
        Self { flags, file }
    }

    /// The bytes that decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.flags];
        v.extend_from_slice(&self.file);
        v
    }

    /// The file with the fix-ups applied.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = self.file.clone();
        if self.flags & FIX_IDENT != 0 {
            let class = if f.get(4).is_some_and(|c| c % 2 == 1) {
                1
            } else {
                2
            };
            if f.len() < 6 {
                f.resize(6, 0);
            }
            f[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', class, 1]);
        }
        f
    }
}

/// Writes small ELF images: PT_LOAD segments, PT_NOTE segments and SHT_NOTE sections holding
/// given note bytes, and a section-name table so tools like `readelf` name the sections.
/// Used by the seeds and by `reloc-sim`'s command tests.
#[derive(Clone, Debug)]
pub struct ElfWriter {
    /// ELF64 when true, else ELF32.
    pub elf64: bool,
    /// `e_entry`.
    pub entry: u64,
    /// PT_LOAD segments: (vaddr, paddr, memsz, flags). They hold no file bytes.
    pub loads: Vec<(u64, u64, u64, u32)>,
    /// PT_NOTE segments, each the concatenated notes it holds.
    pub note_segments: Vec<Vec<u8>>,
    /// SHT_NOTE sections that are not in a segment.
    pub note_sections: Vec<Vec<u8>>,
}

/// A note's bytes: header, name with its NUL, descriptor; name and descriptor padded to 4.
pub fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&n_type.to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend_from_slice(desc);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

/// A Xen note whose descriptor is `s` with a NUL.
pub fn xen_string(n_type: u32, s: &str) -> Vec<u8> {
    let mut desc = s.as_bytes().to_vec();
    desc.push(0);
    note("Xen", n_type, &desc)
}

impl ElfWriter {
    /// An image with one executable PT_LOAD of 64 KiB at physical and virtual 1 MiB, entry there.
    pub fn new(elf64: bool) -> Self {
        Self {
            elf64,
            entry: 0x10_0000,
            loads: vec![(0x10_0000, 0x10_0000, 0x1_0000, PF_R | PF_X)],
            note_segments: Vec::new(),
            note_sections: Vec::new(),
        }
    }

    /// The file. Each PT_NOTE segment also gets a section (`.note.N`), as linkers emit them.
    pub fn build(&self) -> Vec<u8> {
        let (ehsize, phsize, shsize, w) = if self.elf64 {
            (64, 56, 64, 8)
        } else {
            (52, 32, 40, 4)
        };
        let phnum = self.loads.len() + self.note_segments.len();
        let mut out = vec![0u8; ehsize + phsize * phnum];
        // Note payloads, 4-aligned, and their sections.
        let mut sections: Vec<(String, u64, u64)> = Vec::new();
        let mut seg_offsets = Vec::new();
        for (i, n) in self.note_segments.iter().enumerate() {
            out.resize(out.len().next_multiple_of(4), 0);
            seg_offsets.push(out.len() as u64);
            sections.push((format!(".note.{i}"), out.len() as u64, n.len() as u64));
            out.extend_from_slice(n);
        }
        for (i, n) in self.note_sections.iter().enumerate() {
            out.resize(out.len().next_multiple_of(4), 0);
            sections.push((format!(".note.s{i}"), out.len() as u64, n.len() as u64));
            out.extend_from_slice(n);
        }
        // Section-name table: "\0" then each name.
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for (name, _, _) in &sections {
            name_offsets.push(names.len() as u64);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let shstrtab_name = names.len() as u64;
        names.extend_from_slice(b".shstrtab\0");
        let shstrtab_off = out.len() as u64;
        out.extend_from_slice(&names);
        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len();
        let shnum = sections.len() + 2; // null, notes, .shstrtab
        out.resize(shoff + shsize * shnum, 0);

        let put = |out: &mut Vec<u8>, at: usize, v: u64, n: usize| {
            out[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
        };
        out[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1 + self.elf64 as u8, 1, 1]);
        put(&mut out, 16, 2, 2); // ET_EXEC
        put(&mut out, 18, if self.elf64 { 62 } else { 3 }, 2);
        put(&mut out, 20, 1, 4);
        put(&mut out, 24, self.entry, w);
        put(&mut out, 24 + w, ehsize as u64, w);
        put(&mut out, 24 + 2 * w, shoff as u64, w);
        let ehsize_at = 28 + 3 * w;
        for (k, v) in [ehsize, phsize, phnum, shsize, shnum, shnum - 1]
            .into_iter()
            .enumerate()
        {
            put(&mut out, ehsize_at + 2 * k, v as u64, 2);
        }
        let mut phdrs: Vec<(u32, u32, [u64; 6])> = self
            .loads
            .iter()
            .map(|&(vaddr, paddr, memsz, flags)| {
                (PT_LOAD, flags, [0, vaddr, paddr, 0, memsz, 0x1000])
            })
            .collect();
        for (n, &off) in self.note_segments.iter().zip(&seg_offsets) {
            let len = n.len() as u64;
            phdrs.push((PT_NOTE, PF_R, [off, 0, 0, len, len, 4]));
        }
        for (i, (p_type, flags, [offset, vaddr, paddr, filesz, memsz, align])) in
            phdrs.into_iter().enumerate()
        {
            let at = ehsize + phsize * i;
            put(&mut out, at, u64::from(p_type), 4);
            if self.elf64 {
                put(&mut out, at + 4, u64::from(flags), 4);
                for (k, v) in [offset, vaddr, paddr, filesz, memsz, align]
                    .into_iter()
                    .enumerate()
                {
                    put(&mut out, at + 8 + 8 * k, v, 8);
                }
            } else {
                for (k, v) in [offset, vaddr, paddr, filesz, memsz]
                    .into_iter()
                    .enumerate()
                {
                    put(&mut out, at + 4 + 4 * k, v, 4);
                }
                put(&mut out, at + 24, u64::from(flags), 4);
                put(&mut out, at + 28, align, 4);
            }
        }
        let mut shdr = |i: usize, name: u64, sh_type: u32, offset: u64, size: u64, align: u64| {
            let at = shoff + shsize * i;
            put(&mut out, at, name, 4);
            put(&mut out, at + 4, u64::from(sh_type), 4);
            let (o, s, a) = if self.elf64 {
                (24, 32, 48)
            } else {
                (16, 20, 32)
            };
            put(&mut out, at + o, offset, w);
            put(&mut out, at + s, size, w);
            put(&mut out, at + a, align, w);
        };
        for (i, ((_, offset, size), &name)) in sections.iter().zip(&name_offsets).enumerate() {
            shdr(i + 1, name, SHT_NOTE, *offset, *size, 4);
        }
        shdr(
            shnum - 1,
            shstrtab_name,
            3,
            shstrtab_off,
            names.len() as u64,
            1,
        );
        out
    }
}

// ---------------------------------------------------------------------------------------
// The oracle.

/// A note as the oracle reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleNote {
    /// Walk index.
    pub index: u32,
    /// Segment or section.
    pub source: NoteSource,
    /// File offset of the header.
    pub offset: u64,
    /// The name field.
    pub name: Vec<u8>,
    /// `type`.
    pub n_type: u32,
    /// `descsz` as in the header.
    pub descsz: u32,
    /// The descriptor.
    pub desc: Vec<u8>,
    /// From the descriptor to the end of the segment or section.
    pub tail: Vec<u8>,
    /// Whether libelf counts it as Xen.
    pub xen: bool,
}

/// What the oracle expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The file's header parses (magic, class, LE, tables in bounds).
    pub header_ok: bool,
    /// Notes the walk yields before it ends.
    pub notes: Vec<OracleNote>,
    /// Whether the walk ends with an error (structure: bounds).
    pub walk_error: bool,
    /// Whether the walk stopped at libelf's note limit.
    pub limit_reached: bool,
    /// The first region tail shorter than a header.
    pub short_tail: Option<ShortTail>,
    /// The folded summary, or `None` when libelf (or the stricter bounds) reject a Xen note
    /// or the walk fails; with the unknown required name when that is why.
    pub summary: Result<XenSummary, Option<Vec<u8>>>,
}

fn le(bytes: &[u8], at: u128, n: usize) -> Option<u128> {
    let at = usize::try_from(at).ok()?;
    let end = at.checked_add(n)?;
    let s = bytes.get(at..end)?;
    let mut v = 0u128;
    for (i, &b) in s.iter().enumerate() {
        v |= u128::from(b) << (8 * i);
    }
    Some(v)
}

/// libelf's `elf_xen_parse_features`, transliterated: `Ok((supported, required))` or the
/// unknown required name.
pub fn libelf_features(features: &[u8]) -> Result<(u32, u32), Vec<u8>> {
    // libelf's table, by index (NULL holes skipped).
    const NAMES: [(&str, u32); 7] = [
        ("writable_page_tables", 0),
        ("writable_descriptor_tables", 1),
        ("auto_translated_physmap", 2),
        ("supervisor_mode_kernel", 3),
        ("pae_pgdir_above_4gb", 4),
        ("hvm_callback_vector", 8),
        ("dom0", 11),
    ];
    let at = |i: usize| features.get(i).copied().unwrap_or(0);
    let (mut supported, mut required) = (0u32, 0u32);
    let mut pos = 0usize;
    while at(pos) != 0 {
        let mut feature = [0u8; 64];
        let mut len = 0usize;
        loop {
            if len >= 63 {
                break;
            }
            let c = at(pos + len);
            if c == 0 {
                break;
            }
            if c == b'|' {
                len += 1;
                break;
            }
            feature[len] = c;
            len += 1;
        }
        let cstr = |from: usize| {
            let s = &feature[from..];
            &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
        };
        let mut found = false;
        for (name, bit) in NAMES {
            if feature[0] == b'!' {
                if cstr(1) == name.as_bytes() {
                    supported |= 1 << bit;
                    required |= 1 << bit;
                    found = true;
                    break;
                }
            } else if cstr(0) == name.as_bytes() {
                supported |= 1 << bit;
                found = true;
                break;
            }
        }
        if !found && feature[0] == b'!' {
            return Err(cstr(1).to_vec());
        }
        pos += len;
    }
    Ok((supported, required))
}

/// An independent reading of `file` (see the module docs).
pub fn oracle(file: &[u8]) -> Expected {
    let fail = |header_ok| Expected {
        header_ok,
        notes: Vec::new(),
        walk_error: false,
        limit_reached: false,
        short_tail: None,
        summary: Err(None),
    };
    if file.len() < 6 || file[..4] != *b"\x7fELF" || !matches!(file[4], 1 | 2) || file[5] != 1 {
        return fail(false);
    }
    let is64 = file[4] == 2;
    let len = file.len() as u128;
    if len < if is64 { 64 } else { 52 } {
        return fail(false);
    }
    let w = if is64 { 8 } else { 4 };
    let rd = |at: u128, n: usize| le(file, at, n).unwrap_or(0);
    let phoff = rd(24 + w, w as usize);
    let shoff = rd(24 + 2 * w, w as usize);
    let ehsize_at = 28 + 3 * w;
    let (phentsize, phnum) = (rd(ehsize_at + 2, 2), rd(ehsize_at + 4, 2));
    let (shentsize, shnum) = (rd(ehsize_at + 6, 2), rd(ehsize_at + 8, 2));
    // elf_init: `offset = e_phoff + e_phentsize * count; if ( offset > elf->size )`, for
    // every count (libelf does not check the entry size; reloc-core does, when count > 0).
    let table_ok =
        |off: u128, ent: u128, n: u128, need: u128| (n == 0 || ent >= need) && off + ent * n <= len;
    if !table_ok(phoff, phentsize, phnum, if is64 { 56 } else { 32 })
        || !table_ok(shoff, shentsize, shnum, if is64 { 64 } else { 40 })
    {
        return fail(false);
    }
    // Note regions: PT_NOTE segments with p_offset != 0, then (later) SHT_NOTE sections.
    let segment = |i: u128| {
        let at = phoff + phentsize * i;
        let (off, filesz) = if is64 {
            (rd(at + 8, 8), rd(at + 32, 8))
        } else {
            (rd(at + 4, 4), rd(at + 16, 4))
        };
        (rd(at, 4) as u32, off, filesz)
    };
    let section = |i: u128| {
        let at = shoff + shentsize * i;
        let (off, size) = if is64 {
            (rd(at + 24, 8), rd(at + 32, 8))
        } else {
            (rd(at + 16, 4), rd(at + 20, 4))
        };
        (rd(at + 4, 4) as u32, off, size)
    };
    let mut expected = Expected {
        header_ok: true,
        notes: Vec::new(),
        walk_error: false,
        limit_reached: false,
        short_tail: None,
        summary: Err(None),
    };
    let mut regions: Vec<(NoteSource, u128, u128)> = (0..phnum)
        .map(|i| (i, segment(i)))
        .filter(|(_, (t, off, _))| *t == PT_NOTE && *off != 0)
        .map(|(i, (_, off, size))| (NoteSource::Segment(i as u16), off, size))
        .collect();
    let sections: Vec<(NoteSource, u128, u128)> = (1..shnum.max(1))
        .map(|i| (i, section(i)))
        .filter(|(_, (t, _, _))| *t == SHT_NOTE)
        .map(|(i, (_, off, size))| (NoteSource::Section(i as u16), off, size))
        .collect();
    let mut walked = 0u32;
    let mut xen_in_segments = 0u32;
    let mut ri = 0;
    let mut in_sections = false;
    'walk: loop {
        if ri == regions.len() {
            if in_sections || xen_in_segments > 0 {
                break;
            }
            in_sections = true;
            regions.extend(sections.iter().copied());
            continue;
        }
        let (source, start, size) = regions[ri];
        ri += 1;
        let end = start + size;
        if end > len {
            expected.walk_error = true;
            break;
        }
        let mut pos = start;
        while pos < end {
            // elf_xen_parse_notes: "too many ELF notes", break; the count is shared, so no
            // later region reads a note either.
            if walked >= 65536 {
                expected.limit_reached = true;
                break 'walk;
            }
            if end - pos < 12 {
                // libelf reads a header across the end; reloc-core ignores the bytes (stricter,
                // documented) but counts them as libelf does.
                walked += 1;
                expected.short_tail.get_or_insert(ShortTail {
                    source,
                    offset: pos as u64,
                    len: (end - pos) as u64,
                });
                break;
            }
            let namesz = rd(pos, 4);
            let descsz = rd(pos + 4, 4);
            let n_type = rd(pos + 8, 4) as u32;
            // `unsigned namesz = (elf_uval(elf, note, namesz) + 3) & ~3;` in 32 bits.
            let round = |n: u128| (n + 3) % (1 << 32) / 4 * 4;
            let (name_len, desc_len) = (
                if round(namesz) == 0 { 0 } else { namesz },
                if round(descsz) == 0 { 0 } else { descsz },
            );
            let desc_at = pos + 12 + round(namesz);
            if desc_at + desc_len > end {
                expected.walk_error = true;
                break 'walk;
            }
            let range = |a: u128, n: u128| file[a as usize..(a + n) as usize].to_vec();
            let xen = le(file, pos + 12, 4) == Some(u128::from(u32::from_le_bytes(*b"Xen\0")));
            expected.notes.push(OracleNote {
                index: walked,
                source,
                offset: pos as u64,
                name: range(pos + 12, name_len),
                n_type,
                descsz: descsz as u32,
                desc: range(desc_at, desc_len),
                tail: range(desc_at, end - desc_at),
                xen,
            });
            walked += 1;
            if xen && !in_sections {
                xen_in_segments += 1;
            }
            pos = desc_at + round(descsz);
        }
    }
    // libelf stops at the first Xen note it rejects, so a rejection before the walk's error
    // is what the fold reports.
    expected.summary = match fold(&expected.notes) {
        Ok(_) if expected.walk_error => Err(None),
        Ok(mut s) => {
            s.note_limit_reached = expected.limit_reached;
            s.short_tail = expected.short_tail;
            Ok(s)
        }
        other => other,
    };
    expected
}

/// libelf's `elf_xen_parse_note` over the Xen notes, with reloc-core's string bounds.
fn fold(notes: &[OracleNote]) -> Result<XenSummary, Option<Vec<u8>>> {
    let mut s = XenSummary::default();
    let numeric = |d: &[u8]| match d.len() {
        1 | 2 | 4 | 8 => le(d, 0, d.len()).unwrap_or(0) as u64,
        _ => 0,
    };
    // elf_strval from the descriptor: `Ok(Some)` for a NUL within 4097 bytes, `Ok(None)` for
    // "excessively long string" (libelf skips the note), `Err` for the region's end first
    // (reloc-core's stricter bound).
    let string = |tail: &[u8]| -> Result<Option<Vec<u8>>, ()> {
        let mut len = 0;
        loop {
            let b = *tail.get(len).ok_or(())?;
            if b == 0 {
                return Ok(Some(tail[..len].to_vec()));
            }
            if len >= 4096 {
                return Ok(None);
            }
            len += 1;
        }
    };
    for n in notes.iter().filter(|n| n.xen) {
        let d = &n.desc;
        // `descsz % unitsz || idx >= descsz / unitsz` (elf_note_numeric_array), on descsz.
        let dsz = u128::from(n.descsz);
        match n.n_type {
            5..=9 | 11 if string(&n.tail).map_err(|()| None)?.is_none() => {
                s.strings_too_long += 1;
            }
            10 => match string(&n.tail).map_err(|()| None)? {
                Some(text) => {
                    let (sup, req) = libelf_features(&text).map_err(Some)?;
                    s.supported.0 |= sup;
                    s.required.0 |= req;
                }
                None => s.strings_too_long += 1,
            },
            17 if dsz != 0 && dsz % 4 == 0 => {
                s.supported.0 |= le(d, 0, 4).unwrap_or(0) as u32;
            }
            18 => {
                // `parms->phys_entry = val` into a uint32_t; UNSET_ADDR32 is "no entry".
                let entry = numeric(d) as u32;
                s.phys32_entry = (entry != 0xffff_ffff).then_some(entry);
            }
            19 => {
                let r = s.phys32_reloc.get_or_insert_with(Phys32Reloc::default);
                let word = |i: u128| {
                    if dsz % 4 == 0 {
                        le(d, 4 * i, 4).unwrap_or(0) as u32
                    } else {
                        0
                    }
                };
                if dsz >= 4 {
                    r.align = Some(word(0));
                }
                if dsz >= 8 {
                    r.min = Some(word(1));
                }
                if dsz >= 12 {
                    r.max = Some(word(2));
                }
            }
            _ => {}
        }
        s.xen_notes += 1;
    }
    Ok(s)
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not an ELF file reloc-core reads.
    NotElf,
    /// Notes walked and folded; `xen` Xen notes.
    Read {
        /// All notes walked.
        notes: usize,
        /// Xen notes folded.
        xen: u32,
        /// PHYS32_ENTRY found.
        entry: bool,
    },
    /// The walk or a Xen note was rejected.
    Rejected,
}

/// Decodes `data` and checks it; panics on a violation.
pub fn check_bytes(data: &[u8]) -> Outcome {
    check(&Description::decode(&mut Unstructured::new(data)))
}

/// Reads the described file with reloc-core and with the oracle; panics where they differ.
pub fn check(d: &Description) -> Outcome {
    let file = d.bytes();
    let want = oracle(&file);
    let image = match ElfImage::parse(&file) {
        Ok(i) => i,
        Err(e) => {
            assert!(
                !want.header_ok,
                "reloc-core rejected the header ({e}), the oracle did not"
            );
            assert!(!e.to_string().is_empty());
            return Outcome::NotElf;
        }
    };
    assert!(
        want.header_ok,
        "reloc-core read a header the oracle rejects"
    );
    // Every note, in order, and where the walk ends.
    let mut got = Vec::new();
    let mut walk_error = None;
    for n in image.notes() {
        match n {
            Ok(n) => got.push(OracleNote {
                index: n.index(),
                source: n.source(),
                offset: n.offset(),
                name: n.name_field().to_vec(),
                n_type: n.n_type(),
                descsz: n.descsz(),
                desc: n.desc().to_vec(),
                tail: n.tail().to_vec(),
                xen: n.is_xen(),
            }),
            Err(e) => {
                walk_error = Some(e);
                break;
            }
        }
    }
    assert_eq!(got, want.notes, "notes differ");
    assert_eq!(
        walk_error.is_some(),
        want.walk_error,
        "walk error: reloc-core {walk_error:?}"
    );
    // Each Xen note decodes on its own exactly when the fold gets past it.
    let summary = image.xen_summary();
    match (&summary, &want.summary) {
        (Ok(s), Ok(w)) => assert_eq!(s, w, "summary differs"),
        (Err(NotesError::UnknownRequiredFeature { name, .. }), Err(Some(w))) => {
            assert_eq!(name.as_bytes(), &w[..], "unknown required feature name")
        }
        (Err(NotesError::UnknownRequiredFeature { name, .. }), other) => {
            panic!("reloc-core: unknown required `{name}`; oracle {other:?}")
        }
        (Err(e), Err(None)) => assert!(!e.to_string().is_empty()),
        (got, want) => panic!("summary: reloc-core {got:?}, oracle {want:?}"),
    }
    if want.walk_error {
        return Outcome::Rejected;
    }
    // Decoding each Xen note on its own agrees with the fold.
    let decoded_ok = image
        .notes()
        .flatten()
        .filter_map(|n| XenNote::decode(&n))
        .all(|r| r.is_ok());
    assert_eq!(decoded_ok, summary.is_ok());
    match summary {
        Ok(s) => {
            assert_eq!(
                s.supported.0 & s.required.0,
                s.required.0,
                "required is within supported"
            );
            Outcome::Read {
                notes: got.len(),
                xen: s.xen_notes,
                entry: s.phys32_entry.is_some(),
            }
        }
        Err(_) => Outcome::Rejected,
    }
}

/// Named seeds: a boot-stub-like ELF64 PVH image, an ELF32 image with the Xen 4.1 FEATURES
/// string and a PHYS32_RELOC note, notes only in a section (fallback), an unknown required
/// feature, and libelf's edges (sizes rounding past 2^32, an over-long string, a short tail).
pub fn seeds() -> Vec<(&'static str, Description)> {
    let entry = |e: u32| note("Xen", 18, &e.to_le_bytes());
    let mut pvh = ElfWriter::new(true);
    pvh.note_segments.push(
        [
            note("GNU", 3, &[0x5a; 20]),
            entry(0x10_0000),
            note("Xen", 17, &(1u32 << 8 | 1 << 11).to_le_bytes()),
        ]
        .concat(),
    );
    let mut linux32 = ElfWriter::new(false);
    linux32.note_segments.push(
        [
            xen_string(6, "linux"),
            xen_string(5, "xen-3.0"),
            xen_string(
                10,
                "!writable_page_tables|pae_pgdir_above_4gb|hvm_callback_vector",
            ),
            note(
                "Xen",
                19,
                &[0x20_0000u32, 0x100_0000, 0xffff_ffff]
                    .map(u32::to_le_bytes)
                    .concat(),
            ),
            note("Xen", 1, &0xc010_0000u32.to_le_bytes()),
            entry(0x10_0000),
        ]
        .concat(),
    );
    let mut sections_only = ElfWriter::new(true);
    sections_only.note_segments.push(note("GNU", 3, &[1; 8]));
    sections_only
        .note_sections
        .push([entry(0x10_0400), xen_string(10, "dom0|x||!dom0")].concat());
    let mut unknown = ElfWriter::new(false);
    unknown
        .note_segments
        .push(xen_string(10, "writable_page_tables|!no_such_feature"));
    // libelf's edges (issue 19, 2d, 2f, 2g): a name size and a descriptor size that round up
    // past 2^32 (stepping 0 bytes), an over-long FEATURES string (skipped), the entry, then
    // 4 bytes of padding (a tail shorter than a header).
    let header = |namesz: u32, descsz: u32, n_type: u32| {
        [namesz, descsz, n_type].map(u32::to_le_bytes).concat()
    };
    let mut edges = ElfWriter::new(true);
    edges.note_segments.push(
        [
            header(0xffff_fffd, 0, 6),
            [header(4, 0xffff_ffff, 19), b"Xen\0".to_vec()].concat(),
            xen_string(10, &("!no_such_feature|".to_string() + &"a".repeat(4096))),
            entry(0x10_0000),
            vec![0; 4],
        ]
        .concat(),
    );
    let fixed = |w: &ElfWriter| Description {
        flags: FIX_IDENT,
        file: w.build(),
    };
    vec![
        ("pvh-elf64", fixed(&pvh)),
        ("xen-4.1-features-elf32", fixed(&linux32)),
        ("section-fallback", fixed(&sections_only)),
        ("unknown-required-feature", fixed(&unknown)),
        ("libelf-edges", fixed(&edges)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_cover_each_outcome() {
        let outcomes: Vec<Outcome> = seeds()
            .into_iter()
            .map(|(name, d)| {
                let bytes = d.encode();
                assert_eq!(
                    Description::decode(&mut Unstructured::new(&bytes)),
                    d,
                    "{name}"
                );
                check(&d)
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Read {
                    notes: 3,
                    xen: 2,
                    entry: true
                },
                Outcome::Read {
                    notes: 6,
                    xen: 6,
                    entry: true
                },
                // The segment's GNU note, the same note again in its section, then two Xen.
                Outcome::Read {
                    notes: 4,
                    xen: 2,
                    entry: true
                },
                Outcome::Rejected,
                // The wrapped-name note, the wrapped-descriptor PHYS32_RELOC, FEATURES, entry.
                Outcome::Read {
                    notes: 4,
                    xen: 3,
                    entry: true
                },
            ]
        );
    }

    #[test]
    fn oracle_features_match_libelf_examples() {
        assert_eq!(
            libelf_features(b"!writable_page_tables|pae_pgdir_above_4gb|hvm_callback_vector"),
            Ok((0x111, 1))
        );
        assert_eq!(
            libelf_features(b"!no_such_feature"),
            Err(b"no_such_feature".to_vec())
        );
        let long = [vec![b'!'], vec![b'z'; 70]].concat();
        assert_eq!(libelf_features(&long), Err(vec![b'z'; 62]));
    }

    #[test]
    fn corrupted_seeds_agree() {
        // Every byte of each seed flipped in turn: reloc-core and the oracle must agree.
        for (_, d) in seeds() {
            for at in 0..d.file.len() {
                let mut e = d.clone();
                e.file[at] ^= 0xa5;
                check(&e);
            }
        }
    }
}
