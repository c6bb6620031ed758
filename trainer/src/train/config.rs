//! The YAML run files of `train-tokenizer`, `pretrain` and `finetune`: raw → checked → typed.
//!
//! One file describes one run completely (model, data, optimiser, loop), so that a
//! checkpoint can carry it and `--resume` needs nothing else. As the daemon's config,
//! it is read in two steps:
//! * serde reads the file into loosely typed [`RawRunConfig`] structs with
//!   `deny_unknown_fields` (a misspelt key is an error, not a silent default);
//! * [`RawRunConfig::check`] checks every value against the stage, one function per
//!   section, and builds a [`RunConfig`]; each error names the file, the key, the bad
//!   value and the fix. The stage's official recipe (LABRAM.md §6, [`Recipe::official`])
//!   fills the keys a file leaves out here, so a file only has to state what differs.
//!
//! After the check nothing is optional that later code would have to default: each
//! stage gets exactly the values it needs ([`StageConfig`]: a fine-tuning run has a
//! dataset path, a pretraining run a tokenizer path). The remaining `Option`s mean
//! "not used" (no initial weights, no step cap, libtorch's own thread count).
//!
//! A [`RunConfig`] serialises back to the file format with every default written out
//! (`config.yaml` in the run directory, `config` in a checkpoint's `state.json`), and
//! deserialises through the same check, so a checkpoint's copy round-trips exactly.
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

    /// The stage as a run file's `stage:` key spells it.
    fn key(self) -> String {
        format!("{self:?}").to_lowercase()
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
    #[error("{path}: {source}; see the files in configs/ for complete examples")]
    Yaml {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: `{key}` is {value}: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        fix: String,
    },
}

/// The path named in errors about the run file a checkpoint carries.
pub const CHECKPOINT_SOURCE: &str = "<checkpoint state.json>";

/// Network size: the three official variants and `tiny` (for tests and quick checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Tiny,
    Base,
    Large,
    Huge,
}

// ---------------------------------------------------------------------------------
// The file as written.

/// `model:` as written: the network of the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// base (the paper's runs), large, huge, or tiny (2 blocks of width 40, for tests).
    #[serde(default = "d_variant")]
    pub variant: Variant,
    /// Stochastic depth rate (fine-tuning 0.1, pretraining 0).
    pub drop_path: Option<f64>,
    /// Layer-scale initial value (0.1 for the MEM and fine-tuning models).
    pub layer_scale_init: Option<f64>,
    /// Fine-tuning: number of classes (1 = one logit with BCE).
    pub num_classes: Option<i64>,
    /// Tokenizer: codebook size (8192) and code dimension (64); pretraining: the
    /// vocabulary of the MEM heads (`codebook_size`, 8192).
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

/// `data:` as written: where the windows come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawData {
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

/// `optim:` as written: AdamW, schedules, regularisation. Missing keys take the stage's
/// official value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOptim {
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
    /// Gradient clipping by total L2 norm (pretraining 3.0; absent = the stage's
    /// official value, off for the other stages).
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

/// `train:` as written: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrain {
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

/// One run file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRunConfig {
    /// The command the file is for (`tokenizer`, `pretrain` or `finetune`).
    pub stage: StageName,
    pub model: RawModel,
    pub data: RawData,
    #[serde(default)]
    pub optim: RawOptim,
    pub train: RawTrain,
    /// Initial weights (`.pth` official format or `.safetensors`); `--init` overrides.
    pub init: Option<PathBuf>,
    /// Pretraining: the tokenizer whose codes are the targets (`.pth` or `.safetensors`).
    pub tokenizer: Option<PathBuf>,
    /// Pretraining: the tokenizer's size (absent: `model`'s variant with the official
    /// codebook).
    pub tokenizer_model: Option<RawModel>,
}

// ---------------------------------------------------------------------------------
// The checked run.

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

    /// Every optimiser key of `o` (and the loop and model keys the recipe holds), the
    /// official value of `stage` where the file has none.
    fn resolve(stage: StageName, o: &RawOptim, t: &RawTrain, m: &RawModel) -> Recipe {
        let d = Recipe::official(stage);
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
            epochs: t.epochs.unwrap_or(d.epochs),
            batch_size: t.batch_size.unwrap_or(d.batch_size),
            drop_path: m.drop_path.unwrap_or(d.drop_path),
            layer_scale_init: m.layer_scale_init.unwrap_or(d.layer_scale_init),
        }
    }
}

