//! tch forward passes against the official PyTorch reference (`../shared/golden`):
//! CPU, float32, eval mode. Every float tensor within relative L2 1e-5, token ids
//! identical for at least 99.5 % of tokens. The figures are printed (run with
//! `--nocapture`) for the README.
use std::path::{Path, PathBuf};

use labram_trainer::checkpoint::{self, Checkpoint, DType, Item};
use labram_trainer::model::{
    self, MemConfig, MemModel, NeuralTransformer, TransformerConfig, Vqnsp, VqnspConfig,
};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-5;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name)
}

fn setup() {
    // The reference was computed with 2 threads.
    tch::set_num_threads(2);
}

struct Golden {
    inputs: Checkpoint,
    outputs: Checkpoint,
}

fn load_golden() -> Golden {
    Golden {
        inputs: Checkpoint::load(&golden("inputs.safetensors")).expect("inputs.safetensors"),
        outputs: Checkpoint::load(&golden("outputs.safetensors")).expect("outputs.safetensors"),
    }
}

fn get(ck: &Checkpoint, name: &str) -> Tensor {
    let Some(Item::Tensor(t)) = ck.root.get(name) else {
        panic!("{name} missing from {}", ck.path.display())
    };
    let shape: Vec<i64> = t.shape.iter().map(|&s| s as i64).collect();
    match t.dtype {
        DType::F32 => Tensor::from_slice(&t.to_f32().unwrap().data).reshape(shape.as_slice()),
        DType::I64 => Tensor::from_slice(&t.to_i64().unwrap()).reshape(shape.as_slice()),
        DType::Bool => Tensor::from_slice(&t.bytes.iter().map(|&b| b != 0).collect::<Vec<_>>())
            .reshape(shape.as_slice()),
        other => panic!("{name}: unexpected dtype {other:?}"),
    }
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape");
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let num = (&a - &b)
        .square()
        .sum(Kind::Double)
        .sqrt()
        .double_value(&[]);
    let den = b.square().sum(Kind::Double).sqrt().double_value(&[]);
    num / den
}

/// Compare, print and check one tensor.
fn check(name: &str, got: &Tensor, want: &Tensor) -> f64 {
    let r = rel_l2(got, want);
    eprintln!("parity {name:<28} rel-L2 {r:.3e}");
    assert!(r <= TOL, "{name}: rel-L2 {r:e} > {TOL:e}");
    r
}

/// Fraction of equal entries.
fn agreement(name: &str, got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.size(), want.size(), "{name}: shape");
    let same = got.eq_tensor(want).sum(Kind::Int64).int64_value(&[]) as f64;
    let frac = same / want.numel() as f64;
    eprintln!("parity {name:<28} identical {:.2} %", frac * 100.0);
    assert!(
        frac >= 0.995,
        "{name}: only {:.2} % identical",
        frac * 100.0
    );
    frac
}

fn eeg(g: &Golden, key: &str) -> Tensor {
    // The engines divide by 100 in float32, exactly like this.
    get(&g.inputs, key) / 100.0
}

fn load_varstore(vs: &VarStore, file: &str) {
    let sd = checkpoint::load_state_dict(&golden(file)).unwrap();
    model::load_strict(vs, &sd).unwrap();
}

#[test]
fn finetune_model_matches_pytorch() {
    setup();
    let g = load_golden();
    let vs = VarStore::new(Device::Cpu);
    let m = NeuralTransformer::new(
        &vs.root(),
        &TransformerConfig::from_name("labram_base_patch200_200", 2).unwrap(),
    );
    load_varstore(&vs, "finetune_base.pth");
    tch::no_grad(|| {
        let t = m
            .forward_trace(&eeg(&g, "eeg_uv"), &get(&g.inputs, "input_chans"), false)
            .unwrap();
        let o = &g.outputs;
        check(
            "ft.patch_embed",
            &t.trace.patch_embed,
            &get(o, "ft.patch_embed"),
        );
        check("ft.tokens_in", &t.trace.tokens_in, &get(o, "ft.tokens_in"));
        check("ft.block0", &t.trace.blocks[0], &get(o, "ft.block0"));
        check(
            "ft.block_last",
            &t.trace.blocks[11],
            &get(o, "ft.block_last"),
        );
        check("ft.features", &t.features, &get(o, "ft.features"));
        check(
            "ft.logits",
            t.logits.as_ref().unwrap(),
            &get(o, "ft.logits"),
        );

        // Subset of channels and patches (GroupNorm statistics change with them).
        let x = eeg(&g, "ft_sub.eeg_uv");
        let c = get(&g.inputs, "ft_sub.input_chans");
        let t = m.forward_trace(&x, &c, false).unwrap();
        check("ft_sub.features", &t.features, &get(o, "ft_sub.features"));
        check(
            "ft_sub.logits",
            t.logits.as_ref().unwrap(),
            &get(o, "ft_sub.logits"),
        );
        // The plain forward gives the same logits as the traced one.
        let plain = m.forward(&x, &c, false).unwrap();
        assert!(plain.equal(t.logits.as_ref().unwrap()));
    });
}

