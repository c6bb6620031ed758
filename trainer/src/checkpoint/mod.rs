//! Checkpoints: official torch `.pth` files (read safely, without Python) and the
//! project's own safetensors files.
//!
//! * [`Checkpoint::load`] reads either format, chosen by the file's content (zip magic
//!   or safetensors header), never by its extension. A `.pth` is a zip archive holding
//!   `<root>/data.pkl` (a pickle, read by the non-executing [`pickle`] machine) and one
//!   file per storage under `<root>/data/`; `<root>` is whatever `torch.save` was
//!   given, so it is found from the archive, not from the file name.
//! * [`load_state_dict`] is the common case: the model's weights as f32 tensors, from
//!   a bare state dict, a `{"model": …}` file or a full training checkpoint.
//! * [`save_safetensors`] writes a state dict plus string metadata.
//! * [`adapt`] holds the state-dict surgery of the official recipes (the `student.`
//!   prefix of pretraining checkpoints, a head with another class count) and the
//!   missing/unexpected-key check.
pub mod adapt;
pub mod pickle;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub use adapt::{check_keys, prepare_finetune_import, take_prefix, ImportReport};
pub use pickle::{DType, PickleError, TensorRef};

/// A float32 tensor: row-major, contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorData {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<TensorData, CheckpointError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(CheckpointError::Invalid {
                path: PathBuf::new(),
                detail: format!(
                    "tensor of shape {shape:?} needs {n} values, got {}",
                    data.len()
                ),
            });
        }
        Ok(TensorData { shape, data })
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// A model's weights by official parameter name, sorted by name.
pub type StateDict = BTreeMap<String, TensorData>;

/// A tensor of any storage dtype, as read: contiguous, row-major, little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Convert to f32. Floating types are converted as torch's `.float()` does; integer
    /// and bool tensors only when every value is exactly representable (so that a
    /// counter or an index never silently changes).
    pub fn to_f32(&self) -> Result<TensorData, String> {
        let b = &self.bytes;
        let data: Vec<f32> = match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::Bool => {
                let ints = self.to_i64()?;
                let mut out = Vec::with_capacity(ints.len());
                for v in ints {
                    let f = v as f32;
                    if f as i64 != v {
                        return Err(format!(
                            "integer value {v} of a {:?} tensor is not exactly representable as f32",
                            self.dtype
                        ));
                    }
                    out.push(f);
                }
                out
            }
        };
        if data.len() != self.numel() {
            return Err("tensor byte length does not match its shape".into());
        }
        Ok(TensorData {
            shape: self.shape.clone(),
            data,
        })
    }

    /// Integer view (for index and counter tensors); floats are refused.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as i64).collect(),
            other => return Err(format!("a {other:?} tensor is not an integer tensor")),
        })
    }
}

/// A node of a loaded checkpoint's object tree, with tensors materialised.
pub type Item = pickle::Value<RawTensor>;

/// Which container a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// torch zip archive with a pickle (`torch.save`).
    TorchZip,
    /// safetensors.
    Safetensors,
}

/// Everything a checkpoint file holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    /// The saved object. For safetensors: a dict from tensor name to tensor.
    pub root: Item,
    /// Safetensors header metadata (empty for `.pth`).
    pub metadata: BTreeMap<String, String>,
}

