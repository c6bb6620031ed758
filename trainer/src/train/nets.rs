//! Glue between the run files and the networks of [`crate::model`]: building them with
//! the recipe's drop path and layer scale, and loading initial weights.
//!
//! (Waiting for `crate::model`: until it lands every constructor returns
//! [`NetError::Unavailable`].)
use std::path::Path;

use tch::{Device, Tensor};

use super::config::{ModelConfig, Recipe};
use super::stages::{ClassifierNet, MemNet, Params, TokenizerNet};

/// Errors building a network or loading its weights.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the networks (labram_trainer::model) are not built into this trainer yet")]
    Unavailable,
    #[error("{path}: {message}")]
    Load { path: String, message: String },
}

enum Never {}

/// The fine-tuning transformer.
pub struct FinetuneNet(Never);
/// The masked-EEG-modeling model.
pub struct MemModel(Never);
/// The VQ-NSP tokenizer.
pub struct TokenizerModel(Never);

impl ClassifierNet for FinetuneNet {
    fn logits(&self, _x: &Tensor, _c: &Tensor, _train: bool) -> Tensor {
        match self.0 {}
    }
}

impl MemNet for MemModel {
    fn forward_mem(&self, _x: &Tensor, _c: &Tensor, _m: &Tensor, _t: bool) -> (Tensor, Tensor) {
        match self.0 {}
    }
}

impl TokenizerNet for TokenizerModel {
    fn codes(&self, _x: &Tensor, _c: &Tensor) -> Tensor {
        match self.0 {}
    }
    fn forward_loss(
        &self,
        _x: &Tensor,
        _c: &Tensor,
        _t: bool,
    ) -> (Tensor, Vec<(String, Tensor)>, Tensor) {
        match self.0 {}
    }
    fn codebook_size(&self) -> i64 {
        match self.0 {}
    }
}

/// Builds the fine-tuning network with `num_classes` outputs.
pub fn finetune(
    _m: &ModelConfig,
    _r: &Recipe,
    _num_classes: i64,
    _device: Device,
) -> Result<(FinetuneNet, Params), NetError> {
    Err(NetError::Unavailable)
}

/// Builds the MEM network; returns the vocabulary size too.
pub fn mem(
    _m: &ModelConfig,
    _r: &Recipe,
    _device: Device,
) -> Result<(MemModel, Params, i64), NetError> {
    Err(NetError::Unavailable)
}

/// Builds a tokenizer for training.
pub fn tokenizer(_m: &ModelConfig, _device: Device) -> Result<(TokenizerModel, Params), NetError> {
    Err(NetError::Unavailable)
}

/// Loads a trained tokenizer, frozen, for pretraining targets.
pub fn frozen_tokenizer(
    _m: &ModelConfig,
    _path: &Path,
    _device: Device,
) -> Result<TokenizerModel, NetError> {
    Err(NetError::Unavailable)
}

/// Initialises a fine-tuning network from any checkpoint (pretraining `student.*`,
/// another class count); returns the import report as text.
pub fn init_finetune(_p: &Params, _path: &Path) -> Result<String, NetError> {
    Err(NetError::Unavailable)
}

/// Loads every parameter of `p` from a checkpoint of the same model.
pub fn init_strict(_p: &Params, _path: &Path) -> Result<(), NetError> {
    Err(NetError::Unavailable)
}

/// A tokenizer with random weights and a random unit-norm codebook (benchmarks: the
/// pretraining step's cost does not depend on what the codes are).
pub fn random_tokenizer(_m: &ModelConfig, _device: Device) -> Result<TokenizerModel, NetError> {
    Err(NetError::Unavailable)
}
