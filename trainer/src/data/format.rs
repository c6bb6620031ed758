//! The fine-tuning dataset format: a directory of safetensors shards plus one
//! `meta.json`, written by `make-dataset` and read by the training loop, the
//! baseline and `evaluate` through [`Dataset`].
//!
//! ```text
//! <dir>/meta.json                   everything that is not per window (below)
//! <dir>/train-00000.safetensors     windows of split "train", in order
//! <dir>/train-00001.safetensors
//! <dir>/val-00000.safetensors
//! <dir>/test-00000.safetensors
//! ```
//!
//! Each shard holds, for its `n` windows:
//!
//! | tensor    | dtype | shape                   | meaning |
//! |-----------|-------|-------------------------|---------|
//! | `windows` | F32   | `[n, C, P, 200]`        | EEG in µV at 200 Hz, channels in `meta.channels` order, `P` patches of 200 samples |
//! | `labels`  | I64   | `[n]`                   | class index into `meta.classes` |
//! | `subjects`| I64   | `[n]`                   | index into `meta.subjects` |
//! | `sources` | I64   | `[n]`                   | index into `meta.sources` (recording file the window came from) |
//! | `offsets` | I64   | `[n]`                   | first sample of the window in the preprocessed (200 Hz) recording |
//!
//! and the safetensors header metadata `{"format": "labram-windows/1", "split": <name>}`.
//! `meta.json` ([`Meta`]) records the classes (index → name), channels (electrode
//! names, the model's `input_chans` order), patches per window, hop, the
//! preprocessing (mode, band edges, notch, rate, unit: the record that goes on
//! into the model card), subjects, sources, per-split counts and shard names,
//! the command that made the dataset and the files it skipped (with why).
//!
//! Why safetensors: a plain, documented, memory-mappable layout that PyTorch
//! (`safetensors.torch.load_file`), numpy and Rust all read without code
//! execution; shards keep every file a manageable size (default 512 MiB) and let
//! writers stream. [`Dataset::open`] maps the shards (`memmap2`) and copies a
//! window only when asked, so opening a dataset of any size is instant and
//! random access costs one `memcpy` per window.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use labram_core::card::{Preprocessing, PATCH_SIZE};
use memmap2::Mmap;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

/// Value of `meta.format` and of the shards' `format` metadata.
pub const FORMAT: &str = "labram-windows/1";
/// File name of the metadata.
pub const META_FILE: &str = "meta.json";
/// The split names, in their canonical order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Errors opening, reading or writing a dataset. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a dataset made by `labram-trainer make-dataset`: {message}")]
    NotADataset { path: PathBuf, message: String },
    #[error("{path}: shard is corrupt or incomplete: {message}; re-run make-dataset")]
    BadShard { path: PathBuf, message: String },
    #[error("dataset {dir} has no split `{split}` (it has: {available}); pick one of those with --split")]
    NoSplit {
        dir: PathBuf,
        split: String,
        available: String,
    },
    #[error("window index {index} is out of range: the dataset has {len} windows")]
    Index { index: usize, len: usize },
    #[error("window has shape {got:?}, the dataset's windows are {expected:?}")]
    Shape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("cannot serialise {path}: {message}")]
    Serialize { path: PathBuf, message: String },
}

/// Per-split summary in `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SplitMeta {
    pub windows: usize,
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Windows per class (index = class).
    pub class_counts: Vec<usize>,
    /// Subjects (names) with at least one window in this split.
    pub subjects: Vec<String>,
}

