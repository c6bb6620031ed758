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
    let run_dir = opts.run_dir.as_path();
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let mut run = match &opts.resume {
        Some(from) => Loop::resume_from(stage, cfg, run_dir, from)?,
        None => Loop::start(stage, cfg, run_dir)?,
    };
    let interrupt = interrupt_flag();
    let stop = |global_step: u64| {
        interrupt.load(Ordering::SeqCst) || opts.stop_after_steps.is_some_and(|m| global_step >= m)
    };
    while !run.done() {
        if let Some(checkpoint) = run.epoch(stop)? {
            interrupt.store(false, Ordering::SeqCst);
            return Ok(Outcome::Interrupted { checkpoint });
        }
        run.end_epoch(opts.plots)?;
    }
    run.finish(opts.plots)
}

/// How a run's torch and data randomness is derived, recorded in every checkpoint.
const RNG_SCHEME: &str =
    "data order: ChaCha8(seed, epoch); torch: manual_seed(f(seed, global step)) before every step";

/// What stays fixed for a whole run: sizes, seed and the per-step schedules.
struct Plan {
    epochs: usize,
    steps_per_epoch: usize,
    batch: usize,
    seed: u64,
    clip: Option<f64>,
    /// Learning rate and weight decay of every global step (the official engines set
    /// them before each step).
    lr: Vec<f64>,
    wd: Vec<f64>,
}

impl Plan {
    fn new(stage: &dyn Stage, cfg: &RunConfig) -> Result<Plan, TrainError> {
        let recipe = &cfg.recipe;
        let (n, batch, seed) = (stage.train_len(), recipe.batch_size, cfg.train.seed);
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
        Ok(Plan {
            epochs,
            steps_per_epoch,
            batch,
            seed,
            clip: recipe.clip_grad,
            lr,
            wd,
        })
    }
}

/// Where a run stands: besides the weights and the optimizer, all that evolves, and
/// so all that a checkpoint saves to continue bit for bit.
#[derive(Debug, Clone, Default)]
struct Position {
    /// The epoch in progress (0-based) and the steps of it done.
    epoch: usize,
    step_in_epoch: usize,
    /// Steps done since the start of the run.
    global_step: u64,
    /// Sum and count of the training losses of the epoch in progress.
    loss_sum: f64,
    loss_count: usize,
    best: Option<Best>,
}

impl Position {
    fn of(s: &RunState) -> Position {
        Position {
            epoch: s.epoch,
            step_in_epoch: s.step_in_epoch,
            global_step: s.global_step,
            loss_sum: s.epoch_loss_sum,
            loss_count: s.epoch_loss_count,
            best: s.best.clone(),
        }
    }

    /// To the start of the next epoch.
    fn next_epoch(&mut self) {
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.loss_sum = 0.0;
        self.loss_count = 0;
    }
}

/// The training loop of one invocation: the stage, its optimizer, the plan and the
/// position, and the run directory's log.
struct Loop<'a> {
    stage: &'a mut dyn Stage,
    cfg: &'a RunConfig,
    run_dir: &'a Path,
    plan: Plan,
    opt: AdamW,
    pos: Position,
    logbook: Logbook,
}

