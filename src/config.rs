//! The daemon's YAML configuration (`labramd run --config FILE`).
//!
//! Parsing happens in two steps so that every mistake produces one message naming
//! the key, the bad value and the fix: serde (with `deny_unknown_fields`) reads the
//! file into loosely typed `Raw*` structs, and [`Config::from_yaml`] checks each
//! value and builds the typed [`Config`]. serde's own messages already carry the key
//! path and the line (`input.resolve_timeout_s: invalid type … at line 3 column 22`);
//! they are wrapped with the file name and a hint.
//!
//! Paths (`model.path`) are used as written: a relative path is relative to the
//! current directory of the daemon, not to the config file, and the start-up error
//! for a missing file says so.
//!
//! ```yaml
//! input:   {name: eegmat-replay, resolve_timeout_s: 10, unit: auto}   # or type / source_id
//!          # timestamps: [clocksync, dejitter, monotonize]  (the default)
//! model:   {path: models/<name>.onnx, device: cpu, threads: 2}
//! window:  {patches: 4, hop_s: 1.0}
//! preprocessing: {bandpass_hz: [0.1, 75.0], notch_hz: 50}
//! output:  {name: labramd, markers: true}   # marker_format: string (default) | int32 (class index)
//! metrics: {listen: "127.0.0.1:9464"}
//! adaptation:                            # optional (issue 17; absent: the model card's, else none)
//!   mode: baseline                       # none | baseline | calibration
//!   baseline_s: 60                       # baseline: seconds of rest at the session start
//!   markers: {name: MyMarkers}           # calibration: LSL string stream naming each block's class
//!   calibration_s: {rest: 60, arithmetic: 20}
//!   state: sessions/wearer-01.yaml       # what was learned; reloaded at start
//!   population: models/x.population.yaml # head trained on other people (none / baseline)
//!   features: logits                     # logits | bandpower | both
//! ```
//!
//! `adaptation.state`, `adaptation.population` are paths like `model.path`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

use crate::card::{MAX_PATCHES, SAMPLE_RATE_HZ};

/// Default metrics address: loopback only, so a daemon is never exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Shortest `window.hop_s`: one sample of the model's 200 Hz input.
pub const MIN_HOP_S: f64 = 1.0 / SAMPLE_RATE_HZ;
/// Longest `window.hop_s` accepted at all (an hour).
pub const MAX_HOP_S: f64 = 3600.0;

/// Whether `addr` is reachable from other hosts (anything but a loopback address,
/// IPv4-mapped loopback included; `0.0.0.0` / `::` listen on every interface).
pub fn exposed_off_host(addr: &SocketAddr) -> bool {
    let loopback = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    };
    !loopback
}

/// The start-up warning for a metrics address reachable from other hosts (`None`
/// on loopback). The endpoints are unauthenticated and name the model, the stream
/// and the host's versions, so exposing them must be a decision.
pub fn listen_warning(addr: &SocketAddr) -> Option<String> {
    if !exposed_off_host(addr) {
        return None;
    }
    let scope = if addr.ip().is_unspecified() {
        "on every network interface of this host"
    } else {
        "from other hosts"
    };
    Some(format!(
        "metrics.listen {addr}: /metrics and /healthz (unauthenticated; they name the model, the stream and the versions) are exposed {scope}; use \"127.0.0.1:{}\" unless a scraper on another host needs them, and then firewall the port",
        addr.port()
    ))
}

/// The start-up warning for a hop longer than the window (`None` otherwise): the
/// signal between windows is never classified. `hop_s` and `patches` as resolved
/// from the config and the model card.
pub fn hop_warning(hop_s: f64, patches: usize) -> Option<String> {
    let window_s = patches as f64 * crate::card::PATCH_SIZE as f64 / SAMPLE_RATE_HZ;
    if hop_s <= window_s {
        return None;
    }
    let unclassified = 100.0 * (1.0 - window_s / hop_s);
    Some(format!(
        "window.hop_s {hop_s} s is longer than the {window_s} s window: {unclassified:.0} % of the signal is never classified; give a hop_s of at most {window_s} (e.g. 1.0) unless that is intended"
    ))
}

/// Errors reading or checking a configuration. Each names the file, the key, the bad
/// value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the --config path (relative paths are resolved against the current directory)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}; see configs/demo.yaml for a complete example")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: `{key}` is {value}: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        fix: String,
    },
}

/// Unit of the incoming samples (`input.unit`); see [`labram_core::plan::Unit`].
pub use labram_core::plan::Unit;

pub use crate::inference::Device;

/// How the input's timestamps are post-processed before gap detection and window
/// stamping (`input.timestamps`, a list of `clocksync`, `dejitter`, `monotonize`;
/// all three by default). See [`crate::acquisition::TimestampFilter`] for what each
/// step does and why the daemon does them itself rather than through liblsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampProcessing {
    /// Add the LSL clock offset of the source's host (its clock → ours).
    pub clocksync: bool,
    /// Replace each timestamp by a regression of timestamps on sample count, so
    /// delivery jitter (amplifiers that stamp chunks when they push them) does
    /// not look like gaps; gaps are then samples missing against that line.
    pub dejitter: bool,
    /// Never let a timestamp go backwards within a continuous stretch.
    pub monotonize: bool,
}

