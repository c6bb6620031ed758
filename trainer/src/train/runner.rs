//! The training loop shared by the three stages.
//!
//! A stage ([`Stage`]) says how to compute the loss of a batch and how to evaluate;
//! the runner owns everything else: the per-step schedules (the official engines set
//! every group's lr to `schedule[it] · lr_scale` and the decay groups' weight decay to
//! `wd_schedule[it]` before each step), AdamW, clipping, the seeded data order,
//! checkpoints and resume, Ctrl-C, the log, the plots, the best checkpoint and the
//! final test.
//!
//! Exactness of `--resume`: the only state that evolves during a run is the weights
//! and buffers (saved), the AdamW moments and step counts (saved), the position
//! (epoch, step within it, global step: saved) and the best validation so far (saved).
//! Randomness is a pure function of (seed, epoch) for the data order and of
//! (seed, global step) for torch (drop path, masking, k-means): see [`super::rng`].
//! An interrupted run resumed from its checkpoint therefore replays exactly the
//! computations of an uninterrupted one (a test compares the final weights byte for byte).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};
use tch::{nn::VarStore, Tensor};

use super::config::RunConfig;
use super::logbook::{epoch_bar, Logbook};
use super::optim::{clip_grad_norm, group_for, AdamW, AdamWConfig};
use super::rng::{epoch_order, seed_torch_for_step};
use super::schedule::{Cosine, ScheduleError};
use super::state::{self, Best, Loaded, RunState, StateError, FORMAT};

/// Metrics of an evaluation, by name (`loss`, `balanced_accuracy`, …).
pub type Metrics = BTreeMap<String, f64>;

/// A boxed error from a stage (model or data problems).
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the training split has {samples} samples, fewer than one batch of {batch}: lower `train.batch_size` or add subjects to `data.train_subjects`")]
    TooFewSamples { samples: usize, batch: usize },
    #[error("loss is {value} at step {step} (epoch {epoch}): training diverged; lower `optim.lr`, or set `optim.clip_grad`")]
    NonFinite { value: f64, step: u64, epoch: usize },
    #[error("the checkpoint was written by `{found}`, not `{expected}`: resume it with `labram-trainer {found}`")]
    WrongStage { found: String, expected: String },
    #[error("cannot write the run file out as YAML: {0}")]
    ConfigYaml(#[source] serde_norway::Error),
    #[error("cannot write metrics.json: {0}")]
    MetricsJson(#[source] serde_json::Error),
    #[error("{0}")]
    Stage(StageError),
}

/// What a stage provides to the loop.
pub trait Stage {
    /// Every variable (weights and buffers) of the trained model.
    fn var_store(&self) -> &VarStore;
    /// The trainable parameters with their official names (for groups and the log).
    fn trainable(&self) -> Vec<(String, Tensor)>;
    /// Number of transformer blocks, for layer-wise LR decay.
    fn num_layers(&self) -> usize;
    /// Number of training samples.
    fn train_len(&self) -> usize;
    /// The batches of `epoch` (sample indices). The default shuffles all samples with
    /// the seeded order and drops the last incomplete batch; the count must be the
    /// same for every epoch.
    fn epoch_batches(&self, seed: u64, epoch: usize, batch: usize) -> Vec<Vec<usize>> {
        epoch_order(seed, epoch, self.train_len())
            .chunks_exact(batch.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }
    /// Loss of the training samples `indices` in train mode (with graph), plus scalars
    /// to log (e.g. masked accuracy).
    fn train_loss(&mut self, indices: &[usize])
        -> Result<(Tensor, Vec<(String, f64)>), StageError>;
    /// Metrics on the validation split (None when there is none).
    fn validate(&mut self) -> Result<Option<Metrics>, StageError>;
    /// Metrics on the test split with the current weights (None when there is none).
    fn test(&mut self) -> Result<Option<Metrics>, StageError>;
}

/// Options of one invocation.
pub struct RunOptions {
    /// Where checkpoints, the log and plots go (normally `train.output_dir`).
    pub run_dir: PathBuf,
    /// A checkpoint to continue from.
    pub resume: Option<Loaded>,
    /// Stop (with a checkpoint, as Ctrl-C) once this many global steps are done.
    pub stop_after_steps: Option<u64>,
    /// Draw plots (off in tests that only compare weights).
    pub plots: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// All epochs done; `metrics` is what `metrics.json` holds.
    Finished { metrics: Value, run_dir: PathBuf },
    /// Stopped by Ctrl-C (or `stop_after_steps`); resume from `checkpoint`.
    Interrupted { checkpoint: PathBuf },
}

/// The process-wide Ctrl-C flag. The first call installs the handler: the first SIGINT
/// asks the loop to checkpoint and stop after the current step; a second one exits at once.
pub fn interrupt_flag() -> &'static AtomicBool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let r = ctrlc::set_handler(|| {
            if FLAG.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: finishing this step, saving a checkpoint, then exiting (Ctrl-C again to abort)");
        });
        if let Err(e) = r {
            tracing::warn!("cannot install the Ctrl-C handler ({e}); Ctrl-C will not save a checkpoint");
        }
    });
    &FLAG
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn better(lower: bool, new: f64, old: f64) -> bool {
    if lower {
        new < old
    } else {
        new > old
    }
}

