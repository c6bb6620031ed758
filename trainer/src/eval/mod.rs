//! Evaluation: the paper's metrics, the classical band-power baseline, and
//! running an exported model over labelled recordings or datasets.
//!
//! * [`metrics`]: balanced accuracy, AUROC, PR-AUC (binary); balanced accuracy,
//!   Cohen's kappa, weighted F1 (multi-class), as scikit-learn computes them.
//! * [`baseline`]: log / relative band power per channel ([`bandpower`]),
//!   standardised, L2 logistic regression ([`logreg`]).
//! * [`model`]: `labram-trainer evaluate` on ONNX models, windowed as the daemon does.

pub mod bandpower;
pub mod baseline;
pub mod logreg;
pub mod metrics;
pub mod model;

pub use metrics::Report;
