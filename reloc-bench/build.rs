//! Builds the C peer (Xen's move_xen() loop) for the benchmarks. Only this unpublished crate
//! depends on `cc`; reloc-core's dependency list stays as users see it.

fn main() {
    println!("cargo:rerun-if-changed=c/move_xen.c");
    cc::Build::new()
        .file("c/move_xen.c")
        .warnings(true)
        .compile("move_xen");
}
