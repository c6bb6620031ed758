//! `labram-trainer quantize`: an exported model → its int8 version (+ card).
use std::path::PathBuf;

use anyhow::Context;
use labram_trainer::export;

/// Quantize an exported model's weight matrices to int8 (dynamic quantization).
///
/// Every Linear layer's weights become symmetric int8 and its activations are
/// quantized at run time, which ONNX Runtime runs as one int8 kernel per layer:
/// LaBraM-Base then runs in ~0.6x the float model's time on CPU and the file is ~4x
/// smaller; outputs move by ~1e-2 relative (check the model on your data with
/// `labram-trainer evaluate` before you ship it). The inputs, outputs and card stay
/// the same, so `labramd` runs the result as it runs any export.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  labram-trainer quantize --model models/labram-base-eegmat.onnx --output models/labram-base-eegmat-int8.onnx\n  labram-trainer evaluate --model models/labram-base-eegmat-int8.onnx --dataset out/eegmat-causal"
)]
pub struct Args {
    /// An ONNX model written by `labram-trainer export`, with its card `.yaml` beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// Output ONNX file; the card goes beside it with the extension `.yaml`.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.output == a.model {
        anyhow::bail!(
            "--output is the same file as --model ({}); write the int8 model to a new file",
            a.model.display()
        );
    }
    let s = export::quantize_file(&a.model, &a.output)
        .with_context(|| format!("quantizing {}", a.model.display()))?;
    tracing::info!(
        onnx = %a.output.display(),
        card = %s.card_path.display(),
        matmuls = s.report.matmuls,
        bytes_before = s.bytes_in,
        bytes_after = s.bytes_out,
        worst_weight_error = s.report.worst_weight_error,
        "quantized to int8"
    );
    Ok(())
}
