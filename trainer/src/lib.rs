//! labram-trainer: LaBraM in Rust on tch.
pub mod checkpoint;
pub mod export;
pub mod model;
