#!/usr/bin/env python3
"""Writes the example scenarios: one success layout and one variant per error kind.

Base: a small Xen-like layout, image [0x200000, 0x600000) on 64 MiB of RAM.
Run from this directory: ./generate.py. The JSON files are committed; tests replay them.
"""
import copy
import json

H = hex
PTR = 0x63
IMAGE_LEAF = 0x1E3
HUGE = 0xE3
NX = 1 << 63

TOP, L3_BOOT, L3_XEN, L2_XEN, L3_DM, L2_BOOT, L1_FIX = (
    0x300000, 0x301000, 0x302000, 0x303000, 0x304000, 0x305000, 0x306000)

def base():
    tables = {
        TOP: {0: L3_BOOT | PTR, 261: L3_XEN | PTR, 262: L3_DM | PTR},
        L3_BOOT: {0: L2_BOOT | PTR},
        L2_BOOT: {1: 0x200000 | HUGE, 2: 0x400000 | HUGE},
        L3_XEN: {321: L2_XEN | PTR},
        L2_XEN: {0: 0x200000 | IMAGE_LEAF, 1: 0x400000 | IMAGE_LEAF | NX, 511: L1_FIX | PTR},
        L1_FIX: {0: 0xFEE00000 | 0x173, 1: 0x3000000 | 0x163 | NX},
        L3_DM: {0: 0x0 | HUGE | NX},
    }
    return {
        "description": "",
        "expect": "ok",
        "ram": [{"start": "0x0", "end": "0x9fc00"}, {"start": "0x100000", "end": "0x4000000"}],
        "cr3": H(TOP),
        "cr4": "0x80",
        "max_phys_bits": 46,
        "image": {"start": "0x200000", "end": "0x600000"},
        "image_maps": [H(L2_XEN)],
        "target": "auto",
        "virtual": {
            "image_start": "0xffff82d040000000",
            "directmap_base": "0xffff830000000000",
            "stack_top": "0xffff82d040400000",
            "rsp": "0xffff82d0403fff00",
        },
        "tables": tables,
        "data": [
            {"addr": "0x200000", "qwords": ["0x9090909090909090", "0xc3", "0x1122334455667788"]},
            {"addr": "0x5ff000", "qwords": ["0x57ac000000000001"] * 4},
            {"addr": "0x5fff00", "qwords": ["0x57ac000000000002"] * 32},
        ],
    }

def finish(s):
    s["tables"] = [
        {"addr": H(addr), "entries": {str(i): H(v) for i, v in sorted(entries.items())}}
        for addr, entries in sorted(s["tables"].items())
    ]
    return s

def variant(name, expect, description, edit):
    s = base()
    s["expect"] = expect
    s["description"] = description
    edit(s)
    with open(f"{name}.json", "w") as f:
        json.dump(finish(s), f, indent=2)
        f.write("\n")

def nothing(s):
    pass

def set_(key, value):
    def edit(s):
        s[key] = value
    return edit

def entry(table, index, value):
    def edit(s):
        s["tables"].setdefault(table, {})[index] = value
    return edit

def virt(key, value):
    def edit(s):
        s["virtual"][key] = value
    return edit

def recursive(s):
    s["tables"][TOP][510] = TOP | PTR

def too_many(s):
    for i in range(1, 70):
        s["tables"][TOP][i] = (0x310000 + i * 0x1000) | PTR
        s["tables"][0x310000 + i * 0x1000] = {}

variant("ok-auto", "ok", "Xen-like layout; reloc-core selects the highest 2 MiB slot below 4 GiB (0x3c00000).", nothing)
variant("ok-fixed-target", "ok", "The same layout moved to a fixed base, 0x1000000.", set_("target", "0x1000000"))
variant("ok-adjacent-target", "ok", "A fixed target right after the image footprint: 0x800000.", set_("target", "0x800000"))
variant("ok-recursive-slot", "ok", "A recursive slot (top[510] -> top): reloc-core rebases the top table once; an add-per-visit walk would add delta twice.", recursive)
variant("err-invalid-max-phys-bits", "InvalidMaxPhysBits", "MAXPHYADDR 200 is outside 32..=52 (the simulated CPU clamps its own walks to 52 bits).", set_("max_phys_bits", 200))
variant("err-empty-image", "EmptyImage", "The image range holds no byte.",
        lambda s: (s.update(image={"start": "0x200000", "end": "0x200000"}), s.update(target="0x1000000")))
variant("err-image-misaligned", "ImageMisaligned", "The image does not start on a 2 MiB boundary.", set_("image", {"start": "0x201000", "end": "0x600000"}))
variant("err-new-base-misaligned", "NewBaseMisaligned", "The target is 4 KiB off the 2 MiB grid.", set_("target", "0x1001000"))
variant("err-range-beyond-max-phys", "RangeBeyondMaxPhys", "With MAXPHYADDR 32, an image at 4 GiB is beyond the physical address width.",
        lambda s: (s.update(max_phys_bits=32), s.update(image={"start": "0x100000000", "end": "0x100400000"})))
