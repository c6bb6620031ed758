//! The `tokenize` command's work: EEG windows in, VQ-NSP code ids out.
//!
//! Input: a safetensors file with `eeg_uv` (f32 `[B, C, P, 200]`, microvolts) and
//! `input_chans` (int `[C+1]`). Output: a safetensors file with `codes` (int64
//! `[B, C·P]`, electrode-major: code `c·P + p`), exactly what the pretraining engine
//! takes as targets (`get_codebook_indices(eeg_uv / 100, input_chans)`).
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::{load_strict, Vqnsp, VqnspConfig};
use crate::checkpoint::{self, Checkpoint, DType, Item};

/// Windows encoded per forward pass (bounds memory on long files).
const CHUNK: i64 = 64;

/// A tokenizer with its weights, ready to encode.
pub struct Tokenizer {
    pub model: Vqnsp,
    _vs: VarStore,
}

impl Tokenizer {
    /// Load a `.pth` or `.safetensors` VQ-NSP checkpoint; the architecture (encoder
    /// depth, codebook size, code size) is read from its tensors.
    pub fn load(path: &Path, device: Device) -> anyhow::Result<Tokenizer> {
        let sd = checkpoint::load_state_dict(path)?;
        let cfg = VqnspConfig::infer(&sd).with_context(|| format!("{}", path.display()))?;
        let vs = VarStore::new(device);
        let model = Vqnsp::new(&vs.root(), &cfg);
        load_strict(&vs, &sd).with_context(|| format!("loading {}", path.display()))?;
        if !model.quantize.is_initted() {
            bail!(
                "{}: the codebook was never initialised (quantize.embedding.initted = 0); this tokenizer has not been trained",
                path.display()
            );
        }
        Ok(Tokenizer { model, _vs: vs })
    }

    /// Codes `[B, C·P]` of `eeg_uv` (µV, `[B, C, P, 200]`).
    pub fn codes(&self, eeg_uv: &Tensor, input_chans: &Tensor) -> anyhow::Result<Tensor> {
        let b = eeg_uv.size()[0];
        let mut parts = Vec::new();
        let mut start = 0;
        while start < b {
            let len = CHUNK.min(b - start);
            let x = eeg_uv.narrow(0, start, len) / 100.0;
            parts.push(self.model.codes(&x, input_chans)?);
            start += len;
        }
        if parts.is_empty() {
            bail!("no windows to tokenize (batch size 0)");
        }
        Ok(Tensor::cat(&parts, 0))
    }
}

fn tensor_of<'a>(ck: &'a Checkpoint, name: &str) -> anyhow::Result<&'a checkpoint::RawTensor> {
    match ck.root.get(name) {
        Some(Item::Tensor(t)) => Ok(t),
        _ => bail!(
            "{}: no tensor `{name}`; the input needs `eeg_uv` (f32 [windows, channels, patches, 200], µV) and `input_chans` (int [channels + 1])",
            ck.path.display()
        ),
    }
}

/// Tokenize `input` with the tokenizer checkpoint `tokenizer` and write `output`.
pub fn tokenize_file(tokenizer: &Path, input: &Path, output: &Path) -> anyhow::Result<()> {
    let tok = Tokenizer::load(tokenizer, Device::Cpu)?;
    let ck = Checkpoint::load(input)?;
    let eeg = tensor_of(&ck, "eeg_uv")?;
    let chans = tensor_of(&ck, "input_chans")?;
    if eeg.shape.len() != 4 || eeg.shape[3] != 200 {
        bail!(
            "{}: eeg_uv has shape {:?}; expected [windows, channels, patches, 200]",
            input.display(),
            eeg.shape
        );
    }
    let eeg_data = eeg
        .to_f32()
        .map_err(|e| anyhow::anyhow!("{}: eeg_uv: {e}", input.display()))?;
    if !matches!(eeg.dtype, DType::F32) {
        tracing::warn!(dtype = ?eeg.dtype, "eeg_uv is not float32; converted");
    }
    let chan_vals = chans
        .to_i64()
        .map_err(|e| anyhow::anyhow!("{}: input_chans: {e}", input.display()))?;
    let x = super::to_tensor(&eeg_data);
    let c = Tensor::from_slice(&chan_vals);
    let codes = tok
        .codes(&x, &c)
        .with_context(|| format!("tokenizing {}", input.display()))?;
    write_codes(&codes, tokenizer, output)
}

fn write_codes(codes: &Tensor, tokenizer: &Path, output: &Path) -> anyhow::Result<()> {
    struct I64View {
        shape: Vec<usize>,
        bytes: Vec<u8>,
    }
    impl safetensors::View for &I64View {
        fn dtype(&self) -> safetensors::Dtype {
            safetensors::Dtype::I64
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.bytes)
        }
        fn data_len(&self) -> usize {
            self.bytes.len()
        }
    }
    let flat = codes.to_kind(Kind::Int64).contiguous().reshape([-1]);
    let vals = Vec::<i64>::try_from(&flat)?;
    let view = I64View {
        shape: codes.size().iter().map(|&s| s as usize).collect(),
        bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let mut meta = HashMap::new();
    if let Some(name) = tokenizer.file_name() {
        meta.insert("tokenizer".to_string(), name.to_string_lossy().into_owned());
    }
    safetensors::serialize_to_file([("codes", &view)], Some(meta), output)
        .with_context(|| format!("writing {}", output.display()))
}
