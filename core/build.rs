//! Records where ONNX Runtime lives, so that binaries find it without any
//! environment variable: `.cargo/config.toml` sets `ORT_DYLIB_PATH` (to the
//! project's `.deps/libonnxruntime.so`, made by `scripts/setup.sh`) for the build;
//! it is passed on as `LABRAMD_ORT_DYLIB_PATH`, which [`inference`] uses when
//! `ORT_DYLIB_PATH` is not set at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        if !path.is_empty() {
            println!("cargo:rustc-env=LABRAMD_ORT_DYLIB_PATH={path}");
        }
    }
}
