//! `labram-trainer make-dataset` end to end, through the real binary, on real
//! recordings (`../shared/data`) and on TUH-shaped trees whose EDF files
//! pyedflib writes here (the TUH corpora cannot be shipped). Every window is
//! checked against the daemon crate's own reader and preprocessing, called
//! directly, so a dataset provably holds what the daemon would see.
//! The pretraining store is checked against h5py in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

use labram_core::card::{FilterMode, Preprocessing};
use labram_core::electrodes::{classify_label, LabelKind, TUH_STANDARD_23};
use labram_core::recording::EdfReader;
use labram_trainer::data::format::Dataset;
use labram_trainer::data::pretrain::read_store;

mod common;
use common::{python as venv_python, shared as shared_root, stderr, trainer};

fn shared() -> PathBuf {
    shared_root().join("data")
}

fn python() -> PathBuf {
    venv_python("pyedflib, h5py")
}

fn py(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tuab DIR`, `tuev DIR`: TUH-shaped trees. `h5dump FILE`: h5py's view of a
/// store as JSON. `h5write FILE`: a store in the official layout, as h5py and
/// the official maker write it (float64 `eeg`, list-of-str `chOrder`).
const SCRIPT: &str = r#"
import sys, os, json
import numpy as np

STD23 = ["FP1","FP2","F3","F4","C3","C4","P3","P4","O1","O2","F7","F8","T3","T4","T5","T6","A1","A2","FZ","CZ","PZ","T1","T2"]

def write_edf(path, labels, fs, secs, seed):
    import pyedflib
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(fs * secs)
    t = np.arange(n) / fs
    sigs, hdrs = [], []
    for k, lab in enumerate(labels):
        x = 20 * rng.standard_normal(n) + 30 * np.sin(2 * np.pi * (3 + k) * t)
        sigs.append(x)
        hdrs.append(dict(label=lab, dimension="uV", sample_frequency=fs, physical_min=-500.0,
                         physical_max=500.0, digital_min=-32768, digital_max=32767,
                         transducer="", prefilter=""))
    w = pyedflib.EdfWriter(path, len(labels), file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders(hdrs)
    w.writeSamples(sigs)
    w.close()

def tuh_labels(drop=None):
    labs = ["EEG %s-REF" % c for c in STD23 if c != drop]
    # Channels the official makers drop: unknown or non-EEG labels.
    return labs[:5] + ["EEG EKG1-REF"] + labs[5:] + ["EEG 26-REF", "PHOTIC-REF"]

def tuab(d):
    files = [
        ("train/normal/01_tcp_ar/aaaaaaaa_s001_t000.edf", None),
        ("train/normal/01_tcp_ar/aaaaaaaa_s002_t000.edf", None),
        ("train/normal/01_tcp_ar/aaaaaaab_s001_t000.edf", None),
        ("train/normal/01_tcp_ar/aaaaaaac_s001_t001.edf", None),
        ("train/normal/01_tcp_ar/aaaaaaaj_s001_t000.edf", "CZ"),
        ("train/abnormal/01_tcp_ar/aaaaaaad_s001_t000.edf", None),
        ("train/abnormal/01_tcp_ar/aaaaaaae_s003_t002.edf", None),
        ("train/abnormal/01_tcp_ar/aaaaaaaf_s001_t000.edf", None),
        ("eval/normal/01_tcp_ar/aaaaaaag_s001_t000.edf", None),
        ("eval/abnormal/01_tcp_ar/aaaaaaah_s001_t000.edf", None),
        ("train/normal/02_tcp_le/aaaaaaak_s001_t000.edf", None),
    ]
    for i, (rel, drop) in enumerate(files):
        write_edf(os.path.join(d, rel), tuh_labels(drop), 250, 25, i)
    bad = os.path.join(d, "train/normal/01_tcp_ar/aaaaaaai_s001_t000.edf")
    data = open(os.path.join(d, files[0][0]), "rb").read()
    open(bad, "wb").write(data[: len(data) // 3])

def tuev(d):
    rec = "13,1.0,2.0,6\n2,10.0,11.0,1\n5,18.5,19.5,4\n7,10.0,11.0,2\n"
    files = [("train", "aaaaaaaa", 1), ("train", "aaaaaaaa", 2), ("train", "aaaaaaab", 1),
             ("train", "aaaaaaad", 1), ("train", "aaaaaaae", 1), ("train", "aaaaaaaf", 1),
             ("eval", "aaaaaaac", 1)]
    for i, (split, s, k) in enumerate(files):
        p = os.path.join(d, split, s, "%s_%08d.edf" % (s, k))
        write_edf(p, tuh_labels(), 256, 20, 100 + i)
        if k == 1:  # the second session of aaaaaaaa has no .rec
            open(p[:-3] + "rec", "w").write(rec)

def h5dump(path):
    import h5py
    f = h5py.File(path, "r")
    out = {}
    for g in f:
        d = f[g]["eeg"]
        x = d[()]
        out[g] = dict(shape=list(d.shape), dtype=str(d.dtype), chunks=list(d.chunks),
                      lFreq=float(d.attrs["lFreq"]), hFreq=float(d.attrs["hFreq"]),
                      rsFreq=int(d.attrs["rsFreq"]), rsFreq_type=str(d.attrs["rsFreq"].dtype),
                      chOrder=[str(c) for c in d.attrs["chOrder"]],
                      mode=str(d.attrs["filterMode"]),
                      first=[float(v) for v in x[:, 0]], last=[float(v) for v in x[:, -1]],
                      sum=float(np.sum(x.astype(np.float64))))
    print(json.dumps(out))

def h5write(path):
    import h5py
    f = h5py.File(path, "w")
    for name, chans, n in [("rec_a", ["FP1", "CZ", "O2"], 450), ("rec_b", ["FTT9H", "PZ"], 200)]:
        x = np.arange(len(chans) * n, dtype=np.float64).reshape(len(chans), n) / 8.0 - 7.0
        g = f.create_group(name)
        d = g.create_dataset("eeg", data=x, chunks=(len(chans), 200))
        d.attrs["lFreq"] = 0.1
        d.attrs["hFreq"] = 75.0
        d.attrs["rsFreq"] = 200
        d.attrs["chOrder"] = chans
    f.close()

cmd = sys.argv[1]
{"tuab": tuab, "tuev": tuev, "h5dump": h5dump, "h5write": h5write}[cmd](sys.argv[2])
"#;

/// The daemon crate's view of a recording: `electrodes` in that order,
/// preprocessed with `pre`.
fn reference(path: &Path, electrodes: &[&str], pre: &Preprocessing) -> Vec<Vec<f32>> {
    let mut r = EdfReader::open(path).unwrap();
    let labels: Vec<String> = r.header().signals.iter().map(|s| s.label.clone()).collect();
    let rows: Vec<usize> = electrodes
        .iter()
        .map(|e| {
            labels
                .iter()
                .position(|l| {
                    classify_label(l)
                        == LabelKind::Electrode(labram_core::electrodes::electrode(e).unwrap())
                })
                .unwrap_or_else(|| panic!("{e} not in {labels:?}"))
        })
        .collect();
    let rate = r.header().sample_rate_hz(rows[0]).unwrap();
    let x = r.read_all_uv(&rows).unwrap();
    labram_core::dsp::preprocess(&x, rate, pre).unwrap()
}

fn assert_window_eq(ds: &Dataset, i: usize, expected: &[f32]) {
    let got = ds.window(i).unwrap();
    assert_eq!(got.len(), expected.len());
    let max = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max == 0.0,
        "window {i} differs from the reference by up to {max} µV"
    );
}

const EEGMAT19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];

#[test]
fn eegmat_causal_windows_labels_split_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eegmat");
    let data = shared().join("eegmat");
    let files: Vec<String> = ["Subject00_1", "Subject00_2", "Subject01_2"]
        .iter()
        .map(|f| data.join(format!("{f}.edf")).display().to_string())
        .collect();
    let mut args = vec![
        "make-dataset",
        "eegmat",
        "--mode",
        "causal",
        "--train",
        "0",
        "--test",
        "1",
        "--window-patches",
        "4",
        "--hop-s",
        "2",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    let o = trainer(&args);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("wrote 150 windows from 3 file(s) (test 30, train 120)"),
        "{}",
        stderr(&o)
    );

    let ds = Dataset::open(&out).unwrap();
    let meta = ds.meta();
    assert_eq!(meta.classes, vec!["rest", "arithmetic"]);
    assert_eq!(meta.channels, EEGMAT19);
    assert_eq!(meta.window_patches, 4);
    assert_eq!(meta.preprocessing.mode, FilterMode::Causal);
    assert_eq!(meta.preprocessing.bandpass_hz, Some([0.1, 75.0]));
    assert_eq!(meta.preprocessing.notch_hz, Some(50.0));
    assert_eq!(meta.preprocessing.sample_rate_hz, 200.0);
    assert_eq!(meta.splits["train"].class_counts, vec![90, 30]);
    assert_eq!(meta.splits["test"].subjects, vec!["Subject01"]);
    assert!(meta
        .command
        .starts_with("labram-trainer make-dataset eegmat --mode causal"));
    // Sources are names, never local paths.
    assert_eq!(
        meta.sources,
        vec!["Subject00_1.edf", "Subject00_2.edf", "Subject01_2.edf"]
    );

    // Window 91 = second window of Subject00_2 (label 1, offset 400), checked
    // against the daemon crate's reader and causal chain called directly.
    assert_eq!(ds.labels()[91], 1);
    assert_eq!(ds.offsets()[91], 400);
    assert_eq!(meta.subjects[ds.subjects()[91] as usize], "Subject00");
    assert_eq!(meta.sources[ds.sources()[91] as usize], "Subject00_2.edf");
    let pre = meta.preprocessing.clone();
    let reference = reference(&data.join("Subject00_2.edf"), &EEGMAT19, &pre);
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| r[400..1200].to_vec())
        .collect();
    assert_window_eq(&ds, 91, &expected);

    let test = Dataset::open_split(&out, "test").unwrap();
    assert_eq!(test.len(), 30);
    assert!(test.labels().iter().all(|&l| l == 1));
}

#[test]
fn eegmat_refuses_the_external_test_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let o = trainer(&[
        "make-dataset",
        "eegmat",
        "--train",
        "0-21",
        "--test",
        "25-28",
        "--output",
        out.to_str().unwrap(),
        shared().join("eegmat/Subject00_1.edf").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("external test set"), "{}", stderr(&o));
    assert!(!out.join("meta.json").exists());
}

#[test]
fn annotated_eegmmidb_events_become_labelled_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mi");
    let o = trainer(&[
        "make-dataset",
        "annotated",
        "--window-patches",
        "4",
        "--output",
        out.to_str().unwrap(),
        shared().join("eegmmidb").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let ds = Dataset::open(&out).unwrap();
    let meta = ds.meta();
    assert_eq!(meta.classes, vec!["T0", "T1", "T2"]);
    assert_eq!(meta.channels.len(), 64);
    assert_eq!(meta.channels[0], "FC5");
    assert_eq!(meta.preprocessing.mode, FilterMode::ZeroPhase);
    // 30 events of 4.1-4.2 s, one 4-s window each from the onset.
    assert_eq!(ds.len(), 30);
    assert_eq!(meta.splits["train"].class_counts, vec![15, 8, 7]);
    assert_eq!(meta.subjects, vec!["S001"]);
    // Second event: T2 at 4.2 s → sample 840 at 200 Hz.
    assert_eq!(ds.labels()[1], 2);
    assert_eq!(ds.offsets()[1], 840);
    assert_eq!(ds.labels()[29], 1);
    assert_eq!(ds.offsets()[29], (120.4f64 * 200.0).round() as i64);
    let names: Vec<&str> = meta.channels.iter().map(String::as_str).collect();
    let reference = reference(
        &shared().join("eegmmidb/S001R04.edf"),
        &names,
        &meta.preprocessing,
    );
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| r[840..1640].to_vec())
        .collect();
    assert_window_eq(&ds, 1, &expected);
}

#[test]
fn tuab_tree_official_layout_labels_and_subject_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("edf");
    py(&["tuab", root.to_str().unwrap()]);
    let out = dir.path().join("tuab");
    let o = trainer(&[
        "make-dataset",
        "tuab",
        "--root",
        root.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let err = stderr(&o);
    // 9 good files × 2 windows of 10 s (25 s recordings); the 02_tcp_le file is not read.
    assert!(err.contains("wrote 18 windows from 9 file(s)"), "{err}");
    assert!(
        err.contains("skipped 2 file(s): 1 channels, 1 unreadable"),
        "{err}"
    );
    assert!(err.contains("missing electrode(s) CZ"), "{err}");

    let ds = Dataset::open(&out).unwrap();
    let meta = ds.meta();
    assert_eq!(meta.channels, TUH_STANDARD_23);
    assert_eq!(meta.classes, vec!["normal", "abnormal"]);
    assert_eq!(meta.window_patches, 10);
    assert_eq!(meta.preprocessing.mode, FilterMode::ZeroPhase);
    assert_eq!(meta.splits["test"].windows, 4);
    let mut test_subjects = meta.splits["test"].subjects.clone();
    test_subjects.sort();
    assert_eq!(test_subjects, vec!["aaaaaaag", "aaaaaaah"]);
    // Subjects never straddle splits; labels follow the folder.
    let train: Vec<&String> = meta.splits["train"].subjects.iter().collect();
    let val: Vec<&String> = meta.splits["val"].subjects.iter().collect();
    assert!(
        train.iter().all(|s| !val.contains(s)),
        "{train:?} / {val:?}"
    );
    // Per class: abnormal 3 subjects → 2 train + 1 val; normal 5 (incl. the two
    // skipped files' subjects) → 4 train + 1 val.
    assert_eq!(train.len() + val.len(), 6, "{train:?} {val:?}");
    for i in 0..ds.len() {
        let source = &meta.sources[ds.sources()[i] as usize];
        let expected = usize::from(source.contains("/abnormal/"));
        assert_eq!(ds.labels()[i] as usize, expected, "{source}");
    }
    // Content: second window of the first recording, 23 channels in chOrder_standard order.
    let first = meta
        .sources
        .iter()
        .position(|s| s.ends_with("aaaaaaaa_s001_t000.edf"))
        .unwrap() as i64;
    let i = (0..ds.len())
        .find(|&i| ds.sources()[i] == first && ds.offsets()[i] == 2000)
        .unwrap();
    let reference = reference(
        &root.join("train/normal/01_tcp_ar/aaaaaaaa_s001_t000.edf"),
        &TUH_STANDARD_23,
        &meta.preprocessing,
    );
    assert_eq!(reference[0].len(), 5000);
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| r[2000..4000].to_vec())
        .collect();
    assert_window_eq(&ds, i, &expected);
}

#[test]
fn tuev_tree_rec_events_wrap_around_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("edf");
    py(&["tuev", root.to_str().unwrap()]);
    let out = dir.path().join("tuev");
    let o = trainer(&[
        "make-dataset",
        "tuev",
        "--mode",
        "causal",
        "--root",
        root.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(err.contains("wrote 24 windows from 6 file(s)"), "{err}");
    assert!(err.contains("skipped 1 file(s): 1 no labels"), "{err}");
    assert!(err.contains("aaaaaaaa_00000002.rec"), "{err}");
    let ds = Dataset::open(&out).unwrap();
    let meta = ds.meta();
    assert_eq!(
        meta.classes,
        vec!["spsw", "gped", "pled", "eyem", "artf", "bckg"]
    );
    assert_eq!(meta.window_patches, 5);
    assert_eq!(meta.preprocessing.mode, FilterMode::Causal);
    // Five train subjects: int(5 × 0.2) = 1 validates; eval → test.
    assert_eq!(meta.splits["val"].subjects.len(), 1);
    assert_eq!(meta.splits["test"].subjects, vec!["aaaaaaac"]);
    assert_eq!(meta.splits["test"].windows, 4);
    // .rec labels 6, 1, 4, 2 → 5, 0, 3, 1.
    assert_eq!(&ds.labels()[..4], &[5, 0, 3, 1]);
    let src = &meta.sources[ds.sources()[0] as usize];
    let reference = reference(&root.join(src), &TUH_STANDARD_23, &meta.preprocessing);
    let n = reference[0].len();
    assert_eq!(n, 4000);
    // Event at 1-2 s: 1 s ... window from -1 s wraps to the end of the recording.
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| {
            r[n - 200..]
                .iter()
                .chain(&r[..800])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_window_eq(&ds, 0, &expected);
    assert_eq!(ds.offsets()[0], (n - 200) as i64);
    // Event at 18.5-19.5 s: the window runs 1.5 s past the end.
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| {
            r[3300..]
                .iter()
                .chain(&r[..300])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_window_eq(&ds, 2, &expected);
    // Event at 10-11 s: plain window 8-13 s.
    let expected: Vec<f32> = reference
        .iter()
        .flat_map(|r| r[1600..2600].to_vec())
        .collect();
    assert_window_eq(&ds, 1, &expected);
}

#[test]
fn pretrain_h5_is_read_by_h5py_and_bad_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.h5");
    let bad = dir.path().join("broken.edf");
    let good = std::fs::read(shared().join("eegmat/Subject01_2.edf")).unwrap();
    std::fs::write(&bad, &good[..7000]).unwrap();
    let a = shared().join("eegmat/Subject00_2.edf");
    let b = shared().join("eegmat/Subject01_2.edf");
    let o = trainer(&[
        "make-dataset",
        "pretrain-h5",
        "--output",
        store.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(err.contains("wrote 2 recordings from 2 file(s)"), "{err}");
    assert!(err.contains("skipped 1 file(s): 1 unreadable"), "{err}");
    assert!(err.contains("skipped broken.edf: "), "{err}");

    let dump: serde_json::Value =
        serde_json::from_str(&py(&["h5dump", store.to_str().unwrap()])).unwrap();
    let ours = read_store(&store).unwrap();
    assert_eq!(ours.len(), 2);
    let pre = Preprocessing {
        mode: FilterMode::ZeroPhase,
        ..Preprocessing::default()
    };
    for (rec, path) in ours.iter().zip([&a, &b]) {
        let g = &dump[&rec.name];
        assert_eq!(g["dtype"], "float32");
        assert_eq!(g["shape"], serde_json::json!([19, 12400]));
        assert_eq!(g["chunks"], serde_json::json!([19, 200]));
        assert_eq!(g["lFreq"], 0.1);
        assert_eq!(g["hFreq"], 75.0);
        assert_eq!(g["rsFreq"], 200);
        assert_eq!(g["rsFreq_type"], "int64");
        assert_eq!(g["mode"], "zero-phase");
        let names: Vec<String> = serde_json::from_value(g["chOrder"].clone()).unwrap();
        assert_eq!(names, EEGMAT19);
        assert_eq!(rec.channels, EEGMAT19);
        // h5py sees exactly the values the daemon crate's chain computes.
        let reference = reference(path, &EEGMAT19, &pre);
        let first: Vec<f64> = serde_json::from_value(g["first"].clone()).unwrap();
        let last: Vec<f64> = serde_json::from_value(g["last"].clone()).unwrap();
        for c in 0..19 {
            // (serde_json's default float parsing may be off in the last f64
            // digit; the stored values are f32, compared exactly as such.)
            assert_eq!(first[c] as f32, reference[c][0]);
            assert_eq!(last[c] as f32, *reference[c].last().unwrap());
            assert_eq!(rec.data[c], reference[c]);
        }
        let sum: f64 = reference.iter().flatten().map(|&v| v as f64).sum();
        let h5sum = g["sum"].as_f64().unwrap();
        assert!(
            (sum - h5sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{sum} vs {h5sum}"
        );
    }
    assert_eq!(ours[0].name, "Subject00_2");

    // Nothing usable: non-zero exit, the reason printed.
    let o = trainer(&[
        "make-dataset",
        "pretrain-h5",
        "--output",
        dir.path().join("none.h5").to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nothing usable was written"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("none.h5").exists());
}

#[test]
fn h5py_written_store_reads_in_rust() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("official.hdf5");
    py(&["h5write", store.to_str().unwrap()]);
    let recs = read_store(&store).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].name, "rec_a");
    assert_eq!(recs[0].channels, vec!["FP1", "CZ", "O2"]);
    assert_eq!(recs[0].rate_hz, 200.0);
    assert_eq!(recs[0].band_hz, Some([0.1, 75.0]));
    assert_eq!(recs[0].data.len(), 3);
    assert_eq!(recs[0].data[0].len(), 450);
    // x = arange / 8 - 7: exact in float32.
    assert_eq!(recs[0].data[0][0], -7.0);
    assert_eq!(recs[0].data[2][449], (3 * 450 - 1) as f32 / 8.0 - 7.0);
    assert_eq!(recs[1].channels, vec!["FTT9H", "PZ"]);
    assert_eq!(recs[1].data[1][199], 399.0 / 8.0 - 7.0);
}
