//! Xen ELF notes: read the boot notes of a little-endian ELF32 or ELF64 image the way Xen's
//! libelf does, without allocating and without panicking on any input.
//!
//! A loader learns how to start an image from its notes named "Xen" (`xen/include/public/
//! elfnote.h`): where the 32-bit PVH entry is ([`XenNoteType::Phys32Entry`]), where the image
//! may be relocated ([`XenNoteType::Phys32Reloc`]) and which Xen features it supports or
//! requires ([`XenNoteType::Features`], [`XenNoteType::SupportedFeatures`]).
//!
//! What follows libelf (`xen/common/libelf/libelf-dominfo.c`, `libelf-tools.c`,
//! `libelf-loader.c`):
//! - **Headers** (`elf_init`): each header table's end, `e_phoff + e_phentsize * count`, must
//!   not pass the file's end, for any count: with a count of 0 the offset itself.
//! - **Where notes are read** (`elf_xen_parse`): every `PT_NOTE` segment whose `p_offset` is
//!   not 0 ("some versions of binutils do not correctly set p_offset"), in program-header
//!   order; only when those hold no Xen note at all, every `SHT_NOTE` section from index 1.
//! - **Stepping** (`elf_note_next`): a 12-byte header (`namesz`, `descsz`, `type`, the same in
//!   ELF32 and ELF64), the name padded to 4 bytes, the descriptor padded to 4 bytes, each
//!   rounding done in 32 bits as libelf's `unsigned` does it: a size of 0xfffffffd to
//!   0xffffffff rounds to 0, and the walk goes on. The alignment is always 4, whatever the
//!   segment's `p_align` says.
//! - **Which notes count** (`elf_xen_parse_notes`): those whose name, read as a C string, is
//!   `"Xen"`; at most [`MAX_TOTAL_NOTES`] notes are walked (`ELF_MAX_TOTAL_NOTE_COUNT`), after
//!   which libelf marks the image broken, stops, and keeps what it read: so does this walk
//!   ([`Notes::note_limit_reached`]).
//! - **Values** (`elf_xen_parse_note`): numeric notes read 1, 2, 4 or 8 bytes and any other
//!   size as 0 (`elf_note_numeric`); string notes end at a NUL and are at most
//!   [`MAX_STRING_LEN`] bytes (`elf_strval`); a longer one is skipped and the image boots
//!   ([`XenValue::StringTooLong`]; a FEATURES string that long is never tokenised);
//!   `SUPPORTED_FEATURES` ORs the first `u32` into the supported set when the descriptor is a
//!   non-zero multiple of 4 bytes (`elf_note_numeric_array`); `PHYS32_ENTRY` keeps the low 32
//!   bits (`phys_entry` is a `uint32_t`), and 0xffffffff is libelf's `UNSET_ADDR32`, no entry;
//!   `PHYS32_RELOC` reads up to three `u32` (align, min, max), each only when the descriptor
//!   is long enough, and keeps earlier values otherwise. Later notes override earlier ones;
//!   feature bits accumulate. A string's NUL may lie past the descriptor, as in libelf:
//!   Linux's FEATURES descriptor is the bare string, ended by the zero padding.
//! - **FEATURES** (`elf_xen_parse_features`): see [`FeatureTokens`] and [`parse_features`].
//!   An unknown required name fails the whole parse, as in libelf.
//! - **Loadable segments** (`elf_phdr_is_loadable`): `PT_LOAD` with at least one of R, W, X
//!   ([`ElfImage::load_segment_at_paddr`]).
//!
//! # Where this reader differs from libelf
//! Every remaining difference. Where reloc-core is stricter it returns an error instead of
//! reading outside the note's segment or section or wrapping an offset; every error names
//! the note index, its file offset and, where there is one, the feature name.
//!
//! | input | libelf (its line) | reloc-core |
//! |---|---|---|
//! | a header table whose end wraps past 2^64 | `offset = e_phoff + e_phentsize * count; if ( offset > elf->size )` in `uint64_t`: a wrapped sum passes | [`NotesError::TableOutOfBounds`] |
//! | header-table entries smaller than the class's | reads them as they are (no check of `e_phentsize`, `e_shentsize`) | [`NotesError::BadEntrySize`] (only with a count above 0) |
//! | a `PT_NOTE` or `SHT_NOTE` range outside the file | walks it, each access through `elf_access_ok` (out of range: reads 0, marks broken) | [`NotesError::RegionOutOfBounds`] |
//! | a note's name or descriptor running past its segment or section | `elf_note_next` steps by the sizes alone and reads on in the file | [`NotesError::TruncatedNote`] |
//! | a string note with no NUL before the end of its segment or section | `elf_strval` reads on through the file (no NUL before the file's end: skipped, broken) | [`NotesError::UnterminatedString`] |
//! | 1 to 11 bytes left after a region's last note (padding) | `ELF_HANDLE_PTRVAL(note) < parms->elf_note_end`: reads a header across the end and walks it as a note | ignores them, counts one note, and records a [`ShortTail`] (reloc-sim warns) |
//! | an entry exactly at `p_paddr + p_memsz` | `(parms->virt_entry > parms->virt_kend)`: accepted, off by one | outside the segment ([`ProgramHeader::contains_paddr`]) |
//! | `EI_CLASS` other than 1 or 2 | `#define elf_64bit(elf) (ELFCLASS64 == (elf)->class)`: read as ELF32 | [`NotesError::UnsupportedClass`] |
//! | an ELF64 file shorter than its 64-byte header | `elf_is_elfbinary` checks `image_size < sizeof(*ehdr)` with an `Elf32_Ehdr` (52 bytes) | [`NotesError::TruncatedHeader`] |
//! | `EI_DATA` other than 1 (little-endian) | `#define elf_swap(elf) (NATIVE_ELFDATA != (elf)->data)`: byte-swaps | [`NotesError::UnsupportedEncoding`] |
//! | no Xen note in segments or sections, PV guest | falls back to the `__xen_guest` section (`if ( xen_elfnotes == 0 && !hvm )`) | not read (PVH only) |
//! | L1_MFN_VALID | `[XEN_ELFNOTE_L1_MFN_VALID] = { "L1_MFN_VALID", ELFNOTE_NAME }`: no value read | decoded as numeric, for display only |
//!
//! ```
//! use reloc_core::notes::ElfImage;
//!
//! fn pvh_entry(bytes: &[u8]) -> Result<Option<u32>, reloc_core::notes::NotesError> {
//!     let image = ElfImage::parse(bytes)?;
//!     Ok(image.xen_summary()?.phys32_entry)
//! }
//! # let _ = pvh_entry;
//! ```

use core::fmt;

/// `ELF_MAX_TOTAL_NOTE_COUNT`: libelf stops (and marks the image broken) after this many notes.
pub const MAX_TOTAL_NOTES: u32 = 65536;

/// libelf's `UNSET_ADDR32`: a PHYS32_ENTRY whose low 32 bits are this is no entry.
pub const UNSET_ADDR32: u32 = 0xffff_ffff;

/// `ELF_MAX_STRING_LENGTH`: the longest string libelf accepts, NUL excluded.
pub const MAX_STRING_LEN: usize = 4096;

/// The longest FEATURES token libelf reads at once (`unsigned char feature[64]`, NUL
/// included); the rest of a longer token is read as the next token.
pub const FEATURE_TOKEN_MAX: usize = 63;

/// Number of XENFEAT bits this module names (0 to 20, `xen/include/public/features.h`).
pub const XENFEAT_NAMED: u32 = 21;

/// `PHYS32_RELOC`'s alignment when the note gives none (`elfnote.h`: 2 MiB; Xen's dom0 builder
/// first tries the largest loadable `p_align` of at least 4 KiB).
pub const PHYS32_RELOC_DEFAULT_ALIGN: u32 = 0x20_0000;
/// `PHYS32_RELOC`'s minimum load address when the note gives none.
pub const PHYS32_RELOC_DEFAULT_MIN: u32 = 0;
/// `PHYS32_RELOC`'s maximum address of the image's last byte when the note gives none
/// (`ARCH_PHYS_MAX_DEFAULT`, 4 GiB - 1 on x86).
pub const PHYS32_RELOC_DEFAULT_MAX: u32 = 0xffff_ffff;

/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`.
pub const PT_NOTE: u32 = 4;
/// `SHT_NOTE`.
pub const SHT_NOTE: u32 = 7;
/// `PF_X`.
pub const PF_X: u32 = 1;
/// `PF_W`.
pub const PF_W: u32 = 2;
/// `PF_R`.
pub const PF_R: u32 = 4;

const NOTE_HEADER: u64 = 12;
const XEN_NAME: &[u8; 4] = b"Xen\0";

/// The XENFEAT names, bits 0 to 20 (`xen/include/public/features.h`).
pub const XENFEAT_NAMES: [&str; XENFEAT_NAMED as usize] = [
    "writable_page_tables",
    "writable_descriptor_tables",
    "auto_translated_physmap",
    "supervisor_mode_kernel",
    "pae_pgdir_above_4gb",
    "mmu_pt_update_preserve_ad",
    "highmem_assist",
    "gnttab_map_avail_bits",
    "hvm_callback_vector",
    "hvm_safe_pvclock",
    "hvm_pirqs",
    "dom0",
    "grant_map_identity",
    "memory_op_vnode_supported",
    "ARM_SMCCC_supported",
    "linux_rsdp_unrestricted",
    "not_direct_mapped",
    "direct_mapped",
    "runstate_phys_area",
    "vcpu_time_phys_area",
    "dm_msix_all_writes",
];

/// The bits whose names libelf's FEATURES parser knows (`elf_xen_feature_names`): 0 to 4,
/// `hvm_callback_vector` (8) and `dom0` (11). Any other name is unknown to it.
pub const LIBELF_FEATURE_BITS: u32 = 0x1f | (1 << 8) | (1 << 11);

/// The bits whose names the first libelf knew (bits 0 to 4; Xen 4.1 among others). That libelf
/// rejected an image naming anything else in FEATURES, even without `!`: the reason Linux
/// moved `hvm_callback_vector` to SUPPORTED_FEATURES, which old hypervisors ignore.
pub const ORIGINAL_LIBELF_FEATURE_BITS: u32 = 0x1f;

/// The name of XENFEAT bit `bit`, for bits 0 to 20.
pub fn feature_name(bit: u32) -> Option<&'static str> {
    XENFEAT_NAMES.get(usize::try_from(bit).ok()?).copied()
}

/// The XENFEAT bit named `name`, among all bits 0 to 20 (exact, case-sensitive).
pub fn feature_bit(name: &[u8]) -> Option<u32> {
    XENFEAT_NAMES
        .iter()
        .position(|n| n.as_bytes() == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// The bit libelf's FEATURES parser gives `name`, if it knows the name ([`LIBELF_FEATURE_BITS`]).
pub fn libelf_feature_bit(name: &[u8]) -> Option<u32> {
    feature_bit(name).filter(|&bit| LIBELF_FEATURE_BITS & (1 << bit) != 0)
}

/// Writes bytes as text: printable ASCII as is, anything else as `\xNN`.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            fmt::Write::write_char(f, char::from(b))?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// Bytes shown as text by [`fmt::Display`] (non-printable bytes escaped as `\xNN`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        write_escaped(f, self.0)?;
        f.write_str("\"")
    }
}

/// The Xen note types 0 to 19 (`elfnote.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenNoteType {
    /// 0: a NAME=VALUE string. libelf ignores it.
    Info = 0,
    /// 1: virtual entry point (numeric).
    Entry = 1,
    /// 2: virtual address of the hypercall page (numeric).
    HypercallPage = 2,
    /// 3: virtual base (numeric).
    VirtBase = 3,
    /// 4: `ELF_PADDR_OFFSET` (numeric).
    PaddrOffset = 4,
    /// 5: the Xen version built for (string).
    XenVersion = 5,
    /// 6: guest OS name (string).
    GuestOs = 6,
    /// 7: guest OS version (string).
    GuestVersion = 7,
    /// 8: loader type (string).
    Loader = 8,
    /// 9: PAE mode (string).
    PaeMode = 9,
    /// 10: features supported and required (string; see [`parse_features`]).
    Features = 10,
    /// 11: BSD symbol table wanted (string).
    BsdSymtab = 11,
    /// 12: lowest address of the hypervisor hole (numeric).
    HvStartLow = 12,
    /// 13: mask/value pairs recognising L1 entries with valid MFNs. libelf's table marks it
    /// `ELFNOTE_NAME`: it logs the name and reads no value. This module decodes it as numeric
    /// for display only; nothing libelf keeps depends on it.
    L1MfnValid = 13,
    /// 14: cooperative suspend cancellation (numeric).
    SuspendCancel = 14,
    /// 15: where the initial P2M goes (numeric).
    InitP2m = 15,
    /// 16: modules passed by PFN (numeric).
    ModStartPfn = 16,
    /// 17: bitmap of supported features (`u32` array).
    SupportedFeatures = 17,
    /// 18: 32-bit physical PVH entry point (numeric, 32 bits kept).
    Phys32Entry = 18,
    /// 19: PVH relocation constraints (up to three `u32`: align, min, max).
    Phys32Reloc = 19,
}

/// How libelf reads a note type's descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoteKind {
    /// Not in libelf's table (INFO): ignored.
    Ignored,
    /// `elf_note_numeric`.
    Numeric,
    /// `elf_strval`.
    String,
    /// A string parsed by `elf_xen_parse_features`.
    Features,
    /// `elf_note_numeric_array(note, 4, 0)`.
    Bitmap,
    /// Numeric, truncated to 32 bits.
    Phys32Entry,
    /// Up to three `u32`.
    Phys32Reloc,
}

impl XenNoteType {
    /// Every type, in numeric order.
    pub const ALL: [XenNoteType; 20] = [
        Self::Info,
        Self::Entry,
        Self::HypercallPage,
        Self::VirtBase,
        Self::PaddrOffset,
        Self::XenVersion,
        Self::GuestOs,
        Self::GuestVersion,
        Self::Loader,
        Self::PaeMode,
        Self::Features,
        Self::BsdSymtab,
        Self::HvStartLow,
        Self::L1MfnValid,
        Self::SuspendCancel,
        Self::InitP2m,
        Self::ModStartPfn,
        Self::SupportedFeatures,
        Self::Phys32Entry,
        Self::Phys32Reloc,
    ];

    /// The type numbered `n`, for 0 to 19.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The `elfnote.h` name without the `XEN_ELFNOTE_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Entry => "ENTRY",
            Self::HypercallPage => "HYPERCALL_PAGE",
            Self::VirtBase => "VIRT_BASE",
            Self::PaddrOffset => "PADDR_OFFSET",
            Self::XenVersion => "XEN_VERSION",
            Self::GuestOs => "GUEST_OS",
            Self::GuestVersion => "GUEST_VERSION",
            Self::Loader => "LOADER",
            Self::PaeMode => "PAE_MODE",
            Self::Features => "FEATURES",
            Self::BsdSymtab => "BSD_SYMTAB",
            Self::HvStartLow => "HV_START_LOW",
            Self::L1MfnValid => "L1_MFN_VALID",
            Self::SuspendCancel => "SUSPEND_CANCEL",
            Self::InitP2m => "INIT_P2M",
            Self::ModStartPfn => "MOD_START_PFN",
            Self::SupportedFeatures => "SUPPORTED_FEATURES",
            Self::Phys32Entry => "PHYS32_ENTRY",
            Self::Phys32Reloc => "PHYS32_RELOC",
        }
    }

    /// How libelf reads this type's descriptor.
    pub fn kind(self) -> NoteKind {
        match self {
            Self::Info => NoteKind::Ignored,
            Self::Entry
            | Self::HypercallPage
            | Self::VirtBase
            | Self::PaddrOffset
            | Self::HvStartLow
            | Self::L1MfnValid
            | Self::SuspendCancel
            | Self::InitP2m
            | Self::ModStartPfn => NoteKind::Numeric,
            Self::XenVersion
            | Self::GuestOs
            | Self::GuestVersion
            | Self::Loader
            | Self::PaeMode
            | Self::BsdSymtab => NoteKind::String,
            Self::Features => NoteKind::Features,
            Self::SupportedFeatures => NoteKind::Bitmap,
            Self::Phys32Entry => NoteKind::Phys32Entry,
            Self::Phys32Reloc => NoteKind::Phys32Reloc,
        }
    }
}

