//! Start-up checks against real LSL streams (pylsl outlets): a stream that never
//! appears, one that lacks electrodes the model needs, a sample rate the resampler
//! cannot serve, and a unit that is not a voltage. Each is one clear error and exit
//! status 2, before any data is classified.

mod support;

use std::process::Command;

use support::*;

const MODEL_CHANNELS: [&str; 4] = ["FP1", "FP2", "CZ", "O1"];

/// Starts a synthetic pylsl stream (unless `labels` is None) and runs the daemon on it.
fn start_with(tag: &str, labels: Option<&str>, rate: f64, unit: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path(), &MODEL_CHANNELS, 2, 1.0);
    let name = format!("labramd-startup-{tag}-{}", std::process::id());
    let _peer = labels.map(|l| {
        Proc::spawn(
            "synthetic",
            lsl_peer(&[
                "synthetic",
                "--name",
                &name,
                "--labels",
                l,
                "--rate",
                &rate.to_string(),
                "--unit",
                unit,
            ]),
            dir.path().join("peer.log"),
        )
    });
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "input: {{name: {name}, resolve_timeout_s: {}}}\nmodel: {{path: {}}}\nmetrics: {{listen: \"127.0.0.1:{}\"}}\n",
            if labels.is_some() { 20 } else { 1 },
            model.display(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stream_not_found_names_the_selector() {
    let (code, err) = start_with("absent", None, 0.0, "");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no LSL stream matching name='labramd-startup-absent"),
        "{err}"
    );
    assert!(err.contains("input.resolve_timeout_s"), "{err}");
}

#[test]
fn missing_electrodes_are_listed() {
    let (code, err) = start_with(
        "missing",
        Some("EEG Fp1-REF,EEG Fp2-REF,EEG C3-REF,ECG"),
        250.0,
        "uV",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("lacks electrodes the model needs: CZ, O1"),
        "{err}"
    );
    assert!(
        err.contains("FP1") && err.contains("input.channel_map"),
        "{err}"
    );
}

#[test]
fn unsupported_rate_is_refused() {
    let (code, err) = start_with("rate", Some("Fp1,Fp2,Cz,O1"), 64.0, "uV");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("64 Hz cannot be resampled to 200 Hz"), "{err}");
}

#[test]
fn non_voltage_unit_is_refused() {
    let (code, err) = start_with("unit", Some("Fp1,Fp2,Cz,O1"), 250.0, "counts");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unit `counts`") && err.contains("input.unit"),
        "{err}"
    );
}
