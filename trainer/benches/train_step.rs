//! Training throughput of LaBraM-Base: one fine-tuning step (19 ch x 4 patches and
//! 23 ch x 10 patches) and one pretraining step (19 x 8, with the tokenizer's codes
//! computed inside the step as the official engine does), at batch 64, side by side
//! with the same steps in PyTorch (benches/train_step_torch.py, a functional model
//! written from the spec) in the same run, plus the data loader's own rate.
//!
//! A step is what the loop does: seed, zero grads, batch from the loader, forward,
//! loss, backward, clip, AdamW with the official groups.
//!
//!   cargo bench -p labram-trainer --bench train_step -- [--steps 3] [--batch 64]
//!       [--threads 2] [--device cpu|cuda] [--cases finetune-19x4,finetune-23x10,pretrain-19x8]
//!       [--no-torch] [--repeat 2] [--profile]
//!
//! Each case runs Rust then PyTorch back to back (order alternating over `--repeat`
//! rounds; each side's best is kept), because the load of a shared machine drifts.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use labram_trainer::train::config::{RunConfig, StageConfig, StageName};
use labram_trainer::train::nets;
use labram_trainer::train::runner::{build_optimizer, train_step, Stage};
use labram_trainer::train::stages::{Finetune, Pretrain};
use labram_trainer::train::windows::WindowSet;
use tch::{Device, Kind, Tensor};

const NAMES_23: [&str; 23] = [
    "FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5",
    "T6", "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2",
];

struct Opts {
    steps: usize,
    warmup: usize,
    batch: usize,
    threads: i32,
    device: String,
    cases: Vec<String>,
    torch: bool,
    repeat: usize,
    profile: bool,
}