impl TimestampProcessing {
    /// Every step: what a lab wants (timestamps on the local clock, smooth, ordered).
    pub const ALL: Self = Self {
        clocksync: true,
        dejitter: true,
        monotonize: true,
    };
    /// The timestamps exactly as the source sent them (`input.timestamps: []`).
    pub const NONE: Self = Self {
        clocksync: false,
        dejitter: false,
        monotonize: false,
    };
    /// The names accepted in `input.timestamps`.
    pub const NAMES: [&'static str; 3] = ["clocksync", "dejitter", "monotonize"];
}

impl Default for TimestampProcessing {
    fn default() -> Self {
        Self::ALL
    }
}

/// Which LSL stream to read and how to interpret it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    pub name: Option<String>,
    pub stream_type: Option<String>,
    pub source_id: Option<String>,
    pub resolve_timeout_s: f64,
    pub unit: Unit,
    /// Stream label → electrode name (`""` or `"-"` drops the channel).
    pub channel_map: BTreeMap<String, String>,
    /// Extra slack, beyond 2 sample periods (and, with `dejitter`, beyond the
    /// measured delivery jitter), before a timestamp jump counts as a gap.
    pub gap_tolerance_s: f64,
    /// Timestamp post-processing before gap detection.
    pub timestamps: TimestampProcessing,
    /// No sample for this long: the stream counts as lost and is resolved again.
    pub stall_timeout_s: f64,
}

impl InputConfig {
    /// The LSL resolve predicate (XPath) for the configured name / type / source_id.
    pub fn predicate(&self) -> String {
        resolve_predicate(&self.name, &self.stream_type, &self.source_id)
    }
}

/// The LSL resolve predicate (XPath) matching every given field of a stream
/// (`name`, `type`, `source_id`); quotes are dropped so a value cannot break it.
fn resolve_predicate(
    name: &Option<String>,
    stream_type: &Option<String>,
    source_id: &Option<String>,
) -> String {
    let mut parts = Vec::new();
    for (key, v) in [
        ("name", name),
        ("type", stream_type),
        ("source_id", source_id),
    ] {
        if let Some(v) = v {
            parts.push(format!("{key}='{}'", v.replace('\'', "")));
        }
    }
    parts.join(" and ")
}

/// The model to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub device: Device,
    pub threads: usize,
}

/// Window geometry; `None` means "as the model card says".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowConfig {
    pub patches: Option<usize>,
    pub hop_s: Option<f64>,
}

/// Preprocessing overrides; `None` means "as the model card says".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreprocessingConfig {
    /// `Some(None)`: band-pass explicitly off.
    pub bandpass_hz: Option<Option<[f64; 2]>>,
    /// `Some(None)`: notch explicitly off.
    pub notch_hz: Option<Option<f64>>,
}

/// The prediction outlet(s).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub name: String,
    pub stream_type: String,
    pub source_id: Option<String>,
    /// Also publish a marker stream `<name>-markers` with the winning class.
    pub markers: bool,
    /// What the marker stream carries (`output.marker_format`).
    pub marker_format: MarkerFormat,
}

/// The marker stream's format (`output.marker_format`): the winning class's name
/// (string), or its index (int32, for tools such as OpenViBE's LSL driver that
/// read only int32 markers; -1 while the session calibrates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkerFormat {
    #[default]
    String,
    Int32,
}

impl MarkerFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkerFormat::String => "string",
            MarkerFormat::Int32 => "int32",
        }
    }
}

/// The HTTP endpoint for `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// What a session adapts (`adaptation.features`): the model's logits, the log
/// band power of the window (`labram_core::adapt::LogBandPower`), or both side by
/// side (band power first, as `labram-trainer evaluate --features both`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    Logits,
    Bandpower,
    Both,
}

impl FeatureKind {
    pub const ALL: [FeatureKind; 3] = [
        FeatureKind::Logits,
        FeatureKind::Bandpower,
        FeatureKind::Both,
    ];

    /// Parses a name as written in configs and model cards.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The name used in configs and by `labram-trainer evaluate --features`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Logits => "logits",
            FeatureKind::Bandpower => "bandpower",
            FeatureKind::Both => "both",
        }
    }
}

/// The LSL marker stream that labels calibration blocks (`adaptation.markers`).
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerInputConfig {
    pub name: Option<String>,
    pub stream_type: Option<String>,
    pub source_id: Option<String>,
    pub resolve_timeout_s: f64,
}

impl MarkerInputConfig {
    /// The LSL resolve predicate (XPath) for the configured name / type / source_id.
    pub fn predicate(&self) -> String {
        resolve_predicate(&self.name, &self.stream_type, &self.source_id)
    }
}

/// How the daemon adapts to the wearer (`adaptation:`; absent = no adaptation,
/// the model's own softmax as before issue 17). The protocols themselves are
/// `labram_core::adapt`, the code `labram-trainer evaluate --adaptation` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptationConfig {
    pub mode: labram_core::adapt::Mode,
    /// `baseline`: seconds of unlabelled rest at the session start.
    pub baseline_s: f64,
    /// `calibration`: the marker stream naming each block's class.
    pub markers: Option<MarkerInputConfig>,
    /// `calibration`: seconds asked per class, in the order written.
    pub calibration_s: Vec<(String, f64)>,
    /// Where the learned state is written, and read back at start.
    pub state: Option<PathBuf>,
    /// A head trained on other people (`labram_core::adapt::PopulationModel` as
    /// YAML); absent: the model card's `adaptation.population`, if its mode is
    /// this one. `baseline` needs one (checked at start, with the card).
    pub population: Option<PathBuf>,
    /// `None`: as the population head was trained, else the model's logits.
    pub features: Option<FeatureKind>,
}

