//! ONNX export of the fine-tuning LaBraM, plus its model card.
//!
//! [`export`] is the whole `labram-trainer export` command as a library call: it
//! checks the request (architecture, class count, channel names, window length),
//! reads the checkpoint, writes `m.onnx` and the card `m.yaml` beside it.
//! [`onnx_bytes`] is the pure part: state dict in, ONNX file bytes out.
//!
//! The ONNX contract (what `labramd` relies on):
//! * inputs `eeg` float32 `[batch, channels, patches, 200]` in **µV** (the graph
//!   divides by 100 like the official engines) and `input_chans` int64
//!   `[channels + 1]` (`labram_core::electrodes::input_chans`);
//! * output `logits` float32 `[batch, K]`;
//! * batch, channels and patches dynamic (patches ≤ 16, the time-embedding length);
//! * IR version [`IR_VERSION`], default-domain opset [`OPSET`] only (standard operators,
//!   no contrib domain), so `onnx.checker.check_model(full_check=True)` passes;
//! * deterministic: the same checkpoint gives byte-identical files.

use std::path::{Path, PathBuf};

use labram_core::card::{
    ModelCard, Preprocessing, Provenance, CARD_FORMAT, MAX_PATCHES, PATCH_SIZE, SAMPLE_RATE_HZ,
};
use labram_core::electrodes::{self, ElectrodeError};
use prost::Message;

mod graph;
pub mod labram;
pub mod proto;
pub mod quantize;

pub use labram::{AttentionImpl, FinetuneArch, GraphOptions, Layout, ARCHITECTURES};
pub use quantize::QuantizeReport;

/// ONNX IR version written (ONNX 1.15's; ORT ≥ 1.16 reads it).
pub const IR_VERSION: i64 = 9;
/// Default-domain opset: 20 has `Gelu` (exact erf form) and `LayerNormalization`.
pub const OPSET: i64 = 20;

pub use crate::checkpoint::{StateDict, TensorData};

/// Everything that can go wrong in an export. Each message names the bad value and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown model `{name}`; known fine-tuning models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("{}", state_dict_message(.arch, .missing, .wrong_shape, .unexpected))]
    StateDict {
        arch: &'static str,
        missing: Vec<String>,
        wrong_shape: Vec<String>,
        unexpected: Vec<String>,
    },
    #[error("--num-classes is {requested} but the checkpoint's head has {head_rows} rows (head.weight is [{head_rows}, D]); pass --num-classes {head_rows}")]
    ClassCount { requested: usize, head_rows: usize },
    #[error("--classes lists {given} names but the model has {expected} outputs; give one name per output")]
    ClassNames { given: usize, expected: usize },
    #[error("--patches {0} is out of range: LaBraM's time embedding has {MAX_PATCHES} rows, so a window is 1..={MAX_PATCHES} patches of 1 s")]
    Patches(usize),
    #[error("--channels: {0}")]
    Channels(#[from] ElectrodeError),
    #[error("cannot read checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model card is not valid: {0}")]
    Card(String),
    #[error("--hop-s is {0}; it must be a positive number of seconds")]
    Hop(f64),
    #[error("internal exporter error: {0}")]
    Internal(String),
}

fn list(names: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = names
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

fn state_dict_message(
    arch: &str,
    missing: &[String],
    wrong: &[String],
    unexpected: &[String],
) -> String {
    let mut parts = vec![format!(
        "the checkpoint is not a `{arch}` fine-tuning state dict:"
    )];
    if !missing.is_empty() {
        parts.push(format!("missing {}", list(missing)));
    }
    if !wrong.is_empty() {
        parts.push(format!("wrong shape: {}", list(wrong)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected {}", list(unexpected)));
    }
    let hint = if unexpected.iter().any(|k| k.starts_with("student.")) {
        " (this looks like a masked-EEG-modeling pretraining checkpoint: fine-tune it first)"
    } else if !wrong.is_empty() || !missing.is_empty() {
        " (is --model the architecture the checkpoint was trained with?)"
    } else {
        ""
    };
    format!("{}{hint}", parts.join("; "))
}

/// The ONNX file for a fine-tuning state dict.
///
/// `num_classes` must equal the head's rows. The bytes depend only on the inputs.
pub fn onnx_bytes(
    sd: &StateDict,
    arch: &FinetuneArch,
    num_classes: usize,
    opts: GraphOptions,
) -> Result<Vec<u8>, ExportError> {
    let layout = labram::check_state_dict(sd, arch)?;
    if layout.num_classes != num_classes {
        return Err(ExportError::ClassCount {
            requested: num_classes,
            head_rows: layout.num_classes,
        });
    }
    let built = labram::build_graph(sd, arch, &layout, opts)?;
    let mut opset_import = vec![proto::OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(OPSET),
    }];
    opset_import.extend(built.domains.iter().map(|d| proto::OperatorSetIdProto {
        domain: Some(d.clone()),
        version: Some(1),
    }));
    let model = proto::ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("labram-trainer".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "LaBraM fine-tuning model {} with {num_classes} outputs. Inputs: eeg [batch, channels, patches, 200] in microvolts, input_chans [channels+1]. Output: logits.",
            arch.name
        )),
        graph: Some(built.graph),
        opset_import,
        metadata_props: vec![
            proto::StringStringEntryProto {
                key: Some("architecture".into()),
                value: Some(arch.name.into()),
            },
            proto::StringStringEntryProto {
                key: Some("input_unit".into()),
                value: Some("uV".into()),
            },
        ],
    };
    Ok(model.encode_to_vec())
}

