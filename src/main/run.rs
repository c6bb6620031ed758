//! `labramd run`: start-up checks, then the pipeline's threads.
//!
//! ```text
//!  acquisition thread ──SPSC rings──▶ DSP thread ──bounded queue──▶ inference thread
//!  (LSL inlet)        samples, stamps,  (channels, µV,  (drops the      (ONNX Runtime,
//!                     markers           filters, hop)   oldest window)  LSL outlets)
//!  main thread: tokio runtime serving /metrics and /healthz, waiting for SIGINT/SIGTERM
//! ```
//!
//! Start-up order makes every misconfiguration an error before any data flows: the
//! model (card and ONNX contract), the metrics address, the stream (found, channels,
//! units, rate). Shutdown stops the acquisition, lets the DSP thread process what is
//! in the rings and the inference thread classify and publish every queued window,
//! then closes the outlets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use labram_core::plan;
use labramd::acquisition::{self, Go, MarkerKind, RingConsumers, StreamMeta};
use labramd::adaptation::{Adapter, Event, SessionClock, Step, WindowIn};
use labramd::card::{ModelCard, Preprocessing, PATCH_SIZE, SAMPLE_RATE_HZ};
use labramd::config::Config;
use labramd::inference::Classifier;
use labramd::markers::MarkerFeed;
use labramd::metrics::{process, DropReason, Health, Metrics};
use labramd::publish::{marker_names, winner, Publisher};
use labramd::window::{Stage, StageOutput, Window};

/// Windows waiting for inference. Small on purpose: a late window is worth less
/// than a fresh one, so when inference falls behind the oldest is dropped.
const QUEUE: usize = 2;
/// Warm-up inferences before the stream is opened (first runs allocate).
const WARMUP: usize = 3;
/// Longest wait, per window while calibrating, for the marker stream to catch
/// up with the window (see `labramd::markers`): nothing is published then, so
/// only the calibration's own progress waits.
const MARKER_WAIT_S: f64 = 0.25;
/// Markers pushed up to this long after a window's last sample arrived are
/// still awaited before the window reaches the session.
const MARKER_SLACK_S: f64 = 0.01;

/// What classifies a window: the model's own softmax (no `adaptation:`), or
/// the session adaptation of `labram_core::adapt`.
enum Engine {
    Plain(Box<Classifier>),
    Adapted {
        adapter: Box<Adapter>,
        markers: Option<MarkerFeed>,
        clock: SessionClock,
    },
}

/// A window on its way to inference, with its session time.
struct Queued {
    w: Window,
    end_s: f64,
}

pub struct RunOptions {
    pub config: PathBuf,
    pub print: bool,
    pub summary: Option<PathBuf>,
}

/// Timings of one published window, for `--summary`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Record {
    seq: u64,
    t_last: f64,
    arrival: f64,
    t_infer_start: f64,
    infer_s: f64,
    t_push: f64,
}

/// CPU seconds and LSL time when the first input frame was processed (set once by
/// the DSP thread): the start of the `--summary` CPU figure.
type FirstData = Arc<std::sync::OnceLock<(f64, f64)>>;

