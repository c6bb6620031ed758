//! Training: the optimiser against PyTorch and the golden checkpoint, and whole runs
//! of the `labram-trainer` commands on a tiny model (exact resume, Ctrl-C, init from
//! official-format checkpoints).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use labram_trainer::train::optim::{group_for, AdamW, AdamWConfig, GroupSpec};
use tch::{Kind, Tensor};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = manifest().join("../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh to create the project's Python environment",
        p.display()
    );
    p
}

fn shared() -> PathBuf {
    manifest().join("../../shared")
}

fn run_python(args: &[&std::ffi::OsStr]) {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("safetensors")
        .into_iter()
        .collect()
}

/// Bit patterns of a float tensor, for exact comparison with a readable diff.
fn bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = Vec::try_from(&t.flatten(0, -1)).expect("f32");
    v.into_iter().map(f32::to_bits).collect()
}

/// Sets `p.grad` to exactly `g` (the gradient of `sum(p·g)`).
fn set_grad(p: &Tensor, g: &Tensor) {
    (p * g).sum(Kind::Float).backward();
}

/// Five steps of our AdamW and of `torch.optim.AdamW` (two groups, with and without
/// weight decay, layer-decay lr scales, a changing lr) end bit-identical.
#[test]
fn adamw_matches_torch_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ref.safetensors");
    let script = manifest().join("tests/py/adamw_reference.py");
    run_python(&[script.as_os_str(), out.as_os_str()]);
    let r = tensors(&out);
    let names = [
        "blocks.0.attn.qkv.weight",
        "head.weight",
        "blocks.0.norm1.weight",
        "head.bias",
    ];
    let params: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| {
            let p = r[&format!("init.{n}")].copy().set_requires_grad(true);
            (n.to_string(), p)
        })
        .collect();
    let groups: HashMap<&str, GroupSpec> = names
        .iter()
        .map(|n| {
            (
                *n,
                group_for(n, &r[&format!("init.{n}")].size(), Some((3, 0.65))),
            )
        })
        .collect();
    // The reference script's groups are exactly what the official assigner gives.
    assert!(groups["head.weight"].decay && groups["blocks.0.attn.qkv.weight"].decay);
    assert!(!groups["head.bias"].decay && !groups["blocks.0.norm1.weight"].decay);
    assert_eq!(groups["blocks.0.attn.qkv.weight"].lr_scale, 0.65f64.powi(3));
    let mut opt = AdamW::new(
        params
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect(),
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
        },
        |n, _| groups[n],
    );
    let lrs: Vec<f64> = Vec::try_from(&r["lr"]).unwrap();
    for (step, lr) in lrs.iter().enumerate() {
        opt.zero_grad();
        for (n, p) in &params {
            set_grad(p, &r[&format!("grad.{step}.{n}")]);
        }
        opt.step(*lr, 0.05);
    }
    let (state, _) = opt.state();
    let state: HashMap<String, Tensor> = state.into_iter().collect();
    for (n, p) in &params {
        assert_eq!(
            bits(&p.detach()),
            bits(&r[&format!("final.{n}")]),
            "param {n}"
        );
        for m in ["exp_avg", "exp_avg_sq"] {
            let k = format!("{m}.{n}");
            assert_eq!(bits(&state[&k]), bits(&r[&k]), "{k}");
        }
    }
}

