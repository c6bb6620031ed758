//! Records where ONNX Runtime lives, so that the binary finds it without any
//! environment variable: `.cargo/config.toml` sets `ORT_DYLIB_PATH` (to the
//! project's `.deps/libonnxruntime.so`, made by `scripts/setup.sh`) for the build;
//! it is passed on as `LABRAMD_ORT_DYLIB_PATH`, which `labramd::inference` uses when
//! `ORT_DYLIB_PATH` is not set at run time.
//!
//! `LABRAMD_LSL_RPATH` (optional, at build time) adds a run-time search path for a
//! shared liblsl: used when the `lsl-sys` build script is overridden (Cargo's
//! `[target.<triple>.lsl]` links override) to link a newer liblsl, such as the 1.18
//! in the pylsl wheel, instead of building the 1.13 that `lsl-sys` bundles (see
//! `LSL118=1 scripts/bench-e2e.sh`).

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
