//! Session adaptation: how a classifier adapts to the person wearing the cap.
//!
//! Between people, EEG differs far more than between rest and task within one
//! person, so a model trained on other people classifies a newcomer near chance.
//! Every online BCI tool that works in a lab calibrates each session; this module
//! is that calibration, written once for the daemon (window by window, live) and
//! `labram-trainer evaluate` (the same calls over recorded sessions).
//!
//! Three protocols ([`Mode`]):
//! * `none`: a population head trained on other people (or a model's own
//!   softmax) classifies every window as it comes;
//! * `baseline`: the first `baseline_s` seconds of the session (the wearer at
//!   rest, no labels) give the mean of each feature; every later window is
//!   re-centred by it before a population head trained on re-centred features
//!   (measured outside the project: re-centring log band power lifts balanced
//!   accuracy from 0.68 to 0.76 on eegmat, more on unseen people);
//! * `calibration`: labelled blocks at the session start (a marker names the
//!   class of the block that follows; `calibration_s` caps each class) fit a
//!   per-person head: standardisation + L2 logistic regression (`C = 1`,
//!   balanced classes), a few milliseconds on a CPU.
//!
//! [`Session`] is the streaming type: windows arrive in order with the time of
//! their last sample (seconds since the session started) and their features; it
//! answers [`Answer::Calibrating`] with the seconds left, or
//! [`Answer::Classified`]. It keeps no window after answering, so an answer can
//! never depend on a later window. What it learned is a [`PersonState`]
//! (serde, YAML) naming the [`FeatureSpace`] it belongs to, so that a restart
//! resumes without recalibrating and a state made for another model is refused.
//!
//! Features come from a [`FeatureExtractor`]: [`LogBandPower`] here; a model's
//! logits (or pooled features) behind the same trait where ONNX Runtime lives.
//!
//! The daemon's loop, in short (a labelled calibration of 8 s rest + 4 s task
//! on 4-s windows, band power on 2 channels):
//!
//! ```
//! use labram_core::adapt::{Answer, FeatureExtractor, LogBandPower, Protocol, Session, SessionSpec};
//!
//! let mut bp = LogBandPower::new(2, 800, 200.0);
//! let mut session = Session::new(SessionSpec {
//!     protocol: Protocol::calibration(vec![("rest".into(), 8.0), ("task".into(), 4.0)]),
//!     classes: vec!["rest".into(), "task".into()],
//!     space: bp.space(),
//!     window_s: 4.0,
//!     population: None, // calibration needs no head trained on other people
//! })?;
//! let window = |f: f64| -> Vec<f32> {
//!     (0..1600).map(|i| (f * (i % 800) as f64 / 200.0 * 6.283).sin() as f32 * 10.0).collect()
//! };
//! session.marker(0.0, Some("rest"))?; // a marker names the class of the block that follows
//! for (end_s, freq) in [(4.0, 10.0), (8.0, 10.5), (12.0, 20.0), (16.0, 19.0)] {
//!     if end_s == 12.0 {
//!         session.marker(8.0, Some("task"))?;
//!     }
//!     let mut features = Vec::new();
//!     bp.extract(&window(freq), &mut features)?;
//!     match session.push(end_s, &features)? {
//!         Answer::Calibrating { seconds_left } => println!("calibrating, {seconds_left} s left"),
//!         Answer::Classified { probabilities } => println!("p = {probabilities:?}"),
//!     }
//! }
//! // What was learned, for the `state:` file (reloaded with `Session::resume`).
//! let state = session.state().expect("calibrated after 12 s");
//! assert_eq!(state.windows, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bandpower;
mod error;
mod features;
mod head;
#[cfg(feature = "onnx")]
mod logits;
pub mod logreg;
mod session;
pub mod standardize;
mod state;

pub use error::{AdaptError, StateError};
pub use features::{Concat, FeatureError, FeatureExtractor, FeatureSpace, LogBandPower};
pub use head::{Head, PopulationModel, CALIBRATION_C, POPULATION_C};
#[cfg(feature = "onnx")]
pub use logits::ModelLogits;
pub use session::{Answer, BaselineStats, Session, SessionSpec};
pub use state::{PersonState, STATE_FORMAT};

use std::fmt;
use std::str::FromStr;

/// Which protocol a session follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Classify from the first window, with a head trained on other people.
    None,
    /// Re-centre by the mean features of an unlabelled rest baseline.
    Baseline,
    /// Fit a per-person head on labelled calibration blocks.
    Calibration,
}

impl Mode {
    /// All modes, in the order tables list them.
    pub const ALL: [Mode; 3] = [Mode::None, Mode::Baseline, Mode::Calibration];

    /// The name used in configs, flags and state files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Baseline => "baseline",
            Mode::Calibration => "calibration",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = AdaptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AdaptError::UnknownMode(s.to_string()))
    }
}

/// What a session does before it classifies, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub mode: Mode,
    /// `baseline`: seconds of unlabelled rest at the session start.
    pub baseline_s: f64,
    /// `calibration`: seconds of labelled data asked per class, `(class, s)`.
    pub calibration_s: Vec<(String, f64)>,
}

impl Protocol {
    /// `none`.
    pub fn none() -> Self {
        Self {
            mode: Mode::None,
            baseline_s: 0.0,
            calibration_s: Vec::new(),
        }
    }

    /// `baseline` over the first `baseline_s` seconds.
    pub fn baseline(baseline_s: f64) -> Self {
        Self {
            mode: Mode::Baseline,
            baseline_s,
            calibration_s: Vec::new(),
        }
    }

    /// `calibration` with these seconds per class.
    pub fn calibration(calibration_s: Vec<(String, f64)>) -> Self {
        Self {
            mode: Mode::Calibration,
            baseline_s: 0.0,
            calibration_s,
        }
    }
}

#[cfg(test)]
mod tests;
