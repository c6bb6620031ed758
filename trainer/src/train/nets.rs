//! Glue between the checked run files and the networks of [`crate::model`]: building them with
//! the recipe's drop path and layer scale, and loading initial weights.
//!
//! `variant: tiny` is a 2-block network of width 100 (4 heads, 4 temporal-conv
//! channels; tokenizer: 64 codes of 16, 1 decoder block) for tests and quick checks;
//! base/large/huge are the official sizes.
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::config::{Recipe, TokenizerSpec, Variant};
use super::runner::StageError;
use super::stages::{ClassifierNet, MemNet, Params, TokenizerLoss, TokenizerNet};
use crate::checkpoint;
use crate::model::{
    self, BackboneConfig, MemConfig, NeuralTransformer, PatchKind, TransformerConfig, Vqnsp,
    VqnspConfig,
};

/// Errors building a network or loading its weights.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("{0}")]
    Model(#[from] model::ModelError),
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Load {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn official(v: Variant) -> model::Variant {
    match v {
        Variant::Tiny | Variant::Base => model::Variant::Base,
        Variant::Large => model::Variant::Large,
        Variant::Huge => model::Variant::Huge,
    }
}

/// Shrinks a backbone to the tiny size (width 100 = 25 x 4 conv channels, 4 heads).
fn shrink(b: &mut BackboneConfig, depth: i64) {
    b.embed_dim = 100;
    b.depth = depth;
    b.num_heads = 4;
    if let PatchKind::Temporal { .. } = b.patch {
        b.patch = PatchKind::Temporal { out_chans: 4 };
    }
}

/// The trainable variables of `vs` (those that require grad), sorted by name. The
/// tokenizer's codebook and statistics are buffers (updated by EMA), not trained.
pub fn params(vs: VarStore, depth: usize) -> Params {
    let mut trainable: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    Params {
        vs,
        trainable,
        depth,
    }
}

/// The fine-tuning transformer.
pub struct FinetuneNet(pub NeuralTransformer);

impl ClassifierNet for FinetuneNet {
    fn logits(&self, x: &Tensor, c: &Tensor, train: bool) -> Result<Tensor, StageError> {
        Ok(self.0.forward(x, c, train)?)
    }
}

/// The masked-EEG-modeling model.
pub struct MemModel(pub model::MemModel);

impl MemNet for MemModel {
    fn forward_mem(
        &self,
        x: &Tensor,
        c: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor), StageError> {
        let out = self.0.forward(x, c, mask, train)?;
        Ok((out.x_rec, out.x_rec_sym))
    }
}

/// The VQ-NSP tokenizer.
pub struct TokenizerModel(pub Vqnsp);

impl TokenizerNet for TokenizerModel {
    fn codes(&self, x: &Tensor, c: &Tensor) -> Result<Tensor, StageError> {
        Ok(self.0.codes(x, c)?)
    }
    fn forward_loss(
        &self,
        x: &Tensor,
        c: &Tensor,
        train: bool,
    ) -> Result<TokenizerLoss, StageError> {
        let out = self.0.forward(x, c, train)?;
        Ok((
            out.loss,
            vec![
                ("rec_loss".into(), out.rec_loss),
                ("rec_angle_loss".into(), out.rec_angle_loss),
                ("quant_loss".into(), out.encoded.quant_loss),
            ],
            out.encoded.codes,
        ))
    }
    fn codebook_size(&self) -> i64 {
        self.0.config.n_embed
    }
}

/// The fine-tuning network's settings for a run.
pub fn finetune_config(variant: Variant, r: &Recipe, num_classes: i64) -> TransformerConfig {
    let mut c = TransformerConfig::finetune(official(variant), num_classes);
    if variant == Variant::Tiny {
        shrink(&mut c.backbone, 2);
    }
    c.backbone.drop_path_rate = r.drop_path;
    c.backbone.init_values = r.layer_scale_init;
    c
}

/// Builds the fine-tuning network with `num_classes` outputs.
pub fn finetune(
    variant: Variant,
    r: &Recipe,
    num_classes: i64,
    device: Device,
) -> Result<(FinetuneNet, Params), NetError> {
    let c = finetune_config(variant, r, num_classes);
    let vs = VarStore::new(device);
    let net = NeuralTransformer::new(&vs.root(), &c);
    Ok((FinetuneNet(net), params(vs, c.backbone.depth as usize)))
}

/// The MEM network's settings for a run (`vocab`: the tokenizer's codebook size).
pub fn mem_config(variant: Variant, vocab: i64, r: &Recipe) -> MemConfig {
    let mut c = MemConfig::new(official(variant), vocab);
    if variant == Variant::Tiny {
        shrink(&mut c.backbone, 2);
    }
    c.backbone.drop_path_rate = r.drop_path;
    c.backbone.init_values = r.layer_scale_init;
    c
}

/// Builds the MEM network; returns the vocabulary size too.
pub fn mem(
    variant: Variant,
    vocab: i64,
    r: &Recipe,
    device: Device,
) -> Result<(MemModel, Params, i64), NetError> {
    let c = mem_config(variant, vocab, r);
    let vs = VarStore::new(device);
    let net = model::MemModel::new(&vs.root(), &c);
    let depth = c.backbone.depth as usize;
    Ok((MemModel(net), params(vs, depth), c.vocab_size))
}

/// The tokenizer's settings for a run (base: 12 encoder blocks, large/huge 24; tiny:
/// the shrunk network of the module docs).
pub fn tokenizer_config(spec: &TokenizerSpec) -> VqnspConfig {
    let depth = match spec.variant {
        Variant::Large | Variant::Huge => 24,
        _ => 12,
    };
    let mut c = VqnspConfig::new(depth, spec.codebook_size, spec.codebook_dim);
    if spec.variant == Variant::Tiny {
        shrink(&mut c.encoder.backbone, 2);
        shrink(&mut c.decoder.backbone, 1);
        c.decoder.backbone.patch = PatchKind::Code {
            code_dim: c.code_dim,
        };
    }
    c.decay = spec.ema_decay;
    c.kmeans_init = spec.kmeans_init;
    c
}

/// Builds a tokenizer for training.
pub fn tokenizer(
    spec: &TokenizerSpec,
    device: Device,
) -> Result<(TokenizerModel, Params), NetError> {
    let c = tokenizer_config(spec);
    let vs = VarStore::new(device);
    let net = Vqnsp::new(&vs.root(), &c);
    let depth = c.encoder.backbone.depth as usize;
    Ok((TokenizerModel(net), params(vs, depth)))
}

/// Loads a trained tokenizer (any format [`checkpoint::load_state_dict`] reads), frozen,
/// for pretraining targets.
pub fn frozen_tokenizer(
    spec: &TokenizerSpec,
    path: &Path,
    device: Device,
) -> Result<TokenizerModel, NetError> {
    let sd = checkpoint::load_state_dict(path).map_err(|e| load_err(path, e))?;
    let mut c = tokenizer_config(spec);
    // An untrained (never initialised) codebook would make k-means run on the first
    // pretraining batch; a trained tokenizer has `initted = 1`.
    c.kmeans_init = false;
    let mut vs = VarStore::new(device);
    let net = Vqnsp::new(&vs.root(), &c);
    model::load_strict(&vs, &sd).map_err(|e| load_err(path, e))?;
    if !net.quantize.is_initted() {
        return Err(load_err(
            path,
            "the tokenizer's codebook was never initialised (quantize.embedding.initted = 0): train it with `labram-trainer train-tokenizer` first",
        ));
    }
    // The tensors are reference-counted: the network keeps them when `vs` goes.
    vs.freeze();
    Ok(TokenizerModel(net))
}

/// A tokenizer with random weights and a random unit-norm codebook (benchmarks: the
/// pretraining step's cost does not depend on what the codes are).
pub fn random_tokenizer(spec: &TokenizerSpec, device: Device) -> Result<TokenizerModel, NetError> {
    let mut c = tokenizer_config(spec);
    c.kmeans_init = false;
    let mut vs = VarStore::new(device);
    let net = Vqnsp::new(&vs.root(), &c);
    // The tensors are reference-counted: the network keeps them when `vs` goes.
    vs.freeze();
    Ok(TokenizerModel(net))
}

/// Initialises a fine-tuning network from any checkpoint (pretraining `student.*`,
/// another class count); returns the import report as text.
pub fn init_finetune(p: &Params, path: &Path) -> Result<String, NetError> {
    let sd = checkpoint::load_state_dict(path).map_err(|e| load_err(path, e))?;
    let report = model::import_finetune(&p.vs, sd).map_err(|e| load_err(path, e))?;
    Ok(report.to_string())
}

/// Loads every variable of `p` from a checkpoint of the same model (strict names).
pub fn init_strict(p: &Params, path: &Path) -> Result<(), NetError> {
    let sd = checkpoint::load_state_dict(path).map_err(|e| load_err(path, e))?;
    model::load_strict(&p.vs, &sd).map_err(|e| load_err(path, e))
}