/// What the inference thread reports at exit.
#[derive(Default)]
struct InferenceReport {
    records: Vec<Record>,
    errors: u64,
    /// CPU seconds of the process when the first window arrived and after the last push.
    cpu_first: Option<f64>,
    cpu_last: Option<f64>,
    wall_first: Option<f64>,
    wall_last: Option<f64>,
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let cfg = Config::load(&opts.config)?;
    let cfg_file = opts.config.display().to_string();
    if let Some(w) = labramd::config::listen_warning(&cfg.metrics.listen) {
        tracing::warn!("{cfg_file}: {w}");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let shutdown_flag = || shutdown.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;

    // --- the model ------------------------------------------------------------------
    let mut clf = Classifier::new(&cfg.model.path, cfg.model.device, cfg.model.threads)
        .map_err(|e| anyhow!("{cfg_file}: model.path: {e}"))?;
    let card = clf.card().clone();
    let patches = cfg.window.patches.unwrap_or(card.window_patches);
    let hop_s = cfg.window.hop_s.unwrap_or(card.hop_s);
    let pre = preprocessing(&cfg, &card);
    if let Some(w) = labramd::config::hop_warning(hop_s, patches) {
        tracing::warn!("{cfg_file}: {w}");
    }
    tracing::info!(
        model = %cfg.model.path.display(),
        architecture = %card.architecture,
        classes = %card.classes.join(","),
        channels = card.channels.len(),
        patches,
        hop_s,
        device = %clf.device(),
        "model loaded"
    );
    if !card.trained {
        tracing::warn!("the model card says `trained: false`: these weights are not trained, predictions mean nothing");
    }
    let window_len = card.channels.len() * patches * PATCH_SIZE;
    let mut probs = vec![0.0f32; clf.num_classes()];
    let zeros = vec![0.0f32; window_len];
    for _ in 0..WARMUP {
        clf.classify_one_into(&zeros, &mut probs)
            .map_err(|e| anyhow!("{cfg_file}: model.path: warm-up inference failed: {e}"))?;
    }

    // --- metrics --------------------------------------------------------------------
    let metrics = Metrics::new();
    let ort_version = labramd::inference::init_runtime()
        .map(|r| r.version.clone())
        .unwrap_or_default();
    metrics.set_build_info(&ort_version, &lsl::library_version().to_string());
    let model_file = cfg.model.path.display().to_string();
    metrics.set_model_info(&[
        &model_file,
        &card.architecture,
        if card.trained { "true" } else { "false" },
        &card.classes.join(","),
        &card.channels.join(","),
        &patches.to_string(),
        &hop_s.to_string(),
        &clf.device().to_string(),
    ]);
    metrics.set_prediction_classes(&marker_names(&card.classes));
    metrics
        .cuda_fallback
        .set(i64::from(clf.cuda_fallback().is_some()));
    let health = Arc::new(Health::default());
    let window_s = (patches * PATCH_SIZE) as f64 / SAMPLE_RATE_HZ;
    let adaptation = labramd::adaptation::resolve(cfg.adaptation.as_ref(), &card, &cfg.model.path)
        .map_err(|e| anyhow!("{cfg_file}: {e}"))?;
    if cfg.adaptation.is_none() && adaptation.is_some() {
        tracing::info!(
            "adaptation as the model card {} says (no adaptation: section in the config)",
            ModelCard::path_for(&cfg.model.path).display()
        );
    }
    let mut adapter = match &adaptation {
        Some(a) => {
            let ad = Adapter::new(a, clf, &cfg.model.path, window_s)
                .map_err(|e| anyhow!("{cfg_file}: {e}"))?;
            metrics.set_adaptation_info(ad.mode().as_str(), ad.kind().as_str(), ad.resumed());
            metrics.calibration_seconds_left.set(ad.seconds_left());
            health.calibrating.store(ad.learning(), Ordering::Relaxed);
            health
                .calibration_left_ms
                .store((ad.seconds_left() * 1e3) as u64, Ordering::Relaxed);
            if ad.resumed() {
                tracing::info!(
                    mode = %ad.mode(),
                    features = ad.kind().as_str(),
                    "adaptation: state resumed from {} (no new calibration)",
                    a.state.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
                );
            } else {
                tracing::info!(
                    mode = %ad.mode(),
                    features = ad.kind().as_str(),
                    seconds = ad.seconds_left(),
                    "adaptation: the session learns before it classifies"
                );
            }
            Err(Box::new(ad))
        }
        None => {
            metrics.set_adaptation_info("off", "softmax", false);
            Ok(clf)
        }
    };
    // For the prediction outlet's description.
    let adaptation_mode = match &adapter {
        Err(ad) => ad.mode().as_str(),
        Ok(_) => "off",
    };
    let marker_feed = match (
        &mut adapter,
        adaptation.as_ref().and_then(|a| a.markers.as_ref()),
    ) {
        (Err(ad), Some(m)) if ad.wants_markers() => {
            tracing::info!(
                "resolving the calibration marker stream {} (up to {} s)",
                m.predicate(),
                m.resolve_timeout_s
            );
            Some(
                labramd::markers::spawn(m, shutdown_flag())
                    .map_err(|e| anyhow!("{cfg_file}: {e}"))?,
            )
        }
        _ => None,
    };
    let listen = cfg.metrics.listen;
    let listener = rt.block_on(labramd::metrics::bind(listen)).map_err(|e| {
        anyhow!("metrics.listen {listen}: cannot listen ({e}); choose a free port or stop the process using it")
    })?;

    // --- the stream -----------------------------------------------------------------
    let acq = acquisition::spawn(
        cfg.input.clone(),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .context("cannot start the acquisition thread")?;
    tracing::info!(
        "resolving LSL stream {} (up to {} s)",
        cfg.input.predicate(),
        cfg.input.resolve_timeout_s
    );
    let meta = acq
        .meta
        .recv()
        .map_err(|_| anyhow!("the acquisition thread stopped before finding the stream"))??;
    let stage = match check_stream(&cfg, &card, &meta, patches, hop_s, pre) {
        Ok(s) => s,
        Err(e) => {
            let _ = acq.go.send(Go::Abort);
            return Err(e);
        }
    };
    tracing::info!(
        stream = %meta.name,
        source_id = %meta.source_id,
        rate_hz = meta.nominal_rate_hz,
        channels = meta.channel_count,
        "input stream checked"
    );
    let ring_frames = ((acquisition::RING_SECONDS * meta.nominal_rate_hz) as usize).max(4096);
    let (producers, consumers) = acquisition::rings(meta.channel_count, ring_frames);

    // --- threads --------------------------------------------------------------------
    let (win_tx, win_rx) = crossbeam_channel::bounded::<Queued>(QUEUE);
    // Session time from the stage's own resampling ratio (window::end_seconds).
    let clock = SessionClock::new(meta.nominal_rate_hz, stage.ratio());
    let engine = match adapter {
        Ok(clf) => Engine::Plain(Box::new(clf)),
        Err(adapter) => Engine::Adapted {
            adapter,
            markers: marker_feed,
            clock: clock.clone(),
        },
    };
    let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<f32>>(QUEUE + 4);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let first_data: FirstData = Arc::default();
    let next_window = acquisition::next_window();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let oldest_rx = win_rx.clone();
    let inference = {
        let metrics = metrics.clone();
        let health = health.clone();
        let output = cfg.output.clone();
        let input_name = meta.name.clone();
        let card = card.clone();
        let pool_tx = pool_tx.clone();
        let print = opts.print;
        let keep_records = opts.summary.is_some();
        std::thread::Builder::new()
            .name("labramd-infer".into())
            .spawn(move || {
                let publisher =
                    Publisher::new(&output, &card, &model_file, &input_name, adaptation_mode)
                        .map_err(anyhow::Error::from);
                let publisher = match publisher {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        let _ = done_tx.send(());
                        return InferenceReport::default();
                    }
                };
                let report = inference_loop(
                    engine,
                    &card,
                    publisher,
                    win_rx,
                    pool_tx,
                    &metrics,
                    &health,
                    print,
                    keep_records,
                );
                let _ = done_tx.send(());
                report
            })
            .context("cannot start the inference thread")?
    };
    if let Err(e) = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(anyhow!("the inference thread stopped")))
    {
        let _ = acq.go.send(Go::Abort);
        return Err(e);
    }
    let dsp = {
        let metrics = metrics.clone();
        let n_ch = meta.channel_count;
        let queue = WindowQueue {
            tx: win_tx,
            oldest: oldest_rx,
            pool_tx,
            pool_rx,
        };
        std::thread::Builder::new()
            .name("labramd-dsp".into())
            .spawn({
                let first_data = first_data.clone();
                let next_window = next_window.clone();
                move || {
                    dsp_loop(
                        consumers,
                        n_ch,
                        stage,
                        clock,
                        queue,
                        &metrics,
                        &first_data,
                        &next_window,
                    )
                }
            })
            .context("cannot start the DSP thread")?
    };
    acq.go
        .send(Go::Start {
            producers,
            consumer: dsp.thread().clone(),
            next_window,
        })
        .map_err(|_| anyhow!("the acquisition thread stopped"))?;
    health.running.store(true, Ordering::Relaxed);
    tracing::info!(
        "running: predictions on LSL stream `{}`{}, metrics on http://{listen}/metrics",
        cfg.output.name,
        if cfg.output.markers {
            format!(" (markers on `{}-markers`)", cfg.output.name)
        } else {
            String::new()
        }
    );

