//! The latency floor of the end-to-end harness (`../shared/bench/e2e.sh`): a relay that
//! does nothing but pass each window's end from the input stream to the output stream.
//!
//! Why: issue 7 asks that the daemon add at most 1 ms (p99) above its own inference
//! time, measured from the producer's timestamp of a window's last sample to the
//! receiver's `local_clock()` at receipt. That span also holds what no system under test
//! can remove: the producer's lateness (it sleeps until a chunk is due, then pushes it)
//! and two LSL hops (producer → system, system → receiver), each an outlet's sender
//! thread, a TCP socket and an inlet's receiver thread. This relay measures that floor
//! on the same machine in the same run: it pulls with a blocking `pull_sample` (the way
//! labramd's acquisition thread does), and at every window end (every `hop_s` once
//! `window_s` of samples have arrived) pushes a two-channel sample stamped with that
//! sample's LSL time, with no DSP, no queue and no model in between.
//!
//! ```text
//! cargo build --release --features daemon --example lsl_floor
//! ../shared/bench/e2e.sh target/floor 120 target/release/examples/lsl_floor
//! ```
//! (`scripts/bench-e2e.sh` runs it beside the other systems when `FLOOR=1`.)
use anyhow::{bail, Context};
use clap::Parser;
use labramd::metrics::process;
use lsl::{ExPushable, Pullable};

/// Relays window ends from an LSL stream to another with no processing.
#[derive(Parser)]
struct Args {
    /// Input stream name (the harness's producer).
    #[arg(long, default_value = "anchor-amp")]
    input: String,
    /// Output stream name (what the harness's receiver reads).
    #[arg(long, default_value = "anchor-pred")]
    output: String,
    /// Window length in seconds (the benchmark's 10 patches of 1 s).
    #[arg(long, default_value_t = 10.0)]
    window_s: f64,
    /// Hop between window ends in seconds.
    #[arg(long, default_value_t = 1.0)]
    hop_s: f64,
    /// How long to wait for the input stream, in seconds.
    #[arg(long, default_value_t = 60.0)]
    resolve_timeout_s: f64,
    /// Write what `scripts/bench-e2e.sh` reads (the same keys as `labramd run
    /// --summary`: relayed timestamps, zero inference time, CPU use, peak memory).
    #[arg(long)]
    summary: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !(a.window_s > 0.0 && a.hop_s > 0.0) {
        bail!(
            "--window-s {} and --hop-s {} must both be positive (the benchmark's are 10 and 1)",
            a.window_s,
            a.hop_s
        );
    }
    let info = lsl::StreamInfo::new(
        &a.output,
        "Probabilities",
        2,
        lsl::IRREGULAR_RATE,
        lsl::ChannelFormat::Float32,
        "lsl-floor",
    )
    .map_err(|e| anyhow::anyhow!("output stream {}: {e:?}", a.output))?;
    let outlet = lsl::StreamOutlet::new(&info, 0, 360)
        .map_err(|e| anyhow::anyhow!("output stream {}: {e:?}", a.output))?;
    let found = lsl::resolve_byprop("name", &a.input, 1, a.resolve_timeout_s).unwrap_or_default();
    let Some(info) = found.into_iter().next() else {
        bail!(
            "no LSL stream named {} within {} s",
            a.input,
            a.resolve_timeout_s
        );
    };
    let rate = info.nominal_srate();
    if rate <= 0.0 {
        bail!("stream {} has no regular rate ({rate} Hz)", a.input);
    }
    let n_ch = info.channel_count().max(1) as usize;
    let inlet = lsl::StreamInlet::new(&info, 30, 0, false)
        .map_err(|e| anyhow::anyhow!("inlet on {}: {e:?}", a.input))?;
    inlet
        .open_stream(10.0)
        .map_err(|e| anyhow::anyhow!("inlet on {}: {e:?}", a.input))?;
    let tc = inlet.time_correction(5.0).unwrap_or(0.0);
    let window = (a.window_s * rate).round() as u64;
    let hop = (a.hop_s * rate).round().max(1.0) as u64;
    eprintln!(
        "[lsl_floor] {} ({n_ch} ch, {rate} Hz) → {}: every {hop} samples after {window}; time correction {:.1} µs",
        a.input,
        a.output,
        tc * 1e6
    );
    let mut buf = vec![0.0f32; n_ch];
    let out = vec![0.5f32, 0.5];
    let (mut n, mut idle) = (0u64, 0u32);
    let mut relayed: Vec<f64> = Vec::new();
    let mut cpu0 = None;
    loop {
        let ts = match inlet.pull_sample_buf(&mut buf, 0.5) {
            Ok(ts) => ts,
            // The producer has finished and closed its outlet.
            Err(lsl::Error::StreamLost) if n > 0 => break,
            Err(e) => bail!("pull from {}: {e:?}", a.input),
        };
        if ts == 0.0 {
            idle += 1;
            if n > 0 && idle >= 10 {
                break;
            }
            continue;
        }
        if n == 0 {
            cpu0 = Some((process::cpu_seconds().unwrap_or(0.0), lsl::local_clock()));
        }
        idle = 0;
        n += 1;
        if n >= window && (n - window).is_multiple_of(hop) {
            outlet
                .push_sample_ex(&out, ts + tc, true)
                .map_err(|e| anyhow::anyhow!("push to {}: {e:?}", a.output))?;
            relayed.push(ts + tc);
        }
    }
    eprintln!(
        "[lsl_floor] {n} samples in, {} window ends relayed",
        relayed.len()
    );
    if let Some(path) = &a.summary {
        let cpu_percent = cpu0.map_or(0.0, |(c0, t0)| {
            100.0 * (process::cpu_seconds().unwrap_or(c0) - c0)
                / (lsl::local_clock() - t0).max(1e-9)
        });
        let summary = serde_json::json!({
            "system": "lsl_floor (no processing)",
            "windows": relayed.len(),
            "windows_dropped": {},
            "ring_overruns": 0,
            "cpu_percent": cpu_percent,
            "peak_rss_mb": process::peak_rss_mib(),
            "per_window": {"t_last": relayed, "infer_ms": vec![0.0; relayed.len()]},
        });
        std::fs::write(path, serde_json::to_string(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