fn metrics_json(m: &Metrics) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// What one optimisation step reports.
pub struct StepReport {
    pub loss: f64,
    pub grad_norm: f64,
    pub extras: Vec<(String, f64)>,
}

/// One optimisation step of the official engines: zero the gradients, loss of the
/// batch, backward, gradient norm (clipped with `clip`), AdamW step with the scheduled
/// `lr` and weight decay `wd`. The caller seeds torch first (see [`super::rng`]).
pub fn train_step(
    stage: &mut dyn Stage,
    opt: &mut AdamW,
    indices: &[usize],
    lr: f64,
    wd: f64,
    clip: Option<f64>,
) -> Result<StepReport, TrainError> {
    opt.zero_grad();
    let (loss, extras) = stage.train_loss(indices).map_err(TrainError::Stage)?;
    let value = loss.double_value(&[]);
    if !value.is_finite() {
        return Err(TrainError::NonFinite {
            value,
            step: 0,
            epoch: 0,
        });
    }
    loss.backward();
    let grad_norm = clip_grad_norm(&opt.grads(), clip);
    opt.step(lr, wd);
    Ok(StepReport {
        loss: value,
        grad_norm,
        extras,
    })
}

/// The optimizer a run builds for a stage: AdamW with the recipe's betas/eps and the
/// official groups (weight-decay exclusions, layer-wise LR decay when `layer_decay < 1`).
pub fn build_optimizer(stage: &dyn Stage, cfg: &RunConfig) -> AdamW {
    let recipe = cfg.recipe;
    let layer_decay = (recipe.layer_decay < 1.0).then(|| (stage.num_layers(), recipe.layer_decay));
    AdamW::new(
        stage.trainable(),
        AdamWConfig {
            beta1: recipe.beta1,
            beta2: recipe.beta2,
            eps: recipe.eps,
        },
        |name, shape| group_for(name, shape, layer_decay),
    )
}

