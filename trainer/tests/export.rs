//! ONNX export of the fine-tuning LaBraM, checked end to end against the golden
//! references of the official PyTorch code (`../shared/golden`, see its README):
//! logits through ONNX Runtime for the golden batch, each sample alone, and the
//! channel/patch subset case; ONNX's own checker; byte-identical re-export; the model
//! card; the error messages of `labram-trainer export`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use labram_core::card::{ModelCard, Preprocessing};
use labram_trainer::export::{
    self, AttentionImpl, ExportError, ExportRequest, FinetuneArch, GraphOptions,
};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

const TOLERANCE: f64 = 1e-4;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> PathBuf {
    manifest().join("../../shared/golden")
}

fn python() -> PathBuf {
    let p = manifest().join("../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

fn ort_env() -> &'static ort::environment::Environment {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest().join("../.deps/libonnxruntime.so"));
        assert!(
            lib.exists(),
            "ONNX Runtime library {} is missing: run scripts/setup.sh",
            lib.display()
        );
        ort::init_from(&lib)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", lib.display()))
            .build()
            .expect("ONNX Runtime environment")
    })
}

fn session(model: &[u8]) -> Session {
    Session::builder(ort_env())
        .and_then(|b| {
            b.with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(Into::into)
        })
        .and_then(|b| b.with_intra_threads(2).map_err(Into::into))
        .and_then(|mut b| b.commit_from_memory(model))
        .expect("ONNX Runtime session")
}