/// A file the maker skipped, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// `meta.json`: everything about a dataset that is not per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Always [`FORMAT`].
    pub format: String,
    /// The maker: `eegmat`, `annotated`, `tuab`, `tuev`.
    pub kind: String,
    /// What the labels mean, in words.
    pub task: String,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Electrode names (upper case as in the model's list), in window row order.
    pub channels: Vec<String>,
    /// Samples per patch (200).
    pub patch_size: usize,
    /// Patches per window.
    pub window_patches: usize,
    /// Hop between window starts in seconds (for sliding windows; event-locked
    /// makers record their rule in `windowing`).
    pub hop_s: Option<f64>,
    /// How windows were placed, in words.
    pub windowing: String,
    /// The preprocessing every window went through.
    pub preprocessing: Preprocessing,
    /// Subject names (index = the `subjects` tensor value).
    pub subjects: Vec<String>,
    /// Source recordings, as given relative to the input folders (index = the
    /// `sources` tensor value).
    pub sources: Vec<String>,
    /// Splits present, by name.
    pub splits: BTreeMap<String, SplitMeta>,
    /// The command line that made the dataset.
    pub command: String,
    /// Files skipped, with why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Maker-specific details (split seeds, subject ranges…).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

impl Meta {
    /// Samples per window and channel.
    pub fn window_samples(&self) -> usize {
        self.window_patches * self.patch_size
    }

    /// Reads `<dir>/meta.json`.
    pub fn load(dir: &Path) -> Result<Self, FormatError> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| FormatError::NotADataset {
            path: dir.to_path_buf(),
            message: format!("cannot read {META_FILE}: {e}"),
        })?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| FormatError::NotADataset {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if meta.format != FORMAT {
            return Err(FormatError::NotADataset {
                path,
                message: format!("format is `{}`, this build reads `{FORMAT}`", meta.format),
            });
        }
        if meta.patch_size != PATCH_SIZE || meta.window_patches == 0 || meta.channels.is_empty() {
            return Err(FormatError::NotADataset {
                path,
                message: format!(
                    "patch_size {} / window_patches {} / {} channels are not a valid window shape",
                    meta.patch_size,
                    meta.window_patches,
                    meta.channels.len()
                ),
            });
        }
        Ok(meta)
    }

    fn save(&self, dir: &Path) -> Result<(), FormatError> {
        let path = dir.join(META_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| FormatError::Serialize {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text + "\n").map_err(|source| FormatError::Io { path, source })
    }
}

/// One window on its way into a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `[channels][window samples]` flattened, channel-major, µV.
    pub data: Vec<f32>,
    pub label: usize,
    /// Index into [`Meta::subjects`].
    pub subject: usize,
    /// Index into [`Meta::sources`].
    pub source: usize,
    /// First sample at 200 Hz in the preprocessed recording.
    pub offset: usize,
}

/// Bytes reserved for a shard's JSON header (the real header is ~0.5 KB and is
/// padded with spaces, which the safetensors format allows). A fixed size lets
/// the writer stream windows straight into the file and write the header,
/// whose offsets depend on the final count, last.
const HEADER_RESERVE: usize = 4096;

/// Writes windows split by split into shards; [`DatasetWriter::finish`] writes
/// `meta.json` last, so a directory with a `meta.json` is complete.
///
/// Windows stream to disk as they arrive (one open shard per split, through a
/// buffered writer); only the per-window integers stay in memory until a shard
/// is closed, so memory does not grow with the dataset.
pub struct DatasetWriter {
    dir: PathBuf,
    meta: Meta,
    shard_windows: usize,
    open: BTreeMap<String, ShardFile>,
    /// Reused little-endian encoding buffer.
    encode: Vec<u8>,
}

struct ShardFile {
    file: BufWriter<File>,
    /// Written as `<name>.partial`, renamed to `name` when complete.
    partial: PathBuf,
    name: String,
    labels: Vec<i64>,
    subjects: Vec<i64>,
    sources: Vec<i64>,
    offsets: Vec<i64>,
}

/// Writes `values` little-endian through the reusable buffer `buf`.
fn write_le<T: Copy, const N: usize>(
    out: &mut impl Write,
    buf: &mut Vec<u8>,
    values: &[T],
    f: impl Fn(T) -> [u8; N],
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 14;
    for chunk in values.chunks(CHUNK) {
        buf.clear();
        buf.resize(chunk.len() * N, 0);
        for (b, &v) in buf.chunks_exact_mut(N).zip(chunk) {
            b.copy_from_slice(&f(v));
        }
        out.write_all(buf)?;
    }
    Ok(())
}