/// The validation metric that picks the best checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectMetric {
    pub name: String,
    /// Minimised (the name ends in `loss`) rather than maximised.
    pub lower_is_better: bool,
}

impl SelectMetric {
    fn new(name: String) -> SelectMetric {
        let lower_is_better = name.ends_with("loss");
        SelectMetric {
            name,
            lower_is_better,
        }
    }

    /// The official choice of a stage.
    fn official(stage: StageName) -> SelectMetric {
        SelectMetric::new(
            match stage {
                StageName::Finetune => "balanced_accuracy",
                StageName::Pretrain => "mlm_acc",
                StageName::Tokenizer => "loss",
            }
            .into(),
        )
    }
}

/// `train:` checked: the loop's settings that are not part of the [`Recipe`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Run seed: data order, masking, drop path, initialisation (see `rng`).
    pub seed: u64,
    /// Checkpoint every N >= 1 epochs (the last epoch is always saved).
    pub save_every: usize,
    /// Run directory: checkpoints, log.jsonl, plots, metrics.json.
    pub output_dir: PathBuf,
    pub select: SelectMetric,
    /// Cap on optimisation steps per epoch (None: the whole train split).
    pub max_steps_per_epoch: Option<usize>,
    /// Intra-op threads for libtorch (None: libtorch's own choice).
    pub threads: Option<i32>,
}

/// Subjects of each split, ranges expanded. An empty list selects the dataset's own
/// split of that name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectSplits {
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

/// A dataset written by `make-dataset` and the subjects of its splits.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitDataset {
    pub path: PathBuf,
    pub subjects: SubjectSplits,
}

/// Windows cut from HDF5 stores written by `make-dataset pretrain`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreWindows {
    /// At least one store.
    pub paths: Vec<PathBuf>,
    /// Window length in 1-s patches, 1..=16.
    pub patches: usize,
}

/// Where the self-supervised stages take their unlabelled windows: a dataset's train
/// (and val) subjects, stores, or both — never neither.
#[derive(Debug, Clone, PartialEq)]
pub enum Unlabelled {
    Dataset(SplitDataset),
    Stores(StoreWindows),
    Both(SplitDataset, StoreWindows),
}

impl Unlabelled {
    /// The dataset source, if any.
    pub fn dataset(&self) -> Option<&SplitDataset> {
        match self {
            Unlabelled::Dataset(d) | Unlabelled::Both(d, _) => Some(d),
            Unlabelled::Stores(_) => None,
        }
    }

    /// The store source, if any.
    pub fn stores(&self) -> Option<&StoreWindows> {
        match self {
            Unlabelled::Stores(s) | Unlabelled::Both(_, s) => Some(s),
            Unlabelled::Dataset(_) => None,
        }
    }
}

/// The official EMA decay of the codebook (`--ema_decay`), as `VqnspConfig::new`.
pub const OFFICIAL_EMA_DECAY: f64 = 0.99;

/// A VQ-NSP tokenizer's settings, every default applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenizerSpec {
    pub variant: Variant,
    /// Number of codes (8192; tiny: 64).
    pub codebook_size: i64,
    /// Code dimension (64; tiny: 16).
    pub codebook_dim: i64,
    /// EMA decay of the codebook, in [0, 1).
    pub ema_decay: f64,
    /// k-means initialisation of the codebook on the first training batch.
    pub kmeans_init: bool,
}

impl TokenizerSpec {
    /// The settings `m` states, the official ones (by variant) otherwise.
    fn resolve(m: &RawModel) -> TokenizerSpec {
        let (size, dim) = match m.variant {
            Variant::Tiny => (64, 16),
            _ => (8192, 64),
        };
        TokenizerSpec {
            variant: m.variant,
            codebook_size: m.codebook_size.unwrap_or(size),
            codebook_dim: m.codebook_dim.unwrap_or(dim),
            ema_decay: m.ema_decay.unwrap_or(OFFICIAL_EMA_DECAY),
            kmeans_init: m.kmeans_init.unwrap_or(true),
        }
    }