impl fmt::Display for XenNoteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// ELF32 or ELF64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElfClass {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

impl ElfClass {
    fn ehdr_size(self) -> u64 {
        match self {
            Self::Elf32 => 52,
            Self::Elf64 => 64,
        }
    }
    fn phdr_size(self) -> u16 {
        match self {
            Self::Elf32 => 32,
            Self::Elf64 => 56,
        }
    }
    fn shdr_size(self) -> u16 {
        match self {
            Self::Elf32 => 40,
            Self::Elf64 => 64,
        }
    }
}

impl fmt::Display for ElfClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Elf32 => "ELF32",
            Self::Elf64 => "ELF64",
        })
    }
}

/// The two header tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderTable {
    /// The program headers (`e_phoff`).
    Program,
    /// The section headers (`e_shoff`).
    Section,
}

impl fmt::Display for HeaderTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Program => "program-header table",
            Self::Section => "section-header table",
        })
    }
}

/// Where a note was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoteSource {
    /// The `PT_NOTE` program header with this index.
    Segment(u16),
    /// The `SHT_NOTE` section with this index.
    Section(u16),
}

impl fmt::Display for NoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(i) => write!(f, "PT_NOTE segment {i}"),
            Self::Section(i) => write!(f, "SHT_NOTE section {i}"),
        }
    }
}

/// A FEATURES token as libelf copies it (at most [`FEATURE_TOKEN_MAX`] bytes), held inline so
/// an error can name it without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureName {
    bytes: [u8; FEATURE_TOKEN_MAX],
    len: u8,
}

impl FeatureName {
    fn new(name: &[u8]) -> Self {
        let mut bytes = [0u8; FEATURE_TOKEN_MAX];
        let len = name.len().min(FEATURE_TOKEN_MAX);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), name.get(..len)) {
            dst.copy_from_slice(src);
        }
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.as_bytes())
    }
}

impl fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Escaped(self.as_bytes()), f)
    }
}

/// Why an image or one of its notes was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotesError {
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// `e_ident[EI_CLASS]` is neither 1 (ELF32) nor 2 (ELF64).
    UnsupportedClass {
        /// The byte found.
        class: u8,
    },
    /// `e_ident[EI_DATA]` is not 1 (little-endian).
    UnsupportedEncoding {
        /// The byte found.
        data: u8,
    },
    /// The file is shorter than its ELF header.
    TruncatedHeader {
        /// File length.
        len: u64,
        /// Header size for its class.
        need: u64,
    },
    /// A header table has entries smaller than its class requires.
    BadEntrySize {
        /// Which table.
        table: HeaderTable,
        /// `e_phentsize` or `e_shentsize`.
        entsize: u16,
        /// The class's entry size.
        need: u16,
    },
    /// A header table does not fit in the file.
    TableOutOfBounds {
        /// Which table.
        table: HeaderTable,
        /// Its file offset.
        offset: u64,
        /// Entries.
        count: u16,
        /// Entry size.
        entsize: u16,
        /// File length.
        len: u64,
    },
    /// A note segment or section does not fit in the file.
    RegionOutOfBounds {
        /// Which segment or section.
        source: NoteSource,
        /// Its file offset.
        offset: u64,
        /// Its size.
        size: u64,
        /// File length.
        len: u64,
    },
    /// A note's header, name or descriptor runs past the end of its segment or section.
    TruncatedNote {
        /// Index of the note in the walk (0-based, every owner counted).
        index: u32,
        /// Where it was read from.
        source: NoteSource,
        /// File offset of its header.
        offset: u64,
        /// Bytes the note needs from its offset.
        need: u64,
        /// Bytes left in the segment or section.
        available: u64,
    },
    /// A Xen string note has no NUL between its descriptor's start and the end of its segment
    /// or section.
    UnterminatedString {
        /// Index of the note.
        index: u32,
        /// File offset of its header.
        offset: u64,
        /// Its type.
        note_type: XenNoteType,
    },
    /// FEATURES requires (`!name`) a feature libelf does not know: libelf rejects the image.
    UnknownRequiredFeature {
        /// Index of the note.
        index: u32,
        /// File offset of its header.
        offset: u64,
        /// The name after `!`, as libelf read it.
        name: FeatureName,
    },
}

impl fmt::Display for NotesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("not an ELF file (no \\x7fELF magic)"),
            Self::UnsupportedClass { class } => {
                write!(f, "ELF class {class} is neither ELF32 (1) nor ELF64 (2)")
            }
            Self::UnsupportedEncoding { data } => write!(
                f,
                "ELF data encoding {data} is not little-endian (1); only little-endian images are read"
            ),
            Self::TruncatedHeader { len, need } => {
                write!(f, "file of {len} bytes is shorter than its {need}-byte ELF header")
            }
            Self::BadEntrySize {
                table,
                entsize,
                need,
            } => write!(f, "{table} entries are {entsize} bytes, fewer than {need}"),
            Self::TableOutOfBounds {
                table,
                offset,
                count,
                entsize,
                len,
            } => write!(
                f,
                "{table} at offset {offset:#x} ({count} entries of {entsize} bytes) does not fit in the {len}-byte file"
            ),
            Self::RegionOutOfBounds {
                source,
                offset,
                size,
                len,
            } => write!(
                f,
                "{source} at offset {offset:#x} of {size:#x} bytes does not fit in the {len}-byte file"
            ),
            Self::TruncatedNote {
                index,
                source,
                offset,
                need,
                available,
            } => write!(
                f,
                "note {index} at offset {offset:#x} in {source} needs {need} bytes, only {available} left"
            ),
            Self::UnterminatedString {
                index,
                offset,
                note_type,
            } => write!(
                f,
                "Xen note {index} ({note_type}) at offset {offset:#x}: string has no NUL before the end of its segment or section"
            ),
            Self::UnknownRequiredFeature {
                index,
                offset,
                name,
            } => write!(
                f,
                "Xen note {index} (FEATURES) at offset {offset:#x} requires unknown feature `{name}` (`!{name}`): libelf rejects the image"
            ),
        }
    }
}

impl core::error::Error for NotesError {}

fn slice_at(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

fn u16_at(bytes: &[u8], offset: u64) -> Option<u16> {
    Some(u16::from_le_bytes(
        slice_at(bytes, offset, 2)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], offset: u64) -> Option<u32> {
    Some(u32::from_le_bytes(
        slice_at(bytes, offset, 4)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], offset: u64) -> Option<u64> {
    Some(u64::from_le_bytes(
        slice_at(bytes, offset, 8)?.try_into().ok()?,
    ))
}

/// A word of the class's width: 4 bytes in ELF32, 8 in ELF64.
fn word_at(bytes: &[u8], class: ElfClass, offset: u64) -> Option<u64> {
    match class {
        ElfClass::Elf32 => u32_at(bytes, offset).map(u64::from),
        ElfClass::Elf64 => u64_at(bytes, offset),
    }
}

/// libelf's `(size + 3) & ~3` on an `unsigned`: sizes from 0xfffffffd up round to 0
/// (`elf_note_next`, `elf_note_desc`).
fn pad4(n: u32) -> u64 {
    u64::from(n.wrapping_add(3) & !3)
}

/// A little-endian ELF32 or ELF64 image whose header and header tables were checked to lie
/// inside the bytes.
#[derive(Clone, Copy, Debug)]
pub struct ElfImage<'a> {
    bytes: &'a [u8],
    class: ElfClass,
    machine: u16,
    entry: u64,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
    shoff: u64,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProgramHeader {
    /// Its index in the table.
    pub index: u16,
    /// `p_type`.
    pub p_type: u32,
    /// `p_flags` (`PF_R`, `PF_W`, `PF_X`).
    pub flags: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

impl ProgramHeader {
    /// Whether libelf loads it (`elf_phdr_is_loadable`, libelf-tools.c): `PT_LOAD` with at
    /// least one of `PF_R`, `PF_W`, `PF_X`.
    pub fn is_loadable(&self) -> bool {
        self.p_type == PT_LOAD && self.flags & (PF_R | PF_W | PF_X) != 0
    }

    /// Whether the physical range `[p_paddr, p_paddr + p_memsz)` holds `paddr` (a range
    /// passing 2^64 ends there).
    pub fn contains_paddr(&self, paddr: u64) -> bool {
        paddr >= self.paddr && paddr - self.paddr < self.memsz
    }
}

/// One section header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionHeader {
    /// Its index in the table.
    pub index: u16,
    /// `sh_name` (offset in the section-name string table).
    pub name: u32,
    /// `sh_type`.
    pub sh_type: u32,
    /// `sh_addr`.
    pub addr: u64,
    /// `sh_offset`.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
}

impl<'a> ElfImage<'a> {
    /// Checks the ELF header (magic, class, little-endian encoding, length) and that both
    /// header tables lie inside `bytes` (as libelf's `elf_init` does).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, NotesError> {
        let len = bytes.len() as u64;
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(NotesError::NotElf);
        }
        let class = match bytes.get(4).copied() {
            Some(1) => ElfClass::Elf32,
            Some(2) => ElfClass::Elf64,
            other => {
                return Err(NotesError::UnsupportedClass {
                    class: other.unwrap_or(0),
                })
            }
        };
        match bytes.get(5).copied() {
            Some(1) => {}
            other => {
                return Err(NotesError::UnsupportedEncoding {
                    data: other.unwrap_or(0),
                })
            }
        }
        let need = class.ehdr_size();
        let truncated = NotesError::TruncatedHeader { len, need };
        if len < need {
            return Err(truncated);
        }
        // Offsets of e_entry.. differ by class: ELF64 widens entry, phoff, shoff to 8 bytes.
        let (entry, phoff, shoff, rest) = match class {
            ElfClass::Elf32 => (
                word_at(bytes, class, 24),
                word_at(bytes, class, 28),
                word_at(bytes, class, 32),
                40,
            ),
            ElfClass::Elf64 => (
                word_at(bytes, class, 24),
                word_at(bytes, class, 32),
                word_at(bytes, class, 40),
                52,
            ),
        };
        let half = |at: u64| u16_at(bytes, rest + at).ok_or(truncated);
        let image = Self {
            bytes,
            class,
            machine: u16_at(bytes, 18).ok_or(truncated)?,
            entry: entry.ok_or(truncated)?,
            phoff: phoff.ok_or(truncated)?,
            phentsize: half(2)?,
            phnum: half(4)?,
            shoff: shoff.ok_or(truncated)?,
            shentsize: half(6)?,
            shnum: half(8)?,
            shstrndx: half(10)?,
        };
        image.check_table(
            HeaderTable::Program,
            image.phoff,
            image.phentsize,
            image.phnum,
            class.phdr_size(),
        )?;
        image.check_table(
            HeaderTable::Section,
            image.shoff,
            image.shentsize,
            image.shnum,
            class.shdr_size(),
        )?;
        Ok(image)
    }

    fn check_table(
        &self,
        table: HeaderTable,
        offset: u64,
        entsize: u16,
        count: u16,
        need: u16,
    ) -> Result<(), NotesError> {
        let len = self.bytes.len() as u64;
        // libelf's `elf_init` checks `e_phoff + e_phentsize * count > size` for every count:
        // with none, the offset alone must not lie past the end.
        if count == 0 {
            return if offset <= len {
                Ok(())
            } else {
                Err(NotesError::TableOutOfBounds {
                    table,
                    offset,
                    count,
                    entsize,
                    len,
                })
            };
        }
        if entsize < need {
            return Err(NotesError::BadEntrySize {
                table,
                entsize,
                need,
            });
        }
        let fits = u64::from(entsize)
            .checked_mul(u64::from(count))
            .and_then(|size| offset.checked_add(size))
            .is_some_and(|end| end <= len);
        if fits {
            Ok(())
        } else {
            Err(NotesError::TableOutOfBounds {
                table,
                offset,
                count,
                entsize,
                len,
            })
        }
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// ELF32 or ELF64.
    pub fn class(&self) -> ElfClass {
        self.class
    }

    /// `e_machine` (3 i386, 62 x86-64).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// `e_entry`.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The program header with index `index`.
    pub fn program_header(&self, index: u16) -> Option<ProgramHeader> {
        if index >= self.phnum {
            return None;
        }
        let at = self
            .phoff
            .checked_add(u64::from(self.phentsize).checked_mul(u64::from(index))?)?;
        let b = self.bytes;
        let c = self.class;
        Some(match c {
            ElfClass::Elf32 => ProgramHeader {
                index,
                p_type: u32_at(b, at)?,
                offset: word_at(b, c, at + 4)?,
                vaddr: word_at(b, c, at + 8)?,
                paddr: word_at(b, c, at + 12)?,
                filesz: word_at(b, c, at + 16)?,
                memsz: word_at(b, c, at + 20)?,
                flags: u32_at(b, at + 24)?,
                align: word_at(b, c, at + 28)?,
            },
            ElfClass::Elf64 => ProgramHeader {
                index,
                p_type: u32_at(b, at)?,
                flags: u32_at(b, at + 4)?,
                offset: word_at(b, c, at + 8)?,
                vaddr: word_at(b, c, at + 16)?,
                paddr: word_at(b, c, at + 24)?,
                filesz: word_at(b, c, at + 32)?,
                memsz: word_at(b, c, at + 40)?,
                align: word_at(b, c, at + 48)?,
            },
        })
    }

    /// The section header with index `index`.
    pub fn section_header(&self, index: u16) -> Option<SectionHeader> {
        if index >= self.shnum {
            return None;
        }
        let at = self
            .shoff
            .checked_add(u64::from(self.shentsize).checked_mul(u64::from(index))?)?;
        let b = self.bytes;
        let c = self.class;
        let (addr, offset, size) = match c {
            ElfClass::Elf32 => (at + 12, at + 16, at + 20),
            ElfClass::Elf64 => (at + 16, at + 24, at + 32),
        };
        Some(SectionHeader {
            index,
            name: u32_at(b, at)?,
            sh_type: u32_at(b, at + 4)?,
            addr: word_at(b, c, addr)?,
            offset: word_at(b, c, offset)?,
            size: word_at(b, c, size)?,
        })
    }

    /// Every program header, in table order.
    pub fn program_headers(&self) -> impl Iterator<Item = ProgramHeader> + 'a {
        let image = *self;
        (0..self.phnum).filter_map(move |i| image.program_header(i))
    }

    /// Every section header, in table order (index 0 included).
    pub fn section_headers(&self) -> impl Iterator<Item = SectionHeader> + 'a {
        let image = *self;
        (0..self.shnum).filter_map(move |i| image.section_header(i))
    }

    /// A section's name from the section-name string table (`e_shstrndx`), when it is there
    /// and NUL-terminated.
    pub fn section_name(&self, section: &SectionHeader) -> Option<&'a [u8]> {
        let table = self.section_header(self.shstrndx)?;
        let strings = slice_at(self.bytes, table.offset, table.size)?;
        let rest = strings.get(usize::try_from(section.name).ok()?..)?;
        let nul = rest.iter().position(|&b| b == 0)?;
        rest.get(..nul)
    }

    /// The loadable segment ([`ProgramHeader::is_loadable`]: a `PT_LOAD` with R, W or X)
    /// whose physical range holds `paddr`, if any.
    pub fn load_segment_at_paddr(&self, paddr: u64) -> Option<ProgramHeader> {
        self.program_headers()
            .find(|p| p.is_loadable() && p.contains_paddr(paddr))
    }

    /// Every note libelf walks, whatever its owner, in libelf's order (see the module docs);
    /// an error ends the walk.
    pub fn notes(&self) -> Notes<'a> {
        Notes {
            image: *self,
            phase: Phase::Segments(0),
            region: None,
            walked: 0,
            xen_in_segments: 0,
            failed: false,
            note_limit_reached: false,
            short_tail: None,
        }
    }

    /// The notes named "Xen", decoded; an error ends the walk.
    pub fn xen_notes(&self) -> XenNotes<'a> {
        XenNotes {
            notes: self.notes(),
        }
    }

    /// Folds every Xen note the way libelf's `elf_xen_parse` does: feature bits accumulate,
    /// later PHYS32_ENTRY and PHYS32_RELOC values override earlier ones.
    pub fn xen_summary(&self) -> Result<XenSummary, NotesError> {
        let mut summary = XenSummary::default();
        let mut notes = self.xen_notes();
        for note in &mut notes {
            summary.add(&note?);
        }
        summary.note_limit_reached = notes.notes.note_limit_reached();
        summary.short_tail = notes.notes.short_tail();
        Ok(summary)
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Next program header to look at.
    Segments(u16),
    /// Next section header to look at.
    Sections(u16),
    Done,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    source: NoteSource,
    pos: u64,
    end: u64,
}

