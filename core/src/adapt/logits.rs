//! A model's logits as session features: the simplest protocol-consistent way
//! to adapt a model that was not trained with adaptation in the loop (its
//! pooled features are not an output of the exported graph). Lives here, behind
//! the `onnx` feature, so that the daemon and `labram-trainer evaluate` build
//! the very same feature space (and so accept the same states and heads).

use std::path::Path;

use super::{FeatureError, FeatureExtractor, FeatureSpace, Head};
use crate::inference::Classifier;

/// Logits of an exported model, one vector (one value per class) per window.
pub struct ModelLogits {
    clf: Classifier,
    space: FeatureSpace,
}

impl ModelLogits {
    /// Wraps a loaded model; the feature space names the file and the
    /// checkpoint digest its card records, so a state made with another model
    /// is refused.
    pub fn new(clf: Classifier, model_path: &Path) -> Self {
        let file = model_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digest = clf
            .card()
            .provenance
            .checkpoint_sha256
            .as_deref()
            .map(|d| format!(", checkpoint sha256 {}", &d[..d.len().min(16)]))
            .unwrap_or_default();
        let space = FeatureSpace {
            extractor: format!("logits({file}{digest})"),
            dim: clf.num_classes(),
        };
        Self { clf, space }
    }

    /// The model's card.
    pub fn card(&self) -> &crate::card::ModelCard {
        self.clf.card()
    }
}

impl FeatureExtractor for ModelLogits {
    fn space(&self) -> FeatureSpace {
        self.space.clone()
    }

    fn extract(&mut self, window: &[f32], out: &mut Vec<f64>) -> Result<(), FeatureError> {
        let rows = self.extract_batch(window, 1)?;
        out.extend(rows.into_iter().flatten());
        Ok(())
    }

    /// One window per model run, as the daemon runs them. A batch would be
    /// faster, but a dynamically quantised (int8) model, as shipped, scales
    /// its activations by their range over the whole batch, so a window's
    /// logits depend on the windows beside it: measured on the shipped model,
    /// 1e-4 in the logits and up to 5e-3 in the probabilities of a calibrated
    /// session, where daemon and `evaluate` must agree within 1e-4.
    fn extract_batch(
        &mut self,
        windows: &[f32],
        count: usize,
    ) -> Result<Vec<Vec<f64>>, FeatureError> {
        let len = windows.len() / count.max(1);
        let mut rows = Vec::with_capacity(count);
        for w in windows.chunks_exact(len.max(1)).take(count) {
            let logits = self
                .clf
                .logits(w, 1)
                .map_err(|e| FeatureError::new(self.space.extractor.clone(), e))?;
            rows.extend(
                logits
                    .into_iter()
                    .map(|r| r.into_iter().map(f64::from).collect::<Vec<f64>>()),
            );
        }
        Ok(rows)
    }

    fn native_head(&self) -> Option<Head> {
        Some(Head::Softmax)
    }
}
