//! Tests of the preprocessing chains (issue 7 §7, issue 8 §3): chunk
//! invariance, magnitude response, alias rejection, supported rates, NaN
//! recovery, and the zero-phase chain against MNE-Python.

use labramd::card::{FilterMode, Preprocessing};
use labramd::dsp::{preprocess, CausalChain};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts this thread's heap allocations (for the allocation-free test).
struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread-local Cell (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

fn pre() -> Preprocessing {
    Preprocessing::default()
}

fn resampler_only() -> Preprocessing {
    Preprocessing {
        bandpass_hz: None,
        notch_hz: None,
        ..pre()
    }
}

/// Deterministic pseudo-random µV-scale noise (xorshift), interleaved.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 50.0
        })
        .collect()
}

fn run_whole(fs: f64, n_ch: usize, x: &[f32], p: &Preprocessing) -> Vec<f32> {
    let mut c = CausalChain::new(n_ch, fs, p).unwrap();
    let mut out = Vec::new();
    c.process(x, &mut out);
    out
}

/// Runs one channel of a sinusoid through the chain and returns the output
/// RMS over the settled part relative to the input RMS, in dB.
fn gain_db(fs: f64, f: f64, p: &Preprocessing) -> f64 {
    let secs = 16.0;
    let n = (fs * secs) as usize;
    let x: Vec<f32> = (0..n)
        .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / fs).sin() as f32 * 100.0)
        .collect();
    let y = run_whole(fs, 1, &x, p);
    // Skip 6 s of settling (the 0.1 Hz high-pass), then 10 s at 200 Hz.
    let tail = &y[1200..3200];
    let rms_out =
        (tail.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
    let rms_in = 100.0 / 2f64.sqrt();
    20.0 * (rms_out / rms_in).log10()
}

#[test]
fn every_listed_rate_constructs_and_gives_200_hz() {
    for fs in [
        160.0, 200.0, 250.0, 256.0, 500.0, 512.0, 1000.0, 1024.0, 2048.0, 4096.0,
    ] {
        let mut c = CausalChain::new(4, fs, &pre()).unwrap_or_else(|e| panic!("{fs}: {e}"));
        assert_eq!(c.output_rate_hz(), 200.0, "{fs}");
        let n = (fs * 10.0) as usize;
        let mut out = Vec::new();
        let r = c.process(&noise(4 * n, 3), &mut out);
        assert_eq!(r.frames_in, n);
        assert!(
            (r.frames_out as i64 - 2000).abs() <= 1,
            "{fs}: {} frames out",
            r.frames_out
        );
        assert_eq!(out.len(), 4 * r.frames_out);
        // the time map: output k sits at input frame (k M + M - 1) / L, i.e. ~ (k+1)/200 s
        let t = c.input_frame_of_output(1999) / fs;
        assert!((t - 10.0).abs() <= 1.0 / 200.0 + 1e-9, "{fs}: {t}");
    }
}

/// After the first chunk, streaming allocates nothing (the caller reuses
/// `out`), NaN chunks included.
#[test]
fn steady_state_is_allocation_free() {
    let (n_ch, chunk) = (64, 64);
    let mut c = CausalChain::new(n_ch, 2048.0, &pre()).unwrap();
    let x = noise(n_ch * chunk * 200, 5);
    let mut bad = x[..n_ch * chunk].to_vec();
    bad[7] = f32::NAN;
    let mut out = Vec::with_capacity(n_ch * chunk);
    for block in x.chunks_exact(n_ch * chunk).take(20) {
        out.clear();
        c.process(block, &mut out);
    }
    let before = allocations();
    let mut frames = 0;
    for (i, block) in x.chunks_exact(n_ch * chunk).enumerate() {
        out.clear();
        let r = c.process(if i == 100 { &bad } else { block }, &mut out);
        frames += r.frames_out;
    }
    assert_eq!(allocations() - before, 0, "allocations in the steady state");
    assert!(frames > 1000);
    // the counter does count
    let probe = allocations();
    drop(std::hint::black_box(vec![1u8; 16]));
    assert!(allocations() > probe);
}

#[test]
fn unsupported_rate_is_a_clear_error() {
    let e = CausalChain::new(4, 333.3333, &pre())
        .unwrap_err()
        .to_string();
    assert!(e.contains("333.3333 Hz") && e.contains("2048"), "{e}");
}

