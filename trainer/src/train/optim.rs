//! AdamW over tch tensors, with the official parameter groups and gradient clipping.
//!
//! Hand-written rather than `tch::nn::Optimizer` because the official recipe needs a
//! learning rate *and* a weight decay per parameter (layer-wise LR decay gives every
//! block its own scale; 1-D tensors, biases and the position/cls/time embeddings get
//! no decay) that change every step with the schedule, and because resuming bit for
//! bit needs the moments and step counts to be saved and restored exactly. tch's
//! optimizer wraps libtorch's C++ `torch::optim::AdamW`, which exposes neither per-group
//! schedules through the tch API nor its state. The update below is
//! `torch.optim.AdamW`'s single-tensor path (the default on CPU), operation for
//! operation, so that results match PyTorch to the last bit (a test checks it against
//! torch itself):
//!
//! ```text
//! step += 1
//! p *= 1 - lr·wd                                  (decoupled weight decay)
//! m.lerp_(g, 1 - β1)
//! v = v·β2 + ((1 - β2)·g)·g
//! p += (-lr / (1 - β1^step)) · m / (sqrt(v) / sqrt(1 - β2^step) + eps)
//! ```
//! Parameters whose gradient is undefined (not reached by the loss, e.g. the unused
//! `student.lm_head` in pretraining) are skipped entirely, as torch skips `grad is None`.
use std::collections::BTreeMap;

use tch::Tensor;

/// Errors of the optimizer's state handling.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer state has no entry {0:?}: the checkpoint was written for a different model; resume with the config that wrote it")]
    MissingState(String),
    #[error("optimizer state {name:?} has shape {found:?}, the parameter has {expected:?}: the checkpoint does not belong to this model")]
    ShapeMismatch {
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Hyper-parameters of AdamW that are fixed for a run (the learning rate and the weight
/// decay come from the schedules at every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// How the official `optim_factory.get_parameter_groups` treats one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSpec {
    /// Multiplies the scheduled learning rate (layer-wise decay; 1 without it).
    pub lr_scale: f64,
    /// Whether the scheduled weight decay applies (false for the exclusions).
    pub decay: bool,
}

/// Names whose parameters never get weight decay, besides 1-D tensors and biases: the
/// `no_weight_decay()` sets of the three official models (`pos_embed`, `cls_token`,
/// `time_embed`, under `student.`, `encoder.` or `decoder.` too) and the codebook.
pub fn skips_weight_decay(name: &str, shape: &[i64]) -> bool {
    if shape.len() <= 1 || name.ends_with(".bias") {
        return true;
    }
    if name == "quantize.embedding.weight" {
        return true;
    }
    let (prefix, last) = match name.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    matches!(last, "pos_embed" | "cls_token" | "time_embed")
        && matches!(
            prefix,
            None | Some("student") | Some("encoder") | Some("decoder")
        )
}

/// Layer index of a parameter for layer-wise LR decay, as the official
/// `get_num_layer_for_vit` with `num_layers` transformer blocks: embeddings and the
/// patch embedding are layer 0, block `i` is layer `i + 1`, everything else (the head,
/// `fc_norm`, and, a quirk, `time_embed`) is layer `num_layers + 1`.
pub fn layer_id(name: &str, num_layers: usize) -> usize {
    if matches!(name, "cls_token" | "mask_token" | "pos_embed") || name.starts_with("patch_embed") {
        return 0;
    }
    if let Some(rest) = name.strip_prefix("blocks.") {
        if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
            return i + 1;
        }
    }
    num_layers + 1
}

/// LR scale of a parameter under layer decay `decay` with `num_layers` blocks:
/// `decay^(num_layers + 1 - layer_id)`. `decay >= 1` disables it (scale 1), as the
/// official script only builds the assigner when `layer_decay < 1`.
pub fn layer_scale(name: &str, num_layers: usize, decay: f64) -> f64 {
    if decay >= 1.0 {
        return 1.0;
    }
    let exp = (num_layers + 1 - layer_id(name, num_layers)) as i32;
    decay.powi(exp)
}

/// The group of one parameter: weight-decay exclusion and layer-decay scale.
pub fn group_for(name: &str, shape: &[i64], layer_decay: Option<(usize, f64)>) -> GroupSpec {
    GroupSpec {
        lr_scale: layer_decay.map_or(1.0, |(n, d)| layer_scale(name, n, d)),
        decay: !skips_weight_decay(name, shape),
    }
}

struct ParamState {
    name: String,
    param: Tensor,
    group: GroupSpec,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

/// AdamW over named parameters, each with its own group (see the module docs).
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<ParamState>,
}

