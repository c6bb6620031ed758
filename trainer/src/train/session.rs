//! One invocation of `train-tokenizer`, `pretrain` or `finetune`: the run file (or the
//! checkpoint's copy of it), the data, the networks, the initial weights, then the loop.
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::Device;

use super::config::{expand_subjects, ConfigError, RunConfig, StageName};
use super::nets;
use super::runner::{self, Outcome, RunOptions, TrainError};
use super::state::{self, StateError};
use super::windows::{open_splits, WindowError, WindowSet};

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
            if let Some(o) = &opts.output_dir {
                cfg.train.output_dir = o.clone();
            }
            if let Some(s) = opts.seed {
                cfg.train.seed = s;
            }
            if let Some(init) = &opts.init {
                cfg.init = Some(init.clone());
            }
            if let Some(l) = resume {
                let mut a = serde_json::to_value(&cfg).unwrap_or(Value::Null);
                let b = serde_json::to_value(&l.state.config).unwrap_or(Value::Null);
                // The run directory may have moved; it is not part of the recipe.
                for v in [&mut a] {
                    if let Some(t) = v.get_mut("train").and_then(Value::as_object_mut) {
                        t.insert("output_dir".into(), b["train"]["output_dir"].clone());
                    }
                }
                if let Some((key, file, checkpoint)) = first_difference(&a, &b, "") {
                    return Err(SessionError::ConfigDiffers {
                        config: path.clone(),
                        key,
                        file,
                        checkpoint,
                    });
                }
            }
            cfg
        }
        (None, Some(l)) => {
            let cfg = l.state.config.clone();
            cfg.validate(Path::new("<checkpoint state.json>"), stage)?;
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
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cfg.train.output_dir.clone()),
        None => cfg.train.output_dir.clone(),
    };
    Ok((cfg, loaded, run_dir))
}

fn unlabelled_windows(cfg: &RunConfig) -> Result<(WindowSet, Option<WindowSet>), SessionError> {
    let d = &cfg.data;
    let mut train: Option<WindowSet> = None;
    let mut val = None;
    if let Some(path) = &d.dataset {
        let subj = |v: &Vec<String>| expand_subjects(v).unwrap_or_default();
        let (tr, va, te) = (
            subj(&d.train_subjects),
            subj(&d.val_subjects),
            subj(&d.test_subjects),
        );
        let s = open_splits(path, [&tr, &va, &te], false)?;
        train = Some(s.train);
        val = s.val;
        // The test split is never read by self-supervised stages.
    }
    if !d.stores.is_empty() {
        let (set, skipped) = WindowSet::from_stores(&d.stores, d.patches.unwrap_or(8))?;
        for s in &skipped {
            tracing::warn!("left out of the store windows: {s}");
        }
        train = Some(match train {
            Some(t) => t.extend(set),
            None => set,
        });
    }
    let train = train.ok_or_else(|| {
        SessionError::Config(ConfigError::Invalid {
            path: PathBuf::from("<run file>"),
            key: "data".into(),
            value: "no source".into(),
            fix: "set data.dataset or data.stores".into(),
        })
    })?;
    Ok((train, val))
}

fn recipe_balance(cfg: &RunConfig) -> bool {
    cfg.optim.balance_classes
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

/// Runs one stage to the end (or to Ctrl-C).
pub fn run(stage: StageName, opts: &SessionOptions) -> Result<Finished, SessionError> {
    let (cfg, loaded, run_dir) = resolve_config(stage, opts)?;
    if let Some(t) = cfg.train.threads {
        tch::set_num_threads(t);
    }
    let recipe = cfg.recipe();
    let device = opts.device;
    // Initialisation draws from torch's generator: fix it by the run seed.
    tch::manual_seed(super::rng::init_seed(cfg.train.seed));
    let run_opts = RunOptions {
        run_dir: run_dir.clone(),
        resume: loaded,
        stop_after_steps: opts.stop_after_steps,
        plots: opts.plots,
    };
    let resuming = run_opts.resume.is_some();
    let outcome = match stage {
        StageName::Finetune => {
            let d = &cfg.data;
            let subj = |v: &Vec<String>| expand_subjects(v).unwrap_or_default();
            let (tr, va, te) = (
                subj(&d.train_subjects),
                subj(&d.val_subjects),
                subj(&d.test_subjects),
            );
            let path = d.dataset.clone().unwrap_or_default();
            let splits = open_splits(&path, [&tr, &va, &te], true)?;
            let k = cfg.model.num_classes.unwrap_or(2);
            if k > 1 && k as usize != splits.classes.len() {
                return Err(SessionError::Config(ConfigError::Invalid {
                    path: opts.config.clone().unwrap_or_default(),
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
            let (net, params) = nets::finetune(&cfg.model, &recipe, k, device)?;
            if !resuming {
                if let Some(init) = &cfg.init {
                    let report = nets::init_finetune(&params, init)?;
                    tracing::info!("initialised from {}: {report}", init.display());
                }
            }
            let class_weights = recipe_balance(&cfg).then(|| {
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
                smoothing: recipe.label_smoothing,
                batch: recipe.batch_size,
                device,
                last_test: vec![],
            };
            runner::run(&mut s, &cfg, run_opts)?
        }
        StageName::Pretrain => {
            let (train, val) = unlabelled_windows(&cfg)?;
            let tok_cfg = cfg.tokenizer_model.clone().unwrap_or_else(|| {
                let mut m = cfg.model.clone();
                m.codebook_size = None;
                m.codebook_dim = None;
                m
            });
            let tok_path = cfg.tokenizer.clone().unwrap_or_default();
            let tokenizer = nets::frozen_tokenizer(&tok_cfg, &tok_path, device)?;
            let (net, params, vocab) = nets::mem(&cfg.model, &recipe, device)?;
            if !resuming {
                if let Some(init) = &cfg.init {
                    nets::init_strict(&params, init)?;
                    tracing::info!("initialised from {}", init.display());
                }
            }
            let mut s = super::stages::Pretrain {
                net,
                params,
                tokenizer,
                train,
                val,
                mask_ratio: recipe.mask_ratio,
                batch: recipe.batch_size,
                device,
                vocab,
            };
            runner::run(&mut s, &cfg, run_opts)?
        }
        StageName::Tokenizer => {
            let (train, val) = unlabelled_windows(&cfg)?;
            let (net, params) = nets::tokenizer(&cfg.model, device)?;
            if !resuming {
                if let Some(init) = &cfg.init {
                    nets::init_strict(&params, init)?;
                    tracing::info!("initialised from {}", init.display());
                }
            }
            let mut s = super::stages::Tokenizer {
                net,
                params,
                train,
                val,
                batch: recipe.batch_size,
                device,
            };
            runner::run(&mut s, &cfg, run_opts)?
        }
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
