//! The two 32-bit entries (PVH and multiboot2), the code they share up to long mode at the
//! high virtual address, the GDT, the boot page tables and the stack. All of it lies inside
//! the image (`__image_start..__image_end`), so it is what reloc-core copies and rebases.
//!
//! Page tables (all 4 KiB-aligned statics in `.data.pagetables`, prebuilt by the assembler
//! with `symbol - KERNEL_VIRT_OFFSET` expressions, except the image map, which the entry code
//! fills because only the linker knows the image size):
//! - `pml4[0]` -> `l3_bootmap[0]` -> `l2_bootmap`: identity map of physical 0-1 GiB (2 MiB
//!   leaves), for the instructions right after paging is enabled;
//! - `pml4[256]` -> `l3_directmap[0..4]` -> `l2_directmap` (4 pages): physical 0-4 GiB;
//! - `pml4[511]` -> `l3_xenmap[510]` -> `l2_xenmap`: the image, 2 MiB global leaves from
//!   slot 1 (Xen's layout, at the kernel code model's address).
//!
//! With 5-level paging (LA57) CR3 points at `pml5` instead: `pml5[511]` -> `pml4` (the same
//! high addresses: bits 56:48 of a kernel address are all ones) and `pml5[0]` ->
//! `pml4_low[0]` -> `l3_bootmap` for the identity map; the entry code then clears `pml4[0]`
//! so that every table has one parent, which reloc-core's walk requires.
//!
//! Two ways in, both in 32-bit protected mode with paging off:
//! - PVH (`pvh_start32`, the Xen note's `PHYS32_ENTRY`): `%ebx` = physical address of
//!   `hvm_start_info`;
//! - multiboot2 (`mb2_start32`, the header's entry address tag): `%eax` = 0x36d76289, `%ebx`
//!   = physical address of the boot information (MBI); `%esp` and the GDT are undefined.
//!
//! Both go on to `start32_common` with `%ebp` = which entry, `%esi` = the loader's `%eax` and
//! `%ebx` = the boot information, and reach `stub_main(entry, eax, info)`. The entry code
//! runs at its physical address (linked address minus `KERNEL_VIRT_OFFSET`): it uses only
//! relative jumps and offset-adjusted absolute addresses.
//!
//! The 32-bit code decides two things only the CPU state before paging can: CR4.PGE only
//! when CPUID.01H:EDX[13] reports PGE (setting it on a CPU without PGE faults), and CR4.LA57
//! with the 5-level tables when CPUID.(7,0):ECX[16] reports LA57 *and* the command line holds
//! the word `la57` (CR4.LA57 cannot change while paging is on). The Rust code reads the
//! outcome back from CR4 and prints it.

use crate::layout::{
    index, IMAGE_LEAF_FLAGS, IMAGE_VIRT, KERNEL_VIRT_OFFSET, PLAIN_LEAF_FLAGS, STACK_PAINT,
    STACK_SIZE, TABLE_FLAGS,
};

