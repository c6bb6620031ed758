//! Issue 17 §2: the live daemon adapts to the person wearing the cap.
//!
//! A pylsl outlet streams a person the shipped model never saw (eegmat
//! Subject26: the first 90 s of rest, then 40 s of mental arithmetic, as one
//! stream, 4× faster than real time) into the `labramd` binary with the shipped
//! model, under `baseline` (band power re-centred by the first 60 s, a head
//! trained on Subject25) and `calibration` (the model's logits; a pylsl marker
//! outlet names the blocks). Checked against the same
//! `labram_core::adapt::Session` driven offline in this test over the same
//! windows (the pushed samples through `labram_core::window::Stage`), and,
//! with the stream laid out as `evaluate` lays out a session (holdout spans
//! first), against `labram-trainer evaluate --predictions` itself (the
//! workspace's built binary). Also: nothing is published before the
//! session has learned, the marker outlet and `/healthz` say `calibrating`, a
//! restart with `state:` classifies from its first window, and bad input
//! (an unknown class marker, a truncated state, a state of another model, a
//! calibration cut short) gives the warning or error that names the fix.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labramd::adapt::{
    Answer, BaselineStats, FeatureExtractor, LogBandPower, ModelLogits, PersonState,
    PopulationModel, Protocol, Session, SessionSpec,
};
use labramd::card::{FilterMode, ModelCard, SAMPLE_RATE_HZ};
use labramd::electrodes::{canonical, classify_label, LabelKind};
use labramd::inference::{Classifier, Device};
use labramd::window::{FrameStamp, Stage, StageConfig, StageOutput};
use serde_json::Value;
use support::*;

const REST_S: f64 = 90.0;
const TASK_S: f64 = 40.0;
const SPEED: &str = "4";

/// One streaming daemon at a time: the comparisons need every window (a daemon
/// that falls behind drops the oldest, as it should live), and five daemons,
/// their peers and the offline references at once overload a 2-core machine.
static STREAMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model() -> PathBuf {
    repo().join("models/labram-base-eegmat.onnx")
}

