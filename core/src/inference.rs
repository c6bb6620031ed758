//! Runs an exported LaBraM model with ONNX Runtime (the `ort` crate).
//!
//! The contract with `labram-trainer export` (and with any other exporter): inputs
//! `eeg` float32 `[batch, channels, patches, 200]` in µV and `input_chans` int64
//! `[channels + 1]`; output `logits` float32 `[batch, classes]`; a model card (`m.onnx`
//! → `m.yaml`, see [`crate::card`]) beside it. [`Classifier::new`] refuses anything
//! else with a message saying what is wrong, so a daemon never starts on a model it
//! would feed the wrong tensors.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`): from `ORT_DYLIB_PATH`
//! if set, else from the path the build recorded (the project's `.deps/`, made by
//! `scripts/setup.sh`). The daemon's hot path, [`Classifier::classify_one_into`],
//! reuses its input tensors: it copies one window into a tensor allocated once and
//! writes probabilities into a caller's slice.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::card::{CardError, ModelCard, PATCH_SIZE};

/// Where ONNX Runtime runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// Errors loading or running a model. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so (onnxruntime 1.31 or newer) or run scripts/setup.sh, which links it into .deps/")]
    RuntimeMissing,
    #[error("cannot load ONNX Runtime from {path}: {message}; run scripts/setup.sh or point ORT_DYLIB_PATH at libonnxruntime.so (onnxruntime 1.31 or newer)")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("model file {path} not found (a relative path is resolved against the current directory, {cwd}); export one with `labram-trainer export` or fix the path")]
    ModelMissing { path: PathBuf, cwd: String },
    #[error("{path} is a directory; expected an .onnx model file (with its card .yaml beside it) written by `labram-trainer export`")]
    ModelIsDirectory { path: PathBuf },
    #[error("{path} is not an ONNX model ({detail}); give the .onnx file written by `labram-trainer export`")]
    NotOnnx { path: PathBuf, detail: String },
    #[error("{path} was made with a newer ONNX IR version {ir_version}; this build's ONNX Runtime {runtime} reads up to IR version {max_ir_version}; re-export it with `labram-trainer export` (which writes IR version 9) or point ORT_DYLIB_PATH at a newer ONNX Runtime")]
    NewerIrVersion {
        path: PathBuf,
        ir_version: i64,
        runtime: String,
        max_ir_version: i64,
    },
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(
        "{path} is not a valid LaBraM export: {message}; re-export it with `labram-trainer export`"
    )]
    Contract { path: PathBuf, message: String },
    #[error("ONNX Runtime could not load {path}: {message}")]
    Session { path: PathBuf, message: String },
    #[error("inference input has {got} values, expected {expected} ({what})")]
    Shape {
        got: usize,
        expected: usize,
        what: String,
    },
    #[error("ONNX Runtime failed during inference: {0}")]
    Run(String),
}

/// Loaded ONNX Runtime: the library path and version string.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub library: PathBuf,
    pub version: String,
}

static RUNTIME: OnceLock<(Environment, RuntimeInfo)> = OnceLock::new();
static RUNTIME_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The library path ONNX Runtime is loaded from: `ORT_DYLIB_PATH`, else the path the
/// build recorded (`LABRAMD_ORT_DYLIB_PATH`, from `.cargo/config.toml`).
pub fn runtime_library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    option_env!("LABRAMD_ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Loads ONNX Runtime once per process (later calls return the same).
pub fn init_runtime() -> Result<&'static RuntimeInfo, InferenceError> {
    if let Some((_, info)) = RUNTIME.get() {
        return Ok(info);
    }
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, info)) = RUNTIME.get() {
        return Ok(info);
    }
    let path = runtime_library_path().ok_or(InferenceError::RuntimeMissing)?;
    if !path.exists() {
        return Err(InferenceError::RuntimeLoad {
            path,
            message: "no such file".into(),
        });
    }
    let load_err = |message: String| InferenceError::RuntimeLoad {
        path: path.clone(),
        message,
    };
    let env = ort::init_from(&path)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("labramd")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let info = RuntimeInfo {
        library: path.clone(),
        version: ort_version_string(&path),
    };
    let _ = RUNTIME.set((env, info));
    RUNTIME
        .get()
        .map(|(_, i)| i)
        .ok_or_else(|| load_err("initialisation raced".into()))
}

