//! What each stage computes per batch, and how it is evaluated.
//!
//! The networks come from [`crate::model`] through three small traits, so that the
//! loop, the losses and the metrics here do not depend on how a network is built:
//! * fine-tuning: the engine's criterion (BCE for one logit, label-smoothing
//!   cross-entropy otherwise); validation and test report the paper's metrics
//!   ([`crate::eval::metrics::Report`]) and the plain cross-entropy;
//! * pretraining: codes from the frozen tokenizer (no grad, eval mode), a random mask of
//!   `int(L·mask_ratio)` patches per sample drawn as the official `random_masking`
//!   (argsort of uniform noise), `CE(x_rec) + CE(x_rec_sym)`; validation reports the
//!   masked-token accuracy against chance (`1/8192`);
//! * tokenizer: amplitude + phase reconstruction MSE + commitment, with codebook
//!   usage (perplexity, dead codes) on validation.
use std::collections::BTreeMap;

use tch::{nn::VarStore, Device, Kind, Tensor};

use super::losses::{
    accuracy, classification_loss, masked_code_loss, probabilities, weighted_classification_loss,
};
use super::runner::{Metrics, Stage, StageError};
use super::windows::WindowSet;
use crate::eval::metrics::Report;

/// The fine-tuning network.
pub trait ClassifierNet {
    /// Logits `[B, K]` of `x` (µV/100, `[B, C, P, 200]`); `train` enables drop path.
    fn logits(&self, x: &Tensor, input_chans: &Tensor, train: bool) -> Result<Tensor, StageError>;
}

/// The masked-EEG-modeling network.
pub trait MemNet {
    /// `(x_rec, x_rec_sym)`: `lm_head` logits at the masked and at the unmasked
    /// positions (rows in boolean-gather order).
    fn forward_mem(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor), StageError>;
}

/// A tokenizer's training forward: total loss, its parts by name and the codes.
pub type TokenizerLoss = (Tensor, Vec<(String, Tensor)>, Tensor);

/// The VQ-NSP tokenizer.
pub trait TokenizerNet {
    /// Code ids `[B, C·P]` (eval mode, no grad).
    fn codes(&self, x: &Tensor, input_chans: &Tensor) -> Result<Tensor, StageError>;
    /// Training forward: total loss, its parts by name (`rec_loss`, `rec_angle_loss`,
    /// `quant_loss`) and the codes chosen. In train mode this updates the EMA
    /// codebook (and runs the k-means initialisation on the first batch).
    fn forward_loss(
        &self,
        x: &Tensor,
        input_chans: &Tensor,
        train: bool,
    ) -> Result<TokenizerLoss, StageError>;
    /// Number of codes.
    fn codebook_size(&self) -> i64;
}

/// The variables of a network and which of them train.
pub struct Params {
    pub vs: VarStore,
    /// Trainable parameters with their official names, sorted by name.
    pub trainable: Vec<(String, Tensor)>,
    /// Transformer blocks, for layer-wise LR decay.
    pub depth: usize,
}

/// The [`Stage`] methods every stage here answers the same way, from its `params`
/// ([`Params`]) and `train` ([`WindowSet`]) fields.
macro_rules! params_and_train_set {
    () => {
        fn var_store(&self) -> &VarStore {
            &self.params.vs
        }
        fn trainable(&self) -> Vec<(String, Tensor)> {
            self.params
                .trainable
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        }
        fn num_layers(&self) -> usize {
            self.params.depth
        }
        fn train_len(&self) -> usize {
            self.train.len()
        }
        fn epoch_batches(&self, seed: u64, epoch: usize, batch: usize) -> Vec<Vec<usize>> {
            self.train.epoch_batches(seed, epoch, batch)
        }
    };
}

fn err(e: impl std::fmt::Display) -> StageError {
    e.to_string().into()
}

/// Evaluation batch size: twice the training batch, as the official loaders.
fn eval_batch(batch: usize) -> usize {
    (2 * batch).max(1)
}

/// Predictions of a split: (label, class probabilities) per window.
pub type Predictions = Vec<(i64, Vec<f64>)>;

/// Fine-tuning.
pub struct Finetune<N: ClassifierNet> {
    pub net: N,
    pub params: Params,
    pub train: WindowSet,
    pub val: Option<WindowSet>,
    pub test: Option<WindowSet>,
    pub smoothing: f64,
    /// Per-class loss weights (`optim.balance_classes`), on the device.
    pub class_weights: Option<Tensor>,
    pub batch: usize,
    pub device: Device,
    /// Test-split predictions of the last `test()` call: (label, probabilities).
    pub last_test: Predictions,
}