#[test]
fn pretraining_model_matches_pytorch() {
    setup();
    let g = load_golden();
    let vs = VarStore::new(Device::Cpu);
    let m = MemModel::new(
        &vs.root(),
        &MemConfig::from_name("labram_base_patch200_1600_8k_vocab", 8192).unwrap(),
    );
    load_varstore(&vs, "pretrain_base.pth");
    let o = &g.outputs;
    tch::no_grad(|| {
        let mask = get(&g.inputs, "bool_masked_pos");
        let out = m
            .forward(
                &eeg(&g, "eeg_uv"),
                &get(&g.inputs, "input_chans"),
                &mask,
                false,
            )
            .unwrap();
        check(
            "pt.tokens_in",
            &out.trace.tokens_in,
            &get(o, "pt.tokens_in"),
        );
        check(
            "pt.student_out",
            &out.student_out,
            &get(o, "pt.student_out"),
        );
        check(
            "pt.student_out_sym",
            &out.student_out_sym,
            &get(o, "pt.student_out_sym"),
        );
        assert_eq!(out.x_rec.size(), [152, 8192]);
        assert_eq!(out.x_rec_sym.size(), [152, 8192]);
        for (name, x) in [("pt.x_rec", &out.x_rec), ("pt.x_rec_sym", &out.x_rec_sym)] {
            let cols = x.slice(1, 0, 8192, 16);
            check(
                &format!("{name}.cols"),
                &cols,
                &get(o, &format!("{name}.cols")),
            );
            check(
                &format!("{name}.rows"),
                &x.narrow(0, 0, 8),
                &get(o, &format!("{name}.rows")),
            );
            let lse = x.logsumexp(&[-1i64][..], false);
            check(
                &format!("{name}.row_logsumexp"),
                &lse,
                &get(o, &format!("{name}.row_logsumexp")),
            );
            let (mx, arg) = x.max_dim(-1, false);
            check(
                &format!("{name}.row_max"),
                &mx,
                &get(o, &format!("{name}.row_max")),
            );
            let l2 = x
                .to_kind(Kind::Double)
                .square()
                .sum_dim_intlist(&[-1i64][..], false, Kind::Double)
                .sqrt()
                .to_kind(Kind::Float);
            check(
                &format!("{name}.row_l2"),
                &l2,
                &get(o, &format!("{name}.row_l2")),
            );
            agreement(
                &format!("{name}.row_argmax"),
                &arg,
                &get(o, &format!("{name}.row_argmax")),
            );
        }
    });
}

#[test]
fn tokenizer_matches_pytorch() {
    setup();
    let g = load_golden();
    let sd = checkpoint::load_state_dict(&golden("vqnsp_base.pth")).unwrap();
    let cfg = VqnspConfig::infer(&sd).unwrap();
    assert_eq!(
        cfg,
        VqnspConfig::from_name("vqnsp_encoder_base_decoder_3x200x12", 8192, 64).unwrap()
    );
    let vs = VarStore::new(Device::Cpu);
    let m = Vqnsp::new(&vs.root(), &cfg);
    model::load_strict(&vs, &sd).unwrap();
    let o = &g.outputs;
    let x = eeg(&g, "eeg_uv");
    let c = get(&g.inputs, "input_chans");
    tch::no_grad(|| {
        let out = m.forward(&x, &c, false).unwrap();
        check(
            "tok.encoder_out",
            &out.encoded.encoder_out,
            &get(o, "tok.encoder_out"),
        );
        check(
            "tok.quantize",
            &out.encoded.quantize,
            &get(o, "tok.quantize"),
        );
        check("tok.rec_amp", &out.rec_amp, &get(o, "tok.rec_amp"));
        check("tok.rec_angle", &out.rec_angle, &get(o, "tok.rec_angle"));
        check("tok.target_amp", &out.target_amp, &get(o, "tok.target_amp"));
        check(
            "tok.target_angle",
            &out.target_angle,
            &get(o, "tok.target_angle"),
        );
        let losses = Tensor::stack(
            &[
                out.encoded.quant_loss.shallow_clone(),
                out.rec_loss.shallow_clone(),
                out.rec_angle_loss.shallow_clone(),
                out.loss.shallow_clone(),
            ],
            0,
        );
        check("tok.losses", &losses, &get(o, "tok.losses"));
        agreement(
            "tok.codes (forward)",
            &out.encoded.codes,
            &get(o, "tok.codes"),
        );
    });
    let codes = m.codes(&x, &c).unwrap();
    agreement("tok.codes", &codes, &get(o, "tok.codes"));
}

