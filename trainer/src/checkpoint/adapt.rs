//! State-dict surgery of the official recipes, and the key check every load goes through.
//!
//! Loading is strict by default ([`check_keys`]): a name the model lacks, or a model
//! parameter the file lacks, is an error listing all of them, because a silent partial
//! load produces a network that runs and is wrong. The one sanctioned exception is
//! starting fine-tuning from a pretraining checkpoint ([`prepare_finetune_import`]),
//! which follows `run_class_finetuning.py`: take the `student.` weights, drop a head
//! whose class count differs, leave `fc_norm`/`head` freshly initialised, and report it.
use std::collections::BTreeMap;

use super::{CheckpointError, StateDict};

/// Parameters of the masked-EEG-modeling student that the fine-tuning model does not
/// have (it pools with `fc_norm` instead of `norm`, and has no mask token or LM head).
pub const PRETRAIN_ONLY_KEYS: [&str; 5] = [
    "mask_token",
    "norm.weight",
    "norm.bias",
    "lm_head.weight",
    "lm_head.bias",
];

/// Fine-tuning parameters a pretraining checkpoint does not provide; they keep the
/// model's fresh initialisation.
pub const FRESH_FINETUNE_KEYS: [&str; 4] =
    ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"];

/// What [`prepare_finetune_import`] changed, for the log and the model card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// The prefix that was selected and stripped (`student.`), if any.
    pub stripped_prefix: Option<String>,
    /// Checkpoint keys the model does not use, left out.
    pub ignored: Vec<String>,
    /// Model parameters that keep their fresh initialisation.
    pub reinitialized: Vec<String>,
    /// `head.weight` shape in the checkpoint and in the model, when they differ (a
    /// different class count): the head is re-initialised.
    pub head_shape_changed: Option<(Vec<usize>, Vec<usize>)>,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = &self.stripped_prefix {
            write!(f, "took the `{p}*` weights; ")?;
        }
        if let Some((got, want)) = &self.head_shape_changed {
            write!(
                f,
                "head re-initialised (checkpoint {got:?}, model {want:?}); "
            )?;
        }
        write!(
            f,
            "fresh: [{}]; ignored: [{}]",
            self.reinitialized.join(", "),
            self.ignored.join(", ")
        )
    }
}

/// The entries whose names start with `prefix`, with the prefix removed.
pub fn take_prefix(sd: &StateDict, prefix: &str) -> StateDict {
    sd.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
        .collect()
}

/// Strict check: the same names, and the same shapes, as `model` (name → shape).
pub fn check_keys(
    sd: &StateDict,
    model: &BTreeMap<String, Vec<usize>>,
) -> Result<(), CheckpointError> {
    let missing: Vec<String> = model
        .keys()
        .filter(|k| !sd.contains_key(*k))
        .cloned()
        .collect();
    let unexpected: Vec<String> = sd
        .keys()
        .filter(|k| !model.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(CheckpointError::KeyMismatch {
            missing,
            unexpected,
        });
    }
    let wrong: Vec<_> = sd
        .iter()
        .filter(|(k, t)| model[*k] != t.shape)
        .map(|(k, t)| (k.clone(), t.shape.clone(), model[k].clone()))
        .collect();
    if !wrong.is_empty() {
        return Err(CheckpointError::ShapeMismatch(wrong));
    }
    Ok(())
}

