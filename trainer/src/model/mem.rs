//! Masked EEG modeling (`labram_*_patch200_1600_8k_vocab`): the `student`
//! (`NeuralTransformerForMaskedEEGModeling`) and the top-level `NeuralTransformerForMEM`
//! with its outer `lm_head` and the unused `projection_head`.
use tch::nn;
use tch::{Kind, Tensor};

use super::layers::{LayerNorm, Linear, WeightInit};
use super::transformer::{Backbone, BackboneConfig, ClsPosition, PatchKind, Trace, Variant};
use super::ModelError;

/// Settings of the pretraining model.
#[derive(Debug, Clone, PartialEq)]
pub struct MemConfig {
    pub backbone: BackboneConfig,
    /// Codebook size of the tokenizer whose codes are predicted.
    pub vocab_size: i64,
}

/// Official names of the pretraining models.
pub const MEM_NAMES: [&str; 3] = [
    "labram_base_patch200_1600_8k_vocab",
    "labram_large_patch200_1600_8k_vocab",
    "labram_huge_patch200_1600_8k_vocab",
];

impl MemConfig {
    /// The README pretraining run: qkv bias off, q/k norm, layer scale 0.1, drop path 0.
    pub fn new(variant: Variant, vocab_size: i64) -> MemConfig {
        let (embed_dim, depth, num_heads, out_chans) = variant.dims();
        MemConfig {
            backbone: BackboneConfig {
                embed_dim,
                depth,
                num_heads,
                mlp_ratio: 4.0,
                qkv_bias: false,
                qk_norm: true,
                init_values: 0.1,
                patch: PatchKind::Temporal { out_chans },
                drop_rate: 0.0,
                attn_drop_rate: 0.0,
                drop_path_rate: 0.0,
                init: WeightInit::TruncNormal1Sigma(0.02),
                embed_init: WeightInit::TruncNormal1Sigma(0.02),
            },
            vocab_size,
        }
    }

    pub fn from_name(name: &str, vocab_size: i64) -> Result<MemConfig, ModelError> {
        let v = match name {
            "labram_base_patch200_1600_8k_vocab" => Variant::Base,
            "labram_large_patch200_1600_8k_vocab" => Variant::Large,
            "labram_huge_patch200_1600_8k_vocab" => Variant::Huge,
            _ => {
                return Err(ModelError::UnknownModel {
                    name: name.to_string(),
                    known: MEM_NAMES.join(", "),
                })
            }
        };
        Ok(MemConfig::new(v, vocab_size))
    }
}

/// The student: backbone with a mask token, a final `norm`, and its own (unused)
/// `lm_head`.
#[derive(Debug)]
pub struct Student {
    pub backbone: Backbone,
    pub norm: LayerNorm,
    pub lm_head: Linear,
}

impl Student {
    pub fn new(p: &nn::Path, c: &MemConfig) -> Student {
        let d = c.backbone.embed_dim;
        Student {
            backbone: Backbone::new(p, &c.backbone, true),
            norm: LayerNorm::new(&(p / "norm"), d),
            lm_head: Linear::new(&(p / "lm_head"), d, c.vocab_size, true, c.backbone.init),
        }
    }

    /// `norm(...)` over all tokens `[B, 1+N·A, D]` with the masked patches replaced by
    /// the mask token (`return_all_patch_tokens=True`), and the trace.
    pub fn forward_all_tokens(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        mask: &Tensor,
        train: bool,
        keep: bool,
    ) -> Result<(Tensor, Trace), ModelError> {
        let (patches, tokens_in) = self.backbone.embed(
            x,
            input_chans,
            Some(mask),
            ClsPosition::FirstElectrode,
            train,
        )?;
        let (out, blocks) = self
            .backbone
            .run_blocks(tokens_in.shallow_clone(), train, keep);
        Ok((
            self.norm.forward(&out),
            Trace {
                patch_embed: patches,
                tokens_in,
                blocks,
            },
        ))
    }
}

/// `NeuralTransformerForMEM`.
#[derive(Debug)]
pub struct MemModel {
    pub student: Student,
    pub lm_head: Linear,
    pub projection_head: Linear,
    pub config: MemConfig,
}

/// Outputs of the symmetric-mask forward.
#[derive(Debug)]
pub struct MemOutput {
    /// `lm_head` logits at the masked positions `[#masked, vocab]`, rows in
    /// boolean-gather order (batch-major, then ascending token index).
    pub x_rec: Tensor,
    /// The same for the complementary mask.
    pub x_rec_sym: Tensor,
    /// Student outputs over all tokens for the mask and for its complement.
    pub student_out: Tensor,
    pub student_out_sym: Tensor,
    /// Trace of the masked pass.
    pub trace: Trace,
}

