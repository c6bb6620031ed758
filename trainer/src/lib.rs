//! labram-trainer: LaBraM in Rust on tch.
//!
//! * [`model`]: the three networks (fine-tuning transformer, masked-EEG-modeling
//!   model, VQ-NSP tokenizer), with parameter names equal to the official state dicts.
//! * [`checkpoint`]: a safe reader for official `.pth` files (no Python, no code
//!   execution) and the project's own safetensors checkpoints.
//! * [`export`]: the ONNX graph writer and model card.
//! * [`data`]: dataset makers and loaders (on the daemon crate's `recording` and `dsp`).
//! * [`train`]: optimiser, schedules, losses, loops, resume.
//! * [`eval`]: the paper's metrics and the classical band-power baseline.
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod export;
pub mod memory;
pub mod model;
pub mod train;