    /// Back to `model:` keys, every value written out.
    fn to_raw(self) -> RawModel {
        RawModel {
            variant: self.variant,
            drop_path: None,
            layer_scale_init: None,
            num_classes: None,
            codebook_size: Some(self.codebook_size),
            codebook_dim: Some(self.codebook_dim),
            ema_decay: Some(self.ema_decay),
            kmeans_init: Some(self.kmeans_init),
        }
    }
}

/// What a fine-tuning run needs beyond the recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneRun {
    pub data: SplitDataset,
    /// Classes, >= 1 (1 = one logit trained with BCE).
    pub num_classes: i64,
    /// Weight the loss by inverse class frequency (`optim.balance_classes`).
    pub balance_classes: bool,
}

/// What a pretraining (masked EEG modeling) run needs beyond the recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainRun {
    pub data: Unlabelled,
    /// The tokenizer checkpoint whose codes are the targets.
    pub tokenizer: PathBuf,
    pub tokenizer_spec: TokenizerSpec,
    /// Vocabulary of the MEM heads (`model.codebook_size`, 8192).
    pub vocab: i64,
}

/// What a tokenizer run needs beyond the recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerRun {
    pub data: Unlabelled,
    pub spec: TokenizerSpec,
}

/// The stage of a run with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StageConfig {
    Tokenizer(TokenizerRun),
    Pretrain(PretrainRun),
    Finetune(FinetuneRun),
}

impl StageConfig {
    pub fn name(&self) -> StageName {
        match self {
            StageConfig::Tokenizer(_) => StageName::Tokenizer,
            StageConfig::Pretrain(_) => StageName::Pretrain,
            StageConfig::Finetune(_) => StageName::Finetune,
        }
    }
}

/// One run file, checked: built only by [`RawRunConfig::check`] (or deserialised
/// through it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRunConfig", into = "RawRunConfig")]
pub struct RunConfig {
    pub variant: Variant,
    pub recipe: Recipe,
    pub train: TrainConfig,
    /// Initial weights (None: the network's own initialisation).
    pub init: Option<PathBuf>,
    pub stage: StageConfig,
}

impl RunConfig {
    /// Reads and checks a run file for `stage`.
    pub fn load(path: &Path, stage: StageName) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        RunConfig::parse(&text, path, stage)
    }

    /// Parses and checks YAML for `stage`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path, stage: StageName) -> Result<RunConfig, ConfigError> {
        RawRunConfig::from_yaml(text, path)?.check(path, stage)
    }

    /// Refuses a run of another stage than `stage` (e.g. a checkpoint's run file given
    /// to another command), saying which command it is for.
    pub fn expect_stage(&self, path: &Path, stage: StageName) -> Result<(), ConfigError> {
        Checker { path }.stage(self.stage.name(), stage)
    }
}

impl TryFrom<RawRunConfig> for RunConfig {
    type Error = ConfigError;

    /// A checkpoint's copy of its run file, checked for the stage it names.
    fn try_from(raw: RawRunConfig) -> Result<RunConfig, ConfigError> {
        raw.check(Path::new(CHECKPOINT_SOURCE), raw.stage)
    }
}