/// Reads a checkpoint's fine-tuning state dict (official `.pth`, plain,
/// `{"model": …}` or a full training checkpoint, or the project's safetensors).
pub fn load_weights(path: &Path) -> Result<StateDict, ExportError> {
    crate::checkpoint::load_state_dict(path).map_err(|e| ExportError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// What `labram-trainer export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub checkpoint: PathBuf,
    pub model: String,
    pub num_classes: usize,
    pub output: PathBuf,
    /// Electrode names in the order of the `eeg` input; `None` = the 23 TUH channels.
    pub channels: Option<Vec<String>>,
    /// Window length in patches (seconds) written to the card.
    pub patches: usize,
    /// Class names; `None` = `class_0`, `class_1`, ….
    pub classes: Option<Vec<String>>,
    pub task: String,
    pub hop_s: f64,
    pub trained: bool,
    pub preprocessing: Preprocessing,
    /// The command line to record in the card (no local paths).
    pub command: String,
    pub graph: GraphOptions,
}

/// Result of a successful export.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub onnx: PathBuf,
    pub card_path: PathBuf,
    pub card: ModelCard,
    pub bytes: usize,
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ExportError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Validates the request, exports the ONNX model and writes its card beside it.
pub fn export(req: &ExportRequest) -> Result<ExportSummary, ExportError> {
    // Cheap checks first, so a typo fails before a large checkpoint is read.
    let arch = FinetuneArch::by_name(&req.model)?;
    if req.patches == 0 || req.patches > MAX_PATCHES {
        return Err(ExportError::Patches(req.patches));
    }
    if !(req.hop_s > 0.0 && req.hop_s.is_finite()) {
        return Err(ExportError::Hop(req.hop_s));
    }
    let channels: Vec<String> = match &req.channels {
        Some(c) => c
            .iter()
            .map(|n| electrodes::electrode(n).map(str::to_string))
            .collect::<Result<_, _>>()?,
        None => electrodes::TUH_STANDARD_23
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    electrodes::input_chans(&channels)?;
    let classes = match &req.classes {
        Some(c) if c.len() != req.num_classes => {
            return Err(ExportError::ClassNames {
                given: c.len(),
                expected: req.num_classes,
            })
        }
        Some(c) => c.clone(),
        None => (0..req.num_classes).map(|i| format!("class_{i}")).collect(),
    };

    let sd = load_weights(&req.checkpoint)?;
    let bytes = onnx_bytes(&sd, arch, req.num_classes, req.graph)?;
    let card = ModelCard {
        format: CARD_FORMAT,
        adaptation: None,
        architecture: arch.name.to_string(),
        trained: req.trained,
        task: req.task.clone(),
        classes,
        channels,
        patch_size: PATCH_SIZE,
        sample_rate_hz: SAMPLE_RATE_HZ,
        window_patches: req.patches,
        hop_s: req.hop_s,
        preprocessing: req.preprocessing.clone(),
        provenance: Provenance {
            checkpoint: req
                .checkpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            checkpoint_sha256: Some(sha256_file(&req.checkpoint)?),
            command: Some(req.command.clone()),
            ..Default::default()
        },
    };
    card.validate().map_err(ExportError::Card)?;
    write_atomic(&req.output, &bytes)?;
    let card_path = ModelCard::path_for(&req.output);
    write_atomic(&card_path, card.to_yaml().as_bytes())?;
    Ok(ExportSummary {
        onnx: req.output.clone(),
        card_path,
        card,
        bytes: bytes.len(),
    })
}

/// What [`quantize_file`] wrote.
#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    pub report: QuantizeReport,
    pub card_path: PathBuf,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// Reads a labram-trainer export, quantizes its weight matrices to int8
/// ([`quantize::quantize_int8`]), and writes it with its card (the input's, with
/// the step recorded in `provenance.notes`).
pub fn quantize_file(input: &Path, output: &Path) -> Result<QuantizeSummary, ExportError> {
    let io = |source| ExportError::Io {
        path: input.to_path_buf(),
        source,
    };
    let mut card = ModelCard::load_for_model(input)
        .map_err(|e| ExportError::Card(format!("{}: {e}", input.display())))?;
    let bytes = std::fs::read(input).map_err(io)?;
    let mut model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        ExportError::Internal(format!("{} is not an ONNX model: {e}", input.display()))
    })?;
    let report = quantize::quantize_int8(&mut model)?;
    let out = model.encode_to_vec();
    let note = format!(
        "int8 dynamic quantization of {} by `labram-trainer quantize` ({} weight matrices, worst relative weight error {:.1e})",
        input.file_name().map_or_else(|| input.display().to_string(), |n| n.to_string_lossy().into_owned()),
        report.matmuls,
        report.worst_weight_error
    );
    card.provenance.notes = Some(match card.provenance.notes.take() {
        Some(n) if !n.is_empty() => format!("{n}; {note}"),
        _ => note,
    });
    card.validate().map_err(ExportError::Card)?;
    write_atomic(output, &out)?;
    let card_path = ModelCard::path_for(output);
    write_atomic(&card_path, card.to_yaml().as_bytes())?;
    Ok(QuantizeSummary {
        report,
        card_path,
        bytes_in: bytes.len(),
        bytes_out: out.len(),
    })
}
