//! The model card: the YAML file written beside every exported `.onnx`
//! (`m.onnx` → `m.yaml`). It is the one contract between the trainer, which writes
//! it, and the daemon, which refuses a model without a valid one: it says which
//! electrodes the model wants, in which order, what the classes are called, how long
//! a window is, and which preprocessing the model was trained on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Current card format version. Bumped on incompatible changes.
pub const CARD_FORMAT: u32 = 1;
/// Samples per patch (the model's fixed patch size, 1 s at 200 Hz).
pub const PATCH_SIZE: usize = 200;
/// The model's sample rate.
pub const SAMPLE_RATE_HZ: f64 = 200.0;
/// The time embedding has 16 rows: no model takes more than 16 patches.
pub const MAX_PATCHES: usize = 16;

/// Offline (`zero-phase`, as the paper's MNE makers) or online (`causal`, the
/// daemon's chain) filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FilterMode {
    #[default]
    Causal,
    ZeroPhase,
}

impl std::fmt::Display for FilterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FilterMode::Causal => "causal",
            FilterMode::ZeroPhase => "zero-phase",
        })
    }
}

/// The preprocessing a model was trained on (and the daemon must apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    pub mode: FilterMode,
    /// Band-pass edges in Hz, `None` for no band-pass.
    pub bandpass_hz: Option<[f64; 2]>,
    /// Notch frequency in Hz (50 or 60), `None` for off.
    pub notch_hz: Option<f64>,
    /// Rate the model sees, always 200 Hz.
    pub sample_rate_hz: f64,
    /// Unit of the model input (`uV`); the graph divides by 100 itself.
    pub unit: String,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            mode: FilterMode::Causal,
            bandpass_hz: Some([0.1, 75.0]),
            notch_hz: Some(50.0),
            sample_rate_hz: SAMPLE_RATE_HZ,
            unit: "uV".into(),
        }
    }
}

impl Preprocessing {
    /// What live inference applies for a model trained on `self`: the same
    /// band-pass and notch, always causal (a live stream has no future samples to
    /// filter backwards with), at 200 Hz. The daemon and `labram-trainer evaluate`
    /// both call this, so a model trained zero-phase is scored offline exactly as
    /// the daemon serves it.
    pub fn live(&self) -> Preprocessing {
        Preprocessing {
            mode: FilterMode::Causal,
            sample_rate_hz: SAMPLE_RATE_HZ,
            ..self.clone()
        }
    }
}

/// Where a model came from: enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Checkpoint the weights were read from (file name only, never a local path).
    pub checkpoint: Option<String>,
    /// sha256 of that checkpoint.
    pub checkpoint_sha256: Option<String>,
    /// The command that made the model.
    pub command: Option<String>,
    /// Training data (name / description).
    pub data: Option<String>,
    /// Train / validation / test split.
    pub split: Option<String>,
    /// Test metrics, name → value.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Free-form notes.
    pub notes: Option<String>,
}

/// The session adaptation a model expects (issue 17): a model whose head was
/// trained on baseline-re-centred features classifies raw ones wrongly, so the
/// card says so, and the daemon defaults to it when its config has no
/// `adaptation:` section. Optional: cards without it load as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardAdaptation {
    /// `none`, `baseline` or `calibration`.
    pub mode: crate::adapt::Mode,
    /// `baseline`: seconds of unlabelled rest at the session start.
    #[serde(default = "default_baseline_s")]
    pub baseline_s: f64,
    /// The features the head takes: `logits`, `bandpower` or `both`
    /// (absent: as the population head was trained, else `logits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// The head trained on other people (`labram_core::adapt::PopulationModel`
    /// YAML), a path relative to the card's directory; `baseline` needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<String>,
}

fn default_baseline_s() -> f64 {
    60.0
}

/// The feature sets a card's `adaptation.features` may name.
pub const ADAPTATION_FEATURES: [&str; 3] = ["logits", "bandpower", "both"];

