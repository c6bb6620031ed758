//! labram-core: the ground the live daemon (`labramd`) and the trainer
//! (`labram-trainer`) share, so that a model trained offline sees exactly what the
//! daemon feeds it live.
//!
//! * [`electrodes`]: the 128 electrode names, `input_chans`, label → electrode.
//! * [`dsp`]: band-pass, notch, resampler; the causal (online) and zero-phase chains.
//! * [`card`]: the model card written beside every exported ONNX model.
//! * [`adapt`]: session protocols (none, baseline, calibration) that adapt a
//!   classifier to the person wearing the cap, window by window.
//!
//! It does no network I/O and links neither LSL, tokio, Prometheus nor libtorch.

pub mod adapt;
pub mod card;
pub mod dsp;
pub mod electrodes;
