//! `labram-trainer`: export, tokenize, make datasets, train and evaluate LaBraM models.
use clap::{Parser, Subcommand};

mod cmd;

/// Reproduce LaBraM's training offline and export models for `labramd`.
#[derive(Parser, Debug)]
#[command(name = "labram-trainer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export a checkpoint (.pth or .safetensors) to ONNX plus its model card.
    Export(cmd::export::Args),
    /// Quantize an exported model's weight matrices to int8 (faster on CPU, ~4x smaller).
    Quantize(cmd::quantize::Args),
    /// Turn EEG into VQ-NSP token ids with a tokenizer checkpoint.
    Tokenize(cmd::tokenize::Args),
    /// Build datasets (pretraining HDF5, TUAB, TUEV, annotated EDF+, eegmat) from recordings.
    #[command(subcommand)]
    MakeDataset(cmd::make_dataset::Kind),
    /// Train the VQ-NSP tokenizer.
    TrainTokenizer(cmd::train::Args),
    /// Masked EEG modeling pretraining.
    Pretrain(cmd::train::Args),
    /// Fine-tune a classifier.
    Finetune(cmd::train::Args),
    /// Evaluate an exported model on labelled recordings or a dataset.
    Evaluate(cmd::evaluate::Args),
    /// Leave-people-out cross-validation of the session adaptation protocols.
    CrossValidate(cmd::cross_validate::Args),
}

fn main() -> anyhow::Result<()> {
    labram_trainer::memory::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Export(a) => cmd::export::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::MakeDataset(k) => cmd::make_dataset::run(k),
        Command::TrainTokenizer(a) => cmd::train::run(cmd::train::Stage::Tokenizer, a),
        Command::Pretrain(a) => cmd::train::run(cmd::train::Stage::Pretrain, a),
        Command::Finetune(a) => cmd::train::run(cmd::train::Stage::Finetune, a),
        Command::Evaluate(a) => cmd::evaluate::run(a),
        Command::CrossValidate(a) => cmd::cross_validate::run(a),
    }
}
