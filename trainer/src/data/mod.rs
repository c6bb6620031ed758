//! Datasets: the makers behind `labram-trainer make-dataset` and the loader the
//! training loop, the baseline and `evaluate` read them with.
//!
//! * [`format`]: the fine-tuning dataset format (safetensors shards +
//!   `meta.json`) and [`format::Dataset`], its memory-mapped loader.
//! * [`pretrain`]: the pretraining store, HDF5 in the official layout.
//! * [`makers`]: `pretrain-h5`, `tuab`, `tuev`, `annotated`, `eegmat`;
//!   [`xdf`]: windows locked to the markers of XDF recordings (LabRecorder).
//! * [`prepare`]: recording → chosen electrodes → the paper's preprocessing,
//!   through the daemon crate's `recording`, `electrodes` and `dsp` modules.
//! * [`windows`], [`split`], [`tuh`]: cutting windows, subject-wise splits, the
//!   TUH corpora's layout and `.rec` files.
//! * [`runner`]: parallel, ordered, skip-and-count execution with a progress bar.

pub mod format;
pub mod makers;
pub mod prepare;
pub mod pretrain;
pub mod runner;
pub mod split;
pub mod tuh;
pub mod windows;
pub mod xdf;

pub use format::{Batch, Dataset, Meta};
