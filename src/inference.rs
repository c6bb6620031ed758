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
        let session_err = |e: String| InferenceError::Session {
            path: path.clone(),
            message: e,
        };
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