/// One note, any owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    index: u32,
    source: NoteSource,
    offset: u64,
    name: &'a [u8],
    n_type: u32,
    descsz: u32,
    desc: &'a [u8],
    tail: &'a [u8],
    xen: bool,
}

impl<'a> Note<'a> {
    /// Position in the walk (0-based, every owner counted).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The segment or section it was read from.
    pub fn source(&self) -> NoteSource {
        self.source
    }

    /// File offset of its header.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The raw name field (`namesz` bytes). Empty when `namesz` is 0xfffffffd or more: libelf
    /// rounds it up to 0 and steps over none of it.
    pub fn name_field(&self) -> &'a [u8] {
        self.name
    }

    /// The owner as `readelf -n` shows it: the name field up to its first NUL.
    pub fn owner(&self) -> &'a [u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        self.name.get(..end).unwrap_or(self.name)
    }

    /// `type`.
    pub fn n_type(&self) -> u32 {
        self.n_type
    }

    /// The descriptor (`descsz` bytes). Empty when `descsz` is 0xfffffffd or more: libelf
    /// rounds it up to 0 and steps over none of it (its numeric readings then give 0).
    pub fn desc(&self) -> &'a [u8] {
        self.desc
    }

    /// `descsz` as the header gives it: what libelf's numeric readings switch on.
    pub fn descsz(&self) -> u32 {
        self.descsz
    }

    /// The descriptor and the bytes after it up to the end of the segment or section: where
    /// a string note's NUL is looked for.
    pub fn tail(&self) -> &'a [u8] {
        self.tail
    }

    /// Whether libelf counts it as a Xen note: its name, read as a C string, is `"Xen"`.
    pub fn is_xen(&self) -> bool {
        self.xen
    }
}

/// Iterator over every note libelf walks ([`ElfImage::notes`]).
#[derive(Clone, Debug)]
pub struct Notes<'a> {
    image: ElfImage<'a>,
    phase: Phase,
    region: Option<Region>,
    walked: u32,
    xen_in_segments: u32,
    failed: bool,
    note_limit_reached: bool,
    short_tail: Option<ShortTail>,
}

/// Fewer than 12 bytes (a note header) left at the end of a note segment or section, after
/// its last note: commonly alignment padding. libelf reads a header there anyway, across the
/// region's end (its loop runs while `note < end`); this walk ignores the bytes and records
/// them, so that a tool can warn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShortTail {
    /// The segment or section.
    pub source: NoteSource,
    /// File offset of the first ignored byte.
    pub offset: u64,
    /// Bytes ignored (1 to 11).
    pub len: u64,
}

impl<'a> Notes<'a> {
    /// Whether the walk stopped after [`MAX_TOTAL_NOTES`] notes with more to read: libelf
    /// marks the image broken ("too many ELF notes"), stops, and keeps what it read; so does
    /// this walk.
    pub fn note_limit_reached(&self) -> bool {
        self.note_limit_reached
    }

    /// The first note region so far that ended with fewer than 12 bytes after its last note.
    pub fn short_tail(&self) -> Option<ShortTail> {
        self.short_tail
    }

    fn fail<T>(&mut self, e: NotesError) -> Option<Result<T, NotesError>> {
        self.failed = true;
        self.phase = Phase::Done;
        self.region = None;
        Some(Err(e))
    }

    /// The next note region in libelf's order, or `None` when there is none left.
    fn next_region(&mut self) -> Option<Result<Region, NotesError>> {
        loop {
            match self.phase {
                Phase::Segments(i) => {
                    let Some(p) = self.image.program_header(i) else {
                        // libelf reads sections only when the segments held no Xen note.
                        self.phase = if self.xen_in_segments == 0 {
                            Phase::Sections(1)
                        } else {
                            Phase::Done
                        };
                        continue;
                    };
                    self.phase = Phase::Segments(i.checked_add(1)?);
                    if p.p_type != PT_NOTE || p.offset == 0 {
                        continue;
                    }
                    return Some(self.region(NoteSource::Segment(i), p.offset, p.filesz));
                }
                Phase::Sections(i) => {
                    let Some(s) = self.image.section_header(i) else {
                        self.phase = Phase::Done;
                        continue;
                    };
                    self.phase = Phase::Sections(i.checked_add(1)?);
                    if s.sh_type != SHT_NOTE {
                        continue;
                    }
                    return Some(self.region(NoteSource::Section(i), s.offset, s.size));
                }
                Phase::Done => return None,
            }
        }
    }

    fn region(&self, source: NoteSource, offset: u64, size: u64) -> Result<Region, NotesError> {
        let len = self.image.bytes.len() as u64;
        match offset.checked_add(size) {
            Some(end) if end <= len => Ok(Region {
                source,
                pos: offset,
                end,
            }),
            _ => Err(NotesError::RegionOutOfBounds {
                source,
                offset,
                size,
                len,
            }),
        }
    }

    /// Reads the note at the region's position and advances past it; `None` when the walk
    /// ends there without an error: the note limit, or a tail shorter than a header.
    fn read_note(&mut self, region: &mut Region) -> Option<Result<Note<'a>, NotesError>> {
        if self.walked >= MAX_TOTAL_NOTES {
            // `elf_xen_parse_notes`: "too many ELF notes", break; the count is shared by
            // every region, so no later region yields a note either.
            self.note_limit_reached = true;
            self.phase = Phase::Done;
            return None;
        }
        let index = self.walked;
        let offset = region.pos;
        let available = region.end - region.pos;
        if available < NOTE_HEADER {
            // libelf counts it as a note (and reads its header past the end); see ShortTail.
            self.walked += 1;
            self.short_tail.get_or_insert(ShortTail {
                source: region.source,
                offset,
                len: available,
            });
            region.pos = region.end;
            return None;
        }
        let truncated = |need: u64| NotesError::TruncatedNote {
            index,
            source: region.source,
            offset,
            need,
            available,
        };
        let bytes = self.image.bytes;
        let field = |at: u64| {
            offset
                .checked_add(at)
                .and_then(|at| u32_at(bytes, at))
                .ok_or(truncated(NOTE_HEADER))
        };
        let header = field(0).and_then(|namesz| Ok((namesz, field(4)?, field(8)?)));
        let (namesz, descsz, n_type) = match header {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        // Offsets relative to the note, stepped as libelf does: each size rounded up to 4 in
        // 32 bits, so that 0xfffffffd and up round to 0 (and the note is then 12 bytes plus
        // the other field). None of this can overflow u64.
        let name_len = if pad4(namesz) == 0 {
            0
        } else {
            u64::from(namesz)
        };
        let desc_len = if pad4(descsz) == 0 {
            0
        } else {
            u64::from(descsz)
        };
        let desc_at = NOTE_HEADER + pad4(namesz);
        let desc_end = desc_at + desc_len;
        let next = desc_at + pad4(descsz);
        if desc_end > available {
            return Some(Err(truncated(desc_end)));
        }
        let at = |rel: u64| offset.saturating_add(rel);
        let slices = (
            slice_at(bytes, at(NOTE_HEADER), name_len),
            slice_at(bytes, at(desc_at), desc_len),
            slice_at(bytes, at(desc_at), available - desc_at),
        );
        let (Some(name), Some(desc), Some(tail)) = slices else {
            return Some(Err(truncated(desc_end)));
        };
        // libelf compares the C string at the name's position with "Xen" (strcmp), reading
        // from the image whatever namesz says.
        let xen = slice_at(bytes, at(NOTE_HEADER), 4) == Some(XEN_NAME.as_slice());
        self.walked += 1;
        // The padding after the descriptor may run past the region's end: the walk then ends.
        region.pos = at(next);
        Some(Ok(Note {
            index,
            source: region.source,
            offset,
            name,
            n_type,
            descsz,
            desc,
            tail,
            xen,
        }))
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, NotesError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(mut region) = self.region.take() {
                if region.pos < region.end {
                    let Some(note) = self.read_note(&mut region) else {
                        // The limit (phase now Done) or a short tail (region used up).
                        continue;
                    };
                    return match note {
                        Ok(note) => {
                            if note.xen && matches!(region.source, NoteSource::Segment(_)) {
                                self.xen_in_segments += 1;
                            }
                            self.region = Some(region);
                            Some(Ok(note))
                        }
                        Err(e) => self.fail(e),
                    };
                }
            }
            match self.next_region()? {
                Ok(region) => self.region = Some(region),
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl core::iter::FusedIterator for Notes<'_> {}

/// `PHYS32_RELOC`'s three optional values, as present in one note (or folded over several).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Phys32Reloc {
    /// Required alignment of the image start.
    pub align: Option<u32>,
    /// Lowest address of the image start.
    pub min: Option<u32>,
    /// Highest address of the image's last byte.
    pub max: Option<u32>,
}

impl Phys32Reloc {
    /// libelf's reading: each value present when `descsz` is at least 4, 8, 12; read as 0
    /// unless `descsz` is a multiple of 4 (`elf_note_numeric_array`). `desc` holds the
    /// `descsz` bytes, or none when `descsz` rounds up past 2^32 (never a multiple of 4).
    fn from_desc(descsz: u32, desc: &[u8]) -> Self {
        let whole = descsz.is_multiple_of(4);
        let value = |i: u32| {
            (descsz >= 4 * (i + 1)).then(|| {
                if whole {
                    u32_at(desc, 4 * u64::from(i)).unwrap_or(0)
                } else {
                    0
                }
            })
        };
        Self {
            align: value(0),
            min: value(1),
            max: value(2),
        }
    }

    /// The alignment, or [`PHYS32_RELOC_DEFAULT_ALIGN`].
    pub fn align_or_default(&self) -> u32 {
        self.align.unwrap_or(PHYS32_RELOC_DEFAULT_ALIGN)
    }

    /// The minimum, or [`PHYS32_RELOC_DEFAULT_MIN`].
    pub fn min_or_default(&self) -> u32 {
        self.min.unwrap_or(PHYS32_RELOC_DEFAULT_MIN)
    }

    /// The maximum, or [`PHYS32_RELOC_DEFAULT_MAX`].
    pub fn max_or_default(&self) -> u32 {
        self.max.unwrap_or(PHYS32_RELOC_DEFAULT_MAX)
    }
}

/// A decoded Xen note value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenValue<'a> {
    /// A numeric note of 1, 2, 4 or 8 bytes (little-endian).
    Number(u64),
    /// A numeric note of another size: libelf reads it as 0 (`elf_note_numeric`). Linux's
    /// L1_MFN_VALID (two 8-byte mask/value words) is one.
    OtherSizeNumber(&'a [u8]),
    /// A string note: the bytes before the NUL.
    String(&'a [u8]),
    /// A string note (FEATURES included) with no NUL in its first [`MAX_STRING_LEN`] + 1
    /// bytes: libelf's `elf_strval` marks the image broken ("excessively long string") and
    /// `elf_xen_parse_note` skips the note, which still counts as a Xen note. A FEATURES string
    /// this long is never tokenised, so nothing in it is required.
    StringTooLong,
    /// FEATURES: the string (already checked by [`parse_features`]) and its bits.
    Features {
        /// The bytes before the NUL.
        text: &'a [u8],
        /// Bits it sets in the supported set.
        supported: FeatureSet,
        /// Bits it sets in the required set.
        required: FeatureSet,
    },
    /// SUPPORTED_FEATURES: the bits libelf ORs into the supported set.
    SupportedFeatures(FeatureSet),
    /// PHYS32_ENTRY: the 32-bit physical entry (0 when the descriptor is not 1, 2, 4 or 8 bytes,
    /// as libelf reads it).
    Phys32Entry(u32),
    /// PHYS32_RELOC.
    Phys32Reloc(Phys32Reloc),
    /// A type libelf ignores (INFO, or 20 and above): the raw descriptor.
    Ignored(&'a [u8]),
}

/// A note named "Xen", decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenNote<'a> {
    note: Note<'a>,
    note_type: Option<XenNoteType>,
    value: XenValue<'a>,
}

impl<'a> XenNote<'a> {
    /// Decodes a note libelf counts as Xen; `None` for any other note.
    pub fn decode(note: &Note<'a>) -> Option<Result<Self, NotesError>> {
        if !note.is_xen() {
            return None;
        }
        let note_type = XenNoteType::from_u32(note.n_type);
        Some(decode_value(note, note_type).map(|value| Self {
            note: *note,
            note_type,
            value,
        }))
    }

    /// The underlying note.
    pub fn note(&self) -> &Note<'a> {
        &self.note
    }

    /// Its type, when it is 0 to 19.
    pub fn note_type(&self) -> Option<XenNoteType> {
        self.note_type
    }

    /// Its decoded value.
    pub fn value(&self) -> XenValue<'a> {
        self.value
    }
}

fn numeric(desc: &[u8]) -> Option<u64> {
    match desc.len() {
        1 => desc.first().map(|&b| u64::from(b)),
        2 => u16_at(desc, 0).map(u64::from),
        4 => u32_at(desc, 0).map(u64::from),
        8 => u64_at(desc, 0),
        _ => None,
    }
}

/// libelf's `elf_strval` from the descriptor's start, bounded by the note's segment or
/// section: the string up to its NUL (`Some`), or `None` when [`MAX_STRING_LEN`] + 1 bytes
/// hold no NUL (libelf skips the note).
fn string<'a>(note: &Note<'a>, note_type: XenNoteType) -> Result<Option<&'a [u8]>, NotesError> {
    let window = note.tail.get(..=MAX_STRING_LEN).unwrap_or(note.tail);
    match window.iter().position(|&b| b == 0) {
        Some(len) => Ok(Some(note.tail.get(..len).unwrap_or(&[]))),
        // libelf: a byte past MAX_STRING_LEN that is not NUL is "excessively long"; running
        // out of bytes first is out of range (here: out of the region, stricter).
        None if note.tail.len() > MAX_STRING_LEN => Ok(None),
        None => Err(NotesError::UnterminatedString {
            index: note.index,
            offset: note.offset,
            note_type,
        }),
    }
}

fn decode_value<'a>(
    note: &Note<'a>,
    note_type: Option<XenNoteType>,
) -> Result<XenValue<'a>, NotesError> {
    let desc = note.desc;
    let Some(t) = note_type else {
        return Ok(XenValue::Ignored(desc));
    };
    Ok(match t.kind() {
        NoteKind::Ignored => XenValue::Ignored(desc),
        NoteKind::Numeric => match numeric(desc) {
            Some(v) => XenValue::Number(v),
            None => XenValue::OtherSizeNumber(desc),
        },
        NoteKind::String => match string(note, t)? {
            Some(text) => XenValue::String(text),
            None => XenValue::StringTooLong,
        },
        NoteKind::Features => {
            let Some(text) = string(note, t)? else {
                return Ok(XenValue::StringTooLong);
            };
            let (supported, required) =
                parse_features(text).map_err(|name| NotesError::UnknownRequiredFeature {
                    index: note.index,
                    offset: note.offset,
                    name,
                })?;
            XenValue::Features {
                text,
                supported,
                required,
            }
        }
        NoteKind::Bitmap => {
            let bits = if !desc.is_empty() && desc.len().is_multiple_of(4) {
                u32_at(desc, 0).unwrap_or(0)
            } else {
                0
            };
            XenValue::SupportedFeatures(FeatureSet(bits))
        }
        // `parms->phys_entry = val`: a uint32_t keeps the low half.
        NoteKind::Phys32Entry => XenValue::Phys32Entry(numeric(desc).unwrap_or(0) as u32),
        NoteKind::Phys32Reloc => XenValue::Phys32Reloc(Phys32Reloc::from_desc(note.descsz, desc)),
    })
}