impl AdamW {
    /// Builds the optimizer over `params` (trainable tensors shared with a VarStore:
    /// updates happen in place). `group` decides each parameter's group from its name
    /// and shape.
    pub fn new(
        params: Vec<(String, Tensor)>,
        cfg: AdamWConfig,
        group: impl Fn(&str, &[i64]) -> GroupSpec,
    ) -> Self {
        let params = params
            .into_iter()
            .map(|(name, param)| {
                let g = group(&name, &param.size());
                let exp_avg = Tensor::zeros_like(&param);
                let exp_avg_sq = Tensor::zeros_like(&param);
                ParamState {
                    name,
                    param,
                    group: g,
                    exp_avg,
                    exp_avg_sq,
                    step: 0,
                }
            })
            .collect();
        AdamW { cfg, params }
    }

    /// Names, groups and current step counts, for logs and tests.
    pub fn groups(&self) -> Vec<(String, GroupSpec)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.group))
            .collect()
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when the optimizer holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Sets every gradient to zero (the next backward then accumulates into zeros,
    /// which equals torch's `set_to_none` bit for bit).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// The gradients that exist (parameters reached by the loss).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.param.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One AdamW step with the scheduled base learning rate `lr` (multiplied by each
    /// parameter's `lr_scale`) and weight decay `weight_decay` (applied to parameters of
    /// decaying groups).
    pub fn step(&mut self, lr: f64, weight_decay: f64) {
        let AdamWConfig { beta1, beta2, eps } = self.cfg;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * p.group.lr_scale;
                let wd = if p.group.decay { weight_decay } else { 0.0 };
                p.step += 1;
                if wd != 0.0 {
                    let _ = p.param.g_mul_scalar_(1.0 - lr * wd);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                // torch's addcmul(value=v) computes self + (v·t1)·t2 in one kernel (which
                // the compiler may fuse into an FMA); addcmul with value 1 on t1 = v·g runs
                // the same kernel on the same operands, so the rounding is identical.
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = p
                    .exp_avg_sq
                    .addcmul_(&grad.g_mul_scalar(1.0 - beta2), &grad);
                let step = p.step as f64;
                let bias_correction1 = 1.0 - beta1.powf(step);
                let bias_correction2 = 1.0 - beta2.powf(step);
                let step_size = lr / bias_correction1;
                // Python computes `bias_correction2 ** 0.5` with pow, not sqrt.
                let denom = (p.exp_avg_sq.sqrt() / bias_correction2.powf(0.5)).g_add_scalar_(eps);
                // torch's addcdiv(value=v) computes self + (v·t1)/t2; as above.
                let _ = p
                    .param
                    .addcdiv_(&p.exp_avg.g_mul_scalar(-step_size), &denom);
            }
        });
    }

    /// Moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`) for a
    /// safetensors file, and the step counts for the run state.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, u64>) {
        let mut tensors = Vec::with_capacity(2 * self.params.len());
        let mut steps = BTreeMap::new();
        for p in &self.params {
            tensors.push((format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()));
            tensors.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
            steps.insert(p.name.clone(), p.step);
        }
        (tensors, steps)
    }

    /// Restores moments and step counts written by [`AdamW::state`].
    pub fn load_state(
        &mut self,
        tensors: &[(String, Tensor)],
        steps: &BTreeMap<String, u64>,
    ) -> Result<(), OptimError> {
        let map: std::collections::HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for p in &mut self.params {
            for (key, dst) in [
                (format!("exp_avg.{}", p.name), &mut p.exp_avg),
                (format!("exp_avg_sq.{}", p.name), &mut p.exp_avg_sq),
            ] {
                let src = map
                    .get(key.as_str())
                    .ok_or_else(|| OptimError::MissingState(key.clone()))?;
                if src.size() != dst.size() {
                    return Err(OptimError::ShapeMismatch {
                        name: key,
                        found: src.size(),
                        expected: dst.size(),
                    });
                }
                tch::no_grad(|| dst.f_copy_(src))?;
            }
            p.step = *steps
                .get(&p.name)
                .ok_or_else(|| OptimError::MissingState(format!("step.{}", p.name)))?;
        }
        Ok(())
    }
}

