//! The PVH entry: the Xen ELF note, the 32-bit entry that reaches long mode at the high
//! virtual address, the GDT, the boot page tables and the stack. All of it lies inside the
//! image (`__image_start..__image_end`), so it is what reloc-core copies and rebases.
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
//! PVH enters in 32-bit protected mode, paging off, `%ebx` = physical address of
//! `hvm_start_info`. The entry code runs at its physical address (linked address minus
//! `KERNEL_VIRT_OFFSET`): it uses only relative jumps and offset-adjusted absolute addresses.

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

    .section .text.boot32, "ax", @progbits
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    /* %ebx (start_info) is kept untouched until the call to stub_main. */

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

    /* Image map: one global 2 MiB leaf per 2 MiB of [__image_start, __image_end). */
    mov $(__image_start - KVO), %eax
    mov $(__image_end - KVO), %ecx
    mov $(l2_xenmap - KVO + {xen_l2} * 8), %edx
2:
    lea {image_leaf}(%eax), %esi
    mov %esi, (%edx)
    movl $0, 4(%edx)
    add $0x200000, %eax
    add $8, %edx
    cmp %ecx, %eax
    jb 2b

    /* CR3, then CR4.PAE|PGE, EFER.LME, CR0.PG|WP|PE: long mode, compatibility segment. */
    mov $(pml4 - KVO), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0xa0, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    lgdt (gdt_ptr32 - KVO)
    ljmp $0x08, $(start64_identity - KVO)

    .code64
start64_identity:
    /* Still at the physical address (identity map): jump to the linked address. */
    movabs $start64_high, %rax
    jmp *%rax
start64_high:
    lgdt gdt_ptr64(%rip)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea stack_top(%rip), %rsp
    xor %ebp, %ebp
    mov %ebx, %edi
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

    .section .data.pagetables, "aw", @progbits
    .p2align 12
    .global pml4
pml4:
    .quad l3_bootmap - KVO + {table}
    .fill 255, 8, 0
    .quad l3_directmap - KVO + {table}
    .fill 254, 8, 0
    .quad l3_xenmap - KVO + {table}

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
    options(att_syntax)
);

unsafe extern "C" {
    /// First byte of the image (linker script), at `IMAGE_VIRT`.
    pub static __image_start: u8;
    /// One past the image's last byte, 4 KiB-aligned (linker script).
    pub static __image_end: u8;
    /// The boot top-level table.
    pub static pml4: u8;
    /// The image map (2 MiB leaves).
    pub static l2_xenmap: u8;
    /// Lowest byte of the boot stack.
    pub static stack_bottom: u8;
    /// One past the boot stack.
    pub static stack_top: u8;
}
