//! boot-stub: placeholder until the boot-stub issue lands.
fn main() {}