/// The golden `finetune_base.pth` holds the official optimizer after one step over
/// `fc_norm.*` and `head.*`. Feeding our AdamW the gradient implied by its first moment
/// reproduces the stored moments and, for the parameters whose starting value is known
/// (fc_norm = 1/0 and head.bias = 0 at init, none of them decayed), the stored weights.
#[test]
fn adamw_reproduces_the_golden_finetune_step() {
    let golden = shared().join("golden/finetune_base.pth");
    assert!(golden.exists(), "{} is missing", golden.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("opt.safetensors");
    let script = manifest().join("tests/py/golden_optimizer_state.py");
    run_python(&[script.as_os_str(), golden.as_os_str(), out.as_os_str()]);
    let r = tensors(&out);
    let cases = [
        ("fc_norm.weight", 1.0f64),
        ("fc_norm.bias", 0.0),
        ("head.bias", 0.0),
    ];
    for (name, init) in cases {
        let m = &r[&format!("exp_avg.{name}")];
        let decay = r[&format!("decay.{name}")].double_value(&[0]) > 0.0;
        let spec = group_for(name, &m.size(), Some((12, 0.65)));
        assert_eq!(
            spec.decay, decay,
            "{name}: our weight-decay group differs from the golden one"
        );
        assert_eq!(spec.lr_scale, 1.0);
        let p = (Tensor::ones_like(m) * init).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![(name.to_string(), p.shallow_clone())],
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            |_, _| spec,
        );
        // exp_avg = 0.1·g after one step.
        let g = m / 0.1;
        set_grad(&p, &g);
        opt.step(5e-4, 0.05);
        let (state, steps) = opt.state();
        assert_eq!(steps[name], 1);
        let got_m = &state[0].1;
        let got_v = &state[1].1;
        let rel = |a: &Tensor, b: &Tensor| {
            ((a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30)).abs()
        };
        assert!(rel(got_m, m) < 1e-6, "{name} exp_avg");
        assert!(
            rel(got_v, &r[&format!("exp_avg_sq.{name}")]) < 1e-5,
            "{name} exp_avg_sq"
        );
        let want = &r[&format!("param.{name}")];
        let diff = (&p.detach() - want).abs().max().double_value(&[]);
        assert!(
            diff < 1e-7,
            "{name}: max |Δ| {diff} against the golden weights"
        );
        // And the step did move the weights (the comparison can fail).
        let moved = (&p.detach() - init).abs().max().double_value(&[]);
        assert!(moved > 1e-4, "{name} did not move");
    }
}

/// Every run file in configs/ parses, validates for its stage, and keeps the eegmat
/// external test subjects (28-35) out.
#[test]
fn shipped_run_files_are_valid() {
    use labram_trainer::train::config::{expand_subjects, RawRunConfig};
    let dir = manifest().join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("train-") && name.ends_with(".yaml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = RawRunConfig::from_yaml(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        cfg.check(&path, cfg.stage)
            .unwrap_or_else(|e| panic!("{e}"));
        for list in [
            &cfg.data.train_subjects,
            &cfg.data.val_subjects,
            &cfg.data.test_subjects,
        ] {
            for s in expand_subjects(list).unwrap() {
                if let Some(num) = s
                    .strip_prefix("Subject")
                    .and_then(|d| d.parse::<u32>().ok())
                {
                    assert!(
                        num <= 27,
                        "{name} names {s}: eegmat subjects 28-35 are the external test set"
                    );
                }
            }
        }
        n += 1;
    }
    assert!(n >= 8, "only {n} run files found in {}", dir.display());
}

// ---------------------------------------------------------------------------------
// Whole runs of the command on a tiny model and a tiny synthetic dataset.

use labram_trainer::data::format::{DatasetWriter, Meta, Window, FORMAT};

const TINY_CHANNELS: [&str; 3] = ["FP1", "CZ", "O1"];

/// A 2-class dataset whose classes differ in alpha amplitude: train 48 windows
/// (subjects S0-S3), val 16 (S4), test 16 (S5), 3 channels x 2 patches.
fn tiny_dataset(dir: &Path) {
    let meta = Meta {
        format: FORMAT.into(),
        kind: "test".into(),
        task: "tiny synthetic".into(),
        classes: vec!["low".into(), "high".into()],
        channels: TINY_CHANNELS.iter().map(|s| s.to_string()).collect(),
        patch_size: 200,
        window_patches: 2,
        hop_s: Some(2.0),
        windowing: "synthetic".into(),
        preprocessing: Default::default(),
        subjects: vec![],
        sources: vec![],
        splits: Default::default(),
        command: "test".into(),
        skipped: vec![],
        notes: Default::default(),
    };
    let mut w = DatasetWriter::create(dir, meta, 1 << 20, false).unwrap();
    let src = w.source_index("synthetic");
    let mut k = 0u32;
    for (split, subjects, per) in [("train", 0..4, 12), ("val", 4..5, 16), ("test", 5..6, 16)] {
        for s in subjects {
            let subject = w.subject_index(&format!("S{s}"));
            for i in 0..per {
                let label = i % 2;
                let amp = if label == 1 { 40.0 } else { 10.0 };
                let data: Vec<f32> = (0..3 * 400)
                    .map(|j| {
                        k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let noise = (k >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        let t = (j % 400) as f32 / 200.0;
                        amp * (2.0 * std::f32::consts::PI * 10.0 * t).sin() + 20.0 * noise
                    })
                    .collect();
                let win = Window {
                    data,
                    label,
                    subject,
                    source: src,
                    offset: i * 400,
                };
                w.push(split, &win).unwrap();
            }
        }
    }
    w.finish().unwrap();
}

fn tiny_run_file(dir: &Path, data: &Path, epochs: usize) -> PathBuf {
    let path = dir.join("tiny.yaml");
    let text = format!(
        "stage: finetune\nmodel: {{variant: tiny, num_classes: 2}}\n\
         data: {{dataset: {}}}\n\
         optim: {{warmup_epochs: 1, lr: 1.0e-3}}\n\
         train: {{epochs: {epochs}, batch_size: 8, seed: 1, save_every: 1, output_dir: {}}}\n",
        data.display(),
        dir.join("run").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("labram-trainer runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn final_weights(run: &Path, epochs: usize) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoints/epoch-{epochs:04}/model.safetensors")))
        .expect("final checkpoint")
}

