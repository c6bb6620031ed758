//! Errors of the session protocols. Each message says what to change.

use std::path::PathBuf;

use super::Mode;

/// Why a session cannot be built, fed or finished.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    #[error("adaptation mode `{0}` is not known: use none, baseline or calibration")]
    UnknownMode(String),
    #[error("class `{class}` is not one of the model's classes ({classes}); name one of those in the calibration markers and calibration_s")]
    UnknownClass { class: String, classes: String },
    #[error("calibration_s does not name class `{class}`: a calibration head needs labelled data of every class ({classes}); add `{class}: <seconds>`")]
    MissingClass { class: String, classes: String },
    #[error("{what} is {value} s but a window lasts {window_s} s: ask for at least one window ({window_s} s)")]
    TooShort {
        what: String,
        value: f64,
        window_s: f64,
    },
    #[error("`{mode}` needs a head trained on other people for these features ({space}): train one on training sessions (e.g. `--train-session`), or use `calibration`")]
    NoPopulationHead { mode: Mode, space: String },
    #[error("the population head was trained for {got}, but this session uses {want}: train it with the same features and protocol")]
    PopulationMismatch { got: String, want: String },
    #[error("a window has {got} features but the session's feature space ({space}) has {want}")]
    FeatureDim {
        got: usize,
        want: usize,
        space: String,
    },
    #[error("a window's features are not finite (NaN or Inf): skip such windows before the session (the daemon counts them as dropped)")]
    NonFinite,
    #[error("a window ending at {end_s:.3} s arrived after one ending at {last_s:.3} s: feed windows in time order")]
    OutOfOrder { end_s: f64, last_s: f64 },
    #[error("calibration incomplete: no `{class}` block: the session needs a `{class}` marker then {want_s:.0} s of `{class}` before it can classify")]
    CalibrationMissing { class: String, want_s: f64 },
    #[error("calibration incomplete: class `{class}` has {got_s:.1} s of the {want_s:.1} s asked; record a longer `{class}` block after its marker, or ask for less (calibration_s / --holdout {class}={got_floor})")]
    CalibrationShort {
        class: String,
        got_s: f64,
        want_s: f64,
        got_floor: u64,
    },
    #[error("baseline incomplete: the session gave {got_s:.1} s of the {want_s:.1} s asked; stream at least {want_s:.0} s of rest first, or lower baseline_s (--baseline-s)")]
    BaselineShort { got_s: f64, want_s: f64 },
    #[error("calibration class `{class}` has no window inside its block: a block must last at least one window ({window_s} s)")]
    NoWindows { class: String, window_s: f64 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why a saved [`super::PersonState`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid state (truncated or edited?): {source}; delete it to calibrate again")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("state file {path} is format {got}, this build reads format {want}; delete it to calibrate again")]
    Format { path: PathBuf, got: u32, want: u32 },
    #[error("the state was learned for {got}, not for {want} (another model or feature extractor): point `state:` at another file, or delete it to calibrate again")]
    OtherSpace { got: String, want: String },
    #[error("the state was learned under `{got}`, but the session asks for `{want}`: point `state:` at another file, or delete it to calibrate again")]
    OtherMode { got: Mode, want: Mode },
    #[error("the state has classes {got}, the model {want}: delete it to calibrate again")]
    OtherClasses { got: String, want: String },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
