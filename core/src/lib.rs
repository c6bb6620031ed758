//! labram-core: the ground the live daemon (`labramd`) and the trainer
//! (`labram-trainer`) share, so that a model trained offline sees exactly what the
//! daemon feeds it live.
//!
//! * [`electrodes`]: the 128 electrode names, `input_chans`, label → electrode.
//! * [`recording`]: EDF / EDF+ / BDF reader, and XDF (LabRecorder) read as pyxdf reads it.
//! * [`dsp`]: band-pass, notch, resampler; the causal (online) and zero-phase chains.
//! * [`card`]: the model card written beside every exported ONNX model.
//! * [`window`]: the window stage (input frames → `[channels, patches, 200]`
//!   windows on the hop grid, every hop point a window or a counted drop); the
//!   daemon feeds it live, `labram-trainer evaluate` feeds it recordings.
//! * [`plan`]: input planning: a source's labels, units and rate + the card → the
//!   window stage's config, or an error naming the source, the problem and the fix.
//! * [`adapt`]: session protocols (none, baseline, calibration) that adapt a
//!   classifier to the person wearing the cap, window by window.
//! * [`inference`] (feature `onnx`): an exported model run by ONNX Runtime.
//!
//! It does no network I/O and links neither LSL, tokio, Prometheus nor libtorch.

pub mod adapt;
pub mod card;
pub mod dsp;
pub mod electrodes;
#[cfg(feature = "onnx")]
pub mod inference;
pub mod plan;
pub mod recording;
pub mod window;