/// Runs `logits = model(eeg [b, c, p, 200], input_chans)`.
fn logits(s: &mut Session, eeg: &[f32], shape: [usize; 4], chans: &[i64]) -> (Vec<i64>, Vec<f32>) {
    let x = TensorRef::from_array_view((shape, eeg)).expect("eeg tensor");
    let ic = TensorRef::from_array_view(([chans.len()], chans)).expect("input_chans tensor");
    let out = s
        .run(ort::inputs!["eeg" => x, "input_chans" => ic])
        .expect("run");
    let (shape, data) = out["logits"].try_extract_tensor::<f32>().expect("logits");
    (shape.to_vec(), data.to_vec())
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// One tensor of a golden safetensors file.
struct Golden {
    shape: Vec<usize>,
    f32: Vec<f32>,
    i64: Vec<i64>,
}

fn golden_tensor(file: &str, name: &str) -> Golden {
    let bytes = std::fs::read(golden().join(file)).expect("golden file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
    let (mut f, mut i) = (vec![], vec![]);
    match v.dtype() {
        safetensors::Dtype::F32 => {
            f = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        safetensors::Dtype::I64 => {
            i = v
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        }
        d => panic!("{name}: unexpected dtype {d:?}"),
    }
    Golden {
        shape: v.shape().to_vec(),
        f32: f,
        i64: i,
    }
}

fn shape4(s: &[usize]) -> [usize; 4] {
    s.try_into().expect("4-D eeg")
}

/// The golden fine-tuning checkpoint exported once per variant (shared by tests).
fn golden_export(opts: GraphOptions) -> Vec<u8> {
    let sd = export::load_weights(&golden().join("finetune_base.pth")).expect("golden checkpoint");
    let arch = FinetuneArch::by_name("labram_base_patch200_200").expect("arch");
    export::onnx_bytes(&sd, arch, 2, opts).expect("export")
}

fn default_export() -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| golden_export(GraphOptions::default()))
}

fn variants() -> Vec<(&'static str, GraphOptions)> {
    let d = GraphOptions::default();
    vec![
        ("default", d),
        (
            "unfolded",
            GraphOptions {
                fold_layer_scale: false,
                fold_attn_scale: false,
                ..d
            },
        ),
        (
            "3-d tokens",
            GraphOptions {
                flat_tokens: false,
                ..d
            },
        ),
        (
            "contrib attention",
            GraphOptions {
                attention: AttentionImpl::ContribMha,
                ..d
            },
        ),
        (
            "literal (no rewrite)",
            GraphOptions {
                fold_layer_scale: false,
                fold_attn_scale: false,
                flat_tokens: false,
                attention: AttentionImpl::Standard,
                pool_before_last_fc2: false,
                merge_qk_norm: false,
            },
        ),
        (
            "contrib attention, separate q/k norms",
            GraphOptions {
                attention: AttentionImpl::ContribMha,
                merge_qk_norm: false,
                ..d
            },
        ),
    ]
}

#[test]
fn golden_batch_logits_match_official() {
    let eeg = golden_tensor("inputs.safetensors", "eeg_uv");
    let chans = golden_tensor("inputs.safetensors", "input_chans").i64;
    let want = golden_tensor("outputs.safetensors", "ft.logits");
    for (name, opts) in variants() {
        let model = if name == "default" {
            default_export().to_vec()
        } else {
            golden_export(opts)
        };
        let mut s = session(&model);
        let (shape, got) = logits(&mut s, &eeg.f32, shape4(&eeg.shape), &chans);
        assert_eq!(shape, vec![2, 2]);
        let err = rel_l2(&got, &want.f32);
        println!("golden batch [2, 19, 8, 200], {name}: logits rel-L2 {err:.2e}");
        assert!(err <= TOLERANCE, "{name}: rel-L2 {err:.3e} > {TOLERANCE:e}");
    }
}

#[test]
fn each_sample_alone_matches_official() {
    let eeg = golden_tensor("inputs.safetensors", "eeg_uv");
    let chans = golden_tensor("inputs.safetensors", "input_chans").i64;
    let want = golden_tensor("outputs.safetensors", "ft.logits");
    let mut s = session(default_export());
    let per = eeg.f32.len() / 2;
    for b in 0..2 {
        let mut shape = shape4(&eeg.shape);
        shape[0] = 1;
        let (oshape, got) = logits(&mut s, &eeg.f32[b * per..(b + 1) * per], shape, &chans);
        assert_eq!(oshape, vec![1, 2]);
        let err = rel_l2(&got, &want.f32[b * 2..b * 2 + 2]);
        println!("sample {b} alone (batch 1): logits rel-L2 {err:.2e}");
        assert!(err <= TOLERANCE, "sample {b}: rel-L2 {err:.3e}");
    }
}

#[test]
fn channel_subset_with_fewer_patches_matches_official() {
    let eeg = golden_tensor("inputs.safetensors", "ft_sub.eeg_uv");
    let chans = golden_tensor("inputs.safetensors", "ft_sub.input_chans").i64;
    let want = golden_tensor("outputs.safetensors", "ft_sub.logits");
    assert_eq!(eeg.shape, vec![2, 10, 4, 200]);
    let mut s = session(default_export());
    let (shape, got) = logits(&mut s, &eeg.f32, shape4(&eeg.shape), &chans);
    assert_eq!(shape, vec![2, 2]);
    let err = rel_l2(&got, &want.f32);
    println!("subset [2, 10, 4, 200]: logits rel-L2 {err:.2e}");
    assert!(err <= TOLERANCE, "rel-L2 {err:.3e}");
}

/// Deterministic pseudo-EEG (xorshift + Box-Muller), in µV.
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
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
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32 * scale
        })
        .collect()
}

/// Other shapes (dynamic batch, channels, patches up to 16) against the official
/// model's own `torch.onnx` export, run by the same ONNX Runtime.
#[test]
fn other_shapes_match_the_torch_export() {
    let reference =
        std::fs::read(golden().join("reference_torch_export.onnx")).expect("reference export");
    let mut theirs = session(&reference);
    let mut ours = session(default_export());
    let tuh: Vec<i64> =
        labram_core::electrodes::input_chans(&labram_core::electrodes::TUH_STANDARD_23)
            .expect("TUH");
    let cases: Vec<([usize; 4], Vec<i64>)> = vec![
        ([1, 23, 10, 200], tuh.clone()),
        ([3, 5, 16, 200], tuh[..6].to_vec()),
        ([2, 128, 1, 200], (0..=128).collect()),
        ([1, 1, 16, 200], vec![0, 42]),
    ];
    for (i, (shape, chans)) in cases.into_iter().enumerate() {
        let x = noise(shape.iter().product(), 7 + i as u64, 30.0);
        let (s1, want) = logits(&mut theirs, &x, shape, &chans);
        let (s2, got) = logits(&mut ours, &x, shape, &chans);
        assert_eq!(s1, s2);
        let err = rel_l2(&got, &want);
        println!("{shape:?} vs torch.onnx export: logits rel-L2 {err:.2e}");
        assert!(err <= TOLERANCE, "{shape:?}: rel-L2 {err:.3e}");
    }
}

