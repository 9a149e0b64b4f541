//! Integration tests for reloc. Placeholder until the boot-stub issue lands.
