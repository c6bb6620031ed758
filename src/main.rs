//! `labramd`: live LaBraM inference on an LSL EEG stream.
//!
//! * `labramd run --config FILE`: the daemon (LSL in → preprocessing → ONNX Runtime
//!   → LSL out, Prometheus metrics on `/metrics`, health on `/healthz`).
//! * `labramd replay FILE...`: streams EDF/EDF+/BDF recordings back to back as one
//!   LSL outlet in real time, their annotations as markers (the demo source, and a
//!   test tool when no amplifier is attached).
//!
//! This file is only the command line; the daemon's wiring lives in `main/run.rs`
//! and every stage in the library (`labramd::{acquisition, window, inference,
//! publish, metrics}`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "main/run.rs"]
mod run;

#[derive(Parser)]
#[command(
    name = "labramd",
    version,
    about = "Live LaBraM EEG inference: LSL in, the paper's preprocessing, ONNX Runtime, LSL out, Prometheus metrics",
    after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=labramd=debug) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: classify an LSL EEG stream and publish class probabilities.
    Run {
        /// YAML configuration (see configs/demo.yaml). Relative paths inside it are
        /// resolved against the current directory.
        #[arg(long, short)]
        config: PathBuf,
        /// Print every prediction to stdout (time, class, probability, latency).
        #[arg(long)]
        print: bool,
        /// At shutdown, write a JSON summary (per-window timings, inference time,
        /// CPU time, peak memory, counters) to this file.
        #[arg(long, value_name = "FILE")]
        summary: Option<PathBuf>,
    },
    /// Stream EDF / EDF+ / BDF recordings as an LSL outlet in real time, like an amplifier
    ///
    /// Several files play back to back as one stream (same channels, units and rate;
    /// timestamps run on without a gap). The files' EDF+ annotations, and with several
    /// files each file's stem at its start, go out on the marker stream `<name>-markers`,
    /// stamped on the EEG's clock.
    ///
    /// Examples:
    ///
    ///   labramd replay data/eegmat-Subject25_2.edf --loop
    ///
    ///   labramd replay data/eegmat-Subject25_1.edf data/eegmat-Subject25_2.edf --loop --name labramd-demo
    ///
    ///   labramd replay S001R04.edf --speed 4 --wait-consumers 30   # annotations on S001R04-markers
    #[command(verbatim_doc_comment)]
    Replay(labramd::replay::ReplayArgs),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            print,
            summary,
        } => run::run(run::RunOptions {
            config,
            print,
            summary,
        }),
        Command::Replay(args) => labramd::replay::run(&args).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labramd: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
