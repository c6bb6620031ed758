//! The YAML run files of `train-tokenizer`, `pretrain` and `finetune`.
//!
//! One file describes one run completely (model, data, optimiser, loop), so that a
//! checkpoint can carry it and `--resume` needs nothing else. serde reads it with
//! `deny_unknown_fields` (a misspelt key is an error, not a silent default) and
//! [`RunConfig::validate`] checks every value against the stage; each error names the
//! file, the key, the bad value and the fix. Defaults are the official recipe of the
//! stage (LABRAM.md §6), so a file only has to state what differs.
//!
//! Relative paths are used as written: they are relative to the current directory
//! (run the commands from the repository root), not to the config file.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which command a run file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageName {
    Tokenizer,
    Pretrain,
    Finetune,
}

impl StageName {
    /// The command that runs this stage.
    pub fn command(self) -> &'static str {
        match self {
            StageName::Tokenizer => "train-tokenizer",
            StageName::Pretrain => "pretrain",
            StageName::Finetune => "finetune",
        }
    }
}

/// Errors reading or checking a run file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read run file {path}: {source}; check the --config path (relative to the current directory)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}; see the files in configs/ for complete examples")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: `{key}` is {value}: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        fix: String,
    },
}

/// Network size: the three official variants and `tiny` (for tests and quick checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Tiny,
    Base,
    Large,
    Huge,
}

/// `model:`: the network of the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// base (the paper's runs), large, huge, or tiny (2 blocks of width 40, for tests).
    #[serde(default = "d_variant")]
    pub variant: Variant,
    /// Stochastic depth rate (fine-tuning 0.1, pretraining 0).
    pub drop_path: Option<f64>,
    /// Layer-scale initial value (0.1 for the MEM and fine-tuning models).
    pub layer_scale_init: Option<f64>,
    /// Fine-tuning: number of classes (1 = one logit with BCE).
    pub num_classes: Option<i64>,
    /// Tokenizer: codebook size (8192) and code dimension (64).
    pub codebook_size: Option<i64>,
    pub codebook_dim: Option<i64>,
    /// Tokenizer: EMA decay of the codebook (0.99).
    pub ema_decay: Option<f64>,
    /// Tokenizer: k-means initialisation of the codebook on the first batch (true).
    pub kmeans_init: Option<bool>,
}

fn d_variant() -> Variant {
    Variant::Base
}

/// `data:`: where the windows come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A dataset written by `make-dataset` (windows, labels, subjects). Fine-tuning
    /// needs it; the tokenizer and pretraining may use its train subjects unlabelled.
    pub dataset: Option<PathBuf>,
    /// Subjects of each split, e.g. `["Subject00..=Subject21"]` (inclusive ranges of
    /// names with the same prefix and zero-padded number). Empty: the dataset's own
    /// `train`/`val`/`test` splits.
    #[serde(default)]
    pub train_subjects: Vec<String>,
    #[serde(default)]
    pub val_subjects: Vec<String>,
    #[serde(default)]
    pub test_subjects: Vec<String>,
    /// Pretraining / tokenizer: HDF5 stores written by `make-dataset pretrain`.
    #[serde(default)]
    pub stores: Vec<PathBuf>,
    /// Pretraining / tokenizer: window length in 1-s patches cut from the stores (8 = the
    /// official 1600 samples; at most 16).
    pub patches: Option<usize>,
}

/// `optim:`: AdamW, schedules, regularisation. Missing keys take the stage's official value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: Option<f64>,
    pub min_lr: Option<f64>,
    pub warmup_lr: Option<f64>,
    pub warmup_epochs: Option<usize>,
    /// Overrides `warmup_epochs` when > 0.
    pub warmup_steps: Option<usize>,
    pub weight_decay: Option<f64>,
    /// Cosine schedule of the weight decay to this value (default: constant).
    pub weight_decay_end: Option<f64>,
    pub betas: Option<[f64; 2]>,
    pub eps: Option<f64>,
    /// Layer-wise LR decay (fine-tuning 0.65; 1 = off).
    pub layer_decay: Option<f64>,
    /// Gradient clipping by total L2 norm (pretraining 3.0; absent = off).
    pub clip_grad: Option<f64>,
    /// Fine-tuning: label smoothing of the cross-entropy (0.1).
    pub label_smoothing: Option<f64>,
    /// Pretraining: fraction of patches masked per sample (0.5).
    pub mask_ratio: Option<f64>,
    /// Fine-tuning: weight the loss by inverse class frequency of the training split
    /// (not in the official recipe; for imbalanced tasks selected on balanced accuracy).
    #[serde(default)]
    pub balance_classes: bool,
}

