//! Inference speed of the exported LaBraM-Base (issue 2 §6): ONNX Runtime on the CPU
//! with 2 intra-op threads and 1 inter-op thread, a 23-channel (TUH) × 10-patch
//! window, batch 1 and 8. In the same run it times the official model's `torch.onnx`
//! export (`../shared/golden/reference_torch_export.onnx`) with the same Rust session
//! settings, and both models again in onnxruntime-python (the venv's), so the figures
//! can be read as ratios (the tch forward of the same weights is timed alongside): absolute times vary about 2× between machines of this kind
//! and with load, ratios taken side by side (interleaved call by call) much less.
//!
//! Run: `cargo bench -p labram-trainer --bench inference [-- --rounds 100 --variants default,unfolded,contrib]`.
//! Prints median and p99 per call and the median of the per-round ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use labram_trainer::export::{self, AttentionImpl, FinetuneArch, GraphOptions};
use labram_trainer::model::{load_strict, NeuralTransformer, TransformerConfig};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

const CHANNELS: usize = 23;
const PATCHES: usize = 10;

struct Args {
    rounds: usize,
    /// Wait for a quiet machine (other processes' CPU use ≤ this fraction) before each
    /// round; 1.0 disables the wait.
    max_busy: f64,
    variants: Vec<String>,
    checkpoint: PathBuf,
    python: bool,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 100,
        max_busy: 0.25,
        variants: vec!["default".into()],
        checkpoint: manifest().join("../../shared/golden/finetune_base.pth"),
        python: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--variants" => {
                a.variants = it
                    .next()
                    .context("--variants a,b")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--checkpoint" => a.checkpoint = it.next().context("--checkpoint PATH")?.into(),
            "--no-python" => a.python = false,
            "--max-busy" => a.max_busy = it.next().context("--max-busy FRACTION")?.parse()?,
            "--bench" => {} // added by `cargo bench`
            other => bail!("unknown argument {other}; known: --rounds N, --max-busy F, --variants default,unfolded,flat3d,contrib,qkln,latepool,literal, --checkpoint PATH, --no-python"),
        }
    }
    Ok(a)
}

fn variant(name: &str) -> Result<GraphOptions> {
    let d = GraphOptions::default();
    Ok(match name {
        "default" => d,
        "unfolded" => GraphOptions {
            fold_layer_scale: false,
            fold_attn_scale: false,
            ..d
        },
        "flat3d" => GraphOptions {
            flat_tokens: false,
            ..d
        },
        "contrib" => GraphOptions {
            attention: AttentionImpl::ContribMha,
            ..d
        },
        "latepool" => GraphOptions {
            pool_before_last_fc2: false,
            ..d
        },
        "literal" => GraphOptions {
            fold_layer_scale: false,
            fold_attn_scale: false,
            flat_tokens: false,
            attention: AttentionImpl::Standard,
            pool_before_last_fc2: false,
            merge_qk_norm: false,
        },
        "qkln" => GraphOptions {
            merge_qk_norm: false,
            ..d
        },
        other => bail!("unknown variant {other}"),
    })
}

/// Deterministic Gaussian noise (xorshift + Box-Muller) × 30 µV.
fn eeg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32 * 30.0
        })
        .collect()
}

fn session(env: &ort::environment::Environment, model: &Path) -> Result<Session> {
    let opt = |e: ort::Error<_>| anyhow::anyhow!("session options: {e}");
    let s = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(opt)?
        .with_intra_threads(2)
        .map_err(opt)?
        .with_inter_threads(1)
        .map_err(opt)?
        .commit_from_file(model)?;
    Ok(s)
}

/// One timed contender: runs the model on `x` (µV, `[batch, 23, 10, 200]`).
type Runner<'a> = Box<dyn FnMut(&[f32], usize) -> Result<()> + 'a>;

fn ort_runner<'a>(mut s: Session, chans: &'a [i64]) -> Runner<'a> {
    Box::new(move |x: &[f32], batch: usize| {
        let xt = TensorRef::from_array_view(([batch, CHANNELS, PATCHES, 200], x))?;
        let ic = TensorRef::from_array_view(([chans.len()], chans))?;
        let out = s.run(ort::inputs!["eeg" => xt, "input_chans" => ic])?;
        let (_, logits) = out["logits"].try_extract_tensor::<f32>()?;
        std::hint::black_box(logits);
        Ok(())
    })
}

