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

/// What `tests/support/replay_peer.py` received: the EEG stream's timestamps and channel
/// 0, and the marker stream (if any); timestamps as sent (same host).
struct WithMarkers {
    out: Value,
    log: String,
}

impl WithMarkers {
    fn timestamps(&self) -> Vec<f64> {
        f64s(&self.out["timestamps"])
    }

    /// (text, timestamp, arrival, EEG samples received before it) of every marker.
    fn markers(&self) -> Vec<(String, f64, f64, usize)> {
        self.out["markers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["text"].as_str().unwrap().to_string(),
                    m["timestamp"].as_f64().unwrap(),
                    m["arrived"].as_f64().unwrap(),
                    m["eeg_before"].as_u64().unwrap() as usize,
                )
            })
            .collect()
    }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Replays `files` with `args` to `replay_peer.py` (markers inlet first, then the EEG).
fn replay_with_markers(
    files: &[&Path],
    tag: &str,
    max_samples: usize,
    markers_resolve_s: f64,
    args: &[&str],
) -> WithMarkers {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = format!("labramd-replay-{tag}-{}", std::process::id());
    let mut peer = Command::new(python());
    peer.arg(repo().join("tests/support/replay_peer.py"))
        .args(["--name", &name, "--max-samples", &max_samples.to_string()])
        .args(["--markers-resolve-s", &markers_resolve_s.to_string()])
        .arg("--out")
        .arg(d.join("out.json"));
    let mut peer = Proc::spawn("replay_peer", peer, d.join("peer.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    cmd.arg("replay")
        .args(files)
        .args(["--name", &name, "--wait-consumers", "60"])
        .args(args);
    let replay = Proc::spawn("replay", cmd, d.join("replay.log"));
    let status = peer.wait(120.0);
    assert!(
        status.is_some_and(|s| s.success()),
        "replay_peer failed:\n{}\nreplay log:\n{}",
        peer.log_text(),
        replay.log_text()
    );
    let out = serde_json::from_str(&std::fs::read_to_string(d.join("out.json")).unwrap()).unwrap();
    WithMarkers {
        out,
        log: replay.log_text(),
    }
}

/// pyedflib's view of a file: (rate, annotations as (onset, text), channel 0 values).
fn pyedflib_view(file: &Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("view.json");
    let code = "import json, sys, pyedflib\n\
        f = pyedflib.EdfReader(sys.argv[1])\n\
        on, _, text = f.readAnnotations()\n\
        json.dump(dict(rate=f.getSampleFrequency(0), onsets=list(map(float, on)),\n\
        texts=list(map(str, text)), ch0=f.readSignal(0).tolist(),\n\
        uv=1000.0 if f.getPhysicalDimension(0).strip() == 'mV' else 1.0), open(sys.argv[2], 'w'))";
    let status = Command::new(python())
        .args(["-c", code])
        .arg(file)
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "pyedflib could not read {}",
        file.display()
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// Timestamps one period apart throughout (no gap, no overlap).
fn assert_continuous(ts: &[f64], period: f64) {
    for (i, w) in ts.windows(2).enumerate() {
        assert!(
            ((w[1] - w[0]) - period).abs() < 1e-6,
            "samples {i} and {}: {} s apart, not {period} s",
            i + 1,
            w[1] - w[0]
        );
    }
}

#[test]
fn eegmmidb_annotations_arrive_as_markers_at_their_onsets() {
    let file = shared().join("data/eegmmidb/S001R04.edf");
    let speed = 10.0;
    let r = replay_with_markers(&[&file], "mmidb", 20_000, 30.0, &["--speed", "10"]);
    let view = pyedflib_view(&file);
    let rate = view["rate"].as_f64().unwrap();
    let ts = r.timestamps();
    assert_eq!(ts.len(), 20_000, "the whole file; replay log:\n{}", r.log);
    assert_continuous(&ts, 1.0 / (rate * speed));
    let info = &r.out["markers_stream"];
    assert_eq!(info["type"], "Markers");
    assert_eq!(info["channel_count"], 1);
    assert_eq!(info["channel_format"], 3, "string");
    assert_eq!(info["nominal_rate"], 0.0, "irregular");
    let markers = r.markers();
    let texts: Vec<String> = strs(&view["texts"]);
    let onsets = f64s(&view["onsets"]);
    assert_eq!(texts.len(), 30);
    assert_eq!(
        markers.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        texts,
        "marker texts in onset order, as pyedflib reads them"
    );
    let period = 1.0 / (rate * speed);
    for ((text, stamp, arrived, eeg_before), onset) in markers.iter().zip(&onsets) {
        // The EEG sample at the onset carries the marker's time stamp.
        let i = (onset * rate).round() as usize;
        assert!(
            (stamp - ts[i]).abs() <= period,
            "{text} at {onset} s: stamped {stamp}, its sample {i} at {}",
            ts[i]
        );
        assert!(
            (stamp - (ts[0] + onset / speed)).abs() <= period,
            "{text} at {onset} s: stamped {stamp}, want {}",
            ts[0] + onset / speed
        );
        // Pushed when the EEG reached it: not before its time (arrival on this host's
        // clock, after the pull), and not after EEG pushed 0.1 s (wall clock) later.
        assert!(
            *arrived >= stamp - period,
            "{text} at {onset} s stamped {stamp} arrived early, at {arrived}"
        );
        let slack = (0.1 * rate * speed) as usize;
        assert!(
            *eeg_before <= i + slack,
            "{text} at {onset} s (sample {i}) arrived after EEG sample {eeg_before}"
        );
    }
}

#[test]
fn two_files_play_as_one_continuous_stream_with_a_marker_at_each_start() {
    let a = shared().join("data/eegmat/Subject00_2.edf");
    let b = shared().join("data/eegmat/Subject01_2.edf");
    let (va, vb) = (pyedflib_view(&a), pyedflib_view(&b));
    let (na, nb) = (
        va["ch0"].as_array().unwrap().len(),
        vb["ch0"].as_array().unwrap().len(),
    );
    assert_eq!((na, nb), (31_000, 31_000));
    let speed = 20.0;
    let r = replay_with_markers(&[&a, &b], "two", na + nb, 30.0, &["--speed", "20"]);
    let ts = r.timestamps();
    assert_eq!(ts.len(), na + nb, "summed length; replay log:\n{}", r.log);
    // Sample na (file b's first) one period after sample na - 1 (file a's last).
    assert_continuous(&ts, 1.0 / (500.0 * speed));
    // Values: file a, then file b, each from its first sample.
    let got = f64s(&r.out["ch0"]);
    let want: Vec<f64> = f64s(&va["ch0"])
        .into_iter()
        .chain(f64s(&vb["ch0"]))
        .collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w = *w as f32 as f64;
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "sample {i}: {g} vs pyedflib {w}"
        );
    }
    let markers = r.markers();
    let texts: Vec<&str> = markers.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(texts, vec!["Subject00_2", "Subject01_2"]);
    let period = 1.0 / (500.0 * speed);
    assert!((markers[0].1 - ts[0]).abs() <= period, "{markers:?}");
    assert!((markers[1].1 - ts[na]).abs() <= period, "{markers:?}");
    assert!(r.log.contains("file 2/2"), "{}", r.log);
}

/// Two small EDF+ files (pyedflib, 10 s at 256 Hz) named `a.edf` and `b.edf`.
fn two_small_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = dir.join("a.edf");
    let status = Command::new(python())
        .arg(repo().join("tests/support/lsl_peer.py"))
        .args(["write-edf", "--out"])
        .arg(&a)
        .status()
        .unwrap();
    assert!(status.success());
    let b = dir.join("b.edf");
    std::fs::copy(&a, &b).unwrap();
    (a, b)
}

