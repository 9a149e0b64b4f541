/*
 * Xen's move_xen() (xen/arch/x86/setup.c, Xen 4.18 and later), as a benchmark peer for
 * reloc-core: the copy, then "add delta" over the copied tables, with no validation.
 *
 * Xen's old base is 0, so it adds xen_phys_start; here the move distance is `delta`
 * (new_start - old_start, two's complement). `directmap` is where physical address 0 is
 * mapped (Xen's __va()). Like Xen: the top level adds delta to every present entry; L3 and
 * L2 add it to present entries that are not leaves (PSE clear); L1 is never entered; then
 * the present 2 MiB leaves of the copied l2_xenmap move. 4-level paging only, as Xen.
 */
#include <stdint.h>
#include <string.h>

#define PRESENT 0x1ULL
#define PSE 0x80ULL
#define ADDR_MASK 0x000ffffffffff000ULL
#define ENTRIES 512

static uint64_t *table_at(uint8_t *directmap, uint64_t entry)
{
    return (uint64_t *)(directmap + (entry & ADDR_MASK));
}

void move_xen_c(uint8_t *directmap, uint64_t old_start, uint64_t new_start, uint64_t len,
                uint64_t top_table, uint64_t l2_xenmap)
{
    uint64_t delta = new_start - old_start;
    memcpy(directmap + new_start, directmap + old_start, len);
    /* Xen's barrier(): the walk below must read the copy, not values cached from before. */
    __asm__ __volatile__("" ::: "memory");

    uint64_t *pl4e = (uint64_t *)(directmap + top_table + delta);
    for (unsigned int i = 0; i < ENTRIES; i++, pl4e++) {
        if (!(*pl4e & PRESENT))
            continue;
        *pl4e += delta;
        uint64_t *pl3e = table_at(directmap, *pl4e);
        for (unsigned int j = 0; j < ENTRIES; j++, pl3e++) {
            if (!(*pl3e & PRESENT) || (*pl3e & PSE))
                continue;
            *pl3e += delta;
            uint64_t *pl2e = table_at(directmap, *pl3e);
            for (unsigned int k = 0; k < ENTRIES; k++, pl2e++) {
                if (!(*pl2e & PRESENT) || (*pl2e & PSE))
                    continue;
                *pl2e += delta;
            }
        }
    }

    uint64_t *pl2e = (uint64_t *)(directmap + l2_xenmap + delta);
    for (unsigned int i = 0; i < ENTRIES; i++, pl2e++) {
        if (!(*pl2e & PRESENT) || !(*pl2e & PSE))
            continue;
        *pl2e += delta;
    }
}
