//! `labramd replay`: streams a recording as an LSL outlet in real time.

use std::path::PathBuf;

/// Arguments of `labramd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// EDF, EDF+ or BDF file.
    pub file: PathBuf,
    /// Playback speed (2 = twice real time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start again at the end (timestamps keep increasing).
    #[arg(long = "loop")]
    pub looping: bool,
    /// LSL stream name (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// LSL stream type.
    #[arg(long = "type", default_value = "EEG")]
    pub stream_type: String,
    /// Samples are pushed in chunks of this many milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub chunk_ms: f64,
}

/// Errors of `replay`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay is not available yet")]
    NotYet,
}

/// Runs `labramd replay`.
pub fn run(_args: &ReplayArgs) -> Result<(), ReplayError> {
    Err(ReplayError::NotYet)
}
