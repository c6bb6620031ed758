//! `labram-trainer train-tokenizer | pretrain | finetune`: run files in, checkpoints,
//! logs, plots and metrics out.
use std::path::PathBuf;

use anyhow::{bail, Context};
use labram_trainer::train::config::StageName;
use labram_trainer::train::session::{self, Finished, SessionOptions};

/// Which command was called (main.rs picks it).
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Tokenizer,
    Pretrain,
    Finetune,
}

impl Stage {
    fn name(self) -> StageName {
        match self {
            Stage::Tokenizer => StageName::Tokenizer,
            Stage::Pretrain => StageName::Pretrain,
            Stage::Finetune => StageName::Finetune,
        }
    }
}

/// Train with the official recipe of the stage, configured by a YAML run file.
///
/// The run directory (`train.output_dir`) receives `checkpoints/` (every
/// `train.save_every` epochs and on Ctrl-C: weights, optimizer moments, state),
/// `best/model.safetensors` (best validation), `log.jsonl`, `loss.png`, `lr.png`,
/// `metrics.png` and `metrics.json` (best validation and test metrics).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  labram-trainer finetune --config configs/train-finetune-eegmat-scratch.yaml\n  labram-trainer finetune --config configs/train-finetune-eegmat-golden.yaml --device cuda\n  labram-trainer finetune --resume runs/eegmat-scratch          # continue after Ctrl-C\n\nCtrl-C saves a checkpoint after the current step and exits; --resume continues the run\nexactly (the same final weights as an uninterrupted run)."
)]
pub struct Args {
    /// YAML run file (see configs/train-*.yaml). Optional with --resume, which reuses the
    /// checkpoint's copy of it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue from a checkpoint directory (…/checkpoints/<name>) or a run directory
    /// (its newest checkpoint).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Initial weights: an official-format .pth (a pretraining checkpoint's `student.*`
    /// weights for fine-tuning; a head of another class count is re-initialised and
    /// reported) or a .safetensors. Overrides the run file's `init`.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Run directory; overrides `train.output_dir`.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Run seed; overrides `train.seed` (data order, masking, drop path, init).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many optimisation steps with a checkpoint, as Ctrl-C does
    /// (time-boxed runs and tests).
    #[arg(long)]
    pub stop_after_steps: Option<u64>,
    /// Do not draw PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// finetune: when the run is finished, export its best weights to this ONNX file,
    /// with a model card (`.yaml` beside it) recording classes, electrodes, window, hop,
    /// preprocessing, data, split, test metrics and the command.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

/// The command as recorded in a model card: file names only, never local paths.
fn recorded_command(command: &str, a: &Args) -> String {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut c = format!("labram-trainer {command}");
    if let Some(p) = &a.config {
        c.push_str(&format!(" --config configs/{}", name(p)));
    }
    if let Some(p) = &a.init {
        c.push_str(&format!(" --init {}", name(p)));
    }
    if let Some(s) = a.seed {
        c.push_str(&format!(" --seed {s}"));
    }
    c.push_str(&format!(" --device {}", a.device));
    c
}

fn parse_device(s: &str) -> anyhow::Result<tch::Device> {
    let d = match s {
        "cpu" => return Ok(tch::Device::Cpu),
        "cuda" => 0,
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => bail!("--device {s:?}: use cpu, cuda or cuda:N"),
        },
    };
    if !tch::Cuda::is_available() {
        bail!("--device {s}: CUDA is not available (no GPU found, or libtorch was built without CUDA); use --device cpu");
    }
    let n = tch::Cuda::device_count() as usize;
    if d >= n {
        bail!(
            "--device {s}: only {n} CUDA device(s) present (cuda:0..cuda:{})",
            n.saturating_sub(1)
        );
    }
    Ok(tch::Device::Cuda(d))
}

pub fn run(stage: Stage, args: Args) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let command = stage.name().command();
    if args.export.is_some() && !matches!(stage, Stage::Finetune) {
        bail!("--export: only `finetune` makes a classifier to export");
    }
    let recorded = recorded_command(command, &args);
    let opts = SessionOptions {
        config: args.config,
        device,
        resume: args.resume,
        init: args.init,
        output_dir: args.output_dir,
        seed: args.seed,
        stop_after_steps: args.stop_after_steps,
        plots: !args.no_plots,
    };
    match session::run(stage.name(), &opts).with_context(|| format!("labram-trainer {command}"))? {
        Finished::Done {
            run_dir,
            metrics,
            config,
        } => {
            println!("finished: {}", run_dir.display());
            if let Some(b) = metrics.get("best").filter(|b| !b.is_null()) {
                println!(
                    "best validation {}: {} (epoch {})",
                    b["metric"].as_str().unwrap_or("?"),
                    b["value"],
                    b["epoch"].as_u64().map_or(0, |e| e + 1)
                );
            }
            if let Some(t) = metrics.get("test").and_then(|t| t.as_object()) {
                for (k, v) in t {
                    println!(
                        "test {k}: {}",
                        v.as_f64().map_or(v.to_string(), |x| format!("{x:.4}"))
                    );
                }
            }
            println!("metrics: {}", run_dir.join("metrics.json").display());
            if let Some(out) = &args.export {
                let card =
                    labram_trainer::train::publish::export_run(&run_dir, &config, out, &recorded)
                        .with_context(|| format!("--export {}", out.display()))?;
                println!(
                    "exported {} ({} classes: {}; {} electrodes; {} patches, hop {} s)",
                    out.display(),
                    card.classes.len(),
                    card.classes.join(", "),
                    card.channels.len(),
                    card.window_patches,
                    card.hop_s
                );
            }
        }
        Finished::Interrupted { checkpoint } => {
            println!("stopped; checkpoint saved to {}", checkpoint.display());
            println!(
                "continue with: labram-trainer {command} --resume {}",
                checkpoint.display()
            );
        }
    }
    Ok(())
}
