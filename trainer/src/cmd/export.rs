//! `labram-trainer export`: a fine-tuning checkpoint → `m.onnx` + model card `m.yaml`.
use std::path::PathBuf;

use anyhow::Context;
use labram_core::card::{FilterMode, Preprocessing};
use labram_trainer::export::{self, AttentionImpl, ExportRequest, GraphOptions};

/// Export a fine-tuning LaBraM checkpoint to ONNX and write its model card beside it.
///
/// The ONNX model takes `eeg` float32 [batch, channels, patches, 200] in microvolts
/// and `input_chans` int64 [channels + 1]; it returns `logits` [batch, K]. The card
/// (`<output stem>.yaml`) tells `labramd` the channel order, classes, window and
/// preprocessing.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (the golden, untrained checkpoint):\n  labram-trainer export --checkpoint ../shared/golden/finetune_base.pth \\\n    --model labram_base_patch200_200 --num-classes 2 --output models/labram-base-golden.onnx"
)]
pub struct Args {
    /// Fine-tuning checkpoint: official `.pth` (plain, `{"model": …}` or a full
    /// training checkpoint) or the project's `.safetensors`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Architecture: labram_base_patch200_200, labram_large_patch200_200 or
    /// labram_huge_patch200_200.
    #[arg(long, default_value = "labram_base_patch200_200")]
    pub model: String,
    /// Number of model outputs; must equal the rows of the checkpoint's `head.weight`.
    #[arg(long)]
    pub num_classes: usize,
    /// Output ONNX file; the card goes beside it with the extension `.yaml`.
    #[arg(long)]
    pub output: PathBuf,
    /// Electrode names in the order the model's input will have (comma-separated,
    /// LaBraM's 10-20 names, e.g. FP1,FP2,C3). Default: the 23 TUH channels.
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Window length in patches (1 s each), 1..=16, recorded in the card.
    #[arg(long, default_value_t = 10)]
    pub patches: usize,
    /// Class names, one per output (comma-separated). Default: class_0, class_1, ….
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// What the model classifies (free text for the card).
    #[arg(long, default_value = "unspecified")]
    pub task: String,
    /// Hop between windows in seconds that the card recommends.
    #[arg(long, default_value_t = 1.0)]
    pub hop_s: f64,
    /// Mark the weights as trained (predictions are meaningful). Without it the card
    /// says `trained: false`.
    #[arg(long)]
    pub trained: bool,
    /// Filtering the model was trained with: causal (the daemon's chain) or
    /// zero-phase (the official MNE dataset makers).
    #[arg(long, value_enum, default_value = "causal")]
    pub filter_mode: Mode,
    /// Band-pass edges in Hz as LO,HI, or `off`.
    #[arg(long, default_value = "0.1,75")]
    pub bandpass: String,
    /// Notch frequency in Hz, or `off`.
    #[arg(long, default_value = "50")]
    pub notch: String,
    /// Write the literal op sequence for the layer scale and attention scale instead
    /// of folding them into the weights (for comparison; slower, same results).
    #[arg(long, hide = true)]
    pub no_fold: bool,
    /// Keep [B, N, D] activations instead of flat [B·N, D] ones (for comparison).
    #[arg(long, hide = true)]
    pub no_flat: bool,
    /// Write the attention core (softmax(q·kᵀ)·v over heads) as ONNX Runtime's fused
    /// `com.microsoft.MultiHeadAttention` instead of standard ONNX operators: less CPU
    /// work on ONNX Runtime (about 10 % at batch 8, even at batch 1; see
    /// BENCHMARKS.md), but the model then runs only on ONNX Runtime.
    #[arg(long, alias = "contrib-attention")]
    pub ort_attention: bool,
    /// Pool after the last fc2, like the official code, instead of before it.
    #[arg(long, hide = true)]
    pub late_pooling: bool,
    /// Two per-head LayerNormalizations for q and k, as the official code (for comparison).
    #[arg(long, hide = true)]
    pub separate_qk_norm: bool,
}

/// `--filter-mode` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Mode {
    Causal,
    ZeroPhase,
}

fn parse_bandpass(s: &str) -> anyhow::Result<Option<[f64; 2]>> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || format!("--bandpass `{s}`: give LO,HI in Hz (e.g. 0.1,75) or `off`");
    anyhow::ensure!(parts.len() == 2, bad());
    let lo: f64 = parts[0].parse().with_context(bad)?;
    let hi: f64 = parts[1].parse().with_context(bad)?;
    anyhow::ensure!(lo >= 0.0 && hi > lo && hi < 100.0, bad());
    Ok(Some([lo, hi]))
}

fn parse_notch(s: &str) -> anyhow::Result<Option<f64>> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || format!("--notch `{s}`: give a frequency in Hz (50 or 60) or `off`");
    let f: f64 = s.trim().parse().with_context(bad)?;
    anyhow::ensure!(f > 0.0 && f < 100.0, bad());
    Ok(Some(f))
}

/// The command line as recorded in the card: file names only, never local paths.
fn recorded_command(a: &Args) -> String {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut c = format!(
        "labram-trainer export --checkpoint {} --model {} --num-classes {} --output {} --patches {}",
        name(&a.checkpoint),
        a.model,
        a.num_classes,
        name(&a.output),
        a.patches
    );
    if let Some(ch) = &a.channels {
        c.push_str(&format!(" --channels {}", ch.join(",")));
    }
    if let Some(cl) = &a.classes {
        c.push_str(&format!(" --classes {}", cl.join(",")));
    }
    if a.trained {
        c.push_str(" --trained");
    }
    if a.ort_attention {
        c.push_str(" --ort-attention");
    }
    c
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let preprocessing = Preprocessing {
        mode: match a.filter_mode {
            Mode::Causal => FilterMode::Causal,
            Mode::ZeroPhase => FilterMode::ZeroPhase,
        },
        bandpass_hz: parse_bandpass(&a.bandpass)?,
        notch_hz: parse_notch(&a.notch)?,
        ..Preprocessing::default()
    };
    let req = ExportRequest {
        checkpoint: a.checkpoint.clone(),
        model: a.model.clone(),
        num_classes: a.num_classes,
        output: a.output.clone(),
        channels: a.channels.clone(),
        patches: a.patches,
        classes: a.classes.clone(),
        task: a.task.clone(),
        hop_s: a.hop_s,
        trained: a.trained,
        preprocessing,
        command: recorded_command(&a),
        graph: GraphOptions {
            fold_layer_scale: !a.no_fold,
            fold_attn_scale: !a.no_fold,
            flat_tokens: !a.no_flat,
            attention: if a.ort_attention {
                AttentionImpl::ContribMha
            } else {
                AttentionImpl::Standard
            },
            pool_before_last_fc2: !a.late_pooling,
            merge_qk_norm: !a.separate_qk_norm,
        },
    };
    let summary = export::export(&req)?;
    tracing::info!(
        onnx = %summary.onnx.display(),
        card = %summary.card_path.display(),
        bytes = summary.bytes,
        channels = summary.card.channels.len(),
        classes = summary.card.classes.len(),
        "exported {}",
        summary.card.architecture
    );
    if !summary.card.trained {
        tracing::warn!("the card says `trained: false`: predictions of these weights mean nothing (pass --trained for trained weights)");
    }
    Ok(())
}