impl DatasetWriter {
    /// Creates `dir` (which must not hold a dataset already unless `overwrite`)
    /// for windows of `meta`'s shape. `shard_bytes` bounds each shard's size.
    /// `meta.splits`, `subjects` and `sources` are filled in as windows arrive.
    pub fn create(
        dir: &Path,
        meta: Meta,
        shard_bytes: usize,
        overwrite: bool,
    ) -> Result<Self, FormatError> {
        let io = |source| FormatError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if dir.join(META_FILE).exists() && !overwrite {
            return Err(FormatError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a dataset already exists here; pass --overwrite or choose another --output",
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        // Remove what a previous run left (shards, meta) so no stale shard survives.
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == META_FILE
                || name.ends_with(".safetensors")
                || name.ends_with(".safetensors.partial")
            {
                std::fs::remove_file(&path).map_err(|source| FormatError::Io { path, source })?;
            }
        }
        let window_bytes = meta.channels.len() * meta.window_samples() * 4;
        Ok(Self {
            dir: dir.to_path_buf(),
            shard_windows: (shard_bytes / window_bytes.max(1)).max(1),
            meta: Meta {
                splits: BTreeMap::new(),
                ..meta
            },
            open: BTreeMap::new(),
            encode: Vec::new(),
        })
    }

    /// The metadata so far (subjects and sources are registered through it).
    pub fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }

    /// Index of a subject name, registering it on first use.
    pub fn subject_index(&mut self, name: &str) -> usize {
        index_or_push(&mut self.meta.subjects, name)
    }

    /// Index of a source name, registering it on first use.
    pub fn source_index(&mut self, name: &str) -> usize {
        index_or_push(&mut self.meta.sources, name)
    }

    /// Appends one window to `split`.
    pub fn push(&mut self, split: &str, w: &Window) -> Result<(), FormatError> {
        self.push_windows(split, &w.data, &[w.label], w.subject, w.source, &[w.offset])
    }

    /// Appends windows of one recording to `split`: `data` holds
    /// `labels.len()` windows back to back (each `[C, P, 200]`), with their
    /// labels and offsets.
    pub fn push_windows(
        &mut self,
        split: &str,
        data: &[f32],
        labels: &[usize],
        subject: usize,
        source: usize,
        offsets: &[usize],
    ) -> Result<(), FormatError> {
        let wl = self.meta.channels.len() * self.meta.window_samples();
        if data.len() != wl * labels.len() {
            return Err(FormatError::Shape {
                got: vec![data.len()],
                expected: vec![wl * labels.len()],
            });
        }
        self.push_windows_with(split, labels, subject, source, offsets, |k, out| {
            out.copy_from_slice(&data[k * wl..(k + 1) * wl])
        })
    }

