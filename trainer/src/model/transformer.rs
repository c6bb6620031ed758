//! The transformer backbone shared by all three networks, and `NeuralTransformer`
//! (the fine-tuning classifier, and the tokenizer's encoder and decoder).
//!
//! Token layout: `[CLS] + N·A patch tokens`, electrode-major (token `1 + n·A + a`).
//! Patch tokens get the `pos_embed` row of their electrode (`input_chans[n+1]`) and
//! the `time_embed` row of their patch index `a`; CLS gets a position row only.
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::layers::{
    Block, BlockConfig, CodePatchEmbed, LayerNorm, Linear, TemporalConv, WeightInit,
};
use super::{check_input_chans, ModelError};

/// Rows of `pos_embed`: CLS + the 128 usable electrodes.
pub const POS_ROWS: i64 = 129;
/// Rows of `time_embed`: at most 16 patches (16 s) per window.
pub const TIME_ROWS: i64 = 16;
/// Samples per patch (1 s at 200 Hz).
pub const PATCH_SIZE: i64 = 200;

/// How raw input becomes patch tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchKind {
    /// `TemporalConv` on `[B, N, A, 200]` EEG with `out_chans` channels
    /// (embed = 25·out_chans).
    Temporal { out_chans: i64 },
    /// The tokenizer decoder's 1×1 convolution on `[B, code_dim, N, A]` codes.
    Code { code_dim: i64 },
}

/// Which `pos_embed` row the CLS token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClsPosition {
    /// Row `input_chans[0]` (= row 0): fine-tuning model and tokenizer.
    Row0,
    /// The first electrode's row (`input_chans[1]`): the pretraining student takes
    /// row 0 of the already-expanded patch position tensor (an official quirk).
    FirstElectrode,
}

/// Architecture and regularisation of a backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneConfig {
    pub embed_dim: i64,
    pub depth: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Layer scale init (`gamma_*`); 0 = none.
    pub init_values: f64,
    pub patch: PatchKind,
    /// `pos_drop` and the blocks' projection/MLP dropout (`--drop`).
    pub drop_rate: f64,
    pub attn_drop_rate: f64,
    /// Stochastic depth, linearly increasing from 0 to this over the blocks.
    pub drop_path_rate: f64,
    /// Initialisation of the Linear (and, for the pretraining model, Conv) weights.
    pub init: WeightInit,
    /// Whether the embedding tensors use the 1-σ truncated normal (pretraining) or
    /// the plain one (fine-tuning, tokenizer).
    pub embed_init: WeightInit,
}

impl BackboneConfig {
    fn block(&self, i: i64) -> BlockConfig {
        let dpr = if self.depth > 1 {
            self.drop_path_rate * i as f64 / (self.depth - 1) as f64
        } else {
            0.0
        };
        BlockConfig {
            dim: self.embed_dim,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            qkv_bias: self.qkv_bias,
            qk_norm: self.qk_norm,
            init_values: self.init_values,
            drop: self.drop_rate,
            attn_drop: self.attn_drop_rate,
            drop_path: dpr,
            init: self.init,
        }
    }
}

#[derive(Debug)]
enum PatchEmbed {
    Temporal(TemporalConv),
    Code(CodePatchEmbed),
}

/// Embeddings and blocks: everything up to the final norm.
#[derive(Debug)]
pub struct Backbone {
    patch_embed: PatchEmbed,
    pub cls_token: Tensor,
    pub mask_token: Option<Tensor>,
    pub pos_embed: Tensor,
    pub time_embed: Tensor,
    pub blocks: Vec<Block>,
    pub config: BackboneConfig,
}

/// Intermediate tensors of one forward pass, for parity checks and inspection.
#[derive(Debug)]
pub struct Trace {
    /// Patch embedding output `[B, N·A, D]`.
    pub patch_embed: Tensor,
    /// Input of the first block `[B, 1+N·A, D]` (mask tokens and embeddings added).
    pub tokens_in: Tensor,
    /// Output of every block `[B, 1+N·A, D]`.
    pub blocks: Vec<Tensor>,
}