/// ONNX Runtime's version: from the library's file name (`libonnxruntime.so.1.31.1`,
/// following links), else the commit in its build-info string.
fn ort_version_string(library: &Path) -> String {
    let real = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((_, v)) = name.split_once(".so.") {
        return v.to_string();
    }
    let info = ort::info();
    info.split(',')
        .find_map(|part| part.trim().strip_prefix("git-commit-id="))
        .map(|c| format!("commit {c}"))
        .unwrap_or_else(|| "unknown".into())
}

fn environment() -> Result<&'static Environment, InferenceError> {
    init_runtime()?;
    RUNTIME
        .get()
        .map(|(e, _)| e)
        .ok_or(InferenceError::RuntimeMissing)
}

/// Probabilities from logits: softmax over K ≥ 2 logits, the sigmoid of a single one.
pub fn probabilities(logits: &[f32], out: &mut [f32]) {
    if logits.len() == 1 {
        out[0] = 1.0 / (1.0 + (-logits[0]).exp());
        return;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// The highest ONNX IR version the ONNX Runtime this build targets (1.31, `ort`'s
/// `api-31`) reads, measured: IR 13 loads, IR 14 is refused with "Unsupported model
/// IR version: 14, max supported IR version: 13". Used when ONNX Runtime's own
/// message does not state its limit.
pub const MAX_IR_VERSION: i64 = 13;

/// What the top level of a file says about it as an ONNX `ModelProto`.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxProbe {
    /// A well-formed protobuf with a graph; `ir_version` when present.
    Model { ir_version: Option<i64> },
    /// Not an ONNX model, and why.
    NotOnnx(String),
}

/// Reads the top-level protobuf fields of `path` (skipping over their contents, so a
/// large model is not read into memory) to tell a model from another file, and to
/// find its IR version (`ModelProto` field 1) and graph (field 7).
pub fn probe_onnx(path: &Path) -> std::io::Result<OnnxProbe> {
    use std::io::{BufReader, Read, Seek};
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    fn varint(r: &mut impl Read) -> std::io::Result<Option<u64>> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0u8; 1];
            if r.read(&mut b)? == 0 {
                return Ok(None);
            }
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
    if len == 0 {
        return Ok(OnnxProbe::NotOnnx("the file is empty".into()));
    }
    let mut head = [0u8; 8];
    let n = r.read(&mut head)?;
    let head_text = format!("it starts with bytes {:02x?}", &head[..n]);
    r.rewind()?;
    let bad = |why: &str| OnnxProbe::NotOnnx(format!("{why}; {head_text}"));
    let mut pos = 0u64;
    let mut ir_version = None;
    let mut graph = false;
    while pos < len {
        let Some(tag) = varint(&mut r)? else {
            return Ok(bad("not a protobuf message"));
        };
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return Ok(bad("not a protobuf message"));
        }
        let skip = match wire {
            0 => {
                let Some(v) = varint(&mut r)? else {
                    return Ok(bad("not a protobuf message"));
                };
                if field == 1 {
                    ir_version = i64::try_from(v).ok();
                }
                0
            }
            1 => 8,
            2 => {
                let Some(l) = varint(&mut r)? else {
                    return Ok(bad("not a protobuf message"));
                };
                if field == 7 {
                    graph = true;
                }
                l
            }
            5 => 4,
            _ => return Ok(bad("not a protobuf message")),
        };
        let here = r.stream_position()?;
        if skip > len.saturating_sub(here) {
            return Ok(bad("truncated, or not a protobuf message"));
        }
        r.seek_relative(skip as i64)?;
        pos = here + skip;
    }
    if !graph {
        return Ok(bad("no ONNX graph in it"));
    }
    Ok(OnnxProbe::Model { ir_version })
}

