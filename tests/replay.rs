//! `labramd replay` against independent peers: a pylsl inlet receives the stream,
//! pyedflib reads the same file; labels, units, types, rate, timestamps and values
//! must agree. Files: a real eegmat recording (EDF+, 500 Hz), the BioSemi test file
//! (BDF, Status channel), and an EDF+ written by pyedflib with mixed rates and units.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

struct Replayed {
    stream: Value,
    reference: Value,
    log: String,
}

/// Replays `file` with `args`, receives `n` samples with a pylsl inlet, and reads the
/// first `n` values of every signal with pyedflib.
fn replay(file: &Path, tag: &str, n: usize, args: &[&str]) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = format!("labramd-replay-{tag}-{}", std::process::id());
    let n_s = n.to_string();
    let mut inlet = Proc::spawn(
        "inlet",
        lsl_peer(&[
            "inlet",
            "--name",
            &name,
            "--max-samples",
            &n_s,
            "--out",
            d.join("in.json").to_str().unwrap(),
        ]),
        d.join("inlet.log"),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    cmd.arg("replay")
        .arg(file)
        .args(["--name", &name, "--wait-consumers", "30"])
        .args(args);
    let replay = Proc::spawn("replay", cmd, d.join("replay.log"));
    let status = inlet.wait(60.0);
    assert!(
        status.is_some_and(|s| s.success()),
        "inlet failed:\n{}\nreplay log:\n{}",
        inlet.log_text(),
        replay.log_text()
    );
    let status = Command::new(python())
        .arg(repo().join("tests/support/lsl_peer.py"))
        .args(["edf-values", "--edf"])
        .arg(file)
        .args(["--n", &n_s, "--out"])
        .arg(d.join("ref.json"))
        .status()
        .unwrap();
    assert!(status.success());
    let read = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(p)).unwrap()).unwrap()
    };
    Replayed {
        stream: read("in.json"),
        reference: read("ref.json"),
        log: replay.log_text(),
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Every received value equals pyedflib's physical value × `to_uv[channel]` (f32).
fn check_values(r: &Replayed, signals: &[usize], to_uv: &[f64]) {
    let values = r.stream["values"].as_array().unwrap();
    for (t, sample) in values.iter().enumerate() {
        for (c, (&s, &k)) in signals.iter().zip(to_uv).enumerate() {
            let got = sample[c].as_f64().unwrap();
            let want = (r.reference[s]["values"][t].as_f64().unwrap() * k) as f32 as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "sample {t} channel {c}: {got} vs pyedflib {want}; replay log:\n{}",
                r.log
            );
        }
    }
}

fn check_timestamps(r: &Replayed, rate: f64) {
    let ts: Vec<f64> = r.stream["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for w in ts.windows(2) {
        assert!(
            ((w[1] - w[0]) - 1.0 / rate).abs() < 1e-6,
            "spacing {} at {rate} Hz",
            w[1] - w[0]
        );
    }
}

#[test]
fn eegmat_edf_plus_streams_labels_units_and_values() {
    let file = shared().join("data/eegmat/Subject00_1.edf");
    let r = replay(&file, "eegmat", 500, &[]);
    let labels = strs(&r.stream["labels"]);
    assert_eq!(labels.len(), 21, "annotation signal left out");
    assert_eq!(labels[0], "EEG Fp1");
    assert_eq!(labels[19], "EEG A2-A1");
    assert_eq!(labels[20], "ECG ECG");
    assert_eq!(r.stream["nominal_rate"], 500.0);
    assert_eq!(r.stream["channel_format"], 1, "float32");
    assert!(strs(&r.stream["units"]).iter().all(|u| u == "microvolts"));
    assert_eq!(strs(&r.stream["types"])[20], "ECG");
    assert!(r.stream["source_id"]
        .as_str()
        .unwrap()
        .starts_with("labramd-replay:"));
    // ECG is in mV in the file: streamed in µV.
    let mut to_uv = vec![1.0; 21];
    to_uv[20] = 1000.0;
    check_values(&r, &(0..21).collect::<Vec<_>>(), &to_uv);
    check_timestamps(&r, 500.0);
    // Real time: the last sample arrived close to its timestamp.
    let last_ts = r.stream["timestamps"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_f64()
        .unwrap();
    let at = r.stream["received_at"].as_f64().unwrap();
    assert!(
        (at - last_ts).abs() < 0.2,
        "received {at}, stamped {last_ts}"
    );
}

#[test]
fn mixed_rates_keep_the_main_rate_and_convert_units() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.edf");
    let status = Command::new(python())
        .arg(repo().join("tests/support/lsl_peer.py"))
        .args(["write-edf", "--out"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let r = replay(&file, "mixed", 256, &["--speed", "4"]);
    assert_eq!(
        strs(&r.stream["labels"]),
        vec!["EEG Fp1", "EEG Cz", "EEG O1"]
    );
    assert_eq!(r.stream["nominal_rate"], 256.0);
    assert!(
        r.log.contains("skipped") && r.log.contains("Resp (128 Hz)"),
        "{}",
        r.log
    );
    check_values(&r, &[0, 1, 2], &[1.0, 1.0, 1000.0]);
    // At 4× speed the timestamps follow the wall clock: 1/(256·4) apart.
    check_timestamps(&r, 1024.0);
}

#[test]
fn biosemi_bdf_with_status_channel() {
    let file = shared().join("data/bdf/Newtest17-256.bdf");
    let r = replay(&file, "bdf", 256, &["--speed", "4", "--type", "EEG"]);
    let labels = strs(&r.stream["labels"]);
    let types = strs(&r.stream["types"]);
    let n = r.reference.as_array().unwrap().len();
    assert_eq!(labels.len(), n, "all BDF signals share 256 Hz");
    assert_eq!(labels.last().unwrap(), "Status");
    assert_eq!(types.last().unwrap(), "STIM");
    // Voltage signals in µV as read by pyedflib; Status unchanged.
    let to_uv: Vec<f64> = r
        .reference
        .as_array()
        .unwrap()
        .iter()
        .map(|s| if s["dimension"] == "mV" { 1000.0 } else { 1.0 })
        .collect();
    check_values(&r, &(0..n).collect::<Vec<_>>(), &to_uv);
}

#[test]
fn bad_arguments_and_files_are_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
        .args(["replay", "no/such/file.edf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/file.edf"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
        .arg("replay")
        .arg(shared().join("data/eegmat/Subject00_1.edf"))
        .args(["--speed", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--speed is 0"), "{err}");
}
