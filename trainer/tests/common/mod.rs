//! Helpers shared by the trainer's integration tests: where things are, the
//! project's Python, and the `labram-trainer` binary under test.
// Each test crate uses its own subset of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The trainer crate's folder.
pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the repository (golden tensors, recordings, baselines).
pub fn shared() -> PathBuf {
    manifest().join("../../shared")
}

/// The project's Python (`.venv`, made by `scripts/setup.sh`); the reason
/// names what the calling test needs from it.
pub fn python(needs: &str) -> PathBuf {
    let py = manifest().join("../.venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh to create the project's Python environment ({needs})",
        py.display()
    );
    py
}

/// Runs `labram-trainer args…` (logs at `warn`), echoing its output for a
/// failing test's report.
pub fn trainer(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run labram-trainer");
    eprintln!(
        "labram-trainer {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A process's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
