//! The daemon end to end, against independent peers: a pylsl outlet streams a real
//! recording (PhysioNet eegmat, 500 Hz, 21 channels) in real time, the `labramd`
//! binary classifies it, and a pylsl inlet records the predictions. Checked: the
//! number of predictions, their timestamps against the windows' last samples
//! (±5 ms), their values against offline inference on the same preprocessed windows
//! (relative error ≤ 1e-4), the HTTP endpoints, SIGTERM draining, a lost and
//! recovered stream, and NaN input.
//!
//! Each test takes 15-30 s of real time (the recording is streamed at real speed);
//! they run in parallel on distinct stream names and ports.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labramd::card::Preprocessing;
use labramd::dsp::CausalChain;
use labramd::electrodes::{classify_label, LabelKind};
use labramd::inference::{Classifier, Device};
use serde_json::Value;
use support::*;

/// eegmat's 19 scalp channels, in the order the test model takes them.
const EEGMAT_19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];
const PATCHES: usize = 4;

fn edf() -> PathBuf {
    shared().join("data/eegmat/Subject00_1.edf")
}

/// Everything one scenario produced.
struct Outcome {
    _dir: tempfile::TempDir,
    hop_s: f64,
    model: PathBuf,
    outlet: Value,
    predictions: Value,
    summary: Value,
    metrics: String,
    health: (u16, String),
    daemon_log: String,
    exit_ok: bool,
    /// The samples the outlet pushed, `(n, channels)` interleaved.
    pushed: Vec<f32>,
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn wait_for(path: &Path, secs: f64, daemon: &mut Proc) {
    let t = Instant::now();
    while !path.exists() {
        if let Ok(Some(s)) = daemon.child.try_wait() {
            panic!("labramd exited early ({s}):\n{}", daemon.log_text());
        }
        assert!(
            t.elapsed().as_secs_f64() < secs,
            "timed out waiting for {}; labramd log:\n{}",
            path.display(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Streams `seconds` of the recording (from 10 s in) with `extra` outlet options
/// through a daemon; SIGTERM right after the last sample was pushed.
fn scenario(tag: &str, seconds: f64, hop_s: f64, extra: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = golden_model(d, &EEGMAT_19, PATCHES, hop_s);
    let port = free_port();
    let pid = std::process::id();
    let in_name = format!("labramd-test-{tag}-{pid}");
    let out_name = format!("labramd-test-{tag}-pred-{pid}");
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "input:\n  name: {in_name}\n  resolve_timeout_s: 60\n  unit: auto\n  stall_timeout_s: 1.5\n\
             model:\n  path: {}\n  device: cpu\n  threads: 1\n\
             window: {{patches: {PATCHES}, hop_s: {hop_s}}}\n\
             preprocessing: {{bandpass_hz: [0.1, 75.0], notch_hz: 50}}\n\
             output: {{name: {out_name}, markers: true}}\n\
             metrics: {{listen: \"127.0.0.1:{port}\"}}\n",
            model.display()
        ),
    )
    .unwrap();
    let stop = d.join("stop");
    let done = d.join("done");
    let mut inlet = Proc::spawn(
        "inlet",
        lsl_peer(&[
            "inlet",
            "--name",
            &out_name,
            "--stop-file",
            stop.to_str().unwrap(),
            "--out",
            d.join("inlet.json").to_str().unwrap(),
        ]),
        d.join("inlet.log"),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .arg("--summary")
        .arg(d.join("summary.json"))
        .env("RUST_LOG", "labramd=debug");
    let mut daemon = Proc::spawn("labramd", cmd, d.join("labramd.log"));
    let seconds = seconds.to_string();
    let edf = edf();
    let mut args = vec![
        "outlet",
        "--edf",
        edf.to_str().unwrap(),
        "--name",
        &in_name,
        "--start-s",
        "10",
        "--seconds",
        &seconds,
        "--done-file",
        done.to_str().unwrap(),
    ];
    let dump = d.join("pushed.f32");
    let outlet_json = d.join("outlet.json");
    args.extend([
        "--dump",
        dump.to_str().unwrap(),
        "--out",
        outlet_json.to_str().unwrap(),
    ]);
    args.extend(extra);
    let mut outlet = Proc::spawn("outlet", lsl_peer(&args), d.join("outlet.log"));

    wait_for(&done, 120.0, &mut daemon);
    std::thread::sleep(Duration::from_millis(300));
    let metrics = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
    let health = http_get(port, "/healthz").unwrap_or_default();
    // Shut down while the last window may still be in flight: it must be published.
    daemon.signal("TERM");
    let exit = daemon.wait(30.0);
    std::fs::write(&stop, "stop").unwrap();
    assert!(
        inlet.wait(30.0).is_some(),
        "inlet did not stop:\n{}",
        inlet.log_text()
    );
    assert!(
        outlet.wait(30.0).is_some(),
        "outlet did not stop:\n{}",
        outlet.log_text()
    );
    let daemon_log = daemon.log_text();
    let exit_ok = exit.is_some_and(|s| s.success());
    let pushed = f32s(&std::fs::read(&dump).unwrap());
    Outcome {
        hop_s,
        model,
        outlet: read_json(&outlet_json),
        predictions: read_json(&d.join("inlet.json")),
        summary: if d.join("summary.json").exists() {
            read_json(&d.join("summary.json"))
        } else {
            Value::Null
        },
        metrics,
        health,
        exit_ok,
        daemon_log,
        pushed,
        _dir: dir,
    }
}

/// A window the daemon should cut: hop point (input frames into its segment), LSL
/// time of its last sample, whether it may be classified, and its content.
struct Expected {
    t_last: f64,
    clean: bool,
    window: Vec<f32>,
}

/// Offline reference for one continuous segment: the model channels of `x`
/// (interleaved, `n_src` channels, µV) through a fresh causal chain, windows cut
/// every hop; a window is clean when no NaN/Inf input reached it.
fn offline(x: &[f32], n_src: usize, sel: &[usize], fs: f64, hop_s: f64, t0: f64) -> Vec<Expected> {
    let n = x.len() / n_src;
    let c = sel.len();
    let w = PATCHES * 200;
    let hop = (hop_s * fs).round() as usize;
    let mut chain = CausalChain::new(c, fs, &Preprocessing::default()).unwrap();
    let mut out: Vec<f32> = Vec::new();
    let mut frames_at_last_bad: Option<usize> = None;
    let mut exp = Vec::new();
    let mut pos = 0;
    while pos + hop <= n {
        let piece: Vec<f32> = x[pos * n_src..(pos + hop) * n_src]
            .chunks_exact(n_src)
            .flat_map(|f| sel.iter().map(move |&i| f[i]))
            .collect();
        // Feed up to and including the last bad frame, note the output count.
        let last_bad = piece.iter().rposition(|v| !v.is_finite()).map(|i| i / c);
        match last_bad {
            Some(j) => {
                chain.process(&piece[..(j + 1) * c], &mut out);
                frames_at_last_bad = Some(out.len() / c);
                chain.process(&piece[(j + 1) * c..], &mut out);
            }
            None => {
                chain.process(&piece, &mut out);
            }
        }
        pos += hop;
        let total = out.len() / c;
        if total < w {
            continue;
        }
        let clean = frames_at_last_bad.is_none_or(|b| total - b >= w);
        let mut window = vec![0.0; c * w];
        for t in 0..w {
            for ch in 0..c {
                window[ch * w + t] = out[(total - w + t) * c + ch];
            }
        }
        exp.push(Expected {
            t_last: t0 + (pos - 1) as f64 / fs,
            clean,
            window,
        });
    }
    exp
}

/// Indices of the model channels among the outlet's labels.
fn selection(labels: &[String]) -> Vec<usize> {
    EEGMAT_19
        .iter()
        .map(|want| {
            labels
                .iter()
                .position(|l| classify_label(l) == LabelKind::Electrode(want))
                .unwrap_or_else(|| panic!("{want} not among {labels:?}"))
        })
        .collect()
}

/// The model channels of the recording, read with `labramd::recording` (µV), as
/// interleaved frames `[n][19]` from frame `first` on; NaN where the outlet injected it.
fn recording_excerpt(outlet: &Value, first: usize, n: usize) -> Vec<f32> {
    let mut reader = labramd::recording::EdfReader::open(edf()).unwrap();
    let labels: Vec<String> = reader
        .header()
        .signals
        .iter()
        .map(|s| s.label.trim().to_string())
        .collect();
    let signals = selection(&labels);
    let data = reader.read_all_uv(&signals).unwrap();
    let mut x = Vec::with_capacity(n * signals.len());
    for t in first..first + n {
        for ch in &data {
            x.push(ch[t]);
        }
    }
    if let Some(nan) = outlet["nan"].as_object() {
        let label = nan["channel"].as_str().unwrap();
        let c = EEGMAT_19
            .iter()
            .position(|e| classify_label(label) == LabelKind::Electrode(e))
            .unwrap();
        let start = outlet["segments"][0]["first"].as_u64().unwrap() as usize;
        for t in nan["first"].as_u64().unwrap() as usize..=nan["last"].as_u64().unwrap() as usize {
            let frame = start + t;
            if frame >= first && frame < first + n {
                x[(frame - first) * EEGMAT_19.len() + c] = f32::NAN;
            }
        }
    }
    x
}

/// Checks every received prediction against the expected windows (offline: the
/// recording read with `labramd::recording`, the causal chain, the classifier);
/// returns how many clean windows there were. Every clean window must have been
/// received.
fn check_predictions(o: &Outcome) -> usize {
    check_predictions_subset(o, false)
}

/// As [`check_predictions`]; with `subset`, windows may be missing (dropped by an
/// overloaded queue), but every received one must match its window.
fn check_predictions_subset(o: &Outcome, subset: bool) -> usize {
    let labels: Vec<String> = o.outlet["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let n_src = labels.len();
    let fs = o.outlet["fs"].as_f64().unwrap();
    let sel = selection(&labels);
    let c = sel.len();
    let identity: Vec<usize> = (0..c).collect();
    let first0 = o.outlet["segments"][0]["first"].as_u64().unwrap() as usize;
    let mut expected = Vec::new();
    for seg in o.outlet["segments"].as_array().unwrap() {
        let first = seg["first"].as_u64().unwrap() as usize;
        let n = seg["n"].as_u64().unwrap() as usize;
        let t0 = seg["t0"].as_f64().unwrap();
        let x = recording_excerpt(&o.outlet, first, n);
        // The independent reader (pyedflib, in the outlet) pushed the same values.
        let pushed = &o.pushed[(first - first0) * n_src..(first - first0 + n) * n_src];
        for (t, frame) in pushed.chunks_exact(n_src).enumerate() {
            for (k, &i) in sel.iter().enumerate() {
                let (a, b) = (frame[i], x[t * c + k]);
                assert!(
                    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "frame {t} channel {k}: pushed {a}, labramd::recording {b}"
                );
            }
        }
        expected.extend(offline(&x, c, &identity, fs, o.hop_s, t0));
    }
    let clean: Vec<&Expected> = expected.iter().filter(|e| e.clean).collect();
    let values = o.predictions["values"].as_array().unwrap();
    let stamps = o.predictions["timestamps"].as_array().unwrap();
    if !subset {
        assert_eq!(
            values.len(),
            clean.len(),
            "predictions received vs clean windows; labramd log:\n{}",
            o.daemon_log
        );
    }
    let mut clf = Classifier::new(&o.model, Device::Cpu, 1).unwrap();
    for (v, ts) in values.iter().zip(stamps) {
        let ts = ts.as_f64().unwrap();
        let e = clean
            .iter()
            .find(|e| (e.t_last - ts).abs() <= 0.005)
            .unwrap_or_else(|| panic!("prediction stamped {ts:.4} matches no window end"));
        let live: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let want = clf.classify(&e.window, 1).unwrap().remove(0);
        for (a, b) in live.iter().zip(&want) {
            let rel = ((a - b) / b).abs();
            assert!(
                rel <= 1e-4,
                "window ending {ts:.3}: live {live:?} vs offline {want:?} (rel {rel:e})"
            );
        }
    }
    clean.len()
}

#[test]
fn live_predictions_match_offline_inference() {
    let o = scenario("e2e", 12.0, 1.0, &[]);
    assert!(
        o.exit_ok,
        "labramd did not exit cleanly on SIGTERM:\n{}",
        o.daemon_log
    );
    assert!(o.daemon_log.contains("SIGTERM"), "{}", o.daemon_log);
    assert!(o.daemon_log.contains("outlets closed"), "{}", o.daemon_log);
    // 12 s at 500 Hz, a 4 s window every second: windows end at 4, 5, …, 12 s.
    let n = check_predictions(&o);
    assert_eq!(n, 9);
    // The prediction stream: one float32 channel per class, labelled with the card's names.
    assert_eq!(
        o.predictions["labels"],
        serde_json::json!(["class0", "class1"])
    );
    assert_eq!(o.predictions["channel_format"], 1, "cf_float32");

    // A real scrape while running: counters moved.
    let m = &o.metrics;
    assert_eq!(
        metric(m, "labramd_samples_received_total"),
        Some(6000.0),
        "{m}"
    );
    assert!(
        metric(m, "labramd_windows_published_total").unwrap_or(0.0) >= 8.0,
        "{m}"
    );
    assert!(
        metric(m, "labramd_e2e_latency_seconds_count").unwrap_or(0.0) >= 8.0,
        "{m}"
    );
    assert!(
        metric(m, "labramd_inference_seconds_sum").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    assert!(
        metric(m, "labramd_dsp_seconds_count").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    assert_eq!(
        metric(m, "labramd_input_nominal_rate_hz"),
        Some(500.0),
        "{m}"
    );
    assert_eq!(
        metric(m, "labramd_windows_dropped_total{reason=\"queue_full\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(m, "labramd_stream_connected"), Some(1.0), "{m}");
    assert!(m.contains("labramd_model_info{"), "{m}");
    assert!(m.contains("labramd_build_info{"), "{m}");
    assert_eq!(o.health.0, 200, "{}", o.health.1);
    assert!(
        o.health.1.contains("\"stream_connected\":true"),
        "{}",
        o.health.1
    );
    // After SIGTERM: every window published (drained), none dropped.
    assert_eq!(o.summary["windows"], 9, "{}", o.summary);
    assert_eq!(o.summary["windows_dropped"]["queue_full"], 0);
    assert_eq!(o.summary["samples_received"], 6000);
}

#[test]
fn lost_stream_is_reported_and_recovered() {
    // 7 s, the outlet disappears for 3 s, then the same source comes back for 7 s.
    let o = scenario(
        "lost",
        14.0,
        1.0,
        &["--outage-at-s", "7", "--outage-s", "3"],
    );
    assert!(o.exit_ok, "labramd did not exit cleanly:\n{}", o.daemon_log);
    assert_eq!(o.outlet["segments"].as_array().unwrap().len(), 2);
    // Each segment: windows at 4..=7 s of it; none spans the outage.
    let n = check_predictions(&o);
    assert_eq!(n, 8);
    let s = &o.summary;
    assert!(s["stream_losses"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["stream_recoveries"].as_u64().unwrap() >= 1, "{s}");
    // After the reconnect the first three hops (1, 2, 3 s) cannot fill a 4 s window.
    assert_eq!(s["windows_dropped"]["gap"], 3, "{s}");
    assert_eq!(s["samples_received"], 7000, "{s}");
    assert!(
        o.daemon_log.contains("input stream lost"),
        "{}",
        o.daemon_log
    );
    assert!(o.daemon_log.contains("found again"), "{}", o.daemon_log);
    let m = &o.metrics;
    assert!(
        metric(m, "labramd_stream_losses_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(
        metric(m, "labramd_stream_recoveries_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[test]
fn nonfinite_samples_skip_the_windows_they_touch() {
    // 50 NaN samples (0.1 s) on Cz from 5 s on: the windows ending at 6..=9 s contain
    // them (the one ending at 9 s reaches back to 5 s, plus the resampler's few frames).
    let o = scenario(
        "nan",
        10.0,
        1.0,
        &[
            "--nan-channel",
            "EEG Cz",
            "--nan-at-s",
            "5",
            "--nan-s",
            "0.1",
        ],
    );
    assert!(o.exit_ok, "labramd did not exit cleanly:\n{}", o.daemon_log);
    let n = check_predictions(&o);
    // Windows end at 4..=10 s: 4 s and 5 s (before) and 10 s (after) are clean.
    assert_eq!(n, 3);
    for v in o.predictions["values"].as_array().unwrap() {
        for p in v.as_array().unwrap() {
            assert!(p.as_f64().unwrap().is_finite());
        }
    }
    let s = &o.summary;
    assert_eq!(s["windows_dropped"]["nonfinite"], 4, "{s}");
    // NaN on one channel for 50 samples: 50 values (a value per channel and sample).
    assert_eq!(
        metric(&o.metrics, "labramd_nonfinite_values_total"),
        Some(50.0),
        "{}",
        o.metrics
    );
}

#[test]
fn overloaded_inference_drops_the_oldest_windows() {
    // A window every 10 ms (5 input samples) is more than one thread of inference
    // keeps up with: the queue drops its oldest windows, counted, and the newest
    // still get through.
    let o = scenario("overload", 6.0, 0.01, &[]);
    assert!(o.exit_ok, "labramd did not exit cleanly:\n{}", o.daemon_log);
    let clean = check_predictions_subset(&o, true);
    // 6 s at 500 Hz, 4 s windows every 5 samples: (3000 − 2000) / 5 + 1 windows.
    assert_eq!(clean, 201);
    let s = &o.summary;
    let published = s["windows"].as_u64().unwrap();
    let dropped = s["windows_dropped"]["queue_full"].as_u64().unwrap();
    assert!(dropped > 0, "{s}");
    assert_eq!(
        published + dropped,
        201,
        "every window published or counted: {s}"
    );
    let received = o.predictions["values"].as_array().unwrap().len() as u64;
    assert_eq!(received, published);
    let ts: Vec<f64> = o.predictions["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "predictions in order");
    // The newest window (the stream's last sample) is never the one dropped.
    let last = o.outlet["segments"][0]["t0"].as_f64().unwrap() + 2999.0 / 500.0;
    assert!(
        (ts.last().unwrap() - last).abs() < 0.005,
        "{} vs {last}",
        ts.last().unwrap()
    );
}
