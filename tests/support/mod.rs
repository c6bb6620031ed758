//! Helpers shared by the daemon's integration tests: locating `../shared`, making a
//! test model (an ONNX export plus the card the daemon requires), reading the golden
//! safetensors, and finding the project's Python for the pylsl peers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use labramd::card::{ModelCard, Preprocessing, Provenance, CARD_FORMAT};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` (read-only test material).
pub fn shared() -> PathBuf {
    repo().join("../shared")
}

/// The project's venv Python (pylsl, pyedflib, numpy), or a panic that says how to get it.
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup.sh to create the project's Python venv (pylsl, pyedflib)",
        p.display()
    );
    p
}

/// A card for the golden fine-tuning checkpoint on `channels`.
pub fn golden_card(channels: &[&str], patches: usize, hop_s: f64) -> ModelCard {
    ModelCard {
        format: CARD_FORMAT,
        architecture: "labram_base_patch200_200".into(),
        trained: false,
        task: "golden parity checkpoint (untrained)".into(),
        classes: vec!["class0".into(), "class1".into()],
        channels: channels.iter().map(|s| s.to_string()).collect(),
        patch_size: 200,
        sample_rate_hz: 200.0,
        window_patches: patches,
        hop_s,
        preprocessing: Preprocessing::default(),
        provenance: Provenance {
            checkpoint: Some("finetune_base.pth".into()),
            ..Provenance::default()
        },
    }
}

/// Puts a model for `channels` into `dir` (`dir/m.onnx` + `dir/m.yaml`): the golden
/// checkpoint exported by torch.onnx (`../shared/golden/reference_torch_export.onnx`,
/// the same ONNX contract as `labram-trainer export`), linked, with a card beside it.
pub fn golden_model(dir: &Path, channels: &[&str], patches: usize, hop_s: f64) -> PathBuf {
    let model = dir.join("m.onnx");
    let src = shared().join("golden/reference_torch_export.onnx");
    assert!(src.exists(), "{} missing", src.display());
    if !model.exists() {
        std::os::unix::fs::symlink(&src, &model).expect("link the reference export");
    }
    golden_card(channels, patches, hop_s)
        .save(&ModelCard::path_for(&model))
        .expect("write card");
    model
}

/// A tensor of a safetensors file: (shape, little-endian bytes).
pub fn safetensor(file: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(file).expect("read safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let t = &header[name];
    let shape = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    (shape, bytes[8 + n + a..8 + n + b].to_vec())
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