#[test]
fn magnitude_response_flat_band_and_notch() {
    for fs in [250.0, 500.0, 1000.0, 2048.0] {
        let mut worst: f64 = 0.0;
        for f in [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0] {
            let g = gain_db(fs, f, &pre());
            worst = worst.max(g.abs());
            assert!(g.abs() <= 1.0, "fs {fs}: {f} Hz gain {g:.3} dB");
        }
        let notch = gain_db(fs, 50.0, &pre());
        println!("fs {fs}: pass band 1-40 Hz within ±{worst:.3} dB, 50 Hz {notch:.1} dB");
        assert!(notch <= -40.0, "fs {fs}: 50 Hz only {notch:.1} dB down");
        let p60 = Preprocessing {
            notch_hz: Some(60.0),
            ..pre()
        };
        let n60 = gain_db(fs, 60.0, &p60);
        assert!(n60 <= -40.0, "fs {fs}: 60 Hz notch only {n60:.1} dB down");
    }
}

#[test]
fn resampler_rejects_aliases_by_60_db() {
    // The resampler alone (band-pass and notch off): every tone above the
    // output Nyquist frequency (100 Hz) must come out >= 60 dB down.
    for (fs, tones) in [
        (1000.0, &[100.5, 110.0, 130.0, 300.0, 499.0][..]),
        (2048.0, &[101.0, 150.0, 700.0, 1000.0][..]),
        (256.0, &[101.0, 120.0][..]),
        (500.0, &[105.0, 130.0, 240.0][..]),
    ] {
        for &f in tones {
            let g = gain_db(fs, f, &resampler_only());
            println!("fs {fs}: tone {f} Hz -> {g:.1} dB");
            assert!(g <= -60.0, "fs {fs}: {f} Hz alias only {g:.1} dB down");
        }
        // and passes the band below 75 Hz
        let g = gain_db(fs, 70.0, &resampler_only());
        assert!(g.abs() < 0.1, "fs {fs}: 70 Hz {g:.3} dB");
    }
}

#[test]
fn nan_burst_recovers() {
    let fs = 500.0;
    let n = (fs * 20.0) as usize;
    let clean: Vec<f32> = (0..2 * n)
        .map(|i| ((i / 2) as f32 * 2.0 * std::f32::consts::PI * 10.0 / fs as f32).sin() * 40.0)
        .collect();
    let mut dirty = clean.clone();
    for v in &mut dirty[2 * 1000..2 * 1010] {
        *v = f32::NAN;
    }
    let mut c = CausalChain::new(2, fs, &pre()).unwrap();
    let mut out = Vec::new();
    let r = c.process(&dirty, &mut out);
    assert_eq!(r.nonfinite, 20);
    assert!(out.iter().all(|v| v.is_finite()));
    let want = run_whole(fs, 2, &clean, &pre());
    // 10 s after the burst the output matches the clean run again.
    let from = 2 * 2400;
    let num: f64 = out[from..]
        .iter()
        .zip(&want[from..])
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want[from..].iter().map(|&b| (b as f64).powi(2)).sum();
    let rel = (num / den).sqrt();
    assert!(rel < 1e-2, "relative error after recovery {rel}");
}

#[test]
fn preprocess_causal_equals_streaming() {
    let fs = 1024.0;
    let n_ch = 3;
    let n = 10_000;
    let x = noise(n_ch * n, 9);
    let streamed = run_whole(fs, n_ch, &x, &pre());
    let signals: Vec<Vec<f32>> = (0..n_ch)
        .map(|c| x.iter().skip(c).step_by(n_ch).copied().collect())
        .collect();
    let p = Preprocessing {
        mode: FilterMode::Causal,
        ..pre()
    };
    let out = preprocess(&signals, fs, &p).unwrap();
    assert_eq!(out.len(), n_ch);
    for (c, o) in out.iter().enumerate() {
        let col: Vec<f32> = streamed.iter().skip(c).step_by(n_ch).copied().collect();
        assert_eq!(o, &col);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Streamed in random chunks (0 frames too), the output equals the
    /// whole-signal run within 1e-6 (it is in fact bit-identical).
    #[test]
    fn chunk_invariance(
        rate_idx in 0usize..6,
        chunks in proptest::collection::vec(0usize..700, 1..60),
        seed in any::<u64>(),
    ) {
        let fs = [250.0, 256.0, 500.0, 1000.0, 1024.0, 2048.0][rate_idx];
        let n_ch = 3;
        let n: usize = (fs * 3.0) as usize;
        let x = noise(n_ch * n, seed);
        let whole = run_whole(fs, n_ch, &x, &pre());
        let mut c = CausalChain::new(n_ch, fs, &pre()).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < n {
            let len = chunks[i % chunks.len()].min(n - at);
            i += 1;
            if i > 100_000 { break; }
            let r = c.process(&x[at * n_ch..(at + len) * n_ch], &mut out);
            prop_assert_eq!(r.frames_in, len);
            at += len;
            if chunks.iter().all(|&l| l == 0) { break; }
        }
        if at == n {
            prop_assert_eq!(out.len(), whole.len());
            for (a, b) in out.iter().zip(&whole) {
                prop_assert!((a - b).abs() <= 1e-6, "{} vs {}", a, b);
            }
        }
    }
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn python() -> std::path::PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh to create the project's Python environment",
        py.display()
    );
    py
}