/// An interrupted run resumed from its checkpoint ends with exactly the weights of an
/// uninterrupted one (CPU, tiny model, 3 epochs of 6 steps; stopped mid-epoch 2).
#[test]
fn resume_is_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    tiny_dataset(&data);
    let a = d.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    let cfg_a = tiny_run_file(&a, &data, 3);
    let out = run_ok(trainer().args(["finetune", "--config"]).arg(&cfg_a));
    assert!(out.contains("test balanced_accuracy"), "{out}");
    for png in ["loss.png", "lr.png", "metrics.png"] {
        let bytes = std::fs::read(a.join("run").join(png)).expect(png);
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    let full = final_weights(&a.join("run"), 3);

    let b = d.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let cfg_b = tiny_run_file(&b, &data, 3);
    let out = run_ok(
        trainer()
            .args([
                "finetune",
                "--no-plots",
                "--stop-after-steps",
                "8",
                "--config",
            ])
            .arg(&cfg_b),
    );
    assert!(out.contains("--resume"), "{out}");
    assert!(!b.join("run/checkpoints/epoch-0003").exists());
    run_ok(
        trainer()
            .args(["finetune", "--no-plots", "--resume"])
            .arg(b.join("run")),
    );
    assert_eq!(
        full,
        final_weights(&b.join("run"), 3),
        "resumed run ends with other weights"
    );
    // The metrics agree too.
    let m = |p: &Path| std::fs::read_to_string(p.join("run/metrics.json")).unwrap();
    assert_eq!(m(&a), m(&b));
}

