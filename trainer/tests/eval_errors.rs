//! `labram-trainer evaluate` where it used to say too little or too much: windows
//! of one class only (AUROC and PR-AUC undefined, the rest still printed), and
//! inputs whose errors named the wrong fault or the path twice (a directory, a
//! recording with 0-s data records, a file that is not an ONNX model). Real
//! binary, real eegmat recordings, the golden reference export.

use std::path::{Path, PathBuf};

use labram_core::card::{FilterMode, ModelCard, Preprocessing, Provenance, CARD_FORMAT};

mod common;
use common::{shared, stderr, trainer};

const EEGMAT19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];

/// `model` (copied into `dir` as `name`) with a card for eegmat's 19 electrodes,
/// 4-patch windows every 4 s, causal preprocessing, classes rest / arithmetic.
fn with_card(dir: &Path, model: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    std::fs::copy(model, &dest).unwrap();
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
        hop_s: 4.0,
        preprocessing: Preprocessing {
            mode: FilterMode::Causal,
            ..Preprocessing::default()
        },
        provenance: Provenance::default(),
    };
    card.save(&ModelCard::path_for(&dest)).unwrap();
    dest
}

fn golden_model(dir: &Path) -> PathBuf {
    with_card(
        dir,
        &shared().join("golden/reference_torch_export.onnx"),
        "m.onnx",
    )
}

fn eegmat(name: &str) -> PathBuf {
    shared().join("data/eegmat").join(name)
}

fn evaluate(model: &Path, recording: &str) -> std::process::Output {
    trainer(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--recording",
        recording,
    ])
}

#[test]
fn one_class_prints_what_is_defined_and_why_the_rest_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path());
    let task = eegmat("Subject00_2.edf");
    let o = evaluate(&model, &format!("{}=arithmetic", task.display()));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once(": ")).collect();
    let keys: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "windows",
            "accuracy",
            "balanced accuracy",
            "AUROC",
            "PR-AUC"
        ],
        "{out}"
    );
    // 62 s → 15 windows of 4 s every 4 s.
    assert_eq!(lines[0].1, "15");
    let acc: f64 = lines[1].1.parse().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{out}");
    // With one class, balanced accuracy is that class's recall: the accuracy.
    assert_eq!(lines[1].1, lines[2].1);
    assert_eq!(lines[3].1, "undefined");
    assert_eq!(lines[4].1, "undefined");
    // Why, and what to add.
    assert!(
        err.contains("AUROC and PR-AUC are undefined")
            && err.contains("every window is of class `arithmetic`")
            && err.contains("--recording FILE=rest"),
        "{err}"
    );
    // The per-recording window count and mean probabilities, without --verbose.
    let rec = err
        .lines()
        .find(|l| l.contains("Subject00_2.edf: 15 windows, class arithmetic, mean p: rest "))
        .unwrap_or_else(|| panic!("no per-recording line in:\n{err}"));
    let p: Vec<f64> = rec
        .rsplit("mean p: ")
        .next()
        .unwrap()
        .split(", ")
        .map(|c| c.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(p.len(), 2, "{rec}");
    assert!((p[0] + p[1] - 1.0).abs() < 2e-3, "{rec}");
}

/// The error line of a failed run: it must name `path` exactly once.
fn error_naming_once(o: &std::process::Output, path: &Path) -> String {
    assert!(!o.status.success());
    let err = stderr(o);
    let p = path.display().to_string();
    let line = err
        .lines()
        .find(|l| l.contains(&p))
        .unwrap_or_else(|| panic!("no line names {p}:\n{err}"));
    assert_eq!(line.matches(&p).count(), 1, "path repeated: {line}");
    err
}

#[test]
fn a_directory_as_recording_is_named_as_such_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path());
    let folder = dir.path().join("recordings");
    std::fs::create_dir(&folder).unwrap();
    let o = evaluate(&model, &format!("{}=rest", folder.display()));
    let err = error_naming_once(&o, &folder);
    assert!(
        err.contains("is a directory; expected an EDF/BDF recording file")
            && !err.contains("os error"),
        "{err}"
    );
}

#[test]
fn zero_second_records_are_named_not_missing_electrodes() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path());
    let mut bytes = std::fs::read(eegmat("Subject00_2.edf")).unwrap();
    // "duration of a data record" (bytes 244..252) → 0.
    bytes[244..252].copy_from_slice(b"0       ");
    let edf = dir.path().join("zero.edf");
    std::fs::write(&edf, bytes).unwrap();
    let o = evaluate(&model, &format!("{}=rest", edf.display()));
    let err = error_naming_once(&o, &edf);
    assert!(
        err.contains("duration of a data record")
            && err.contains("is 0 s")
            && !err.contains("missing electrode"),
        "{err}"
    );
}

#[test]
fn a_model_that_is_not_onnx_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // A torch checkpoint given where the export belongs.
    let model = with_card(
        dir.path(),
        &shared().join("golden/finetune_base.pth"),
        "ckpt.onnx",
    );
    let o = evaluate(
        &model,
        &format!("{}=rest", eegmat("Subject00_1.edf").display()),
    );
    let err = error_naming_once(&o, &model);
    assert!(
        err.contains("ckpt.onnx is not an ONNX model") && err.contains("labram-trainer export"),
        "{err}"
    );
}
