//! `LABRAMD_LSL_RPATH` (set by `.cargo/config.toml` to the project's `.deps/lsl`) adds
//! a run-time search path for the shared liblsl that the binaries link: Cargo's
//! `[target.<triple>.lsl]` links override replaces the `lsl-sys` build script (which
//! would build its bundled liblsl 1.13) with the liblsl 1.18 of the pylsl wheel, and
//! a `rustc-link-arg` from a `-sys` crate would not reach the binaries anyway.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LABRAMD_LSL_RPATH");
    if let Ok(dir) = std::env::var("LABRAMD_LSL_RPATH") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
