//! From a finished fine-tuning run to a model `labramd` can serve: the best weights
//! exported to ONNX ([`crate::export`]) with a card that says what the model was
//! trained on and how well it did — data, split, test metrics and the commands.
//!
//! Everything the card needs is in the run directory (`metrics.json`, the run file's
//! copy in `checkpoints/*/state.json`) and in the dataset's `meta.json` (classes,
//! electrodes, window, hop, preprocessing).
use std::path::{Path, PathBuf};

use labram_core::card::ModelCard;
use serde_json::Value;

use super::config::{RunConfig, StageConfig, StageName, Variant};
use crate::data::Meta;
use crate::export::{self, ExportRequest, GraphOptions};

/// Errors publishing a run.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("only a fine-tuning run makes a classifier to export; this run is `{}`", .0.command())]
    NotFinetune(StageName),
    #[error("only the official sizes export to ONNX (model.variant is {0:?}); fine-tune a base, large or huge model")]
    Variant(Variant),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("model card {path}: {message}")]
    Card { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<String, PublishError> {
    std::fs::read_to_string(path).map_err(|e| PublishError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The subjects of a split as the run file lists them, or the dataset's own list
/// (none when the dataset has no such split).
fn split_text(listed: &[String], meta: &Meta, split: &str) -> String {
    let subjects = if listed.is_empty() {
        meta.splits
            .get(split)
            .map(|s| s.subjects.clone())
            .unwrap_or_default()
    } else {
        listed.to_vec()
    };
    match (subjects.first(), subjects.last()) {
        (Some(a), Some(b)) if subjects.len() > 2 => {
            format!("{a}..{b} ({} subjects)", subjects.len())
        }
        _ => subjects.join(", "),
    }
}

/// Exports the best weights of the fine-tuning run in `run_dir` (configured by `cfg`)
/// to `output` and completes its card. `train_command` is recorded as the command that
/// made the model (no local paths).
pub fn export_run(
    run_dir: &Path,
    cfg: &RunConfig,
    output: &Path,
    train_command: &str,
) -> Result<ModelCard, PublishError> {
    let StageConfig::Finetune(ft) = &cfg.stage else {
        return Err(PublishError::NotFinetune(cfg.stage.name()));
    };
    let arch = match cfg.variant {
        Variant::Base => "labram_base_patch200_200",
        Variant::Large => "labram_large_patch200_200",
        Variant::Huge => "labram_huge_patch200_200",
        v => return Err(PublishError::Variant(v)),
    };
    let metrics_path = run_dir.join("metrics.json");
    let metrics: Value =
        serde_json::from_str(&read(&metrics_path)?).map_err(|e| PublishError::Read {
            path: metrics_path.clone(),
            message: e.to_string(),
        })?;
    let dataset = &ft.data.path;
    let meta = Meta::load(dataset).map_err(|e| PublishError::Read {
        path: dataset.clone(),
        message: e.to_string(),
    })?;
    let best = run_dir.join("best").join("model.safetensors");
    // At least 1, checked with the run file.
    let k = ft.num_classes as usize;
    let req = ExportRequest {
        checkpoint: best.clone(),
        model: arch.into(),
        num_classes: k,
        output: output.to_path_buf(),
        channels: Some(meta.channels.clone()),
        patches: meta.window_patches,
        classes: Some(meta.classes.clone()),
        task: meta.task.clone(),
        hop_s: meta.hop_s.unwrap_or(1.0),
        trained: true,
        preprocessing: meta.preprocessing.clone(),
        command: train_command.to_string(),
        graph: GraphOptions::default(),
    };
    let summary = export::export(&req)?;
    let mut card = summary.card;
    let p = &mut card.provenance;
    p.command = Some(train_command.to_string());
    p.data = Some(format!(
        "{} ({}; {} source recordings; {}-s windows every {} s; {} preprocessing)",
        meta.kind,
        meta.task,
        meta.sources.len(),
        meta.window_patches,
        meta.hop_s.unwrap_or(0.0),
        match meta.preprocessing.mode {
            labram_core::card::FilterMode::Causal => "causal",
            labram_core::card::FilterMode::ZeroPhase => "zero-phase",
        }
    ));
    p.split = Some(format!(
        "by subject: train {}; model selection on {}; test {}",
        split_text(&ft.data.subjects.train, &meta, "train"),
        split_text(&ft.data.subjects.val, &meta, "val"),
        split_text(&ft.data.subjects.test, &meta, "test"),
    ));
    p.metrics = metrics["test"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "loss")
                .filter_map(|(k, v)| Some((format!("test_{k}"), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(b) = metrics["best"].as_object() {
        if let (Some(m), Some(v)) = (b["metric"].as_str(), b["value"].as_f64()) {
            p.metrics.insert(format!("val_{m}"), v);
        }
        p.notes = Some(format!(
            "best of {} epochs on validation {} (epoch {}); seed {}; fine-tuned with labram-trainer (official LaBraM recipe{})",
            metrics["epochs"],
            b["metric"].as_str().unwrap_or("?"),
            b["epoch"].as_u64().map_or(0, |e| e + 1),
            cfg.train.seed,
            if ft.balance_classes { ", class-balanced loss" } else { "" }
        ));
    }
    card.save(&summary.card_path)
        .map_err(|e| PublishError::Card {
            path: summary.card_path.clone(),
            message: e.to_string(),
        })?;
    Ok(card)
}
