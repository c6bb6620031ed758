//! The three LaBraM networks on tch, with parameter names and shapes equal to the
//! official state dicts so that weights load by name:
//!
//! * [`NeuralTransformer`] — the fine-tuning classifier `labram_{base,large,huge}_patch200_200`
//!   ([`TransformerConfig::from_name`]), also used as the tokenizer's encoder and decoder;
//! * [`MemModel`] — masked EEG modeling `labram_*_patch200_1600_8k_vocab` with the
//!   symmetric-mask forward ([`MemConfig::from_name`]);
//! * [`Vqnsp`] — the VQ-NSP tokenizer ([`VqnspConfig`]), with [`tokenize_file`] for the
//!   `tokenize` command.
//!
//! Inputs are EEG in µV/100 (`[B, N, A, 200]`: electrodes, 1-s patches, samples) and
//! `input_chans` (int64 `[N+1]`, `0` then each electrode's index in the 128-name list
//! plus 1). Every forward takes `train`: dropout and drop path act only then.
//!
//! [`load_strict`], [`import_finetune`] and [`state_dict`] move weights between a
//! [`crate::checkpoint::StateDict`] and a tch `VarStore`.
pub mod layers;
pub mod mem;
pub mod tokenize;
pub mod transformer;
pub mod vqnsp;

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, CheckpointError, ImportReport, StateDict, TensorData};

pub use mem::{MemConfig, MemModel, MemOutput, Student, MEM_NAMES};
pub use tokenize::tokenize_file;
pub use transformer::{
    Backbone, BackboneConfig, ClsPosition, FinetuneTrace, NeuralTransformer, PatchKind, Trace,
    TransformerConfig, Variant, FINETUNE_NAMES, PATCH_SIZE, POS_ROWS, TIME_ROWS,
};
pub use vqnsp::{
    nsp_targets, Encoded, NormEmaQuantizer, Vqnsp, VqnspConfig, VqnspOutput, VQNSP_NAMES,
};

/// Errors of building, loading or running a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("bad model input: {0}")]
    Input(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Check `input_chans` against `n` electrodes: int64 `[n+1]`, entries within the 129
/// `pos_embed` rows.
pub fn check_input_chans(input_chans: &Tensor, n: i64) -> Result<(), ModelError> {
    let bad = |d: String| Err(ModelError::Input(d));
    if input_chans.kind() != Kind::Int64 || input_chans.dim() != 1 {
        return bad(format!(
            "input_chans must be a 1-d int64 tensor, got {:?} of shape {:?}",
            input_chans.kind(),
            input_chans.size()
        ));
    }
    if input_chans.size()[0] != n + 1 {
        return bad(format!(
            "input_chans has {} entries but the input has {n} electrodes; it needs {} (0 for CLS, then one per electrode)",
            input_chans.size()[0],
            n + 1
        ));
    }
    let lo = input_chans.min().int64_value(&[]);
    let hi = input_chans.max().int64_value(&[]);
    if lo < 0 || hi >= POS_ROWS {
        return bad(format!(
            "input_chans entries must lie in 0..={} (pos_embed rows), got {lo}..={hi}",
            POS_ROWS - 1
        ));
    }
    Ok(())
}

/// A `[shape]` f32 tensor on the CPU holding `t`'s values (bit-exact).
pub fn to_tensor(t: &TensorData) -> Tensor {
    let shape: Vec<i64> = t.shape.iter().map(|&s| s as i64).collect();
    Tensor::from_slice(&t.data).reshape(shape.as_slice())
}

/// Copy a tensor's values out as f32 (any device, any float kind).
pub fn from_tensor(t: &Tensor) -> Result<TensorData, ModelError> {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let flat = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .reshape([-1]);
    let data = Vec::<f32>::try_from(&flat)?;
    Ok(TensorData { shape, data })
}

/// Names and shapes of every variable of `vs` (parameters and buffers).
pub fn var_shapes(vs: &VarStore) -> BTreeMap<String, Vec<usize>> {
    vs.variables()
        .into_iter()
        .map(|(k, t)| (k, t.size().iter().map(|&s| s as usize).collect()))
        .collect()
}

/// Copy the entries of `sd` into the same-named variables of `vs` (no name checks
/// beyond existence and shape).
fn copy_into(vs: &VarStore, sd: &StateDict) -> Result<(), ModelError> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (k, t) in sd {
            let v = vars.get(k).ok_or_else(|| CheckpointError::KeyMismatch {
                missing: vec![],
                unexpected: vec![k.clone()],
            })?;
            let src = to_tensor(t).to_device(v.device()).to_kind(v.kind());
            if src.size() != v.size() {
                return Err(ModelError::Checkpoint(CheckpointError::ShapeMismatch(
                    vec![(
                        k.clone(),
                        t.shape.clone(),
                        v.size().iter().map(|&s| s as usize).collect(),
                    )],
                )));
            }
            v.shallow_clone().copy_(&src);
        }
        Ok(())
    })
}

