//! What a session adapts: one feature vector per window, from an extractor
//! behind a small trait so that band power, a model's logits, a model's pooled
//! features or their concatenation all go through the same protocols.

use super::bandpower::{BandPower, ADAPTATION_BANDS};
use super::head::Head;

/// Names the features a head or a person's state was learned on: a state is
/// only valid for the extractor (and model) that made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpace {
    /// What made the features, e.g. `log-bandpower(...)` or
    /// `logits(labram-base-eegmat.onnx, checkpoint sha256 c63e…)`.
    pub extractor: String,
    /// Features per window.
    pub dim: usize,
}

impl FeatureSpace {
    /// The space of several extractors' features side by side ([`Concat`]).
    pub fn concat(parts: &[FeatureSpace]) -> Self {
        Self {
            extractor: parts
                .iter()
                .map(|s| s.extractor.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            dim: parts.iter().map(|s| s.dim).sum(),
        }
    }
}

impl std::fmt::Display for FeatureSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{} features]", self.extractor, self.dim)
    }
}

/// Why an extractor failed on a window; keeps the extractor's own error.
#[derive(Debug, thiserror::Error)]
#[error("{extractor}: {source}")]
pub struct FeatureError {
    pub extractor: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl FeatureError {
    pub fn new(
        extractor: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            extractor: extractor.into(),
            source: source.into(),
        }
    }
}

/// Turns preprocessed windows (channel-major `[channels][samples]`, µV at
/// 200 Hz, as the daemon cuts them) into feature vectors.
pub trait FeatureExtractor {
    /// What these features are; stored in every head and state made from them.
    fn space(&self) -> FeatureSpace;

    /// Appends the features of one window to `out`.
    fn extract(&mut self, window: &[f32], out: &mut Vec<f64>) -> Result<(), FeatureError>;

    /// Features of `count` windows laid end to end (a model runs them as one
    /// batch; the default calls [`Self::extract`] per window).
    fn extract_batch(
        &mut self,
        windows: &[f32],
        count: usize,
    ) -> Result<Vec<Vec<f64>>, FeatureError> {
        let len = windows.len() / count.max(1);
        windows
            .chunks_exact(len.max(1))
            .take(count)
            .map(|w| {
                let mut out = Vec::with_capacity(self.space().dim);
                self.extract(w, &mut out)?;
                Ok(out)
            })
            .collect()
    }

    /// The head the features bring themselves: a model's logits classify
    /// through their softmax under `none` with no head trained on other people.
    fn native_head(&self) -> Option<Head> {
        None
    }
}

/// Log band power per channel in `adaptation.py`'s bands (1–4, 4–8, 8–13,
/// 13–30, 30–45 Hz; Welch, 2-s Hann segments, 50 % overlap), channel by channel.
pub struct LogBandPower {
    channels: usize,
    samples: usize,
    bp: BandPower,
}

impl LogBandPower {
    /// For windows of `channels` × `samples` at `rate_hz`.
    pub fn new(channels: usize, samples: usize, rate_hz: f64) -> Self {
        Self {
            channels,
            samples,
            bp: BandPower::with_bands(samples, rate_hz, &ADAPTATION_BANDS, false),
        }
    }
}

impl FeatureExtractor for LogBandPower {
    fn space(&self) -> FeatureSpace {
        FeatureSpace {
            extractor: format!(
                "log-bandpower(1-4,4-8,8-13,13-30,30-45 Hz; Welch 2 s; {} channels)",
                self.channels
            ),
            dim: self.channels * ADAPTATION_BANDS.len(),
        }
    }

    fn extract(&mut self, window: &[f32], out: &mut Vec<f64>) -> Result<(), FeatureError> {
        if window.len() != self.channels * self.samples {
            return Err(FeatureError::new(
                "log-bandpower",
                format!(
                    "window has {} values, expected {} channels × {} samples",
                    window.len(),
                    self.channels,
                    self.samples
                ),
            ));
        }
        self.bp.log_features(window, self.channels, out);
        Ok(())
    }
}

/// Several extractors' features side by side (e.g. band power + a model's
/// logits), in the order given.
pub struct Concat(pub Vec<Box<dyn FeatureExtractor + Send>>);

impl FeatureExtractor for Concat {
    fn space(&self) -> FeatureSpace {
        let spaces: Vec<FeatureSpace> = self.0.iter().map(|e| e.space()).collect();
        FeatureSpace::concat(&spaces)
    }

    fn extract(&mut self, window: &[f32], out: &mut Vec<f64>) -> Result<(), FeatureError> {
        for e in &mut self.0 {
            e.extract(window, out)?;
        }
        Ok(())
    }

    fn extract_batch(
        &mut self,
        windows: &[f32],
        count: usize,
    ) -> Result<Vec<Vec<f64>>, FeatureError> {
        let mut rows = vec![Vec::new(); count];
        for e in &mut self.0 {
            for (row, part) in rows.iter_mut().zip(e.extract_batch(windows, count)?) {
                row.extend(part);
            }
        }
        Ok(rows)
    }
}