/// `train:`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Checkpoint every N epochs (the last epoch is always saved).
    #[serde(default = "d_save_every")]
    pub save_every: usize,
    /// Run directory: checkpoints, log.jsonl, plots, metrics.json.
    pub output_dir: PathBuf,
    /// The validation metric that picks the best checkpoint (maximised, or minimised
    /// when its name ends in `loss`). Default: `balanced_accuracy` (fine-tuning),
    /// `mlm_acc` (pretraining), `loss` (tokenizer).
    pub select_metric: Option<String>,
    /// Cap on optimisation steps per epoch (quick runs; absent = the whole train split).
    pub max_steps_per_epoch: Option<usize>,
    /// Intra-op threads for libtorch (absent = libtorch's default).
    pub threads: Option<i32>,
}

fn d_save_every() -> usize {
    1
}

/// One run file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The command the file is for (`tokenizer`, `pretrain` or `finetune`).
    pub stage: StageName,
    pub model: ModelConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    pub train: TrainConfig,
    /// Initial weights (`.pth` official format or `.safetensors`); `--init` overrides.
    pub init: Option<PathBuf>,
    /// Pretraining: the tokenizer whose codes are the targets (`.pth` or `.safetensors`).
    pub tokenizer: Option<PathBuf>,
    /// Pretraining: the tokenizer's size.
    pub tokenizer_model: Option<ModelConfig>,
}

/// The optimiser settings of a run with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recipe {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_epochs: usize,
    pub warmup_steps: Option<usize>,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub layer_decay: f64,
    pub clip_grad: Option<f64>,
    pub label_smoothing: f64,
    pub mask_ratio: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub drop_path: f64,
    pub layer_scale_init: f64,
}

impl Recipe {
    /// The official values of a stage (LABRAM.md §6).
    pub fn official(stage: StageName) -> Recipe {
        match stage {
            StageName::Tokenizer => Recipe {
                lr: 5e-5,
                min_lr: 1e-5,
                warmup_lr: 1e-6,
                warmup_epochs: 10,
                warmup_steps: None,
                weight_decay: 1e-4,
                weight_decay_end: 1e-4,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                layer_decay: 1.0,
                clip_grad: None,
                label_smoothing: 0.0,
                mask_ratio: 0.0,
                epochs: 100,
                batch_size: 128,
                drop_path: 0.0,
                layer_scale_init: 0.0,
            },
            StageName::Pretrain => Recipe {
                lr: 5e-4,
                min_lr: 1e-5,
                warmup_lr: 1e-6,
                warmup_epochs: 5,
                warmup_steps: None,
                weight_decay: 0.05,
                weight_decay_end: 0.05,
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-8,
                layer_decay: 1.0,
                clip_grad: Some(3.0),
                label_smoothing: 0.0,
                mask_ratio: 0.5,
                epochs: 50,
                batch_size: 64,
                drop_path: 0.0,
                layer_scale_init: 0.1,
            },
            StageName::Finetune => Recipe {
                lr: 5e-4,
                min_lr: 1e-6,
                warmup_lr: 1e-6,
                warmup_epochs: 3,
                warmup_steps: None,
                weight_decay: 0.05,
                weight_decay_end: 0.05,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                layer_decay: 0.65,
                clip_grad: None,
                label_smoothing: 0.1,
                mask_ratio: 0.0,
                epochs: 30,
                batch_size: 64,
                drop_path: 0.1,
                layer_scale_init: 0.1,
            },
        }
    }
}