fn edf(name: &str) -> PathBuf {
    shared().join("data/eegmat").join(name)
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn card() -> ModelCard {
    ModelCard::load_for_model(&model()).expect("shipped card")
}

/// Indices of the card's electrodes among `labels`.
fn selection(labels: &[String]) -> Vec<usize> {
    card()
        .channels
        .iter()
        .map(|want| {
            labels
                .iter()
                .position(|l| {
                    matches!(classify_label(l), LabelKind::Electrode(e) if canonical(e) == canonical(want))
                })
                .unwrap_or_else(|| panic!("{want} not among {labels:?}"))
        })
        .collect()
}

/// One window cut offline: session end time, LSL-free frame count, data.
struct OfflineWindow {
    end_s: f64,
    frames_in: u64,
    data: Vec<f32>,
}

/// The daemon's chain over interleaved frames `x` (`n_src` channels, µV at
/// `fs`), cut every card hop; session time as `evaluate` computes it
/// (`windows::daemon_starts`: the resampler's output count / 200 Hz).
fn offline_windows(
    x: &[f32],
    n_src: usize,
    sel: Vec<usize>,
    fs: f64,
    hop_s: f64,
) -> Vec<OfflineWindow> {
    let card = card();
    let mut pre = card.preprocessing.clone();
    pre.mode = FilterMode::Causal;
    let n_sel = sel.len();
    let mut stage = Stage::new(StageConfig {
        n_input_channels: n_src,
        selection: sel,
        to_microvolts: vec![1.0; n_sel],
        input_rate_hz: fs,
        patches: card.window_patches,
        hop_frames: (hop_s * fs).round() as u64,
        preprocessing: pre,
    })
    .expect("stage");
    let n = x.len() / n_src;
    let stamps: Vec<FrameStamp> = (0..n)
        .map(|i| FrameStamp {
            t: i as f64 / fs,
            arrival: 0.0,
        })
        .collect();
    // 500 Hz → 200 Hz is 2/5; written out here, independent of the daemon's clock.
    assert_eq!(fs, 500.0, "the test's session clock assumes 500 Hz input");
    let mut out = Vec::new();
    for (xc, sc) in x.chunks(37 * n_src).zip(stamps.chunks(37)) {
        stage.push(xc, sc, |o| {
            if let StageOutput::Window(w) = o {
                let produced = (w.frames_in * 2) / 5;
                out.push(OfflineWindow {
                    end_s: produced as f64 / SAMPLE_RATE_HZ,
                    frames_in: w.frames_in,
                    data: w.data.clone(),
                })
            }
        });
    }
    out
}

/// Subject25's rest then task, read with `labramd::recording`, as interleaved
/// frames of the card's electrodes.
fn training_person() -> (Vec<f32>, f64) {
    let mut frames = Vec::new();
    let mut fs = 0.0;
    for (file, secs) in [("Subject25_1.edf", REST_S), ("Subject25_2.edf", TASK_S)] {
        let mut r = labramd::recording::EdfReader::open(edf(file)).expect("edf");
        let labels: Vec<String> = r
            .header()
            .signals
            .iter()
            .map(|s| s.label.trim().to_string())
            .collect();
        let sel = selection(&labels);
        fs = r.header().sample_rate_hz(sel[0]).expect("rate");
        let data = r.read_all_uv(&sel).expect("read");
        let n = ((secs * fs).round() as usize).min(data[0].len());
        for t in 0..n {
            for ch in &data {
                frames.push(ch[t]);
            }
        }
    }
    (frames, fs)
}

/// A `baseline` head trained on Subject25's re-centred band power (windows
/// after the first 60 s; rest before 90 s, task after), as `evaluate` trains one.
fn population_head(dir: &Path, baseline_s: f64) -> PathBuf {
    let (x, fs) = training_person();
    let n_ch = card().channels.len();
    let wins = offline_windows(&x, n_ch, (0..n_ch).collect(), fs, card().hop_s);
    let window_s = card().window_patches as f64;
    let mut bp = LogBandPower::new(n_ch, card().window_patches * 200, SAMPLE_RATE_HZ);
    let rows: Vec<Vec<f64>> = wins
        .iter()
        .map(|w| {
            let mut r = Vec::new();
            bp.extract(&w.data, &mut r).expect("bandpower");
            r
        })
        .collect();
    let mut stats = BaselineStats::new(baseline_s, window_s);
    for (w, r) in wins.iter().zip(&rows) {
        stats.offer(w.end_s, r);
    }
    let centre = stats.centre().expect("baseline windows");
    let mut train = Vec::new();
    let mut labels = Vec::new();
    for (w, r) in wins.iter().zip(&rows) {
        let start = w.end_s - window_s;
        let label = if w.end_s <= REST_S + 1e-9 && start >= baseline_s {
            0
        } else if start >= REST_S - 1e-9 {
            1
        } else {
            continue;
        };
        train.push(r.iter().zip(&centre).map(|(v, m)| v - m).collect());
        labels.push(label);
    }
    let pop = PopulationModel::fit(bp.space(), card().classes, true, &train, &labels).expect("fit");
    let path = dir.join("population.yaml");
    std::fs::write(&path, serde_norway::to_string(&pop).expect("yaml")).expect("write");
    path
}

/// What one daemon run produced.
struct Run {
    hop_s: f64,
    outlet: Value,
    pushed: Vec<f32>,
    predictions: Value,
    status: Value,
    health_while_calibrating: Option<(u16, String, f64)>,
    metrics: String,
    log: String,
    exit_ok: bool,
}

struct Scenario<'a> {
    tag: &'a str,
    adaptation: String,
    /// (file, seconds from its start; -1: all) streamed in order.
    files: Vec<(&'a str, f64)>,
    /// Where each file's piece starts (default: 0 s).
    from_s: Vec<f64>,
    /// `window.hop_s` (default: the card's).
    hop_s: Option<f64>,
    markers: Vec<&'a str>,
    /// Seconds into the stream at which the outlet goes away for 3 s.
    outage_at_s: Option<f64>,
}

fn run(dir: &Path, s: &Scenario<'_>) -> Run {
    let _one_at_a_time = STREAMING.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let in_name = format!("adapt-{}-{pid}", s.tag);
    let out_name = format!("adapt-{}-pred-{pid}", s.tag);
    let mk_name = format!("adapt-{}-mk-{pid}", s.tag);
    let port = free_port();
    let config = dir.join(format!("{}.yaml", s.tag));
    let adaptation = s.adaptation.replace("MARKERS", &mk_name);
    std::fs::write(
        &config,
        format!(
            "input: {{name: {in_name}, resolve_timeout_s: 60, stall_timeout_s: 5}}\n\
             model: {{path: {}, device: cpu, threads: 1}}\n\
             output: {{name: {out_name}, markers: true}}\n\
             metrics: {{listen: \"127.0.0.1:{port}\"}}\n{}{adaptation}",
            model().display(),
            s.hop_s
                .map_or(String::new(), |h| format!("window: {{hop_s: {h}}}\n"))
        ),
    )
    .unwrap();
    let f = |n: &str| dir.join(format!("{}-{n}", s.tag));
    let stop = f("stop");
    let mut inlets = Vec::new();
    for (name, file) in [
        (&out_name, "pred.json"),
        (&format!("{out_name}-markers"), "status.json"),
    ] {
        inlets.push(Proc::spawn(
            "inlet",
            lsl_peer(&[
                "inlet",
                "--name",
                name,
                "--stop-file",
                stop.to_str().unwrap(),
                "--max-s",
                "300",
                "--out",
                f(file).to_str().unwrap(),
            ]),
            f(&format!("{file}.log")),
        ));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    cmd.args(["run", "--print", "--config"])
        .arg(&config)
        .env("RUST_LOG", "labramd=info");
    let mut daemon = Proc::spawn("labramd", cmd, f("labramd.log"));
    let done = f("done");
    let mut args: Vec<String> = vec!["session".into()];
    for (k, (file, secs)) in s.files.iter().enumerate() {
        args.extend([
            "--edf".into(),
            edf(file).display().to_string(),
            "--seconds".into(),
            secs.to_string(),
        ]);
        if let Some(from) = s.from_s.get(k) {
            args.extend(["--from-s".into(), from.to_string()]);
        }
    }
    if let Some(at) = s.outage_at_s {
        args.extend(["--outage-at-s".into(), at.to_string()]);
    }
    if !s.markers.is_empty() {
        args.extend(["--markers-name".into(), mk_name.clone()]);
        for m in &s.markers {
            args.extend(["--marker".into(), m.to_string()]);
        }
    }
    args.extend(
        [
            "--name",
            &in_name,
            "--speed",
            SPEED,
            "--done-file",
            done.to_str().unwrap(),
            "--dump",
            f("pushed.f32").to_str().unwrap(),
            "--out",
            f("outlet.json").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let mut peer = Command::new(python());
    peer.arg(repo().join("tests/support/session_peer.py"))
        .args(&args);
    let mut outlet = Proc::spawn("session_peer", peer, f("outlet.log"));
    let t = Instant::now();
    let mut health_while_calibrating = None;
    while !done.exists() {
        if let Ok(Some(st)) = daemon.child.try_wait() {
            panic!("labramd exited early ({st}):\n{}", daemon.log_text());
        }
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "timed out; labramd log:\n{}\noutlet log:\n{}",
            daemon.log_text(),
            outlet.log_text()
        );
        if health_while_calibrating.is_none() {
            if let Ok((code, body)) = http_get(port, "/healthz") {
                if body.contains("\"status\":\"calibrating\"") {
                    let m = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
                    let left = metric(&m, "labramd_calibration_seconds_left").unwrap_or(-1.0);
                    health_while_calibrating = Some((code, body, left));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800));
    let metrics = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
    daemon.signal("TERM");
    let exit = daemon.wait(30.0);
    std::fs::write(&stop, "stop").unwrap();
    for i in &mut inlets {
        assert!(
            i.wait(30.0).is_some(),
            "inlet did not stop:\n{}",
            i.log_text()
        );
    }
    assert!(outlet.wait(30.0).is_some(), "outlet did not stop");
    Run {
        hop_s: s.hop_s.unwrap_or(card().hop_s),
        outlet: read_json(&f("outlet.json")),
        pushed: f32s(&std::fs::read(f("pushed.f32")).unwrap()),
        predictions: read_json(&f("pred.json")),
        status: read_json(&f("status.json")),
        health_while_calibrating,
        metrics,
        log: daemon.log_text(),
        exit_ok: exit.is_some_and(|s| s.success()),
    }
}

/// The offline reference: the pushed samples through the stage, features, and
/// a `Session` (fresh under `protocol`, or resumed from `resume`), markers
/// delivered before the first window ending after them, as `evaluate` does.
/// Returns `(LSL time of the window's last sample, answer)` per window.
fn reference(
    r: &Run,
    protocol: Protocol,
    logits: bool,
    population: Option<&Path>,
    resume: Option<PersonState>,
) -> Vec<(f64, Answer)> {
    let labels: Vec<String> = r.outlet["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let fs = r.outlet["fs"].as_f64().unwrap();
    let n_src = labels.len();
    // Each stream connection through a fresh stage; after a reconnect the
    // session goes on from the signal time already received (the daemon's
    // definition, `labramd::adaptation`; evaluate has no reconnects).
    let mut wins = Vec::new();
    let mut offset_s = 0.0;
    for seg in r.outlet["segments"].as_array().unwrap() {
        let (t0, first, n) = (
            seg["t0"].as_f64().unwrap(),
            seg["first"].as_u64().unwrap() as usize,
            seg["n"].as_u64().unwrap() as usize,
        );
        let x = &r.pushed[first * n_src..(first + n) * n_src];
        for w in offline_windows(x, n_src, selection(&labels), fs, r.hop_s) {
            wins.push((
                offset_s + w.end_s,
                t0 + (w.frames_in - 1) as f64 / fs,
                w.data,
            ));
        }
        offset_s += ((n as u64 * 2) / 5) as f64 / SAMPLE_RATE_HZ;
    }
    let card = card();
    let mut ex: Box<dyn FeatureExtractor> = if logits {
        let clf = Classifier::new(&model(), Device::Cpu, 1).expect("model");
        Box::new(ModelLogits::new(clf, &model()))
    } else {
        Box::new(LogBandPower::new(
            card.channels.len(),
            card.window_patches * 200,
            SAMPLE_RATE_HZ,
        ))
    };
    let population: Option<PopulationModel> = population
        .map(|p| serde_norway::from_str(&std::fs::read_to_string(p).unwrap()).expect("population"));
    let spec = SessionSpec {
        protocol,
        classes: card.classes.clone(),
        space: ex.space(),
        window_s: card.window_patches as f64,
        population,
    };
    let mut session = match resume {
        Some(state) => Session::resume(spec, state).expect("resume"),
        None => Session::new(spec).expect("session"),
    };
    let mut markers: Vec<(f64, String)> = r.outlet["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m[0].as_f64().unwrap() / fs,
                m[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    markers.reverse();
    let mut out = Vec::new();
    for (end_s, t_last, data) in &wins {
        while markers.last().is_some_and(|(at, _)| *at < end_s - 1e-6) {
            let (at, text) = markers.pop().unwrap();
            // An unknown class is the daemon's warning; the session ignores it.
            let _ = session.marker(at, Some(&text));
        }
        let mut row = Vec::new();
        ex.extract(data, &mut row).expect("features");
        let answer = session.push(*end_s, &row).expect("push");
        out.push((*t_last, answer));
    }
    out
}

/// Every published prediction equals the reference's answer to the window with
/// its timestamp (≤ 1e-4), and every classified reference window was published;
/// nothing was published for a window the reference was still learning from.
/// Returns the number of predictions.
fn check_against(r: &Run, reference: &[(f64, Answer)]) -> usize {
    let stamps = r.predictions["timestamps"].as_array().unwrap();
    let values = r.predictions["values"].as_array().unwrap();
    let classified: Vec<(f64, &Vec<f64>)> = reference
        .iter()
        .filter_map(|(t, a)| match a {
            Answer::Classified { probabilities } => Some((*t, probabilities)),
            Answer::Calibrating { .. } => None,
        })
        .collect();
    assert_eq!(
        stamps.len(),
        classified.len(),
        "published {} predictions, the offline session classified {} windows; daemon log:\n{}",
        stamps.len(),
        classified.len(),
        r.log
    );
    assert_eq!(
        metric(&r.metrics, "labramd_windows_dropped_total{reason=\"queue_full\"}"),
        Some(0.0),
        "the daemon fell behind and dropped windows (machine overloaded?): the session learned from others than the reference"
    );
    let mut worst = 0.0f64;
    for ((ts, v), (t_ref, p_ref)) in stamps.iter().zip(values).zip(&classified) {
        let ts = ts.as_f64().unwrap();
        assert!(
            (ts - t_ref).abs() < 1e-3,
            "prediction at {ts:.4} but the reference's window ends at {t_ref:.4}"
        );
        for (a, b) in v.as_array().unwrap().iter().zip(p_ref.iter()) {
            worst = worst.max((a.as_f64().unwrap() - b).abs());
        }
    }
    assert!(worst <= 1e-4, "largest probability difference {worst:e}");
    eprintln!(
        "{} predictions match the offline session (max |Δp| {worst:.1e})",
        stamps.len()
    );
    stamps.len()
}

/// The first prediction comes after the last status message `calibrating Ns`
/// of the marker outlet, and those counted down to 0 s.
fn check_calibration_status(r: &Run) {
    let texts: Vec<&str> = r.status["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[0].as_str().unwrap())
        .collect();
    let cal: Vec<(usize, &str)> = texts
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, t)| t.starts_with("calibrating "))
        .collect();
    assert!(!cal.is_empty(), "no `calibrating` status: {texts:?}");
    assert_eq!(cal.last().unwrap().1, "calibrating 0s", "{texts:?}");
    let last_cal_t = r.status["timestamps"][cal.last().unwrap().0]
        .as_f64()
        .unwrap();
    let first_pred = r.predictions["timestamps"][0].as_f64().unwrap();
    assert!(
        first_pred > last_cal_t,
        "a prediction at {first_pred} before calibration ended at {last_cal_t}"
    );
    // Status lines precede every class name on the marker outlet.
    let first_class = texts
        .iter()
        .position(|t| !t.starts_with("calibrating"))
        .unwrap();
    assert!(first_class > cal.last().unwrap().0);
    let (code, body, left) = r
        .health_while_calibrating
        .clone()
        .expect("/healthz never said calibrating");
    assert_eq!(code, 200, "{body}");
    assert!(
        left > 0.0,
        "labramd_calibration_seconds_left {left} while calibrating"
    );
}

#[test]
fn baseline_session_matches_offline_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let population = population_head(d, 60.0);
    let state = d.join("wearer.yaml");
    let adaptation = format!(
        "adaptation: {{mode: baseline, baseline_s: 60, population: {}, state: {}}}\n",
        population.display(),
        state.display()
    );
    let r = run(
        d,
        &Scenario {
            tag: "base",
            adaptation: adaptation.clone(),
            files: vec![("Subject26_1.edf", REST_S), ("Subject26_2.edf", TASK_S)],
            markers: vec![],
            outage_at_s: None,
            from_s: vec![],
            hop_s: None,
        },
    );
    assert!(r.exit_ok, "{}", r.log);
    let reference1 = reference(&r, Protocol::baseline(60.0), false, Some(&population), None);
    let n = check_against(&r, &reference1);
    assert!(n > 20, "{n} predictions");
    check_calibration_status(&r);
    assert!(
        r.log.contains("calibrating"),
        "--print shows no progress:\n{}",
        r.log
    );
    assert_eq!(
        metric(
            &r.metrics,
            "labramd_windows_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&r.metrics, "labramd_calibration_seconds_left"),
        Some(0.0)
    );
    assert!(
        r.metrics.contains(
            "labramd_adaptation_info{features=\"bandpower\",mode=\"baseline\",resumed=\"false\"} 1"
        ),
        "{}",
        r.metrics
    );
    let saved = PersonState::load(&state).expect("state written");
    assert!(
        saved.space.extractor.starts_with("log-bandpower"),
        "{:?}",
        saved.space
    );
    assert!(saved.centre.is_some());

    // A restart with the state classifies from its first window.
    let r2 = run(
        d,
        &Scenario {
            tag: "again",
            adaptation,
            files: vec![("Subject26_2.edf", 20.0)],
            markers: vec![],
            outage_at_s: None,
            from_s: vec![],
            hop_s: None,
        },
    );
    assert!(r2.exit_ok, "{}", r2.log);
    assert!(r2.log.contains("resumed"), "{}", r2.log);
    assert!(r2.health_while_calibrating.is_none());
    let reference2 = reference(
        &r2,
        Protocol::baseline(60.0),
        false,
        Some(&population),
        Some(saved),
    );
    assert!(matches!(reference2[0].1, Answer::Classified { .. }));
    let n2 = check_against(&r2, &reference2);
    assert_eq!(n2, reference2.len());
    assert!(r2.metrics.contains("resumed=\"true\"} 1"), "{}", r2.metrics);

    // A truncated state file and a state of another model: clear start-up errors.
    let text = std::fs::read_to_string(&state).unwrap();
    for (tag, bad, want) in [
        (
            "trunc",
            text[..text.len() / 2].to_string(),
            "not a valid state (truncated or edited?)",
        ),
        (
            "other",
            text.replace(
                "log-bandpower(",
                "logits(another-model.onnx) log-bandpower(",
            ),
            "another model or feature extractor",
        ),
    ] {
        std::fs::write(&state, bad).unwrap();
        let config = d.join("again.yaml");
        let out = Command::new(env!("CARGO_BIN_EXE_labramd"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tag}: started with a bad state");
        assert!(
            err.contains(want)
                && err.contains(&state.display().to_string())
                && err.contains("delete it"),
            "{tag}: {err}"
        );
    }
}

#[test]
fn calibration_with_markers_matches_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("wearer.yaml");
    let r = run(
        d,
        &Scenario {
            tag: "cal",
            adaptation: format!(
                "adaptation:\n  mode: calibration\n  markers: {{name: MARKERS}}\n  calibration_s: {{rest: 60, arithmetic: 20}}\n  features: logits\n  state: {}\n",
                state.display()
            ),
            files: vec![("Subject26_1.edf", REST_S), ("Subject26_2.edf", TASK_S)],
            markers: vec!["0=rest", "90=arithmetic", "95=jumping"],
            outage_at_s: None,
            from_s: vec![],
            hop_s: None,
        },
    );
    assert!(r.exit_ok, "{}", r.log);
    let protocol = Protocol::calibration(vec![("rest".into(), 60.0), ("arithmetic".into(), 20.0)]);
    let reference = reference(&r, protocol, true, None, None);
    let n = check_against(&r, &reference);
    assert!(n >= 5, "{n} predictions");
    check_calibration_status(&r);
    assert!(
        r.log
            .contains("`jumping` names no class of the model (rest, arithmetic)"),
        "{}",
        r.log
    );
    assert_eq!(
        metric(
            &r.metrics,
            "labramd_calibration_markers_total{outcome=\"unknown_class\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &r.metrics,
            "labramd_calibration_markers_total{outcome=\"used\"}"
        ),
        Some(2.0)
    );
    let saved = PersonState::load(&state).expect("state written");
    assert!(
        saved
            .space
            .extractor
            .starts_with("logits(labram-base-eegmat.onnx"),
        "{:?}",
        saved.space
    );
}

#[test]
fn calibration_cut_short_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("wearer.yaml");
    let r = run(
        d,
        &Scenario {
            tag: "short",
            adaptation: format!(
                "adaptation:\n  mode: calibration\n  markers: {{name: MARKERS}}\n  calibration_s: {{rest: 60, arithmetic: 20}}\n  features: bandpower\n  state: {}\n",
                state.display()
            ),
            files: vec![("Subject26_1.edf", 20.0)],
            markers: vec!["0=rest"],
            outage_at_s: None,
            from_s: vec![],
            hop_s: None,
        },
    );
    assert!(r.exit_ok, "{}", r.log);
    assert_eq!(r.predictions["timestamps"].as_array().unwrap().len(), 0);
    assert!(
        r.log.contains("calibration incomplete: class `rest` has"),
        "{}",
        r.log
    );
    assert!(
        !state.exists(),
        "a state was written for an unfinished calibration"
    );
}

/// A stream lost during the baseline: the session outlives the reconnect and
/// the baseline goes on with the signal that follows (the outage takes no
/// session time), then classifies as the offline session over both connections.
#[test]
fn baseline_resumes_across_a_lost_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let population = population_head(d, 60.0);
    let r = run(
        d,
        &Scenario {
            tag: "lost",
            adaptation: format!(
                "adaptation: {{mode: baseline, baseline_s: 60, population: {}}}\n",
                population.display()
            ),
            files: vec![("Subject26_1.edf", 70.0), ("Subject26_2.edf", 20.0)],
            markers: vec![],
            outage_at_s: Some(30.0),
            from_s: vec![],
            hop_s: None,
        },
    );
    assert!(r.exit_ok, "{}", r.log);
    assert_eq!(r.outlet["segments"].as_array().unwrap().len(), 2);
    assert!(
        metric(&r.metrics, "labramd_stream_recoveries_total").unwrap_or(0.0) >= 1.0,
        "{}",
        r.log
    );
    let reference = reference(&r, Protocol::baseline(60.0), false, Some(&population), None);
    let n = check_against(&r, &reference);
    assert!(n >= 10, "{n} predictions");
    check_calibration_status(&r);
}

/// The trainer binary of this workspace (`cargo test --workspace` builds it),
/// checked to have `evaluate --predictions`.
fn trainer() -> PathBuf {
    let bins: Vec<PathBuf> = ["debug", "release"]
        .iter()
        .map(|p| repo().join("target").join(p).join("labram-trainer"))
        .filter(|p| p.exists())
        .collect();
    let newest = bins
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("labram-trainer not built: run `cargo build -p labram-trainer` (cargo test --workspace builds it)");
    // A binary older than the code it runs would compare the daemon with
    // yesterday's evaluate.
    fn newest_source(dir: &Path) -> std::time::SystemTime {
        let mut t = std::time::SystemTime::UNIX_EPOCH;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                t = t.max(newest_source(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    t = t.max(m);
                }
            }
        }
        t
    }
    let built = std::fs::metadata(&newest)
        .and_then(|m| m.modified())
        .unwrap();
    let sources =
        newest_source(&repo().join("core/src")).max(newest_source(&repo().join("trainer/src")));
    assert!(
        built >= sources,
        "{} is older than core/src or trainer/src: rebuild it (cargo build -p labram-trainer; cargo test --workspace does)",
        newest.display()
    );
    let help = Command::new(&newest)
        .args(["evaluate", "--help"])
        .output()
        .expect("run labram-trainer");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--predictions"),
        "{} has no `evaluate --predictions`: rebuild it (cargo build -p labram-trainer)",
        newest.display()
    );
    newest
}

/// The daemon against `labram-trainer evaluate` itself: the stream laid out as
/// evaluate lays out a session (each file's holdout span first: rest 0-60 s,
/// arithmetic 0-20 s, then the remainders), windows every 4 s (evaluate's
/// default hop); every window the daemon publishes is one evaluate classified,
/// with the same probabilities (≤ 1e-4), and none before evaluate's session
/// stopped calibrating. `evaluate_args` choose the protocol; `adaptation` is
/// the daemon's section; `markers` where evaluate opens its blocks.
fn against_evaluate(tag: &str, evaluate_args: &[String], adaptation: String, markers: Vec<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rest = edf("Subject26_1.edf");
    let task = edf("Subject26_2.edf");
    let csv = d.join("evaluate.csv");
    let out = Command::new(trainer())
        .args(["evaluate", "--model"])
        .arg(model())
        .args(["--threads", "1", "--holdout", "rest=60,arithmetic=20"])
        .args(
            evaluate_args
                .iter()
                .map(|a| a.replace("DIR", &d.display().to_string())),
        )
        .arg("--predictions")
        .arg(&csv)
        .arg("--session")
        .arg(format!(
            "rest={},arithmetic={}",
            rest.display(),
            task.display()
        ))
        .output()
        .expect("run labram-trainer evaluate");
    assert!(
        out.status.success(),
        "evaluate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (c_end, c_answer) = (col("end_s"), col("answer"));
    let (c_p0, c_p1) = (col("p_rest"), col("p_arithmetic"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let classified: Vec<(f64, [f64; 2])> = rows
        .iter()
        .filter(|r| r[c_answer] == "classified")
        .map(|r| {
            (
                r[c_end].parse().unwrap(),
                [r[c_p0].parse().unwrap(), r[c_p1].parse().unwrap()],
            )
        })
        .collect();
    let last_calibrating: f64 = rows
        .iter()
        .filter(|r| r[c_answer] == "calibrating")
        .map(|r| r[c_end].parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!(
        last_calibrating > 0.0,
        "evaluate's session never calibrated"
    );
    assert!(
        classified.len() > 20,
        "{} classified rows",
        classified.len()
    );

    let r = run(
        d,
        &Scenario {
            tag,
            adaptation: adaptation.replace("DIR", &d.display().to_string()),
            files: vec![
                ("Subject26_1.edf", 60.0),
                ("Subject26_2.edf", 20.0),
                ("Subject26_1.edf", -1.0),
                ("Subject26_2.edf", -1.0),
            ],
            from_s: vec![0.0, 0.0, 60.0, 20.0],
            hop_s: Some(4.0),
            markers,
            outage_at_s: None,
        },
    );
    assert!(r.exit_ok, "{}", r.log);
    let fs = r.outlet["fs"].as_f64().unwrap();
    let t0 = r.outlet["segments"][0]["t0"].as_f64().unwrap();
    let stamps = r.predictions["timestamps"].as_array().unwrap();
    let values = r.predictions["values"].as_array().unwrap();
    assert_eq!(
        stamps.len(),
        classified.len(),
        "the daemon published {} predictions, evaluate classified {} windows; log:\n{}",
        stamps.len(),
        classified.len(),
        r.log
    );
    let mut worst = 0.0f64;
    for ((ts, v), (end_s, p)) in stamps.iter().zip(values).zip(&classified) {
        // The last sample of a window ending at end_s is stamped t0 + end_s - 1/fs.
        let daemon_end = ts.as_f64().unwrap() - t0 + 1.0 / fs;
        assert!(
            (daemon_end - end_s).abs() < 1e-3,
            "daemon window ends at {daemon_end:.4} s, evaluate's at {end_s:.4} s"
        );
        assert!(daemon_end > last_calibrating);
        for (a, b) in v.as_array().unwrap().iter().zip(p) {
            worst = worst.max((a.as_f64().unwrap() - b).abs());
        }
    }
    assert!(worst <= 1e-4, "largest difference from evaluate {worst:e}");
    eprintln!(
        "{tag}: {} predictions equal labram-trainer evaluate's (max |dp| {worst:.1e})",
        stamps.len()
    );
}

/// Calibration (the model's logits): markers where evaluate opens its blocks
/// (`none` at each remainder).
#[test]
fn calibration_equals_labram_trainer_evaluate() {
    against_evaluate(
        "evalcal",
        &["--adaptation", "calibration", "--features", "logits"].map(String::from),
        "adaptation:\n  mode: calibration\n  markers: {name: MARKERS}\n  calibration_s: {rest: 60, arithmetic: 20}\n  features: logits\n".into(),
        vec!["0=rest", "60=arithmetic", "80=none", "202=none"],
    );
}

/// Baseline (band power): the population head evaluate trains on Subject25
/// (`--save-population`) is the daemon's `adaptation.population`.
#[test]
fn baseline_equals_labram_trainer_evaluate() {
    let train = format!(
        "rest={},arithmetic={}",
        edf("Subject25_1.edf").display(),
        edf("Subject25_2.edf").display()
    );
    against_evaluate(
        "evalbase",
        &[
            "--adaptation",
            "baseline",
            "--baseline-s",
            "60",
            "--features",
            "bandpower",
            "--train-session",
            &train,
            "--save-population",
            "DIR/population.yaml",
        ]
        .map(String::from),
        "adaptation: {mode: baseline, baseline_s: 60, population: DIR/population.yaml}\n".into(),
        vec![],
    );
}