variant("err-ranges-overlap", "RangesOverlap", "The destination overlaps the running image: the copy would overwrite live tables.", set_("target", "0x400000"))
variant("err-inaccessible", "Inaccessible", "The destination is not RAM (the machine has 64 MiB).", set_("target", "0x8000000"))
variant("err-table-misaligned", "TableMisaligned", "A declared image map is not 4 KiB-aligned.", set_("image_maps", [H(L2_XEN + 8)]))
variant("err-table-outside-image", "TableOutsideImage", "A declared image map lies outside the image.", set_("image_maps", ["0x800000"]))
variant("err-pointer-outside-image", "PointerOutsideImage", "A top-level pointer leads to a table outside the image: the copy would not contain it.", entry(TOP, 5, 0x900000 | PTR))
variant("err-malformed-entry", "MalformedEntry", "PS set in a top-level (L4) entry: the CPU would fault on it.", entry(TOP, 6, L3_XEN | 0xE3))
variant("err-image-leaf-outside-image", "ImageLeafOutsideImage", "An image-map 2 MiB leaf maps memory outside the image: moving it would point at memory never copied.", entry(L2_XEN, 2, 0x800000 | IMAGE_LEAF))
variant("err-image-mapped-by-4k-leaf", "ImageMappedBy4KiBLeaf", "A 4 KiB leaf under the image map (in the fixmap L1) maps image memory: it would keep pointing at the old copy.", entry(L1_FIX, 2, 0x201000 | 0x163))
variant("err-image-map-not-reached", "ImageMapNotReached", "A declared image map is never reached as an L2 table from the top level.", set_("image_maps", [H(L2_XEN), "0x307000"]))
variant("err-image-map-aliased", "ImageMapAliased", "The image map (emptied, so nothing maps the image and no code runs: no virtual layout) is also hung under the top level, where it reads as an L3 table: no single rebase is right for both readings.",
        lambda s: (s["tables"].update({L2_XEN: {}}), entry(TOP, 5, L2_XEN | PTR)(s), s.pop("virtual")))
variant("err-rebased-entry-beyond-max-phys", "RebasedEntryBeyondMaxPhys", "With MAXPHYADDR 32 and a target just below 4 GiB, the second image leaf would be rebased to 4 GiB.",
        lambda s: (s.update(max_phys_bits=32), s.update(target="0xffe00000")))
variant("err-too-many-tables", "TooManyTables", "69 extra L3 tables under the top level: more than the plan's 64.", too_many)
variant("err-no-room", "NoRoom", "Only 8 MiB of RAM: no free 2 MiB-aligned 4 MiB slot outside the image.",
        set_("ram", [{"start": "0x0", "end": "0x9fc00"}, {"start": "0x100000", "end": "0x800000"}]))
variant("err-encryption-mask", "InvalidEncryptionMask", "An encryption mask (C-bit) at bit 50, above MAXPHYADDR 46.", set_("encryption_mask", H(1 << 50)))
# The switch's refusals: each before the first write.
variant("err-switch-layout-mismatch", "LayoutMismatch", "The virtual layout says the image starts 2 MiB higher than the image map maps it (an extra leaf keeps that range mapped): the stack re-copy would land 2 MiB off in the copy.",
        lambda s: (entry(L2_XEN, 2, 0x200000 | IMAGE_LEAF)(s), virt("image_start", "0xffff82d040200000")(s), virt("stack_top", "0xffff82d040400000")(s)))
virt_end = "0xffff82d040400000"
variant("err-switch-stack-overlaps-table", "StackOverlapsTable", "The stack extends down over the page tables: re-copying it would write old entries over the rebased ones.", virt("stack_bottom", "0xffff82d040100000"))
variant("err-switch-destination-outside-directmap", "DestinationOutsideDirectMap", "The directmap maps only the first 8 MiB; the destination 0x1000000 is not in it.",
        lambda s: (s.update(target="0x1000000"), virt("directmap_size", "0x800000")(s)))
variant("err-switch-stack-outside-image", "StackOutsideImage", "The stack top lies 2 MiB past the image's virtual end.", virt("stack_top", "0xffff82d040600000"))
variant("err-switch-stack-misaligned", "StackMisaligned", "The stack bottom is not 8-byte aligned.", virt("stack_bottom", "0xffff82d0403ffefc"))
variant("err-switch-rsp-outside-stack", "RspOutsideStack", "rsp lies below the declared stack: the re-copy from rsp would run over memory that is not stack.", virt("stack_bottom", "0xffff82d0403fff80"))
variant("err-switch-non-canonical", "NonCanonical", "The directmap base is not a canonical 4-level address.", virt("directmap_base", "0x900000000000"))
# Issue 19, item 3: refusals of the whole stack and of the directmap's whole alias.
variant("err-switch-stack-mismatch", "StackMismatch", "A 6 MiB image whose image-map leaf 1 maps physical page 2 (inside the footprint, so planning accepts it). The stack runs from leaf 0 into leaf 2: both ends translate right, but its middle, under leaf 1, would translate 2 MiB away from where the stack re-copy writes it. Only a walk of every leaf the stack crosses sees it.",
        lambda s: (s.update(image={"start": "0x200000", "end": "0x800000"}),
                   entry(L2_XEN, 1, 0x600000 | IMAGE_LEAF | NX)(s), entry(L2_XEN, 2, 0x600000 | IMAGE_LEAF)(s),
                   virt("stack_bottom", "0xffff82d0401ff000")(s), virt("stack_top", "0xffff82d040401000")(s),
                   virt("rsp", "0xffff82d040400f00")(s)))
variant("err-switch-directmap-alias-non-canonical", "DirectMapAliasNonCanonical", "The directmap base 2^47 - 18 MiB is canonical, but its alias of the destination [0x1000000, 0x1400000) runs from 2^47 - 2 MiB into the canonical hole: apply would fault in the middle of the copy.",
        lambda s: (s.update(target="0x1000000"), virt("directmap_base", "0x7ffffee00000")(s)))