#[test]
fn onnx_checker_full_check_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, opts) in variants() {
        let path = dir.path().join("m.onnx");
        let bytes = if name == "default" {
            default_export().to_vec()
        } else {
            golden_export(opts)
        };
        std::fs::write(&path, bytes).expect("write");
        let (ok, text) = onnx_full_check(
            &path,
            "print(m.ir_version, [(o.domain, o.version) for o in m.opset_import])",
        );
        assert!(ok, "{name}: onnx checker failed:\n{text}");
        let ir: i64 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("ir version");
        assert!(ir <= 10, "{name}: IR version {ir}");
        assert!(text.contains("('', 20)"), "{name}: opset: {text}");
        println!("{name}: checker ok, IR {}", text.trim());
    }
}

/// Runs ONNX's `check_model(full_check=True)` on `path` in the project's Python,
/// then `then` (Python, with the model as `m`); returns success and all output.
fn onnx_full_check(path: &Path, then: &str) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(format!(
            "import sys, onnx\nm = onnx.load(sys.argv[1])\nonnx.checker.check_model(m, full_check=True)\n{then}"
        ))
        .arg(path)
        .output()
        .expect("python");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn request(dir: &Path, name: &str) -> ExportRequest {
    ExportRequest {
        checkpoint: golden().join("finetune_base.pth"),
        model: "labram_base_patch200_200".into(),
        num_classes: 2,
        output: dir.join(format!("{name}.onnx")),
        channels: None,
        patches: 10,
        classes: None,
        task: "golden parity checkpoint".into(),
        hop_s: 1.0,
        trained: false,
        preprocessing: Preprocessing::default(),
        command: "labram-trainer export (test)".into(),
        graph: GraphOptions::default(),
    }
}

#[test]
fn exporting_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = export::export(&request(dir.path(), "a")).expect("export a");
    let b = export::export(&request(dir.path(), "b")).expect("export b");
    let (ma, mb) = (
        std::fs::read(&a.onnx).expect("a"),
        std::fs::read(&b.onnx).expect("b"),
    );
    assert!(ma.len() > 20_000_000, "{} bytes", ma.len());
    assert!(ma == mb, "two exports of the same checkpoint differ");
    assert_eq!(
        ma.as_slice(),
        default_export(),
        "file differs from the in-memory export"
    );
    let (ca, cb) = (
        std::fs::read(&a.card_path).expect("a"),
        std::fs::read(&b.card_path).expect("b"),
    );
    assert_eq!(ca, cb, "cards differ");
}

#[test]
fn card_is_written_beside_the_model_and_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request(dir.path(), "m");
    req.channels = Some(vec![
        "fp1".into(),
        "Fp2".into(),
        "CZ".into(),
        "FTT9h".into(),
    ]);
    req.classes = Some(vec!["rest".into(), "task".into()]);
    req.patches = 4;
    let summary = export::export(&req).expect("export");
    assert_eq!(summary.card_path, dir.path().join("m.yaml"));
    let card = ModelCard::load_for_model(&summary.onnx).expect("card loads and validates");
    assert_eq!(card.architecture, "labram_base_patch200_200");
    assert!(!card.trained);
    assert_eq!(card.channels, vec!["FP1", "FP2", "CZ", "FTT9h"]);
    assert_eq!(card.input_chans(), vec![0, 1, 3, 42, 115]);
    assert_eq!(card.classes, vec!["rest", "task"]);
    assert_eq!(
        (card.patch_size, card.sample_rate_hz, card.window_patches),
        (200, 200.0, 4)
    );
    assert_eq!(card.preprocessing.unit, "uV");
    assert_eq!(
        card.provenance.checkpoint.as_deref(),
        Some("finetune_base.pth")
    );
    let manifest = std::fs::read_to_string(golden().join("manifest.json")).expect("manifest");
    let sha = card.provenance.checkpoint_sha256.clone().expect("sha256");
    assert_eq!(sha.len(), 64);
    assert!(
        manifest.contains(&sha),
        "sha256 {sha} not the golden manifest's"
    );
    let yaml = std::fs::read_to_string(&summary.card_path).expect("yaml");
    assert!(
        !yaml.contains(&*golden().to_string_lossy()),
        "card holds a local path"
    );

    // Defaults: TUH 23 channels, class_0.., and the model runs with the card's channels.
    let summary = export::export(&request(dir.path(), "d")).expect("export");
    let card = ModelCard::load_for_model(&summary.onnx).expect("card");
    assert_eq!(card.channels.len(), 23);
    assert_eq!(card.channels[0], "FP1");
    assert_eq!(card.classes, vec!["class_0", "class_1"]);
    let mut s = session(&std::fs::read(&summary.onnx).expect("onnx"));
    let x = noise(23 * 10 * 200, 3, 30.0);
    let (shape, _) = logits(&mut s, &x, [1, 23, 10, 200], &card.input_chans());
    assert_eq!(shape, vec![1, 2]);
}