/// Errors of checkpoint reading and writing. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a directory; expected a checkpoint file (a torch .pth or a .safetensors file)"
    )]
    IsDirectory { path: PathBuf },
    #[error("{path}: not a checkpoint ({detail}); expected a torch .pth (zip archive) or a .safetensors file")]
    UnknownFormat { path: PathBuf, detail: String },
    #[error("{path}: this is a legacy (pre-1.6, non-zip) torch file, which is not supported; re-save it with a current torch (`torch.save(obj, path)`)")]
    LegacyTorch { path: PathBuf },
    #[error("{path}: corrupt or unsupported zip archive: {detail}")]
    Zip { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Pickle {
        path: PathBuf,
        #[source]
        source: PickleError,
    },
    #[error("{path}: corrupt safetensors file: {detail}")]
    Safetensors { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("state dict does not match the model: missing keys [{}], unexpected keys [{}]; is this checkpoint for another architecture?", missing.join(", "), unexpected.join(", "))]
    KeyMismatch {
        missing: Vec<String>,
        unexpected: Vec<String>,
    },
    #[error("state dict shapes do not match the model: {}; is this checkpoint for another model size?", .0.iter().map(|(k, got, want)| format!("{k}: checkpoint {got:?}, model {want:?}")).collect::<Vec<_>>().join("; "))]
    ShapeMismatch(Vec<(String, Vec<usize>, Vec<usize>)>),
}

impl CheckpointError {
    fn invalid(path: &Path, detail: impl Into<String>) -> CheckpointError {
        CheckpointError::Invalid {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

/// Read a checkpoint's model weights as f32 (see [`Checkpoint::state_dict`]).
pub fn load_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    Checkpoint::load(path)?.state_dict()
}

/// Write `sd` as a safetensors file (f32 tensors, sorted by name) with `metadata` in
/// its header. The file is written to a temporary name and renamed, so a crash never
/// leaves a half-written checkpoint.
pub fn save_safetensors(
    sd: &StateDict,
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), CheckpointError> {
    struct F32View<'a>(&'a TensorData);
    impl safetensors::View for F32View<'_> {
        fn dtype(&self) -> safetensors::Dtype {
            safetensors::Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &self.0.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            let mut b = Vec::with_capacity(self.0.data.len() * 4);
            for x in &self.0.data {
                b.extend_from_slice(&x.to_le_bytes());
            }
            std::borrow::Cow::Owned(b)
        }
        fn data_len(&self) -> usize {
            self.0.data.len() * 4
        }
    }
    for (k, t) in sd {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(CheckpointError::invalid(
                path,
                format!(
                    "tensor {k} has shape {:?} but {} values",
                    t.shape,
                    t.data.len()
                ),
            ));
        }
    }
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta = if meta.is_empty() { None } else { Some(meta) };
    safetensors::serialize_to_file(sd.iter().map(|(k, t)| (k, F32View(t))), meta, path).map_err(
        |e| CheckpointError::Safetensors {
            path: path.to_path_buf(),
            detail: format!("while writing: {e}"),
        },
    )
}

impl Checkpoint {
    /// Read a `.pth` or `.safetensors` file, detected by content.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        // A directory opens on Unix; only reading it fails, with a bare OS error.
        if f.metadata().map_err(io)?.is_dir() {
            return Err(CheckpointError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let mut head = [0u8; 9];
        let n = read_up_to(&mut f, &mut head).map_err(io)?;
        let head = &head[..n];
        f.rewind().map_err(io)?;
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            return read_torch_zip(path, f);
        }
        if head.len() == 9 && head[8] == b'{' {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(io)?;
            return read_safetensors(path, &buf);
        }
        if head.starts_with(&[0x80]) {
            return Err(CheckpointError::LegacyTorch {
                path: path.to_path_buf(),
            });
        }
        Err(CheckpointError::UnknownFormat {
            path: path.to_path_buf(),
            detail: if head.is_empty() {
                "the file is empty".into()
            } else {
                format!("it starts with bytes {head:02x?}")
            },
        })
    }

    /// The dict holding the model weights: `root["model"]` or `root["module"]` (the
    /// official `--model_key` default `model|module`), `root["state_dict"]`, or the
    /// root itself when it is a bare state dict.
    pub fn model_item(&self) -> &Item {
        for key in ["model", "module", "state_dict"] {
            if let Some(v @ Item::Dict(_)) = self.root.get(key) {
                return v;
            }
        }
        &self.root
    }