/// The model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub format: u32,
    /// Architecture name, e.g. `labram_base_patch200_200`.
    pub architecture: String,
    /// `false` for untrained (e.g. golden seeded) weights: predictions mean nothing.
    pub trained: bool,
    /// What the model classifies.
    pub task: String,
    /// Class names, one per output (one name per logit; a single logit is binary).
    pub classes: Vec<String>,
    /// Electrode names, in the order the model's `eeg` input expects.
    pub channels: Vec<String>,
    /// Samples per patch (200).
    pub patch_size: usize,
    /// Sample rate the model sees (200).
    pub sample_rate_hz: f64,
    /// Patches per window the model was trained on.
    pub window_patches: usize,
    /// Hop between windows in seconds the card recommends.
    pub hop_s: f64,
    pub preprocessing: Preprocessing,
    #[serde(default)]
    pub provenance: Provenance,
    /// The session adaptation the model expects (absent: none, the model's own softmax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<CardAdaptation>,
}

/// Errors reading or checking a card. Each names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("model card {path} not found: an exported model needs its card (`{stem}.yaml`) beside it; re-export with `labram-trainer export`")]
    Missing { path: PathBuf, stem: String },
    #[error("cannot read model card {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model card {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model card {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ModelCard {
    /// Path of the card that belongs to a model file (`m.onnx` → `m.yaml`).
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("yaml")
    }

    /// Reads and checks the card beside `model`.
    pub fn load_for_model(model: &Path) -> Result<Self, CardError> {
        let path = Self::path_for(model);
        if !path.exists() {
            let stem = model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(CardError::Missing { path, stem });
        }
        Self::load(&path)
    }

    /// Reads and checks a card file.
    pub fn load(path: &Path) -> Result<Self, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let card: ModelCard = serde_norway::from_str(&text).map_err(|e| CardError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        card.validate().map_err(|message| CardError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(card)
    }

    /// Writes the card as YAML.
    pub fn save(&self, path: &Path) -> Result<(), CardError> {
        let text = self.to_yaml();
        std::fs::write(path, text).map_err(|source| CardError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The card as YAML text (deterministic: same card, same bytes).
    pub fn to_yaml(&self) -> String {
        let body = serde_norway::to_string(self).unwrap_or_default();
        format!("# LaBraM model card (labramd format {CARD_FORMAT})\n{body}")
    }

    /// Consistency checks; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != CARD_FORMAT {
            return Err(format!(
                "format {} is not supported (this build reads format {CARD_FORMAT}); re-export the model",
                self.format
            ));
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty: list one name per model output".into());
        }
        if self.channels.is_empty() {
            return Err("`channels` is empty: list the electrodes the model takes".into());
        }
        crate::electrodes::input_chans(&self.channels).map_err(|e| format!("`channels`: {e}"))?;
        if self.patch_size != PATCH_SIZE {
            return Err(format!(
                "`patch_size` is {}, LaBraM patches are {PATCH_SIZE} samples",
                self.patch_size
            ));
        }
        if (self.sample_rate_hz - SAMPLE_RATE_HZ).abs() > 1e-9 {
            return Err(format!(
                "`sample_rate_hz` is {}, LaBraM runs at {SAMPLE_RATE_HZ} Hz",
                self.sample_rate_hz
            ));
        }
        if self.window_patches == 0 || self.window_patches > MAX_PATCHES {
            return Err(format!(
                "`window_patches` is {}; it must be 1..={MAX_PATCHES} (the time embedding has {MAX_PATCHES} rows)",
                self.window_patches
            ));
        }
        if self.hop_s.is_nan() || self.hop_s <= 0.0 {
            return Err(format!("`hop_s` is {}; it must be > 0 seconds", self.hop_s));
        }
        if let Some(a) = &self.adaptation {
            if !(a.baseline_s.is_finite() && a.baseline_s > 0.0) {
                return Err(format!(
                    "`adaptation.baseline_s` is {}; it must be > 0 seconds",
                    a.baseline_s
                ));
            }
            if let Some(f) = a
                .features
                .as_deref()
                .filter(|f| !ADAPTATION_FEATURES.contains(f))
            {
                return Err(format!(
                    "`adaptation.features` is `{f}`; use one of {}",
                    ADAPTATION_FEATURES.join(", ")
                ));
            }
            if a.mode == crate::adapt::Mode::Baseline && a.population.is_none() {
                return Err("`adaptation.mode` is baseline but `adaptation.population` is missing: name the head trained on other people's re-centred features (a file beside the card)".into());
            }
        }
        Ok(())
    }

    /// The population head file of `adaptation.population`, resolved against
    /// the directory of the card of `model`.
    pub fn population_path(&self, model: &Path) -> Option<PathBuf> {
        let rel = self.adaptation.as_ref()?.population.as_deref()?;
        let card = Self::path_for(model);
        Some(
            card.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(rel),
        )
    }

    /// Electrode indices for the ONNX `input_chans` input.
    pub fn input_chans(&self) -> Vec<i64> {
        crate::electrodes::input_chans(&self.channels).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            format: CARD_FORMAT,
            architecture: "labram_base_patch200_200".into(),
            trained: false,
            task: "golden parity checkpoint".into(),
            classes: vec!["a".into(), "b".into()],
            channels: vec!["FP1".into(), "CZ".into()],
            patch_size: 200,
            sample_rate_hz: 200.0,
            window_patches: 4,
            hop_s: 1.0,
            preprocessing: Preprocessing::default(),
            provenance: Provenance::default(),
            adaptation: None,
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        let c = card();
        c.save(&ModelCard::path_for(&model)).unwrap();
        assert_eq!(ModelCard::load_for_model(&model).unwrap(), c);
        assert_eq!(c.input_chans(), vec![0, 1, 42]);

        let mut bad = card();
        bad.window_patches = 17;
        assert!(bad.validate().unwrap_err().contains("window_patches"));
        let mut bad = card();
        bad.channels = vec!["FP9".into()];
        assert!(bad.validate().unwrap_err().contains("FP9"));
    }

    #[test]
    fn adaptation_section_is_optional_and_checked() {
        // A card without the section writes no `adaptation` key (old readers
        // and byte-compared cards are unaffected) and reads back as None.
        let c = card();
        assert!(!c.to_yaml().contains("adaptation"));
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        let text = c.to_yaml()
            + "adaptation:\n  mode: baseline\n  features: bandpower\n  population: m.population.yaml\n";
        std::fs::write(ModelCard::path_for(&model), &text).unwrap();
        let got = ModelCard::load_for_model(&model).unwrap();
        let a = got.adaptation.clone().unwrap();
        assert_eq!(a.mode, crate::adapt::Mode::Baseline);
        assert_eq!(a.baseline_s, 60.0);
        assert_eq!(
            got.population_path(&model),
            Some(dir.path().join("m.population.yaml"))
        );
        let bad = text.replace("features: bandpower", "features: pixels");
        std::fs::write(ModelCard::path_for(&model), bad).unwrap();
        let e = ModelCard::load_for_model(&model).unwrap_err().to_string();
        assert!(e.contains("`adaptation.features` is `pixels`"), "{e}");
        let bad = text.replace("  population: m.population.yaml\n", "");
        std::fs::write(ModelCard::path_for(&model), bad).unwrap();
        let e = ModelCard::load_for_model(&model).unwrap_err().to_string();
        assert!(e.contains("`adaptation.population` is missing"), "{e}");
    }

    #[test]
    fn missing_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("x.onnx");
        let err = ModelCard::load_for_model(&model).unwrap_err();
        assert!(err.to_string().contains("x.yaml"), "{err}");
        let text = card()
            .to_yaml()
            .replace("trained: false", "trained: false\nbogus: 1");
        std::fs::write(dir.path().join("x.yaml"), text).unwrap();
        let err = ModelCard::load_for_model(&model).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