impl Backbone {
    /// `mask_token`: the pretraining student has one.
    pub fn new(p: &nn::Path, c: &BackboneConfig, mask_token: bool) -> Backbone {
        let d = c.embed_dim;
        let patch_embed = match c.patch {
            PatchKind::Temporal { out_chans } => {
                let conv_init = match c.init {
                    WeightInit::TruncNormal1Sigma(_) => c.init,
                    _ => WeightInit::TorchDefault,
                };
                PatchEmbed::Temporal(TemporalConv::new(
                    &(p / "patch_embed"),
                    out_chans,
                    conv_init,
                ))
            }
            PatchKind::Code { code_dim } => {
                PatchEmbed::Code(CodePatchEmbed::new(&(p / "patch_embed"), code_dim, d))
            }
        };
        let emb =
            |name: &str, rows: i64| super::layers::weight(p, name, &[1, rows, d], c.embed_init, 0);
        let cls_token = emb("cls_token", 1);
        let mask_token = mask_token.then(|| emb("mask_token", 1));
        let pos_embed = emb("pos_embed", POS_ROWS);
        let time_embed = emb("time_embed", TIME_ROWS);
        let blocks = (0..c.depth)
            .map(|i| Block::new(&(p / "blocks" / i), &c.block(i), i + 1))
            .collect();
        Backbone {
            patch_embed,
            cls_token,
            mask_token,
            pos_embed,
            time_embed,
            blocks,
            config: c.clone(),
        }
    }

    /// Grid size `(N, A)` of an input, after checking its shape.
    fn grid(&self, x: &Tensor, input_chans: &Tensor) -> Result<(i64, i64, i64), ModelError> {
        let s = x.size();
        let bad = |d: String| Err(ModelError::Input(d));
        if s.len() != 4 {
            return bad(format!("expected a 4-d input, got shape {s:?}"));
        }
        if x.kind() != Kind::Float {
            return bad(format!("expected float32 input, got {:?}", x.kind()));
        }
        let (b, n, a) = match self.config.patch {
            PatchKind::Temporal { .. } => {
                if s[3] != PATCH_SIZE {
                    return bad(format!(
                        "expected [batch, channels, patches, {PATCH_SIZE}] EEG, got shape {s:?}"
                    ));
                }
                (s[0], s[1], s[2])
            }
            PatchKind::Code { code_dim } => {
                if s[1] != code_dim {
                    return bad(format!(
                        "expected [batch, {code_dim}, channels, patches] codes, got shape {s:?}"
                    ));
                }
                if s[3] == 1 {
                    // The official decoder reads its time window as `a if t == 1 else t`
                    // and so cannot decode single-patch input.
                    return bad(
                        "the tokenizer decoder needs at least 2 patches (the official decoder fails on 1)"
                            .into(),
                    );
                }
                (s[0], s[2], s[3])
            }
        };
        if b < 1 || n < 1 || a < 1 {
            return bad(format!("empty input of shape {s:?}"));
        }
        if a > TIME_ROWS {
            return bad(format!(
                "{a} patches per window, but time_embed has only {TIME_ROWS} rows (at most {TIME_ROWS} s)"
            ));
        }
        check_input_chans(input_chans, n)?;
        Ok((b, n, a))
    }

