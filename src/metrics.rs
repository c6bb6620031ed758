//! Prometheus metrics and the HTTP endpoints `/metrics` and `/healthz`.
//!
//! One [`Metrics`] value owns a private registry (no global state, so tests can run
//! several daemons' worth of metrics in one process) and a handle for every series.
//! The pipeline threads update the handles directly: prometheus' counters, gauges
//! and histograms are atomics, so updating them never blocks a stage. Names follow
//! the Prometheus conventions: prefix `labramd_`, base units (seconds, hertz) in the
//! name, `_total` for counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Why a window was not classified (defined beside the window stage in labram-core).
pub use labram_core::window::DropReason;

/// Every series the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Arrival of a window's last input sample → push of its prediction.
    pub e2e_latency: Histogram,
    /// ONNX Runtime time per window.
    pub inference: Histogram,
    /// DSP time per processed chunk (selection, unit, filters, resampler, windowing).
    pub dsp: Histogram,
    pub samples_received: IntCounter,
    pub windows_published: IntCounter,
    windows_dropped: IntCounterVec,
    /// Input frames that found the acquisition ring full and were not kept.
    pub ring_overruns: IntCounter,
    pub stream_losses: IntCounter,
    pub stream_recoveries: IntCounter,
    pub stream_connected: IntGauge,
    pub input_rate: Gauge,
    pub input_nominal_rate: Gauge,
    /// NaN/Inf values (one per channel and sample) in the model's input channels.
    pub nonfinite_values: IntCounter,
    pub time_correction: Gauge,
    pub cuda_fallback: IntGauge,
    /// Published predictions by winning class (`labramd_predictions_total{class}`).
    predictions: IntCounterVec,
    /// Its series, one per class in marker order, made by
    /// [`Metrics::set_prediction_classes`]: indexed on the hot path, no label lookup.
    prediction_classes: Arc<OnceLock<Vec<IntCounter>>>,
    /// Seconds of baseline / calibration still to come (0 once classifying).
    pub calibration_seconds_left: Gauge,
    /// Windows the session learned from or waited through (not published).
    pub calibration_windows: IntCounter,
    /// Calibration markers, by outcome (`used`: delivered to the session,
    /// `unknown_class`: named no class of the model, ignored).
    calibration_markers: IntCounterVec,
    model_info: GaugeVec,
    build_info: GaugeVec,
    adaptation_info: GaugeVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03,
        0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
    ]
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let h = |name: &str, help: &str, buckets: Vec<f64>| {
            let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram");
            registry.register(Box::new(m.clone())).expect("unique name");
            m
        };
        let c = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(m.clone())).expect("unique name");
            m
        };
        let g = |name: &str, help: &str| {
            let m = Gauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(m.clone())).expect("unique name");
            m
        };
        let ig = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(m.clone())).expect("unique name");
            m
        };
        let e2e_latency = h(
            "labramd_e2e_latency_seconds",
            "Arrival of a window's last input sample to the push of its prediction",
            latency_buckets(),
        );
        let inference = h(
            "labramd_inference_seconds",
            "ONNX Runtime time per window",
            latency_buckets(),
        );
        let dsp = h(
            "labramd_dsp_seconds",
            "DSP time per input chunk (channel selection, unit, filters, resampler, windowing)",
            vec![
                1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2,
            ],
        );
        let windows_dropped = IntCounterVec::new(
            Opts::new(
                "labramd_windows_dropped_total",
                "Windows due on the hop grid but not published, by reason (queue_full, gap, overrun, nonfinite, inference_error, publish_error)",
            ),
            &["reason"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(windows_dropped.clone()))
            .expect("unique name");
        for r in DropReason::ALL {
            windows_dropped.with_label_values(&[r.label()]);
        }
        let predictions = IntCounterVec::new(
            Opts::new(
                "labramd_predictions_total",
                "Predictions published, by winning class (the marker stream's names)",
            ),
            &["class"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(predictions.clone()))
            .expect("unique name");
        registry
            .register(Box::new(process::ProcessCollector::new()))
            .expect("unique name");
        let model_info = GaugeVec::new(
            Opts::new("labramd_model_info", "The model being served (value 1)"),
            &[
                "path",
                "architecture",
                "trained",
                "classes",
                "channels",
                "patches",
                "hop_s",
                "device",
            ],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(model_info.clone()))
            .expect("unique name");
        let build_info = GaugeVec::new(
            Opts::new("labramd_build_info", "Build and runtime versions (value 1)"),
            &["version", "onnxruntime", "liblsl", "features"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique name");
        let adaptation_info = GaugeVec::new(
            Opts::new(
                "labramd_adaptation_info",
                "The session adaptation in use (value 1): mode none | baseline | calibration, features, and whether the state was resumed from the state file",
            ),
            &["mode", "features", "resumed"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(adaptation_info.clone()))
            .expect("unique name");
        let calibration_markers = IntCounterVec::new(
            Opts::new(
                "labramd_calibration_markers_total",
                "Calibration markers received, by outcome (used, unknown_class)",
            ),
            &["outcome"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(calibration_markers.clone()))
            .expect("unique name");
        for o in ["used", "unknown_class"] {
            calibration_markers.with_label_values(&[o]);
        }
        Self {
            calibration_seconds_left: g(
                "labramd_calibration_seconds_left",
                "Seconds of the session's baseline or calibration still to come; no prediction is published while above 0",
            ),
            calibration_windows: c(
                "labramd_calibration_windows_total",
                "Windows cut while the session was still calibrating (baseline or calibration): not published, and not drops",
            ),
            calibration_markers,
            adaptation_info,
            e2e_latency,
            inference,
            dsp,
            samples_received: c(
                "labramd_samples_received_total",
                "Input samples (frames of all channels) pulled from the LSL inlet",
            ),
            windows_published: c(
                "labramd_windows_published_total",
                "Predictions pushed to the output stream",
            ),
            windows_dropped,
            ring_overruns: c(
                "labramd_ring_overruns_total",
                "Input samples dropped because the acquisition ring buffer was full",
            ),
            stream_losses: c(
                "labramd_stream_losses_total",
                "Times the input stream was lost (disconnect or no data for input.stall_timeout_s)",
            ),
            stream_recoveries: c(
                "labramd_stream_recoveries_total",
                "Times the input stream was found again after a loss",
            ),
            stream_connected: ig(
                "labramd_stream_connected",
                "1 while the input stream is connected",
            ),
            input_rate: g(
                "labramd_input_rate_hz",
                "Measured input sample rate over the last seconds",
            ),
            input_nominal_rate: g(
                "labramd_input_nominal_rate_hz",
                "Nominal sample rate declared by the input stream",
            ),
            nonfinite_values: c(
                "labramd_nonfinite_values_total",
                "NaN or infinite values seen in the model's input channels (one per channel and sample: a sample with NaN on 3 channels counts 3)",
            ),
            time_correction: g(
                "labramd_time_correction_seconds",
                "LSL clock offset added to the input stream's timestamps",
            ),
            cuda_fallback: ig(
                "labramd_cuda_fallback",
                "1 when device cuda was asked for but the model runs on CPU",
            ),
            predictions,
            prediction_classes: Arc::default(),
            model_info,
            build_info,
            registry,
        }
    }

    /// Counts one window that was not published.
    pub fn window_dropped(&self, reason: DropReason) {
        self.windows_dropped_n(reason, 1);
    }

    /// Counts `n` windows that were not published (the hop points a gap swallowed).
    pub fn windows_dropped_n(&self, reason: DropReason, n: u64) {
        self.windows_dropped
            .with_label_values(&[reason.label()])
            .inc_by(n);
    }

    /// Windows dropped for `reason` so far.
    pub fn windows_dropped(&self, reason: DropReason) -> u64 {
        self.windows_dropped
            .with_label_values(&[reason.label()])
            .get()
    }

    /// Creates one `labramd_predictions_total` series per class, at 0, so that a class
    /// that has not won yet still shows (a dashboard sees 0, not a missing series).
    /// `names` are the winners [`crate::publish::winner`] indexes
    /// ([`crate::publish::marker_names`]). Only the first call counts: the model does
    /// not change while the daemon runs.
    pub fn set_prediction_classes(&self, names: &[String]) {
        let handles = names
            .iter()
            .map(|n| self.predictions.with_label_values(&[n.as_str()]))
            .collect();
        let _ = self.prediction_classes.set(handles);
    }

    /// Counts one published prediction whose winner is `winner` (an index into the
    /// names given to [`Metrics::set_prediction_classes`]; others are ignored).
    pub fn prediction_published(&self, winner: usize) {
        if let Some(c) = self.prediction_classes.get().and_then(|v| v.get(winner)) {
            c.inc();
        }
    }

    /// Sets the model-info series (labels in the order of the gauge's label names).
    pub fn set_model_info(&self, labels: &[&str; 8]) {
        self.model_info.with_label_values(labels).set(1.0);
    }

    /// Sets the adaptation-info series.
    pub fn set_adaptation_info(&self, mode: &str, features: &str, resumed: bool) {
        self.adaptation_info
            .with_label_values(&[mode, features, if resumed { "true" } else { "false" }])
            .set(1.0);
    }

    /// Counts one calibration marker by outcome (`used`, `unknown_class`).
    pub fn calibration_marker(&self, outcome: &str) {
        self.calibration_markers.with_label_values(&[outcome]).inc();
    }

    /// Sets the build-info series.
    pub fn set_build_info(&self, onnxruntime: &str, liblsl: &str) {
        let mut features = vec!["daemon"];
        if cfg!(feature = "cuda") {
            features.push("cuda");
        }
        self.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                onnxruntime,
                liblsl,
                &features.join(","),
            ])
            .set(1.0);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Liveness state shared with `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    /// The pipeline is running (set after start-up checks, cleared at shutdown).
    pub running: AtomicBool,
    /// The input stream is connected.
    pub connected: AtomicBool,
    /// Predictions published so far.
    pub published: AtomicU64,
    /// The session is still learning (baseline or calibration): nothing is published.
    pub calibrating: AtomicBool,
    /// Seconds of it left, in milliseconds.
    pub calibration_left_ms: AtomicU64,
}

impl Health {
    /// HTTP status and body for `/healthz`: 200 while running with the input stream
    /// connected, 503 otherwise (with the reason), so a probe sees a lost stream.
    pub fn report(&self) -> (u16, String) {
        let running = self.running.load(Ordering::Relaxed);
        let connected = self.connected.load(Ordering::Relaxed);
        let published = self.published.load(Ordering::Relaxed);
        let calibrating = self.calibrating.load(Ordering::Relaxed);
        let status = match (running, connected) {
            (true, true) if calibrating => "calibrating",
            (true, true) => "ok",
            (true, false) => "input stream lost, resolving again",
            (false, _) => "not running",
        };
        let code = if running && connected { 200 } else { 503 };
        let left_s = self.calibration_left_ms.load(Ordering::Relaxed) as f64 / 1e3;
        let body = format!(
            "{{\"status\":\"{status}\",\"running\":{running},\"stream_connected\":{connected},\"windows_published\":{published},\"calibrating\":{calibrating},\"calibration_seconds_left\":{left_s:.1}}}\n"
        );
        (code, body)
    }
}

/// Binds the metrics address. Done before the pipeline starts so that a taken port
/// is a start-up error naming `metrics.listen`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `GET /metrics` and `GET /healthz` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;

    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let h = health.clone();
                async move {
                    let (code, body) = h.report();
                    (
                        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// This process's own resource use, read from /proc (Linux): for `labramd run --summary`,
/// the benchmark relay, and the `process_*` series of `/metrics` under the names and
/// units every Prometheus client library uses, so stock dashboards and alerts work.
///
/// Read here rather than through the prometheus crate's `process` feature: that pulls
/// in procfs and libc, and counts CPU in whole seconds, too coarse for a daemon that
/// uses a few per cent of a core (`rate()` over a minute would read 0 or 1.6 %).
pub mod process {
    use std::sync::Mutex;

    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{Counter, Gauge};

    /// Linux reports the times in /proc in USER_HZ, 100 ticks per second in the
    /// user-space ABI of every architecture.
    const USER_HZ: f64 = 100.0;

    /// Field `n` (1-based, numbered as in proc(5)) of /proc/self/stat.
    fn stat_field(stat: &str, n: usize) -> Option<f64> {
        // Field 2, the command name, is in parentheses and may hold spaces and ')':
        // the fields after it start after the last ')'.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
    }

    /// CPU seconds used by this process so far (user + system: utime and stime).
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some((stat_field(&stat, 14)? + stat_field(&stat, 15)?) / USER_HZ)
    }

    /// When this process started, in seconds since the Unix epoch (boot time from
    /// /proc/stat plus field 22, starttime, in ticks since boot).
    pub fn start_time_seconds() -> Option<f64> {
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(boot + stat_field(&stat, 22)? / USER_HZ)
    }

    /// A `Vm...:` line of /proc/self/status, in KiB.
    fn status_kib(key: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.split_whitespace().next()?.parse().ok()
    }

    /// Peak resident memory (MiB).
    pub fn peak_rss_mib() -> Option<f64> {
        Some(status_kib("VmHWM:")? / 1024.0)
    }

    /// Resident memory now (bytes).
    pub fn resident_bytes() -> Option<f64> {
        Some(status_kib("VmRSS:")? * 1024.0)
    }

    /// Virtual memory size (bytes).
    pub fn virtual_bytes() -> Option<f64> {
        Some(status_kib("VmSize:")? * 1024.0)
    }

    /// Open file descriptors (the entries of /proc/self/fd, counting the one that
    /// lists them, as the Go client does).
    pub fn open_fds() -> Option<f64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
    }

    /// The soft limit on open file descriptors (`ulimit -n`); `None` when unlimited.
    pub fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?;
        line.split_whitespace().next()?.parse().ok()
    }

    /// The `process_*` series, read at each scrape. A reading that fails (no /proc)
    /// leaves its series out rather than exporting a made-up 0.
    pub struct ProcessCollector {
        cpu: Counter,
        resident: Gauge,
        virtual_memory: Gauge,
        open_fds: Gauge,
        max_fds: Gauge,
        start_time: Gauge,
        start_time_known: bool,
        descs: Vec<Desc>,
        /// Serialises scrapes: the CPU counter advances by the difference to its
        /// last value, which two concurrent scrapes would both add.
        scrape: Mutex<()>,
    }

    impl ProcessCollector {
        pub fn new() -> Self {
            let counter = |name: &str, help: &str| Counter::new(name, help).expect("valid name");
            let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid name");
            let start_time = gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            );
            let start = start_time_seconds();
            if let Some(t) = start {
                start_time.set(t);
            }
            let c = Self {
                cpu: counter(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                ),
                resident: gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                ),
                virtual_memory: gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                ),
                open_fds: gauge("process_open_fds", "Number of open file descriptors."),
                max_fds: gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                ),
                start_time,
                start_time_known: start.is_some(),
                descs: Vec::new(),
                scrape: Mutex::new(()),
            };
            let descs = [
                c.cpu.desc(),
                c.resident.desc(),
                c.virtual_memory.desc(),
                c.open_fds.desc(),
                c.max_fds.desc(),
                c.start_time.desc(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
            Self { descs, ..c }
        }
    }

    impl Default for ProcessCollector {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Collector for ProcessCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.descs.iter().collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            if let Some(cpu) = cpu_seconds() {
                let past = self.cpu.get();
                if cpu > past {
                    self.cpu.inc_by(cpu - past);
                }
                out.extend(self.cpu.collect());
            }
            for (gauge, value) in [
                (&self.resident, resident_bytes()),
                (&self.virtual_memory, virtual_bytes()),
                (&self.open_fds, open_fds()),
                (&self.max_fds, max_fds()),
            ] {
                if let Some(v) = value {
                    gauge.set(v);
                    out.extend(gauge.collect());
                }
            }
            if self.start_time_known {
                out.extend(self.start_time.collect());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_conventional_names() {
        let m = Metrics::new();
        m.samples_received.inc_by(10);
        m.window_dropped(DropReason::Gap);
        m.e2e_latency.observe(0.02);
        m.set_build_info("1.31.1", "113");
        let text = m.render();
        for name in [
            "labramd_e2e_latency_seconds_bucket",
            "labramd_inference_seconds_count",
            "labramd_dsp_seconds_sum",
            "labramd_samples_received_total 10",
            "labramd_windows_dropped_total{reason=\"gap\"} 1",
            "labramd_windows_dropped_total{reason=\"queue_full\"} 0",
            "labramd_stream_losses_total 0",
            "labramd_input_rate_hz",
            "labramd_build_info{",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert_eq!(m.windows_dropped(DropReason::Gap), 1);
    }

    #[test]
    fn health_reports_lost_stream() {
        let h = Health::default();
        assert_eq!(h.report().0, 503);
        h.running.store(true, Ordering::Relaxed);
        h.connected.store(true, Ordering::Relaxed);
        assert_eq!(h.report().0, 200);
        h.connected.store(false, Ordering::Relaxed);
        let (code, body) = h.report();
        assert_eq!(code, 503);
        assert!(body.contains("lost"), "{body}");
        h.connected.store(true, Ordering::Relaxed);
        h.calibrating.store(true, Ordering::Relaxed);
        h.calibration_left_ms.store(42_000, Ordering::Relaxed);
        let (code, body) = h.report();
        assert_eq!(code, 200);
        assert!(
            body.contains("\"status\":\"calibrating\"")
                && body.contains("\"calibration_seconds_left\":42.0"),
            "{body}"
        );
    }

    #[test]
    fn process_figures_are_read_from_proc() {
        // The CPU reading must advance while this thread burns CPU (a reader of the
        // wrong /proc field, or of a constant one, would not): busy-loop until it
        // moves by at least one kernel tick (10 ms), for at most 10 s.
        let before = super::process::cpu_seconds().expect("/proc/self/stat");
        assert!(before >= 0.0 && before.is_finite());
        let t = std::time::Instant::now();
        let mut acc = 0.0f64;
        let mut after = before;
        while after <= before && t.elapsed() < std::time::Duration::from_secs(10) {
            acc += (0..100_000).map(|i| f64::from(i).sqrt()).sum::<f64>();
            after = super::process::cpu_seconds().expect("/proc/self/stat");
        }
        std::hint::black_box(acc);
        assert!(
            after > before,
            "CPU seconds stayed at {before} during {:?} of busy work",
            t.elapsed()
        );
        let rss = super::process::peak_rss_mib().expect("/proc/self/status");
        assert!(rss > 1.0, "peak RSS {rss} MiB");
    }

    /// The value of the series `series` (name and labels, exactly) in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn process_series_have_standard_names_and_plausible_values() {
        // 40 files held open must show in process_open_fds (a reader of the wrong
        // directory, or a constant, would not reach it).
        let files: Vec<_> = (0..40)
            .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
            .collect();
        let text = Metrics::new().render();
        let v = |name: &str| value(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(v("process_cpu_seconds_total") >= 0.0);
        let rss = v("process_resident_memory_bytes");
        assert!(rss > 1e6, "resident {rss} bytes");
        assert!(v("process_virtual_memory_bytes") >= rss);
        let fds = v("process_open_fds");
        assert!(fds >= 40.0, "{fds} open fds with 40 files open");
        if let Some(max) = value(&text, "process_max_fds") {
            assert!(max >= fds, "max fds {max} < open {fds}");
        }
        drop(files);
        // The test binary started after boot and not in the future; a wrong field
        // (ticks not divided, or another column) lands far outside.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let start = v("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "start {start}, now {now}"
        );
    }

    #[test]
    fn predictions_are_counted_per_winning_class() {
        let m = Metrics::new();
        // Before the model is known nothing is counted, and nothing panics.
        m.prediction_published(0);
        assert!(!m.render().contains("labramd_predictions_total{"));
        m.set_prediction_classes(&["rest".to_string(), "task".to_string()]);
        m.prediction_published(1);
        m.prediction_published(1);
        m.prediction_published(7);
        let text = m.render();
        assert_eq!(
            value(&text, "labramd_predictions_total{class=\"rest\"}"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "labramd_predictions_total{class=\"task\"}"),
            Some(2.0),
            "{text}"
        );
    }
}