    // --- serve until a signal (or the pipeline ends) -----------------------------------
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(labramd::metrics::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = stop_http_rx.await;
        },
    ));
    let why = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| anyhow!("cannot install the SIGTERM handler: {e}"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok::<_, anyhow::Error>("SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
            _ = done_rx => Ok("the inference thread ended"),
        }
    })?;
    tracing::info!("{why}: shutting down (draining in-flight windows)");
    let t_stop = Instant::now();
    shutdown.store(true, Ordering::Relaxed);
    let _ = acq.handle.join();
    let _ = dsp.join();
    let mut report = inference.join().unwrap_or_default();
    if let Some(&(cpu, wall)) = first_data.get() {
        report.cpu_first = Some(cpu);
        report.wall_first = Some(wall);
    }
    health.running.store(false, Ordering::Relaxed);
    let dropped: Vec<String> = DropReason::ALL
        .iter()
        .map(|&r| format!("{}={}", r.label(), metrics.windows_dropped(r)))
        .collect();
    tracing::info!(
        published = metrics.windows_published.get(),
        dropped = %dropped.join(","),
        "stopped in {:.0} ms; outlets closed",
        t_stop.elapsed().as_secs_f64() * 1e3
    );
    let _ = stop_http_tx.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), server).await });
    if let Some(path) = &opts.summary {
        write_summary(path, &report, &metrics, &card, patches)?;
    }
    Ok(())
}

