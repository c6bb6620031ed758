//! One file per subcommand: its clap arguments and its `run`.
pub mod cross_validate;
pub mod evaluate;
pub mod export;
pub mod make_dataset;
pub mod quantize;
pub mod sessions;
pub mod tokenize;
pub mod train;