fn read_f64(path: &std::path::Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// MNE-Python's chain (the official makers' calls) on a few channels of real
/// recordings, against `preprocess` in zero-phase mode: eegmat at 500 Hz (182 s:
/// filtering fused into the resampler; 62 s: separate filtering stage), eegmmidb
/// at 160 Hz (upsampling) and the BioSemi BDF at 256 Hz.
#[test]
fn zero_phase_matches_mne() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np, mne
path, out, nch = sys.argv[1], sys.argv[2], int(sys.argv[3])
read = mne.io.read_raw_bdf if path.endswith(".bdf") else mne.io.read_raw_edf
raw = read(path, preload=True, verbose="error")
raw.drop_channels([c for c in ["EEG A2-A1", "ECG ECG"] if c in raw.ch_names])
raw.pick(raw.ch_names[:nch])
raw.get_data(units="uV").astype("<f8").tofile(out + "/in.f64")
raw.filter(l_freq=0.1, h_freq=75.0, n_jobs=1, verbose="error")
raw.notch_filter(50.0, n_jobs=1, verbose="error")
raw.resample(200, n_jobs=1, verbose="error")
raw.get_data(units="uV").astype("<f8").tofile(out + "/out.f64")
"#;
    let n_ch = 4;
    for (file, fs) in [
        ("eegmat/Subject00_1.edf", 500.0),
        ("eegmat/Subject00_2.edf", 500.0),
        ("eegmmidb/S001R04.edf", 160.0),
        ("bdf/Newtest17-256.bdf", 256.0),
    ] {
        let edf = repo().join("../shared/data").join(file);
        let st = std::process::Command::new(python())
            .args(["-c", script])
            .arg(&edf)
            .arg(dir.path())
            .arg(n_ch.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "MNE reference failed for {}", edf.display());
        let x = read_f64(&dir.path().join("in.f64"));
        let want = read_f64(&dir.path().join("out.f64"));
        let n = x.len() / n_ch;
        let signals: Vec<Vec<f32>> = x
            .chunks_exact(n)
            .map(|c| c.iter().map(|&v| v as f32).collect())
            .collect();
        let p = Preprocessing {
            mode: FilterMode::ZeroPhase,
            ..pre()
        };
        let t = std::time::Instant::now();
        let got = preprocess(&signals, fs, &p).unwrap();
        let el = t.elapsed();
        let m = want.len() / n_ch;
        assert_eq!(got[0].len(), m, "{file}: output length");
        let rel = |lo: usize, hi: usize| {
            let (mut num, mut den) = (0.0, 0.0);
            for c in 0..n_ch {
                for i in lo..hi {
                    let w = want[c * m + i];
                    num += (got[c][i] as f64 - w).powi(2);
                    den += w * w;
                }
            }
            (num / den).sqrt()
        };
        let edge = 200 * 10; // 10 s at 200 Hz
        let inner = rel(edge, m - edge);
        let all = rel(0, m);
        println!(
            "{file}: {n_ch} ch x {n} samples: zero-phase vs MNE relative L2 {inner:.2e} away from the edges (10 s), {all:.2e} overall ({:.1} ms)",
            el.as_secs_f64() * 1e3
        );
        assert!(inner <= 1e-2, "{file}: relative L2 {inner} > 1e-2");
    }
}