impl RunConfig {
    /// Reads and validates a run file for `stage`.
    pub fn load(path: &Path, stage: StageName) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = RunConfig::from_yaml(&text, path)?;
        cfg.validate(path, stage)?;
        Ok(cfg)
    }

    /// Parses YAML (without validation); `path` only names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<RunConfig, ConfigError> {
        serde_norway::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The optimiser recipe with the stage's official defaults filled in.
    pub fn recipe(&self) -> Recipe {
        let d = Recipe::official(self.stage);
        let o = &self.optim;
        let weight_decay = o.weight_decay.unwrap_or(d.weight_decay);
        let [beta1, beta2] = o.betas.unwrap_or([d.beta1, d.beta2]);
        Recipe {
            lr: o.lr.unwrap_or(d.lr),
            min_lr: o.min_lr.unwrap_or(d.min_lr),
            warmup_lr: o.warmup_lr.unwrap_or(d.warmup_lr),
            warmup_epochs: o.warmup_epochs.unwrap_or(d.warmup_epochs),
            warmup_steps: o.warmup_steps.or(d.warmup_steps),
            weight_decay,
            weight_decay_end: o.weight_decay_end.unwrap_or(weight_decay),
            beta1,
            beta2,
            eps: o.eps.unwrap_or(d.eps),
            layer_decay: o.layer_decay.unwrap_or(d.layer_decay),
            clip_grad: o.clip_grad.or(d.clip_grad),
            label_smoothing: o.label_smoothing.unwrap_or(d.label_smoothing),
            mask_ratio: o.mask_ratio.unwrap_or(d.mask_ratio),
            epochs: self.train.epochs.unwrap_or(d.epochs),
            batch_size: self.train.batch_size.unwrap_or(d.batch_size),
            drop_path: self.model.drop_path.unwrap_or(d.drop_path),
            layer_scale_init: self.model.layer_scale_init.unwrap_or(d.layer_scale_init),
        }
    }

    /// The validation metric that picks the best checkpoint, and whether lower is better.
    pub fn select_metric(&self) -> (String, bool) {
        let name = self.train.select_metric.clone().unwrap_or_else(|| {
            match self.stage {
                StageName::Finetune => "balanced_accuracy",
                StageName::Pretrain => "mlm_acc",
                StageName::Tokenizer => "loss",
            }
            .to_string()
        });
        let lower = name.ends_with("loss");
        (name, lower)
    }

    /// Checks every value against `stage`; the first problem is returned.
    pub fn validate(&self, path: &Path, stage: StageName) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, fix: &str| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: key.into(),
                value,
                fix: fix.into(),
            })
        };
        if self.stage != stage {
            return bad(
                "stage",
                format!("{:?}", self.stage).to_lowercase(),
                &format!(
                    "this file is for `labram-trainer {}`; run that command, or pass a `stage: {}` file to `{}`",
                    self.stage.command(),
                    format!("{stage:?}").to_lowercase(),
                    stage.command()
                ),
            );
        }
        let r = self.recipe();
        let pos = |key: &str, v: f64| -> Result<(), ConfigError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(key, v.to_string(), "use a positive number")
            }
        };
        pos("optim.lr", r.lr)?;
        pos("optim.eps", r.eps)?;
        for (k, v) in [
            ("optim.min_lr", r.min_lr),
            ("optim.warmup_lr", r.warmup_lr),
            ("optim.weight_decay", r.weight_decay),
            ("optim.weight_decay_end", r.weight_decay_end),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(k, v.to_string(), "use a number >= 0");
            }
        }
        for (i, b) in [r.beta1, r.beta2].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return bad(
                    &format!("optim.betas[{i}]"),
                    b.to_string(),
                    "betas lie in [0, 1), e.g. [0.9, 0.999]",
                );
            }
        }
        if !(r.layer_decay > 0.0 && r.layer_decay <= 1.0) {
            return bad(
                "optim.layer_decay",
                r.layer_decay.to_string(),
                "use a value in (0, 1] (1 = no layer decay; the fine-tuning recipe uses 0.65)",
            );
        }
        if let Some(c) = r.clip_grad {
            pos("optim.clip_grad", c)?;
        }
        if !(0.0..1.0).contains(&r.label_smoothing) {
            return bad(
                "optim.label_smoothing",
                r.label_smoothing.to_string(),
                "use a value in [0, 1) (official 0.1)",
            );
        }
        if !(0.0..1.0).contains(&r.drop_path) {
            return bad(
                "model.drop_path",
                r.drop_path.to_string(),
                "use a value in [0, 1)",
            );
        }
        if r.epochs == 0 {
            return bad("train.epochs", "0".into(), "train for at least 1 epoch");
        }
        if r.batch_size == 0 {
            return bad("train.batch_size", "0".into(), "use a batch of at least 1");
        }
        if self.train.save_every == 0 {
            return bad(
                "train.save_every",
                "0".into(),
                "save every N >= 1 epochs (the last epoch is always saved)",
            );
        }
        if r.warmup_epochs >= r.epochs && r.warmup_steps.is_none_or(|w| w == 0) {
            return bad(
                "optim.warmup_epochs",
                r.warmup_epochs.to_string(),
                &format!("warm-up must be shorter than train.epochs ({})", r.epochs),
            );
        }
        if let Some(p) = self.data.patches {
            if !(1..=16).contains(&p) {
                return bad(
                    "data.patches",
                    p.to_string(),
                    "use 1..=16 (time_embed has 16 rows; the official runs use 8)",
                );
            }
        }
        for (key, list) in [
            ("data.train_subjects", &self.data.train_subjects),
            ("data.val_subjects", &self.data.val_subjects),
            ("data.test_subjects", &self.data.test_subjects),
        ] {
            for item in list {
                if let Err(e) = expand_subjects(std::slice::from_ref(item)) {
                    return bad(key, format!("{item:?}"), &e);
                }
            }
        }
        let (tr, va, te) = (
            expand_subjects(&self.data.train_subjects).unwrap_or_default(),
            expand_subjects(&self.data.val_subjects).unwrap_or_default(),
            expand_subjects(&self.data.test_subjects).unwrap_or_default(),
        );
        for s in &tr {
            if va.contains(s) || te.contains(s) {
                return bad(
                    "data.train_subjects",
                    format!("{s:?}"),
                    "a subject may be in one split only (train, val or test)",
                );
            }
        }
        for s in &va {
            if te.contains(s) {
                return bad(
                    "data.val_subjects",
                    format!("{s:?}"),
                    "a subject may be in one split only (val or test)",
                );
            }
        }
        match stage {
            StageName::Finetune => {
                let Some(k) = self.model.num_classes else {
                    return bad(
                        "model.num_classes",
                        "missing".into(),
                        "set the number of classes (1 = one logit trained with BCE)",
                    );
                };
                if k < 1 {
                    return bad("model.num_classes", k.to_string(), "use 1 or more");
                }
                if self.data.dataset.is_none() {
                    return bad(
                        "data.dataset",
                        "missing".into(),
                        "name a dataset written by `labram-trainer make-dataset`",
                    );
                }
            }
            StageName::Pretrain => {
                if self.tokenizer.is_none() {
                    return bad(
                        "tokenizer",
                        "missing".into(),
                        "name the tokenizer checkpoint whose codes are the targets (train one with `labram-trainer train-tokenizer`)",
                    );
                }
                if !(r.mask_ratio > 0.0 && r.mask_ratio < 1.0) {
                    return bad(
                        "optim.mask_ratio",
                        r.mask_ratio.to_string(),
                        "use a value in (0, 1) (official 0.5)",
                    );
                }
            }
            StageName::Tokenizer => {
                if let Some(d) = self.model.ema_decay {
                    if !(0.0..1.0).contains(&d) {
                        return bad(
                            "model.ema_decay",
                            d.to_string(),
                            "use a value in [0, 1) (official 0.99)",
                        );
                    }
                }
            }
        }
        if matches!(stage, StageName::Pretrain | StageName::Tokenizer)
            && self.data.stores.is_empty()
            && self.data.dataset.is_none()
        {
            return bad(
                "data.stores",
                "empty".into(),
                "list HDF5 stores written by `make-dataset pretrain`, or name a `data.dataset` whose train subjects are used unlabelled",
            );
        }
        if self.model.num_classes.is_some() && stage != StageName::Finetune {
            return bad(
                "model.num_classes",
                format!("{:?}", self.model.num_classes),
                "only fine-tuning has classes; remove the key",
            );
        }
        Ok(())
    }
}

