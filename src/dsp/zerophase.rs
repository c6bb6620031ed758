//! Zero-phase (offline) chain: MNE-Python's `raw.filter(0.1, 75)`,
//! `raw.notch_filter(50)`, `raw.resample(200)` (being written).

use super::DspError;
use crate::card::Preprocessing;

/// Whole-signal zero-phase preprocessing (MNE's chain).
pub fn preprocess(
    _signals: &[Vec<f32>],
    _input_rate_hz: f64,
    _pre: &Preprocessing,
) -> Result<Vec<Vec<f32>>, DspError> {
    Err(DspError::Design(
        "zero-phase mode is not implemented yet".into(),
    ))
}