fn parse() -> Opts {
    let mut o = Opts {
        steps: 3,
        warmup: 1,
        batch: 64,
        threads: 2,
        device: "cpu".into(),
        cases: vec![
            "finetune-19x4".into(),
            "finetune-23x10".into(),
            "pretrain-19x8".into(),
        ],
        torch: true,
        repeat: 2,
        profile: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--steps" => o.steps = v.parse().unwrap_or(o.steps),
            "--warmup" => o.warmup = v.parse().unwrap_or(o.warmup),
            "--repeat" => o.repeat = v.parse().unwrap_or(o.repeat).max(1),
            "--batch" => o.batch = v.parse().unwrap_or(o.batch),
            "--threads" => o.threads = v.parse().unwrap_or(o.threads),
            "--device" => o.device = v,
            "--cases" => o.cases = v.split(',').map(str::to_string).collect(),
            "--no-torch" => {
                o.torch = false;
                i += 1;
                continue;
            }
            "--profile" => {
                o.profile = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn run_file(stage: StageName, batch: usize) -> RunConfig {
    let text = match stage {
        StageName::Finetune => format!(
            "stage: finetune\nmodel: {{variant: base, num_classes: 2}}\ndata: {{dataset: none}}\n\
             train: {{batch_size: {batch}, output_dir: none}}\n"
        ),
        _ => format!(
            "stage: pretrain\nmodel: {{variant: base, codebook_size: 8192}}\ntokenizer: none\n\
             tokenizer_model: {{variant: base, codebook_size: 8192, codebook_dim: 64}}\n\
             data: {{dataset: none}}\ntrain: {{batch_size: {batch}, output_dir: none}}\n"
        ),
    };
    let path = std::path::Path::new("bench.yaml");
    RunConfig::parse(&text, path, stage).expect("bench run file valid")
}

/// Synthetic µV windows (pink-ish noise plus alpha) for `n` windows.
fn windows(channels: &[&str], patches: usize, n: usize, labelled: bool) -> WindowSet {
    tch::manual_seed(5);
    let x = Tensor::randn(
        [n as i64, channels.len() as i64, patches as i64, 200],
        (Kind::Float, Device::Cpu),
    ) * 30.0;
    let data: Vec<f32> = Vec::try_from(&x.flatten(0, -1)).expect("f32 data");
    let labels = if labelled {
        (0..n as i64).map(|i| i % 2).collect()
    } else {
        vec![]
    };
    WindowSet::from_memory(
        channels.iter().map(|s| s.to_string()).collect(),
        patches,
        data,
        labels,
    )
    .expect("windows")
}

/// Samples/s of the loader: gathering 64 windows and making the model's input tensor.
fn loader_rate(set: &WindowSet, batch: usize, device: Device) -> f64 {
    let batches = set.epoch_batches(0, 0, batch);
    let t0 = Instant::now();
    let mut n = 0;
    for _ in 0..3 {
        for b in &batches {
            let t = set.batch(b, device).expect("batch");
            let _ = t.x.sum(Kind::Float).double_value(&[]);
            n += b.len();
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn time_steps(stage: &mut dyn Stage, cfg: &RunConfig, o: &Opts, device: Device) -> f64 {
    let mut opt = build_optimizer(stage, cfg);
    let batches = stage.epoch_batches(0, 0, o.batch);
    let recipe = cfg.recipe;
    let mut step = |k: usize| {
        labram_trainer::train::rng::seed_torch_for_step(0, k as u64);
        train_step(
            stage,
            &mut opt,
            &batches[k % batches.len()],
            5e-4,
            0.05,
            recipe.clip_grad,
        )
        .expect("train step");
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
    };
    for k in 0..o.warmup {
        step(k);
    }
    let t0 = Instant::now();
    let mut times = Vec::new();
    for k in 0..o.steps {
        let t = Instant::now();
        step(o.warmup + k);
        times.push(t.elapsed().as_secs_f64());
    }
    let per_step = t0.elapsed().as_secs_f64() / o.steps as f64;
    if o.profile {
        let t: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        println!("  step seconds: {}", t.join(", "));
    }
    if o.profile {
        // Phases of one more step: forward + loss, backward, clip + AdamW.
        let idx = &batches[0];
        let t = Instant::now();
        opt.zero_grad();
        let (loss, _) = stage.train_loss(idx).expect("loss");
        let _ = loss.double_value(&[]);
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        loss.backward();
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        labram_trainer::train::optim::clip_grad_norm(&opt.grads(), recipe.clip_grad);
        opt.step(5e-4, 0.05);
        let u = t.elapsed().as_secs_f64();
        println!("  phases: forward+loss {f:.3} s, backward {b:.3} s, clip+AdamW {u:.3} s");
    }
    per_step
}

/// One Rust measurement of `case`: (samples/s of a training step, loader samples/s).
fn rust_case(case: &str, o: &Opts, device: Device) -> (Option<f64>, f64) {
    let (kind, shape) = case.split_once('-').unwrap_or(("finetune", "19x4"));
    let (c, p) = shape.split_once('x').unwrap_or(("19", "4"));
    let (c, p): (usize, usize) = (c.parse().unwrap_or(19), p.parse().unwrap_or(4));
    let names: Vec<&str> = NAMES_23[..c.min(23)].to_vec();
    let n = 2 * o.batch;
    let seconds = if kind == "finetune" {
        let cfg = run_file(StageName::Finetune, o.batch);
        let set = windows(&names, p, n, true);
        let loader = loader_rate(&set, o.batch, device);
        match nets::finetune(cfg.variant, &cfg.recipe, 2, device) {
            Ok((net, params)) => {
                let mut s = Finetune {
                    net,
                    params,
                    train: set,
                    val: None,
                    test: None,
                    smoothing: 0.1,
                    class_weights: None,
                    batch: o.batch,
                    device,
                    last_test: vec![],
                };
                (Some(time_steps(&mut s, &cfg, o, device)), loader)
            }
            Err(e) => {
                eprintln!("{case}: {e}");
                (None, loader)
            }
        }
    } else {
        let cfg = run_file(StageName::Pretrain, o.batch);
        let set = windows(&names, p, n, false);
        let loader = loader_rate(&set, o.batch, device);
        let StageConfig::Pretrain(pt) = &cfg.stage else {
            unreachable!("run_file(Pretrain) is checked for pretraining")
        };
        let built = nets::mem(cfg.variant, pt.vocab, &cfg.recipe, device).and_then(
            |(net, params, vocab)| {
                let tokenizer = nets::random_tokenizer(&pt.tokenizer_spec, device)?;
                Ok((net, params, vocab, tokenizer))
            },
        );
        match built {
            Ok((net, params, vocab, tokenizer)) => {
                let mut s = Pretrain {
                    net,
                    params,
                    tokenizer,
                    train: set,
                    val: None,
                    mask_ratio: 0.5,
                    batch: o.batch,
                    device,
                    vocab,
                };
                (Some(time_steps(&mut s, &cfg, o, device)), loader)
            }
            Err(e) => {
                eprintln!("{case}: {e}");
                (None, loader)
            }
        }
    };
    (seconds.0.map(|s| o.batch as f64 / s), seconds.1)
}

/// One PyTorch measurement of `case` (benches/train_step_torch.py): (samples/s, version).
fn torch_case(case: &str, o: &Opts) -> Option<(f64, String)> {
    if !o.torch {
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/train_step_torch.py");
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if !py.exists() {
        eprintln!(
            "{} missing: run scripts/setup.sh for the PyTorch side",
            py.display()
        );
        return None;
    }
    let out = Command::new(&py)
        .arg(&script)
        .args(["--threads", &o.threads.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--steps", &o.steps.to_string()])
        .args(["--warmup", &o.warmup.to_string()])
        .args(["--device", &o.device])
        .args(["--cases", case])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let rate = v["cases"][case]["samples_per_s"].as_f64()?;
            Some((rate, v["torch"].as_str().unwrap_or("?").to_string()))
        }
        Ok(out) => {
            eprintln!(
                "PyTorch side failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("PyTorch side did not run: {e}");
            None
        }
    }
}

fn main() {
    let o = parse();
    tch::set_num_threads(o.threads);
    let device = match o.device.as_str() {
        "cuda" => Device::Cuda(0),
        _ => Device::Cpu,
    };
    println!(
        "training step throughput, batch {}, {} timed step(s) after {} warm-up, device {}, libtorch threads {}",
        o.batch, o.steps, o.warmup, o.device, tch::get_num_threads()
    );
    // The loader on a real dataset (memory-mapped shards), when one has been made.
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out/eegmat-causal");
    if real.join("meta.json").exists() {
        match labram_trainer::train::windows::open_splits(&real, [&[], &[], &[]], true) {
            Ok(s) => println!(
                "loader on out/eegmat-causal (mmap, {} train windows of {} ch x {} patches): {:.0} samples/s",
                s.train.len(),
                s.channels.len(),
                s.patches,
                loader_rate(&s.train, o.batch, device)
            ),
            Err(e) => eprintln!("out/eegmat-causal: {e}"),
        }
    }
    // Each case runs Rust and PyTorch back to back, `--repeat` times with the order
    // alternating, and keeps each side's best: on a shared machine the load drifts.
    let mut version = String::new();
    let mut rows = Vec::new();
    for case in &o.cases {
        let (mut rust, mut torch, mut loader) = (None::<f64>, None::<f64>, 0.0);
        for rep in 0..o.repeat {
            let run_rust = |rust: &mut Option<f64>, loader: &mut f64| {
                let (r, l) = rust_case(case, &o, device);
                *loader = l;
                if let Some(r) = r {
                    *rust = Some(rust.map_or(r, |x: f64| x.max(r)));
                }
            };
            let run_torch = |torch: &mut Option<f64>, version: &mut String| {
                if let Some((t, v)) = torch_case(case, &o) {
                    *torch = Some(torch.map_or(t, |x: f64| x.max(t)));
                    *version = v;
                }
            };
            if rep % 2 == 0 {
                run_rust(&mut rust, &mut loader);
                run_torch(&mut torch, &mut version);
            } else {
                run_torch(&mut torch, &mut version);
                run_rust(&mut rust, &mut loader);
            }
        }
        rows.push((case.clone(), rust, torch, loader));
    }
    if !version.is_empty() {
        println!("PyTorch {version}, {} threads", o.threads);
    }
    println!(
        "{:<16} {:>14} {:>15} {:>8} {:>16}",
        "case", "rust samples/s", "torch samples/s", "ratio", "loader samples/s"
    );
    for (case, rust, t, loader) in rows {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ratio = match (rust, t) {
            (Some(r), Some(t)) => format!("{:.2}", r / t),
            _ => "-".into(),
        };
        println!(
            "{:<16} {:>14} {:>15} {:>8} {:>16.0}",
            case,
            fmt(rust),
            fmt(t),
            ratio,
            loader
        );
    }
    println!("ratio = Rust / PyTorch (>= 1 means no slower than PyTorch)");
}