#[test]
fn export_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = |r: ExportRequest| export::export(&r).expect_err("must fail").to_string();

    let mut r = request(dir.path(), "e");
    r.num_classes = 3;
    let m = msg(r);
    assert!(
        m.contains("--num-classes is 3") && m.contains("2 rows"),
        "{m}"
    );

    let mut r = request(dir.path(), "e");
    r.model = "labram_small".into();
    let m = msg(r);
    assert!(
        m.contains("labram_small") && m.contains("labram_base_patch200_200"),
        "{m}"
    );

    let mut r = request(dir.path(), "e");
    r.channels = Some(vec!["FP1".into(), "CZZ".into()]);
    let m = msg(r);
    assert!(
        m.contains("CZZ") && m.contains("closest") && m.contains("CZ"),
        "{m}"
    );

    let mut r = request(dir.path(), "e");
    r.channels = Some(vec!["FP1".into(), "fp1".into()]);
    assert!(msg(r).contains("twice"));

    let mut r = request(dir.path(), "e");
    r.patches = 17;
    let m = msg(r);
    assert!(m.contains("17") && m.contains("16"), "{m}");

    let mut r = request(dir.path(), "e");
    r.classes = Some(vec!["only_one".into()]);
    let m = msg(r);
    assert!(m.contains("1 names") && m.contains("2 outputs"), "{m}");

    let mut r = request(dir.path(), "e");
    r.model = "labram_large_patch200_200".into();
    let m = msg(r);
    assert!(m.contains("wrong shape") && m.contains("pos_embed"), "{m}");

    let mut r = request(dir.path(), "e");
    r.checkpoint = golden().join("pretrain_base.pth");
    let m = msg(r);
    assert!(m.contains("pretraining") && m.contains("student."), "{m}");

    let mut r = request(dir.path(), "e");
    r.checkpoint = dir.path().join("nope.pth");
    let m = msg(r);
    assert!(m.contains("nope.pth"), "{m}");

    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "a failed export left files"
    );
    // The pure API refuses a class count that does not match, too.
    let sd = export::load_weights(&golden().join("finetune_base.pth")).expect("sd");
    let arch = FinetuneArch::by_name("labram_base_patch200_200").expect("arch");
    let e = export::onnx_bytes(&sd, arch, 1, GraphOptions::default()).expect_err("K=1");
    assert!(
        matches!(
            e,
            ExportError::ClassCount {
                requested: 1,
                head_rows: 2
            }
        ),
        "{e}"
    );
}