/// A checked daemon configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub input: InputConfig,
    pub model: ModelConfig,
    pub window: WindowConfig,
    pub preprocessing: PreprocessingConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub adaptation: Option<AdaptationConfig>,
}

// ---- raw serde layer -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the sections input, model, window, preprocessing, output, metrics, adaptation"
)]
struct RawConfig {
    input: RawInput,
    model: RawModel,
    #[serde(default)]
    window: RawWindow,
    #[serde(default)]
    preprocessing: RawPreprocessing,
    #[serde(default)]
    output: RawOutput,
    #[serde(default)]
    metrics: RawMetrics,
    adaptation: Option<RawAdaptation>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with mode, baseline_s, markers, calibration_s, state, population, features"
)]
struct RawAdaptation {
    mode: Option<String>,
    #[serde(default = "default_baseline_s")]
    baseline_s: f64,
    markers: Option<RawMarkers>,
    calibration_s: Option<Value>,
    state: Option<PathBuf>,
    population: Option<PathBuf>,
    features: Option<String>,
}

fn default_baseline_s() -> f64 {
    60.0
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name / type / source_id, resolve_timeout_s"
)]
struct RawMarkers {
    name: Option<String>,
    #[serde(rename = "type")]
    stream_type: Option<String>,
    source_id: Option<String>,
    #[serde(default = "default_resolve_timeout")]
    resolve_timeout_s: f64,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name / type / source_id, resolve_timeout_s, unit, channel_map, gap_tolerance_s, stall_timeout_s, timestamps"
)]
struct RawInput {
    name: Option<String>,
    #[serde(rename = "type")]
    stream_type: Option<String>,
    source_id: Option<String>,
    #[serde(default = "default_resolve_timeout")]
    resolve_timeout_s: f64,
    unit: Option<Value>,
    #[serde(default)]
    channel_map: BTreeMap<String, String>,
    #[serde(default = "default_gap_tolerance")]
    gap_tolerance_s: f64,
    #[serde(default = "default_stall_timeout")]
    stall_timeout_s: f64,
    timestamps: Option<Value>,
}

fn default_resolve_timeout() -> f64 {
    10.0
}
fn default_gap_tolerance() -> f64 {
    0.01
}
fn default_stall_timeout() -> f64 {
    2.0
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with path, device, threads"
)]
struct RawModel {
    path: PathBuf,
    device: Option<Value>,
    #[serde(default = "default_threads")]
    threads: i64,
}

fn default_threads() -> i64 {
    2
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping with patches, hop_s")]
struct RawWindow {
    patches: Option<i64>,
    hop_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with bandpass_hz, notch_hz, sample_rate_hz"
)]
struct RawPreprocessing {
    #[serde(default, deserialize_with = "present")]
    bandpass_hz: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    notch_hz: Option<Value>,
    sample_rate_hz: Option<f64>,
}

/// Keeps "key present with value null" (`Some(Value::Null)`) apart from "key absent"
/// (`None`), so that `notch_hz: null` means off rather than "as the card says".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name, type, source_id, markers, marker_format"
)]
struct RawOutput {
    #[serde(default = "default_output_name")]
    name: String,
    #[serde(rename = "type", default = "default_output_type")]
    stream_type: String,
    source_id: Option<String>,
    #[serde(default)]
    markers: bool,
    #[serde(default, deserialize_with = "present")]
    marker_format: Option<Value>,
}

impl Default for RawOutput {
    fn default() -> Self {
        Self {
            name: default_output_name(),
            stream_type: default_output_type(),
            source_id: None,
            markers: false,
            marker_format: None,
        }
    }
}

