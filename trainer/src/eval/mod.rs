//! Evaluation: the paper's metrics, the classical band-power baseline, and
//! running an exported model over labelled recordings or datasets.
//!
//! * [`metrics`]: balanced accuracy, AUROC, PR-AUC (binary); balanced accuracy,
//!   Cohen's kappa, weighted F1 (multi-class), as scikit-learn computes them.
//! * [`baseline`]: log / relative band power per channel ([`bandpower`]),
//!   standardised, L2 logistic regression ([`logreg`]).
//! * [`model`]: `labram-trainer evaluate` on ONNX models, windowed as the daemon does.
//! * [`sessions`]: sessions (a person's recordings in order, streamed as the
//!   daemon receives them) under the protocols of [`labram_core::adapt`].

pub mod baseline;
pub mod logits;
pub mod metrics;
pub mod model;
pub mod people;
pub mod sessions;

// Moved to `labram_core::adapt` (issue 17), where the daemon's session
// protocols use them too; re-exported so that trainer paths stay stable.
pub use labram_core::adapt::{bandpower, logreg};

pub use metrics::Report;
