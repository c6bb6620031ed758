//! labramd: the live LaBraM EEG inference daemon.
//!
//! What the daemon shares with the trainer (electrodes, recordings, DSP, the model
//! card, the window stage, session adaptation, ONNX inference) lives in
//! `labram-core`; it is re-exported here so that `labramd::window` and the like
//! name the same code the trainer's `evaluate` runs. This crate adds what only a
//! live daemon needs, one module per stage:
//!
//! * [`config`]: the daemon's YAML, raw → checked → typed.
//! * [`acquisition`]: the LSL inlet thread (timestamp post-processing, gaps,
//!   reconnects) → lock-free ring.
//! * [`publish`]: the LSL outlets (probabilities, markers).
//! * [`adaptation`], [`markers`]: the session adaptation of `labram_core::adapt`
//!   driven live (session time, calibration markers, the state file).
//! * [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`.
//! * [`replay`]: a recording streamed as an LSL outlet (demo source, test tool).
//!
//! It never links libtorch: models arrive as ONNX files with their card.

pub use labram_core::{adapt, card, dsp, electrodes, inference, recording, window};

pub mod acquisition;
pub mod adaptation;
pub mod config;
pub mod markers;
pub mod metrics;
pub mod publish;
pub mod replay;