    /// The model weights as f32 tensors by name.
    pub fn state_dict(&self) -> Result<StateDict, CheckpointError> {
        let Item::Dict(entries) = self.model_item() else {
            return Err(CheckpointError::invalid(
                &self.path,
                format!(
                    "the checkpoint holds a {}, not a state dict or a dict with a \"model\" entry",
                    self.root.kind()
                ),
            ));
        };
        let mut sd = StateDict::new();
        for (k, v) in entries {
            let Item::Str(name) = k else {
                return Err(CheckpointError::invalid(
                    &self.path,
                    format!("state dict key is a {}, not a string", k.kind()),
                ));
            };
            let Item::Tensor(t) = v else {
                return Err(CheckpointError::invalid(
                    &self.path,
                    format!("state dict entry {name} is a {}, not a tensor", v.kind()),
                ));
            };
            let t = t
                .to_f32()
                .map_err(|e| CheckpointError::invalid(&self.path, format!("tensor {name}: {e}")))?;
            sd.insert(name.clone(), t);
        }
        Ok(sd)
    }

    /// The training epoch, when this is a full training checkpoint.
    pub fn epoch(&self) -> Option<i64> {
        self.root.get("epoch").and_then(Item::as_int)
    }

    /// The training arguments (`args`, an `argparse.Namespace`) as a name → value list.
    pub fn args(&self) -> Option<&[(Item, Item)]> {
        match self.root.get("args")? {
            Item::Object { state, .. } => match &**state {
                Item::Dict(d) => Some(d),
                _ => None,
            },
            Item::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// One training argument by name.
    pub fn arg(&self, name: &str) -> Option<&Item> {
        self.root.get("args")?.get(name)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_safetensors(path: &Path, buf: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let bad = |detail: String| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        detail,
    };
    let st = safetensors::SafeTensors::deserialize(buf).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(buf).map_err(|e| bad(e.to_string()))?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut names: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(names.len());
    for (name, view) in names {
        use safetensors::Dtype as D;
        let dtype = match view.dtype() {
            D::F32 => DType::F32,
            D::F64 => DType::F64,
            D::F16 => DType::F16,
            D::BF16 => DType::BF16,
            D::I64 => DType::I64,
            D::I32 => DType::I32,
            D::I16 => DType::I16,
            D::I8 => DType::I8,
            D::U8 => DType::U8,
            D::BOOL => DType::Bool,
            other => {
                return Err(bad(format!(
                    "tensor {name} has dtype {other:?}, which is not supported"
                )))
            }
        };
        entries.push((
            Item::Str(name),
            Item::Tensor(RawTensor {
                dtype,
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            }),
        ));
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format: Format::Safetensors,
        root: Item::Dict(entries),
        metadata,
    })
}

fn read_torch_zip(path: &Path, f: File) -> Result<Checkpoint, CheckpointError> {
    let zerr = |e: zip::result::ZipError| CheckpointError::Zip {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(f).map_err(zerr)?;
    // `<root>/data.pkl`; `<root>` is the name torch.save was given, not the file stem.
    let pkl_names: Vec<String> = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .map(str::to_string)
        .collect();
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(CheckpointError::invalid(
                path,
                "zip archive has no <root>/data.pkl: not a torch.save file",
            ))
        }
        many => {
            return Err(CheckpointError::invalid(
                path,
                format!("zip archive has several pickles: {many:?}"),
            ))
        }
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(bo) = read_entry(&mut zip, path, &format!("{prefix}byteorder"), 64) {
        if bo.trim_ascii() != b"little" {
            return Err(CheckpointError::invalid(
                path,
                format!(
                    "byte order {:?} is not supported (only little-endian files)",
                    String::from_utf8_lossy(&bo)
                ),
            ));
        }
    }
    let pkl = read_entry(&mut zip, path, &pkl_name, 1 << 30)?;
    let tree = pickle::parse(&pkl).map_err(|source| CheckpointError::Pickle {
        path: path.to_path_buf(),
        source,
    })?;
    let mut storages = StorageCache::default();
    tree.visit_tensors(&mut |t: &TensorRef| {
        *storages.uses.entry(t.storage_key.clone()).or_default() += 1
    });
    let root = tree.try_map_tensors(&mut |t: TensorRef| {
        materialize(&mut zip, path, &prefix, &mut storages, &t)
    })?;
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format: Format::TorchZip,
        root,
        metadata: BTreeMap::new(),
    })
}

fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, CheckpointError> {
    let mut e = zip.by_name(name).map_err(|e| CheckpointError::Zip {
        path: path.to_path_buf(),
        detail: format!("entry {name}: {e}"),
    })?;
    let size = e.size();
    if size > max {
        return Err(CheckpointError::invalid(
            path,
            format!("entry {name} is {size} bytes, more than the {max} allowed"),
        ));
    }
    let mut buf = Vec::with_capacity(size as usize);
    (&mut e)
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| CheckpointError::Zip {
            path: path.to_path_buf(),
            detail: format!("entry {name}: {e}"),
        })?;
    if buf.len() as u64 != size {
        return Err(CheckpointError::invalid(
            path,
            format!("entry {name} is truncated ({} of {size} bytes)", buf.len()),
        ));
    }
    Ok(buf)
}

/// Tensors larger than their storage (possible only with stride-0 "expanded" views)
/// are capped at this many elements, so a hostile file cannot request terabytes.
const MAX_EXPANDED_NUMEL: u64 = 1 << 28;

/// Storages read so far, and how many tensors still need each: a storage is
/// released after its last tensor (and handed over without a copy when that tensor
/// is the whole storage), so loading needs about one copy of the weights, not two.
#[derive(Default)]
struct StorageCache {
    bytes: HashMap<String, Vec<u8>>,
    uses: HashMap<String, usize>,
}

/// Copy a (possibly strided, offset) view out of its storage into contiguous bytes.
fn materialize<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    prefix: &str,
    cache: &mut StorageCache,
    t: &TensorRef,
) -> Result<RawTensor, CheckpointError> {
    let last_use = match cache.uses.get_mut(&t.storage_key) {
        Some(n) => {
            *n = n.saturating_sub(1);
            *n == 0
        }
        None => true,
    };
    let out = view_of_storage(zip, path, prefix, &mut cache.bytes, t, last_use);
    if last_use {
        cache.bytes.remove(&t.storage_key);
    }
    out
}

