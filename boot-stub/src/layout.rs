//! The image's address-space layout, shared by the entry assembly, the linker script
//! (`linker.ld`, which repeats the first two numbers) and the relocation code.

/// Linked (virtual) address minus load (physical) address: the kernel code model's window.
pub const KERNEL_VIRT_OFFSET: u64 = 0xffff_ffff_8000_0000;
/// Where the loader puts the image: 2 MiB-aligned, as reloc-core requires.
pub const IMAGE_PHYS: u64 = 0x20_0000;
/// Where the image runs: L4 slot 511, L3 slot 510, L2 slot 1 onwards.
pub const IMAGE_VIRT: u64 = KERNEL_VIRT_OFFSET + IMAGE_PHYS;
/// Virtual address of physical 0 in the directmap (L4 slot 256).
pub const DIRECTMAP_BASE: u64 = 0xffff_8000_0000_0000;
/// The directmap covers physical `[0, DIRECTMAP_SIZE)` with 2 MiB leaves (1 L3 + 4 L2 tables).
pub const DIRECTMAP_SIZE: u64 = 4 << 30;
/// Image-map (`l2_xenmap`) leaf flags: present, writable, accessed, dirty, 2 MiB, global.
pub const IMAGE_LEAF_FLAGS: u64 = 0x1e3;
/// Directmap and identity-map leaf flags: present, writable, accessed, dirty, 2 MiB.
pub const PLAIN_LEAF_FLAGS: u64 = 0xe3;
/// Pointer-entry flags: present, writable, accessed.
pub const TABLE_FLAGS: u64 = 0x23;
/// Boot stack size. The boot information and the plan live in statics (built in place), so
/// the relocation path needs 1,336 bytes (the `stack:` line, release, measured on PVH, GRUB
/// and OVMF, la57 and the 8 KiB command line included; `tests/tests/stack.rs`) and the whole
/// boot, checks included, about 3.5 KiB; it was 51 KiB while both were stack values.
/// 256 KiB is a wide margin for debug builds. There is no guard page (the image is mapped
/// with 2 MiB leaves only), so the stub checks the painted stack instead.
pub const STACK_SIZE: usize = 256 * 1024;
/// What the entry code fills the stack with, to measure its peak use.
pub const STACK_PAINT: u32 = 0x5354_4b21;

/// The 9-bit index of `virt` at paging level `level` (1 to 4).
pub const fn index(virt: u64, level: u32) -> u64 {
    (virt >> (12 + 9 * (level - 1))) & 511
}

const _: () = {
    assert!(IMAGE_PHYS.is_multiple_of(2 << 20));
    assert!(index(IMAGE_VIRT, 4) == 511);
    assert!(index(IMAGE_VIRT, 3) == 510);
    assert!(index(IMAGE_VIRT, 2) == 1);
    assert!(index(DIRECTMAP_BASE, 4) == 256);
};
