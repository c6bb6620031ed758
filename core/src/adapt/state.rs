//! What a session learned about its wearer, as a file: the daemon writes it
//! when calibration ends and reloads it at start, so a restart needs no new
//! calibration. It names the feature space (model) and protocol it belongs to.

use std::io::Write;
use std::path::Path;

use super::features::FeatureSpace;
use super::head::Head;
use super::{Mode, StateError};

/// Version of the state file layout.
pub const STATE_FORMAT: u32 = 1;

/// A person's adaptation: everything needed to classify their windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PersonState {
    pub format: u32,
    /// The features (and so the model) this state belongs to.
    pub space: FeatureSpace,
    pub mode: Mode,
    pub classes: Vec<String>,
    /// `baseline`: the mean features of the baseline windows, subtracted from
    /// every window before the head.
    pub centre: Option<Vec<f64>>,
    /// The head that classifies: the population's (`none`, `baseline`) or the
    /// person's own (`calibration`).
    pub head: Head,
    /// Windows the statistics or head were learned from.
    pub windows: usize,
}

impl PersonState {
    /// Class probabilities of one window's features.
    pub fn classify(&self, features: &[f64]) -> Vec<f64> {
        match &self.centre {
            Some(c) => {
                let x: Vec<f64> = features.iter().zip(c).map(|(v, m)| v - m).collect();
                self.head.probabilities(&x)
            }
            None => self.head.probabilities(features),
        }
    }

    /// Refuses a state made for other features, another protocol or classes.
    pub fn check(
        &self,
        space: &FeatureSpace,
        mode: Mode,
        classes: &[String],
    ) -> Result<(), StateError> {
        if &self.space != space {
            return Err(StateError::OtherSpace {
                got: self.space.to_string(),
                want: space.to_string(),
            });
        }
        if self.mode != mode {
            return Err(StateError::OtherMode {
                got: self.mode,
                want: mode,
            });
        }
        if self.classes != classes {
            return Err(StateError::OtherClasses {
                got: self.classes.join(", "),
                want: classes.join(", "),
            });
        }
        Ok(())
    }

    /// YAML text.
    pub fn to_yaml(&self) -> String {
        let body = serde_norway::to_string(self).unwrap_or_default();
        format!("# labramd session state (format {STATE_FORMAT})\n{body}")
    }

    /// Reads a state file (`path` names it in errors).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, StateError> {
        let s: Self = serde_norway::from_str(text).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if s.format != STATE_FORMAT {
            return Err(StateError::Format {
                path: path.to_path_buf(),
                got: s.format,
                want: STATE_FORMAT,
            });
        }
        Ok(s)
    }

    /// Loads a state file.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Writes atomically: a temporary file beside `path`, flushed to disk, then
    /// renamed over it, so a crash leaves the old state or the new, never half.
    pub fn save_atomic(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(self.to_yaml().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)
    }
}