#[test]
fn cli_exports_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cli.onnx");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
            .arg("export")
            .args(args)
            .output()
            .expect("labram-trainer")
    };
    let ckpt = golden().join("finetune_base.pth");
    let ok = run(&[
        "--checkpoint",
        &ckpt.to_string_lossy(),
        "--model",
        "labram_base_patch200_200",
        "--num-classes",
        "2",
        "--output",
        &out.to_string_lossy(),
        "--channels",
        "FP1,FP2,C3,C4",
        "--patches",
        "8",
        "--classes",
        "left,right",
        "--trained",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let card = ModelCard::load_for_model(&out).expect("card");
    assert_eq!(card.channels, vec!["FP1", "FP2", "C3", "C4"]);
    assert_eq!(card.window_patches, 8);
    assert!(card.trained, "--trained must reach the card");
    let cmd = card.provenance.command.expect("command");
    assert!(
        cmd.starts_with("labram-trainer export --checkpoint finetune_base.pth"),
        "{cmd}"
    );
    assert!(!cmd.contains('/'), "command holds a path: {cmd}");

    let bad = run(&[
        "--checkpoint",
        &ckpt.to_string_lossy(),
        "--num-classes",
        "2",
        "--output",
        &dir.path().join("bad.onnx").to_string_lossy(),
        "--channels",
        "FP1,XYZ9",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("XYZ9") && err.contains("closest valid names"),
        "{err}"
    );
    assert!(!dir.path().join("bad.onnx").exists());
}

/// The exported graph against this crate's tch network with the same weights, on
/// shapes the golden set does not cover (channel subsets, 1 to 16 patches, batch 3).
#[test]
fn onnx_matches_the_tch_forward_on_other_shapes() {
    use labram_trainer::model::{load_strict, NeuralTransformer, TransformerConfig};
    let sd = export::load_weights(&golden().join("finetune_base.pth")).expect("golden checkpoint");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = TransformerConfig::from_name("labram_base_patch200_200", 2).expect("config");
    let net = NeuralTransformer::new(&vs.root(), &cfg);
    load_strict(&vs, &sd).expect("weights load");
    let mut s = session(default_export());
    let tuh = labram_core::electrodes::input_chans(&labram_core::electrodes::TUH_STANDARD_23)
        .expect("TUH");
    let cases: Vec<([usize; 4], Vec<i64>)> = vec![
        ([1, 23, 10, 200], tuh.clone()),
        ([3, 7, 3, 200], tuh[..8].to_vec()),
        ([2, 4, 16, 200], vec![0, 5, 60, 100, 128]),
        ([1, 1, 1, 200], vec![0, 1]),
    ];
    for (i, (shape, chans)) in cases.into_iter().enumerate() {
        let x = noise(shape.iter().product(), 100 + i as u64, 40.0);
        let (_, ours) = logits(&mut s, &x, shape, &chans);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let xt = tch::Tensor::from_slice(&x).reshape(dims.as_slice()) / 100.0;
        let ic = tch::Tensor::from_slice(&chans);
        let theirs = tch::no_grad(|| net.forward(&xt, &ic, false)).expect("tch forward");
        let theirs = Vec::<f32>::try_from(theirs.reshape([-1])).expect("logits");
        let err = rel_l2(&ours, &theirs);
        println!("{shape:?} vs tch forward: logits rel-L2 {err:.2e}");
        assert!(err <= TOLERANCE, "{shape:?}: rel-L2 {err:.3e}");
    }
}

/// Checkpoint layouts the golden set does not have, from this crate's tch networks
/// with random weights: `qkv_bias` (q_bias/v_bias) without q/k norm and without layer
/// scale on Base, and the Large architecture (16 TemporalConv channels, 16 heads of
/// 25, 24 blocks). Each export, standard and with `--ort-attention`, must give the
/// tch forward's logits.
#[test]
fn other_layouts_and_large_match_the_tch_forward() {
    use labram_trainer::model::{load_strict, state_dict, NeuralTransformer, TransformerConfig};
    tch::manual_seed(11);
    let cases = [
        (
            "labram_base_patch200_200",
            3usize,
            true,
            false,
            0.0,
            [2usize, 6, 5, 200],
        ),
        (
            "labram_large_patch200_200",
            4,
            false,
            true,
            0.1,
            [1, 5, 3, 200],
        ),
    ];
    for (name, k, qkv_bias, qk_norm, init_values, shape) in cases {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let mut cfg = TransformerConfig::from_name(name, k as i64).expect("config");
        cfg.backbone.qkv_bias = qkv_bias;
        cfg.backbone.qk_norm = qk_norm;
        cfg.backbone.init_values = init_values;
        let net = NeuralTransformer::new(&vs.root(), &cfg);
        let mut sd = state_dict(&vs).expect("state dict");
        // Make the parts a fresh init leaves at zero or one visible to the check.
        for (i, (key, t)) in sd.iter_mut().enumerate() {
            if key.ends_with("q_bias")
                || key.ends_with("v_bias")
                || key.starts_with("head.")
                || key.contains("gamma_")
            {
                t.data = noise(t.data.len(), 1000 + i as u64, 0.2);
            }
        }
        load_strict(&vs, &sd).expect("weights load");
        let chans: Vec<i64> = [0, 1, 3, 18, 22, 40, 44]
            .iter()
            .take(shape[1] + 1)
            .copied()
            .collect();
        let x = noise(shape.iter().product(), 77, 40.0);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let xt = tch::Tensor::from_slice(&x).reshape(dims.as_slice()) / 100.0;
        let ic = tch::Tensor::from_slice(&chans);
        let want = tch::no_grad(|| net.forward(&xt, &ic, false)).expect("tch forward");
        let want = Vec::<f32>::try_from(want.reshape([-1])).expect("logits");
        let arch = FinetuneArch::by_name(name).expect("arch");
        for attention in [AttentionImpl::Standard, AttentionImpl::ContribMha] {
            let opts = GraphOptions {
                attention,
                ..GraphOptions::default()
            };
            let model = export::onnx_bytes(&sd, arch, k, opts).expect("export");
            let (oshape, got) = logits(&mut session(&model), &x, shape, &chans);
            assert_eq!(oshape, vec![shape[0] as i64, k as i64]);
            let err = rel_l2(&got, &want);
            println!("{name} qkv_bias={qkv_bias} qk_norm={qk_norm} layer_scale={init_values} {attention:?} {shape:?}: logits rel-L2 {err:.2e}");
            assert!(err <= TOLERANCE, "{name} {attention:?}: rel-L2 {err:.3e}");
        }
    }
}

/// `labram-trainer quantize --model input --output output`.
fn quantize_cli(input: &Path, output: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
        .args(["quantize", "--model"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .expect("run labram-trainer quantize")
}

/// `labram-trainer quantize` on the golden export: the int8 model passes ONNX's
/// checker, is ~4x smaller, keeps the card, runs in ONNX Runtime with the same
/// inputs, and its logits stay within 5 % (relative L2) of the float model's on
/// the golden batch and on random windows (measured: 1.5e-3 to 1.5e-2).
#[test]
fn int8_quantization_keeps_the_outputs_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let float = export::export(&request(dir.path(), "float")).expect("export");
    let int8 = dir.path().join("int8.onnx");
    let out = quantize_cli(&float.onnx, &int8);
    assert!(
        out.status.success(),
        "quantize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (fb, qb) = (
        std::fs::read(&float.onnx).expect("float"),
        std::fs::read(&int8).expect("int8"),
    );
    assert!(
        qb.len() * 3 < fb.len(),
        "{} vs {} bytes",
        qb.len(),
        fb.len()
    );
    let card = std::fs::read_to_string(dir.path().join("int8.yaml")).expect("card beside it");
    assert!(
        card.contains("int8 dynamic quantization of float.onnx"),
        "{card}"
    );
    // ONNX's checker accepts the rewritten graph.
    let (ok, text) = onnx_full_check(
        &int8,
        "print(sorted({n.op_type for n in m.graph.node} & {'MatMulInteger', 'DynamicQuantizeLinear'}))",
    );
    assert!(ok, "onnx checker: {text}");
    assert!(text.contains("'MatMulInteger'"), "{text}");
    // Quantizing the quantized model is refused, not done twice.
    let again = quantize_cli(&int8, &dir.path().join("twice.onnx"));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("quantized already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Outputs: golden batch (19 ch x 8 patches) and random 23 x 10 windows.
    let (mut fs, mut qs) = (session(&fb), session(&qb));
    let eeg = golden_tensor("inputs.safetensors", "eeg_uv");
    let chans = golden_tensor("inputs.safetensors", "input_chans").i64;
    let (_, f) = logits(&mut fs, &eeg.f32, shape4(&eeg.shape), &chans);
    let (_, q) = logits(&mut qs, &eeg.f32, shape4(&eeg.shape), &chans);
    let err = rel_l2(&q, &f);
    println!("int8 vs float, golden batch: logits rel-L2 {err:.2e}");
    assert!(err < 0.05, "rel-L2 {err:.3e}");
    let chans23: Vec<i64> = (0..24).collect();
    for seed in 0..4u64 {
        let x = noise(23 * 10 * 200, seed, 30.0);
        let (_, f) = logits(&mut fs, &x, [1, 23, 10, 200], &chans23);
        let (_, q) = logits(&mut qs, &x, [1, 23, 10, 200], &chans23);
        let err = rel_l2(&q, &f);
        println!("int8 vs float, random window {seed}: logits rel-L2 {err:.2e}");
        assert!(err < 0.05, "seed {seed}: rel-L2 {err:.3e}");
    }
}