    /// Patch embedding, optional masking, CLS, position and time embeddings.
    /// Returns (patch embeddings, tokens entering the first block).
    pub fn embed(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        mask: Option<&Tensor>,
        cls_pos: ClsPosition,
        train: bool,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (b, n, a) = self.grid(x, input_chans)?;
        let d = self.config.embed_dim;
        let patches = match &self.patch_embed {
            PatchEmbed::Temporal(t) => t.forward(x),
            PatchEmbed::Code(c) => c.forward(x),
        };
        let mut tokens = patches.shallow_clone();
        if let Some(m) = mask {
            let mt = self.mask_token.as_ref().ok_or_else(|| {
                ModelError::Input("this model has no mask token; it cannot take a mask".into())
            })?;
            if m.size() != [b, n * a] || m.kind() != Kind::Bool {
                return Err(ModelError::Input(format!(
                    "mask must be bool [{b}, {}], got {:?} {:?}",
                    n * a,
                    m.kind(),
                    m.size()
                )));
            }
            let w = m.unsqueeze(-1).to_kind(mt.kind());
            let mt = mt.expand([b, n * a, d], false);
            tokens = &tokens * (1.0 - &w) + mt * &w;
        }
        let cls = self.cls_token.expand([b, 1, d], false);
        let x = Tensor::cat(&[cls, tokens], 1);
        let chans = input_chans.to_device(self.pos_embed.device());
        let pos_used = self.pos_embed.index_select(1, &chans);
        let pos = pos_used
            .narrow(1, 1, n)
            .unsqueeze(2)
            .expand([b, n, a, d], false)
            .flatten(1, 2);
        let cls_row = match cls_pos {
            ClsPosition::Row0 => pos_used.narrow(1, 0, 1).expand([b, 1, d], false),
            ClsPosition::FirstElectrode => pos.narrow(1, 0, 1),
        };
        let x = x + Tensor::cat(&[cls_row, pos], 1);
        let time = self
            .time_embed
            .narrow(1, 0, a)
            .unsqueeze(1)
            .expand([b, n, a, d], false)
            .flatten(1, 2);
        // `x[:, 1:] += time`: the CLS row gets +0, which leaves it unchanged.
        let time = Tensor::cat(&[time.zeros_like().narrow(1, 0, 1), time], 1);
        let x = (x + time).dropout(self.config.drop_rate, train);
        Ok((patches, x))
    }

    /// Run the blocks; with `keep`, return every block's output too.
    pub fn run_blocks(&self, x: Tensor, train: bool, keep: bool) -> (Tensor, Vec<Tensor>) {
        let mut x = x;
        let mut outs = Vec::new();
        for blk in &self.blocks {
            x = blk.forward(&x, train);
            if keep {
                outs.push(x.shallow_clone());
            }
        }
        (x, outs)
    }
}

/// Settings of a `NeuralTransformer` (mean pooling + `fc_norm`, as in every README run).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    pub backbone: BackboneConfig,
    /// Classes of `head`; 0 = no head (tokenizer encoder/decoder).
    pub num_classes: i64,
    /// `head` weight and bias are scaled by this after init (`--init_scale`).
    pub init_scale: f64,
}

/// Which size of the official models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Base,
    Large,
    Huge,
}

impl Variant {
    /// (embed, depth, heads, temporal conv channels).
    pub fn dims(self) -> (i64, i64, i64, i64) {
        match self {
            Variant::Base => (200, 12, 10, 8),
            Variant::Large => (400, 24, 16, 16),
            Variant::Huge => (800, 48, 16, 32),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Base => "base",
            Variant::Large => "large",
            Variant::Huge => "huge",
        }
    }
}

impl TransformerConfig {
    /// `labram_{base,large,huge}_patch200_200` with the fine-tuning defaults of
    /// `run_class_finetuning.py` (qkv bias off as in `--disable_qkv_bias`, layer scale
    /// 0.1, drop path 0.1, init scale 0.001).
    pub fn finetune(variant: Variant, num_classes: i64) -> TransformerConfig {
        let (embed_dim, depth, num_heads, out_chans) = variant.dims();
        TransformerConfig {
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
                drop_path_rate: 0.1,
                init: WeightInit::Normal(0.02),
                embed_init: WeightInit::Normal(0.02),
            },
            num_classes,
            init_scale: 0.001,
        }
    }

    /// The fine-tuning model from its official name, e.g. `labram_base_patch200_200`.
    pub fn from_name(name: &str, num_classes: i64) -> Result<TransformerConfig, ModelError> {
        let v = match name {
            "labram_base_patch200_200" => Variant::Base,
            "labram_large_patch200_200" => Variant::Large,
            "labram_huge_patch200_200" => Variant::Huge,
            _ => {
                return Err(ModelError::UnknownModel {
                    name: name.to_string(),
                    known: FINETUNE_NAMES.join(", "),
                })
            }
        };
        Ok(TransformerConfig::finetune(v, num_classes))
    }
}

