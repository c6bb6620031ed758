//! `labram-trainer tokenize`: EEG windows → VQ-NSP code ids.
use std::path::PathBuf;

/// Turn EEG windows into the VQ-NSP token ids that masked-EEG-modeling pretraining
/// predicts.
///
/// The input is a safetensors file with `eeg_uv` (float32 [windows, channels,
/// patches, 200], microvolts at 200 Hz, 1-s patches) and `input_chans` (int64
/// [channels + 1]: 0, then each electrode's index in the 128-name list plus 1, as
/// `labram_core::electrodes::input_chans` makes it). The output holds `codes` (int64
/// [windows, channels·patches], electrode-major: code c·patches + p).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  labram-trainer tokenize --tokenizer vqnsp.pth --input windows.safetensors --output codes.safetensors"
)]
pub struct Args {
    /// Tokenizer checkpoint: an official VQ-NSP `.pth` (read safely, without Python)
    /// or a project `.safetensors`; the architecture is read from its tensors.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: PathBuf,
    /// safetensors file with `eeg_uv` [windows, channels, patches, 200] (µV) and
    /// `input_chans` [channels + 1].
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the safetensors file with `codes` [windows, channels·patches].
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    labram_trainer::model::tokenize_file(&args.tokenizer, &args.input, &args.output)?;
    tracing::info!(output = %args.output.display(), "codes written");
    Ok(())
}
