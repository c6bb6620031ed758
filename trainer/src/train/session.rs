//! One invocation of `train-tokenizer`, `pretrain` or `finetune`: the run file (or the
//! checkpoint's copy of it), the data, the networks, the initial weights, then the loop.
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::Device;

use super::config::{
    ConfigError, FinetuneRun, PretrainRun, RunConfig, SplitDataset, StageConfig, StageName,
    StoreWindows, TokenizerRun, Unlabelled, CHECKPOINT_SOURCE,
};
use super::nets;
use super::runner::{self, Outcome, RunOptions, TrainError};
use super::state::{self, StateError};
use super::windows::{self, open_splits, WindowError, WindowSet};

/// Errors of a session, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Windows(#[from] WindowError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Net(#[from] nets::NetError),
    #[error("cannot write out {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("pass --config <run file> (or --resume <checkpoint> to continue a run)")]
    NoConfig,
    #[error("{config} differs from the run being resumed at `{key}` ({file} vs {checkpoint}): resume without --config to continue the run as it was, or start a new run")]
    ConfigDiffers {
        config: PathBuf,
        key: String,
        file: String,
        checkpoint: String,
    },
}

/// Command-line choices that complete the run file.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub config: Option<PathBuf>,
    pub device: Device,
    pub resume: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub seed: Option<u64>,
    pub stop_after_steps: Option<u64>,
    pub plots: bool,
}

/// First differing key between two JSON values, with both values.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_difference(va, vb, &p) {
                    return Some(d);
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

/// The run file and the checkpoint to resume, with command-line overrides applied.
pub fn resolve_config(
    stage: StageName,
    opts: &SessionOptions,
) -> Result<(RunConfig, Option<state::Loaded>, PathBuf), SessionError> {
    let loaded = match &opts.resume {
        Some(p) => Some(state::load(p)?),
        None => None,
    };
    let cfg = match (&opts.config, &loaded) {
        (Some(path), resume) => {
            let mut cfg = RunConfig::load(path, stage)?;
            apply_overrides(&mut cfg, opts);
            if let Some(l) = resume {
                same_run(path, &cfg, &l.state.config)?;
            }
            cfg
        }
        (None, Some(l)) => {
            let cfg = l.state.config.clone();
            cfg.expect_stage(Path::new(CHECKPOINT_SOURCE), stage)?;
            cfg
        }
        (None, None) => return Err(SessionError::NoConfig),
    };
    // A resumed run continues in the directory that holds its checkpoint.
    let run_dir = match &loaded {
        Some(l) => l
            .dir
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| cfg.train.output_dir.clone(), Path::to_path_buf),
        None => cfg.train.output_dir.clone(),
    };
    Ok((cfg, loaded, run_dir))
}

/// `--output-dir`, `--seed` and `--init` replace the run file's values.
fn apply_overrides(cfg: &mut RunConfig, opts: &SessionOptions) {
    if let Some(o) = &opts.output_dir {
        cfg.train.output_dir = o.clone();
    }
    if let Some(s) = opts.seed {
        cfg.train.seed = s;
    }
    if let Some(init) = &opts.init {
        cfg.init = Some(init.clone());
    }
}

/// Refuses to continue a checkpoint with a run file (`path`, checked as `cfg`) that
/// differs from the checkpoint's own (`checkpoint`), naming the first key that differs.
/// Both are compared as written out with every default, so a key left out and the same
/// key set to its official value agree; the run directory may have moved.
fn same_run(path: &Path, cfg: &RunConfig, checkpoint: &RunConfig) -> Result<(), SessionError> {
    let json = |c: &RunConfig| {
        serde_json::to_value(c).map_err(|source| SessionError::Serialize {
            what: "the run file",
            source,
        })
    };
    let (mut a, b) = (json(cfg)?, json(checkpoint)?);
    if let Some(t) = a.get_mut("train").and_then(Value::as_object_mut) {
        t.insert("output_dir".into(), b["train"]["output_dir"].clone());
    }
    match first_difference(&a, &b, "") {
        None => Ok(()),
        Some((key, file, checkpoint)) => Err(SessionError::ConfigDiffers {
            config: path.to_path_buf(),
            key,
            file,
            checkpoint,
        }),
    }
}