impl<N: ClassifierNet> Finetune<N> {
    /// Probabilities and labels over a whole split, plus the mean plain CE (BCE for
    /// one logit), in eval mode.
    pub fn predict(&self, set: &WindowSet) -> Result<(Predictions, f64), StageError> {
        let mut out = Vec::with_capacity(set.len());
        let mut loss_sum = 0.0;
        tch::no_grad(|| -> Result<(), StageError> {
            for idx in set.eval_batches(eval_batch(self.batch)) {
                let b = set.batch(&idx, self.device).map_err(err)?;
                let labels = b.labels.ok_or("evaluation windows without labels")?;
                let logits = self.net.logits(&b.x, &b.input_chans, false)?;
                loss_sum +=
                    classification_loss(&logits, &labels, 0.0).double_value(&[]) * idx.len() as f64;
                let p = probabilities(&logits)
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Double);
                let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(&p).map_err(err)?;
                let l: Vec<i64> = Vec::try_from(&labels.to_device(Device::Cpu)).map_err(err)?;
                out.extend(l.into_iter().zip(rows));
            }
            Ok(())
        })?;
        let n = out.len().max(1) as f64;
        Ok((out, loss_sum / n))
    }

    fn metrics(&self, set: &WindowSet) -> Result<(Metrics, Predictions), StageError> {
        let (pred, loss) = self.predict(set)?;
        let y: Vec<usize> = pred.iter().map(|(l, _)| (*l).max(0) as usize).collect();
        let probs: Vec<Vec<f64>> = pred.iter().map(|(_, p)| p.clone()).collect();
        let report = Report::from_probs(&y, &probs).map_err(err)?;
        let mut m = report_metrics(&report);
        m.insert("loss".into(), loss);
        Ok((m, pred))
    }
}

/// Inverse-frequency class weights `n / (K · n_k)` of labelled windows (a class absent
/// from the split gets weight 0).
pub fn balanced_class_weights(labels: &[Option<i64>], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for l in labels.iter().flatten() {
        if let Some(c) = usize::try_from(*l).ok().and_then(|l| counts.get_mut(l)) {
            *c += 1;
        }
    }
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (classes as f32 * c as f32)
            }
        })
        .collect()
}

/// The paper's metrics of a report under snake_case names.
pub fn report_metrics(r: &Report) -> Metrics {
    let mut m = BTreeMap::new();
    match *r {
        Report::Binary {
            balanced_accuracy,
            auroc,
            pr_auc,
            ..
        } => {
            m.insert("balanced_accuracy".into(), balanced_accuracy);
            m.insert("auroc".into(), auroc);
            m.insert("pr_auc".into(), pr_auc);
        }
        Report::Multiclass {
            balanced_accuracy,
            cohen_kappa,
            f1_weighted,
            ..
        } => {
            m.insert("balanced_accuracy".into(), balanced_accuracy);
            m.insert("cohen_kappa".into(), cohen_kappa);
            m.insert("f1_weighted".into(), f1_weighted);
        }
    }
    m
}

