//! DSP throughput, side by side with the Python baselines in ../shared/bench
//! (issue 7 §8, issue 8 §5), one thread each, alternating the two:
//!
//! 1. the causal chain (band-pass + notch + resampler to 200 Hz), 64 channels
//!    at 2048 Hz in 64-sample chunks, vs `bench_dsp.py` (scipy `sosfilt` chain);
//! 2. make-dataset style: eegmat Subject00-07 (16 files, 19 EEG channels at
//!    500 Hz), read + preprocess in both modes, vs `bench_mne.py` (MNE chain).
//!
//! `cargo bench -p labramd --bench dsp` (`-- --quick` for shorter runs,
//! `-- --rust-only` to skip the Python baselines).
//! Needs the project's Python (`.venv`, made by scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use labramd::card::{FilterMode, Preprocessing};
use labramd::dsp::{preprocess, CausalChain};
use labramd::recording::EdfReader;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    if !py.exists() {
        eprintln!("{} is missing: run scripts/setup.sh", py.display());
        std::process::exit(2);
    }
    py
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Channel-samples per second of the causal chain (median of `reps`).
fn causal_throughput(n_ch: usize, fs: f64, chunk: usize, seconds: f64, reps: usize) -> f64 {
    let n = (fs * seconds) as usize / chunk * chunk;
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<f32> = (0..n * n_ch)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 60.0
        })
        .collect();
    let pre = Preprocessing::default();
    let mut times = Vec::new();
    let mut out = Vec::with_capacity(n_ch * 4096);
    for _ in 0..reps {
        let mut c = CausalChain::new(n_ch, fs, &pre).expect("chain");
        let t = Instant::now();
        for block in data.chunks_exact(chunk * n_ch) {
            out.clear();
            c.process(block, &mut out);
        }
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    (n * n_ch) as f64 / median(times)
}

fn run_python(script: &str, args: &[&str]) -> Option<serde_json::Value> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("out.json");
    let bench = repo().join("../shared/bench");
    let st = Command::new(python())
        .current_dir(&bench)
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .arg(script)
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .ok()?;
    if !st.status.success() {
        eprintln!("{script} failed:\n{}", String::from_utf8_lossy(&st.stderr));
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(&out).ok()?).ok()
}

/// The eegmat files bench_mne.py uses (Subject00-07, both runs).
fn eegmat_files() -> Vec<PathBuf> {
    let dir = repo().join("../shared/data/eegmat");
    let mut v = Vec::new();
    for s in 0..8 {
        for k in 1..=2 {
            v.push(dir.join(format!("Subject{s:02}_{k}.edf")));
        }
    }
    v
}

