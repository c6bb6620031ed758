//! One file per subcommand: its clap arguments and its `run`.
pub mod evaluate;
pub mod export;
pub mod make_dataset;
pub mod quantize;
pub mod tokenize;
pub mod train;
