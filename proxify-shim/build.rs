fn main() {
    println!("cargo:rerun-if-changed=csrc/variadic.c");
    println!("cargo:rerun-if-changed=csrc/dlsym.c");
    println!("cargo:rerun-if-changed=csrc/exports.map");
    cc::Build::new()
        .file("csrc/variadic.c")
        .file("csrc/dlsym.c")
        // dlsym's RTLD_NEXT branch must stay a tail call (libc reads the caller's address).
        .flag("-O2")
        .flag("-foptimize-sibling-calls")
        // Nothing in Rust calls these; keep the object so the version script can export them.
        .link_lib_modifier("+whole-archive")
        .compile("proxify_variadic");
    // rustc's own version script exports only Rust items; this one adds the C-defined hooks.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/csrc/exports.map");
}