/// Official names of the fine-tuning models.
pub const FINETUNE_NAMES: [&str; 3] = [
    "labram_base_patch200_200",
    "labram_large_patch200_200",
    "labram_huge_patch200_200",
];

/// `NeuralTransformer`: backbone, `fc_norm`, optional `head`.
#[derive(Debug)]
pub struct NeuralTransformer {
    pub backbone: Backbone,
    pub fc_norm: LayerNorm,
    pub head: Option<Linear>,
}

/// Everything a fine-tuning forward computes, for parity checks.
#[derive(Debug)]
pub struct FinetuneTrace {
    pub trace: Trace,
    /// Head input: `fc_norm(mean of the patch tokens)` `[B, D]`.
    pub features: Tensor,
    /// `[B, K]` (absent without a head).
    pub logits: Option<Tensor>,
}

impl NeuralTransformer {
    pub fn new(p: &nn::Path, c: &TransformerConfig) -> NeuralTransformer {
        let backbone = Backbone::new(p, &c.backbone, false);
        let fc_norm = LayerNorm::new(&(p / "fc_norm"), c.backbone.embed_dim);
        let head = (c.num_classes > 0).then(|| {
            let hp = p / "head";
            let w = hp.var(
                "weight",
                &[c.num_classes, c.backbone.embed_dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02 * c.init_scale,
                },
            );
            let b = hp.var("bias", &[c.num_classes], Init::Const(0.0));
            Linear {
                weight: w,
                bias: Some(b),
            }
        });
        NeuralTransformer {
            backbone,
            fc_norm,
            head,
        }
    }

    fn run(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
        keep: bool,
    ) -> Result<(Tensor, Trace), ModelError> {
        let (patches, tokens_in) =
            self.backbone
                .embed(x, input_chans, None, ClsPosition::Row0, train)?;
        let (out, blocks) = self
            .backbone
            .run_blocks(tokens_in.shallow_clone(), train, keep);
        Ok((
            out,
            Trace {
                patch_embed: patches,
                tokens_in,
                blocks,
            },
        ))
    }

    /// Logits `[B, K]` of `x` (µV/100, `[B, N, A, 200]`).
    pub fn forward(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let f = self.forward_features(x, input_chans, train)?;
        match &self.head {
            Some(h) => Ok(h.forward(&f)),
            None => Ok(f),
        }
    }

    /// Head input: `fc_norm` of the mean over patch tokens (CLS is attended, not pooled).
    pub fn forward_features(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (out, _) = self.run(x, input_chans, train, false)?;
        Ok(self.pool(&out))
    }

    fn pool(&self, out: &Tensor) -> Tensor {
        let n = out.size()[1];
        self.fc_norm.forward(
            &out.narrow(1, 1, n - 1)
                .mean_dim(&[1i64][..], false, None::<Kind>),
        )
    }

    /// `fc_norm` of every patch token `[B, N·A, D]` (`return_patch_tokens=True`).
    pub fn forward_patch_tokens(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let (out, _) = self.run(x, input_chans, train, false)?;
        let n = out.size()[1];
        Ok(self.fc_norm.forward(&out.narrow(1, 1, n - 1)))
    }

    /// The forward pass with every intermediate kept.
    pub fn forward_trace(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<FinetuneTrace, ModelError> {
        let (out, trace) = self.run(x, input_chans, train, true)?;
        let features = self.pool(&out);
        let logits = self.head.as_ref().map(|h| h.forward(&features));
        Ok(FinetuneTrace {
            trace,
            features,
            logits,
        })
    }
}