/// This crate's tch network with the same weights (libtorch, 2 intra-op threads),
/// called like the official engine: `model(x / 100, input_chans)` in no-grad mode.
fn tch_runner<'a>(net: &'a NeuralTransformer, chans: &[i64]) -> Runner<'a> {
    let ic = tch::Tensor::from_slice(chans);
    Box::new(move |x: &[f32], batch: usize| {
        let xt = tch::Tensor::from_slice(x).reshape([
            batch as i64,
            CHANNELS as i64,
            PATCHES as i64,
            200,
        ]) / 100.0;
        let logits = tch::no_grad(|| net.forward(&xt, &ic, false))?;
        let _ = std::hint::black_box(logits);
        Ok(())
    })
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s[i]
}

struct Timing {
    name: String,
    batch: usize,
    ms: Vec<f64>,
}

/// Fraction of the machine's CPU time spent busy (not idle/iowait) over `dt`, from
/// `/proc/stat`; `None` where that file does not exist.
fn busy_fraction(dt: std::time::Duration) -> Option<f64> {
    fn read() -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = text
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some((v.iter().sum(), v.get(3)? + v.get(4)?))
    }
    let (t0, i0) = read()?;
    std::thread::sleep(dt);
    let (t1, i1) = read()?;
    Some(1.0 - (i1 - i0) as f64 / (t1 - t0).max(1) as f64)
}

/// Waits (up to a minute) until other processes leave the CPUs mostly idle, so a round
/// is not timed while, say, a compiler runs beside it. Returns whether it was quiet.
fn wait_quiet(max_busy: f64) -> bool {
    if max_busy >= 1.0 {
        return true;
    }
    let start = Instant::now();
    while start.elapsed().as_secs() < 60 {
        match busy_fraction(std::time::Duration::from_millis(150)) {
            Some(b) if b > max_busy => continue,
            _ => return true,
        }
    }
    false
}

