//! A model's logits as session features: moved to
//! [`labram_core::adapt::ModelLogits`] so that the daemon builds the very same
//! feature space as `evaluate`; re-exported here for the trainer's paths.

pub use labram_core::adapt::ModelLogits;