    /// Appends `labels.len()` windows of one recording to `split`; `fill(k,
    /// out)` writes window `k` (`[C, P, 200]`, µV) into `out`, a scratch
    /// buffer the writer reuses, so windows go from the recording to the file
    /// without an intermediate copy of the whole set.
    pub fn push_windows_with(
        &mut self,
        split: &str,
        labels: &[usize],
        subject: usize,
        source: usize,
        offsets: &[usize],
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Result<(), FormatError> {
        let wl = self.meta.channels.len() * self.meta.window_samples();
        if offsets.len() != labels.len() {
            return Err(FormatError::Shape {
                got: vec![offsets.len()],
                expected: vec![labels.len()],
            });
        }
        let n_classes = self.meta.classes.len();
        if let Some(&bad) = labels.iter().find(|&&l| l >= n_classes) {
            return Err(FormatError::Shape {
                got: vec![bad],
                expected: vec![n_classes],
            });
        }
        let subject_name = self.meta.subjects.get(subject).cloned();
        let mut scratch = vec![0.0f32; wl];
        for (k, (&label, &offset)) in labels.iter().zip(offsets).enumerate() {
            let entry = self.meta.splits.entry(split.to_string()).or_default();
            entry.windows += 1;
            if entry.class_counts.len() < n_classes {
                entry.class_counts.resize(n_classes, 0);
            }
            entry.class_counts[label] += 1;
            if let Some(name) = &subject_name {
                if !entry.subjects.contains(name) {
                    entry.subjects.push(name.clone());
                }
            }
            if !self.open.contains_key(split) {
                let shard = self.open_shard(split)?;
                self.open.insert(split.to_string(), shard);
            }
            let Some(shard) = self.open.get_mut(split) else {
                continue;
            };
            fill(k, &mut scratch);
            // The file is little-endian: on such targets the window's bytes are
            // written as they are (one copy less than encoding them).
            let written = if cfg!(target_endian = "little") {
                shard.file.write_all(bytemuck::cast_slice(&scratch))
            } else {
                write_le(
                    &mut shard.file,
                    &mut self.encode,
                    &scratch,
                    f32::to_le_bytes,
                )
            };
            written.map_err(|source| FormatError::Io {
                path: shard.partial.clone(),
                source,
            })?;
            shard.labels.push(label as i64);
            shard.subjects.push(subject as i64);
            shard.sources.push(source as i64);
            shard.offsets.push(offset as i64);
            if shard.labels.len() >= self.shard_windows {
                self.close_shard(split)?;
            }
        }
        Ok(())
    }

    fn open_shard(&mut self, split: &str) -> Result<ShardFile, FormatError> {
        let index = self.meta.splits.get(split).map_or(0, |s| s.shards.len());
        let name = format!("{split}-{index:05}.safetensors");
        let partial = self.dir.join(format!("{name}.partial"));
        let io = |source| FormatError::Io {
            path: partial.clone(),
            source,
        };
        // A 1 MiB buffer: windows (60 KiB for 19 channels x 4 patches) are gathered
        // into few large write calls.
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&partial).map_err(io)?);
        file.write_all(&[0u8; 8 + HEADER_RESERVE]).map_err(io)?;
        Ok(ShardFile {
            file,
            partial,
            name,
            labels: Vec::new(),
            subjects: Vec::new(),
            sources: Vec::new(),
            offsets: Vec::new(),
        })
    }

    fn close_shard(&mut self, split: &str) -> Result<(), FormatError> {
        let Some(mut shard) = self.open.remove(split) else {
            return Ok(());
        };
        let n = shard.labels.len();
        let shape = [
            n,
            self.meta.channels.len(),
            self.meta.window_patches,
            self.meta.patch_size,
        ];
        let window_bytes = shape.iter().product::<usize>() * 4;
        let io = |source| FormatError::Io {
            path: shard.partial.clone(),
            source,
        };
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({ "format": FORMAT, "split": split }),
        );
        header.insert(
            "windows".into(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [0, window_bytes] }),
        );
        let mut at = window_bytes;
        for (name, col) in [
            ("labels", &shard.labels),
            ("subjects", &shard.subjects),
            ("sources", &shard.sources),
            ("offsets", &shard.offsets),
        ] {
            write_le(&mut shard.file, &mut self.encode, col, i64::to_le_bytes).map_err(io)?;
            header.insert(
                name.into(),
                serde_json::json!({ "dtype": "I64", "shape": [n], "data_offsets": [at, at + 8 * n] }),
            );
            at += 8 * n;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        if text.len() > HEADER_RESERVE {
            return Err(FormatError::Serialize {
                path: shard.partial.clone(),
                message: format!(
                    "header of {} bytes exceeds the {HEADER_RESERVE} reserved",
                    text.len()
                ),
            });
        }
        text.resize(HEADER_RESERVE, b' ');
        let mut file = shard.file.into_inner().map_err(|e| FormatError::Io {
            path: shard.partial.clone(),
            source: e.into_error(),
        })?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&(HEADER_RESERVE as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.flush().map_err(io)?;
        drop(file);
        let path = self.dir.join(&shard.name);
        std::fs::rename(&shard.partial, &path).map_err(io)?;
        self.meta
            .splits
            .entry(split.to_string())
            .or_default()
            .shards
            .push(shard.name);
        Ok(())
    }

    /// Windows written so far, all splits.
    pub fn windows(&self) -> usize {
        self.meta.splits.values().map(|s| s.windows).sum()
    }

    /// Closes every shard and writes `meta.json`. Returns the final metadata.
    pub fn finish(mut self) -> Result<Meta, FormatError> {
        let splits: Vec<String> = self.open.keys().cloned().collect();
        for s in splits {
            self.close_shard(&s)?;
        }
        self.meta.save(&self.dir)?;
        Ok(self.meta)
    }

    /// Removes the partial shards of an abandoned run (nothing usable written).
    pub fn abandon(self) {
        for shard in self.open.into_values() {
            let _ = std::fs::remove_file(&shard.partial);
        }
    }
}