impl<N: ClassifierNet> Stage for Finetune<N> {
    params_and_train_set!();
    fn train_loss(
        &mut self,
        indices: &[usize],
    ) -> Result<(Tensor, Vec<(String, f64)>), StageError> {
        let b = self.train.batch(indices, self.device).map_err(err)?;
        let labels = b.labels.ok_or("training windows without labels")?;
        let logits = self.net.logits(&b.x, &b.input_chans, true)?;
        let loss = match &self.class_weights {
            Some(w) => weighted_classification_loss(&logits, &labels, self.smoothing, w),
            None => classification_loss(&logits, &labels, self.smoothing),
        };
        let pred = probabilities(&logits.detach()).argmax(-1, false);
        let acc = pred
            .eq_tensor(&labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        Ok((loss, vec![("class_acc".into(), acc)]))
    }
    fn validate(&mut self) -> Result<Option<Metrics>, StageError> {
        match &self.val {
            Some(v) => Ok(Some(self.metrics(v)?.0)),
            None => Ok(None),
        }
    }
    fn test(&mut self) -> Result<Option<Metrics>, StageError> {
        match &self.test {
            Some(t) => {
                let (m, pred) = self.metrics(t)?;
                self.last_test = pred;
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }
}

/// `random_masking` of the official pretraining engine: per sample, uniform noise is
/// argsorted and the first `int(L·(1 − ratio))` positions are kept; the rest are masked.
pub fn random_mask(batch: i64, tokens: i64, ratio: f64, device: Device) -> Tensor {
    let keep = (tokens as f64 * (1.0 - ratio)) as i64;
    let noise = Tensor::rand([batch, tokens], (Kind::Float, device));
    let ids_shuffle = noise.argsort(1, false);
    let ids_restore = ids_shuffle.argsort(1, false);
    let mask = Tensor::ones([batch, tokens], (Kind::Float, device));
    let _ = mask.narrow(1, 0, keep).fill_(0.0);
    mask.gather(1, &ids_restore, false).to_kind(Kind::Bool)
}

/// Masked EEG modeling.
pub struct Pretrain<N: MemNet, T: TokenizerNet> {
    pub net: N,
    pub params: Params,
    pub tokenizer: T,
    pub train: WindowSet,
    pub val: Option<WindowSet>,
    pub mask_ratio: f64,
    pub batch: usize,
    pub device: Device,
    pub vocab: i64,
}

impl<N: MemNet, T: TokenizerNet> Pretrain<N, T> {
    fn step(
        &self,
        set: &WindowSet,
        idx: &[usize],
        train: bool,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor), StageError> {
        let b = set.batch(idx, self.device).map_err(err)?;
        let codes = tch::no_grad(|| self.tokenizer.codes(&b.x, &b.input_chans))?;
        let size = b.x.size();
        let mask = random_mask(size[0], size[1] * size[2], self.mask_ratio, self.device);
        let (x_rec, x_rec_sym) = self.net.forward_mem(&b.x, &b.input_chans, &mask, train)?;
        let (loss, acc, acc_sym) = masked_code_loss(&x_rec, &x_rec_sym, &codes, &mask);
        Ok((loss, acc, acc_sym, codes))
    }
}

impl<N: MemNet, T: TokenizerNet> Stage for Pretrain<N, T> {
    params_and_train_set!();
    fn train_loss(
        &mut self,
        indices: &[usize],
    ) -> Result<(Tensor, Vec<(String, f64)>), StageError> {
        let (loss, acc, acc_sym, _) = self.step(&self.train, indices, true)?;
        Ok((
            loss,
            vec![
                ("mlm_acc".into(), acc.double_value(&[])),
                ("mlm_acc_sym".into(), acc_sym.double_value(&[])),
            ],
        ))
    }
    fn validate(&mut self) -> Result<Option<Metrics>, StageError> {
        let Some(v) = &self.val else { return Ok(None) };
        // A fixed mask stream for validation, so epochs compare like with like; the
        // next training step re-seeds torch, so this does not disturb training.
        tch::manual_seed(0x5EED);
        let (mut loss, mut acc, mut acc_sym, mut n) = (0.0, 0.0, 0.0, 0.0);
        let mut all_codes: Vec<i64> = Vec::new();
        tch::no_grad(|| -> Result<(), StageError> {
            for idx in v.eval_batches(eval_batch(self.batch)) {
                let (l, a, s, codes) = self.step(v, &idx, false)?;
                let c: Vec<i64> =
                    Vec::try_from(&codes.flatten(0, -1).to_device(Device::Cpu)).map_err(err)?;
                all_codes.extend(c);
                let w = idx.len() as f64;
                loss += l.double_value(&[]) * w;
                acc += a.double_value(&[]) * w;
                acc_sym += s.double_value(&[]) * w;
                n += w;
            }
            Ok(())
        })?;
        let n = f64::max(n, 1.0);
        // Two floors for the accuracy: uniform chance, and always predicting the most
        // frequent code of these targets (the codes are far from uniform).
        let mut counts = std::collections::HashMap::new();
        for c in &all_codes {
            *counts.entry(*c).or_insert(0usize) += 1;
        }
        let majority =
            counts.values().copied().max().unwrap_or(0) as f64 / all_codes.len().max(1) as f64;
        let (ppl, _) = codebook_usage(&all_codes, self.vocab);
        Ok(Some(
            [
                ("loss".to_string(), loss / n),
                ("mlm_acc".into(), acc / n),
                ("mlm_acc_sym".into(), acc_sym / n),
                ("chance".into(), 1.0 / self.vocab as f64),
                ("majority_code_rate".into(), majority),
                ("target_perplexity".into(), ppl),
            ]
            .into_iter()
            .collect(),
        ))
    }
    fn test(&mut self) -> Result<Option<Metrics>, StageError> {
        Ok(None)
    }
}

/// Codebook usage of code ids: perplexity `exp(H)` of the code histogram and the
/// number of codes never used.
pub fn codebook_usage(codes: &[i64], size: i64) -> (f64, i64) {
    let mut counts = vec![0u64; size.max(0) as usize];
    for &c in codes {
        if let Some(x) = usize::try_from(c).ok().and_then(|c| counts.get_mut(c)) {
            *x += 1;
        }
    }
    let n = codes.len().max(1) as f64;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    let dead = counts.iter().filter(|&&c| c == 0).count() as i64;
    (h.exp(), dead)
}

/// VQ-NSP tokenizer training.
pub struct Tokenizer<T: TokenizerNet> {
    pub net: T,
    pub params: Params,
    pub train: WindowSet,
    pub val: Option<WindowSet>,
    pub batch: usize,
    pub device: Device,
}

impl<T: TokenizerNet> Stage for Tokenizer<T> {
    params_and_train_set!();
    fn train_loss(
        &mut self,
        indices: &[usize],
    ) -> Result<(Tensor, Vec<(String, f64)>), StageError> {
        let b = self.train.batch(indices, self.device).map_err(err)?;
        let (loss, parts, codes) = self.net.forward_loss(&b.x, &b.input_chans, true)?;
        let mut extras: Vec<(String, f64)> = parts
            .iter()
            .map(|(k, v)| (k.clone(), v.double_value(&[])))
            .collect();
        let codes: Vec<i64> =
            Vec::try_from(&codes.flatten(0, -1).to_device(Device::Cpu)).map_err(err)?;
        let (ppl, _) = codebook_usage(&codes, self.net.codebook_size());
        extras.push(("batch_perplexity".into(), ppl));
        Ok((loss, extras))
    }
    fn validate(&mut self) -> Result<Option<Metrics>, StageError> {
        let Some(v) = &self.val else { return Ok(None) };
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut all_codes = Vec::new();
        let mut n = 0.0;
        tch::no_grad(|| -> Result<(), StageError> {
            for idx in v.eval_batches(eval_batch(self.batch)) {
                let b = v.batch(&idx, self.device).map_err(err)?;
                let (loss, parts, codes) = self.net.forward_loss(&b.x, &b.input_chans, false)?;
                let w = idx.len() as f64;
                *sums.entry("loss".into()).or_default() += loss.double_value(&[]) * w;
                for (k, t) in parts {
                    *sums.entry(k).or_default() += t.double_value(&[]) * w;
                }
                let c: Vec<i64> =
                    Vec::try_from(&codes.flatten(0, -1).to_device(Device::Cpu)).map_err(err)?;
                all_codes.extend(c);
                n += w;
            }
            Ok(())
        })?;
        let n = f64::max(n, 1.0);
        let mut m: Metrics = sums.into_iter().map(|(k, v)| (k, v / n)).collect();
        let (ppl, dead) = codebook_usage(&all_codes, self.net.codebook_size());
        m.insert("perplexity".into(), ppl);
        m.insert("dead_codes".into(), dead as f64);
        m.insert(
            "used_codes".into(),
            (self.net.codebook_size() - dead) as f64,
        );
        Ok(Some(m))
    }
    fn test(&mut self) -> Result<Option<Metrics>, StageError> {
        Ok(None)
    }
}

/// Accuracy helper re-exported for the benchmarks.
pub fn top1(logits: &Tensor, labels: &Tensor) -> f64 {
    accuracy(logits, labels).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_has_exactly_the_official_count() {
        let _rng = crate::train::rng::torch_rng_lock();
        tch::manual_seed(3);
        let m = random_mask(4, 152, 0.5, Device::Cpu);
        assert_eq!(m.size(), vec![4, 152]);
        let per: Vec<i64> = Vec::try_from(&m.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
        assert_eq!(per, vec![76; 4]);
        let m2 = random_mask(4, 152, 0.5, Device::Cpu);
        assert!(!m.equal(&m2), "masks differ between draws");
        // int(L·(1−r)) kept: 77 tokens at 0.5 keep 38, mask 39.
        let m = random_mask(1, 77, 0.5, Device::Cpu);
        assert_eq!(m.sum(Kind::Int64).int64_value(&[]), 39);
    }

    #[test]
    fn codebook_usage_counts() {
        let _rng = crate::train::rng::torch_rng_lock();
        let (ppl, dead) = codebook_usage(&[0, 1, 2, 3], 8);
        assert!((ppl - 4.0).abs() < 1e-9);
        assert_eq!(dead, 4);
        let (ppl, dead) = codebook_usage(&[5, 5, 5], 8);
        assert!((ppl - 1.0).abs() < 1e-12);
        assert_eq!(dead, 7);
    }
}
