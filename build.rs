//! Embeds an rpath to the libtorch that scripts/setup installs, so neither building nor
//! running needs LD_LIBRARY_PATH.

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let lib = std::env::var("LIBTORCH")
        .map(|p| format!("{p}/lib"))
        .unwrap_or_else(|_| format!("{root}/third_party/libtorch/lib"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
