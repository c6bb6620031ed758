//! make-dataset throughput against the MNE-Python chain of the official makers,
//! on the same files, in the same run (issue 8 §5).
//!
//! Files: the 16 eegmat recordings Subject00-07 `_1`/`_2` (19 EEG channels at
//! 500 Hz), exactly those `../shared/bench/bench_mne.py` processes. Unit:
//! input channel-samples (19 × samples at 500 Hz) per second, per core.
//!
//! Measured, each the median of `--passes` passes (default 3):
//! * `read`: `labram_core::recording` alone (the 19 EEG channels to µV).
//! * `preprocess`: `labram_core::dsp::preprocess` alone (read time excluded), one
//!   thread, zero-phase and causal: against MNE's `cs_per_s_excl_read`.
//! * `make-dataset`: the whole eegmat maker with one worker (read, map,
//!   preprocess, cut 4-s windows every 2 s, stream safetensors shards from the
//!   writer thread): wall-clock rate, and the rate per CPU-second of the whole
//!   process over all passes (user + system time from `/proc/self/stat`, all
//!   threads: the honest "per core" figure), against MNE's `cs_per_s_incl_read` (read + filter +
//!   resample on one thread, no windows, no writing).
//! * `make-dataset, N threads`: the same with a worker per core.
//!
//! MNE runs `bench_mne.py` with OMP/MKL/OpenBLAS threads = 1, from the
//! project's `.venv`. Run: `cargo bench -p labram-trainer --bench make_dataset`
//! (add `-- --passes 5` for more passes, `-- --no-mne` to skip MNE, `-- --only-maker`
//! to run the one-worker maker alone, e.g. under `perf record`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use labram_core::card::{FilterMode, Preprocessing};
use labram_core::recording::EdfReader;
use labram_trainer::data::makers::{self, Common, EegmatOptions, EEGMAT_CHANNELS};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files() -> Vec<PathBuf> {
    let dir = manifest().join("../../shared/data/eegmat");
    let mut v: Vec<PathBuf> = (0..8)
        .flat_map(|s| [1, 2].map(|c| dir.join(format!("Subject{s:02}_{c}.edf"))))
        .collect();
    v.retain(|p| p.exists());
    assert_eq!(
        v.len(),
        16,
        "the 16 eegmat files Subject00-07 are needed in ../shared/data/eegmat"
    );
    v
}