impl<'a> Loop<'a> {
    /// A new run: a fresh log and the resolved run file (`config.yaml`) in `run_dir`.
    fn start(
        stage: &'a mut dyn Stage,
        cfg: &'a RunConfig,
        run_dir: &'a Path,
    ) -> Result<Loop<'a>, TrainError> {
        let plan = Plan::new(stage, cfg)?;
        let opt = build_optimizer(stage, cfg);
        let logbook = Logbook::open(run_dir, None).map_err(io_err(run_dir))?;
        let cp = run_dir.join("config.yaml");
        let yaml = serde_norway::to_string(cfg).map_err(TrainError::ConfigYaml)?;
        std::fs::write(&cp, yaml).map_err(io_err(&cp))?;
        let mut run = Loop {
            stage,
            cfg,
            run_dir,
            plan,
            opt,
            pos: Position::default(),
            logbook,
        };
        let fields = [
            ("event", "start".into()),
            ("train_samples", run.stage.train_len().into()),
            ("steps_per_epoch", run.plan.steps_per_epoch.into()),
            ("parameters", run.opt.len().into()),
        ];
        run.log("event", 0, 0, &fields)?;
        Ok(run)
    }

    /// Continues the checkpoint `from`: its weights, optimizer moments and position;
    /// the log is cut back to the checkpoint's step.
    fn resume_from(
        stage: &'a mut dyn Stage,
        cfg: &'a RunConfig,
        run_dir: &'a Path,
        from: &Loaded,
    ) -> Result<Loop<'a>, TrainError> {
        let plan = Plan::new(stage, cfg)?;
        let mut opt = build_optimizer(stage, cfg);
        if from.state.stage != cfg.stage.name() {
            return Err(TrainError::WrongStage {
                found: from.state.stage.command().into(),
                expected: cfg.stage.name().command().into(),
            });
        }
        state::load_into(stage.var_store(), &from.model, &from.dir)?;
        opt.load_state(&from.optimizer, &from.state.optimizer_steps)
            .map_err(|e| {
                TrainError::State(StateError::NotACheckpoint {
                    path: from.dir.clone(),
                    why: e.to_string(),
                })
            })?;
        let pos = Position::of(&from.state);
        let logbook = Logbook::open(run_dir, Some(pos.global_step)).map_err(io_err(run_dir))?;
        let mut run = Loop {
            stage,
            cfg,
            run_dir,
            plan,
            opt,
            pos,
            logbook,
        };
        let (epoch, step) = (run.pos.epoch, run.pos.global_step);
        let fields = [
            ("event", "resume".into()),
            ("from", from.dir.display().to_string().into()),
        ];
        run.log("event", epoch, step, &fields)?;
        tracing::info!(
            "resuming {} at epoch {}, step {} of {} (global step {})",
            from.dir.display(),
            epoch + 1,
            run.pos.step_in_epoch,
            run.plan.steps_per_epoch,
            step
        );
        Ok(run)
    }

    fn done(&self) -> bool {
        self.pos.epoch >= self.plan.epochs
    }

    /// Appends a record to the run's log.
    fn log(
        &mut self,
        kind: &str,
        epoch: usize,
        step: u64,
        fields: &[(&str, Value)],
    ) -> Result<(), TrainError> {
        self.logbook
            .record(kind, epoch, step, fields)
            .map_err(io_err(self.logbook.path()))
    }

    /// The remaining steps of the epoch in progress. When `stop(global step)` asks for
    /// it after a step, writes a checkpoint and returns it.
    fn epoch(&mut self, stop: impl Fn(u64) -> bool) -> Result<Option<PathBuf>, TrainError> {
        let plan = &self.plan;
        let batches = self
            .stage
            .epoch_batches(plan.seed, self.pos.epoch, plan.batch);
        let bar = epoch_bar(plan.steps_per_epoch as u64, self.pos.epoch, plan.epochs);
        bar.set_position(self.pos.step_in_epoch as u64);
        let steps = batches
            .iter()
            .take(plan.steps_per_epoch)
            .skip(self.pos.step_in_epoch);
        for indices in steps {
            let (loss, rate) = self.step(indices).inspect_err(|_| bar.abandon())?;
            bar.set_message(format!("loss {loss:.4} {rate:.1} samples/s"));
            bar.inc(1);
            if stop(self.pos.global_step) {
                bar.abandon();
                return self.interrupted().map(Some);
            }
        }
        bar.finish_and_clear();
        Ok(None)
    }

    /// One optimisation step on the training samples `indices`, logged; returns the
    /// loss and the samples per second.
    fn step(&mut self, indices: &[usize]) -> Result<(f64, f64), TrainError> {
        let t0 = Instant::now();
        let (epoch, global_step) = (self.pos.epoch, self.pos.global_step);
        seed_torch_for_step(self.plan.seed, global_step);
        let it = global_step as usize;
        let (lr, wd) = (self.plan.lr[it], self.plan.wd[it]);
        let step = train_step(
            &mut *self.stage,
            &mut self.opt,
            indices,
            lr,
            wd,
            self.plan.clip,
        )
        .map_err(|e| match e {
            TrainError::NonFinite { value, .. } => TrainError::NonFinite {
                value,
                step: global_step,
                epoch,
            },
            e => e,
        })?;
        self.pos.global_step += 1;
        self.pos.step_in_epoch += 1;
        let rate = self.plan.batch as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        self.pos.loss_sum += step.loss;
        self.pos.loss_count += 1;
        let mut fields: Vec<(&str, Value)> = vec![
            ("loss", step.loss.into()),
            ("lr", lr.into()),
            ("wd", wd.into()),
            ("grad_norm", step.grad_norm.into()),
            ("samples_per_s", rate.into()),
        ];
        for (k, v) in &step.extras {
            fields.push((k.as_str(), (*v).into()));
        }
        self.log("train", epoch, self.pos.global_step, &fields)?;
        Ok((step.loss, rate))
    }

    /// Writes the checkpoint `checkpoints/<name>` of the current position.
    fn checkpoint(&self, name: &str, reason: &str) -> Result<PathBuf, TrainError> {
        let (tensors, optimizer_steps) = self.opt.state();
        let p = &self.pos;
        let st = RunState {
            format: FORMAT,
            stage: self.cfg.stage.name(),
            epoch: p.epoch,
            step_in_epoch: p.step_in_epoch,
            global_step: p.global_step,
            epoch_loss_sum: p.loss_sum,
            epoch_loss_count: p.loss_count,
            seed: self.plan.seed,
            rng_scheme: RNG_SCHEME.into(),
            optimizer_steps,
            best: p.best.clone(),
            reason: reason.into(),
            config: self.cfg.clone(),
        };
        let vs = self.stage.var_store();
        Ok(state::save(self.run_dir, name, vs, &tensors, &st)?)
    }

    /// A checkpoint in mid-epoch (Ctrl-C or `stop_after_steps`), logged.
    fn interrupted(&mut self) -> Result<PathBuf, TrainError> {
        let (epoch, step) = (self.pos.epoch, self.pos.global_step);
        let dir = self.checkpoint(&format!("step-{step:07}"), "interrupted")?;
        let fields = [
            ("event", "interrupted".into()),
            ("checkpoint", dir.display().to_string().into()),
        ];
        self.log("event", epoch, step, &fields)?;
        Ok(dir)
    }

    /// End of an epoch: validation, the best weights, the periodic checkpoint, plots.
    fn end_epoch(&mut self, plots: bool) -> Result<(), TrainError> {
        let val = self.stage.validate().map_err(TrainError::Stage)?;
        if let Some(m) = &val {
            self.log_validation(m)?;
        }
        self.keep_if_best(val.as_ref())?;
        self.pos.next_epoch();
        let epoch = self.pos.epoch;
        let last = epoch == self.plan.epochs;
        if epoch.is_multiple_of(self.cfg.train.save_every) || last {
            let reason = if last { "final" } else { "epoch" };
            self.checkpoint(&format!("epoch-{epoch:04}"), reason)?;
        }
        if plots {
            draw_plots(self.run_dir);
        }
        Ok(())
    }

    /// Logs the epoch's validation metrics with its mean training loss.
    fn log_validation(&mut self, m: &Metrics) -> Result<(), TrainError> {
        let p = &self.pos;
        let mut fields: Vec<(&str, Value)> = vec![];
        if p.loss_count > 0 {
            fields.push(("train_loss", (p.loss_sum / p.loss_count as f64).into()));
        }
        for (k, v) in m {
            fields.push((k.as_str(), (*v).into()));
        }
        let (epoch, step) = (p.epoch, p.global_step);
        self.log("val", epoch, step, &fields)?;
        let summary: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        tracing::info!(
            "epoch {}/{}: val {}",
            epoch + 1,
            self.plan.epochs,
            summary.join(", ")
        );
        Ok(())
    }

    /// Saves the weights as `best/` when the selection metric improved (without
    /// validation, every epoch is the best so far).
    fn keep_if_best(&mut self, val: Option<&Metrics>) -> Result<(), TrainError> {
        let select = &self.cfg.train.select;
        let value = val.and_then(|m| m.get(&select.name).copied());
        let improved = match (&self.pos.best, value) {
            (_, None) => val.is_none(),
            (None, Some(_)) => true,
            (Some(b), Some(v)) => better(select.lower_is_better, v, b.value),
        };
        if improved {
            self.pos.best = Some(Best {
                metric: select.name.clone(),
                value: value.unwrap_or(f64::NAN),
                epoch: self.pos.epoch,
            });
            state::save_weights(self.stage.var_store(), &best_weights(self.run_dir))?;
        }
        Ok(())
    }

    /// The test split with the best weights (the model is left with the final ones),
    /// then `metrics.json` and the plots.
    fn finish(mut self, plots: bool) -> Result<Outcome, TrainError> {
        let test = self.test_best()?;
        let epochs = self.plan.epochs;
        let best_path = best_weights(self.run_dir);
        let metrics = json!({
            "stage": self.cfg.stage.name().command(),
            "epochs": epochs,
            "steps": self.pos.global_step,
            "select_metric": self.cfg.train.select.name,
            "best": self.pos.best,
            "test": test.as_ref().map(metrics_json),
            "best_weights": best_path.is_file().then_some("best/model.safetensors"),
            "final_weights": format!("checkpoints/epoch-{epochs:04}/model.safetensors"),
        });
        let mp = self.run_dir.join("metrics.json");
        let text = serde_json::to_string_pretty(&metrics).map_err(TrainError::MetricsJson)?;
        std::fs::write(&mp, text).map_err(io_err(&mp))?;
        if plots {
            draw_plots(self.run_dir);
        }
        Ok(Outcome::Finished {
            metrics,
            run_dir: self.run_dir.to_path_buf(),
        })
    }

    /// Test metrics of the best weights (when there are any), logged; the final
    /// weights are put back afterwards.
    fn test_best(&mut self) -> Result<Option<Metrics>, TrainError> {
        let final_weights = state::named_cpu_tensors(self.stage.var_store());
        let best_path = best_weights(self.run_dir);
        if best_path.is_file() {
            let t = state::read_tensors(&best_path)?;
            state::load_into(self.stage.var_store(), &t, &best_path)?;
        }
        let test = self.stage.test().map_err(TrainError::Stage)?;
        if let Some(m) = &test {
            let fields: Vec<(&str, Value)> =
                m.iter().map(|(k, v)| (k.as_str(), (*v).into())).collect();
            let (epoch, step) = (self.plan.epochs.saturating_sub(1), self.pos.global_step);
            self.log("test", epoch, step, &fields)?;
        }
        state::load_into(self.stage.var_store(), &final_weights, self.run_dir)?;
        Ok(test)
    }
}

/// Where the best weights of a run go.
fn best_weights(run_dir: &Path) -> PathBuf {
    run_dir.join("best").join("model.safetensors")
}

/// Draws the run's plots; a failure is only warned about (the run itself is fine).
fn draw_plots(run_dir: &Path) {
    if let Err(e) = super::plots::plot_run(run_dir) {
        tracing::warn!("plots not drawn: {e}");
    }
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