impl MemModel {
    pub fn new(p: &nn::Path, c: &MemConfig) -> MemModel {
        let d = c.backbone.embed_dim;
        // The outer lm_head: PyTorch default init, then the 1-σ truncated normal
        // on its weight only; the bias keeps the default uniform init.
        let lm = p / "lm_head";
        let bound = 1.0 / (d as f64).sqrt();
        let lm_head = Linear {
            weight: super::layers::weight(&lm, "weight", &[c.vocab_size, d], c.backbone.init, d),
            bias: Some(lm.var(
                "bias",
                &[c.vocab_size],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )),
        };
        MemModel {
            student: Student::new(&(p / "student"), c),
            lm_head,
            projection_head: Linear::new(
                &(p / "projection_head" / 0),
                d,
                d,
                true,
                WeightInit::TorchDefault,
            ),
            config: c.clone(),
        }
    }

    /// Rows of `tokens[:, 1:]` where `mask` is true, in boolean-gather order.
    fn gather(tokens: &Tensor, mask: &Tensor) -> Tensor {
        let d = tokens.size()[2];
        let n = tokens.size()[1];
        let patches = tokens.narrow(1, 1, n - 1);
        patches.masked_select(&mask.unsqueeze(-1)).reshape([-1, d])
    }

    /// The symmetric-mask forward of `engine_for_pretraining`: the student runs on
    /// `mask` and on `!mask`; the outer `lm_head` scores the masked positions of each.
    pub fn forward(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<MemOutput, ModelError> {
        if mask.kind() != Kind::Bool {
            return Err(ModelError::Input(format!(
                "mask must be bool, got {:?}",
                mask.kind()
            )));
        }
        let (student_out, trace) =
            self.student
                .forward_all_tokens(x, input_chans, mask, train, false)?;
        let x_rec = self.lm_head.forward(&Self::gather(&student_out, mask));
        let sym = mask.logical_not();
        let (student_out_sym, _) =
            self.student
                .forward_all_tokens(x, input_chans, &sym, train, false)?;
        let x_rec_sym = self.lm_head.forward(&Self::gather(&student_out_sym, &sym));
        Ok(MemOutput {
            x_rec,
            x_rec_sym,
            student_out,
            student_out_sym,
            trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    #[test]
    fn symmetric_forward_scores_both_halves_and_trains() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(4);
        let mut c = MemConfig::from_name("labram_base_patch200_1600_8k_vocab", 64).unwrap();
        c.backbone.depth = 2;
        let vs = VarStore::new(Device::Cpu);
        let m = MemModel::new(&vs.root(), &c);
        let x = Tensor::randn([2, 3, 4, 200], (Kind::Float, Device::Cpu));
        let chans = Tensor::from_slice(&[0i64, 4, 8, 12]);
        let mask = Tensor::rand([2, 12], (Kind::Float, Device::Cpu)).lt(0.3);
        let masked = mask.sum(Kind::Int64).int64_value(&[]);
        let out = m.forward(&x, &chans, &mask, true).unwrap();
        assert_eq!(out.x_rec.size(), [masked, 64]);
        assert_eq!(out.x_rec_sym.size(), [24 - masked, 64]);
        let loss = out.x_rec.logsumexp(&[-1i64][..], false).mean(Kind::Float)
            + out
                .x_rec_sym
                .logsumexp(&[-1i64][..], false)
                .mean(Kind::Float);
        loss.backward();
        let vars = vs.variables();
        for name in [
            "student.mask_token",
            "student.blocks.1.gamma_2",
            "lm_head.weight",
        ] {
            let g = vars[name].grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
        // Unused by the official loss: no gradient.
        assert!(!vars["projection_head.0.weight"].grad().defined());
        assert!(!vars["student.lm_head.weight"].grad().defined());
    }

    #[test]
    fn cls_takes_the_first_electrode_position() {
        let _rng = crate::train::rng::torch_rng_lock();
        let mut c = MemConfig::from_name("labram_base_patch200_1600_8k_vocab", 64).unwrap();
        c.backbone.depth = 1;
        let vs = VarStore::new(Device::Cpu);
        let m = MemModel::new(&vs.root(), &c);
        let x = Tensor::randn([1, 2, 2, 200], (Kind::Float, Device::Cpu));
        let chans = Tensor::from_slice(&[0i64, 7, 9]);
        let mask = Tensor::zeros([1, 4], (Kind::Bool, Device::Cpu));
        let (_, t) = m
            .student
            .forward_all_tokens(&x, &chans, &mask, false, false)
            .unwrap();
        let b = &m.student.backbone;
        let want = b.cls_token.get(0).get(0) + b.pos_embed.get(0).get(7);
        assert!(t.tokens_in.get(0).get(0).allclose(&want, 0.0, 0.0, false));
    }
}