fn index_or_push(list: &mut Vec<String>, name: &str) -> usize {
    match list.iter().position(|s| s == name) {
        Some(i) => i,
        None => {
            list.push(name.to_string());
            list.len() - 1
        }
    }
}

/// One mapped shard.
struct Shard {
    map: Mmap,
    /// Byte range of the `windows` tensor in `map`.
    windows_at: usize,
    n: usize,
}

/// A dataset opened for reading: one split or all of them, windows copied out
/// of memory-mapped shards on demand.
pub struct Dataset {
    dir: PathBuf,
    meta: Meta,
    split_names: Vec<String>,
    shards: Vec<Shard>,
    /// For window `i`: (shard, row).
    index: Vec<(u32, u32)>,
    labels: Vec<i64>,
    subjects: Vec<i64>,
    sources: Vec<i64>,
    offsets: Vec<i64>,
    /// Split (index into `split_names`) of each window.
    split_of: Vec<u8>,
}

/// A batch of windows: `x` is `[len, C, P, 200]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub x: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<i64>,
}

fn read_i64(
    view: &TensorView<'_>,
    path: &Path,
    name: &str,
    n: usize,
) -> Result<Vec<i64>, FormatError> {
    if view.dtype() != Dtype::I64 || view.shape() != [n] {
        return Err(FormatError::BadShard {
            path: path.to_path_buf(),
            message: format!(
                "`{name}` is {:?} {:?}, expected I64 [{n}]",
                view.dtype(),
                view.shape()
            ),
        });
    }
    Ok(view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

impl Dataset {
    /// Opens every split of the dataset in `dir`.
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        Self::open_splits(dir, None)
    }

    /// Opens one split (`train`, `val`, `test`…).
    pub fn open_split(dir: &Path, split: &str) -> Result<Self, FormatError> {
        Self::open_splits(dir, Some(split))
    }

    fn open_splits(dir: &Path, only: Option<&str>) -> Result<Self, FormatError> {
        let meta = Meta::load(dir)?;
        let mut names: Vec<String> = meta.splits.keys().cloned().collect();
        names.sort_by_key(|n| SPLITS.iter().position(|s| s == n).unwrap_or(SPLITS.len()));
        if let Some(s) = only {
            if !meta.splits.contains_key(s) {
                return Err(FormatError::NoSplit {
                    dir: dir.to_path_buf(),
                    split: s.to_string(),
                    available: names.join(", "),
                });
            }
        }
        let mut ds = Dataset {
            dir: dir.to_path_buf(),
            split_names: Vec::new(),
            shards: Vec::new(),
            index: Vec::new(),
            labels: Vec::new(),
            subjects: Vec::new(),
            sources: Vec::new(),
            offsets: Vec::new(),
            split_of: Vec::new(),
            meta,
        };
        let shape_tail = [
            ds.meta.channels.len(),
            ds.meta.window_patches,
            ds.meta.patch_size,
        ];
        for name in names.into_iter().filter(|n| only.is_none_or(|s| s == n)) {
            let split_idx = ds.split_names.len() as u8;
            let shard_names = ds.meta.splits[&name].shards.clone();
            for shard_name in shard_names {
                let path = dir.join(&shard_name);
                let file = File::open(&path).map_err(|source| FormatError::Io {
                    path: path.clone(),
                    source,
                })?;
                // SAFETY: the shard is only read; the mapping is valid while the
                // file is not truncated by another process, which make-dataset
                // never does to a finished dataset (it writes new shards via
                // rename).
                let map = unsafe { Mmap::map(&file) }.map_err(|source| FormatError::Io {
                    path: path.clone(),
                    source,
                })?;
                let st = SafeTensors::deserialize(&map).map_err(|e| FormatError::BadShard {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let w = st.tensor("windows").map_err(|e| FormatError::BadShard {
                    path: path.clone(),
                    message: format!("`windows`: {e}"),
                })?;
                let n = w.shape().first().copied().unwrap_or(0);
                if w.dtype() != Dtype::F32 || w.shape().len() != 4 || w.shape()[1..] != shape_tail {
                    return Err(FormatError::BadShard {
                        path,
                        message: format!(
                            "`windows` is {:?} {:?}, meta.json says F32 [n, {}, {}, {}]",
                            w.dtype(),
                            w.shape(),
                            shape_tail[0],
                            shape_tail[1],
                            shape_tail[2]
                        ),
                    });
                }
                let windows_at = w.data().as_ptr() as usize - map.as_ptr() as usize;
                let mut cols = Vec::new();
                for name in ["labels", "subjects", "sources", "offsets"] {
                    let v = st.tensor(name).map_err(|e| FormatError::BadShard {
                        path: path.clone(),
                        message: format!("`{name}`: {e}"),
                    })?;
                    cols.push(read_i64(&v, &path, name, n)?);
                }
                let shard_idx = ds.shards.len() as u32;
                ds.index.extend((0..n as u32).map(|r| (shard_idx, r)));
                ds.split_of.extend(std::iter::repeat_n(split_idx, n));
                let [labels, subjects, sources, offsets]: [Vec<i64>; 4] =
                    cols.try_into().map_err(|_| FormatError::BadShard {
                        path: path.clone(),
                        message: "missing columns".into(),
                    })?;
                ds.labels.extend(labels);
                ds.subjects.extend(subjects);
                ds.sources.extend(sources);
                ds.offsets.extend(offsets);
                drop(st);
                ds.shards.push(Shard { map, windows_at, n });
            }
            ds.split_names.push(name);
        }
        let classes = ds.meta.classes.len() as i64;
        if let Some(bad) = ds.labels.iter().find(|&&l| l < 0 || l >= classes) {
            return Err(FormatError::BadShard {
                path: dir.to_path_buf(),
                message: format!("label {bad} is outside the {classes} classes of meta.json"),
            });
        }
        Ok(ds)
    }

    /// The dataset's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Number of windows opened.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// `true` when no window was opened.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// `[C, P, 200]` of every window.
    pub fn window_shape(&self) -> [usize; 3] {
        [
            self.meta.channels.len(),
            self.meta.window_patches,
            self.meta.patch_size,
        ]
    }

    /// Floats per window.
    pub fn window_len(&self) -> usize {
        self.window_shape().iter().product()
    }

    /// Electrode names, in row order.
    pub fn channels(&self) -> &[String] {
        &self.meta.channels
    }

    /// Class names.
    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// All labels, window order.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Subject index of every window (names in [`Meta::subjects`]).
    pub fn subjects(&self) -> &[i64] {
        &self.subjects
    }

    /// Source index of every window (names in [`Meta::sources`]).
    pub fn sources(&self) -> &[i64] {
        &self.sources
    }

    /// Offset (200 Hz samples) of every window in its recording.
    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// Split name of window `i`.
    pub fn split_of(&self, i: usize) -> Option<&str> {
        self.split_of
            .get(i)
            .map(|&s| self.split_names[s as usize].as_str())
    }

    /// Indices of the windows of one split.
    pub fn split_indices(&self, split: &str) -> Vec<usize> {
        match self.split_names.iter().position(|s| s == split) {
            Some(k) => (0..self.len())
                .filter(|&i| self.split_of[i] as usize == k)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Raw little-endian bytes of window `i`.
    fn window_bytes(&self, i: usize) -> Result<&[u8], FormatError> {
        let &(s, r) = self.index.get(i).ok_or(FormatError::Index {
            index: i,
            len: self.len(),
        })?;
        let shard = &self.shards[s as usize];
        debug_assert!((r as usize) < shard.n);
        let len = self.window_len() * 4;
        let start = shard.windows_at + r as usize * len;
        Ok(&shard.map[start..start + len])
    }

    /// Copies window `i` (`[C, P, 200]` row-major, µV) into `out`.
    pub fn window_into(&self, i: usize, out: &mut [f32]) -> Result<(), FormatError> {
        let bytes = self.window_bytes(i)?;
        if out.len() != bytes.len() / 4 {
            return Err(FormatError::Shape {
                got: vec![out.len()],
                expected: vec![bytes.len() / 4],
            });
        }
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    /// Window `i` as a new vector.
    pub fn window(&self, i: usize) -> Result<Vec<f32>, FormatError> {
        let mut out = vec![0.0; self.window_len()];
        self.window_into(i, &mut out)?;
        Ok(out)
    }

    /// The windows `indices` stacked into one batch.
    pub fn batch(&self, indices: &[usize]) -> Result<Batch, FormatError> {
        let wl = self.window_len();
        let mut x = vec![0.0f32; indices.len() * wl];
        let mut labels = Vec::with_capacity(indices.len());
        for (chunk, &i) in x.chunks_exact_mut(wl.max(1)).zip(indices) {
            self.window_into(i, chunk)?;
            labels.push(self.labels[i]);
        }
        let [c, p, s] = self.window_shape();
        Ok(Batch {
            x,
            shape: [indices.len(), c, p, s],
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta(channels: usize, patches: usize) -> Meta {
        Meta {
            format: FORMAT.into(),
            kind: "test".into(),
            task: "unit test".into(),
            classes: vec!["a".into(), "b".into()],
            channels: labram_core::electrodes::ELECTRODES[..channels]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            patch_size: PATCH_SIZE,
            window_patches: patches,
            hop_s: Some(1.0),
            windowing: "sliding".into(),
            preprocessing: Preprocessing::default(),
            subjects: vec![],
            sources: vec![],
            splits: BTreeMap::new(),
            command: "test".into(),
            skipped: vec![],
            notes: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip_across_shards_and_splits() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(3, 2);
        let wl = 3 * 2 * 200;
        // Shards of 2 windows: 5 train windows → 3 shards.
        let mut w = DatasetWriter::create(dir.path(), m, 2 * wl * 4, false).unwrap();
        let s0 = w.subject_index("S0");
        let s1 = w.subject_index("S1");
        let src = w.source_index("x.edf");
        for i in 0..7 {
            let win = Window {
                data: (0..wl).map(|k| (i * 10_000 + k) as f32).collect(),
                label: i % 2,
                subject: if i < 5 { s0 } else { s1 },
                source: src,
                offset: i * 100,
            };
            w.push(if i < 5 { "train" } else { "test" }, &win).unwrap();
        }
        let meta = w.finish().unwrap();
        assert_eq!(meta.splits["train"].shards.len(), 3);
        assert_eq!(meta.splits["train"].class_counts, vec![3, 2]);
        assert_eq!(meta.splits["test"].subjects, vec!["S1".to_string()]);

        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.len(), 7);
        assert_eq!(ds.split_of(4), Some("train"));
        assert_eq!(ds.split_of(5), Some("test"));
        let w3 = ds.window(3).unwrap();
        assert_eq!(w3[0], 30_000.0);
        assert_eq!(w3[wl - 1], (30_000 + wl - 1) as f32);
        assert_eq!(ds.offsets()[6], 600);
        let b = ds.batch(&[6, 0]).unwrap();
        assert_eq!(b.shape, [2, 3, 2, 200]);
        assert_eq!(b.labels, vec![0, 0]);
        assert_eq!(b.x[0], 60_000.0);
        assert_eq!(b.x[wl], 0.0);

        let test = Dataset::open_split(dir.path(), "test").unwrap();
        assert_eq!(test.len(), 2);
        assert_eq!(test.window(0).unwrap()[1], 50_001.0);
        let err = Dataset::open_split(dir.path(), "val").err().unwrap();
        assert!(err.to_string().contains("train, test"), "{err}");
        assert!(matches!(
            ds.window(7),
            Err(FormatError::Index { index: 7, len: 7 })
        ));

        // A second writer refuses to overwrite without permission.
        assert!(DatasetWriter::create(dir.path(), meta.clone(), 1 << 20, false).is_err());
    }

    #[test]
    fn truncated_shard_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path(), meta(1, 1), 1 << 20, false).unwrap();
        let s = w.subject_index("S");
        w.push(
            "train",
            &Window {
                data: vec![1.0; 200],
                label: 1,
                subject: s,
                source: 0,
                offset: 0,
            },
        )
        .unwrap();
        w.finish().unwrap();
        let shard = dir.path().join("train-00000.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
        let err = Dataset::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("train-00000.safetensors"), "{err}");
    }
}