/// Runs (or continues) training. See the module docs.
pub fn run(
    stage: &mut dyn Stage,
    cfg: &RunConfig,
    opts: RunOptions,
) -> Result<Outcome, TrainError> {
    let recipe = cfg.recipe;
    let run_dir = opts.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
    let n = stage.train_len();
    let batch = recipe.batch_size;
    let seed = cfg.train.seed;
    if n < batch {
        return Err(TrainError::TooFewSamples { samples: n, batch });
    }
    // The official train loaders drop the last incomplete batch.
    let mut steps_per_epoch = stage.epoch_batches(seed, 0, batch).len();
    if steps_per_epoch == 0 {
        return Err(TrainError::TooFewSamples { samples: n, batch });
    }
    if let Some(m) = cfg.train.max_steps_per_epoch {
        steps_per_epoch = steps_per_epoch.min(m.max(1));
    }
    let epochs = recipe.epochs;
    let lr = Cosine {
        base: recipe.lr,
        final_value: recipe.min_lr,
        epochs,
        steps_per_epoch,
        warmup_epochs: recipe.warmup_epochs,
        start_warmup: recipe.warmup_lr,
        warmup_steps: recipe.warmup_steps,
    }
    .table()?;
    let wd = Cosine {
        base: recipe.weight_decay,
        final_value: recipe.weight_decay_end,
        epochs,
        steps_per_epoch,
        warmup_epochs: 0,
        start_warmup: 0.0,
        warmup_steps: None,
    }
    .table()?;

    let mut opt = build_optimizer(stage, cfg);
    let (select, lower) = (
        cfg.train.select.name.clone(),
        cfg.train.select.lower_is_better,
    );

    let (mut epoch, mut start_step, mut global_step, mut best) = (0usize, 0usize, 0u64, None);
    let mut resumed_loss = None;
    let mut logbook;
    if let Some(l) = &opts.resume {
        if l.state.stage != cfg.stage.name() {
            return Err(TrainError::WrongStage {
                found: l.state.stage.command().into(),
                expected: cfg.stage.name().command().into(),
            });
        }
        state::load_into(stage.var_store(), &l.model, &l.dir)?;
        opt.load_state(&l.optimizer, &l.state.optimizer_steps)
            .map_err(|e| {
                TrainError::State(StateError::NotACheckpoint {
                    path: l.dir.clone(),
                    why: e.to_string(),
                })
            })?;
        epoch = l.state.epoch;
        start_step = l.state.step_in_epoch;
        global_step = l.state.global_step;
        best = l.state.best.clone();
        resumed_loss = Some((l.state.epoch_loss_sum, l.state.epoch_loss_count));
        logbook = Logbook::open(&run_dir, Some(global_step)).map_err(io_err(&run_dir))?;
        logbook
            .record(
                "event",
                epoch,
                global_step,
                &[
                    ("event", "resume".into()),
                    ("from", l.dir.display().to_string().into()),
                ],
            )
            .map_err(io_err(logbook.path()))?;
        tracing::info!(
            "resuming {} at epoch {}, step {} of {} (global step {})",
            l.dir.display(),
            epoch + 1,
            start_step,
            steps_per_epoch,
            global_step
        );
    } else {
        logbook = Logbook::open(&run_dir, None).map_err(io_err(&run_dir))?;
        let cp = run_dir.join("config.yaml");
        let yaml = serde_norway::to_string(cfg).map_err(TrainError::ConfigYaml)?;
        std::fs::write(&cp, yaml).map_err(io_err(&cp))?;
        logbook
            .record(
                "event",
                0,
                0,
                &[
                    ("event", "start".into()),
                    ("train_samples", n.into()),
                    ("steps_per_epoch", steps_per_epoch.into()),
                    ("parameters", opt.len().into()),
                ],
            )
            .map_err(io_err(logbook.path()))?;
    }

    let interrupt = interrupt_flag();
    let snapshot = |opt: &AdamW,
                    (epoch, step_in_epoch, global_step): (usize, usize, u64),
                    (epoch_loss_sum, epoch_loss_count): (f64, usize),
                    best: &Option<Best>,
                    reason: &str|
     -> (Vec<(String, Tensor)>, RunState) {
        let (tensors, steps) = opt.state();
        let st = RunState {
            format: FORMAT,
            stage: cfg.stage.name(),
            epoch,
            step_in_epoch,
            global_step,
            epoch_loss_sum,
            epoch_loss_count,
            seed,
            rng_scheme: "data order: ChaCha8(seed, epoch); torch: manual_seed(f(seed, global step)) before every step".into(),
            optimizer_steps: steps,
            best: best.clone(),
            reason: reason.into(),
            config: cfg.clone(),
        };
        (tensors, st)
    };

    while epoch < epochs {
        let batches = stage.epoch_batches(seed, epoch, batch);
        let bar = epoch_bar(steps_per_epoch as u64, epoch, epochs);
        bar.set_position(start_step as u64);
        let (mut loss_sum, mut loss_count) = resumed_loss.take().unwrap_or((0.0, 0));
        for (s, idx) in batches
            .iter()
            .enumerate()
            .take(steps_per_epoch)
            .skip(start_step)
        {
            let t0 = Instant::now();
            seed_torch_for_step(seed, global_step);
            let it = global_step as usize;
            let step = train_step(stage, &mut opt, idx, lr[it], wd[it], recipe.clip_grad).map_err(
                |e| {
                    bar.abandon();
                    match e {
                        TrainError::NonFinite { value, .. } => TrainError::NonFinite {
                            value,
                            step: global_step,
                            epoch,
                        },
                        e => e,
                    }
                },
            )?;
            let (loss_value, grad_norm, extras) = (step.loss, step.grad_norm, step.extras);
            global_step += 1;
            let dt = t0.elapsed().as_secs_f64();
            let rate = batch as f64 / dt.max(1e-9);
            loss_sum += loss_value;
            loss_count += 1;
            let mut fields: Vec<(&str, Value)> = vec![
                ("loss", loss_value.into()),
                ("lr", lr[it].into()),
                ("wd", wd[it].into()),
                ("grad_norm", grad_norm.into()),
                ("samples_per_s", rate.into()),
            ];
            for (k, v) in &extras {
                fields.push((k.as_str(), (*v).into()));
            }
            logbook
                .record("train", epoch, global_step, &fields)
                .map_err(io_err(logbook.path()))?;
            bar.set_message(format!("loss {loss_value:.4} {rate:.1} samples/s"));
            bar.inc(1);

            let stop = opts.stop_after_steps.is_some_and(|m| global_step >= m);
            if interrupt.load(Ordering::SeqCst) || stop {
                bar.abandon();
                let (t, st) = snapshot(
                    &opt,
                    (epoch, s + 1, global_step),
                    (loss_sum, loss_count),
                    &best,
                    "interrupted",
                );
                let dir = state::save(
                    &run_dir,
                    &format!("step-{global_step:07}"),
                    stage.var_store(),
                    &t,
                    &st,
                )?;
                logbook
                    .record(
                        "event",
                        epoch,
                        global_step,
                        &[
                            ("event", "interrupted".into()),
                            ("checkpoint", dir.display().to_string().into()),
                        ],
                    )
                    .map_err(io_err(logbook.path()))?;
                interrupt.store(false, Ordering::SeqCst);
                return Ok(Outcome::Interrupted { checkpoint: dir });
            }
        }
        bar.finish_and_clear();

        // End of epoch: validation, best checkpoint, periodic checkpoint, plots.
        let val = stage.validate().map_err(TrainError::Stage)?;
        let mut fields: Vec<(&str, Value)> = vec![];
        if loss_count > 0 {
            fields.push(("train_loss", (loss_sum / loss_count as f64).into()));
        }
        if let Some(m) = &val {
            for (k, v) in m {
                fields.push((k.as_str(), (*v).into()));
            }
            logbook
                .record("val", epoch, global_step, &fields)
                .map_err(io_err(logbook.path()))?;
            let summary: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            tracing::info!("epoch {}/{}: val {}", epoch + 1, epochs, summary.join(", "));
        }
        let value = val.as_ref().and_then(|m| m.get(&select).copied());
        let improved = match (&best, value) {
            (_, None) => val.is_none(), // no validation: the last epoch is the best
            (None, Some(_)) => true,
            (Some(b), Some(v)) => better(lower, v, b.value),
        };
        if improved {
            best = Some(Best {
                metric: select.clone(),
                value: value.unwrap_or(f64::NAN),
                epoch,
            });
            state::save_weights(
                stage.var_store(),
                &run_dir.join("best").join("model.safetensors"),
            )?;
        }
        epoch += 1;
        start_step = 0;
        if epoch % cfg.train.save_every == 0 || epoch == epochs {
            let reason = if epoch == epochs { "final" } else { "epoch" };
            let (t, st) = snapshot(&opt, (epoch, 0, global_step), (0.0, 0), &best, reason);
            state::save(
                &run_dir,
                &format!("epoch-{epoch:04}"),
                stage.var_store(),
                &t,
                &st,
            )?;
        }
        if opts.plots {
            if let Err(e) = super::plots::plot_run(&run_dir) {
                tracing::warn!("plots not drawn: {e}");
            }
        }
    }

    // Test with the best weights.
    let final_weights = state::named_cpu_tensors(stage.var_store());
    let best_path = run_dir.join("best").join("model.safetensors");
    if best_path.is_file() {
        let t = state::read_tensors(&best_path)?;
        state::load_into(stage.var_store(), &t, &best_path)?;
    }
    let test = stage.test().map_err(TrainError::Stage)?;
    if let Some(m) = &test {
        let fields: Vec<(&str, Value)> = m.iter().map(|(k, v)| (k.as_str(), (*v).into())).collect();
        logbook
            .record("test", epochs.saturating_sub(1), global_step, &fields)
            .map_err(io_err(logbook.path()))?;
    }
    // Leave the model as trained (final weights), whatever the test used.
    state::load_into(stage.var_store(), &final_weights, &run_dir)?;
    let metrics = json!({
        "stage": cfg.stage.name().command(),
        "epochs": epochs,
        "steps": global_step,
        "select_metric": select,
        "best": best,
        "test": test.as_ref().map(metrics_json),
        "best_weights": best_path.is_file().then_some("best/model.safetensors"),
        "final_weights": format!("checkpoints/epoch-{epochs:04}/model.safetensors"),
    });
    let mp = run_dir.join("metrics.json");
    let text = serde_json::to_string_pretty(&metrics).map_err(TrainError::MetricsJson)?;
    std::fs::write(&mp, text).map_err(io_err(&mp))?;
    if opts.plots {
        if let Err(e) = super::plots::plot_run(&run_dir) {
            tracing::warn!("plots not drawn: {e}");
        }
    }
    Ok(Outcome::Finished { metrics, run_dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::{RunConfig, StageName};
    use tch::{nn, nn::Module, Device, Kind};

    /// A small MLP with dropout on synthetic data: exercises the data order, the torch
    /// RNG (dropout), AdamW, clipping, schedules and checkpoints.
    struct Toy {
        vs: nn::VarStore,
        net: nn::Sequential,
        x: Tensor,
        y: Tensor,
    }

    impl Toy {
        fn new() -> Toy {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let p = vs.root();
            let net = nn::seq()
                .add(nn::linear(&p / "fc1", 6, 16, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(&p / "head", 16, 2, Default::default()));
            let x = Tensor::randn([40, 6], (Kind::Float, Device::Cpu));
            let y = x
                .sum_dim_intlist(1, false, Kind::Float)
                .gt(0.0)
                .to_kind(Kind::Int64);
            Toy { vs, net, x, y }
        }
    }

    impl Stage for Toy {
        fn var_store(&self) -> &VarStore {
            &self.vs
        }
        fn trainable(&self) -> Vec<(String, Tensor)> {
            let mut v: Vec<_> = self.vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        fn num_layers(&self) -> usize {
            0
        }
        fn train_len(&self) -> usize {
            40
        }
        fn train_loss(
            &mut self,
            idx: &[usize],
        ) -> Result<(Tensor, Vec<(String, f64)>), StageError> {
            let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let x = self.x.index_select(0, &i).dropout(0.1, true);
            let logits = self.net.forward(&x);
            let l =
                crate::train::losses::label_smoothing_ce(&logits, &self.y.index_select(0, &i), 0.1);
            Ok((l, vec![]))
        }
        fn validate(&mut self) -> Result<Option<Metrics>, StageError> {
            let logits = tch::no_grad(|| self.net.forward(&self.x));
            let acc = crate::train::losses::accuracy(&logits, &self.y).double_value(&[]);
            Ok(Some([("accuracy".to_string(), acc)].into_iter().collect()))
        }
        fn test(&mut self) -> Result<Option<Metrics>, StageError> {
            self.validate()
        }
    }

    fn cfg(dir: &Path) -> RunConfig {
        let y = format!(
            "stage: finetune\nmodel: {{variant: tiny, num_classes: 2}}\ndata: {{dataset: d, train_subjects: [a]}}\n\
             optim: {{warmup_epochs: 1, clip_grad: 1.0, lr: 0.05}}\n\
             train: {{epochs: 3, batch_size: 8, seed: 5, save_every: 2, select_metric: accuracy, output_dir: {}}}\n",
            dir.display()
        );
        RunConfig::parse(&y, Path::new("t.yaml"), StageName::Finetune).unwrap()
    }

    fn weights(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join("checkpoints/epoch-0003/model.safetensors")).unwrap()
    }

    #[test]
    fn interrupted_and_resumed_equals_uninterrupted() {
        let _rng = crate::train::rng::torch_rng_lock();
        let a = tempfile::tempdir().unwrap();
        let c = cfg(a.path());
        let mut toy = Toy::new();
        let out = run(
            &mut toy,
            &c,
            RunOptions {
                run_dir: a.path().into(),
                resume: None,
                stop_after_steps: None,
                plots: false,
            },
        )
        .unwrap();
        assert!(matches!(out, Outcome::Finished { .. }));
        let full = weights(a.path());

        // Interrupt mid-epoch 2 (step 7 of 15), then at an epoch's last step (10).
        let b = tempfile::tempdir().unwrap();
        let c = cfg(b.path());
        for stop in [7u64, 10] {
            let mut toy = Toy::new();
            let resume = (stop > 7).then(|| state::load(b.path()).unwrap());
            let out = run(
                &mut toy,
                &c,
                RunOptions {
                    run_dir: b.path().into(),
                    resume,
                    stop_after_steps: Some(stop),
                    plots: false,
                },
            )
            .unwrap();
            assert!(matches!(out, Outcome::Interrupted { .. }), "{out:?}");
        }
        let mut toy = Toy::new();
        run(
            &mut toy,
            &c,
            RunOptions {
                run_dir: b.path().into(),
                resume: Some(state::load(b.path()).unwrap()),
                stop_after_steps: None,
                plots: false,
            },
        )
        .unwrap();
        assert_eq!(full, weights(b.path()), "resumed weights differ");
        // The logs agree too, apart from the resume/interrupt events.
        let strip = |d: &Path| -> Vec<String> {
            crate::train::logbook::read_records(&d.join("log.jsonl"))
                .unwrap()
                .into_iter()
                .filter(|r| r["kind"] != "event")
                .map(|mut r| {
                    r.remove("samples_per_s");
                    Value::Object(r).to_string()
                })
                .collect()
        };
        assert_eq!(strip(a.path()), strip(b.path()));
        // And a different seed gives different weights (the test can fail).
        let d = tempfile::tempdir().unwrap();
        let mut c2 = cfg(d.path());
        c2.train.seed = 6;
        let mut toy = Toy::new();
        let o = RunOptions {
            run_dir: d.path().into(),
            resume: None,
            stop_after_steps: None,
            plots: false,
        };
        run(&mut toy, &c2, o).unwrap();
        assert_ne!(full, weights(d.path()));
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(a.path().join("metrics.json")).unwrap())
                .unwrap();
        assert!(m["test"]["accuracy"].as_f64().unwrap() > 0.6, "{m}");
    }
}
