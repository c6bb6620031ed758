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

/// Exit status 2, the config file named (also for errors found after parsing, such as
/// a missing model), and every needle in the message.
fn assert_error(text: &str, needles: &[&str]) {
    let (code, err) = run_with(text);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.yaml"), "the file is not named in: {err}");
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
    assert_error(
        &format!("input: {{name: x, timestamps: [clocksync, smoothing]}}\n{m}"),
        &[
            "input.timestamps",
            "\"smoothing\"",
            "clocksync, dejitter, monotonize",
        ],
    );
    assert_error(
        &format!("{OK_INPUT}{m}window: {{hop_s: 0.001}}\n"),
        &["window.hop_s", "0.001", "at least 0.005"],
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

#[test]
fn metrics_exposed_off_the_host_are_warned_about_at_start_up() {
    // The warning comes right after the config is read, before the model is loaded
    // (here: missing, so the daemon stops there with status 2).
    let model = "model: {path: models/none.onnx}\n";
    let port = free_port();
    let (code, err) = run_with(&format!(
        "{OK_INPUT}{model}metrics: {{listen: \"0.0.0.0:{port}\"}}\n"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("WARN")
            && err.contains(&format!("metrics.listen 0.0.0.0:{port}"))
            && err.contains("every network interface")
            && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let (_, err) = run_with(&format!(
        "{OK_INPUT}{model}metrics: {{listen: \"127.0.0.1:{port}\"}}\n"
    ));
    assert!(
        !err.contains("metrics.listen"),
        "loopback warned about: {err}"
    );
}