/// The preprocessing to apply: the card's, live (causal, 200 Hz), with the
/// config's overrides (warned about, since the model was trained on the card's).
fn preprocessing(cfg: &Config, card: &ModelCard) -> Preprocessing {
    let (p, notes) = plan::preprocessing(
        card,
        cfg.preprocessing.bandpass_hz,
        cfg.preprocessing.notch_hz,
    );
    log_notes(&notes);
    p
}

/// The start-up checks on the stream (rate, channels, units; see
/// `labram_core::plan`); builds the DSP stage.
fn check_stream(
    cfg: &Config,
    card: &ModelCard,
    meta: &StreamMeta,
    patches: usize,
    hop_s: f64,
    pre: Preprocessing,
) -> anyhow::Result<Stage> {
    let source = plan::Source {
        name: &meta.name,
        labels: &meta.labels,
        units: &meta.units,
        nominal_rate_hz: meta.nominal_rate_hz,
        format: &meta.format,
        channel_count: meta.channel_count,
    };
    let settings = plan::Settings {
        channel_map: &cfg.input.channel_map,
        unit: cfg.input.unit,
        patches,
        hop_s,
    };
    let (stage, notes) = plan::plan(&source, card, &settings, pre)?;
    log_notes(&notes);
    Stage::new(stage).map_err(|e| anyhow!("input stream `{}`: {e}", meta.name))
}

/// Logs the planning notes: left-out labels as information, the rest as warnings.
fn log_notes(notes: &[plan::PlanNote]) {
    for n in notes {
        if n.is_warning() {
            tracing::warn!("{n}");
        } else {
            tracing::info!("{n}");
        }
    }
}

/// The DSP thread's end of the window queue.
struct WindowQueue {
    tx: Sender<Queued>,
    /// A receiver of the same queue: the DSP thread pops the oldest waiting window
    /// when the queue is full (crossbeam channels are multi-consumer).
    oldest: Receiver<Queued>,
    /// Window buffers: returned by the inference thread, reused here (no
    /// allocation in the steady state).
    pool_tx: Sender<Vec<f32>>,
    pool_rx: Receiver<Vec<f32>>,
}

impl WindowQueue {
    /// Queues a copy of `w`; when the queue is full, drops the oldest waiting window.
    fn send(&self, w: &Window, end_s: f64, metrics: &Metrics) {
        let mut data = self.pool_rx.try_recv().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&w.data);
        let owned = Queued {
            w: Window {
                data,
                seq: w.seq,
                t_last: w.t_last,
                arrival: w.arrival,
                frames_in: w.frames_in,
            },
            end_s,
        };
        match self.tx.try_send(owned) {
            Ok(()) => {}
            Err(TrySendError::Full(owned)) => {
                if let Ok(old) = self.oldest.try_recv() {
                    metrics.window_dropped(DropReason::QueueFull);
                    tracing::debug!(
                        seq = old.w.seq,
                        "inference behind: dropped the oldest waiting window"
                    );
                    let _ = self.pool_tx.try_send(old.w.data);
                }
                if let Err(e) = self.tx.try_send(owned) {
                    metrics.window_dropped(DropReason::QueueFull);
                    let _ = self.pool_tx.try_send(e.into_inner().w.data);
                }
            }
            Err(TrySendError::Disconnected(owned)) => {
                // The inference thread is gone (it ends only after this thread, so
                // it failed): the window cannot be classified.
                metrics.window_dropped(DropReason::InferenceError);
                tracing::debug!(seq = owned.w.seq, "inference thread gone: window dropped");
            }
        }
    }
}

