//! labramd: live LaBraM EEG inference.
//!
//! The library is split by pipeline stage. The first group has no I/O beyond files
//! and pulls in neither LSL, tokio nor ONNX Runtime, so the trainer
//! (`labram-trainer`) shares it and a model trained offline sees exactly what the
//! daemon feeds it live:
//!
//! * [`electrodes`]: the 128 electrode names, `input_chans`, label → electrode.
//! * [`recording`]: EDF / EDF+ / BDF reader.
//! * [`dsp`]: band-pass, notch, resampler; the causal (online) and zero-phase chains.
//! * [`card`]: the model card written beside every exported ONNX model.
//!
//! Behind the `onnx` feature, [`inference`] runs an exported model with ONNX Runtime.
//! Behind `daemon` (default): [`config`], [`acquisition`] (LSL inlet → ring buffer),
//! [`window`], [`publish`] (LSL outlets), [`metrics`] (Prometheus) and [`replay`].

// Moved to `labram-core` (issue 16); re-exported so that paths stay stable.
pub use labram_core::{card, dsp, electrodes};
pub mod recording;

#[cfg(feature = "onnx")]
pub mod inference;

#[cfg(feature = "daemon")]
pub mod acquisition;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod publish;
#[cfg(feature = "daemon")]
pub mod replay;
#[cfg(feature = "daemon")]
pub mod window;