fn view_of_storage<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    prefix: &str,
    storages: &mut HashMap<String, Vec<u8>>,
    t: &TensorRef,
    last_use: bool,
) -> Result<RawTensor, CheckpointError> {
    let es = t.dtype.size() as u64;
    let bad = |d: String| CheckpointError::invalid(path, format!("storage {}: {d}", t.storage_key));
    if !storages.contains_key(&t.storage_key) {
        let want = t
            .storage_numel
            .checked_mul(es)
            .ok_or_else(|| bad("size overflows".into()))?;
        let name = format!("{prefix}data/{}", t.storage_key);
        let bytes = read_entry(zip, path, &name, want)?;
        if (bytes.len() as u64) < want {
            return Err(bad(format!(
                "holds {} bytes but {} elements of {:?} were declared",
                bytes.len(),
                t.storage_numel,
                t.dtype
            )));
        }
        storages.insert(t.storage_key.clone(), bytes);
    }
    let storage = &storages[&t.storage_key];
    let storage_numel = (storage.len() as u64 / es).min(t.storage_numel);

    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s))
        .ok_or_else(|| bad("tensor size overflows".into()))?;
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&s| usize::try_from(s).map_err(|_| bad("tensor size overflows".into())))
        .collect::<Result<_, _>>()?;
    if numel == 0 {
        return Ok(RawTensor {
            dtype: t.dtype,
            shape,
            bytes: Vec::new(),
        });
    }
    if numel > storage_numel && numel > MAX_EXPANDED_NUMEL {
        return Err(bad(format!(
            "a tensor of {numel} elements is larger than its storage"
        )));
    }
    let mut last = t.offset;
    for (&s, &st) in t.shape.iter().zip(&t.stride) {
        last = (s - 1)
            .checked_mul(st)
            .and_then(|x| x.checked_add(last))
            .ok_or_else(|| bad("tensor extent overflows".into()))?;
    }
    if last >= storage_numel {
        return Err(bad(format!(
            "tensor of shape {:?}, stride {:?}, offset {} reaches element {last}, past the storage's {storage_numel}",
            t.shape, t.stride, t.offset
        )));
    }
    let es = es as usize;
    let numel = numel as usize;
    // Row-major strides: one copy.
    let mut contiguous = true;
    let mut expect = 1u64;
    for (&s, &st) in t.shape.iter().zip(&t.stride).rev() {
        if s != 1 && st != expect {
            contiguous = false;
        }
        expect *= s;
    }
    let start = t.offset as usize * es;
    if contiguous && last_use && start == 0 && numel * es == storage.len() {
        let bytes = storages.remove(&t.storage_key).unwrap_or_default();
        return Ok(RawTensor {
            dtype: t.dtype,
            shape,
            bytes,
        });
    }
    if contiguous {
        return Ok(RawTensor {
            dtype: t.dtype,
            shape,
            bytes: storage[start..start + numel * es].to_vec(),
        });
    }
    let mut bytes = Vec::with_capacity(numel * es);
    let mut idx = vec![0u64; shape.len()];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        let o = off as usize * es;
        bytes.extend_from_slice(&storage[o..o + es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(RawTensor {
        dtype: t.dtype,
        shape,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin"); // extension deliberately not .safetensors
        let mut sd = StateDict::new();
        sd.insert(
            "a.weight".into(),
            TensorData::new(
                vec![2, 3],
                vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, -0.0],
            )
            .unwrap(),
        );
        sd.insert("s".into(), TensorData::new(vec![], vec![7.0]).unwrap());
        let mut meta = BTreeMap::new();
        meta.insert("epoch".to_string(), "3".to_string());
        save_safetensors(&sd, &meta, &p).unwrap();
        let ck = Checkpoint::load(&p).unwrap();
        assert_eq!(ck.format, Format::Safetensors);
        assert_eq!(ck.metadata, meta);
        let back = ck.state_dict().unwrap();
        assert_eq!(back.len(), 2);
        for (k, t) in &sd {
            let b = &back[k];
            assert_eq!(b.shape, t.shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&b.data), bits(&t.data));
        }
    }

    #[test]
    fn save_refuses_inconsistent_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut sd = StateDict::new();
        sd.insert(
            "bad".into(),
            TensorData {
                shape: vec![3],
                data: vec![1.0],
            },
        );
        let e = save_safetensors(&sd, &BTreeMap::new(), &dir.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn unknown_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.pth");
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            Checkpoint::load(&p),
            Err(CheckpointError::UnknownFormat { .. })
        ));
        std::fs::write(&p, b"hello world, not a model").unwrap();
        let e = Checkpoint::load(&p).unwrap_err();
        assert!(e.to_string().contains("e.pth"), "{e}");
        std::fs::write(&p, b"\x80\x02\x8a\x0alZ").unwrap();
        assert!(matches!(
            Checkpoint::load(&p),
            Err(CheckpointError::LegacyTorch { .. })
        ));
        assert!(matches!(
            Checkpoint::load(&dir.path().join("missing.pth")),
            Err(CheckpointError::Io { .. })
        ));
        let e = Checkpoint::load(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::IsDirectory { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("is a directory; expected a checkpoint file")
                && !e.to_string().contains("os error"),
            "{e}"
        );
    }

    #[test]
    fn int_to_f32_is_exact_or_refused() {
        let t = RawTensor {
            dtype: DType::I64,
            shape: vec![2],
            bytes: [3i64, (1 << 40) + 1]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        };
        assert!(t.to_f32().is_err());
        let t = RawTensor {
            dtype: DType::I64,
            shape: vec![1],
            bytes: 3i64.to_le_bytes().to_vec(),
        };
        assert_eq!(t.to_f32().unwrap().data, vec![3.0]);
    }
}