impl From<RunConfig> for RawRunConfig {
    /// The run file with every default written out: checking it again gives the same
    /// [`RunConfig`].
    fn from(c: RunConfig) -> RawRunConfig {
        let r = c.recipe;
        let mut raw = RawRunConfig {
            stage: c.stage.name(),
            model: RawModel {
                variant: c.variant,
                drop_path: Some(r.drop_path),
                layer_scale_init: Some(r.layer_scale_init),
                num_classes: None,
                codebook_size: None,
                codebook_dim: None,
                ema_decay: None,
                kmeans_init: None,
            },
            data: RawData::default(),
            optim: RawOptim {
                lr: Some(r.lr),
                min_lr: Some(r.min_lr),
                warmup_lr: Some(r.warmup_lr),
                warmup_epochs: Some(r.warmup_epochs),
                warmup_steps: r.warmup_steps,
                weight_decay: Some(r.weight_decay),
                weight_decay_end: Some(r.weight_decay_end),
                betas: Some([r.beta1, r.beta2]),
                eps: Some(r.eps),
                layer_decay: Some(r.layer_decay),
                clip_grad: r.clip_grad,
                label_smoothing: Some(r.label_smoothing),
                mask_ratio: Some(r.mask_ratio),
                balance_classes: false,
            },
            train: RawTrain {
                epochs: Some(r.epochs),
                batch_size: Some(r.batch_size),
                seed: c.train.seed,
                save_every: c.train.save_every,
                output_dir: c.train.output_dir,
                select_metric: Some(c.train.select.name),
                max_steps_per_epoch: c.train.max_steps_per_epoch,
                threads: c.train.threads,
            },
            init: c.init,
            tokenizer: None,
            tokenizer_model: None,
        };
        match c.stage {
            StageConfig::Finetune(f) => {
                raw.model.num_classes = Some(f.num_classes);
                raw.optim.balance_classes = f.balance_classes;
                raw.data.set_dataset(f.data);
            }
            StageConfig::Pretrain(p) => {
                raw.model.codebook_size = Some(p.vocab);
                raw.data.set_unlabelled(p.data);
                raw.tokenizer = Some(p.tokenizer);
                raw.tokenizer_model = Some(p.tokenizer_spec.to_raw());
            }
            StageConfig::Tokenizer(t) => {
                let spec = t.spec.to_raw();
                raw.model.codebook_size = spec.codebook_size;
                raw.model.codebook_dim = spec.codebook_dim;
                raw.model.ema_decay = spec.ema_decay;
                raw.model.kmeans_init = spec.kmeans_init;
                raw.data.set_unlabelled(t.data);
            }
        }
        raw
    }
}

impl RawData {
    fn set_dataset(&mut self, d: SplitDataset) {
        self.dataset = Some(d.path);
        self.train_subjects = d.subjects.train;
        self.val_subjects = d.subjects.val;
        self.test_subjects = d.subjects.test;
    }

    fn set_stores(&mut self, s: StoreWindows) {
        self.stores = s.paths;
        self.patches = Some(s.patches);
    }