/// The path that errors about the run's config name: the run file, or the
/// checkpoint's copy of it.
fn config_source(opts: &SessionOptions) -> PathBuf {
    opts.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(CHECKPOINT_SOURCE))
}

/// The train and val windows of a dataset's subjects (the test split is never read by
/// the self-supervised stages).
fn dataset_windows(
    d: &SplitDataset,
    labelled_train: bool,
) -> Result<windows::Splits, SessionError> {
    let s = &d.subjects;
    Ok(open_splits(
        &d.path,
        [&s.train, &s.val, &s.test],
        labelled_train,
    )?)
}

/// Consecutive windows of every usable recording of the stores.
fn store_windows(s: &StoreWindows) -> Result<WindowSet, SessionError> {
    let (set, skipped) = WindowSet::from_stores(&s.paths, s.patches)?;
    for s in &skipped {
        tracing::warn!("left out of the store windows: {s}");
    }
    Ok(set)
}

/// The unlabelled train and val windows of a self-supervised stage.
fn unlabelled_windows(src: &Unlabelled) -> Result<(WindowSet, Option<WindowSet>), SessionError> {
    Ok(match src {
        Unlabelled::Dataset(d) => {
            let s = dataset_windows(d, false)?;
            (s.train, s.val)
        }
        Unlabelled::Stores(st) => (store_windows(st)?, None),
        Unlabelled::Both(d, st) => {
            let s = dataset_windows(d, false)?;
            (s.train.extend(store_windows(st)?), s.val)
        }
    })
}

/// What a finished session reports.
#[derive(Debug)]
pub enum Finished {
    Done {
        run_dir: PathBuf,
        metrics: Value,
        config: Box<RunConfig>,
    },
    Interrupted {
        checkpoint: PathBuf,
    },
}

/// What every stage's set-up needs besides its own settings.
struct Setup<'a> {
    cfg: &'a RunConfig,
    opts: &'a SessionOptions,
    device: Device,
    /// Continuing a checkpoint: its weights replace any initial ones.
    resuming: bool,
}

/// Runs one stage to the end (or to Ctrl-C).
pub fn run(stage: StageName, opts: &SessionOptions) -> Result<Finished, SessionError> {
    let (cfg, loaded, run_dir) = resolve_config(stage, opts)?;
    if let Some(t) = cfg.train.threads {
        tch::set_num_threads(t);
    }
    // Initialisation draws from torch's generator: fix it by the run seed.
    tch::manual_seed(super::rng::init_seed(cfg.train.seed));
    let setup = Setup {
        cfg: &cfg,
        opts,
        device: opts.device,
        resuming: loaded.is_some(),
    };
    let run_opts = RunOptions {
        run_dir,
        resume: loaded,
        stop_after_steps: opts.stop_after_steps,
        plots: opts.plots,
    };
    let outcome = match &cfg.stage {
        StageConfig::Finetune(f) => setup.finetune(f, run_opts)?,
        StageConfig::Pretrain(p) => setup.pretrain(p, run_opts)?,
        StageConfig::Tokenizer(t) => setup.tokenizer(t, run_opts)?,
    };
    Ok(match outcome {
        Outcome::Finished { metrics, run_dir } => Finished::Done {
            run_dir,
            metrics,
            config: Box::new(cfg),
        },
        Outcome::Interrupted { checkpoint } => Finished::Interrupted { checkpoint },
    })
}