/// Iterator over the decoded Xen notes ([`ElfImage::xen_notes`]).
#[derive(Clone, Debug)]
pub struct XenNotes<'a> {
    notes: Notes<'a>,
}

impl<'a> Iterator for XenNotes<'a> {
    type Item = Result<XenNote<'a>, NotesError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let note = match self.notes.next()? {
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            if let Some(decoded) = XenNote::decode(&note) {
                if decoded.is_err() {
                    // libelf stops at a note it rejects.
                    self.notes.failed = true;
                }
                return Some(decoded);
            }
        }
    }
}

impl core::iter::FusedIterator for XenNotes<'_> {}

/// A set of XENFEAT bits (`f_supported[0]` / `f_required[0]` in libelf).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(pub u32);

impl FeatureSet {
    /// Whether `bit` is set.
    pub fn contains(&self, bit: u32) -> bool {
        bit < 32 && self.0 & (1 << bit) != 0
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The set bits, lowest first, each with its XENFEAT name when it is 0 to 20.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Option<&'static str>)> {
        let bits = self.0;
        (0..32)
            .filter(move |b| bits & (1 << b) != 0)
            .map(|b| (b, feature_name(b)))
    }
}

impl fmt::Display for FeatureSet {
    /// `0x...` followed by the names (or `bit N`) of the set bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)?;
        for (i, (bit, name)) in self.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            match name {
                Some(n) => f.write_str(n)?,
                None => write!(f, "bit {bit}")?,
            }
        }
        Ok(())
    }
}

/// One token of a FEATURES string, as libelf's `elf_xen_parse_features` copies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureToken<'a> {
    /// Offset of its first byte in the string.
    pub start: usize,
    /// The name (without `!`); may be empty ("a||b", a lone "!").
    pub name: &'a [u8],
    /// Whether it began with `!`.
    pub required: bool,
    /// Whether libelf cut it at [`FEATURE_TOKEN_MAX`] bytes (the rest is the next token).
    pub cut: bool,
}

impl FeatureToken<'_> {
    /// The bit libelf gives the name, if it knows it.
    pub fn libelf_bit(&self) -> Option<u32> {
        libelf_feature_bit(self.name)
    }
}

/// The tokens of a FEATURES string, exactly as libelf splits it: a token ends at `|` (which
/// is consumed), at the end of the string, or after [`FEATURE_TOKEN_MAX`] bytes (nothing is
/// consumed: the rest starts the next token). No trimming; names are case-sensitive.
#[derive(Clone, Debug)]
pub struct FeatureTokens<'a> {
    text: &'a [u8],
    /// The bytes not yet split: a suffix of `text`.
    rest: &'a [u8],
}

impl<'a> FeatureTokens<'a> {
    /// Tokens of `text` (the bytes before the NUL).
    pub fn new(text: &'a [u8]) -> Self {
        Self { text, rest: text }
    }
}

impl<'a> Iterator for FeatureTokens<'a> {
    type Item = FeatureToken<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let start = self.text.len() - rest.len();
        let window = rest.get(..FEATURE_TOKEN_MAX).unwrap_or(rest);
        // Split, not index arithmetic: each token leaves a strictly shorter rest (the window
        // is never empty, and a `|` is consumed), so the walk always ends.
        let (token, after, cut) = match window.iter().position(|&b| b == b'|') {
            Some(n) => {
                let (token, bar) = rest.split_at_checked(n)?;
                (token, bar.get(1..)?, false)
            }
            None => {
                let (token, after) = rest.split_at_checked(window.len())?;
                (token, after, !after.is_empty())
            }
        };
        self.rest = after;
        let (required, name) = match token.split_first() {
            Some((b'!', name)) => (true, name),
            _ => (false, token),
        };
        Some(FeatureToken {
            start,
            name,
            required,
            cut,
        })
    }
}

impl core::iter::FusedIterator for FeatureTokens<'_> {}

/// libelf's `elf_xen_parse_features`: the supported and required bits of a FEATURES string.
/// A known name sets its bit in supported, `!name` also in required; an unknown name is
/// ignored, an unknown `!name` is an error carrying that name. Only the names in
/// [`LIBELF_FEATURE_BITS`] are known.
pub fn parse_features(text: &[u8]) -> Result<(FeatureSet, FeatureSet), FeatureName> {
    let mut supported = 0u32;
    let mut required = 0u32;
    for token in FeatureTokens::new(text) {
        match (token.libelf_bit(), token.required) {
            (Some(bit), req) => {
                supported |= 1 << bit;
                if req {
                    required |= 1 << bit;
                }
            }
            (None, true) => return Err(FeatureName::new(token.name)),
            (None, false) => {}
        }
    }
    Ok((FeatureSet(supported), FeatureSet(required)))
}

/// What libelf keeps from an image's Xen notes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenSummary {
    /// Notes named "Xen" (libelf's `xen_elfnotes`).
    pub xen_notes: u32,
    /// Supported features (FEATURES names and SUPPORTED_FEATURES bits).
    pub supported: FeatureSet,
    /// Required features (`!name` in FEATURES).
    pub required: FeatureSet,
    /// The last PHYS32_ENTRY (its low 32 bits), `None` when that is 0xffffffff: libelf keeps
    /// it in a `uint32_t` whose unset value is `UNSET_ADDR32` (0xffffffff), so such a note
    /// unsets any earlier entry and Xen reports "Unable to find XEN_ELFNOTE_PHYS32_ENTRY
    /// address".
    pub phys32_entry: Option<u32>,
    /// PHYS32_RELOC values (each from the last note that gave it), when a PHYS32_RELOC note is
    /// present.
    pub phys32_reloc: Option<Phys32Reloc>,
    /// String notes skipped as longer than [`MAX_STRING_LEN`] ([`XenValue::StringTooLong`]):
    /// libelf marks the image broken for each and boots.
    pub strings_too_long: u32,
    /// The walk stopped at [`MAX_TOTAL_NOTES`] ([`Notes::note_limit_reached`]).
    pub note_limit_reached: bool,
    /// A note region ended with bytes too few for a header ([`Notes::short_tail`]).
    pub short_tail: Option<ShortTail>,
}

impl XenSummary {
    /// Adds one note, as `elf_xen_parse_note` does.
    pub fn add(&mut self, note: &XenNote<'_>) {
        self.xen_notes += 1;
        match note.value {
            XenValue::Features {
                supported,
                required,
                ..
            } => {
                self.supported.0 |= supported.0;
                self.required.0 |= required.0;
            }
            XenValue::SupportedFeatures(bits) => self.supported.0 |= bits.0,
            XenValue::Phys32Entry(entry) => {
                self.phys32_entry = (entry != UNSET_ADDR32).then_some(entry);
            }
            XenValue::StringTooLong => self.strings_too_long += 1,
            XenValue::Phys32Reloc(r) => {
                let folded = self.phys32_reloc.get_or_insert_with(Phys32Reloc::default);
                folded.align = r.align.or(folded.align);
                folded.min = r.min.or(folded.min);
                folded.max = r.max.or(folded.max);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    /// A note's bytes: header, name (NUL added), descriptor, each padded to 4.
    fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut name_field = name.to_vec();
        name_field.push(0);
        raw_note(&name_field, n_type, desc)
    }

    /// A note with the name field given byte for byte.
    fn raw_note(name_field: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name_field.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&n_type.to_le_bytes());
        v.extend_from_slice(name_field);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    fn xen(n_type: XenNoteType, desc: &[u8]) -> Vec<u8> {
        note(b"Xen", n_type as u32, desc)
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// A test-only ELF writer: program headers (PT_LOAD and PT_NOTE), SHT_NOTE sections, an
    /// entry point. Note payloads are laid out after the header tables.
    #[derive(Clone)]
    struct Elf {
        class: ElfClass,
        entry: u64,
        loads: Vec<(u64, u64, u64, u32)>, // vaddr, paddr, memsz, flags
        note_segments: Vec<Vec<u8>>,
        note_sections: Vec<Vec<u8>>,
        /// p_offset 0 for every note segment (binutils bug libelf skips).
        zero_offsets: bool,
    }

    impl Elf {
        fn new(class: ElfClass) -> Self {
            Self {
                class,
                entry: 0x10_0000,
                loads: vec![(0x10_0000, 0x10_0000, 0x1000, PF_R | PF_X)],
                note_segments: Vec::new(),
                note_sections: Vec::new(),
                zero_offsets: false,
            }
        }
        fn segment(mut self, notes: &[Vec<u8>]) -> Self {
            self.note_segments.push(notes.concat());
            self
        }
        fn section(mut self, notes: &[Vec<u8>]) -> Self {
            self.note_sections.push(notes.concat());
            self
        }
        fn build(&self) -> Vec<u8> {
            let is64 = self.class == ElfClass::Elf64;
            let (ehsize, phsize, shsize) = if is64 { (64, 56, 64) } else { (52, 32, 40) };
            let phnum = self.loads.len() + self.note_segments.len();
            let shnum = if self.note_sections.is_empty() {
                0
            } else {
                1 + self.note_sections.len()
            };
            let mut out = vec![0u8; ehsize + phsize * phnum];
            let payload = |out: &mut Vec<u8>, bytes: &[u8]| {
                out.resize(out.len().next_multiple_of(4), 0);
                let at = out.len();
                out.extend_from_slice(bytes);
                at as u64
            };
            let seg_offsets: Vec<u64> = self
                .note_segments
                .iter()
                .map(|n| payload(&mut out, n))
                .collect();
            let sec_offsets: Vec<u64> = self
                .note_sections
                .iter()
                .map(|n| payload(&mut out, n))
                .collect();
            out.resize(out.len().next_multiple_of(8), 0);
            let shoff = out.len();
            out.resize(shoff + shsize * shnum, 0);
            let put = |out: &mut Vec<u8>, at: usize, v: u64, n: usize| {
                out[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            };
            let w = if is64 { 8 } else { 4 };
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = if is64 { 2 } else { 1 };
            out[5] = 1;
            out[6] = 1;
            put(&mut out, 16, 2, 2);
            put(&mut out, 18, if is64 { 62 } else { 3 }, 2);
            put(&mut out, 20, 1, 4);
            put(&mut out, 24, self.entry, w);
            put(&mut out, 24 + w, ehsize as u64, w);
            put(
                &mut out,
                24 + 2 * w,
                if shnum > 0 { shoff as u64 } else { 0 },
                w,
            );
            // e_flags, then the 16-bit fields from e_ehsize on.
            let ehsize_at = 28 + 3 * w;
            put(&mut out, ehsize_at, ehsize as u64, 2);
            put(&mut out, ehsize_at + 2, phsize as u64, 2);
            put(&mut out, ehsize_at + 4, phnum as u64, 2);
            put(&mut out, ehsize_at + 6, shsize as u64, 2);
            put(&mut out, ehsize_at + 8, shnum as u64, 2);
            let phdr = |out: &mut Vec<u8>, i: usize, ph: ProgramHeader| {
                let at = ehsize + phsize * i;
                put(out, at, u64::from(ph.p_type), 4);
                if is64 {
                    put(out, at + 4, u64::from(ph.flags), 4);
                    for (k, v) in [ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz, ph.align]
                        .into_iter()
                        .enumerate()
                    {
                        put(out, at + 8 + 8 * k, v, 8);
                    }
                } else {
                    for (k, v) in [ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz]
                        .into_iter()
                        .enumerate()
                    {
                        put(out, at + 4 + 4 * k, v, 4);
                    }
                    put(out, at + 24, u64::from(ph.flags), 4);
                    put(out, at + 28, ph.align, 4);
                }
            };
            let mut i = 0;
            for &(vaddr, paddr, memsz, flags) in &self.loads {
                phdr(
                    &mut out,
                    i,
                    ProgramHeader {
                        index: 0,
                        p_type: PT_LOAD,
                        flags,
                        offset: 0,
                        vaddr,
                        paddr,
                        filesz: 0,
                        memsz,
                        align: 0x1000,
                    },
                );
                i += 1;
            }
            for (n, &off) in self.note_segments.iter().zip(&seg_offsets) {
                phdr(
                    &mut out,
                    i,
                    ProgramHeader {
                        index: 0,
                        p_type: PT_NOTE,
                        flags: PF_R,
                        offset: if self.zero_offsets { 0 } else { off },
                        vaddr: 0,
                        paddr: 0,
                        filesz: n.len() as u64,
                        memsz: n.len() as u64,
                        align: 4,
                    },
                );
                i += 1;
            }
            for (k, (n, &off)) in self.note_sections.iter().zip(&sec_offsets).enumerate() {
                let at = shoff + shsize * (k + 1);
                put(&mut out, at + 4, u64::from(SHT_NOTE), 4);
                let (o, s) = if is64 { (24, 32) } else { (16, 20) };
                put(&mut out, at + o, off, w);
                put(&mut out, at + s, n.len() as u64, w);
            }
            out
        }
    }

    const BOTH: [ElfClass; 2] = [ElfClass::Elf32, ElfClass::Elf64];

    fn summary(bytes: &[u8]) -> Result<XenSummary, NotesError> {
        ElfImage::parse(bytes)?.xen_summary()
    }

    #[test]
    fn phys32_entry_in_elf32_and_elf64() {
        for class in BOTH {
            let img = Elf::new(class)
                .segment(&[xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes())])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(image.class(), class);
            let s = image.xen_summary().unwrap();
            assert_eq!(s.xen_notes, 1, "{class}");
            assert_eq!(s.phys32_entry, Some(0x10_0000), "{class}");
            assert_eq!(
                image.load_segment_at_paddr(0x10_0000).map(|p| p.paddr),
                Some(0x10_0000)
            );
            assert_eq!(image.load_segment_at_paddr(0x10_1000), None);
        }
    }

    #[test]
    fn only_notes_named_xen_count() {
        for class in BOTH {
            let img = Elf::new(class)
                .segment(&[
                    note(b"GNU", 3, &[0xab; 20]),
                    note(b"Xen", 18, &7u32.to_le_bytes()),
                    note(b"XEN", 18, &8u32.to_le_bytes()),
                    note(b"Xen2", 18, &9u32.to_le_bytes()),
                    raw_note(b"Xenx", 18, &10u32.to_le_bytes()),
                    note(b"Linux", 18, &11u32.to_le_bytes()),
                ])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let owners: Vec<&[u8]> = image.notes().map(|n| n.unwrap().owner()).collect();
            assert_eq!(
                owners,
                [&b"GNU"[..], b"Xen", b"XEN", b"Xen2", b"Xenx", b"Linux"]
            );
            let s = image.xen_summary().unwrap();
            assert_eq!((s.xen_notes, s.phys32_entry), (1, Some(7)), "{class}");
        }
    }

    #[test]
    fn name_without_nul_matches_like_strcmp_through_the_padding() {
        // namesz 3: libelf's strcmp reads the zero padding after "Xen" and matches; a name
        // field with trailing NULs ("Xen\0\0") matches too.
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                raw_note(b"Xen", 18, &1u32.to_le_bytes()),
                raw_note(b"Xen\0\0", 18, &2u32.to_le_bytes()),
            ])
            .build();
        let s = summary(&img).unwrap();
        assert_eq!((s.xen_notes, s.phys32_entry), (2, Some(2)));
    }

    #[test]
    fn segments_first_then_sections_only_without_xen_notes_in_segments() {
        for class in BOTH {
            let seg = xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes());
            let sec = xen(XenNoteType::Phys32Entry, &2u32.to_le_bytes());
            // Segments hold a Xen note: sections are not read.
            let img = Elf::new(class)
                .segment(std::slice::from_ref(&seg))
                .section(std::slice::from_ref(&sec))
                .build();
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(image.notes().count(), 1);
            assert_eq!(image.xen_summary().unwrap().phys32_entry, Some(1));
            // Segments hold only a GNU note: sections are read after it.
            let img = Elf::new(class)
                .segment(&[note(b"GNU", 3, &[1; 8])])
                .section(std::slice::from_ref(&sec))
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let sources: Vec<NoteSource> = image.notes().map(|n| n.unwrap().source()).collect();
            assert_eq!(sources, [NoteSource::Segment(1), NoteSource::Section(1)]);
            assert_eq!(image.xen_summary().unwrap().phys32_entry, Some(2));
            // No note segment at all.
            let img = Elf::new(class).section(std::slice::from_ref(&sec)).build();
            assert_eq!(summary(&img).unwrap().phys32_entry, Some(2));
            // A note segment with p_offset 0 is skipped (binutils bug), so sections are read.
            let mut elf = Elf::new(class).segment(&[seg]).section(&[sec]);
            elf.zero_offsets = true;
            assert_eq!(summary(&elf.build()).unwrap().phys32_entry, Some(2));
        }
    }

