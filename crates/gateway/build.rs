//! The web apps are embedded from `web/dist` (built by `npm run build` in `web/`). A fresh clone has no build
//! yet: create the folder empty so the crate still compiles; the gateway then serves a page saying how to build
//! them. Cargo re-runs this (and recompiles the embedding) whenever anything under `web/dist` changes.

fn main() {
    // Read at run time, not with `env!`: a build-script binary can be reused from a checkout at another path.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into());
    let dist = std::path::Path::new(&manifest_dir).join("../../web/dist");
    if !dist.exists() {
        let _ = std::fs::create_dir_all(&dist);
    }
    println!("cargo:rerun-if-changed=../../web/dist");
    println!("cargo:rerun-if-changed=build.rs");
}