core::arch::global_asm!(
    r#"
    .set KVO, {kvo}

    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit physical entry point. 4-byte aligned. */
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start32 - KVO
    .p2align 2

    /* Multiboot2 header (multiboot2 specification 2.0, section 3.1): in the first 32 KiB of
       the file, 8-byte aligned (linker.ld puts it first in .text). No relocatable tag: GRUB
       loads the segments at their physical addresses and the stub moves itself. */
    .section .multiboot2, "a", @progbits
    .p2align 3
mb2_header:
    .long {mb2_magic}
    .long 0                                    /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - ({mb2_magic} + (mb2_header_end - mb2_header))
    .p2align 3
    .word 1, 0                                 /* information request, required */
    .long 12
    .long 6                                    /* the memory map */
    .p2align 3
    .word 3, 0                                 /* entry address: e_entry is not physical */
    .long 12
    .long mb2_start32 - KVO
    .p2align 3
    .word 0, 0                                 /* end */
    .long 8
mb2_header_end:

    .section .text.boot32, "ax", @progbits
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov ${entry_pvh}, %ebp
    xor %esi, %esi
    jmp start32_common

    .global mb2_start32
mb2_start32:
    cli
    cld
    mov ${entry_mb2}, %ebp
    mov %eax, %esi
    jmp start32_common

    /* %ebp = entry, %esi = the loader's %eax, %ebx = boot information: kept untouched (or
       saved around CPUID) until the call to stub_main. */
start32_common:
    /* Before anything can fault: note the IDTR the loader left (OVMF's points at its 64-bit
       IDT in boot-services memory, which the relocation may overwrite), then load an empty
       one (limit 0), so that a fault before stub_main's IDT stops the machine (triple
       fault) instead of jumping into the firmware's handlers. */
    sidt (inherited_idtr - KVO)
    lidt (idt_empty - KVO)
    /* Note the CR4 and EFER the loader left, for stub_main to print: OVMF leaves CR4 0x648
       and EFER 0x800 (NXE), SeaBIOS and QEMU's PVH loader 0. Both are overwritten below. */
    mov %cr4, %eax
    mov %eax, (inherited_cr4 - KVO)
    mov $0xc0000080, %ecx
    rdmsr
    mov %eax, (inherited_efer - KVO)
    mov %edx, (inherited_efer + 4 - KVO)

    /* Zero .bss (the stack and the Rust statics that start as zero). */
    mov $(__bss_start - KVO), %edi
    mov $(__bss_end - KVO), %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* Paint the stack so the stub can report its peak use (and catch an overflow). */
    mov $(stack_bottom - KVO), %edi
    mov ${stack_words}, %ecx
    mov ${stack_paint}, %eax
    rep stosl
    /* A stack for the calls below (multiboot2 leaves %esp undefined). */
    mov $(stack_top - KVO), %esp

    /* Image map: one global 2 MiB leaf per 2 MiB of [__image_start, __image_end). */
    mov $(__image_start - KVO), %eax
    mov $(__image_end - KVO), %ecx
    mov $(l2_xenmap - KVO + {xen_l2} * 8), %edx
2:
    lea {image_leaf}(%eax), %edi
    mov %edi, (%edx)
    movl $0, 4(%edx)
    add $0x200000, %eax
    add $8, %edx
    cmp %ecx, %eax
    jb 2b

    /* CR4 bits to set, in %edi: PAE always, PGE when CPUID.01H:EDX[13] says so. */
    mov ${cr4_pae}, %edi
    push %ebx
    mov $1, %eax
    cpuid
    pop %ebx
    bt $13, %edx
    jnc 3f
    or ${cr4_pge}, %edi
3:
    /* LA57 when the CPU has it and the command line asks for it: 5-level tables. */
    call wants_la57
    mov $(pml4 - KVO), %eax
    test %ecx, %ecx
    jz 4f
    or ${cr4_la57}, %edi
    movl $0, (pml4 - KVO)
    mov $(pml5 - KVO), %eax
4:
    /* CR3, then CR4, EFER, CR0: long mode, compatibility segment. Each is written whole, not
       ORed into what the loader left, so the stub runs in the same state under every
       firmware: CR4 = PAE (+ PGE, + LA57 as chosen above), which clears what OVMF sets
       (DE, MCE, OSFXSR, OSXMMEXCPT: the stub uses no SSE, and a machine check is then a
       shutdown rather than a jump through an IDT entry); EFER = LME only, which clears
       OVMF's NXE (no table of the stub sets bit 63) and SCE; CR0 = PG | WP | NE | ET | MP | PE,
       with CD and NW clear (caching on). */
    mov %eax, %cr3
    mov %edi, %cr4
    mov $0xc0000080, %ecx
    xor %edx, %edx
    mov ${efer_lme}, %eax
    wrmsr
    mov ${cr0_long}, %eax
    mov %eax, %cr0
    lgdt (gdt_ptr32 - KVO)
    ljmp $0x08, $(start64_identity - KVO)

    /* %ecx = 1 when CPUID.(7,0):ECX[16] (LA57) is set and the command line holds the word
       "la57", else 0. Keeps %ebx, %ebp, %esi, %edi. */
wants_la57:
    push %ebx
    push %esi
    push %edi
    xor %eax, %eax
    cpuid
    cmp $7, %eax
    jb 9f
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    bt $16, %ecx
    jnc 9f
    mov 8(%esp), %ebx
    mov 4(%esp), %esi
    call find_cmdline
    test %eax, %eax
    jz 9f
    /* Scan the whole line (up to NUL or the bound in %edx) for "la57" between separators
       (<= ' '): a long line keeps `la57` at its end (GRUB puts no limit on it). */
    mov %eax, %esi
    lea (%eax,%edx), %edi
    mov $0x20, %dl                             /* the byte before: a separator */
5:
    cmp %edi, %esi
    jae 9f
    movzbl (%esi), %eax
    test %eax, %eax
    jz 9f
    cmp $0x20, %dl
    ja 6f
    cmpl $0x3735616c, (%esi)                   /* "la57", little-endian */
    jne 6f
    movzbl 4(%esi), %eax
    cmp $0x20, %eax
    ja 6f
    mov $1, %ecx
    jmp 8f
6:
    mov (%esi), %dl
    inc %esi
    jmp 5b
9:
    xor %ecx, %ecx
8:
    pop %edi
    pop %esi
    pop %ebx
    ret

    /* %eax = physical address of the command line (NUL-terminated), or 0, and %edx = the
       most bytes to read from it. In: %ebp entry, %ebx boot information. Clobbers %eax, %ecx,
       %edx. */
find_cmdline:
    cmp ${entry_pvh}, %ebp
    jne 1f
    /* hvm_start_info: magic at 0, cmdline_paddr (u64) at 24; below 4 GiB only. The line
       has no length field: scan to its NUL, at most {pvh_cmdline_scan} bytes (a bound, so
       a line without NUL cannot send the scan through all memory). */
    xor %eax, %eax
    cmpl ${start_info_magic}, (%ebx)
    jne 7f
    cmpl $0, 28(%ebx)
    jne 7f
    mov 24(%ebx), %eax
    mov ${pvh_cmdline_scan}, %edx
    ret
1:
    /* Multiboot2 MBI: total_size at 0, tags from 8, each {{u32 type, u32 size}} 8-aligned;
       the command line is tag 1, its string at +8. Bounded by total_size. */
    xor %eax, %eax
    cmp ${mb2_bootloader_magic}, %esi
    jne 7f
    mov (%ebx), %edx
    add %ebx, %edx                             /* end of the MBI */
    lea 8(%ebx), %ecx
2:
    lea 8(%ecx), %eax
    cmp %edx, %eax
    ja 6f
    cmpl $0, (%ecx)
    je 6f
    cmpl $1, (%ecx)
    je 3f
    mov 4(%ecx), %eax
    cmp $8, %eax
    jb 6f
    add $7, %eax
    and $-8, %eax
    add %eax, %ecx
    jc 6f
    jmp 2b
3:
    /* The string fills the tag after its 8-byte header. */
    mov 4(%ecx), %edx
    sub $8, %edx
    jb 6f
    lea 8(%ecx), %eax
    ret
6:
    xor %eax, %eax
7:
    ret

    .code64
start64_identity:
    /* Still at the physical address (identity map): jump to the linked address. */
    movabs $start64_high, %rax
    jmp *%rax
start64_high:
    lgdt gdt_ptr64(%rip)
    lidt idt_empty(%rip)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea stack_top(%rip), %rsp
    xor %eax, %eax
    mov %ebp, %edi
    mov %esi, %esi
    mov %ebx, %edx
    xor %ebp, %ebp
    call stub_main
    ud2

    .section .rodata.boot_gdt, "a", @progbits
    .p2align 3
gdt:
    .quad 0
    .quad 0x00af9b000000ffff /* 0x08: 64-bit code, accessed */
    .quad 0x00cf93000000ffff /* 0x10: data, accessed */
gdt_end:
    .p2align 3
gdt_ptr32:
    .word gdt_end - gdt - 1
    .long gdt - KVO
    .p2align 3
gdt_ptr64:
    .word gdt_end - gdt - 1
    .quad gdt
    /* An empty IDT (limit 0, base 0): any exception is a triple fault. */
    .p2align 3
idt_empty:
    .word 0
    .quad 0

    .section .data.inherited, "aw", @progbits
    .p2align 3
    .global inherited_cr4
inherited_cr4:
    .quad 0
    .global inherited_efer
inherited_efer:
    .quad 0
    .global inherited_idtr
inherited_idtr:
    .quad 0
    .quad 0

    /* CPU exceptions 0-31: one 16-byte stub each at exception_stubs + 16 * vector, which
       pushes a zero error code where the CPU pushes none, then the vector, and goes to
       stub_exception (stub.rs), which reports and exits. */
    .section .text.exceptions, "ax", @progbits
    .p2align 4
    .global exception_stubs
exception_stubs:
    .set vector, 0
    .rept 32
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    push $0
    .endif
    push $vector
    jmp exception_common
    .set vector, vector + 1
    .endr
exception_common:
    mov (%rsp), %rdi                           /* vector */
    mov 8(%rsp), %rsi                          /* error code */
    mov 16(%rsp), %rdx                         /* the faulting RIP */
    and $-16, %rsp
    call stub_exception
    ud2

    .section .data.pagetables, "aw", @progbits
    .p2align 12
    .global pml4
pml4:
    .quad l3_bootmap - KVO + {table}
    .fill 255, 8, 0
    .quad l3_directmap - KVO + {table}
    .fill 254, 8, 0
    .quad l3_xenmap - KVO + {table}

    /* 5-level only (see the module documentation). */
    .p2align 12
    .global pml5
pml5:
    .quad pml4_low - KVO + {table}
    .fill 510, 8, 0
    .quad pml4 - KVO + {table}

    .p2align 12
pml4_low:
    .quad l3_bootmap - KVO + {table}
    .fill 511, 8, 0

    .p2align 12
l3_bootmap:
    .quad l2_bootmap - KVO + {table}
    .fill 511, 8, 0

    .p2align 12
l2_bootmap:
    .set boot_leaf, 0
    .rept 512
    .quad (boot_leaf << 21) + {plain_leaf}
    .set boot_leaf, boot_leaf + 1
    .endr

    .p2align 12
l3_directmap:
    .quad l2_directmap - KVO + {table}
    .quad l2_directmap + 0x1000 - KVO + {table}
    .quad l2_directmap + 0x2000 - KVO + {table}
    .quad l2_directmap + 0x3000 - KVO + {table}
    .fill 508, 8, 0

    .p2align 12
l2_directmap:
    .set dm_leaf, 0
    .rept 2048
    .quad (dm_leaf << 21) + {plain_leaf}
    .set dm_leaf, dm_leaf + 1
    .endr

    .p2align 12
l3_xenmap:
    .fill {xen_l3}, 8, 0
    .quad l2_xenmap - KVO + {table}
    .fill 511 - {xen_l3}, 8, 0

    .p2align 12
    .global l2_xenmap
l2_xenmap:
    .fill 512, 8, 0

    .section .bss.boot_stack, "aw", @nobits
    .p2align 12
    .global stack_bottom
stack_bottom:
    .skip {stack_size}
    .global stack_top
stack_top:
"#,
    kvo = const KERNEL_VIRT_OFFSET,
    xen_l2 = const index(IMAGE_VIRT, 2),
    xen_l3 = const index(IMAGE_VIRT, 3),
    image_leaf = const IMAGE_LEAF_FLAGS,
    plain_leaf = const PLAIN_LEAF_FLAGS,
    table = const TABLE_FLAGS,
    stack_size = const STACK_SIZE,
    stack_words = const STACK_SIZE / 4,
    stack_paint = const STACK_PAINT,
    entry_pvh = const ENTRY_PVH,
    entry_mb2 = const ENTRY_MULTIBOOT2,
    mb2_magic = const MULTIBOOT2_HEADER_MAGIC,
    mb2_bootloader_magic = const MULTIBOOT2_BOOTLOADER_MAGIC,
    start_info_magic = const reloc_core::hvm::START_INFO_MAGIC,
    pvh_cmdline_scan = const PVH_CMDLINE_SCAN,
    cr4_pae = const 1u32 << 5,
    cr4_pge = const 1u32 << 7,
    cr4_la57 = const 1u32 << 12,
    efer_lme = const 1u32 << 8,
    cr0_long = const 0x8001_0033u32,
    options(att_syntax)
);