    #[test]
    fn four_byte_alignment_whatever_the_sizes() {
        // Name of 5 bytes and descriptor of 5 bytes: both padded to 8.
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                note(b"Linu", 1, &[1, 2, 3, 4, 5]),
                xen(XenNoteType::GuestOs, &cstr("linux")),
                xen(XenNoteType::Phys32Entry, &[0x34, 0x12]),
            ])
            .build();
        let image = ElfImage::parse(&img).unwrap();
        let notes: Vec<Note> = image.notes().map(Result::unwrap).collect();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[0].desc(), [1, 2, 3, 4, 5]);
        assert_eq!(notes[1].offset() - notes[0].offset(), 12 + 8 + 8);
        let values: Vec<XenValue> = image.xen_notes().map(|n| n.unwrap().value()).collect();
        assert_eq!(
            values,
            [XenValue::String(b"linux"), XenValue::Phys32Entry(0x1234)]
        );
    }

    #[test]
    fn every_type_is_decoded_by_name() {
        let entries = [
            (XenNoteType::Info, cstr("a=b"), XenValue::Ignored(b"a=b\0")),
            (
                XenNoteType::Entry,
                0xffff_ffff_8100_0000u64.to_le_bytes().to_vec(),
                XenValue::Number(0xffff_ffff_8100_0000),
            ),
            (
                XenNoteType::HypercallPage,
                0x1000u32.to_le_bytes().to_vec(),
                XenValue::Number(0x1000),
            ),
            (XenNoteType::VirtBase, vec![0x80], XenValue::Number(0x80)),
            (
                XenNoteType::PaddrOffset,
                0x1234u16.to_le_bytes().to_vec(),
                XenValue::Number(0x1234),
            ),
            (
                XenNoteType::XenVersion,
                cstr("xen-3.0"),
                XenValue::String(b"xen-3.0"),
            ),
            (
                XenNoteType::GuestOs,
                cstr("linux"),
                XenValue::String(b"linux"),
            ),
            (
                XenNoteType::GuestVersion,
                cstr("2.6"),
                XenValue::String(b"2.6"),
            ),
            (
                XenNoteType::Loader,
                cstr("generic"),
                XenValue::String(b"generic"),
            ),
            (XenNoteType::PaeMode, cstr("yes"), XenValue::String(b"yes")),
            (
                XenNoteType::BsdSymtab,
                cstr("yes"),
                XenValue::String(b"yes"),
            ),
            (
                XenNoteType::HvStartLow,
                0xf580_0000u32.to_le_bytes().to_vec(),
                XenValue::Number(0xf580_0000),
            ),
            (
                XenNoteType::L1MfnValid,
                [1u8; 16].to_vec(),
                XenValue::OtherSizeNumber(&[1; 16]),
            ),
            (
                XenNoteType::SuspendCancel,
                1u32.to_le_bytes().to_vec(),
                XenValue::Number(1),
            ),
            (
                XenNoteType::InitP2m,
                0x8000_0000_0000u64.to_le_bytes().to_vec(),
                XenValue::Number(0x8000_0000_0000),
            ),
            (
                XenNoteType::ModStartPfn,
                1u32.to_le_bytes().to_vec(),
                XenValue::Number(1),
            ),
            (
                XenNoteType::SupportedFeatures,
                0x901u32.to_le_bytes().to_vec(),
                XenValue::SupportedFeatures(FeatureSet(0x901)),
            ),
            (
                XenNoteType::Phys32Entry,
                0x1_0020_0000u64.to_le_bytes().to_vec(),
                XenValue::Phys32Entry(0x20_0000),
            ),
            (
                XenNoteType::Phys32Reloc,
                [0x20_0000u32, 0x100_0000, 0x3fff_ffff]
                    .map(u32::to_le_bytes)
                    .concat(),
                XenValue::Phys32Reloc(Phys32Reloc {
                    align: Some(0x20_0000),
                    min: Some(0x100_0000),
                    max: Some(0x3fff_ffff),
                }),
            ),
            (
                XenNoteType::Features,
                cstr("!writable_page_tables"),
                XenValue::Features {
                    text: b"!writable_page_tables",
                    supported: FeatureSet(1),
                    required: FeatureSet(1),
                },
            ),
        ];
        assert_eq!(entries.len(), 20);
        for class in BOTH {
            let notes: Vec<Vec<u8>> = entries.iter().map(|(t, d, _)| xen(*t, d)).collect();
            let img = Elf::new(class).segment(&notes).chain_unknown().build();
            let image = ElfImage::parse(&img).unwrap();
            let decoded: Vec<XenNote> = image.xen_notes().map(Result::unwrap).collect();
            assert_eq!(decoded.len(), 21);
            for ((t, _, want), got) in entries.iter().zip(&decoded) {
                assert_eq!(got.note_type(), Some(*t));
                assert_eq!(&got.value(), want, "{t}");
                assert_eq!(XenNoteType::from_u32(*t as u32), Some(*t));
            }
            assert_eq!(decoded[20].note_type(), None);
            assert_eq!(decoded[20].value(), XenValue::Ignored(&[9, 9, 9, 9]));
            let s = image.xen_summary().unwrap();
            assert_eq!(s.xen_notes, 21);
            assert_eq!(s.supported, FeatureSet(0x901));
            assert_eq!(s.required, FeatureSet(1));
            assert_eq!(s.phys32_entry, Some(0x20_0000));
        }
        let names: Vec<&str> = XenNoteType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names[10], "FEATURES");
        assert_eq!(names[19], "PHYS32_RELOC");
        assert_eq!(XenNoteType::from_u32(20), None);
    }

    impl Elf {
        /// Appends a Xen note of type 20 (unknown to libelf) to the last segment.
        fn chain_unknown(mut self) -> Self {
            if let Some(last) = self.note_segments.last_mut() {
                last.extend(note(b"Xen", 20, &[9, 9, 9, 9]));
            }
            self
        }
    }

    #[test]
    fn numeric_sizes_follow_elf_note_numeric() {
        for (desc, want) in [
            (vec![0x11], XenValue::Number(0x11)),
            (vec![0x11, 0x22], XenValue::Number(0x2211)),
            (vec![0x11, 0x22, 0x33, 0x44], XenValue::Number(0x4433_2211)),
            (
                (1u64..=8).map(|b| b as u8).collect(),
                XenValue::Number(0x0807_0605_0403_0201),
            ),
        ] {
            let img = Elf::new(ElfClass::Elf32)
                .segment(&[xen(XenNoteType::VirtBase, &desc)])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(image.xen_notes().next().unwrap().unwrap().value(), want);
        }
        for len in [0usize, 3, 5, 6, 7, 9, 16] {
            let desc = vec![0xee; len];
            let img = Elf::new(ElfClass::Elf32)
                .segment(&[
                    xen(XenNoteType::VirtBase, &desc),
                    xen(XenNoteType::Phys32Entry, &desc),
                ])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let v: Vec<XenValue> = image.xen_notes().map(|n| n.unwrap().value()).collect();
            assert_eq!(v[0], XenValue::OtherSizeNumber(&desc), "{len}");
            // libelf's phys_entry becomes 0: not "unset".
            assert_eq!(v[1], XenValue::Phys32Entry(0), "{len}");
        }
    }

    #[test]
    fn phys32_reloc_fields_and_defaults() {
        let words = [0x40_0000u32, 0x100_0000, 0x7fff_ffff]
            .map(u32::to_le_bytes)
            .concat();
        for (desc, want) in [
            (vec![], Phys32Reloc::default()),
            (
                words[..4].to_vec(),
                Phys32Reloc {
                    align: Some(0x40_0000),
                    ..Default::default()
                },
            ),
            (
                words[..8].to_vec(),
                Phys32Reloc {
                    align: Some(0x40_0000),
                    min: Some(0x100_0000),
                    max: None,
                },
            ),
            (
                words.clone(),
                Phys32Reloc {
                    align: Some(0x40_0000),
                    min: Some(0x100_0000),
                    max: Some(0x7fff_ffff),
                },
            ),
            // 5 bytes: align is present but elf_note_numeric_array reads 0 (5 % 4 != 0).
            (
                words[..5].to_vec(),
                Phys32Reloc {
                    align: Some(0),
                    ..Default::default()
                },
            ),
            // 16 bytes: the fourth word is ignored.
            (
                [words.clone(), vec![1, 2, 3, 4]].concat(),
                Phys32Reloc {
                    align: Some(0x40_0000),
                    min: Some(0x100_0000),
                    max: Some(0x7fff_ffff),
                },
            ),
        ] {
            let img = Elf::new(ElfClass::Elf64)
                .segment(&[xen(XenNoteType::Phys32Reloc, &desc)])
                .build();
            let s = summary(&img).unwrap();
            assert_eq!(s.phys32_reloc, Some(want), "{desc:x?}");
        }
        let none = Phys32Reloc::default();
        assert_eq!(
            (
                none.align_or_default(),
                none.min_or_default(),
                none.max_or_default()
            ),
            (0x20_0000, 0, 0xffff_ffff)
        );
        // Values a note gives are kept, not replaced by the defaults.
        let given = Phys32Reloc {
            align: Some(0x40_0000),
            min: Some(0x100_0000),
            max: Some(0x7fff_ffff),
        };
        assert_eq!(
            (
                given.align_or_default(),
                given.min_or_default(),
                given.max_or_default()
            ),
            (0x40_0000, 0x100_0000, 0x7fff_ffff)
        );
        // A later, shorter note keeps the earlier values it does not give.
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                xen(XenNoteType::Phys32Reloc, &words),
                xen(XenNoteType::Phys32Reloc, &0x1000u32.to_le_bytes()),
            ])
            .build();
        assert_eq!(
            summary(&img).unwrap().phys32_reloc,
            Some(Phys32Reloc {
                align: Some(0x1000),
                min: Some(0x100_0000),
                max: Some(0x7fff_ffff)
            })
        );
        // No PHYS32_RELOC note: not relocatable.
        let img = Elf::new(ElfClass::Elf64).segment(&[]).build();
        assert_eq!(summary(&img).unwrap().phys32_reloc, None);
    }

    #[test]
    fn supported_features_is_a_u32_bitmap_ored_in() {
        for (desc, bits) in [
            (0x100u32.to_le_bytes().to_vec(), 0x100),
            (
                [0x100u32, 0xffff_ffff].map(u32::to_le_bytes).concat(),
                0x100,
            ),
            (vec![0xff, 0xff], 0),
            (vec![0xff; 6], 0),
            (vec![], 0),
        ] {
            let img = Elf::new(ElfClass::Elf32)
                .segment(&[
                    xen(XenNoteType::SupportedFeatures, &desc),
                    xen(XenNoteType::SupportedFeatures, &0x800u32.to_le_bytes()),
                ])
                .build();
            let s = summary(&img).unwrap();
            assert_eq!(s.supported, FeatureSet(bits | 0x800), "{desc:x?}");
            assert!(s.required.is_empty());
        }
    }

    fn features(s: &str) -> Result<(u32, u32), FeatureName> {
        parse_features(s.as_bytes()).map(|(s, r)| (s.0, r.0))
    }

    #[test]
    fn features_string_rules() {
        // `|` separators, `!` for required.
        assert_eq!(
            features("writable_page_tables|!pae_pgdir_above_4gb"),
            Ok((0x11, 0x10))
        );
        // Unknown optional names are ignored, known or not as XENFEAT names.
        assert_eq!(
            features("no_such_feature|dom0|highmem_assist"),
            Ok((1 << 11, 0))
        );
        // Exact, case-sensitive; no trimming.
        assert_eq!(features("Dom0| dom0|dom0 "), Ok((0, 0)));
        // Empty tokens are ignored.
        assert_eq!(features("||dom0||"), Ok((1 << 11, 0)));
        assert_eq!(features(""), Ok((0, 0)));
        // An unknown required name is an error naming it; a lone `!` is an unknown name "".
        assert_eq!(
            features("dom0|!no_such_feature").unwrap_err().as_bytes(),
            b"no_such_feature"
        );
        assert_eq!(features("!").unwrap_err().as_bytes(), b"");
        // A required XENFEAT name libelf does not know is an error too.
        assert_eq!(
            features("!highmem_assist").unwrap_err().as_bytes(),
            b"highmem_assist"
        );
    }

    #[test]
    fn features_tokens_are_cut_at_63_bytes() {
        // 63 bytes: a token of its own, the `|` then starts an empty token.
        let long = "x".repeat(63);
        let s = [long.as_str(), "|dom0"].concat();
        let tokens: Vec<FeatureToken> = FeatureTokens::new(s.as_bytes()).collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!((tokens[0].name.len(), tokens[0].cut), (63, true));
        assert_eq!((tokens[1].start, tokens[1].name), (63, &b""[..]));
        assert_eq!((tokens[2].start, tokens[2].name), (64, &b"dom0"[..]));
        assert_eq!(features(&s), Ok((1 << 11, 0)));
        // 67 bytes ending in "dom0": the last four bytes are read as the next token.
        let s = ["y".repeat(63), "dom0".into()].concat();
        let tokens: Vec<FeatureToken> = FeatureTokens::new(s.as_bytes()).collect();
        assert!(tokens[0].cut);
        assert_eq!(tokens[1].name, b"dom0");
        assert_eq!(features(&s), Ok((1 << 11, 0)));
        // A required token cut at 63: the error names the 62 bytes after `!`.
        let s = ["!", &"z".repeat(70)].concat();
        assert_eq!(
            features(&s).unwrap_err().as_bytes(),
            "z".repeat(62).as_bytes()
        );
        // `!` + 62 bytes + `|`: the `|` still ends it.
        let s = ["!", &"z".repeat(61), "|dom0"].concat();
        assert_eq!(features(&s).unwrap_err().as_bytes().len(), 61);
    }

    #[test]
    fn xen_4_1_case_parses_with_bit_8() {
        // The string Linux once put in FEATURES: current libelf knows all three names.
        let text = "!writable_page_tables|pae_pgdir_above_4gb|hvm_callback_vector";
        for class in BOTH {
            let img = Elf::new(class)
                .segment(&[xen(XenNoteType::Features, &cstr(text))])
                .build();
            let s = summary(&img).unwrap();
            assert_eq!(s.supported, FeatureSet(1 | 1 << 4 | 1 << 8), "{class}");
            assert_eq!(s.required, FeatureSet(1), "{class}");
            assert_eq!(
                s.supported.to_string(),
                "0x00000111 writable_page_tables, pae_pgdir_above_4gb, hvm_callback_vector"
            );
        }
        // hvm_callback_vector is outside the names the first libelf (Xen 4.1) knew.
        let bit = feature_bit(b"hvm_callback_vector").unwrap();
        assert_eq!(bit, 8);
        assert_eq!(ORIGINAL_LIBELF_FEATURE_BITS & (1 << bit), 0);
        assert_ne!(LIBELF_FEATURE_BITS & (1 << bit), 0);
    }

    #[test]
    fn unknown_required_feature_fails_naming_it() {
        for class in BOTH {
            let img = Elf::new(class)
                .segment(&[
                    xen(XenNoteType::Phys32Entry, &5u32.to_le_bytes()),
                    xen(XenNoteType::Features, &cstr("!no_such_feature")),
                    xen(XenNoteType::Phys32Entry, &6u32.to_le_bytes()),
                ])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let err = image.xen_summary().unwrap_err();
            let NotesError::UnknownRequiredFeature {
                index,
                name,
                offset,
            } = err
            else {
                panic!("{err:?}");
            };
            assert_eq!((index, name.as_bytes()), (1, &b"no_such_feature"[..]));
            assert!(offset > 0);
            let msg = err.to_string();
            assert!(msg.contains("`no_such_feature`"), "{msg}");
            assert!(msg.contains("note 1 (FEATURES)"), "{msg}");
            // The walk stops at the rejected note.
            let walked: Vec<_> = image.xen_notes().collect();
            assert_eq!(walked.len(), 2);
            assert!(walked[1].is_err());
        }
    }

    #[test]
    fn strings_end_at_a_nul_before_the_end_of_their_segment_within_libelf_limit() {
        // Linux's FEATURES descriptor is the bare 41-byte string: the padding's zero ends it.
        let text = b"!writable_page_tables|pae_pgdir_above_4gb";
        assert_eq!(text.len(), 41);
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                xen(XenNoteType::Features, text),
                xen(XenNoteType::GuestOs, b"linux"),
            ])
            .build();
        let image = ElfImage::parse(&img).unwrap();
        let values: Vec<XenValue> = image.xen_notes().map(|n| n.unwrap().value()).collect();
        assert_eq!(
            values,
            [
                XenValue::Features {
                    text,
                    supported: FeatureSet(0x11),
                    required: FeatureSet(1)
                },
                XenValue::String(b"linux")
            ]
        );
        // A string running to the end of the segment with no NUL: an error naming the note.
        let mut last = xen(XenNoteType::GuestOs, b"linu");
        last.extend_from_slice(b"x");
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[xen(XenNoteType::Loader, b"generic\0"), last])
            .build();
        let err = summary(&img).unwrap_err();
        assert!(
            matches!(
                err,
                NotesError::UnterminatedString {
                    index: 1,
                    note_type: XenNoteType::GuestOs,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("Xen note 1 (GUEST_OS)"), "{err}");
        // libelf's limit: 4096 bytes and a NUL pass, 4097 do not.
        let ok = vec![b'a'; MAX_STRING_LEN];
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[xen(XenNoteType::Loader, &[ok.clone(), vec![0]].concat())])
            .build();
        assert_eq!(summary(&img).unwrap().xen_notes, 1);
        // Issue 19, 2d: 4097 bytes are "excessively long": libelf skips the note (still a Xen
        // note) and boots. This image was rejected before.
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                xen(XenNoteType::Loader, &[ok.clone(), vec![b'a', 0]].concat()),
                xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes()),
            ])
            .build();
        let s = summary(&img).unwrap();
        assert_eq!((s.xen_notes, s.strings_too_long), (2, 1));
        assert_eq!(s.phys32_entry, Some(0x10_0000));
        let image = ElfImage::parse(&img).unwrap();
        assert_eq!(
            image.xen_notes().next().unwrap().unwrap().value(),
            XenValue::StringTooLong
        );
        // An over-long FEATURES string is never tokenised: the unknown `!name` in it requires
        // nothing and rejects nothing.
        let long_features = [b"!no_such_feature|".to_vec(), ok, vec![0]].concat();
        let img = Elf::new(ElfClass::Elf32)
            .segment(&[xen(XenNoteType::Features, &long_features)])
            .build();
        let s = summary(&img).unwrap();
        assert_eq!((s.required, s.supported), (FeatureSet(0), FeatureSet(0)));
        assert_eq!(s.strings_too_long, 1);
        // Non-Xen notes are never decoded, so their strings may be anything.
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[note(b"GNU", 6, b"linu")])
            .build();
        assert_eq!(summary(&img).unwrap().xen_notes, 0);
    }

    #[test]
    fn truncated_notes_are_errors_with_place() {
        let good = xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes());
        for class in BOTH {
            // A descriptor size past the segment's end.
            let mut bad = xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes());
            bad[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
            let img = Elf::new(class).segment(&[good.clone(), bad]).build();
            let image = ElfImage::parse(&img).unwrap();
            let all: Vec<_> = image.notes().collect();
            assert_eq!(all.len(), 2);
            let err = all[1].unwrap_err();
            assert!(
                matches!(err, NotesError::TruncatedNote { index: 1, available: 20, need, .. } if need == 16 + 0xffff_fff0),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("note 1 at offset"), "{err}");
            // A name size of u32::MAX rounds up to 0, as in libelf: the descriptor starts
            // where the name would, so the 4 descriptor bytes read are "Xen\0", and the note
            // still counts as Xen (its C-string name at +12). The last 4 bytes are a short tail.
            let mut odd = good.clone();
            odd[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
            let img = Elf::new(class).segment(&[odd]).build();
            let s = summary(&img).unwrap();
            assert_eq!(s.phys32_entry, Some(u32::from_le_bytes(*b"Xen\0")));
            assert_eq!(s.short_tail.map(|t| t.len), Some(4));
        }
    }

    #[test]
    fn a_descriptor_without_padding_at_the_end_is_read() {
        // Segment ends right after a 2-byte descriptor (no padding): not an error.
        let mut n = xen(XenNoteType::Phys32Entry, &[0x00, 0x10]);
        n.truncate(n.len() - 2);
        let img = Elf::new(ElfClass::Elf32).segment(&[n]).build();
        assert_eq!(summary(&img).unwrap().phys32_entry, Some(0x1000));
    }

    #[test]
    fn headers_and_regions_are_bounds_checked() {
        assert_eq!(ElfImage::parse(b"").unwrap_err(), NotesError::NotElf);
        assert_eq!(ElfImage::parse(b"MZ\0\0").unwrap_err(), NotesError::NotElf);
        assert_eq!(
            ElfImage::parse(b"\x7fELF\x03\x01").unwrap_err(),
            NotesError::UnsupportedClass { class: 3 }
        );
        assert_eq!(
            ElfImage::parse(b"\x7fELF\x02\x02").unwrap_err(),
            NotesError::UnsupportedEncoding { data: 2 }
        );
        assert_eq!(
            ElfImage::parse(b"\x7fELF\x02").unwrap_err(),
            NotesError::UnsupportedEncoding { data: 0 }
        );
        let good = Elf::new(ElfClass::Elf64)
            .segment(&[xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes())])
            .build();
        assert_eq!(
            ElfImage::parse(&good[..63]).unwrap_err(),
            NotesError::TruncatedHeader { len: 63, need: 64 }
        );
        // Program-header table past the end; e_phoff near 2^64.
        let mut bad = good.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            ElfImage::parse(&bad),
            Err(NotesError::TableOutOfBounds {
                table: HeaderTable::Program,
                ..
            })
        ));
        // e_phentsize smaller than an ELF64 program header.
        let mut bad = good.clone();
        bad[54..56].copy_from_slice(&32u16.to_le_bytes());
        assert!(matches!(
            ElfImage::parse(&bad),
            Err(NotesError::BadEntrySize {
                table: HeaderTable::Program,
                entsize: 32,
                need: 56
            })
        ));
        // PT_NOTE's p_filesz past the end of the file (segment 1: after the PT_LOAD).
        let mut bad = good.clone();
        let filesz = 64 + 56 + 32;
        bad[filesz..filesz + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = summary(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                NotesError::RegionOutOfBounds {
                    source: NoteSource::Segment(1),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("PT_NOTE segment 1"), "{err}");
    }

    #[test]
    fn every_prefix_and_byte_flip_is_an_error_or_a_result_never_a_panic() {
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[
                xen(XenNoteType::Features, &cstr("!writable_page_tables|dom0")),
                xen(XenNoteType::Phys32Reloc, &[1; 12]),
                xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes()),
            ])
            .section(&[xen(XenNoteType::GuestOs, &cstr("linux"))])
            .build();
        for len in 0..img.len() {
            if let Ok(image) = ElfImage::parse(&img[..len]) {
                let _ = image.xen_summary();
                let _ = image.notes().count();
            }
        }
        for at in 0..img.len() {
            // One pattern under Miri (no unsafe here; three take 80 s there).
            let flips: &[u8] = if cfg!(miri) {
                &[0xff]
            } else {
                &[0x01, 0x80, 0xff]
            };
            for &flip in flips {
                let mut b = img.clone();
                b[at] ^= flip;
                if let Ok(image) = ElfImage::parse(&b) {
                    let _ = image.xen_summary();
                    for section in image.section_headers() {
                        let _ = image.section_name(&section);
                    }
                }
            }
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "walks 65,537 notes twice: minutes under Miri, and no unsafe here"
    )]
    fn too_many_notes_stop_the_walk() {
        // Issue 19, 2e: libelf marks "too many ELF notes", stops, and keeps what it read
        // (an error before). The entry as note 65,535 is read; as note 65,536 it is not.
        let empty = raw_note(b"", 0, b"");
        let entry = xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes());
        let limit = MAX_TOTAL_NOTES as usize;
        let mut many: Vec<Vec<u8>> = vec![empty; limit - 1];
        many.push(entry.clone());
        let img = Elf::new(ElfClass::Elf32).segment(&many).build();
        let s = summary(&img).unwrap();
        assert_eq!((s.xen_notes, s.phys32_entry), (1, Some(0x10_0000)));
        assert!(!s.note_limit_reached);
        many.insert(0, raw_note(b"", 0, b""));
        let img = Elf::new(ElfClass::Elf32)
            .segment(&many)
            .section(&[entry])
            .build();
        let s = summary(&img).unwrap();
        // Not in the segment, and not from the section either: the count is shared.
        assert_eq!((s.xen_notes, s.phys32_entry), (0, None));
        assert!(s.note_limit_reached);
        let image = ElfImage::parse(&img).unwrap();
        let mut notes = image.notes();
        assert_eq!((&mut notes).count(), limit);
        assert!(notes.note_limit_reached());
    }

    /// Issue 19, 2a: `elf_init` checks `e_phoff + e_phentsize * count > size` for a count of 0
    /// too ("Unable to init ELF"); such images were read before.
    #[test]
    fn an_empty_header_table_past_the_end_of_the_file_is_refused() {
        for class in BOTH {
            let img = Elf::new(class)
                .segment(&[xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes())])
                .build();
            let len = img.len() as u64;
            // e_shoff and e_shnum of this writer's image without sections: 0 and 0.
            let is64 = class == ElfClass::Elf64;
            let (shoff_at, w) = if is64 { (40, 8) } else { (32, 4) };
            for (shoff, ok) in [(len, true), (len + 1, false), (u64::from(u32::MAX), false)] {
                let mut bad = img.clone();
                bad[shoff_at..shoff_at + w].copy_from_slice(&shoff.to_le_bytes()[..w]);
                let parsed = ElfImage::parse(&bad);
                if ok {
                    assert!(parsed.is_ok(), "{class} e_shoff {shoff:#x}");
                } else {
                    assert_eq!(
                        parsed.unwrap_err(),
                        NotesError::TableOutOfBounds {
                            table: HeaderTable::Section,
                            offset: shoff,
                            count: 0,
                            entsize: if is64 { 64 } else { 40 },
                            len,
                        }
                    );
                }
            }
        }
    }

    /// Issue 19, 2b: libelf keeps PHYS32_ENTRY in a `uint32_t` whose unset value is
    /// `UNSET_ADDR32`: low 32 bits of 0xffffffff are no entry (and unset an earlier one).
    #[test]
    fn phys32_entry_of_unset_addr32_is_no_entry() {
        let entry4 = |e: u32| xen(XenNoteType::Phys32Entry, &e.to_le_bytes());
        let entry8 = |e: u64| xen(XenNoteType::Phys32Entry, &e.to_le_bytes());
        for notes in [
            vec![entry4(0xffff_ffff)],
            vec![entry8(0x1_ffff_ffff)],
            vec![entry4(0x10_0000), entry4(0xffff_ffff)],
        ] {
            let img = Elf::new(ElfClass::Elf64).segment(&notes).build();
            let s = summary(&img).unwrap();
            assert_eq!(s.phys32_entry, None, "{notes:x?}");
            assert_eq!(s.xen_notes, notes.len() as u32);
        }
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[entry4(0xffff_ffff), entry8(0x1_ffff_fffe)])
            .build();
        assert_eq!(summary(&img).unwrap().phys32_entry, Some(0xffff_fffe));
    }

    /// Issue 19, 2c: libelf loads a `PT_LOAD` only with one of R, W, X
    /// (`elf_phdr_is_loadable`): an entry in a segment without them is in no loaded segment.
    #[test]
    fn a_load_segment_without_rwx_is_not_loadable() {
        let mut elf = Elf::new(ElfClass::Elf64);
        elf.loads = vec![(0x10_0000, 0x10_0000, 0x1000, 0)];
        let img = elf.build();
        let image = ElfImage::parse(&img).unwrap();
        assert_eq!(image.load_segment_at_paddr(0x10_0000), None);
        assert!(!image.program_header(0).unwrap().is_loadable());
        for flags in [PF_R, PF_W, PF_X] {
            elf.loads = vec![(0x10_0000, 0x10_0000, 0x1000, flags)];
            let img = elf.build();
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(
                image.load_segment_at_paddr(0x10_0000).map(|p| p.paddr),
                Some(0x10_0000)
            );
        }
    }

    /// Issue 19, 2f: libelf rounds `namesz` / `descsz` up in 32 bits, so 0xfffffffd to
    /// 0xffffffff step 0 bytes and the walk goes on. Rejected as truncated before.
    #[test]
    fn sizes_that_round_past_2_pow_32_step_nothing() {
        let entry = xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes());
        for size in [0xffff_fffd_u32, 0xffff_fffe, 0xffff_ffff] {
            // A note whose namesz wraps: its name (read as a C string at +12) is the next
            // note's header, not "Xen"; the next note follows 12 bytes on.
            let mut wrapped_name = Vec::new();
            for v in [size, 0, XenNoteType::Phys32Entry as u32] {
                wrapped_name.extend_from_slice(&v.to_le_bytes());
            }
            // A Xen PHYS32_RELOC whose descsz wraps: libelf reads `descsz >= 4` as true and
            // each value as 0 (`descsz % 4` is not 0); the next note follows 16 bytes on.
            let mut wrapped_desc = Vec::new();
            for v in [4, size, XenNoteType::Phys32Reloc as u32] {
                wrapped_desc.extend_from_slice(&v.to_le_bytes());
            }
            wrapped_desc.extend_from_slice(b"Xen\0");
            for class in BOTH {
                let img = Elf::new(class)
                    .segment(&[wrapped_name.clone(), wrapped_desc.clone(), entry.clone()])
                    .build();
                let s = summary(&img).unwrap();
                assert_eq!(s.xen_notes, 2, "{size:#x}");
                assert_eq!(s.phys32_entry, Some(0x10_0000));
                assert_eq!(
                    s.phys32_reloc,
                    Some(Phys32Reloc {
                        align: Some(0),
                        min: Some(0),
                        max: Some(0)
                    })
                );
                let image = ElfImage::parse(&img).unwrap();
                let notes: Vec<Note> = image.notes().map(Result::unwrap).collect();
                assert_eq!(notes.len(), 3);
                assert_eq!(notes[0].name_field(), b"");
                assert_eq!((notes[1].desc(), notes[1].descsz()), (&[][..], size));
                assert_eq!(notes[2].offset(), notes[1].offset() + 16);
            }
        }
    }

    /// Issue 19, 2g: 4 bytes of padding after the last note of a PT_NOTE: libelf boots it
    /// (rejected as a truncated note before). The bytes are ignored and recorded.
    #[test]
    fn a_tail_shorter_than_a_header_ends_the_region() {
        let entry = xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes());
        for tail in 1..12usize {
            let padded = [entry.clone(), vec![0; tail]].concat();
            let img = Elf::new(ElfClass::Elf64)
                .segment(&[padded])
                .section(&[xen(XenNoteType::GuestOs, b"linux\0")])
                .build();
            let s = summary(&img).unwrap();
            assert_eq!((s.xen_notes, s.phys32_entry), (1, Some(0x10_0000)));
            let image = ElfImage::parse(&img).unwrap();
            let p = image
                .program_headers()
                .find(|p| p.p_type == PT_NOTE)
                .unwrap();
            assert_eq!(
                s.short_tail,
                Some(ShortTail {
                    source: NoteSource::Segment(p.index),
                    offset: p.offset + entry.len() as u64,
                    len: tail as u64,
                })
            );
        }
    }

    #[test]
    fn feature_names_cover_bits_0_to_20() {
        assert_eq!(feature_name(0), Some("writable_page_tables"));
        assert_eq!(feature_name(11), Some("dom0"));
        assert_eq!(feature_name(20), Some("dm_msix_all_writes"));
        assert_eq!(feature_name(21), None);
        assert_eq!(feature_bit(b"ARM_SMCCC_supported"), Some(14));
        assert_eq!(libelf_feature_bit(b"ARM_SMCCC_supported"), None);
        let known: Vec<u32> = (0..32)
            .filter(|&b| LIBELF_FEATURE_BITS & (1 << b) != 0)
            .collect();
        assert_eq!(known, [0, 1, 2, 3, 4, 8, 11]);
        assert_eq!(
            FeatureSet(1 << 31 | 1).to_string(),
            "0x80000001 writable_page_tables, bit 31"
        );
    }

    /// An ELF image written field by field, for the header tests: the ELF header, `data`
    /// right after it, then the program-header table, then the section-header
    /// table. Each table entry is `entry_pad` bytes longer than its class's; the padding and
    /// the fields this module does not read are 0xa5, so a field read at a wrong offset shows.
    #[derive(Clone)]
    struct RawElf {
        class: ElfClass,
        machine: u16,
        entry: u64,
        entry_pad: u16,
        data: Vec<u8>,
        phdrs: Vec<ProgramHeader>,
        shdrs: Vec<SectionHeader>,
        shstrndx: u16,
    }

    impl RawElf {
        fn new(class: ElfClass) -> Self {
            Self {
                class,
                machine: 62,
                entry: 0x10_0000,
                entry_pad: 0,
                data: Vec::new(),
                phdrs: Vec::new(),
                shdrs: Vec::new(),
                shstrndx: 0,
            }
        }

        fn is64(&self) -> bool {
            self.class == ElfClass::Elf64
        }

        /// File offset of `data`: the ELF header's size (52 or 64 bytes).
        fn data_at(&self) -> u64 {
            if self.is64() {
                64
            } else {
                52
            }
        }

        /// (e_phoff, e_phentsize, e_shoff, e_shentsize) as `build` lays them out.
        fn layout(&self) -> (u64, u16, u64, u16) {
            let (phsize, shsize) = if self.is64() { (56, 64) } else { (32, 40) };
            let phentsize = phsize + self.entry_pad;
            let shentsize = shsize + self.entry_pad;
            let phoff = self.data_at() + self.data.len() as u64;
            let shoff = phoff + u64::from(phentsize) * self.phdrs.len() as u64;
            (phoff, phentsize, shoff, shentsize)
        }

        fn build(&self) -> Vec<u8> {
            let is64 = self.is64();
            let w = if is64 { 8 } else { 4 };
            let (phoff, phentsize, shoff, shentsize) = self.layout();
            let len = shoff + u64::from(shentsize) * self.shdrs.len() as u64;
            let mut out = vec![0xa5u8; len as usize];
            let put = |out: &mut Vec<u8>, at: u64, v: u64, n: usize| {
                let at = at as usize;
                out[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            };
            out[..16].fill(0);
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = if is64 { 2 } else { 1 };
            out[5] = 1;
            out[6] = 1;
            put(&mut out, 16, 2, 2);
            put(&mut out, 18, u64::from(self.machine), 2);
            put(&mut out, 20, 1, 4);
            put(&mut out, 24, self.entry, w);
            put(&mut out, 24 + w as u64, phoff, w);
            put(&mut out, 24 + 2 * w as u64, shoff, w);
            // e_flags stays 0xa5a5a5a5; then e_ehsize and the table fields.
            let halves = 28 + 3 * w as u64;
            for (k, v) in [
                self.data_at(),
                u64::from(phentsize),
                self.phdrs.len() as u64,
                u64::from(shentsize),
                self.shdrs.len() as u64,
                u64::from(self.shstrndx),
            ]
            .into_iter()
            .enumerate()
            {
                put(&mut out, halves + 2 * k as u64, v, 2);
            }
            let data_at = self.data_at() as usize;
            out[data_at..data_at + self.data.len()].copy_from_slice(&self.data);
            for (i, ph) in self.phdrs.iter().enumerate() {
                let at = phoff + u64::from(phentsize) * i as u64;
                put(&mut out, at, u64::from(ph.p_type), 4);
                if is64 {
                    put(&mut out, at + 4, u64::from(ph.flags), 4);
                    let words = [ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz, ph.align];
                    for (k, v) in words.into_iter().enumerate() {
                        put(&mut out, at + 8 + 8 * k as u64, v, 8);
                    }
                } else {
                    let words = [ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz];
                    for (k, v) in words.into_iter().enumerate() {
                        put(&mut out, at + 4 + 4 * k as u64, v, 4);
                    }
                    put(&mut out, at + 24, u64::from(ph.flags), 4);
                    put(&mut out, at + 28, ph.align, 4);
                }
            }
            for (i, sh) in self.shdrs.iter().enumerate() {
                let at = shoff + u64::from(shentsize) * i as u64;
                put(&mut out, at, u64::from(sh.name), 4);
                put(&mut out, at + 4, u64::from(sh.sh_type), 4);
                // sh_addr, sh_offset, sh_size follow sh_flags (one word).
                for (k, v) in [sh.addr, sh.offset, sh.size].into_iter().enumerate() {
                    put(&mut out, at + 8 + w as u64 * (1 + k as u64), v, w);
                }
            }
            out
        }
    }

    /// A program header with every field given (`words`: offset, vaddr, paddr, filesz,
    /// memsz, align).
    fn phdr(index: u16, p_type: u32, flags: u32, words: [u64; 6]) -> ProgramHeader {
        let [offset, vaddr, paddr, filesz, memsz, align] = words;
        ProgramHeader {
            index,
            p_type,
            flags,
            offset,
            vaddr,
            paddr,
            filesz,
            memsz,
            align,
        }
    }

    /// A section header with every field given.
    fn shdr(
        index: u16,
        name: u32,
        sh_type: u32,
        addr: u64,
        offset: u64,
        size: u64,
    ) -> SectionHeader {
        SectionHeader {
            index,
            name,
            sh_type,
            addr,
            offset,
            size,
        }
    }

    #[test]
    fn every_header_field_is_read_from_its_place_in_both_classes() {
        for class in BOTH {
            // Every value differs from every other and from the 0xa5 filler, and fits the
            // class's word.
            let word = |k: u64| match class {
                ElfClass::Elf32 => 0x5eed_0000 + 0x101 * k,
                ElfClass::Elf64 => 0x5eed_0000_0000_0000 + 0x1_0000_0101 * k,
            };
            let mut elf = RawElf::new(class);
            elf.machine = 0x3e3e;
            elf.entry = word(0);
            // Entries 8 bytes longer than the class's: each is found at e_phoff + i * e_phentsize.
            elf.entry_pad = 8;
            elf.phdrs = vec![
                phdr(0, PT_LOAD, PF_R | PF_X, [1, 2, 3, 4, 5, 6].map(word)),
                phdr(1, 0x6474_e551, PF_R | PF_W, [7, 8, 9, 10, 11, 12].map(word)),
            ];
            elf.shdrs = vec![
                shdr(0, 0, 0, 0, 0, 0),
                shdr(1, 0x0b0b_0b0b, SHT_NOTE, word(13), word(14), word(15)),
                shdr(2, 0x0c0c_0c0c, 3, word(16), word(17), word(18)),
            ];
            let img = elf.build();
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(image.bytes(), &img[..]);
            assert_eq!(image.class(), class);
            assert_eq!(
                (image.machine(), image.entry()),
                (0x3e3e, word(0)),
                "{class}"
            );
            for ph in &elf.phdrs {
                assert_eq!(image.program_header(ph.index), Some(*ph), "{class}");
            }
            assert_eq!(image.program_header(2), None);
            assert_eq!(image.program_headers().collect::<Vec<_>>(), elf.phdrs);
            for sh in &elf.shdrs {
                assert_eq!(image.section_header(sh.index), Some(*sh), "{class}");
            }
            assert_eq!(image.section_header(3), None);
            assert_eq!(image.section_headers().collect::<Vec<_>>(), elf.shdrs);
        }
    }

    #[test]
    fn section_names_come_from_the_string_table_e_shstrndx_names() {
        for class in BOTH {
            let mut elf = RawElf::new(class);
            // The table is the first 27 bytes: "no-nul" runs to its end, and the NUL after
            // it in the file is outside the table.
            elf.data = b"\0.note.Xen\0.shstrtab\0no-nul\0".to_vec();
            let table_at = elf.data_at();
            elf.shdrs = vec![
                shdr(0, 0, 0, 0, 0, 0),
                shdr(1, 1, SHT_NOTE, 0, 0, 0),
                shdr(2, 11, 3, 0, table_at, 27),
                shdr(3, 21, 1, 0, 0, 0),
                shdr(4, 28, 1, 0, 0, 0),
            ];
            elf.shstrndx = 2;
            let img = elf.build();
            let image = ElfImage::parse(&img).unwrap();
            let names: Vec<Option<&[u8]>> = image
                .section_headers()
                .map(|s| image.section_name(&s))
                .collect();
            assert_eq!(
                names,
                [
                    Some(&b""[..]),
                    Some(b".note.Xen"),
                    Some(b".shstrtab"),
                    None,
                    None
                ],
                "{class}"
            );
            // e_shstrndx past the section table; a table outside the file; a table too short
            // to hold the name's NUL: no name.
            let len = img.len() as u64;
            for (shstrndx, table) in [(5, (table_at, 27)), (2, (len - 4, 5)), (2, (table_at, 5))] {
                let mut elf = elf.clone();
                elf.shstrndx = shstrndx;
                (elf.shdrs[2].offset, elf.shdrs[2].size) = table;
                let img = elf.build();
                let image = ElfImage::parse(&img).unwrap();
                let section = image.section_header(1).unwrap();
                assert_eq!(
                    image.section_name(&section),
                    None,
                    "{class} {shstrndx} {table:?}"
                );
            }
        }
    }

    #[test]
    fn an_image_of_only_its_elf_header_parses_and_one_byte_less_does_not() {
        for (class, need) in [(ElfClass::Elf32, 52u64), (ElfClass::Elf64, 64)] {
            // No header tables: e_phoff and e_shoff are the file's end, which elf_init allows.
            let img = RawElf::new(class).build();
            assert_eq!(img.len() as u64, need);
            let image = ElfImage::parse(&img).unwrap();
            assert_eq!(image.notes().count(), 0);
            assert_eq!(image.xen_summary().unwrap(), XenSummary::default());
            let short = &img[..img.len() - 1];
            assert_eq!(
                ElfImage::parse(short).unwrap_err(),
                NotesError::TruncatedHeader {
                    len: need - 1,
                    need
                }
            );
        }
    }

    /// The docs' table: libelf reads entries of any size; this reader refuses entries smaller
    /// than the class's, but only when the table has any.
    #[test]
    fn header_table_entries_smaller_than_the_class_s_are_refused_when_there_are_any() {
        for class in BOTH {
            let is64 = class == ElfClass::Elf64;
            let (phsize, shsize) = if is64 { (56u16, 64u16) } else { (32, 40) };
            let (phentsize_at, shentsize_at) = if is64 { (54, 58) } else { (42, 46) };
            let mut elf = RawElf::new(class);
            elf.phdrs = vec![phdr(0, PT_LOAD, PF_R, [0; 6])];
            elf.shdrs = vec![shdr(0, 0, 0, 0, 0, 0)];
            let img = elf.build();
            assert!(ElfImage::parse(&img).is_ok());
            for (table, at, need) in [
                (HeaderTable::Program, phentsize_at, phsize),
                (HeaderTable::Section, shentsize_at, shsize),
            ] {
                let mut bad = img.clone();
                bad[at..at + 2].copy_from_slice(&(need - 1).to_le_bytes());
                let err = ElfImage::parse(&bad).unwrap_err();
                assert_eq!(
                    err,
                    NotesError::BadEntrySize {
                        table,
                        entsize: need - 1,
                        need
                    }
                );
                assert_eq!(
                    err.to_string(),
                    std::format!("{table} entries are {} bytes, fewer than {need}", need - 1)
                );
            }
            // Tables without entries: their entry sizes are not looked at.
            let mut empty = RawElf::new(class).build();
            for at in [phentsize_at, shentsize_at] {
                empty[at..at + 2].copy_from_slice(&0u16.to_le_bytes());
            }
            assert!(ElfImage::parse(&empty).is_ok(), "{class}");
        }
        assert_eq!(HeaderTable::Program.to_string(), "program-header table");
        assert_eq!(HeaderTable::Section.to_string(), "section-header table");
    }

    #[test]
    fn a_header_table_must_end_within_the_file() {
        for class in BOTH {
            let (phsize, shsize) = if class == ElfClass::Elf64 {
                (56, 64)
            } else {
                (32, 40)
            };
            // Only a program-header table, ending at the file's end: it fits.
            let mut elf = RawElf::new(class);
            elf.phdrs = vec![phdr(0, PT_LOAD, PF_R, [0; 6])];
            let img = elf.build();
            let (phoff, ..) = elf.layout();
            assert_eq!(phoff + phsize, img.len() as u64);
            assert!(ElfImage::parse(&img).is_ok());
            // One byte less: the table passes the end.
            let short = &img[..img.len() - 1];
            assert_eq!(
                ElfImage::parse(short).unwrap_err(),
                NotesError::TableOutOfBounds {
                    table: HeaderTable::Program,
                    offset: phoff,
                    count: 1,
                    entsize: phsize as u16,
                    len: img.len() as u64 - 1,
                }
            );
            // The same for a section-header table.
            let mut elf = RawElf::new(class);
            elf.shdrs = vec![shdr(0, 0, 0, 0, 0, 0)];
            let img = elf.build();
            let (_, _, shoff, _) = elf.layout();
            assert_eq!(shoff + shsize, img.len() as u64);
            assert!(ElfImage::parse(&img).is_ok());
            let short = &img[..img.len() - 1];
            let err = ElfImage::parse(short).unwrap_err();
            assert_eq!(
                err,
                NotesError::TableOutOfBounds {
                    table: HeaderTable::Section,
                    offset: shoff,
                    count: 1,
                    entsize: shsize as u16,
                    len: img.len() as u64 - 1,
                }
            );
            assert_eq!(
                err.to_string(),
                std::format!(
                    "section-header table at offset {shoff:#x} (1 entries of {shsize} bytes) does not fit in the {}-byte file",
                    img.len() - 1
                )
            );
        }
        // The docs' table: an end wrapping past 2^64 (2^64 - 56 + 56) is refused, where
        // libelf's uint64_t sum passes.
        let mut elf = RawElf::new(ElfClass::Elf64);
        elf.phdrs = vec![phdr(0, PT_LOAD, PF_R, [0; 6])];
        let mut img = elf.build();
        let phoff = u64::MAX - 55;
        img[32..40].copy_from_slice(&phoff.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&img).unwrap_err(),
            NotesError::TableOutOfBounds {
                table: HeaderTable::Program,
                offset: phoff,
                count: 1,
                entsize: 56,
                len: img.len() as u64,
            }
        );
    }

    #[test]
    fn only_pt_note_segments_and_sht_note_sections_inside_the_file_are_walked() {
        let entry = xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes());
        for class in BOTH {
            // Code (a PT_LOAD at a non-zero offset, as linkers lay it out), then the notes.
            let mut elf = RawElf::new(class);
            let code = [0x90u8; 16];
            elf.data = [&code[..], &entry].concat();
            let at = elf.data_at();
            let (code_len, n) = (code.len() as u64, entry.len() as u64);
            elf.phdrs = vec![
                phdr(
                    0,
                    PT_LOAD,
                    PF_R | PF_X,
                    [at, 0x10_0000, 0x10_0000, code_len, code_len, 16],
                ),
                phdr(1, PT_NOTE, PF_R, [at + code_len, 0, 0, n, n, 4]),
            ];
            let img = elf.build();
            let len = img.len() as u64;
            let image = ElfImage::parse(&img).unwrap();
            let sources: Vec<NoteSource> = image.notes().map(|n| n.unwrap().source()).collect();
            assert_eq!(sources, [NoteSource::Segment(1)], "{class}");
            assert_eq!(summary(&img).unwrap().phys32_entry, Some(0x10_0000));
            // The PT_NOTE running one byte past the file's end (not wrapping): refused.
            elf.phdrs[1].filesz = len - (at + code_len) + 1;
            assert_eq!(
                summary(&elf.build()).unwrap_err(),
                NotesError::RegionOutOfBounds {
                    source: NoteSource::Segment(1),
                    offset: at + code_len,
                    size: len - (at + code_len) + 1,
                    len,
                }
            );
            // The same notes in an SHT_NOTE section (no PT_NOTE): read, and refused one byte
            // longer.
            elf.phdrs.truncate(1);
            elf.shdrs = vec![
                shdr(0, 0, 0, 0, 0, 0),
                shdr(1, 0, SHT_NOTE, 0, at + code_len, n),
            ];
            let img = elf.build();
            let len = img.len() as u64;
            let sources: Vec<NoteSource> = ElfImage::parse(&img)
                .unwrap()
                .notes()
                .map(|n| n.unwrap().source())
                .collect();
            assert_eq!(sources, [NoteSource::Section(1)], "{class}");
            elf.shdrs[1].size = len - (at + code_len) + 1;
            let err = summary(&elf.build()).unwrap_err();
            assert_eq!(
                err,
                NotesError::RegionOutOfBounds {
                    source: NoteSource::Section(1),
                    offset: at + code_len,
                    size: len - (at + code_len) + 1,
                    len,
                }
            );
            assert_eq!(
                err.to_string(),
                std::format!(
                    "SHT_NOTE section 1 at offset {:#x} of {:#x} bytes does not fit in the {len}-byte file",
                    at + code_len,
                    len - (at + code_len) + 1
                )
            );
        }
    }

    /// The note segment of an `Elf` image (its first PT_NOTE).
    fn note_segment(image: &ElfImage<'_>) -> ProgramHeader {
        image
            .program_headers()
            .find(|p| p.p_type == PT_NOTE)
            .unwrap()
    }

    #[test]
    fn a_note_s_fields_are_those_its_header_gives() {
        for class in BOTH {
            let gnu = note(b"GNU", 3, &[0xab; 20]);
            let img = Elf::new(class)
                .segment(&[gnu, xen(XenNoteType::GuestOs, b"linux\0")])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let p = note_segment(&image);
            let notes: Vec<Note> = image.notes().map(Result::unwrap).collect();
            let n = notes[0];
            assert_eq!(
                (n.index(), n.source(), n.offset()),
                (0, NoteSource::Segment(p.index), p.offset)
            );
            assert_eq!((n.name_field(), n.owner()), (&b"GNU\0"[..], &b"GNU"[..]));
            assert_eq!((n.n_type(), n.descsz(), n.desc()), (3, 20, &[0xab; 20][..]));
            assert!(!n.is_xen());
            // The tail: the descriptor and the rest of the segment (the Xen note).
            let end = (p.offset + p.filesz) as usize;
            assert_eq!(n.tail(), &img[p.offset as usize + 16..end]);
            let x = notes[1];
            assert_eq!((x.index(), x.offset()), (1, p.offset + 36));
            assert_eq!((x.name_field(), x.n_type()), (&b"Xen\0"[..], 6));
            assert_eq!((x.desc(), x.tail()), (&b"linux\0"[..], &img[end - 8..end]));
            assert!(x.is_xen());
        }
    }

    /// The docs' table: a note running past its segment is refused, even where the file goes
    /// on (libelf steps by the sizes alone and reads on).
    #[test]
    fn a_note_running_past_its_segment_is_truncated_though_the_file_goes_on() {
        for class in BOTH {
            // A PHYS32_ENTRY whose header says 8 descriptor bytes where its segment holds 4;
            // the section's note follows in the file.
            let mut long = xen(XenNoteType::Phys32Entry, &1u32.to_le_bytes());
            long[4..8].copy_from_slice(&8u32.to_le_bytes());
            let img = Elf::new(class)
                .segment(&[long])
                .section(&[xen(XenNoteType::GuestOs, b"linux\0")])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let p = note_segment(&image);
            let err = NotesError::TruncatedNote {
                index: 0,
                source: NoteSource::Segment(p.index),
                offset: p.offset,
                need: 12 + 4 + 8,
                available: 20,
            };
            assert_eq!(image.notes().next(), Some(Err(err)));
            assert_eq!(image.xen_summary(), Err(err));
        }
    }

    /// The docs' table: a string's NUL is looked for up to its segment's end (libelf reads on
    /// through the file).
    #[test]
    fn a_string_s_nul_is_looked_for_only_up_to_the_end_of_its_segment() {
        for class in BOTH {
            // "linu" ends the segment; the section's note header (zero bytes) follows.
            let loader = xen(XenNoteType::Loader, b"generic\0");
            let img = Elf::new(class)
                .segment(&[loader.clone(), xen(XenNoteType::GuestOs, b"linu")])
                .section(&[xen(XenNoteType::GuestOs, b"linux\0")])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let p = note_segment(&image);
            assert_eq!(
                image.xen_summary(),
                Err(NotesError::UnterminatedString {
                    index: 1,
                    offset: p.offset + loader.len() as u64,
                    note_type: XenNoteType::GuestOs,
                })
            );
            // MAX_STRING_LEN bytes without a NUL, up to the segment's end: unterminated too.
            // One more (then the zero padding): libelf's "excessively long", skipped.
            for (len, want) in [
                (
                    MAX_STRING_LEN,
                    Err(NotesError::UnterminatedString {
                        index: 0,
                        offset: p.offset,
                        note_type: XenNoteType::Loader,
                    }),
                ),
                (MAX_STRING_LEN + 1, Ok(XenValue::StringTooLong)),
            ] {
                let img = Elf::new(class)
                    .segment(&[xen(XenNoteType::Loader, &vec![b'a'; len])])
                    .section(&[xen(XenNoteType::GuestOs, b"linux\0")])
                    .build();
                let image = ElfImage::parse(&img).unwrap();
                assert_eq!(note_segment(&image).offset, p.offset);
                let first = image.xen_notes().next().unwrap();
                assert_eq!(first.map(|n| n.value()), want, "{class} {len}");
            }
        }
    }

    #[test]
    fn a_note_of_only_a_header_at_the_end_of_its_segment_is_a_note() {
        for class in BOTH {
            let bare = raw_note(b"", 7, b"");
            assert_eq!(bare.len(), 12);
            let img = Elf::new(class)
                .segment(&[
                    xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes()),
                    bare,
                ])
                .build();
            let image = ElfImage::parse(&img).unwrap();
            let notes: Vec<Note> = image.notes().map(Result::unwrap).collect();
            assert_eq!(notes.len(), 2, "{class}");
            let n = notes[1];
            assert_eq!((n.index(), n.n_type(), n.descsz()), (1, 7, 0));
            assert_eq!(
                (n.name_field(), n.desc(), n.tail()),
                (&[][..], &[][..], &[][..])
            );
            let s = image.xen_summary().unwrap();
            assert_eq!((s.xen_notes, s.phys32_entry), (1, Some(0x10_0000)));
            assert_eq!(s.short_tail, None);
        }
    }

    /// The docs' table: 1 to 11 bytes after a region's last note count as one note (libelf
    /// walks them as one); the first such tail is kept.
    #[test]
    fn bytes_too_few_for_a_header_count_as_one_note_and_the_first_such_tail_is_kept() {
        let guest = xen(XenNoteType::GuestOs, b"linux\0");
        let entry = xen(XenNoteType::Phys32Entry, &0x10_0000u32.to_le_bytes());
        let img = Elf::new(ElfClass::Elf64)
            .segment(&[guest.clone(), vec![0; 4]])
            .segment(&[entry, vec![0; 8]])
            .build();
        let image = ElfImage::parse(&img).unwrap();
        let segments: Vec<ProgramHeader> = image
            .program_headers()
            .filter(|p| p.p_type == PT_NOTE)
            .collect();
        let mut walk = image.notes();
        let notes: Vec<(u32, NoteSource)> = walk
            .by_ref()
            .map(|n| n.map(|n| (n.index(), n.source())).unwrap())
            .collect();
        assert_eq!(
            notes,
            [
                (0, NoteSource::Segment(segments[0].index)),
                (2, NoteSource::Segment(segments[1].index))
            ]
        );
        assert_eq!(
            walk.short_tail(),
            Some(ShortTail {
                source: NoteSource::Segment(segments[0].index),
                offset: segments[0].offset + guest.len() as u64,
                len: 4,
            })
        );
    }

    /// The docs' table: an entry exactly at `p_paddr + p_memsz` is outside the segment
    /// (libelf's check is off by one).
    #[test]
    fn a_segment_holds_the_physical_addresses_from_its_start_up_to_its_end_exclusive() {
        let seg = |paddr, memsz| phdr(0, PT_LOAD, PF_R, [0, 0, paddr, 0, memsz, 0x1000]);
        let cases = [
            (seg(0x10_0000, 0x2000), 0xf_ffff, false),
            (seg(0x10_0000, 0x2000), 0x10_0000, true),
            (seg(0x10_0000, 0x2000), 0x10_1fff, true),
            (seg(0x10_0000, 0x2000), 0x10_2000, false),
            (seg(0x10_0000, 0x2000), 0, false),
            (seg(0x10_0000, 0x2000), u64::MAX, false),
            // Empty: holds nothing, not even its start.
            (seg(0x10_0000, 0), 0x10_0000, false),
            // Passing 2^64: ends there.
            (seg(u64::MAX - 0xfff, 0x2000), u64::MAX - 0x1000, false),
            (seg(u64::MAX - 0xfff, 0x2000), u64::MAX - 0xfff, true),
            (seg(u64::MAX - 0xfff, 0x2000), u64::MAX, true),
            (seg(u64::MAX - 0xfff, 0x2000), 0, false),
        ];
        for (p, paddr, inside) in cases {
            assert_eq!(
                p.contains_paddr(paddr),
                inside,
                "{:#x}+{:#x}: {paddr:#x}",
                p.paddr,
                p.memsz
            );
        }
        // In an image: only loadable segments count, the first that holds the address.
        let mut elf = RawElf::new(ElfClass::Elf64);
        elf.phdrs = vec![
            phdr(0, PT_NOTE, PF_R, [0, 0, 0x20_0000, 0, 0x1000, 4]),
            phdr(
                1,
                PT_LOAD,
                PF_R | PF_X,
                [0, 0x10_0000, 0x10_0000, 0, 0x1000, 0x1000],
            ),
            phdr(
                2,
                PT_LOAD,
                PF_W,
                [0, 0x30_0000, 0x30_0000, 0, 0x1000, 0x1000],
            ),
            phdr(
                3,
                PT_LOAD,
                PF_R,
                [0, 0x30_0000, 0x30_0000, 0, 0x1000, 0x1000],
            ),
        ];
        let img = elf.build();
        let image = ElfImage::parse(&img).unwrap();
        let found = |paddr| image.load_segment_at_paddr(paddr).map(|p| p.index);
        assert_eq!(found(0x20_0000), None);
        assert_eq!(found(0x10_0fff), Some(1));
        assert_eq!(found(0x30_0800), Some(2));
        assert_eq!(found(0x40_0000), None);
        assert!(!image.program_header(0).unwrap().is_loadable());
    }

    #[test]
    fn a_feature_set_holds_exactly_its_bits() {
        let set = FeatureSet(1 << 31 | 1 << 11 | 1);
        for bit in 0..32 {
            assert_eq!(set.contains(bit), [0, 11, 31].contains(&bit), "bit {bit}");
        }
        // Bits past 31 are in no set (and no shift overflows).
        for bit in [32, 33, u32::MAX] {
            assert!(!FeatureSet(u32::MAX).contains(bit), "bit {bit}");
        }
        assert!(FeatureSet(0).is_empty());
        assert!(!set.is_empty());
        assert!(!FeatureSet(1 << 31).is_empty());
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [
                (0, Some("writable_page_tables")),
                (11, Some("dom0")),
                (31, None)
            ]
        );
        assert_eq!(FeatureSet(0).iter().count(), 0);
    }

    #[test]
    fn names_and_bytes_are_shown_escaped() {
        assert_eq!(ElfClass::Elf32.to_string(), "ELF32");
        assert_eq!(ElfClass::Elf64.to_string(), "ELF64");
        assert_eq!(NoteSource::Section(3).to_string(), "SHT_NOTE section 3");
        assert_eq!(XenNoteType::Phys32Entry.to_string(), "PHYS32_ENTRY");
        // Printable ASCII and the space as they are, anything else as \xNN.
        let bytes = b"a b~\x00\x1f\x7f\xff";
        let shown = r"a b~\x00\x1f\x7f\xff";
        assert_eq!(Escaped(bytes).to_string(), shown);
        assert_eq!(
            std::format!("{:?}", Escaped(bytes)),
            std::format!("\"{shown}\"")
        );
        // A feature name in an error, as libelf read it.
        let name = features("dom0|!a b\x01").unwrap_err();
        assert_eq!(name.as_bytes(), b"a b\x01");
        assert_eq!(name.to_string(), r"a b\x01");
        assert_eq!(std::format!("{name:?}"), r#""a b\x01""#);
    }

    #[test]
    fn a_last_feature_token_of_exactly_63_bytes_is_whole() {
        let token = |start, name, required, cut| FeatureToken {
            start,
            name,
            required,
            cut,
        };
        let x63 = "x".repeat(63);
        let tokens: Vec<FeatureToken> = FeatureTokens::new(x63.as_bytes()).collect();
        assert_eq!(tokens, [token(0, x63.as_bytes(), false, false)]);
        // 64 bytes: cut at 63, the last byte a token of its own.
        let x64 = "x".repeat(64);
        let tokens: Vec<FeatureToken> = FeatureTokens::new(x64.as_bytes()).collect();
        assert_eq!(
            tokens,
            [
                token(0, x63.as_bytes(), false, true),
                token(63, b"x", false, false)
            ]
        );
        // `!` and 62 bytes: 63 in all, whole, required.
        let required = ["!", &"x".repeat(62)].concat();
        let tokens: Vec<FeatureToken> = FeatureTokens::new(required.as_bytes()).collect();
        assert_eq!(tokens, [token(0, &x63.as_bytes()[..62], true, false)]);
    }
}