fn default_output_name() -> String {
    "labramd".into()
}
fn default_output_type() -> String {
    "Prediction".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with listen")]
struct RawMetrics {
    #[serde(default = "default_listen")]
    listen: Value,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> Value {
    Value::String(DEFAULT_LISTEN.into())
}

// ---- checks ----------------------------------------------------------------------

/// Renders a YAML value compactly for error messages.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_else(|_| format!("{other:?}")),
    }
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn bad(&self, key: &str, value: impl std::fmt::Display, fix: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            value: value.to_string(),
            fix: fix.into(),
        }
    }

    fn positive(&self, key: &str, v: f64, fix: &str) -> Result<f64, ConfigError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.bad(key, v, fix))
        }
    }

    fn nonempty(&self, key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.trim().is_empty() => {
                Err(self.bad(key, "\"\"", "give a non-empty value or leave the key out"))
            }
            other => Ok(other),
        }
    }

    fn input(&self, raw: RawInput) -> Result<InputConfig, ConfigError> {
        let name = self.nonempty("input.name", raw.name)?;
        let stream_type = self.nonempty("input.type", raw.stream_type)?;
        let source_id = self.nonempty("input.source_id", raw.source_id)?;
        if name.is_none() && stream_type.is_none() && source_id.is_none() {
            return Err(self.bad(
                "input",
                "missing a stream selector",
                "set input.name (or input.type / input.source_id) to the LSL stream to read",
            ));
        }
        let resolve_timeout_s = self.positive(
            "input.resolve_timeout_s",
            raw.resolve_timeout_s,
            "give the seconds to wait for the stream at start-up, e.g. 10",
        )?;
        let unit = match raw.unit {
            None => Unit::Auto,
            Some(Value::String(s)) if s == "auto" => Unit::Auto,
            Some(Value::String(s)) if matches!(s.as_str(), "V" | "mV" | "uV" | "µV" | "μV") => {
                Unit::parse_metadata(&s).unwrap_or(Unit::Auto)
            }
            Some(v) => {
                return Err(self.bad(
                    "input.unit",
                    show(&v),
                    "use one of V, mV, uV (or µV), or auto to read it from the stream's channel metadata",
                ))
            }
        };
        for (label, target) in &raw.channel_map {
            if target.is_empty() || target == "-" {
                continue;
            }
            if let Err(e) = crate::electrodes::electrode(target) {
                return Err(self.bad(
                    &format!("input.channel_map.{label}"),
                    format!("{target:?}"),
                    format!("{e}; map the label to one of LaBraM's electrode names, or to \"-\" to leave it out"),
                ));
            }
        }
        let gap_tolerance_s = if raw.gap_tolerance_s.is_finite() && raw.gap_tolerance_s >= 0.0 {
            raw.gap_tolerance_s
        } else {
            return Err(self.bad(
                "input.gap_tolerance_s",
                raw.gap_tolerance_s,
                "give the extra seconds (>= 0) allowed between consecutive samples before a gap is declared, e.g. 0.01",
            ));
        };
        let stall_timeout_s = self.positive(
            "input.stall_timeout_s",
            raw.stall_timeout_s,
            "give the seconds without data after which the stream counts as lost, e.g. 2",
        )?;
        let timestamps = self.timestamps(raw.timestamps)?;
        Ok(InputConfig {
            name,
            stream_type,
            source_id,
            resolve_timeout_s,
            unit,
            channel_map: raw.channel_map,
            gap_tolerance_s,
            stall_timeout_s,
            timestamps,
        })
    }

    /// `input.timestamps`: a list of distinct step names; absent means all three.
    fn timestamps(&self, raw: Option<Value>) -> Result<TimestampProcessing, ConfigError> {
        const KEY: &str = "input.timestamps";
        const FIX: &str = "give a list of clocksync, dejitter, monotonize (all three, the default, is what a lab wants: timestamps on this host's clock, smoothed against the sample count, never going backwards); [] keeps the timestamps as the source sent them";
        let Some(v) = raw else {
            return Ok(TimestampProcessing::ALL);
        };
        let Some(items) = v.as_sequence() else {
            return Err(self.bad(KEY, show(&v), FIX));
        };
        let mut p = TimestampProcessing::NONE;
        for item in items {
            let flag = match item.as_str() {
                Some("clocksync") => &mut p.clocksync,
                Some("dejitter") => &mut p.dejitter,
                Some("monotonize") => &mut p.monotonize,
                _ => {
                    return Err(self.bad(KEY, format!("{} (entry {})", show(&v), show(item)), FIX))
                }
            };
            if *flag {
                return Err(self.bad(
                    KEY,
                    format!("{} ({} twice)", show(&v), show(item)),
                    "name each step once",
                ));
            }
            *flag = true;
        }
        Ok(p)
    }

    fn model(&self, raw: RawModel) -> Result<ModelConfig, ConfigError> {
        if raw.path.as_os_str().is_empty() {
            return Err(self.bad(
                "model.path",
                "\"\"",
                "give the path of the exported .onnx (its .yaml card must be beside it)",
            ));
        }
        let device = match raw.device {
            None => Device::Cpu,
            Some(Value::String(s)) if s == "cpu" => Device::Cpu,
            Some(Value::String(s)) if s == "cuda" => Device::Cuda,
            Some(v) => return Err(self.bad("model.device", show(&v), "use cpu or cuda")),
        };
        if !(1..=256).contains(&raw.threads) {
            return Err(self.bad(
                "model.threads",
                raw.threads,
                "give the number of intra-op threads for ONNX Runtime, 1 to 256 (usually the number of cores)",
            ));
        }
        Ok(ModelConfig {
            path: raw.path,
            device,
            threads: raw.threads as usize,
        })
    }

    fn window(&self, raw: RawWindow) -> Result<WindowConfig, ConfigError> {
        let patches = match raw.patches {
            None => None,
            Some(p) if (1..=MAX_PATCHES as i64).contains(&p) => Some(p as usize),
            Some(p) => {
                return Err(self.bad(
                    "window.patches",
                    p,
                    format!("give 1 to {MAX_PATCHES} patches of 1 s (LaBraM's time embedding has {MAX_PATCHES} rows)"),
                ))
            }
        };
        let hop_s = match raw.hop_s {
            None => None,
            Some(h) if (MIN_HOP_S..=MAX_HOP_S).contains(&h) => Some(h),
            Some(h) if h.is_finite() && h > 0.0 && h < MIN_HOP_S => {
                return Err(self.bad(
                    "window.hop_s",
                    h,
                    format!("a hop shorter than one model sample ({} ms at {SAMPLE_RATE_HZ} Hz) cannot be served: windows are cut on sample boundaries; give at least {MIN_HOP_S} s, e.g. 1.0", MIN_HOP_S * 1e3),
                ))
            }
            Some(h) => {
                return Err(self.bad(
                    "window.hop_s",
                    h,
                    format!("give the seconds between windows, > 0 and at most {MAX_HOP_S}, e.g. 1.0"),
                ))
            }
        };
        Ok(WindowConfig { patches, hop_s })
    }

    fn preprocessing(&self, raw: RawPreprocessing) -> Result<PreprocessingConfig, ConfigError> {
        let off =
            |v: &Value| matches!(v, Value::Null | Value::Bool(false)) || v.as_str() == Some("off");
        let bandpass_hz = match raw.bandpass_hz {
            None => None,
            Some(v) if off(&v) => Some(None),
            Some(v) => {
                let fix = "give [low, high] in Hz with 0 <= low < high < 100 (the model sees 200 Hz), e.g. [0.1, 75.0], or off";
                let pair = v
                    .as_sequence()
                    .filter(|s| s.len() == 2)
                    .and_then(|s| Some([s[0].as_f64()?, s[1].as_f64()?]));
                match pair {
                    Some([lo, hi])
                        if lo.is_finite()
                            && hi.is_finite()
                            && lo >= 0.0
                            && lo < hi
                            && hi < SAMPLE_RATE_HZ / 2.0 =>
                    {
                        Some(Some([lo, hi]))
                    }
                    _ => return Err(self.bad("preprocessing.bandpass_hz", show(&v), fix)),
                }
            }
        };
        let notch_hz = match raw.notch_hz {
            None => None,
            Some(v) if off(&v) => Some(None),
            Some(v) => match v.as_f64() {
                Some(f) if f == 50.0 || f == 60.0 => Some(Some(f)),
                _ => {
                    return Err(self.bad(
                        "preprocessing.notch_hz",
                        show(&v),
                        "use 50 or 60 (the mains frequency where the EEG was recorded), or off",
                    ))
                }
            },
        };
        if let Some(r) = raw.sample_rate_hz {
            if r != SAMPLE_RATE_HZ {
                return Err(self.bad(
                    "preprocessing.sample_rate_hz",
                    r,
                    format!("LaBraM runs at {SAMPLE_RATE_HZ} Hz; set 200 or leave the key out"),
                ));
            }
        }
        Ok(PreprocessingConfig {
            bandpass_hz,
            notch_hz,
        })
    }

    fn output(&self, raw: RawOutput) -> Result<OutputConfig, ConfigError> {
        if raw.name.trim().is_empty() {
            return Err(self.bad(
                "output.name",
                "\"\"",
                "give the name of the prediction stream, e.g. labramd",
            ));
        }
        let source_id = self.nonempty("output.source_id", raw.source_id)?;
        let marker_format = match &raw.marker_format {
            None => MarkerFormat::String,
            Some(Value::String(s)) if s == "string" => MarkerFormat::String,
            Some(Value::String(s)) if s == "int32" => MarkerFormat::Int32,
            Some(v) => {
                let fix = "use string (the winning class name) or int32 (its index, for OpenViBE)";
                return Err(self.bad("output.marker_format", show(v), fix));
            }
        };
        Ok(OutputConfig {
            name: raw.name,
            stream_type: raw.stream_type,
            source_id,
            markers: raw.markers,
            marker_format,
        })
    }

    fn metrics(&self, raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
        let text = match &raw.listen {
            Value::String(s) => s.clone(),
            other => {
                return Err(self.bad(
                    "metrics.listen",
                    show(other),
                    "give host:port in quotes, e.g. \"127.0.0.1:9464\"",
                ))
            }
        };
        let listen = text.parse::<SocketAddr>().map_err(|e| {
            self.bad(
                "metrics.listen",
                format!("{text:?}"),
                format!("{e}; give an IP address and port, e.g. \"127.0.0.1:9464\" (loopback) or \"0.0.0.0:9464\" (all interfaces)"),
            )
        })?;
        Ok(MetricsConfig { listen })
    }

    fn adaptation(&self, raw: RawAdaptation) -> Result<AdaptationConfig, ConfigError> {
        use labram_core::adapt::Mode;
        let mode_text = raw.mode.ok_or_else(|| {
            self.bad(
                "adaptation.mode",
                "missing",
                "give none, baseline or calibration (or leave the whole adaptation section out)",
            )
        })?;
        let mode: Mode = mode_text.parse().map_err(|_| {
            self.bad(
                "adaptation.mode",
                format!("{mode_text:?}"),
                "use none, baseline (an unlabelled rest baseline) or calibration (labelled blocks named by markers)",
            )
        })?;
        let baseline_s = self.positive(
            "adaptation.baseline_s",
            raw.baseline_s,
            "give the seconds of rest at the session start, e.g. 60",
        )?;
        let features = raw
            .features
            .map(|f| {
                FeatureKind::parse(&f).ok_or_else(|| {
                    self.bad(
                        "adaptation.features",
                        format!("{f:?}"),
                        "use logits (the model's), bandpower (log band power) or both",
                    )
                })
            })
            .transpose()?;
        let markers = raw
            .markers
            .map(|m| -> Result<MarkerInputConfig, ConfigError> {
                let m = MarkerInputConfig {
                    name: self.nonempty("adaptation.markers.name", m.name)?,
                    stream_type: self.nonempty("adaptation.markers.type", m.stream_type)?,
                    source_id: self.nonempty("adaptation.markers.source_id", m.source_id)?,
                    resolve_timeout_s: self.positive(
                        "adaptation.markers.resolve_timeout_s",
                        m.resolve_timeout_s,
                        "give the seconds to wait for the marker stream, e.g. 10",
                    )?,
                };
                if m.name.is_none() && m.stream_type.is_none() && m.source_id.is_none() {
                    return Err(self.bad(
                        "adaptation.markers",
                        "{}",
                        "name the marker stream: {name: MyMarkers} (or type / source_id)",
                    ));
                }
                Ok(m)
            })
            .transpose()?;
        let mut calibration_s = Vec::new();
        match raw.calibration_s {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let class = match &k {
                        Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
                        other => {
                            return Err(self.bad(
                                "adaptation.calibration_s",
                                show(other),
                                "name each class as the model card does, e.g. {rest: 60, arithmetic: 20}",
                            ))
                        }
                    };
                    let key = format!("adaptation.calibration_s.{class}");
                    let secs = v.as_f64().ok_or_else(|| {
                        self.bad(
                            &key,
                            show(&v),
                            "give the seconds of this class's calibration, e.g. 60",
                        )
                    })?;
                    calibration_s.push((
                        class,
                        self.positive(
                            &key,
                            secs,
                            "give the seconds of this class's calibration, e.g. 60",
                        )?,
                    ));
                }
            }
            Some(other) => {
                return Err(self.bad(
                    "adaptation.calibration_s",
                    show(&other),
                    "give seconds per class, e.g. {rest: 60, arithmetic: 20}",
                ))
            }
        }
        if mode == Mode::Calibration {
            if markers.is_none() {
                return Err(self.bad(
                    "adaptation.markers",
                    "missing",
                    "calibration needs the LSL marker stream that names each block's class: markers: {name: MyMarkers}",
                ));
            }
            if calibration_s.is_empty() {
                return Err(self.bad(
                    "adaptation.calibration_s",
                    "missing",
                    "calibration needs the seconds asked per class, e.g. calibration_s: {rest: 60, arithmetic: 20}",
                ));
            }
        }
        Ok(AdaptationConfig {
            mode,
            baseline_s,
            markers,
            calibration_s,
            state: raw.state,
            population: raw.population,
            features,
        })
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_norway::from_str(text).map_err(|e| {
            let mut message = e.to_string();
            if message.contains("unknown field") {
                message.push_str(" (keys are case-sensitive; remove or rename the key)");
            }
            ConfigError::Yaml {
                path: path.to_path_buf(),
                message,
            }
        })?;
        let c = Checker { path };
        Ok(Config {
            input: c.input(raw.input)?,
            model: c.model(raw.model)?,
            window: c.window(raw.window)?,
            preprocessing: c.preprocessing(raw.preprocessing)?,
            output: c.output(raw.output)?,
            metrics: c.metrics(raw.metrics)?,
            adaptation: raw.adaptation.map(|a| c.adaptation(a)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
input:   {name: eegmat-replay, resolve_timeout_s: 10, unit: auto}
model:   {path: models/x.onnx, device: cpu, threads: 2}
window:  {patches: 4, hop_s: 1.0}
preprocessing: {bandpass_hz: [0.1, 75.0], notch_hz: 50}
output:  {name: labramd, markers: true}
metrics: {listen: "127.0.0.1:9464"}
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.input.name.as_deref(), Some("eegmat-replay"));
        assert_eq!(c.input.unit, Unit::Auto);
        assert_eq!(c.model.device, Device::Cpu);
        assert_eq!(c.window.patches, Some(4));
        assert_eq!(c.preprocessing.bandpass_hz, Some(Some([0.1, 75.0])));
        assert_eq!(c.preprocessing.notch_hz, Some(Some(50.0)));
        assert!(c.output.markers);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.input.predicate(), "name='eegmat-replay'");
    }

    /// The daemon configs the project ships (the demo's and the latency benchmark's) load
    /// as they are: a key renamed in the code cannot leave them behind.
    #[test]
    fn shipped_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let demo = Config::load(&dir.join("demo.yaml")).unwrap();
        assert_eq!(demo.input.name.as_deref(), Some("labramd-demo"));
        assert_eq!(demo.input.timestamps, TimestampProcessing::ALL);
        assert_eq!(
            demo.model.path,
            PathBuf::from("models/labram-base-eegmat.onnx")
        );
        assert_eq!(demo.model.threads, 1);
        assert!(demo.output.markers);
        let cal = Config::load(&dir.join("calibrated.yaml")).unwrap();
        let a = cal.adaptation.expect("calibrated.yaml has adaptation");
        assert_eq!(a.mode, labram_core::adapt::Mode::Calibration);
        assert_eq!(
            a.markers.map(|m| m.predicate()).as_deref(),
            Some("name='MyMarkers'")
        );
        assert_eq!(a.features, Some(FeatureKind::Logits));
        let bench = Config::load(&dir.join("bench-anchor.yaml")).unwrap();
        assert_eq!(bench.input.name.as_deref(), Some("anchor-amp"));
        assert_eq!(bench.window.patches, Some(10));
        assert_eq!(bench.model.threads, 2);
        assert_eq!(bench.output.name, "anchor-pred");
    }

    #[test]
    fn defaults_and_off() {
        let c = parse("input: {type: EEG}\nmodel: {path: m.onnx}\npreprocessing: {notch_hz: off, bandpass_hz: null}\n").unwrap();
        assert_eq!(c.metrics.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.model.threads, 2);
        assert_eq!(c.window, WindowConfig::default());
        assert_eq!(c.preprocessing.notch_hz, Some(None));
        assert_eq!(c.preprocessing.bandpass_hz, Some(None));
        assert_eq!(c.output.name, "labramd");
        assert_eq!(c.input.predicate(), "type='EEG'");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_key_value_and_fix() {
        let base = "input: {name: a}\nmodel: {path: m.onnx}\n";
        let e = err(&format!("{base}window: {{hop_s: 0}}\n"));
        assert!(e.contains("window.hop_s") && e.contains("> 0"), "{e}");
        let e = err(&format!("{base}window: {{patches: 17}}\n"));
        assert!(
            e.contains("window.patches") && e.contains("17") && e.contains("1 to 16"),
            "{e}"
        );
        let e = err("input: {name: a, unit: nV}\nmodel: {path: m.onnx}\n");
        assert!(
            e.contains("input.unit") && e.contains("nV") && e.contains("uV"),
            "{e}"
        );
        let e = err(&format!("{base}preprocessing: {{notch_hz: 55}}\n"));
        assert!(
            e.contains("preprocessing.notch_hz") && e.contains("55") && e.contains("50 or 60"),
            "{e}"
        );
        let e = err("input: {name: a}\nmodel: {path: m.onnx, device: gpu}\n");
        assert!(
            e.contains("model.device") && e.contains("gpu") && e.contains("cuda"),
            "{e}"
        );
        let e = err(&format!("{base}metrics: {{listen: \"localhost:x\"}}\n"));
        assert!(
            e.contains("metrics.listen") && e.contains("localhost:x"),
            "{e}"
        );
        let e = err("input: {}\nmodel: {path: m.onnx}\n");
        assert!(e.contains("input.name"), "{e}");
        let e = err("input: {name: a, channel_map: {\"Chan 1\": FP9}}\nmodel: {path: m.onnx}\n");
        assert!(
            e.contains("input.channel_map.Chan 1") && e.contains("FP9"),
            "{e}"
        );
        let e = err(&format!(
            "{base}preprocessing: {{bandpass_hz: [75, 0.1]}}\n"
        ));
        assert!(e.contains("preprocessing.bandpass_hz"), "{e}");
        let e = err(&format!("{base}preprocessing: {{sample_rate_hz: 250}}\n"));
        assert!(
            e.contains("preprocessing.sample_rate_hz") && e.contains("200"),
            "{e}"
        );
    }

    #[test]
    fn serde_errors_carry_key_and_line() {
        let e = err("input: {name: a, colour: red}\nmodel: {path: m.onnx}\n");
        assert!(
            e.contains("input") && e.contains("colour") && e.contains("line 1"),
            "{e}"
        );
        let e = err("input:\n  name: a\n  resolve_timeout_s: ten\nmodel: {path: m.onnx}\n");
        assert!(
            e.contains("input.resolve_timeout_s") && e.contains("line 3"),
            "{e}"
        );
        let e = err("input: [unclosed\n");
        assert!(e.contains("test.yaml") && e.contains("line"), "{e}");
        let e = err("input: {name: a}\n");
        assert!(e.contains("model"), "{e}");
    }

    #[test]
    fn timestamp_processing_is_checked() {
        let base = "model: {path: m.onnx}\n";
        let c = parse(&format!("input: {{name: a}}\n{base}")).unwrap();
        assert_eq!(c.input.timestamps, TimestampProcessing::ALL, "default");
        let c = parse(&format!(
            "input: {{name: a, timestamps: [monotonize, clocksync]}}\n{base}"
        ))
        .unwrap();
        assert_eq!(
            c.input.timestamps,
            TimestampProcessing {
                clocksync: true,
                dejitter: false,
                monotonize: true
            }
        );
        let c = parse(&format!("input: {{name: a, timestamps: []}}\n{base}")).unwrap();
        assert_eq!(c.input.timestamps, TimestampProcessing::NONE);
        let e = err(&format!(
            "input: {{name: a, timestamps: [clocksync, smooth]}}\n{base}"
        ));
        assert!(
            e.contains("input.timestamps")
                && e.contains("\"smooth\"")
                && e.contains("[\"clocksync\", \"smooth\"]")
                && e.contains("clocksync, dejitter, monotonize"),
            "{e}"
        );
        let e = err(&format!("input: {{name: a, timestamps: dejitter}}\n{base}"));
        assert!(
            e.contains("input.timestamps") && e.contains("\"dejitter\"") && e.contains("list"),
            "{e}"
        );
        let e = err(&format!(
            "input: {{name: a, timestamps: [dejitter, dejitter]}}\n{base}"
        ));
        assert!(
            e.contains("input.timestamps") && e.contains("twice") && e.contains("once"),
            "{e}"
        );
    }

    #[test]
    fn hops_that_cannot_serve_are_refused_or_warned() {
        let base = "input: {name: a}\nmodel: {path: m.onnx}\n";
        // Shorter than one 200-Hz sample: refused, naming key, value and the minimum.
        let e = err(&format!("{base}window: {{hop_s: 0.001}}\n"));
        assert!(
            e.contains("window.hop_s") && e.contains("0.001") && e.contains("at least 0.005"),
            "{e}"
        );
        let c = parse(&format!("{base}window: {{hop_s: 0.005}}\n")).unwrap();
        assert_eq!(c.window.hop_s, Some(0.005));
        let e = err(&format!("{base}window: {{hop_s: 7200}}\n"));
        assert!(e.contains("window.hop_s") && e.contains("3600"), "{e}");
        // Longer than the window: accepted (hop_s: 1000 is within an hour) but warned.
        let c = parse(&format!("{base}window: {{hop_s: 1000, patches: 4}}\n")).unwrap();
        let w = hop_warning(c.window.hop_s.unwrap(), 4).expect("a warning");
        assert!(
            w.contains("window.hop_s 1000") && w.contains("4 s window") && w.contains("100 %"),
            "{w}"
        );
        assert_eq!(
            hop_warning(8.0, 4).as_deref().map(|w| w.contains("50 %")),
            Some(true)
        );
        assert_eq!(hop_warning(4.0, 4), None, "hop = window covers everything");
        assert_eq!(hop_warning(1.0, 4), None);
    }

    #[test]
    fn listen_addresses_off_the_host_are_told_apart() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for local in [
            "127.0.0.1:9464",
            "127.0.0.2:1",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:9464",
        ] {
            assert!(!exposed_off_host(&a(local)), "{local}");
            assert_eq!(listen_warning(&a(local)), None, "{local}");
        }
        for open in [
            "0.0.0.0:9464",
            "[::]:9464",
            "192.168.1.20:9464",
            "[fe80::1]:80",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(exposed_off_host(&a(open)), "{open}");
        }
        let w = listen_warning(&a("0.0.0.0:9464")).unwrap();
        assert!(
            w.contains("metrics.listen 0.0.0.0:9464")
                && w.contains("every network interface")
                && w.contains("127.0.0.1:9464"),
            "{w}"
        );
        let w = listen_warning(&a("10.1.2.3:9000")).unwrap();
        assert!(
            w.contains("from other hosts") && w.contains("127.0.0.1:9000"),
            "{w}"
        );
    }

    #[test]
    fn units_from_metadata() {
        assert_eq!(Unit::parse_metadata("microvolts"), Some(Unit::Microvolt));
        assert_eq!(Unit::parse_metadata("µV"), Some(Unit::Microvolt));
        assert_eq!(Unit::parse_metadata("mV"), Some(Unit::Millivolt));
        assert_eq!(Unit::parse_metadata("V"), Some(Unit::Volt));
        assert_eq!(Unit::parse_metadata("counts"), None);
        assert_eq!(Unit::Millivolt.to_microvolts(), Some(1000.0));
    }

    #[test]
    fn adaptation_keys_parse_and_errors_name_the_fix() {
        use labram_core::adapt::Mode;
        let base = "input: {name: a}\nmodel: {path: m.onnx}\n";
        assert_eq!(parse(base).unwrap().adaptation, None);
        let c = parse(&format!(
            "{base}adaptation:\n  mode: calibration\n  markers: {{name: MyMarkers}}\n  calibration_s: {{rest: 60, arithmetic: 20}}\n  state: sessions/w.yaml\n  features: both\n"
        ))
        .unwrap();
        let a = c.adaptation.unwrap();
        assert_eq!(a.mode, Mode::Calibration);
        assert_eq!(a.baseline_s, 60.0);
        assert_eq!(
            a.calibration_s,
            vec![("rest".to_string(), 60.0), ("arithmetic".to_string(), 20.0)]
        );
        assert_eq!(a.markers.unwrap().predicate(), "name='MyMarkers'");
        assert_eq!(a.state, Some(PathBuf::from("sessions/w.yaml")));
        assert_eq!(a.features, Some(FeatureKind::Both));
        let c = parse(&format!(
            "{base}adaptation: {{mode: baseline, baseline_s: 30, population: p.yaml}}\n"
        ))
        .unwrap();
        let a = c.adaptation.unwrap();
        assert_eq!((a.mode, a.baseline_s), (Mode::Baseline, 30.0));
        assert_eq!(a.population, Some(PathBuf::from("p.yaml")));
        for (text, want) in [
            (
                "{mode: sometimes}",
                "`adaptation.mode` is \"sometimes\": use none, baseline",
            ),
            ("{baseline_s: 60}", "`adaptation.mode` is missing"),
            (
                "{mode: baseline, population: p.yaml, baseline_s: 0}",
                "`adaptation.baseline_s` is 0",
            ),
            (
                "{mode: calibration, calibration_s: {rest: 60}}",
                "`adaptation.markers` is missing",
            ),
            (
                "{mode: calibration, markers: {name: M}}",
                "`adaptation.calibration_s` is missing",
            ),
            (
                "{mode: calibration, markers: {name: M}, calibration_s: {rest: -1}}",
                "`adaptation.calibration_s.rest` is -1",
            ),
            (
                "{mode: calibration, markers: {}, calibration_s: {rest: 1}}",
                "name the marker stream",
            ),
            (
                "{mode: none, features: pixels}",
                "use logits (the model's), bandpower",
            ),
            ("{mode: none, bogus: 1}", "unknown field `bogus`"),
        ] {
            let e = err(&format!("{base}adaptation: {text}\n"));
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn output_marker_format() {
        let base = "input: {name: a}\nmodel: {path: m.onnx}\n";
        let c = parse(&format!("{base}output: {{markers: true}}\n")).unwrap();
        assert_eq!(c.output.marker_format, MarkerFormat::String);
        let c = parse(&format!(
            "{base}output: {{markers: true, marker_format: int32}}\n"
        ))
        .unwrap();
        assert_eq!(c.output.marker_format, MarkerFormat::Int32);
        assert_eq!(c.output.marker_format.as_str(), "int32");
        let c = parse(&format!("{base}output: {{marker_format: string}}\n")).unwrap();
        assert_eq!(c.output.marker_format, MarkerFormat::String);
        for (text, bad) in [("int", "\"int\""), ("7", "7"), ("null", "null")] {
            let e = parse(&format!("{base}output: {{marker_format: {text}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("output.marker_format")
                    && e.contains(bad)
                    && e.contains("string")
                    && e.contains("int32"),
                "{text}: {e}"
            );
        }
    }
}