impl Setup<'_> {
    /// The run file's initial weights, unless a checkpoint is being resumed.
    fn init(&self) -> Option<&Path> {
        self.cfg.init.as_deref().filter(|_| !self.resuming)
    }

    /// Fine-tuning: the labelled splits (their classes must match the head), the
    /// classifier, optional class weights.
    fn finetune(&self, f: &FinetuneRun, run_opts: RunOptions) -> Result<Outcome, SessionError> {
        let (cfg, device) = (self.cfg, self.device);
        let splits = dataset_windows(&f.data, true)?;
        let k = f.num_classes;
        if k > 1 && k as usize != splits.classes.len() {
            return Err(SessionError::Config(ConfigError::Invalid {
                path: config_source(self.opts),
                key: "model.num_classes".into(),
                value: k.to_string(),
                fix: format!(
                    "the dataset has {} classes ({:?}); use {} (or 1 for a single logit with two classes)",
                    splits.classes.len(),
                    splits.classes,
                    splits.classes.len()
                ),
            }));
        }
        let (net, params) = nets::finetune(cfg.variant, &cfg.recipe, k, device)?;
        if let Some(init) = self.init() {
            let report = nets::init_finetune(&params, init)?;
            tracing::info!("initialised from {}: {report}", init.display());
        }
        let class_weights = f.balance_classes.then(|| {
            let classes = splits.classes.len().max(2);
            let w = super::stages::balanced_class_weights(splits.train.labels(), classes);
            tracing::info!("class weights (inverse frequency): {w:?}");
            tch::Tensor::from_slice(&w).to_device(device)
        });
        let mut s = super::stages::Finetune {
            net,
            params,
            class_weights,
            train: splits.train,
            val: splits.val,
            test: splits.test,
            smoothing: cfg.recipe.label_smoothing,
            batch: cfg.recipe.batch_size,
            device,
            last_test: vec![],
        };
        Ok(runner::run(&mut s, cfg, run_opts)?)
    }

    /// Masked EEG modeling: unlabelled windows, the frozen tokenizer, the MEM network.
    fn pretrain(&self, p: &PretrainRun, run_opts: RunOptions) -> Result<Outcome, SessionError> {
        let (cfg, device) = (self.cfg, self.device);
        let (train, val) = unlabelled_windows(&p.data)?;
        let tokenizer = nets::frozen_tokenizer(&p.tokenizer_spec, &p.tokenizer, device)?;
        let (net, params, vocab) = nets::mem(cfg.variant, p.vocab, &cfg.recipe, device)?;
        if let Some(init) = self.init() {
            nets::init_strict(&params, init)?;
            tracing::info!("initialised from {}", init.display());
        }
        let mut s = super::stages::Pretrain {
            net,
            params,
            tokenizer,
            train,
            val,
            mask_ratio: cfg.recipe.mask_ratio,
            batch: cfg.recipe.batch_size,
            device,
            vocab,
        };
        Ok(runner::run(&mut s, cfg, run_opts)?)
    }

    /// VQ-NSP tokenizer training on unlabelled windows.
    fn tokenizer(&self, t: &TokenizerRun, run_opts: RunOptions) -> Result<Outcome, SessionError> {
        let (cfg, device) = (self.cfg, self.device);
        let (train, val) = unlabelled_windows(&t.data)?;
        let (net, params) = nets::tokenizer(&t.spec, device)?;
        if let Some(init) = self.init() {
            nets::init_strict(&params, init)?;
            tracing::info!("initialised from {}", init.display());
        }
        let mut s = super::stages::Tokenizer {
            net,
            params,
            train,
            val,
            batch: cfg.recipe.batch_size,
            device,
        };
        Ok(runner::run(&mut s, cfg, run_opts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "stage: finetune\nmodel: {variant: tiny, num_classes: 2}\ndata: {dataset: d}\ntrain: {epochs: 4, output_dir: a}\n";

    fn cfg(text: &str) -> RunConfig {
        RunConfig::parse(text, Path::new("t.yaml"), StageName::Finetune).unwrap()
    }

    /// A run file resumes its checkpoint when it states the same run, whatever it
    /// leaves to the defaults and wherever the run directory went; another value is
    /// refused, naming the key.
    #[test]
    fn resuming_compares_the_checked_runs() {
        let p = Path::new("t.yaml");
        let checkpoint = cfg(FILE);
        let explicit = FILE.replace("epochs: 4", "epochs: 4, batch_size: 64");
        same_run(p, &cfg(&explicit), &checkpoint).unwrap();
        same_run(
            p,
            &cfg(&FILE.replace("output_dir: a", "output_dir: b")),
            &checkpoint,
        )
        .unwrap();
        let other = FILE.replace("epochs: 4", "epochs: 4, batch_size: 32");
        let e = same_run(p, &cfg(&other), &checkpoint)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.batch_size") && e.contains("32"), "{e}");
    }
}