/// Load every variable of `vs` from `sd`: the names must match exactly (an error
/// lists the missing and the unexpected ones), and so must the shapes.
pub fn load_strict(vs: &VarStore, sd: &StateDict) -> Result<(), ModelError> {
    checkpoint::check_keys(sd, &var_shapes(vs))?;
    copy_into(vs, sd)
}

/// Initialise a fine-tuning model from any checkpoint's state dict (pretraining
/// `student.*`, or a fine-tuned model with another class count): see
/// [`checkpoint::prepare_finetune_import`]. `fc_norm`/`head` entries the checkpoint
/// lacks keep their fresh initialisation; the report says which.
pub fn import_finetune(vs: &VarStore, sd: StateDict) -> Result<ImportReport, ModelError> {
    let (sd, report) = checkpoint::prepare_finetune_import(sd, &var_shapes(vs))?;
    copy_into(vs, &sd)?;
    Ok(report)
}

/// Every variable of `vs` as f32, by name (for safetensors checkpoints).
pub fn state_dict(vs: &VarStore) -> Result<StateDict, ModelError> {
    vs.variables()
        .into_iter()
        .map(|(k, t)| Ok((k, from_tensor(&t)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn official_shapes(file: &str) -> BTreeMap<String, Vec<usize>> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden")
            .join(file);
        checkpoint::load_state_dict(&p)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.shape))
            .collect()
    }

    #[test]
    fn finetune_names_and_shapes_equal_the_official_state_dict() {
        let _rng = crate::train::rng::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let _m = NeuralTransformer::new(
            &vs.root(),
            &TransformerConfig::from_name("labram_base_patch200_200", 2).unwrap(),
        );
        assert_eq!(var_shapes(&vs), official_shapes("finetune_base.pth"));
    }

    #[test]
    fn mem_names_and_shapes_equal_the_official_state_dict() {
        let _rng = crate::train::rng::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let _m = MemModel::new(
            &vs.root(),
            &MemConfig::from_name("labram_base_patch200_1600_8k_vocab", 8192).unwrap(),
        );
        assert_eq!(var_shapes(&vs), official_shapes("pretrain_base.pth"));
    }

    #[test]
    fn tokenizer_names_and_shapes_equal_the_official_state_dict() {
        let _rng = crate::train::rng::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let _m = Vqnsp::new(
            &vs.root(),
            &VqnspConfig::from_name("vqnsp_encoder_base_decoder_3x200x12", 8192, 64).unwrap(),
        );
        assert_eq!(var_shapes(&vs), official_shapes("vqnsp_base.pth"));
    }

    #[test]
    fn large_and_huge_have_the_paper_sizes() {
        let _rng = crate::train::rng::torch_rng_lock();
        for (name, params) in [
            ("labram_large_patch200_200", 46_000_000.0),
            ("labram_huge_patch200_200", 369_000_000.0),
        ] {
            let vs = VarStore::new(Device::Cpu);
            let _m =
                NeuralTransformer::new(&vs.root(), &TransformerConfig::from_name(name, 2).unwrap());
            let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
            let rel = (n as f64 - params).abs() / params;
            assert!(rel < 0.05, "{name}: {n} parameters");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let _rng = crate::train::rng::torch_rng_lock();
        let e = TransformerConfig::from_name("labram_tiny", 2).unwrap_err();
        assert!(e.to_string().contains("labram_base_patch200_200"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let _rng = crate::train::rng::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let m = NeuralTransformer::new(
            &vs.root(),
            &TransformerConfig::from_name("labram_base_patch200_200", 2).unwrap(),
        );
        let x = Tensor::zeros([1, 2, 3, 200], (Kind::Float, Device::Cpu));
        let ok = Tensor::from_slice(&[0i64, 1, 2]);
        assert!(m.forward(&x, &ok, false).is_ok());
        let cases = [
            (x.shallow_clone(), Tensor::from_slice(&[0i64, 1])),
            (x.shallow_clone(), Tensor::from_slice(&[0i64, 1, 129])),
            (x.shallow_clone(), Tensor::from_slice(&[0i64, -1, 2])),
            (x.shallow_clone(), Tensor::from_slice(&[0i32, 1, 2])),
            (
                Tensor::zeros([1, 2, 3, 100], (Kind::Float, Device::Cpu)),
                ok.shallow_clone(),
            ),
            (
                Tensor::zeros([1, 2, 17, 200], (Kind::Float, Device::Cpu)),
                ok.shallow_clone(),
            ),
            (
                Tensor::zeros([2, 3, 200], (Kind::Float, Device::Cpu)),
                ok.shallow_clone(),
            ),
        ];
        for (x, c) in cases {
            let e = m.forward(&x, &c, false).unwrap_err();
            assert!(matches!(e, ModelError::Input(_)), "{e}");
        }
    }

    #[test]
    fn state_dict_round_trips_through_a_varstore() {
        let _rng = crate::train::rng::torch_rng_lock();
        let cfg = TransformerConfig::from_name("labram_base_patch200_200", 3).unwrap();
        let a = VarStore::new(Device::Cpu);
        let _ma = NeuralTransformer::new(&a.root(), &cfg);
        let b = VarStore::new(Device::Cpu);
        let _mb = NeuralTransformer::new(&b.root(), &cfg);
        let sd = state_dict(&a).unwrap();
        load_strict(&b, &sd).unwrap();
        assert_eq!(state_dict(&b).unwrap(), sd);
        let mut wrong = sd.clone();
        wrong.remove("blocks.3.gamma_1");
        wrong.insert("blocks.3.gamma_x".into(), sd["blocks.3.gamma_1"].clone());
        let e = load_strict(&b, &wrong).unwrap_err().to_string();
        assert!(
            e.contains("blocks.3.gamma_1") && e.contains("blocks.3.gamma_x"),
            "{e}"
        );
    }

    #[test]
    fn drop_path_acts_only_in_training() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let mut cfg = TransformerConfig::from_name("labram_base_patch200_200", 2).unwrap();
        cfg.backbone.drop_path_rate = 0.5;
        cfg.backbone.depth = 2;
        let m = NeuralTransformer::new(&vs.root(), &cfg);
        let x = Tensor::randn([4, 2, 2, 200], (Kind::Float, Device::Cpu));
        let c = Tensor::from_slice(&[0i64, 1, 2]);
        let e1 = m.forward(&x, &c, false).unwrap();
        let e2 = m.forward(&x, &c, false).unwrap();
        assert!(e1.equal(&e2));
        let t1 = m.forward(&x, &c, true).unwrap();
        let t2 = m.forward(&x, &c, true).unwrap();
        assert!(!t1.equal(&t2));
    }
}

#[cfg(test)]
mod training_tests {
    use super::*;
    use tch::Device;

    #[test]
    fn every_finetuning_parameter_gets_a_gradient() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(5);
        let mut cfg = TransformerConfig::from_name("labram_base_patch200_200", 3).unwrap();
        cfg.backbone.depth = 2;
        let vs = VarStore::new(Device::Cpu);
        let m = NeuralTransformer::new(&vs.root(), &cfg);
        let x = Tensor::randn([2, 2, 3, 200], (Kind::Float, Device::Cpu));
        let c = Tensor::from_slice(&[0i64, 3, 6]);
        let loss = m
            .forward(&x, &c, true)
            .unwrap()
            .cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2]));
        loss.backward();
        for (name, v) in vs.variables() {
            assert!(v.requires_grad(), "{name}");
            assert!(v.grad().defined(), "{name} has no gradient");
        }
    }

    #[test]
    fn fresh_weights_follow_the_official_initialisation() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(6);
        let vs = VarStore::new(Device::Cpu);
        let _m = NeuralTransformer::new(
            &vs.root(),
            &TransformerConfig::from_name("labram_base_patch200_200", 2).unwrap(),
        );
        let v = vs.variables();
        let std = |k: &str| v[k].std(true).double_value(&[]);
        assert!((std("pos_embed") - 0.02).abs() < 0.002);
        assert!((std("blocks.0.mlp.fc1.weight") - 0.02).abs() < 0.002);
        // fix_init_weight: block i's proj / fc2 scaled by 1/sqrt(2 (i+1)).
        let want = 0.02 / (2.0f64 * 12.0).sqrt();
        assert!((std("blocks.11.attn.proj.weight") - want).abs() < 0.1 * want);
        // head: trunc_normal(0.02) x init_scale 0.001.
        assert!((std("head.weight") - 2e-5).abs() < 1e-5);
        assert_eq!(v["blocks.3.gamma_1"].double_value(&[0]), 0.1f32 as f64);
        assert_eq!(v["fc_norm.weight"].double_value(&[7]), 1.0);
    }

    #[test]
    fn safetensors_checkpoint_of_a_model_reloads_bit_exact() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(7);
        let cfg = MemConfig::from_name("labram_base_patch200_1600_8k_vocab", 32).unwrap();
        let a = VarStore::new(Device::Cpu);
        let _ma = MemModel::new(&a.root(), &cfg);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mem.safetensors");
        checkpoint::save_safetensors(&state_dict(&a).unwrap(), &BTreeMap::new(), &p).unwrap();
        let b = VarStore::new(Device::Cpu);
        let _mb = MemModel::new(&b.root(), &cfg);
        load_strict(&b, &checkpoint::load_state_dict(&p).unwrap()).unwrap();
        for (k, t) in a.variables() {
            assert!(t.equal(&b.variables()[&k]), "{k}");
        }
    }
}
