//! Records where ONNX Runtime lives, so that the binary finds it without any
//! environment variable: `.cargo/config.toml` sets `ORT_DYLIB_PATH` (to the
//! project's `.deps/libonnxruntime.so`, made by `scripts/setup.sh`) for the build;
//! it is passed on as `LABRAMD_ORT_DYLIB_PATH`, which `labramd::inference` uses when
//! `ORT_DYLIB_PATH` is not set at run time.
//!
//! `LABRAMD_LSL_RPATH` (set by `.cargo/config.toml` to the project's `.deps/lsl`) adds
//! a run-time search path for the shared liblsl that the binaries link: Cargo's
//! `[target.<triple>.lsl]` links override replaces the `lsl-sys` build script (which
//! would build its bundled liblsl 1.13) with the liblsl 1.18 of the pylsl wheel, and
//! a `rustc-link-arg` from a `-sys` crate would not reach the binaries anyway.

fn main() {
    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LABRAMD_LSL_RPATH");
    if let Ok(dir) = std::env::var("LABRAMD_LSL_RPATH") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        if !path.is_empty() {
            println!("cargo:rustc-env=LABRAMD_ORT_DYLIB_PATH={path}");
        }
    }
}