/// The error for a model ONNX Runtime refused: "not an ONNX model" or "newer IR
/// version" with the fix when the file shows it, else ONNX Runtime's own words.
fn diagnose_load_failure(path: &Path, message: String) -> InferenceError {
    // "... Unsupported model IR version: 14, max supported IR version: 13"
    let stated_max = message
        .split_once("max supported IR version:")
        .and_then(|(_, rest)| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<i64>().ok()
        });
    let max_ir_version = stated_max.unwrap_or(MAX_IR_VERSION);
    let runtime = RUNTIME
        .get()
        .map(|(_, i)| i.version.clone())
        .unwrap_or_else(|| "1.31".into());
    match probe_onnx(path) {
        Ok(OnnxProbe::NotOnnx(detail)) => InferenceError::NotOnnx {
            path: path.to_path_buf(),
            detail,
        },
        Ok(OnnxProbe::Model {
            ir_version: Some(ir_version),
        }) if ir_version > max_ir_version => InferenceError::NewerIrVersion {
            path: path.to_path_buf(),
            ir_version,
            runtime,
            max_ir_version,
        },
        _ if message.contains("INVALID_PROTOBUF") => InferenceError::NotOnnx {
            path: path.to_path_buf(),
            detail: format!("ONNX Runtime: {message}"),
        },
        _ => InferenceError::Session {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// A loaded model: one ONNX Runtime session, built once, plus its card.
pub struct Classifier {
    session: Session,
    card: ModelCard,
    path: PathBuf,
    n_channels: usize,
    n_classes: usize,
    /// `(batch, patches)` of the cached `eeg` tensor.
    eeg_shape: (usize, usize),
    eeg: Tensor<f32>,
    input_chans: Tensor<i64>,
    /// `true` when `eeg` is the session's first input (positional inputs).
    eeg_first: bool,
    device: Device,
    cuda_fallback: Option<String>,
    logits_buf: Vec<f32>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("path", &self.path)
            .field("channels", &self.n_channels)
            .field("classes", &self.n_classes)
            .field("device", &self.device)
            .finish()
    }
}

fn tensor_rank(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match v {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

impl Classifier {
    /// Loads `model_path` and its card, checks the ONNX contract and builds the
    /// session (`threads` intra-op threads). With `Device::Cuda` the CUDA execution
    /// provider is required to register; when it cannot, the session is built on CPU
    /// and [`Classifier::cuda_fallback`] says why.
    pub fn new(model_path: &Path, device: Device, threads: usize) -> Result<Self, InferenceError> {
        if model_path.is_dir() {
            return Err(InferenceError::ModelIsDirectory {
                path: model_path.to_path_buf(),
            });
        }
        if !model_path.is_file() {
            return Err(InferenceError::ModelMissing {
                path: model_path.to_path_buf(),
                cwd: std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into()),
            });
        }
        let card = ModelCard::load_for_model(model_path)?;
        let env = environment()?;
        let path = model_path.to_path_buf();
        let session_err = |e: String| diagnose_load_failure(&path, e);
        let build = |cuda: bool| -> Result<Session, String> {
            let mut b = Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| e.to_string())?
                .with_intra_threads(threads.max(1))
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())?
                // The intra-op pool spins for the next operator during a run (ONNX
                // Runtime's default; with spinning off every one of the graph's ~400
                // operators waits for a woken thread: 1.3x slower on 2 cores), and stops
                // spinning as soon as the run returns, so that the cores are free for the
                // LSL threads that deliver the result and read the next input (spinning
                // on after the run put 4-5 ms into the p99 of push -> receipt).
                // BENCHMARKS.md "Daemon latency" has the measurements.
                .with_config_entry("session.force_spinning_stop", "1")
                .map_err(|e| e.to_string())?;
            if cuda {
                b = register_cuda(b)?;
            }
            b.commit_from_file(model_path).map_err(|e| e.to_string())
        };
        let (session, device, cuda_fallback) = match device {
            Device::Cpu => (build(false).map_err(session_err)?, Device::Cpu, None),
            Device::Cuda => match build(true) {
                Ok(s) => (s, Device::Cuda, None),
                Err(why) => {
                    tracing::warn!("CUDA execution provider unavailable ({why}); running on CPU");
                    (build(false).map_err(session_err)?, Device::Cpu, Some(why))
                }
            },
        };
        let mut c = Self::from_session(session, card, path)?;
        c.device = device;
        c.cuda_fallback = cuda_fallback;
        Ok(c)
    }

    fn from_session(
        session: Session,
        card: ModelCard,
        path: PathBuf,
    ) -> Result<Self, InferenceError> {
        let contract = |message: String| InferenceError::Contract {
            path: path.clone(),
            message,
        };
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        if names.len() != 2
            || !names.iter().any(|n| n == "eeg")
            || !names.iter().any(|n| n == "input_chans")
        {
            return Err(contract(format!(
                "inputs are {names:?}, expected exactly `eeg` and `input_chans`"
            )));
        }
        let n_channels = card.channels.len();
        let n_classes = card.classes.len();
        for input in session.inputs() {
            let (ty, shape) = tensor_rank(input.dtype())
                .ok_or_else(|| contract(format!("input `{}` is not a tensor", input.name())))?;
            match input.name() {
                "eeg" => {
                    if ty != TensorElementType::Float32 || shape.len() != 4 {
                        return Err(contract(format!(
                            "input `eeg` is {ty:?} of rank {}, expected float32 [batch, channels, patches, 200]",
                            shape.len()
                        )));
                    }
                    if shape[3] >= 0 && shape[3] as usize != PATCH_SIZE {
                        return Err(contract(format!(
                            "input `eeg` has {} samples per patch, expected {PATCH_SIZE}",
                            shape[3]
                        )));
                    }
                    if shape[1] >= 0 && shape[1] as usize != n_channels {
                        return Err(contract(format!(
                            "input `eeg` takes {} channels but the card lists {n_channels}",
                            shape[1]
                        )));
                    }
                }
                _ => {
                    if ty != TensorElementType::Int64 || shape.len() != 1 {
                        return Err(contract(format!(
                            "input `input_chans` is {ty:?} of rank {}, expected int64 [channels + 1]",
                            shape.len()
                        )));
                    }
                }
            }
        }
        let logits = session
            .outputs()
            .iter()
            .find(|o| o.name() == "logits")
            .ok_or_else(|| contract("no output named `logits`".into()))?;
        let (ty, shape) = tensor_rank(logits.dtype())
            .ok_or_else(|| contract("output `logits` is not a tensor".into()))?;
        if ty != TensorElementType::Float32 || shape.len() != 2 {
            return Err(contract(format!(
                "output `logits` is {ty:?} of rank {}, expected float32 [batch, classes]",
                shape.len()
            )));
        }
        if shape[1] >= 0 && shape[1] as usize != n_classes {
            return Err(contract(format!(
                "output `logits` has {} classes but the card lists {n_classes} ({})",
                shape[1],
                card.classes.join(", ")
            )));
        }
        let eeg_first = names[0] == "eeg";
        let ic = card.input_chans();
        let run_err = |e: ort::Error| InferenceError::Run(e.to_string());
        let input_chans = Tensor::from_array(([ic.len()], ic)).map_err(run_err)?;
        let patches = card.window_patches;
        let eeg = Tensor::from_array((
            [1, n_channels, patches, PATCH_SIZE],
            vec![0f32; n_channels * patches * PATCH_SIZE],
        ))
        .map_err(run_err)?;
        Ok(Self {
            session,
            card,
            path,
            n_channels,
            n_classes,
            eeg_shape: (1, patches),
            eeg,
            input_chans,
            eeg_first,
            device: Device::Cpu,
            cuda_fallback: None,
            logits_buf: vec![0.0; n_classes],
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of model outputs (class names in the card).
    pub fn num_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of input channels.
    pub fn num_channels(&self) -> usize {
        self.n_channels
    }

    /// The device the session runs on (CPU after a CUDA fallback).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Why CUDA was asked for but not used, if it was.
    pub fn cuda_fallback(&self) -> Option<&str> {
        self.cuda_fallback.as_deref()
    }

    /// Makes the cached `eeg` tensor `[batch, C, patches, 200]` (allocates only on a
    /// shape change) and copies `windows` into it.
    fn load_input(&mut self, windows: &[f32], batch: usize) -> Result<(), InferenceError> {
        let per = self.n_channels * PATCH_SIZE;
        if batch == 0 || windows.is_empty() || !windows.len().is_multiple_of(batch * per) {
            return Err(InferenceError::Shape {
                got: windows.len(),
                expected: batch.max(1) * per * self.eeg_shape.1,
                what: format!(
                    "[batch {batch}, channels {}, patches, {PATCH_SIZE}] µV",
                    self.n_channels
                ),
            });
        }
        let patches = windows.len() / (batch * per);
        if patches > crate::card::MAX_PATCHES {
            return Err(InferenceError::Shape {
                got: windows.len(),
                expected: batch * per * crate::card::MAX_PATCHES,
                what: format!("at most {} patches", crate::card::MAX_PATCHES),
            });
        }
        if self.eeg_shape != (batch, patches) {
            self.eeg = Tensor::from_array((
                [batch, self.n_channels, patches, PATCH_SIZE],
                vec![0f32; windows.len()],
            ))
            .map_err(|e| InferenceError::Run(e.to_string()))?;
            self.eeg_shape = (batch, patches);
        }
        let (_, data) = self
            .eeg
            .try_extract_tensor_mut()
            .map_err(|e| InferenceError::Run(e.to_string()))?;
        data.copy_from_slice(windows);
        Ok(())
    }

    /// Runs the loaded input; calls `f(batch_index, logits)` for each row.
    fn run(&mut self, mut f: impl FnMut(usize, &[f32])) -> Result<(), InferenceError> {
        let run_err = |e: ort::Error| InferenceError::Run(e.to_string());
        let outputs = if self.eeg_first {
            self.session.run(ort::inputs![&self.eeg, &self.input_chans])
        } else {
            self.session.run(ort::inputs![&self.input_chans, &self.eeg])
        }
        .map_err(run_err)?;
        let value = outputs
            .get("logits")
            .ok_or_else(|| InferenceError::Run("the model returned no `logits`".into()))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
        let batch = self.eeg_shape.0;
        if shape.len() != 2 || shape[0] as usize != batch || shape[1] as usize != self.n_classes {
            return Err(InferenceError::Run(format!(
                "`logits` came back with shape {:?}, expected [{batch}, {}]",
                &shape[..],
                self.n_classes
            )));
        }
        for (b, row) in data.chunks_exact(self.n_classes).enumerate() {
            f(b, row);
        }
        Ok(())
    }

    /// Logits for `batch` windows laid out `[batch, channels, patches, 200]` in µV.
    pub fn logits(
        &mut self,
        windows: &[f32],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>, InferenceError> {
        self.load_input(windows, batch)?;
        let mut out = vec![Vec::new(); batch];
        self.run(|b, row| out[b] = row.to_vec())?;
        Ok(out)
    }

    /// Class probabilities (softmax; sigmoid for a single logit) for `batch` windows.
    pub fn classify(
        &mut self,
        windows: &[f32],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>, InferenceError> {
        let logits = self.logits(windows, batch)?;
        Ok(logits
            .iter()
            .map(|l| {
                let mut p = vec![0.0; l.len()];
                probabilities(l, &mut p);
                p
            })
            .collect())
    }

    /// The daemon's path: one window `[channels, patches, 200]` µV in, probabilities
    /// out into `probs` (length = classes). No allocation once the window shape is
    /// known, apart from what ONNX Runtime does inside `run`.
    pub fn classify_one_into(
        &mut self,
        window: &[f32],
        probs: &mut [f32],
    ) -> Result<(), InferenceError> {
        if probs.len() != self.n_classes {
            return Err(InferenceError::Shape {
                got: probs.len(),
                expected: self.n_classes,
                what: "probabilities (one per class)".into(),
            });
        }
        self.load_input(window, 1)?;
        let mut logits = std::mem::take(&mut self.logits_buf);
        let r = self.run(|_, row| logits.copy_from_slice(row));
        if r.is_ok() {
            probabilities(&logits, probs);
        }
        self.logits_buf = logits;
        r
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(
    b: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, String> {
    b.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    _b: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err("this build has no CUDA support (rebuild with `--features cuda` and the onnxruntime-gpu library)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_sigmoid() {
        let mut p = [0.0; 3];
        probabilities(&[1.0, 2.0, 3.0], &mut p);
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f32 = e.iter().sum();
        for i in 0..3 {
            assert!((p[i] - e[i] / s).abs() < 1e-7);
        }
        // Large logits do not overflow.
        probabilities(&[1000.0, 0.0, -1000.0], &mut p);
        assert!((p[0] - 1.0).abs() < 1e-7 && p[2] == 0.0);
        let mut q = [0.0];
        probabilities(&[0.0], &mut q);
        assert_eq!(q[0], 0.5);
        probabilities(&[2.0], &mut q);
        assert!((q[0] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
    }

    /// Writes `bytes` as `dir/m.onnx` with a valid card beside it, so that only the
    /// ONNX file itself can be at fault.
    fn model_file(dir: &Path, bytes: &[u8]) -> PathBuf {
        use crate::card::{Preprocessing, Provenance, CARD_FORMAT};
        let model = dir.join("m.onnx");
        std::fs::write(&model, bytes).unwrap();
        let card = ModelCard {
            format: CARD_FORMAT,
            adaptation: None,
            architecture: "labram_base_patch200_200".into(),
            trained: false,
            task: "test".into(),
            classes: vec!["rest".into(), "arithmetic".into()],
            channels: vec!["C3".into(), "C4".into()],
            patch_size: PATCH_SIZE,
            sample_rate_hz: 200.0,
            window_patches: 4,
            hop_s: 1.0,
            preprocessing: Preprocessing::default(),
            provenance: Provenance::default(),
        };
        card.save(&ModelCard::path_for(&model)).unwrap();
        model
    }

    /// A minimal `ModelProto`: `ir_version`, an empty graph, opset 13.
    fn model_proto(ir_version: u8) -> Vec<u8> {
        vec![0x08, ir_version, 0x3a, 0x00, 0x42, 0x02, 0x10, 0x0d]
    }

    #[test]
    fn probe_tells_models_from_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, model_proto(14)).unwrap();
        assert_eq!(
            probe_onnx(&p).unwrap(),
            OnnxProbe::Model {
                ir_version: Some(14)
            }
        );
        for bytes in [
            &b""[..],
            b"PK\x03\x04 a zip, say a torch checkpoint",
            b"\x08\x09",             // an IR version, no graph
            b"\x3a\xff\xff\xff\x0f", // a graph longer than the file
        ] {
            std::fs::write(&p, bytes).unwrap();
            assert!(
                matches!(probe_onnx(&p).unwrap(), OnnxProbe::NotOnnx(_)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn non_onnx_newer_ir_and_directories_name_the_fault_and_the_fix() {
        if runtime_library_path().is_none_or(|p| !p.exists()) {
            eprintln!("skipped: no ONNX Runtime library (run scripts/setup.sh)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A torch checkpoint given where the ONNX export belongs.
        let model = model_file(dir.path(), b"PK\x03\x04\x14\x00\x00\x00 not really a zip");
        let msg = Classifier::new(&model, Device::Cpu, 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("m.onnx is not an ONNX model") && msg.contains("labram-trainer export"),
            "{msg}"
        );
        // IR 14: ONNX Runtime 1.31 reads up to 13.
        let model = model_file(dir.path(), &model_proto(14));
        let e = Classifier::new(&model, Device::Cpu, 1).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                InferenceError::NewerIrVersion {
                    ir_version: 14,
                    max_ir_version: MAX_IR_VERSION,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("newer ONNX IR version 14")
                && msg.contains("reads up to IR version 13")
                && msg.contains("re-export it with `labram-trainer export`"),
            "{msg}"
        );
        // A directory.
        let msg = Classifier::new(dir.path(), Device::Cpu, 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("is a directory; expected an .onnx model file")
                && !msg.contains("os error"),
            "{msg}"
        );
    }

    #[test]
    fn missing_model_names_path_and_cwd() {
        let err = Classifier::new(Path::new("no/such/model.onnx"), Device::Cpu, 1).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no/such/model.onnx") && msg.contains("current directory"),
            "{msg}"
        );
    }
}