/// Expands subject lists: plain names, or inclusive ranges `Prefix00..=Prefix21` whose
/// two ends share the prefix and the width of the number. The error says what is wrong.
pub fn expand_subjects(items: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items {
        if let Some((a, b)) = item.split_once("..=") {
            let split = |s: &str| {
                let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                let (p, n) = s.split_at(s.len() - digits);
                (p.to_string(), n.to_string())
            };
            let ((pa, na), (pb, nb)) = (split(a.trim()), split(b.trim()));
            if pa != pb || na.is_empty() || na.len() != nb.len() {
                return Err(format!(
                    "a range is `Name00..=Name21`: both ends need the same prefix and a number of the same width ({a:?} vs {b:?})"
                ));
            }
            let (lo, hi): (u64, u64) = match (na.parse(), nb.parse()) {
                (Ok(l), Ok(h)) if l <= h => (l, h),
                _ => return Err(format!("the range {item:?} is empty or not numeric")),
            };
            let w = na.len();
            out.extend((lo..=hi).map(|i| format!("{pa}{i:0w$}")));
        } else if item.trim().is_empty() {
            return Err("empty subject name".into());
        } else {
            out.push(item.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FT: &str = r#"
stage: finetune
model: {variant: tiny, num_classes: 2}
data:
  dataset: out/eegmat-causal
  train_subjects: ["Subject00..=Subject21"]
  val_subjects: ["Subject22..=Subject24"]
  test_subjects: [Subject25, Subject26, Subject27]
train: {epochs: 4, batch_size: 8, output_dir: runs/x}
optim: {warmup_epochs: 1}
"#;

    fn p() -> &'static Path {
        Path::new("t.yaml")
    }

    #[test]
    fn defaults_are_the_official_recipe() {
        let c = RunConfig::from_yaml(FT, p()).unwrap();
        c.validate(p(), StageName::Finetune).unwrap();
        let r = c.recipe();
        assert_eq!((r.beta1, r.beta2, r.eps), (0.9, 0.999, 1e-8));
        assert_eq!((r.lr, r.min_lr, r.warmup_lr), (5e-4, 1e-6, 1e-6));
        assert_eq!(
            (r.layer_decay, r.label_smoothing, r.drop_path),
            (0.65, 0.1, 0.1)
        );
        assert_eq!(r.weight_decay_end, 0.05);
        let pt = Recipe::official(StageName::Pretrain);
        assert_eq!(
            (pt.beta2, pt.clip_grad, pt.mask_ratio),
            (0.98, Some(3.0), 0.5)
        );
        let tk = Recipe::official(StageName::Tokenizer);
        assert_eq!(
            (tk.beta2, tk.lr, tk.weight_decay, tk.batch_size),
            (0.99, 5e-5, 1e-4, 128)
        );
    }

    #[test]
    fn subject_ranges() {
        let v = expand_subjects(&["Subject08..=Subject11".into(), "X".into()]).unwrap();
        assert_eq!(v, ["Subject08", "Subject09", "Subject10", "Subject11", "X"]);
        assert!(expand_subjects(&["Subject1..=Subject21".into()]).is_err());
        assert!(expand_subjects(&["A05..=B07".into()]).is_err());
        assert!(expand_subjects(&["S09..=S03".into()]).is_err());
    }

    #[test]
    fn errors_name_key_value_and_fix() {
        let unknown = FT.replace("batch_size: 8", "batchsize: 8");
        let e = RunConfig::from_yaml(&unknown, p()).unwrap_err().to_string();
        assert!(e.contains("batchsize") && e.contains("t.yaml"), "{e}");

        let overlap = FT.replace("[Subject25, Subject26, Subject27]", "[Subject24]");
        let c = RunConfig::from_yaml(&overlap, p()).unwrap();
        let e = c
            .validate(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.val_subjects") && e.contains("Subject24"),
            "{e}"
        );

        let c = RunConfig::from_yaml(FT, p()).unwrap();
        let e = c
            .validate(p(), StageName::Pretrain)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`stage`") && e.contains("labram-trainer finetune"),
            "{e}"
        );

        let betas = FT.replace(
            "{warmup_epochs: 1}",
            "{warmup_epochs: 1, betas: [0.9, 1.5]}",
        );
        let c = RunConfig::from_yaml(&betas, p()).unwrap();
        let e = c
            .validate(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("optim.betas[1]") && e.contains("1.5"), "{e}");

        let warm = FT.replace("{warmup_epochs: 1}", "{warmup_epochs: 4}");
        let c = RunConfig::from_yaml(&warm, p()).unwrap();
        let e = c
            .validate(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("optim.warmup_epochs") && e.contains("shorter"),
            "{e}"
        );

        let noclass = FT.replace(", num_classes: 2", "");
        let c = RunConfig::from_yaml(&noclass, p()).unwrap();
        let e = c
            .validate(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.num_classes"), "{e}");
    }
}
