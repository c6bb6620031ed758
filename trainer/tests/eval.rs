//! Evaluation end to end: the classical baseline on datasets whose answer is
//! known, and `labram-trainer evaluate` running a real exported LaBraM (the
//! golden reference export, untrained) over real eegmat recordings the way the
//! daemon windows them, cross-checked against the same model run by
//! onnxruntime-python and against the dataset path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use labram_core::card::{FilterMode, ModelCard, Preprocessing, Provenance, CARD_FORMAT};
use labram_trainer::data::format::{Dataset, DatasetWriter, Meta, Window, FORMAT};
use labram_trainer::eval::baseline;
use labram_trainer::eval::Report;

mod common;
use common::{python as venv_python, shared, trainer};

fn python() -> PathBuf {
    venv_python("onnxruntime")
}

const EEGMAT19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];

/// A deterministic noise source (xorshift) for synthetic EEG.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
    }
}

/// Windows of 2 channels × 2 patches: noise plus a sine whose frequency is the
/// class's (and a per-subject amplitude), in train / val / test subjects.
fn synthetic(dir: &Path, freqs: &[f64]) {
    let classes: Vec<String> = (0..freqs.len()).map(|k| format!("c{k}")).collect();
    let meta = Meta {
        format: FORMAT.into(),
        kind: "synthetic".into(),
        task: "sine frequency".into(),
        classes,
        channels: vec!["C3".into(), "C4".into()],
        patch_size: 200,
        window_patches: 2,
        hop_s: Some(2.0),
        windowing: "synthetic".into(),
        preprocessing: Preprocessing::default(),
        subjects: vec![],
        sources: vec![],
        splits: BTreeMap::new(),
        command: "test".into(),
        skipped: vec![],
        notes: BTreeMap::new(),
    };
    let mut w = DatasetWriter::create(dir, meta, 1 << 20, false).unwrap();
    let mut noise = Noise(0x9E3779B97F4A7C15);
    for subject in 0..10 {
        let split = match subject {
            0..=5 => "train",
            6 | 7 => "val",
            _ => "test",
        };
        let s = w.subject_index(&format!("s{subject}"));
        let amp = 5.0 + subject as f64;
        for i in 0..30 {
            let label = i % freqs.len();
            let data: Vec<f32> = (0..2 * 400)
                .map(|k| {
                    let t = (k % 400) as f64 / 200.0;
                    let sine =
                        amp * (2.0 * std::f64::consts::PI * freqs[label] * t + i as f64).sin();
                    sine as f32 + 20.0 * noise.next()
                })
                .collect();
            w.push(
                split,
                &Window {
                    data,
                    label,
                    subject: s,
                    source: 0,
                    offset: i * 400,
                },
            )
            .unwrap();
        }
    }
    w.source_index("synthetic");
    w.finish().unwrap();
}

#[test]
fn baseline_finds_band_power_differences_binary_and_multiclass() {
    let dir = tempfile::tempdir().unwrap();
    // Alpha (10 Hz) vs beta (20 Hz).
    synthetic(dir.path(), &[10.0, 20.0]);
    let ds = Dataset::open(dir.path()).unwrap();
    let r = baseline::run(&ds).unwrap();
    assert_eq!(r.train_windows, 180);
    assert_eq!(r.features, 20);
    assert_eq!(r.grid.len(), baseline::C_GRID.len());
    match r.test.unwrap() {
        Report::Binary {
            balanced_accuracy,
            auroc,
            pr_auc,
            n,
        } => {
            assert_eq!(n, 60);
            assert!(balanced_accuracy > 0.95, "{balanced_accuracy}");
            assert!(auroc > 0.99 && pr_auc > 0.99, "{auroc} {pr_auc}");
        }
        other => panic!("expected binary metrics, got {other:?}"),
    }
    // Theta / alpha / beta: three classes.
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), &[6.0, 10.0, 20.0]);
    let ds = Dataset::open(dir.path()).unwrap();
    let r = baseline::run(&ds).unwrap();
    match r.test.unwrap() {
        Report::Multiclass {
            balanced_accuracy,
            cohen_kappa,
            f1_weighted,
            ..
        } => {
            assert!(balanced_accuracy > 0.9, "{balanced_accuracy}");
            assert!(
                cohen_kappa > 0.85 && f1_weighted > 0.9,
                "{cohen_kappa} {f1_weighted}"
            );
        }
        other => panic!("expected multi-class metrics, got {other:?}"),
    }
}