/// Times every model in turn, a few calls each per round, so load changes on a shared
/// machine hit all of them alike; each round starts on a quiet machine when possible.
fn time_models(
    models: &mut [(String, Runner<'_>)],
    batch: usize,
    rounds: usize,
    max_busy: f64,
) -> Result<Vec<Timing>> {
    let x = eeg(batch * CHANNELS * PATCHES * 200, 5);
    for (_, run) in models.iter_mut() {
        for _ in 0..10 {
            run(&x, batch)?;
        }
    }
    let mut out: Vec<Timing> = models
        .iter()
        .map(|(n, _)| Timing {
            name: n.clone(),
            batch,
            ms: vec![],
        })
        .collect();
    const PER_ROUND: usize = 5;
    let mut loud = 0;
    for _ in 0..rounds.div_ceil(PER_ROUND) {
        if !wait_quiet(max_busy) {
            loud += 1;
        }
        for (i, (_, run)) in models.iter_mut().enumerate() {
            for _ in 0..PER_ROUND {
                let t0 = Instant::now();
                run(&x, batch)?;
                out[i].ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    if loud > 0 {
        println!("(batch {batch}: {loud} rounds ran on a busy machine)");
    }
    Ok(out)
}

const PY: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
rounds = int(sys.argv[1]); chans = np.array([int(v) for v in sys.argv[2].split(',')], dtype=np.int64)
max_busy = float(sys.argv[3]); models = sys.argv[4:]
def busy(dt=0.15):
    def read():
        v = [int(x) for x in open('/proc/stat').readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = read(); time.sleep(dt); t1, i1 = read()
    return 1 - (i1 - i0) / max(1, t1 - t0)
def wait_quiet():
    if max_busy >= 1.0: return
    start = time.time()
    while time.time() - start < 60:
        try:
            if busy() <= max_busy: return
        except OSError:
            return
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = [ort.InferenceSession(m, so, providers=['CPUExecutionProvider']) for m in models]
rng = np.random.default_rng(5)
for batch, n in ((1, rounds), (8, max(10, rounds // 4))):
    x = (rng.standard_normal((batch, len(chans) - 1, 10, 200)) * 30).astype(np.float32)
    feed = {'eeg': x, 'input_chans': chans}
    for s in sess:
        for _ in range(10): s.run(None, feed)
    ms = [[] for _ in sess]
    for _ in range((n + 4) // 5):
        wait_quiet()
        for i, s in enumerate(sess):
            for _ in range(5):
                t0 = time.perf_counter(); s.run(None, feed); ms[i].append((time.perf_counter() - t0) * 1e3)
    for i, m in enumerate(models):
        print('TIMES', i, batch, ' '.join(f'{v:.4f}' for v in ms[i]))
"#;

fn python_timings(
    models: &[(String, PathBuf)],
    rounds: usize,
    chans: &[i64],
    max_busy: f64,
) -> Result<Vec<Timing>> {
    let python = manifest().join("../.venv/bin/python");
    if !python.exists() {
        bail!("{} is missing: run scripts/setup.sh", python.display());
    }
    let chans_s = chans
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(&python)
        .arg("-c")
        .arg(PY)
        .arg(rounds.to_string())
        .arg(chans_s)
        .arg(max_busy.to_string())
        .args(models.iter().map(|(_, p)| p))
        .output()
        .context("running onnxruntime-python")?;
    if !out.status.success() {
        bail!(
            "onnxruntime-python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut res = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        if f.next() != Some("TIMES") {
            continue;
        }
        let i: usize = f.next().context("index")?.parse()?;
        let batch: usize = f.next().context("batch")?.parse()?;
        let ms = f.map(|v| v.parse::<f64>()).collect::<Result<Vec<_>, _>>()?;
        res.push(Timing {
            name: format!("{} (python)", models[i].0),
            batch,
            ms,
        });
    }
    Ok(res)
}

fn print_table(title: &str, rows: &[&Timing], reference: &Timing) {
    println!("\n{title}");
    println!(
        "| model | batch | runs | median ms | p99 ms | ratio to ref (median of per-round ratios) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for t in rows {
        let ratios: Vec<f64> = t.ms.iter().zip(&reference.ms).map(|(a, b)| a / b).collect();
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.3} |",
            t.name,
            t.batch,
            t.ms.len(),
            percentile(&t.ms, 0.5),
            percentile(&t.ms, 0.99),
            percentile(&ratios, 0.5)
        );
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("../.deps/libonnxruntime.so"));
    let env = ort::init_from(&lib)
        .with_context(|| {
            format!(
                "loading ONNX Runtime from {} (run scripts/setup.sh)",
                lib.display()
            )
        })?
        .build()?;
    let chans = labram_core::electrodes::input_chans(&labram_core::electrodes::TUH_STANDARD_23)?;
    let reference = manifest().join("../../shared/golden/reference_torch_export.onnx");

    // Export each variant of the same weights into a scratch folder.
    let dir = tempfile::tempdir()?;
    let sd = export::load_weights(&args.checkpoint)?;
    let arch = FinetuneArch::by_name("labram_base_patch200_200")?;
    let k = sd.get("head.weight").map(|t| t.shape[0]).unwrap_or(2);
    let mut models: Vec<(String, PathBuf)> = vec![("torch.onnx reference".into(), reference)];
    for v in &args.variants {
        let path = dir.path().join(format!("{v}.onnx"));
        std::fs::write(&path, export::onnx_bytes(&sd, arch, k, variant(v)?)?)?;
        models.push((format!("labram-trainer export ({v})"), path));
    }
    println!(
        "window: {CHANNELS} channels (TUH) x {PATCHES} patches; ORT CPU, 2 intra-op threads, 1 inter-op, ORT_ENABLE_ALL; {} rounds at batch 1, {} at batch 8",
        args.rounds,
        (args.rounds / 4).max(10)
    );

    let mut rust = vec![];
    {
        tch::set_num_threads(2);
        tch::set_num_interop_threads(1);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net = NeuralTransformer::new(
            &vs.root(),
            &TransformerConfig::from_name(arch.name, k as i64)?,
        );
        load_strict(&vs, &sd)?;
        let mut runners = models
            .iter()
            .map(|(n, p)| {
                Ok((
                    format!("{n} (rust ort)"),
                    ort_runner(session(&env, p)?, &chans),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        runners.push((
            "tch forward, same weights (libtorch)".into(),
            tch_runner(&net, &chans),
        ));
        let b8_rounds = (args.rounds / 4).max(10);
        rust.extend(time_models(&mut runners, 1, args.rounds, args.max_busy)?);
        rust.extend(time_models(&mut runners, 8, b8_rounds, args.max_busy)?);
    }
    let python = if args.python {
        python_timings(&models, args.rounds, &chans, args.max_busy)?
    } else {
        vec![]
    };

    for batch in [1, 8] {
        let r: Vec<&Timing> = rust.iter().filter(|t| t.batch == batch).collect();
        print_table(
            &format!("Rust ort, batch {batch} (ratio to the reference in Rust ort)"),
            &r,
            r[0],
        );
        let p: Vec<&Timing> = python.iter().filter(|t| t.batch == batch).collect();
        if let Some(pref) = p.first() {
            print_table(
                &format!("onnxruntime-python, batch {batch} (ratio to the reference in Python)"),
                &p,
                pref,
            );
            let pm = percentile(&pref.ms, 0.5);
            println!("\nbatch {batch}: median of each against the reference's onnxruntime-python median ({pm:.2} ms):");
            for t in r.iter().chain(p.iter()) {
                println!("  {:<60} {:.3}", t.name, percentile(&t.ms, 0.5) / pm);
            }
        }
    }
    Ok(())
}