/// Total L2 norm of the gradients, and (with `max_norm`) clips them in place exactly as
/// `torch.nn.utils.clip_grad_norm_`: every gradient is multiplied by
/// `min(1, max_norm / (norm + 1e-6))`. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: Option<f64>) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    tch::no_grad(|| {
        // `Tensor::norm` is ATen's 2-norm over all elements (linalg.vector_norm).
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        if let Some(max) = max_norm {
            // Python's `max_norm / t` is `t.reciprocal() * max_norm`.
            let coef = ((&total + 1e-6).reciprocal() * max).clamp_max(1.0);
            for g in grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_(&coef);
            }
        }
        total.double_value(&[])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn weight_decay_exclusions_follow_the_official_sets() {
        let _rng = crate::train::rng::torch_rng_lock();
        assert!(skips_weight_decay("pos_embed", &[1, 129, 200]));
        assert!(skips_weight_decay("cls_token", &[1, 1, 200]));
        assert!(skips_weight_decay("time_embed", &[1, 16, 200]));
        assert!(skips_weight_decay("student.pos_embed", &[1, 129, 200]));
        assert!(skips_weight_decay("encoder.time_embed", &[1, 16, 200]));
        assert!(skips_weight_decay("decoder.cls_token", &[1, 1, 200]));
        assert!(skips_weight_decay("quantize.embedding.weight", &[8192, 64]));
        assert!(skips_weight_decay("blocks.0.norm1.weight", &[200]));
        assert!(skips_weight_decay("blocks.0.gamma_1", &[200]));
        assert!(skips_weight_decay("head.bias", &[2]));
        assert!(skips_weight_decay("patch_embed.conv1.bias", &[8]));
        // Not in any official skip list: decayed.
        assert!(!skips_weight_decay("student.mask_token", &[1, 1, 200]));
        assert!(!skips_weight_decay("head.weight", &[2, 200]));
        assert!(!skips_weight_decay("blocks.3.attn.qkv.weight", &[600, 200]));
        assert!(!skips_weight_decay(
            "patch_embed.conv1.weight",
            &[8, 1, 1, 15]
        ));
        assert!(!skips_weight_decay("lm_head.weight", &[8192, 200]));
    }

    #[test]
    fn layer_decay_matches_the_official_assigner() {
        let _rng = crate::train::rng::torch_rng_lock();
        let d: f64 = 0.65;
        let l = 12;
        for name in [
            "cls_token",
            "mask_token",
            "pos_embed",
            "patch_embed.conv1.weight",
        ] {
            assert_eq!(layer_scale(name, l, d), d.powi(13), "{name}");
        }
        assert_eq!(layer_scale("blocks.0.mlp.fc1.weight", l, d), d.powi(12));
        assert_eq!(layer_scale("blocks.11.attn.qkv.weight", l, d), d.powi(1));
        assert_eq!(layer_scale("blocks.5.norm1.bias", l, d), d.powi(7));
        for name in ["time_embed", "head.weight", "fc_norm.bias", "norm.weight"] {
            assert_eq!(layer_scale(name, l, d), 1.0, "{name}");
        }
        assert_eq!(layer_scale("blocks.0.mlp.fc1.weight", l, 1.0), 1.0);
    }

    /// The golden `finetune_base.pth` was stepped with two groups over the trainable
    /// `fc_norm.*`/`head.*`: {fc_norm.weight, fc_norm.bias, head.bias} without decay and
    /// {head.weight} with 0.05, all at lr scale 1.
    #[test]
    fn golden_finetune_groups() {
        let _rng = crate::train::rng::torch_rng_lock();
        let g = |n: &str, s: &[i64]| group_for(n, s, Some((12, 0.65)));
        assert_eq!(
            g("fc_norm.weight", &[200]),
            GroupSpec {
                lr_scale: 1.0,
                decay: false
            }
        );
        assert!(!g("fc_norm.bias", &[200]).decay);
        assert!(!g("head.bias", &[2]).decay);
        assert_eq!(
            g("head.weight", &[2, 200]),
            GroupSpec {
                lr_scale: 1.0,
                decay: true
            }
        );
    }

    #[test]
    fn adamw_first_step_moves_by_lr_and_skips_undefined_grads() {
        let _rng = crate::train::rng::torch_rng_lock();
        let a = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[5.0f32]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("a.weight".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            |_, _| GroupSpec {
                lr_scale: 1.0,
                decay: false,
            },
        );
        (&a * &a).sum(Kind::Float).backward();
        opt.step(0.1, 0.0);
        // First Adam step: |Δ| = lr (up to eps) with the sign of the gradient.
        let got: Vec<f32> = Vec::try_from(&a.detach()).unwrap();
        for (g, w) in got.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(b.double_value(&[0]), 5.0, "no grad, no update, no decay");
        let (_, steps) = opt.state();
        assert_eq!(steps["a.weight"], 1);
        assert_eq!(steps["b"], 0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let _rng = crate::train::rng::torch_rng_lock();
        let g1 = Tensor::from_slice(&[3.0f32, 0.0]);
        let g2 = Tensor::from_slice(&[4.0f32]);
        let n = clip_grad_norm(&[g1.shallow_clone(), g2.shallow_clone()], Some(1.0));
        assert!((n - 5.0).abs() < 1e-6);
        let after = (g1.square().sum(Kind::Float) + g2.square().sum(Kind::Float))
            .sqrt()
            .double_value(&[]);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Below the threshold nothing changes.
        let n2 = clip_grad_norm(&[g1.shallow_clone()], Some(10.0));
        assert!((n2 - 0.6).abs() < 1e-5);
        assert!((g1.double_value(&[0]) - 0.6).abs() < 1e-6);
    }
}