/// One make-dataset-style pass: (read seconds, process seconds, input channel-samples).
fn dataset_pass(mode: FilterMode) -> (f64, f64, usize) {
    let pre = Preprocessing {
        mode,
        ..Preprocessing::default()
    };
    let (mut rd, mut pr, mut cs) = (0.0, 0.0, 0);
    for f in eegmat_files() {
        let t0 = Instant::now();
        let mut r = EdfReader::open(&f).expect("eegmat file");
        let h = r.header().clone();
        // as bench_mne.py: drop the A2-A1 reference and the ECG → 19 EEG channels
        let sel: Vec<usize> = h
            .data_signals()
            .into_iter()
            .filter(|&i| !matches!(h.signals[i].label.as_str(), "EEG A2-A1" | "ECG ECG"))
            .collect();
        let x = r.read_all_uv(&sel).expect("read");
        let t1 = Instant::now();
        let fs = h.sample_rate_hz(sel[0]).expect("rate");
        let y = preprocess(&x, fs, &pre).expect("preprocess");
        std::hint::black_box(&y);
        let t2 = Instant::now();
        rd += (t1 - t0).as_secs_f64();
        pr += (t2 - t1).as_secs_f64();
        cs += x.len() * x[0].len();
    }
    (rd, pr, cs)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--rust-only`: skip the Python baselines (for quick iterations; no ratios).
    let rust_only = std::env::args().any(|a| a == "--rust-only");
    let (seconds, reps) = if quick { (10.0, 3) } else { (60.0, 3) };
    println!("== DSP: causal chain, 64 ch @ 2048 Hz, 64-sample chunks, one thread");
    let a1 = causal_throughput(64, 2048.0, 64, seconds, reps);
    println!("labramd causal chain: {:.1} M channel-samples/s", a1 / 1e6);
    let secs_arg = format!("{seconds}");
    let py = if rust_only {
        None
    } else {
        run_python(
            "bench_dsp.py",
            &["--seconds", &secs_arg, "--reps", &reps.to_string()],
        )
    };
    let a2 = causal_throughput(64, 2048.0, 64, seconds, reps);
    let ours = (a1 + a2) / 2.0;
    println!(
        "labramd causal chain (second run): {:.1} M channel-samples/s",
        a2 / 1e6
    );
    if let Some(py) = py {
        for r in py["results"].as_array().into_iter().flatten() {
            println!(
                "scipy {} ch @ {} Hz chunk {} [{}]: {:.1} M channel-samples/s",
                r["channels"],
                r["fs"],
                r["chunk"],
                r["stage"].as_str().unwrap_or(""),
                r["cs_per_s"].as_f64().unwrap_or(0.0) / 1e6
            );
        }
        let full = py["results"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|r| r["channels"] == 64 && r["stage"].as_str() == Some("full chain"))
            })
            .and_then(|r| r["cs_per_s"].as_f64());
        if let Some(full) = full {
            println!(
                "RATIO causal chain / scipy full chain (64 ch @ 2048 Hz): {:.1}x (target >= 2x)",
                ours / full
            );
        }
        let filt = py["results"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|r| r["channels"] == 64 && r["stage"].as_str() != Some("full chain"))
            })
            .and_then(|r| r["cs_per_s"].as_f64());
        if let Some(filt) = filt {
            println!(
                "RATIO causal chain (with resampler) / scipy sosfilt alone (64 ch @ 2048 Hz): {:.1}x",
                ours / filt
            );
        }
    }
    for (n_ch, fs, chunk) in [(23, 1000.0, 10), (32, 1000.0, 10)] {
        let t = causal_throughput(n_ch, fs, chunk, seconds, reps);
        println!(
            "labramd causal chain {n_ch} ch @ {fs} Hz chunk {chunk}: {:.1} M channel-samples/s",
            t / 1e6
        );
    }

    println!("\n== make-dataset style: eegmat Subject00-07 (16 files, 19 ch @ 500 Hz), read + preprocess, one thread");
    let passes = if quick { 1 } else { 3 };
    let mut res = Vec::new();
    for mode in [FilterMode::ZeroPhase, FilterMode::Causal] {
        let mut excl = Vec::new();
        let mut incl = Vec::new();
        for _ in 0..passes {
            let (rd, pr, cs) = dataset_pass(mode);
            excl.push(cs as f64 / pr);
            incl.push(cs as f64 / (rd + pr));
        }
        let (e, i) = (median(excl), median(incl));
        println!(
            "labramd {mode}: {:.1} M channel-samples/s excluding read, {:.1} M including read",
            e / 1e6,
            i / 1e6
        );
        res.push((mode, e, i));
    }
    let mne = if rust_only {
        None
    } else {
        run_python("bench_mne.py", &["--passes", &passes.to_string()])
    };
    if let Some(m) = mne {
        let e = m["median_pass"]["cs_per_s_excl_read"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let i = m["median_pass"]["cs_per_s_incl_read"]
            .as_f64()
            .unwrap_or(f64::NAN);
        println!(
            "MNE {}: {:.1} M channel-samples/s excluding read, {:.1} M including read",
            m["mne"].as_str().unwrap_or("?"),
            e / 1e6,
            i / 1e6
        );
        for (mode, oe, oi) in res {
            println!(
                "RATIO {mode} / MNE: {:.1}x excluding read, {:.1}x including read (target >= 10x)",
                oe / e,
                oi / i
            );
        }
    }
}
