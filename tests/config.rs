//! `labramd run --config` with broken configurations: the binary exits with status 2
//! and one message that names the file, the key, the bad value and the fix.

mod support;

use std::process::Command;

use support::*;

/// Runs `labramd run --config <text>` and returns (exit code, stderr).
fn run_with(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
        .args(["run", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_error(text: &str, needles: &[&str]) {
    let (code, err) = run_with(text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad.yaml") || needles.iter().any(|n| n.contains("model")),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "missing `{n}` in: {err}");
    }
}

const OK_INPUT: &str = "input: {name: x, resolve_timeout_s: 1}\n";

#[test]
fn syntax_errors_name_the_line() {
    assert_error("input: {name: x\nmodel: [\n", &["bad.yaml", "line"]);
    assert_error(
        &format!("{OK_INPUT}model: [1, 2]\n"),
        &[
            "bad.yaml",
            "model",
            "a mapping with path, device, threads",
            "line 2",
        ],
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    assert_error(
        &format!("{OK_INPUT}model: {{path: m.onnx, thread: 2}}\n"),
        &[
            "bad.yaml",
            "model",
            "unknown field `thread`",
            "threads",
            "line 2",
        ],
    );
    assert_error(
        &format!("{OK_INPUT}model: {{path: m.onnx}}\nwindows: {{}}\n"),
        &["windows"],
    );
}

#[test]
fn bad_values_name_key_value_and_fix() {
    let m = "model: {path: m.onnx}\n";
    assert_error(
        &format!("{OK_INPUT}{m}window: {{hop_s: -1}}\n"),
        &["window.hop_s", "-1", "> 0"],
    );
    assert_error(
        &format!("{OK_INPUT}{m}window: {{patches: 0}}\n"),
        &["window.patches", "1 to 16"],
    );
    assert_error(
        &format!("input: {{name: x, unit: volts}}\n{m}"),
        &["input.unit", "volts", "uV"],
    );
    assert_error(
        &format!("{OK_INPUT}{m}preprocessing: {{notch_hz: 45}}\n"),
        &["preprocessing.notch_hz", "45", "50 or 60"],
    );
    assert_error(
        &format!("{OK_INPUT}model: {{path: m.onnx, device: tpu}}\n"),
        &["model.device", "tpu", "cpu or cuda"],
    );
    assert_error(
        &format!("{OK_INPUT}{m}metrics: {{listen: \"9464\"}}\n"),
        &["metrics.listen", "9464"],
    );
    assert_error(
        &format!("input: {{resolve_timeout_s: 3}}\n{m}"),
        &["input.name"],
    );
    assert_error(
        &format!("{OK_INPUT}model: {{path: m.onnx, threads: 0}}\n"),
        &["model.threads", "0"],
    );
}

#[test]
fn missing_model_and_card_are_start_up_errors() {
    // Relative model paths are resolved against the current directory, and the error says so.
    assert_error(
        &format!("{OK_INPUT}model: {{path: models/none.onnx}}\n"),
        &["model.path", "models/none.onnx", "current directory"],
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::os::unix::fs::symlink(shared().join("golden/reference_torch_export.onnx"), &model)
        .unwrap();
    assert_error(
        &format!("{OK_INPUT}model: {{path: {}}}\n", model.display()),
        &["model.path", "m.yaml", "labram-trainer export"],
    );
}
