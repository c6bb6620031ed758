//! Training: the official LaBraM recipe (VQ-NSP tokenizer, masked EEG modeling,
//! fine-tuning) on tch, with checkpoints that resume bit for bit.
//!
//! The pieces are small and separately tested so that each quirk of the official
//! recipe (LABRAM.md §6) has one home:
//! * [`config`]: the YAML run files (`configs/train-*.yaml`), read raw, then checked
//!   into a typed run with the official defaults applied.
//! * [`optim`]: AdamW with torch's exact math, parameter groups (weight-decay
//!   exclusions, layer-wise LR decay) and gradient clipping.
//! * [`schedule`]: per-step linear warm-up then cosine, as the official `cosine_scheduler`.
//! * [`losses`]: label-smoothing cross-entropy, BCE, masked code prediction, accuracy.
//! * [`rng`]: every random draw derived from (seed, epoch, step), which is what makes
//!   resuming exact without saving libtorch's generator state.
//! * [`state`]: checkpoint directories (weights, optimizer moments, run state).
//! * [`logbook`]: JSON-lines log, progress bar; [`plots`]: PNG curves.
//! * [`publish`]: a finished fine-tuning run exported to ONNX with a complete card.
//! * [`windows`]: the training/evaluation windows in groups of equal electrodes, batching.
//! * [`runner`]: the loop shared by the three stages; [`stages`]: what each stage
//!   computes (the networks of [`crate::model`] on the windows).
pub mod config;
pub mod logbook;
pub mod losses;
pub mod nets;
pub mod optim;
pub mod plots;
pub mod publish;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod session;
pub mod stages;
pub mod state;
pub mod windows;