/// Ctrl-C (SIGINT) saves a checkpoint and exits cleanly; resuming finishes the run
/// with the weights of an uninterrupted one.
#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    tiny_dataset(&data);
    let a = d.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    run_ok(
        trainer()
            .args(["finetune", "--no-plots", "--config"])
            .arg(tiny_run_file(&a, &data, 10)),
    );
    let b = d.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let cfg = tiny_run_file(&b, &data, 10);
    let child = trainer()
        .args(["finetune", "--no-plots", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = b.join("run/log.jsonl");
    let t0 = std::time::Instant::now();
    loop {
        let started = std::fs::read_to_string(&log)
            .map(|s| s.contains("\"kind\":\"train\""))
            .unwrap_or(false);
        if started {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "no training step logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "exit {:?}: {text}", out.status);
    assert!(text.contains("checkpoint saved"), "{text}");
    let latest = std::fs::read_to_string(b.join("run/checkpoints/latest")).unwrap();
    assert!(b
        .join("run/checkpoints")
        .join(latest.trim())
        .join("state.json")
        .exists());
    run_ok(
        trainer()
            .args(["finetune", "--no-plots", "--resume"])
            .arg(b.join("run")),
    );
    assert_eq!(
        final_weights(&a.join("run"), 10),
        final_weights(&b.join("run"), 10)
    );
}

/// Fine-tuning LaBraM-Base from the official-format golden `pretrain_base.pth` runs end
/// to end: the `student.` weights are taken, `fc_norm`/`head` re-initialised and
/// reported; `--export` writes the ONNX model with a card that records the classes,
/// electrodes, window, data, split and test metrics.
#[test]
fn finetune_from_official_pth_and_export() {
    let golden = shared().join("golden/pretrain_base.pth");
    assert!(golden.exists(), "{} is missing", golden.display());
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    tiny_dataset(&data);
    let cfg = d.path().join("base.yaml");
    std::fs::write(
        &cfg,
        format!(
            "stage: finetune\nmodel: {{variant: base, num_classes: 2}}\ninit: {}\n\
             data: {{dataset: {}}}\noptim: {{warmup_epochs: 0}}\n\
             train: {{epochs: 1, batch_size: 8, max_steps_per_epoch: 2, output_dir: {}}}\n",
            golden.display(),
            data.display(),
            d.path().join("run").display()
        ),
    )
    .unwrap();
    let out = run_ok(
        trainer()
            .args(["finetune", "--no-plots", "--config"])
            .arg(&cfg),
    );
    assert!(out.contains("took the `student.*` weights"), "{out}");
    assert!(
        out.contains("fc_norm.weight") && out.contains("head.weight"),
        "{out}"
    );
    // A finished run is exported later through --resume (nothing is trained again).
    let onnx = d.path().join("m.onnx");
    let out = run_ok(
        trainer()
            .args(["finetune", "--no-plots", "--resume"])
            .arg(d.path().join("run"))
            .arg("--export")
            .arg(&onnx),
    );
    assert!(out.contains("exported"), "{out}");
    assert!(onnx.exists());
    let card = labram_core::card::ModelCard::load(&d.path().join("m.yaml")).unwrap();
    assert!(card.trained);
    assert_eq!(card.classes, ["low", "high"]);
    assert_eq!(card.channels, TINY_CHANNELS);
    assert_eq!(card.window_patches, 2);
    let p = &card.provenance;
    assert!(p.metrics.contains_key("test_balanced_accuracy"), "{p:?}");
    assert!(p.split.as_deref().unwrap_or("").contains("S5"), "{p:?}");
    assert!(p
        .command
        .as_deref()
        .unwrap_or("")
        .starts_with("labram-trainer finetune"));
    assert!(!p
        .command
        .as_deref()
        .unwrap_or("")
        .contains(&*d.path().to_string_lossy()));
}

/// On the real LaBraM-Base fine-tuning network the official assigner gives 14 lr
/// scales (0.65^13 … 0.65^0), no decay for 1-D tensors, biases and the embeddings, and
/// the decay group for every weight matrix; the embeddings' quirk (time_embed at 1) holds.
#[test]
fn base_finetune_parameter_groups() {
    use labram_trainer::train::config::{RunConfig, StageName};
    use labram_trainer::train::nets;
    let cfg = RunConfig::parse(
        "stage: finetune\nmodel: {variant: base, num_classes: 2}\ndata: {dataset: d}\ntrain: {output_dir: o}\n",
        Path::new("t.yaml"),
        StageName::Finetune,
    )
    .unwrap();
    let (_, params) = nets::finetune(cfg.variant, &cfg.recipe, 2, tch::Device::Cpu).unwrap();
    assert_eq!(params.depth, 12);
    let n: i64 = params.trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(
        n, 5_820_338,
        "trainable parameters of labram_base_patch200_200, 2 classes"
    );
    let groups: HashMap<String, GroupSpec> = params
        .trainable
        .iter()
        .map(|(name, t)| (name.clone(), group_for(name, &t.size(), Some((12, 0.65)))))
        .collect();
    let mut scales: Vec<i32> = groups
        .values()
        .map(|g| (g.lr_scale.ln() / 0.65f64.ln()).round() as i32)
        .collect();
    scales.sort_unstable();
    scales.dedup();
    assert_eq!(scales, (0..=13).collect::<Vec<_>>());
    assert_eq!(groups["cls_token"].lr_scale, 0.65f64.powi(13));
    assert_eq!(
        groups["patch_embed.conv1.weight"].lr_scale,
        0.65f64.powi(13)
    );
    assert_eq!(
        groups["blocks.0.attn.qkv.weight"].lr_scale,
        0.65f64.powi(12)
    );
    assert_eq!(groups["time_embed"].lr_scale, 1.0);
    assert_eq!(groups["head.weight"].lr_scale, 1.0);
    for (name, g) in &groups {
        let t = &params.trainable.iter().find(|(n, _)| n == name).unwrap().1;
        let expect_decay = t.dim() > 1
            && !name.ends_with(".bias")
            && !matches!(name.as_str(), "cls_token" | "pos_embed" | "time_embed");
        assert_eq!(g.decay, expect_decay, "{name}");
    }
}