#[test]
fn tokenize_file_reproduces_golden_codes() {
    setup();
    let g = load_golden();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("codes.safetensors");
    // inputs.safetensors carries eeg_uv and input_chans (plus unrelated tensors).
    model::tokenize_file(
        &golden("vqnsp_base.pth"),
        &golden("inputs.safetensors"),
        &out,
    )
    .unwrap();
    let ck = Checkpoint::load(&out).unwrap();
    let Some(Item::Tensor(codes)) = ck.root.get("codes") else {
        panic!("no codes written")
    };
    assert_eq!(codes.dtype, DType::I64);
    assert_eq!(codes.shape, [2, 152]);
    let got = Tensor::from_slice(&codes.to_i64().unwrap()).reshape([2, 152]);
    assert!(got.equal(&get(&g.outputs, "tok.codes")));
}

#[test]
fn tokenize_command_writes_golden_codes_and_explains_bad_input() {
    let g = load_golden();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("codes.safetensors");
    let run = |input: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
            .arg("tokenize")
            .arg("--tokenizer")
            .arg(golden("vqnsp_base.pth"))
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap()
    };
    let r = run(&golden("inputs.safetensors"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ck = Checkpoint::load(&out).unwrap();
    let Some(Item::Tensor(codes)) = ck.root.get("codes") else {
        panic!("no codes written")
    };
    let got = Tensor::from_slice(&codes.to_i64().unwrap()).reshape([2, 152]);
    assert!(got.equal(&get(&g.outputs, "tok.codes")));

    // A file without `eeg_uv` is refused with a message naming what is needed.
    let r = run(&golden("outputs.safetensors"));
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("eeg_uv") && err.contains("input_chans"),
        "{err}"
    );
}

#[test]
fn pretraining_checkpoint_initialises_the_finetuning_model() {
    setup();
    // The golden fine-tuning model took its backbone from pretrain_base.pth's student.
    let vs = VarStore::new(Device::Cpu);
    let _m = NeuralTransformer::new(
        &vs.root(),
        &TransformerConfig::from_name("labram_base_patch200_200", 4).unwrap(),
    );
    let pre = checkpoint::load_state_dict(&golden("pretrain_base.pth")).unwrap();
    let report = model::import_finetune(&vs, pre.clone()).unwrap();
    assert_eq!(report.stripped_prefix.as_deref(), Some("student."));
    assert_eq!(
        report.reinitialized,
        ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    );
    assert_eq!(
        report.ignored,
        [
            "lm_head.bias",
            "lm_head.weight",
            "mask_token",
            "norm.bias",
            "norm.weight"
        ]
    );
    let got = model::state_dict(&vs).unwrap();
    let ft = checkpoint::load_state_dict(&golden("finetune_base.pth")).unwrap();
    for (k, t) in &got {
        if k.starts_with("head.") || k.starts_with("fc_norm.") {
            continue;
        }
        assert_eq!(t, &pre[&format!("student.{k}")], "{k}");
        assert_eq!(
            t, &ft[k],
            "{k}: differs from the golden fine-tuning backbone"
        );
    }
    assert_eq!(got["head.weight"].shape, [4, 200]);

    // Then a 2-class fine-tuned checkpoint into a 4-class model: head re-initialised.
    let report = model::import_finetune(&vs, ft).unwrap();
    assert_eq!(
        report.head_shape_changed,
        Some((vec![2, 200], vec![4, 200]))
    );
    assert!(report.stripped_prefix.is_none());
}
