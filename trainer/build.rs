//! Link-time settings that torch-sys cannot set for the final binaries:
//! an rpath to libtorch (so `labram-trainer` runs without LD_LIBRARY_PATH) and,
//! when libtorch ships CUDA, `--no-as-needed -ltorch_cuda`, without which the
//! linker drops libtorch_cuda and `tch::Cuda::is_available()` is always false.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let root = PathBuf::from(libtorch);
    let lib = std::fs::canonicalize(root.join("lib")).unwrap_or_else(|_| root.join("lib"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