#[test]
fn looping_over_two_files_keeps_time_running_and_marks_each_start() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_small_files(dir.path());
    let n = 2560;
    let r = replay_with_markers(
        &[&a, &b],
        "loop2",
        2 * n + 100,
        30.0,
        &["--speed", "8", "--loop"],
    );
    let ts = r.timestamps();
    assert!(ts.len() >= 2 * n + 100, "{}", r.log);
    assert_continuous(&ts, 1.0 / (256.0 * 8.0));
    let markers = r.markers();
    let texts: Vec<&str> = markers.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(texts, vec!["a", "b", "a"], "{markers:?}");
    for (k, m) in markers.iter().enumerate() {
        assert!(
            (m.1 - ts[k * n]).abs() <= 1.0 / (256.0 * 8.0),
            "{} stamped {}, its first sample {}",
            m.0,
            m.1,
            ts[k * n]
        );
    }
}

#[test]
fn no_markers_flag_publishes_no_marker_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_small_files(dir.path());
    let r = replay_with_markers(
        &[&a, &b],
        "nomarkers",
        2 * 2560,
        3.0,
        &["--speed", "8", "--no-markers"],
    );
    assert!(
        r.out["markers_stream"].is_null(),
        "{:?}",
        r.out["markers_stream"]
    );
    assert_eq!(r.timestamps().len(), 2 * 2560);
    assert_continuous(&r.timestamps(), 1.0 / (256.0 * 8.0));
}

#[test]
fn files_with_different_layouts_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
        .arg("replay")
        .arg(shared().join("data/eegmat/Subject00_1.edf"))
        .arg(shared().join("data/eegmmidb/S001R04.edf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("S001R04.edf cannot follow")
            && err.contains("Subject00_1.edf")
            && err.contains("sample rate is 160 Hz, not 500 Hz"),
        "{err}"
    );
}