/// The DSP thread: rings → stage → window queue. Ends after the acquisition's end
/// marker, once everything before it has been processed. Publishes where the next
/// window ends, for the acquisition thread's polling.
#[allow(clippy::too_many_arguments)]
fn dsp_loop(
    mut rings: RingConsumers,
    n_ch: usize,
    mut stage: Stage,
    mut clock: SessionClock,
    queue: WindowQueue,
    metrics: &Metrics,
    first_data: &FirstData,
    next_window: &acquisition::NextWindow,
) {
    use ringbuf::traits::{Consumer, Observer};
    let mut consumed: u64 = 0;
    let mut data = Vec::with_capacity(4096 * n_ch);
    let mut stamps = Vec::with_capacity(4096);
    let mut nonfinite_seen = 0u64;
    loop {
        let mut ended = false;
        while let Some(m) = rings.markers.first().copied() {
            if m.at_frame > consumed {
                break;
            }
            let _ = rings.markers.try_pop();
            let emit = |out: StageOutput<'_>| deliver(out, &clock, &queue, metrics);
            match m.kind {
                MarkerKind::End => ended = true,
                MarkerKind::Gap => {
                    tracing::debug!(
                        frame = m.at_frame,
                        missing = m.missing,
                        "gap: filters and window restart"
                    );
                    stage.discontinuity(DropReason::Gap, m.missing, emit);
                    clock.advance(m.missing);
                }
                MarkerKind::Overrun => {
                    tracing::debug!(
                        frame = m.at_frame,
                        missing = m.missing,
                        "overrun: filters and window restart"
                    );
                    stage.discontinuity(DropReason::Overrun, m.missing, emit);
                    clock.advance(m.missing);
                }
                MarkerKind::Reconnect => {
                    tracing::debug!(
                        frame = m.at_frame,
                        "reconnect: filters, window and hop grid restart"
                    );
                    stage.restart(DropReason::Gap);
                    clock.reconnect();
                }
            }
        }
        let n = acquisition::pop_frames(&mut rings, n_ch, consumed, 4096, &mut data, &mut stamps);
        if n == 0 {
            if ended && rings.stamps.is_empty() {
                break;
            }
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        if first_data.get().is_none() {
            let _ = first_data.set((process::cpu_seconds().unwrap_or(0.0), lsl::local_clock()));
        }
        consumed += n as u64;
        let t0 = Instant::now();
        stage.push(&data, &stamps, |out| deliver(out, &clock, &queue, metrics));
        clock.advance(n as u64);
        metrics.dsp.observe(t0.elapsed().as_secs_f64());
        next_window.store(
            consumed + stage.frames_to_next_hop(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if stage.nonfinite_total != nonfinite_seen {
            metrics
                .nonfinite_values
                .inc_by(stage.nonfinite_total - nonfinite_seen);
            nonfinite_seen = stage.nonfinite_total;
        }
    }
}

/// Sends a stage's window to inference, or counts the windows it dropped.
fn deliver(out: StageOutput<'_>, clock: &SessionClock, queue: &WindowQueue, metrics: &Metrics) {
    match out {
        StageOutput::Window(w) => queue.send(w, clock.end_s(w.frames_in), metrics),
        StageOutput::Dropped { reason, windows } => metrics.windows_dropped_n(reason, windows),
    }
}

/// The inference thread: classify, publish, measure. Ends when the DSP thread has
/// gone and the queue is empty (every in-flight window is published first).
/// Per-window records (for `--summary`) are kept only when asked for, so a daemon
/// running for weeks does not grow.
#[allow(clippy::too_many_arguments)]
fn inference_loop(
    mut engine: Engine,
    card: &ModelCard,
    mut publisher: Publisher,
    rx: Receiver<Queued>,
    pool: Sender<Vec<f32>>,
    metrics: &Metrics,
    health: &Health,
    print: bool,
    keep_records: bool,
) -> InferenceReport {
    let classes = marker_names(&card.classes);
    let mut probs = vec![0.0f32; card.classes.len()];
    let mut report = InferenceReport {
        records: Vec::with_capacity(if keep_records { 4096 } else { 0 }),
        ..InferenceReport::default()
    };
    for Queued { w, end_s } in rx.iter() {
        if report.cpu_first.is_none() {
            report.cpu_first = process::cpu_seconds();
            report.wall_first = Some(lsl::local_clock());
        }
        let t0 = lsl::local_clock();
        let classified = match &mut engine {
            Engine::Plain(clf) => clf
                .classify_one_into(&w.data, &mut probs)
                .map(|()| true)
                .map_err(|e| e.to_string()),
            Engine::Adapted {
                adapter,
                markers,
                clock,
            } => adapted(
                adapter,
                markers,
                clock,
                &w,
                end_s,
                &mut probs,
                &mut publisher,
                metrics,
                health,
                print,
            ),
        };
        let classified = match classified {
            Ok(c) => c,
            Err(e) => {
                report.errors += 1;
                metrics.window_dropped(DropReason::InferenceError);
                tracing::error!("inference failed on window {}: {e}", w.seq);
                let _ = pool.try_send(w.data);
                continue;
            }
        };
        if !classified {
            // Calibrating: the window taught the session; nothing to publish.
            let _ = pool.try_send(w.data);
            continue;
        }
        let t1 = lsl::local_clock();
        if let Err(e) = publisher.push(&probs, w.t_last) {
            metrics.window_dropped(DropReason::PublishError);
            tracing::error!("cannot push the prediction of window {}: {e:?}", w.seq);
            let _ = pool.try_send(w.data);
            continue;
        }
        let t2 = lsl::local_clock();
        metrics.inference.observe(t1 - t0);
        metrics.e2e_latency.observe(t2 - w.arrival);
        metrics.windows_published.inc();
        metrics.prediction_published(winner(&probs));
        health.published.fetch_add(1, Ordering::Relaxed);
        if keep_records {
            report.records.push(Record {
                seq: w.seq,
                t_last: w.t_last,
                arrival: w.arrival,
                t_infer_start: t0,
                infer_s: t1 - t0,
                t_push: t2,
            });
        }
        if print {
            let k = winner(&probs);
            let p = if probs.len() == 1 {
                if k == 0 {
                    probs[0]
                } else {
                    1.0 - probs[0]
                }
            } else {
                probs[k]
            };
            println!(
                "{:>12.3}  {:<16} p={:.3}  latency {:6.1} ms",
                w.t_last,
                classes[k],
                p,
                (t2 - w.arrival) * 1e3
            );
        }
        let _ = pool.try_send(w.data);
        report.cpu_last = process::cpu_seconds();
        report.wall_last = Some(lsl::local_clock());
    }
    if let Engine::Adapted {
        adapter, markers, ..
    } = engine
    {
        if let Err(e) = adapter.finish() {
            tracing::warn!(
                "the session ended before its {} was complete, so nothing was published: {e}",
                adapter.mode()
            );
        }
        if let Some(m) = markers {
            drop(m.rx);
            let _ = m.handle.join();
        }
    }
    report
}

/// One window through the session adaptation: markers due first (waiting a
/// bounded moment for the marker stream while calibrating), then features and
/// the session's answer. `Ok(true)`: `probs` holds probabilities to publish;
/// `Ok(false)`: still calibrating (progress published on the marker outlet).
#[allow(clippy::too_many_arguments)]
fn adapted(
    adapter: &mut Adapter,
    markers: &Option<MarkerFeed>,
    clock: &SessionClock,
    w: &Window,
    end_s: f64,
    probs: &mut [f32],
    publisher: &mut Publisher,
    metrics: &Metrics,
    health: &Health,
    print: bool,
) -> Result<bool, String> {
    if let Some(feed) = markers {
        if adapter.wants_markers() {
            feed.wait_past(w.arrival + MARKER_SLACK_S, MARKER_WAIT_S);
        }
        for m in feed.rx.try_iter() {
            adapter.marker(m);
        }
    }
    let step = adapter.window(
        WindowIn {
            end_s,
            t_last: w.t_last,
            data: &w.data,
        },
        clock,
    );
    for ev in adapter.take_events() {
        match ev {
            Event::UnknownClass { text, classes } => {
                metrics.calibration_marker("unknown_class");
                tracing::warn!("calibration marker `{text}` names no class of the model ({classes}): ignored; send one of those names (or none/pause to close a block)");
            }
            Event::MarkerUsed { class, at_s } => {
                metrics.calibration_marker("used");
                tracing::info!(
                    class = class.as_deref().unwrap_or("(none)"),
                    at_s,
                    "calibration marker"
                );
            }
            Event::Learned { windows, saved } => {
                match &saved {
                    Some(p) => tracing::info!(windows, "adaptation: {} complete; state written to {}", adapter.mode(), p.display()),
                    None => tracing::info!(windows, "adaptation: {} complete (no adaptation.state: a restart calibrates again)", adapter.mode()),
                }
                if print {
                    println!("calibration complete ({} windows); classifying", windows);
                }
            }
            Event::SaveFailed(e) => tracing::error!("adaptation: {e}; the session goes on with the state in memory, a restart will calibrate again"),
        }
    }
    let left = adapter.seconds_left();
    metrics.calibration_seconds_left.set(left);
    health
        .calibration_left_ms
        .store((left * 1e3) as u64, Ordering::Relaxed);
    health
        .calibrating
        .store(adapter.learning(), Ordering::Relaxed);
    match step.map_err(|e| e.to_string())? {
        Step::Classified { probabilities } => {
            probs.copy_from_slice(&probabilities[..probs.len()]);
            Ok(true)
        }
        Step::Calibrating { seconds_left } => {
            metrics.calibration_windows.inc();
            let text = format!("calibrating {}s", seconds_left.ceil() as u64);
            if let Err(e) = publisher.push_status(&text, w.t_last) {
                tracing::error!("cannot push the calibration status: {e:?}");
            }
            if print {
                println!(
                    "{:>12.3}  {} ({} at {:.1} s of the session)",
                    w.t_last,
                    text,
                    adapter.mode(),
                    end_s
                );
            }
            Ok(false)
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Linear interpolation between closest ranks (numpy's default).
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

fn stats_ms(values: &[f64]) -> serde_json::Value {
    let mut v: Vec<f64> = values.iter().map(|x| x * 1e3).collect();
    v.sort_by(f64::total_cmp);
    serde_json::json!({
        "p50": percentile(&v, 50.0),
        "p99": percentile(&v, 99.0),
        "max": v.last(),
    })
}

/// Writes `--summary`: per-window timings and totals, in the spirit of the Python
/// baseline's `--out` file so the two can be compared side by side.
fn write_summary(
    path: &Path,
    report: &InferenceReport,
    metrics: &Metrics,
    card: &ModelCard,
    patches: usize,
) -> anyhow::Result<()> {
    let r = &report.records;
    let infer: Vec<f64> = r.iter().map(|x| x.infer_s).collect();
    let internal: Vec<f64> = r.iter().map(|x| x.t_push - x.arrival).collect();
    let overhead: Vec<f64> = r.iter().map(|x| x.t_push - x.arrival - x.infer_s).collect();
    let cpu_s = match (report.cpu_first, report.cpu_last) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let wall_s = match (report.wall_first, report.wall_last) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let cpu_percent = match (cpu_s, wall_s) {
        (Some(c), Some(w)) if w > 0.0 => Some(100.0 * c / w),
        _ => None,
    };
    let summary = serde_json::json!({
        "windows": r.len(),
        "inference_errors": report.errors,
        "channels": card.channels.len(),
        "patches": patches,
        "samples_received": metrics.samples_received.get(),
        "windows_dropped": DropReason::ALL
            .iter()
            .map(|&r| (r.label().to_string(), serde_json::json!(metrics.windows_dropped(r))))
            .collect::<serde_json::Map<_, _>>(),
        "ring_overruns": metrics.ring_overruns.get(),
        "stream_losses": metrics.stream_losses.get(),
        "stream_recoveries": metrics.stream_recoveries.get(),
        "infer_ms": stats_ms(&infer),
        "push_minus_arrival_ms": stats_ms(&internal),
        "overhead_ms": stats_ms(&overhead),
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "cpu_percent": cpu_percent,
        "peak_rss_mb": process::peak_rss_mib(),
        "per_window": {
            "seq": r.iter().map(|x| x.seq).collect::<Vec<_>>(),
            "t_last": r.iter().map(|x| x.t_last).collect::<Vec<_>>(),
            "arrival": r.iter().map(|x| x.arrival).collect::<Vec<_>>(),
            "t_infer_start": r.iter().map(|x| x.t_infer_start).collect::<Vec<_>>(),
            "infer_ms": infer.iter().map(|x| x * 1e3).collect::<Vec<_>>(),
            "t_push": r.iter().map(|x| x.t_push).collect::<Vec<_>>(),
        },
    });
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(path, text).with_context(|| format!("cannot write --summary {}", path.display()))
}