    fn set_unlabelled(&mut self, u: Unlabelled) {
        match u {
            Unlabelled::Dataset(d) => self.set_dataset(d),
            Unlabelled::Stores(s) => self.set_stores(s),
            Unlabelled::Both(d, s) => {
                self.set_dataset(d);
                self.set_stores(s);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The check.

impl RawRunConfig {
    /// Parses YAML (without checking it); `path` only names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<RawRunConfig, ConfigError> {
        serde_norway::from_str(text).map_err(|source| ConfigError::Yaml {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks every value against `stage` and builds the typed run; the first problem
    /// is returned, naming `path`, the key, the value and the fix.
    pub fn check(&self, path: &Path, stage: StageName) -> Result<RunConfig, ConfigError> {
        let c = Checker { path };
        c.stage(self.stage, stage)?;
        let recipe = c.recipe(&Recipe::resolve(
            stage,
            &self.optim,
            &self.train,
            &self.model,
        ))?;
        let train = c.train(&self.train, stage)?;
        let patches = c.patches(self.data.patches)?;
        let subjects = c.subjects(&self.data)?;
        let stage = match stage {
            StageName::Finetune => StageConfig::Finetune(c.finetune(self, subjects)?),
            StageName::Pretrain => {
                StageConfig::Pretrain(c.pretrain(self, &recipe, subjects, patches)?)
            }
            StageName::Tokenizer => StageConfig::Tokenizer(c.tokenizer(self, subjects, patches)?),
        };
        Ok(RunConfig {
            variant: self.model.variant,
            recipe,
            train,
            init: self.init.clone(),
            stage,
        })
    }
}

/// One check per section of a run file; errors name `path`.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn bad(&self, key: &str, value: impl std::fmt::Display, fix: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            value: value.to_string(),
            fix: fix.into(),
        }
    }

    /// `stage:` must be the command's.
    fn stage(&self, found: StageName, wanted: StageName) -> Result<(), ConfigError> {
        if found == wanted {
            return Ok(());
        }
        Err(self.bad(
            "stage",
            found.key(),
            format!(
                "this file is for `labram-trainer {}`; run that command, or pass a `stage: {}` file to `{}`",
                found.command(),
                wanted.key(),
                wanted.command()
            ),
        ))
    }

    fn positive(&self, key: &str, v: f64) -> Result<(), ConfigError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(self.bad(key, v, "use a positive number"))
        }
    }

    fn in_unit(&self, key: &str, v: f64, fix: &str) -> Result<(), ConfigError> {
        if (0.0..1.0).contains(&v) {
            Ok(())
        } else {
            Err(self.bad(key, v, fix))
        }
    }

    /// The recipe's ranges: `optim.*`, `model.drop_path`, `train.epochs` and
    /// `train.batch_size`, and a warm-up shorter than the run.
    fn recipe(&self, r: &Recipe) -> Result<Recipe, ConfigError> {
        self.positive("optim.lr", r.lr)?;
        self.positive("optim.eps", r.eps)?;
        for (k, v) in [
            ("optim.min_lr", r.min_lr),
            ("optim.warmup_lr", r.warmup_lr),
            ("optim.weight_decay", r.weight_decay),
            ("optim.weight_decay_end", r.weight_decay_end),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.bad(k, v, "use a number >= 0"));
            }
        }
        for (i, b) in [r.beta1, r.beta2].into_iter().enumerate() {
            self.in_unit(
                &format!("optim.betas[{i}]"),
                b,
                "betas lie in [0, 1), e.g. [0.9, 0.999]",
            )?;
        }
        if !(r.layer_decay > 0.0 && r.layer_decay <= 1.0) {
            return Err(self.bad(
                "optim.layer_decay",
                r.layer_decay,
                "use a value in (0, 1] (1 = no layer decay; the fine-tuning recipe uses 0.65)",
            ));
        }
        if let Some(c) = r.clip_grad {
            self.positive("optim.clip_grad", c)?;
        }
        self.in_unit(
            "optim.label_smoothing",
            r.label_smoothing,
            "use a value in [0, 1) (official 0.1)",
        )?;
        self.in_unit("model.drop_path", r.drop_path, "use a value in [0, 1)")?;
        if r.epochs == 0 {
            return Err(self.bad("train.epochs", 0, "train for at least 1 epoch"));
        }
        if r.batch_size == 0 {
            return Err(self.bad("train.batch_size", 0, "use a batch of at least 1"));
        }
        if r.warmup_epochs >= r.epochs && r.warmup_steps.is_none_or(|w| w == 0) {
            return Err(self.bad(
                "optim.warmup_epochs",
                r.warmup_epochs,
                format!("warm-up must be shorter than train.epochs ({})", r.epochs),
            ));
        }
        Ok(*r)
    }

    /// `train:` beyond the recipe: checkpoint period and the selection metric.
    fn train(&self, t: &RawTrain, stage: StageName) -> Result<TrainConfig, ConfigError> {
        if t.save_every == 0 {
            return Err(self.bad(
                "train.save_every",
                0,
                "save every N >= 1 epochs (the last epoch is always saved)",
            ));
        }
        Ok(TrainConfig {
            seed: t.seed,
            save_every: t.save_every,
            output_dir: t.output_dir.clone(),
            select: match &t.select_metric {
                Some(name) => SelectMetric::new(name.clone()),
                None => SelectMetric::official(stage),
            },
            max_steps_per_epoch: t.max_steps_per_epoch,
            threads: t.threads,
        })
    }

    /// `data.*_subjects`: every item expands, and no subject is in two splits.
    fn subjects(&self, d: &RawData) -> Result<SubjectSplits, ConfigError> {
        let expand = |key: &str, list: &[String]| -> Result<Vec<String>, ConfigError> {
            let mut out = Vec::new();
            for item in list {
                let names = expand_subjects(std::slice::from_ref(item))
                    .map_err(|e| self.bad(key, format!("{item:?}"), e.to_string()))?;
                out.extend(names);
            }
            Ok(out)
        };
        let s = SubjectSplits {
            train: expand("data.train_subjects", &d.train_subjects)?,
            val: expand("data.val_subjects", &d.val_subjects)?,
            test: expand("data.test_subjects", &d.test_subjects)?,
        };
        if let Some(x) = s
            .train
            .iter()
            .find(|x| s.val.contains(x) || s.test.contains(x))
        {
            return Err(self.bad(
                "data.train_subjects",
                format!("{x:?}"),
                "a subject may be in one split only (train, val or test)",
            ));
        }
        if let Some(x) = s.val.iter().find(|x| s.test.contains(x)) {
            return Err(self.bad(
                "data.val_subjects",
                format!("{x:?}"),
                "a subject may be in one split only (val or test)",
            ));
        }
        Ok(s)
    }

    /// `data.patches`: 1..=16, 8 (the official 1600 samples) when absent. Checked for
    /// every stage, though only the stores of the self-supervised stages use it.
    fn patches(&self, patches: Option<usize>) -> Result<usize, ConfigError> {
        match patches {
            None => Ok(8),
            Some(p) if (1..=16).contains(&p) => Ok(p),
            Some(p) => Err(self.bad(
                "data.patches",
                p,
                "use 1..=16 (time_embed has 16 rows; the official runs use 8)",
            )),
        }
    }

    /// Fine-tuning: the classes and the labelled dataset.
    fn finetune(
        &self,
        raw: &RawRunConfig,
        subjects: SubjectSplits,
    ) -> Result<FinetuneRun, ConfigError> {
        let num_classes = match raw.model.num_classes {
            None => {
                return Err(self.bad(
                    "model.num_classes",
                    "missing",
                    "set the number of classes (1 = one logit trained with BCE)",
                ))
            }
            Some(k) if k < 1 => return Err(self.bad("model.num_classes", k, "use 1 or more")),
            Some(k) => k,
        };
        let Some(path) = raw.data.dataset.clone() else {
            return Err(self.bad(
                "data.dataset",
                "missing",
                "name a dataset written by `labram-trainer make-dataset`",
            ));
        };
        Ok(FinetuneRun {
            data: SplitDataset { path, subjects },
            num_classes,
            balance_classes: raw.optim.balance_classes,
        })
    }

    /// Pretraining: the tokenizer, the mask ratio and the unlabelled windows.
    fn pretrain(
        &self,
        raw: &RawRunConfig,
        recipe: &Recipe,
        subjects: SubjectSplits,
        patches: usize,
    ) -> Result<PretrainRun, ConfigError> {
        let Some(tokenizer) = raw.tokenizer.clone() else {
            return Err(self.bad(
                "tokenizer",
                "missing",
                "name the tokenizer checkpoint whose codes are the targets (train one with `labram-trainer train-tokenizer`)",
            ));
        };
        if !(recipe.mask_ratio > 0.0 && recipe.mask_ratio < 1.0) {
            return Err(self.bad(
                "optim.mask_ratio",
                recipe.mask_ratio,
                "use a value in (0, 1) (official 0.5)",
            ));
        }
        let data = self.unlabelled(&raw.data, subjects, patches)?;
        self.no_classes(&raw.model)?;
        // Without `tokenizer_model`, the tokenizer has the model's size and the
        // official codebook of that size.
        let tokenizer_model = raw.tokenizer_model.clone().unwrap_or_else(|| RawModel {
            codebook_size: None,
            codebook_dim: None,
            ..raw.model.clone()
        });
        Ok(PretrainRun {
            data,
            tokenizer,
            tokenizer_spec: TokenizerSpec::resolve(&tokenizer_model),
            vocab: raw.model.codebook_size.unwrap_or(8192),
        })
    }

    /// Tokenizer training: the codebook and the unlabelled windows.
    fn tokenizer(
        &self,
        raw: &RawRunConfig,
        subjects: SubjectSplits,
        patches: usize,
    ) -> Result<TokenizerRun, ConfigError> {
        if let Some(d) = raw.model.ema_decay {
            self.in_unit(
                "model.ema_decay",
                d,
                "use a value in [0, 1) (official 0.99)",
            )?;
        }
        let data = self.unlabelled(&raw.data, subjects, patches)?;
        self.no_classes(&raw.model)?;
        Ok(TokenizerRun {
            data,
            spec: TokenizerSpec::resolve(&raw.model),
        })
    }

    /// The self-supervised stages' sources: a dataset, stores, or both.
    fn unlabelled(
        &self,
        d: &RawData,
        subjects: SubjectSplits,
        patches: usize,
    ) -> Result<Unlabelled, ConfigError> {
        let dataset = d
            .dataset
            .clone()
            .map(|path| SplitDataset { path, subjects });
        let stores = (!d.stores.is_empty()).then(|| StoreWindows {
            paths: d.stores.clone(),
            patches,
        });
        match (dataset, stores) {
            (Some(d), Some(s)) => Ok(Unlabelled::Both(d, s)),
            (Some(d), None) => Ok(Unlabelled::Dataset(d)),
            (None, Some(s)) => Ok(Unlabelled::Stores(s)),
            (None, None) => Err(self.bad(
                "data.stores",
                "empty",
                "list HDF5 stores written by `make-dataset pretrain`, or name a `data.dataset` whose train subjects are used unlabelled",
            )),
        }
    }

    /// Only fine-tuning has classes.
    fn no_classes(&self, m: &RawModel) -> Result<(), ConfigError> {
        match m.num_classes {
            None => Ok(()),
            k => Err(self.bad(
                "model.num_classes",
                format!("{k:?}"),
                "only fine-tuning has classes; remove the key",
            )),
        }
    }
}