/// Prepare any checkpoint (pretraining `student.*`, or an earlier fine-tuned model,
/// possibly with another class count) to initialise a fine-tuning model with the
/// parameters `model` (name → shape). Returns the entries to load; the model's other
/// parameters (only those in [`FRESH_FINETUNE_KEYS`]) keep their initialisation.
pub fn prepare_finetune_import(
    sd: StateDict,
    model: &BTreeMap<String, Vec<usize>>,
) -> Result<(StateDict, ImportReport), CheckpointError> {
    let mut report = ImportReport::default();
    let mut sd = if sd.keys().any(|k| k.starts_with("student.")) {
        report.stripped_prefix = Some("student.".into());
        take_prefix(&sd, "student.")
    } else {
        sd
    };
    // Relative-position tables are rebuilt by the model, as the official loader does.
    sd.retain(|k, _| !k.ends_with("relative_position_index"));
    if let (Some(t), Some(want)) = (sd.get("head.weight"), model.get("head.weight")) {
        if &t.shape != want {
            report.head_shape_changed = Some((t.shape.clone(), want.clone()));
            sd.remove("head.weight");
            sd.remove("head.bias");
        }
    }
    let mut unexpected = Vec::new();
    for k in sd.keys() {
        if !model.contains_key(k) {
            if PRETRAIN_ONLY_KEYS.contains(&k.as_str()) {
                report.ignored.push(k.clone());
            } else {
                unexpected.push(k.clone());
            }
        }
    }
    let mut missing = Vec::new();
    for k in model.keys() {
        if !sd.contains_key(k) {
            if FRESH_FINETUNE_KEYS.contains(&k.as_str()) {
                report.reinitialized.push(k.clone());
            } else {
                missing.push(k.clone());
            }
        }
    }
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(CheckpointError::KeyMismatch {
            missing,
            unexpected,
        });
    }
    sd.retain(|k, _| model.contains_key(k));
    let wrong: Vec<_> = sd
        .iter()
        .filter(|(k, t)| model[*k] != t.shape)
        .map(|(k, t)| (k.clone(), t.shape.clone(), model[k].clone()))
        .collect();
    if !wrong.is_empty() {
        return Err(CheckpointError::ShapeMismatch(wrong));
    }
    Ok((sd, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::TensorData;

    fn t(shape: &[usize]) -> TensorData {
        TensorData {
            shape: shape.to_vec(),
            data: vec![0.5; shape.iter().product()],
        }
    }

    fn model() -> BTreeMap<String, Vec<usize>> {
        [
            ("cls_token", vec![1, 1, 4]),
            ("blocks.0.w", vec![4, 4]),
            ("fc_norm.weight", vec![4]),
            ("fc_norm.bias", vec![4]),
            ("head.weight", vec![3, 4]),
            ("head.bias", vec![3]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn strict_check_lists_missing_and_unexpected() {
        let mut sd = StateDict::new();
        sd.insert("cls_token".into(), t(&[1, 1, 4]));
        sd.insert("blocks.0.x".into(), t(&[4, 4]));
        let e = check_keys(&sd, &model()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("blocks.0.w") && msg.contains("head.bias"),
            "{msg}"
        );
        assert!(msg.contains("unexpected keys [blocks.0.x]"), "{msg}");
    }

    #[test]
    fn strict_check_reports_shapes() {
        let sd: StateDict = model()
            .into_iter()
            .map(|(k, s)| {
                let s = if k == "blocks.0.w" { vec![4, 5] } else { s };
                (k, t(&s))
            })
            .collect();
        let e = check_keys(&sd, &model()).unwrap_err();
        assert!(
            e.to_string()
                .contains("blocks.0.w: checkpoint [4, 5], model [4, 4]"),
            "{e}"
        );
    }

    #[test]
    fn student_prefix_is_taken_and_head_left_fresh() {
        let mut sd = StateDict::new();
        sd.insert("student.cls_token".into(), t(&[1, 1, 4]));
        sd.insert("student.blocks.0.w".into(), t(&[4, 4]));
        sd.insert("student.mask_token".into(), t(&[1, 1, 4]));
        sd.insert("student.norm.weight".into(), t(&[4]));
        sd.insert("lm_head.weight".into(), t(&[8, 4]));
        sd.insert("projection_head.0.weight".into(), t(&[4, 4]));
        let (out, rep) = prepare_finetune_import(sd, &model()).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["blocks.0.w", "cls_token"]);
        assert_eq!(rep.stripped_prefix.as_deref(), Some("student."));
        assert_eq!(rep.ignored, ["mask_token", "norm.weight"]);
        assert_eq!(rep.reinitialized.len(), 4);
    }

    #[test]
    fn head_with_other_class_count_is_reinitialised() {
        let mut sd: StateDict = model().into_iter().map(|(k, s)| (k, t(&s))).collect();
        sd.insert("head.weight".into(), t(&[2, 4]));
        sd.insert("head.bias".into(), t(&[2]));
        let (out, rep) = prepare_finetune_import(sd, &model()).unwrap();
        assert!(!out.contains_key("head.weight") && out.contains_key("fc_norm.weight"));
        assert_eq!(rep.head_shape_changed, Some((vec![2, 4], vec![3, 4])));
        assert_eq!(rep.reinitialized, ["head.bias", "head.weight"]);
    }

    #[test]
    fn finetune_import_still_refuses_foreign_keys() {
        let mut sd: StateDict = model().into_iter().map(|(k, s)| (k, t(&s))).collect();
        sd.remove("blocks.0.w");
        sd.insert("encoder.blocks.0.w".into(), t(&[4, 4]));
        let e = prepare_finetune_import(sd, &model()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("missing keys [blocks.0.w]"), "{msg}");
        assert!(
            msg.contains("unexpected keys [encoder.blocks.0.w]"),
            "{msg}"
        );
    }
}