/// `stub_main`'s `entry` when the loader came in through the PVH note.
pub const ENTRY_PVH: u32 = 0;
/// `stub_main`'s `entry` when the loader came in through the multiboot2 header.
pub const ENTRY_MULTIBOOT2: u32 = 1;
/// The multiboot2 header's magic number.
const MULTIBOOT2_HEADER_MAGIC: u32 = 0xe852_50d6;
/// What a multiboot2 loader leaves in `%eax` (the parser's `BOOTLOADER_MAGIC`).
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

unsafe extern "C" {
    /// First byte of the image (linker script), at `IMAGE_VIRT`.
    pub static __image_start: u8;
    /// One past the image's last byte, 4 KiB-aligned (linker script).
    pub static __image_end: u8;
    /// The boot top-level table with 4-level paging (and the L4 below `pml5`).
    pub static pml4: u8;
    /// The boot top-level table with 5-level paging.
    pub static pml5: u8;
    /// The image map (2 MiB leaves).
    pub static l2_xenmap: u8;
    /// Lowest byte of the boot stack.
    pub static stack_bottom: u8;
    /// One past the boot stack.
    pub static stack_top: u8;
    /// CR4 as the loader left it (written by the entry code before it sets its own).
    pub static inherited_cr4: u64;
    /// EFER as the loader left it.
    pub static inherited_efer: u64;
    /// IDTR as the loader left it, as the 32-bit `sidt` stores it: limit (2 bytes), base (4).
    pub static inherited_idtr: [u8; 16];
    /// The first of 32 exception stubs, 16 bytes apart (vector 0 to 31).
    pub static exception_stubs: u8;
}

/// Most bytes the entry code scans of a PVH command line for `la57` (multiboot2's tag 1
/// gives its own length). QEMU's PVH loader cannot pass more than about 4,100 bytes.
const PVH_CMDLINE_SCAN: u32 = 64 * 1024;

/// Bytes between two exception stubs.
pub const EXCEPTION_STUB_SIZE: u64 = 16;