/// Why a subject list does not expand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubjectError {
    #[error("a range is `Name00..=Name21`: both ends need the same prefix and a number of the same width ({from:?} vs {to:?})")]
    Mismatched { from: String, to: String },
    #[error("the range {0:?} is empty or not numeric")]
    EmptyRange(String),
    #[error("empty subject name")]
    EmptyName,
}

/// Expands subject lists: plain names, or inclusive ranges `Prefix00..=Prefix21` whose
/// two ends share the prefix and the width of the number.
pub fn expand_subjects(items: &[String]) -> Result<Vec<String>, SubjectError> {
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
                return Err(SubjectError::Mismatched {
                    from: a.into(),
                    to: b.into(),
                });
            }
            let (lo, hi): (u64, u64) = match (na.parse(), nb.parse()) {
                (Ok(l), Ok(h)) if l <= h => (l, h),
                _ => return Err(SubjectError::EmptyRange(item.clone())),
            };
            let w = na.len();
            out.extend((lo..=hi).map(|i| format!("{pa}{i:0w$}")));
        } else if item.trim().is_empty() {
            return Err(SubjectError::EmptyName);
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

    const PT: &str = r#"
stage: pretrain
model: {variant: tiny}
tokenizer: runs/tok/best/model.safetensors
data: {stores: [a.h5, b.h5], dataset: out/eegmat-causal, train_subjects: [S1]}
train: {epochs: 4, output_dir: runs/p}
optim: {warmup_epochs: 1}
"#;

    const TK: &str = r#"
stage: tokenizer
model: {variant: tiny, codebook_size: 32}
data: {stores: [a.h5], patches: 4}
train: {epochs: 20, output_dir: runs/t}
"#;

    fn p() -> &'static Path {
        Path::new("t.yaml")
    }

    fn raw(text: &str) -> RawRunConfig {
        RawRunConfig::from_yaml(text, p()).unwrap()
    }

    #[test]
    fn defaults_are_the_official_recipe() {
        let c = RunConfig::parse(FT, p(), StageName::Finetune).unwrap();
        let r = c.recipe;
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

    /// Each stage gets its values resolved: no later code defaults anything.
    #[test]
    fn stages_get_typed_values() {
        let c = RunConfig::parse(FT, p(), StageName::Finetune).unwrap();
        let StageConfig::Finetune(f) = &c.stage else {
            panic!("{c:?}")
        };
        assert_eq!(f.data.path, Path::new("out/eegmat-causal"));
        assert_eq!(f.data.subjects.train.len(), 22);
        assert_eq!(
            f.data.subjects.test,
            ["Subject25", "Subject26", "Subject27"]
        );
        assert_eq!(f.num_classes, 2);
        assert_eq!(c.train.select.name, "balanced_accuracy");
        assert!(!c.train.select.lower_is_better);

        let c = RunConfig::parse(PT, p(), StageName::Pretrain).unwrap();
        let StageConfig::Pretrain(pt) = &c.stage else {
            panic!("{c:?}")
        };
        assert_eq!(pt.vocab, 8192);
        assert_eq!(
            (
                pt.tokenizer_spec.codebook_size,
                pt.tokenizer_spec.codebook_dim
            ),
            (64, 16),
            "a tiny tokenizer's official codebook"
        );
        let Unlabelled::Both(d, s) = &pt.data else {
            panic!("{:?}", pt.data)
        };
        assert_eq!(
            (d.subjects.train.as_slice(), s.patches),
            (&["S1".to_string()][..], 8)
        );
        assert_eq!(c.recipe.clip_grad, Some(3.0));

        let c = RunConfig::parse(TK, p(), StageName::Tokenizer).unwrap();
        let StageConfig::Tokenizer(t) = &c.stage else {
            panic!("{c:?}")
        };
        assert_eq!(
            (t.spec.codebook_size, t.spec.codebook_dim, t.spec.ema_decay),
            (32, 16, 0.99)
        );
        assert!(t.spec.kmeans_init);
        assert!(matches!(&t.data, Unlabelled::Stores(s) if s.patches == 4));
        assert!(c.train.select.lower_is_better, "tokenizer selects on loss");
    }

    /// The official tokenizer defaults here are the network's own.
    #[test]
    fn tokenizer_defaults_match_the_network() {
        let n = crate::model::VqnspConfig::new(12, 8192, 64);
        let spec = TokenizerSpec::resolve(&raw(TK).model);
        assert_eq!((spec.ema_decay, spec.kmeans_init), (n.decay, n.kmeans_init));
    }

    /// A checked run written out (config.yaml, state.json) and read back is the same run.
    #[test]
    fn checked_runs_round_trip() {
        for (text, stage) in [
            (FT, StageName::Finetune),
            (PT, StageName::Pretrain),
            (TK, StageName::Tokenizer),
        ] {
            let c = RunConfig::parse(text, p(), stage).unwrap();
            let json = serde_json::to_string(&c).unwrap();
            let back: RunConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c, "{json}");
            let yaml = serde_norway::to_string(&c).unwrap();
            assert_eq!(RunConfig::parse(&yaml, p(), stage).unwrap(), c, "{yaml}");
        }
        // A checkpoint's run file of an older trainer (defaults left out) still reads.
        let old = serde_json::to_string(&raw(FT)).unwrap();
        let c: RunConfig = serde_json::from_str(&old).unwrap();
        assert_eq!(c, RunConfig::parse(FT, p(), StageName::Finetune).unwrap());
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
        let e = RawRunConfig::from_yaml(&unknown, p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("batchsize") && e.contains("t.yaml"), "{e}");

        let overlap = FT.replace("[Subject25, Subject26, Subject27]", "[Subject24]");
        let e = raw(&overlap)
            .check(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.val_subjects") && e.contains("Subject24"),
            "{e}"
        );

        let e = raw(FT)
            .check(p(), StageName::Pretrain)
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
        let e = raw(&betas)
            .check(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("optim.betas[1]") && e.contains("1.5"), "{e}");

        let warm = FT.replace("{warmup_epochs: 1}", "{warmup_epochs: 4}");
        let e = raw(&warm)
            .check(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("optim.warmup_epochs") && e.contains("shorter"),
            "{e}"
        );

        let noclass = FT.replace(", num_classes: 2", "");
        let e = raw(&noclass)
            .check(p(), StageName::Finetune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.num_classes"), "{e}");

        let nodata = PT.replace(
            "{stores: [a.h5, b.h5], dataset: out/eegmat-causal, train_subjects: [S1]}",
            "{}",
        );
        let e = raw(&nodata)
            .check(p(), StageName::Pretrain)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.stores") && e.contains("data.dataset"),
            "{e}"
        );
    }
}
