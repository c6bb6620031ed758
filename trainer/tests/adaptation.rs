//! `labram-trainer evaluate --session` under the adaptation protocols, end to
//! end on real eegmat people (Subject25 and Subject26, rest then arithmetic),
//! with band-power heads trained on four other real people.

use std::path::PathBuf;

mod common;
use common::{shared, stderr, trainer};

fn eegmat() -> PathBuf {
    shared().join("data/eegmat")
}

fn session(s: u32) -> String {
    let d = eegmat();
    format!(
        "rest={},arithmetic={}",
        d.join(format!("Subject{s:02}_1.edf")).display(),
        d.join(format!("Subject{s:02}_2.edf")).display()
    )
}

/// `name: value` lines of stdout.
fn figure(out: &str, name: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no `{name}:` line in\n{out}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`{name}` is not a number in\n{out}"))
}

fn evaluate(mode: &str, extra: &[&str]) -> std::process::Output {
    let (s25, s26) = (session(25), session(26));
    let data = eegmat();
    let data = data.display().to_string();
    let mut args = vec![
        "evaluate",
        "--adaptation",
        mode,
        "--baseline-s",
        "60",
        "--session",
        &s25,
        "--session",
        &s26,
        "--holdout",
        "rest=60,arithmetic=20",
    ];
    args.extend_from_slice(extra);
    let train = ["--train-eegmat", data.as_str(), "--train-subjects", "0-3"];
    if mode != "calibration" {
        args.extend_from_slice(&train);
    }
    trainer(&args)
}

#[test]
fn every_protocol_scores_the_same_real_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut windows = Vec::new();
    for mode in ["baseline", "none", "calibration"] {
        let csv = dir.path().join(format!("{mode}.csv"));
        let csv_arg = csv.display().to_string();
        let out = evaluate(mode, &["--verbose", "--predictions", &csv_arg]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ba = figure(&text, "balanced accuracy");
        let auc = figure(&text, "auroc");
        assert!(
            (0.0..=1.0).contains(&ba) && (0.0..=1.0).contains(&auc),
            "{text}"
        );
        // Per person: rest after 60 s of 182 s and arithmetic after 20 s of
        // 62 s, 4-s windows every 4 s: 30 + 10 windows (adaptation.py's count).
        let n = figure(&text, "windows");
        assert_eq!(n, 80.0, "{mode}: {text}");
        assert!(
            text.contains("session Subject25: windows 40")
                && text.contains("session Subject26: windows 40"),
            "{text}"
        );
        windows.push(n);
        check_predictions(&std::fs::read_to_string(&csv).expect("predictions"), mode);
        // Each person's own calibration separates rest from arithmetic well.
        if mode == "calibration" {
            assert!(ba > 0.7, "calibration balanced accuracy {ba}\n{text}");
        }
    }
}

#[test]
fn protocol_errors_name_the_fix() {
    // `baseline` with band power and no training people.
    let (s25, s26) = (session(25), session(26));
    let out = trainer(&["evaluate", "--adaptation", "baseline", "--session", &s25]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--train-session"), "{}", stderr(&out));
    // A calibration longer than the recording holds: 62 s of arithmetic, 100 asked.
    let out = trainer(&[
        "evaluate",
        "--adaptation",
        "calibration",
        "--session",
        &s26,
        "--holdout",
        "rest=60,arithmetic=100",
    ]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("`arithmetic` has 62.0 s of the 100.0 s asked")
            && e.contains("--holdout arithmetic=62"),
        "{e}"
    );
    // A class the protocol does not know.
    let bad = s25.replace("arithmetic=", "maths=");
    let out = trainer(&["evaluate", "--adaptation", "calibration", "--session", &bad]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`maths` is not one of rest, arithmetic"),
        "{}",
        stderr(&out)
    );
}

/// Every window fed is a row; scored rows are all classified; once a session
/// has classified a window it never calibrates again (none: from the start).
fn check_predictions(text: &str, mode: &str) {
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // 244 s of stream per person, a window every 4 s.
    assert_eq!(rows.len(), 2 * 61, "{mode}");
    assert_eq!(rows.iter().filter(|r| r[4] == "true").count(), 80, "{mode}");
    assert!(
        rows.iter()
            .filter(|r| r[4] == "true")
            .all(|r| r[5] == "classified"),
        "{mode}"
    );
    for person in ["Subject25", "Subject26"] {
        let answers: Vec<&str> = rows
            .iter()
            .filter(|r| r[1] == person)
            .map(|r| r[5])
            .collect();
        let first = answers
            .iter()
            .position(|a| *a == "classified")
            .expect("classified");
        assert!(
            answers[first..].iter().all(|a| *a == "classified"),
            "{mode} {person}"
        );
        let expected_first = match mode {
            "none" => 0,
            "baseline" => 15, // 60 s of 4-s windows
            _ => 20,          // + 20 s of arithmetic
        };
        assert_eq!(first, expected_first, "{mode} {person}");
    }
}