/// CPU seconds (user + system, all threads) this process has used, from
/// `/proc/self/stat` (Linux; clock ticks of 1/100 s). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Channel-samples per CPU-second since `cpu0`, over all passes together
/// (the clock ticks are 10 ms: one pass alone would be too coarse).
fn per_cpu_second(cs: usize, cpu0: Option<f64>) -> Option<f64> {
    let used = cpu_seconds()? - cpu0?;
    (used > 0.0).then(|| cs as f64 / used)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads the 19 EEG channels of every file once (µV, 500 Hz).
fn load(files: &[PathBuf]) -> Vec<Vec<Vec<f32>>> {
    files
        .iter()
        .map(|f| {
            let mut r = EdfReader::open(f).expect("read eegmat");
            let rows: Vec<usize> = EEGMAT_CHANNELS
                .iter()
                .map(|e| {
                    r.header()
                        .signals
                        .iter()
                        .position(|s| s.label.eq_ignore_ascii_case(&format!("EEG {e}")))
                        .expect("eegmat label")
                })
                .collect();
            r.read_all_uv(&rows).expect("read eegmat")
        })
        .collect()
}

fn pre(mode: FilterMode) -> Preprocessing {
    Preprocessing {
        mode,
        ..Preprocessing::default()
    }
}

/// Wall-clock rate and rate per CPU-second of `labram_core::dsp::preprocess`.
fn bench_preprocess(data: &[Vec<Vec<f32>>], mode: FilterMode, passes: usize) -> (f64, Option<f64>) {
    let cs: usize = data.iter().map(|d| d.len() * d[0].len()).sum();
    let p = pre(mode);
    let mut rates = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..passes {
        let t = Instant::now();
        for d in data {
            let out = labram_core::dsp::preprocess(d, 500.0, &p).expect("preprocess");
            std::hint::black_box(out);
        }
        rates.push(cs as f64 / t.elapsed().as_secs_f64());
    }
    (median(rates), per_cpu_second(cs * passes, cpu0))
}

fn bench_read(files: &[PathBuf], passes: usize) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        let data = load(files);
        let cs: usize = data.iter().map(|d| d.len() * d[0].len()).sum();
        rates.push(cs as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

/// Wall-clock rate and rate per CPU-second of the eegmat maker.
fn bench_maker(
    files: &[PathBuf],
    mode: FilterMode,
    threads: usize,
    passes: usize,
) -> (f64, Option<f64>) {
    let out = tempfile::tempdir().expect("temp dir");
    let opts = EegmatOptions {
        train: "0-7".parse().expect("subjects"),
        val: None,
        test: None,
        window_patches: 4,
        hop_s: 2.0,
        channels: EEGMAT_CHANNELS.iter().map(|s| s.to_string()).collect(),
    };
    let mut rates = Vec::new();
    let cpu0 = cpu_seconds();
    let mut total = 0usize;
    for _ in 0..passes {
        let common = Common {
            output: out.path().join("ds"),
            preprocessing: pre(mode),
            threads,
            overwrite: true,
            shard_bytes: 1 << 30,
            command: "bench".into(),
            channel_map: Default::default(),
            skip_start_s: 0.0,
        };
        let t = Instant::now();
        let (summary, _) = makers::make_eegmat(files, &opts, &common).expect("make eegmat");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(summary.used_files, files.len());
        total += summary.input_channel_samples as usize;
        rates.push(summary.input_channel_samples as f64 / secs);
    }
    (median(rates), per_cpu_second(total, cpu0))
}

/// MNE's figures: wall-clock rates from `bench_mne.py` itself, and rates per
/// CPU-second from the same chain (its `one()` steps) timed with
/// `time.process_time()`, so both sides are also compared in CPU time when the
/// machine is shared. Fields: (excl. read, incl. read) wall, then CPU.
struct MneFigures {
    excl: f64,
    incl: f64,
    excl_cpu: f64,
    incl_cpu: f64,
    version: String,
}

const MNE_CPU: &str = r#"
import sys, time, json, importlib.util, statistics
spec = importlib.util.spec_from_file_location("bench_mne", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
mne = m.mne
def one(path):
    c0 = time.process_time()
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    c1 = time.process_time()
    raw.drop_channels([c for c in m.DROP if c in raw.ch_names])
    n = int(len(raw.ch_names) * raw.n_times)
    raw.filter(l_freq=0.1, h_freq=75.0, n_jobs=1, verbose="error")
    raw.notch_filter(50.0, n_jobs=1, verbose="error")
    raw.resample(200, n_jobs=1, verbose="error")
    raw.get_data(units="uV")
    c2 = time.process_time()
    return c1 - c0, c2 - c1, n
one(m.FILES[0])
excl, incl = [], []
for _ in range(int(sys.argv[2])):
    rd = pr = cs = 0
    for f in m.FILES:
        r, p, n = one(f); rd += r; pr += p; cs += n
    excl.append(cs / pr); incl.append(cs / (rd + pr))
print(json.dumps(dict(excl=statistics.median(excl), incl=statistics.median(incl))))
"#;

fn mne(passes: usize) -> Option<MneFigures> {
    let py = manifest().join("../.venv/bin/python");
    let script = manifest().join("../../shared/bench/bench_mne.py");
    if !py.exists() || !script.exists() {
        eprintln!(
            "MNE baseline skipped: {} or {} missing (run scripts/setup.sh)",
            py.display(),
            script.display()
        );
        return None;
    }
    let run = |cmd: &mut Command| -> Option<Vec<u8>> {
        let out = cmd
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("MNE run failed:\n{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(out.stdout)
    };
    let json = tempfile::NamedTempFile::new().ok()?;
    run(Command::new(&py)
        .arg(&script)
        .args(["--passes", &passes.to_string(), "--out"])
        .arg(json.path()))?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json.path()).ok()?).ok()?;
    let m = &v["median_pass"];
    let cpu_out = run(Command::new(&py)
        .args(["-c", MNE_CPU])
        .arg(&script)
        .arg(passes.to_string()))?;
    let cpu: serde_json::Value = serde_json::from_slice(&cpu_out).ok()?;
    Some(MneFigures {
        excl: m["cs_per_s_excl_read"].as_f64()?,
        incl: m["cs_per_s_incl_read"].as_f64()?,
        excl_cpu: cpu["excl"].as_f64()?,
        incl_cpu: cpu["incl"].as_f64()?,
        version: v["mne"].as_str().unwrap_or("?").to_string(),
    })
}

fn main() {
    // As the labram-trainer binary does (see labram_trainer::memory).
    labram_trainer::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let passes = args
        .iter()
        .position(|a| a == "--passes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let with_mne = !args.iter().any(|a| a == "--no-mne");
    let files = files();
    if args.iter().any(|a| a == "--only-maker") {
        // For profilers (`perf record … -- --only-maker`): the one-worker maker alone.
        for mode in [FilterMode::ZeroPhase, FilterMode::Causal] {
            let (m1, m1_cpu) = bench_maker(&files, mode, 1, passes);
            println!("{mode:>10}: make-dataset eegmat, 1 worker: {m1:>10.3e} cs/s wall, {m1_cpu:?} cs per CPU-second");
        }
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = load(&files);
    let cs: usize = data.iter().map(|d| d.len() * d[0].len()).sum();
    println!(
        "make-dataset throughput: 16 eegmat files (Subject00-07), {} input channel-samples (19 ch at 500 Hz), median of {passes} passes",
        cs
    );
    let read = bench_read(&files, passes);
    println!("read (labram_core::recording), 1 thread:         {read:>10.3e} cs/s");
    let fmt_cpu = |c: Option<f64>| c.map_or("n/a".to_string(), |c| format!("{c:.3e}"));
    let modes = [FilterMode::ZeroPhase, FilterMode::Causal];
    let mut ours = Vec::new();
    for mode in modes {
        let (p, p_cpu) = bench_preprocess(&data, mode, passes);
        let (m1, m1_cpu) = bench_maker(&files, mode, 1, passes);
        let (mn, mn_cpu) = bench_maker(&files, mode, threads, passes);
        println!(
            "{mode:>10}: preprocess only, 1 thread:      {p:>10.3e} cs/s wall, {} cs per CPU-second",
            fmt_cpu(p_cpu)
        );
        println!(
            "{mode:>10}: make-dataset eegmat, 1 worker:  {m1:>10.3e} cs/s wall, {} cs per CPU-second",
            fmt_cpu(m1_cpu)
        );
        println!(
            "{mode:>10}: make-dataset eegmat, {threads} workers: {mn:>10.3e} cs/s wall, {} cs per CPU-second",
            fmt_cpu(mn_cpu)
        );
        ours.push((mode, p, p_cpu, m1, m1_cpu));
    }
    if !with_mne {
        return;
    }
    let Some(m) = mne(passes) else {
        return;
    };
    println!(
        "MNE-Python {} (bench_mne.py chain, 1 thread): {:.3e} / {:.3e} cs/s wall excl. / incl. read, {:.3e} / {:.3e} per CPU-second",
        m.version, m.excl, m.incl, m.excl_cpu, m.incl_cpu
    );
    let ratio = |a: Option<f64>, b: f64| a.map_or("n/a".to_string(), |a| format!("{:.1}x", a / b));
    for (mode, p, p_cpu, m1, m1_cpu) in ours {
        println!(
            "ratio {mode:>10}: preprocess vs MNE excl. read {:.1}x wall, {} CPU; make-dataset (read+windows+write, 1 worker) vs MNE incl. read {:.1}x wall, {} CPU",
            p / m.excl,
            ratio(p_cpu, m.excl_cpu),
            m1 / m.incl,
            ratio(m1_cpu, m.incl_cpu)
        );
    }
}