#[test]
fn baseline_cli_reports_val_and_test() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), &[10.0, 20.0]);
    let o = trainer(&[
        "evaluate",
        "--baseline",
        "--dataset",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for line in [
        "[val] balanced accuracy: ",
        "[test] AUROC: ",
        "[test] PR-AUC: ",
        "train windows: 180",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
}

/// The golden reference export with a card for eegmat's 19 electrodes,
/// 4-patch windows every `hop_s`, causal preprocessing.
fn model_with_card(dir: &Path, hop_s: f64) -> PathBuf {
    let model = dir.join("m.onnx");
    std::fs::copy(shared().join("golden/reference_torch_export.onnx"), &model).unwrap();
    let card = ModelCard {
        format: CARD_FORMAT,
        adaptation: None,
        architecture: "labram_base_patch200_200".into(),
        trained: false,
        task: "evaluate test (golden seeded weights)".into(),
        classes: vec!["rest".into(), "arithmetic".into()],
        channels: EEGMAT19.iter().map(|s| s.to_string()).collect(),
        patch_size: 200,
        sample_rate_hz: 200.0,
        window_patches: 4,
        hop_s,
        preprocessing: Preprocessing {
            mode: FilterMode::Causal,
            ..Preprocessing::default()
        },
        provenance: Provenance::default(),
    };
    card.save(&ModelCard::path_for(&model)).unwrap();
    model
}

fn metric_lines(stdout: &[u8]) -> Vec<(String, f64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
        .collect()
}

#[test]
fn evaluate_recordings_as_the_daemon_windows_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_card(dir.path(), 4.0);
    let eegmat = shared().join("data/eegmat");
    let rest = eegmat.join("Subject00_1.edf");
    let task = eegmat.join("Subject00_2.edf");
    let o = trainer(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--recording",
        &format!("{}=rest", rest.display()),
        "--recording",
        &format!("{}=arithmetic", task.display()),
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("trained: false"));
    let lines = metric_lines(&o.stdout);
    let names: Vec<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
    // 182 s → 45 windows of 4 s every 4 s, 62 s → 15.
    assert_eq!(
        names,
        vec!["windows", "balanced accuracy", "AUROC", "PR-AUC"]
    );
    assert_eq!(lines[0].1, 60.0);
    for (name, v) in &lines[1..] {
        assert!((0.0..=1.0).contains(v), "{name} {v}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout
        .lines()
        .any(|l| l.len() == "balanced accuracy: 0.0000".len()
            && l.starts_with("balanced accuracy: ")));

    // The same windows through make-dataset (causal, 4 s every 4 s) and
    // `evaluate --dataset` give the same figures.
    let ds_dir = dir.path().join("ds");
    let o2 = trainer(&[
        "make-dataset",
        "eegmat",
        "--mode",
        "causal",
        "--train",
        "0",
        "--window-patches",
        "4",
        "--hop-s",
        "4",
        "--output",
        ds_dir.to_str().unwrap(),
        rest.to_str().unwrap(),
        task.to_str().unwrap(),
    ]);
    assert!(o2.status.success());
    let o3 = trainer(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        ds_dir.to_str().unwrap(),
        "--split",
        "train",
    ]);
    assert!(o3.status.success());
    assert_eq!(metric_lines(&o3.stdout), lines);

    // An independent run of the same model with onnxruntime-python on the
    // dataset's windows gives the same AUROC.
    let script = r#"
import sys, glob, numpy as np, onnxruntime as ort
from safetensors.numpy import load_file
d = load_file(glob.glob(sys.argv[2] + "/train-*.safetensors")[0])
chans = np.array([0,1,3,18,22,16,24,89,91,40,44,90,92,62,66,81,83,20,42,64], dtype=np.int64)
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = np.concatenate([s.run(None, {"eeg": d["windows"][i:i+16], "input_chans": chans})[0] for i in range(0, len(d["windows"]), 16)])
p = np.exp(logits - logits.max(1, keepdims=True)); p = p[:, 1] / p.sum(1)
y = d["labels"]
pos, neg = p[y == 1], p[y == 0]
auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
print(len(y), auc)
"#;
    let out = Command::new(python())
        .args([
            "-c",
            script,
            model.to_str().unwrap(),
            ds_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    assert_eq!(it.next(), Some("60"));
    let auc: f64 = it.next().unwrap().parse().unwrap();
    let ours = lines.iter().find(|(k, _)| k == "AUROC").unwrap().1;
    assert!((auc - ours).abs() < 1e-4, "python AUROC {auc}, ours {ours}");

    // A class the card does not know is an error naming the classes.
    let o4 = trainer(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--recording",
        &format!("{}=sleep", rest.display()),
    ]);
    assert!(!o4.status.success());
    let err = String::from_utf8_lossy(&o4.stderr);
    assert!(
        err.contains("`sleep`") && err.contains("rest, arithmetic"),
        "{err}"
    );
}
