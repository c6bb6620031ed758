//! The windows a run trains and evaluates on, and how they are batched.
//!
//! A model call needs one `input_chans` for the whole batch, so windows are kept in
//! groups of equal electrode list and patch count (the official pretraining keeps one
//! loader per dataset for the same reason). An epoch shuffles each group with the
//! run's seeded order, cuts it into full batches (the official train loaders drop the
//! last incomplete one) and shuffles the order of the batches; the count of batches is
//! the same every epoch, as the per-step schedule requires.
//!
//! Sources: a fine-tuning dataset written by `make-dataset` (read through
//! [`crate::data::Dataset`], memory-mapped), and for the tokenizer and pretraining also
//! HDF5 stores (`make-dataset pretrain-h5`), cut here into consecutive windows.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::data::Dataset;

/// Errors assembling windows.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("dataset {path}: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error("store {path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("`{key}` selects no window of {path}: {fix}")]
    Empty {
        key: String,
        path: PathBuf,
        fix: String,
    },
}

enum Source {
    /// Windows `rows` of a dataset.
    Dataset { ds: Arc<Dataset>, rows: Vec<usize> },
    /// Windows held in memory, `[n, C, P, 200]` µV.
    Memory { data: Vec<f32>, n: usize },
}

/// Store windows of one electrode list, gathered before they become a [`Group`].
struct StoreGroup {
    channels: Vec<String>,
    input_chans: Vec<i64>,
    /// `[n, C, P, 200]` µV.
    data: Vec<f32>,
    n: usize,
}

/// Windows sharing one electrode list and patch count.
pub struct Group {
    pub channels: Vec<String>,
    pub input_chans: Vec<i64>,
    pub patches: usize,
    source: Source,
}

impl Group {
    fn len(&self) -> usize {
        match &self.source {
            Source::Dataset { rows, .. } => rows.len(),
            Source::Memory { n, .. } => *n,
        }
    }

    fn window_len(&self) -> usize {
        self.channels.len() * self.patches * 200
    }
}

/// A batch ready for a model: `x` is µV/100 (the engines' scaling) `[B, C, P, 200]`.
pub struct TensorBatch {
    pub x: Tensor,
    pub input_chans: Tensor,
    /// Class ids `[B]` (i64) for labelled windows.
    pub labels: Option<Tensor>,
}

/// A set of windows in groups; index `i` runs over all groups in order.
pub struct WindowSet {
    groups: Vec<Group>,
    /// First global index of each group.
    starts: Vec<usize>,
    labels: Vec<Option<i64>>,
}

impl WindowSet {
    fn new(groups: Vec<Group>, labels: Vec<Option<i64>>) -> WindowSet {
        let mut starts = Vec::with_capacity(groups.len());
        let mut s = 0;
        for g in &groups {
            starts.push(s);
            s += g.len();
        }
        WindowSet {
            groups,
            starts,
            labels,
        }
    }

    /// Windows `rows` of an open dataset, labelled (`labelled`) or not. A dataset with
    /// an electrode outside the model's list is refused (the model cannot embed it).
    pub fn from_dataset(
        ds: Arc<Dataset>,
        rows: Vec<usize>,
        labelled: bool,
    ) -> Result<WindowSet, WindowError> {
        let labels = rows
            .iter()
            .map(|&r| labelled.then(|| ds.labels()[r]))
            .collect();
        let channels = ds.channels().to_vec();
        let input_chans =
            labram_core::electrodes::input_chans(&channels).map_err(|e| WindowError::Dataset {
                path: ds.dir().to_path_buf(),
                message: e.to_string(),
            })?;
        let patches = ds.window_shape()[1];
        Ok(WindowSet::new(
            vec![Group {
                channels,
                input_chans,
                patches,
                source: Source::Dataset { ds, rows },
            }],
            labels,
        ))
    }

    /// Unlabelled windows of `patches` patches cut one after another from every
    /// recording of the HDF5 stores. Recordings with the same electrodes share a group;
    /// a recording with an electrode outside the model's list is skipped (and reported).
    pub fn from_stores(
        paths: &[PathBuf],
        patches: usize,
    ) -> Result<(WindowSet, Vec<String>), WindowError> {
        let mut groups: Vec<StoreGroup> = Vec::new();
        let mut skipped = Vec::new();
        let len = patches * 200;
        for path in paths {
            let recs = crate::data::pretrain::read_store(path).map_err(|e| WindowError::Store {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for r in recs {
                if (r.rate_hz - 200.0).abs() > 1e-6 {
                    skipped.push(format!(
                        "{}:{} (rate {} Hz, not 200)",
                        path.display(),
                        r.name,
                        r.rate_hz
                    ));
                    continue;
                }
                let input_chans = match labram_core::electrodes::input_chans(&r.channels) {
                    Ok(c) => c,
                    Err(e) => {
                        skipped.push(format!("{}:{} ({e})", path.display(), r.name));
                        continue;
                    }
                };
                let samples = r.data.first().map_or(0, Vec::len);
                let n = samples / len;
                if n == 0 {
                    skipped.push(format!(
                        "{}:{} (shorter than one window)",
                        path.display(),
                        r.name
                    ));
                    continue;
                }
                let gi = match groups.iter().position(|g| g.channels == r.channels) {
                    Some(i) => i,
                    None => {
                        groups.push(StoreGroup {
                            channels: r.channels.clone(),
                            input_chans,
                            data: Vec::new(),
                            n: 0,
                        });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[gi];
                for w in 0..n {
                    for ch in &r.data {
                        g.data.extend_from_slice(&ch[w * len..(w + 1) * len]);
                    }
                }
                g.n += n;
            }
        }
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|g| Group {
                channels: g.channels,
                input_chans: g.input_chans,
                patches,
                source: Source::Memory {
                    data: g.data,
                    n: g.n,
                },
            })
            .collect();
        let total: usize = groups.iter().map(Group::len).sum();
        Ok((WindowSet::new(groups, vec![None; total]), skipped))
    }

    /// Windows held in memory: `data` is `[n, C, P, 200]` µV row-major, `labels` one
    /// per window (or empty for unlabelled windows). Benchmarks and tests.
    pub fn from_memory(
        channels: Vec<String>,
        patches: usize,
        data: Vec<f32>,
        labels: Vec<i64>,
    ) -> Result<WindowSet, WindowError> {
        let input_chans =
            labram_core::electrodes::input_chans(&channels).map_err(|e| WindowError::Dataset {
                path: PathBuf::from("<memory>"),
                message: e.to_string(),
            })?;
        let wl = channels.len() * patches * 200;
        let n = data.len().checked_div(wl).unwrap_or(0);
        if n * wl != data.len() || (!labels.is_empty() && labels.len() != n) {
            return Err(WindowError::Dataset {
                path: PathBuf::from("<memory>"),
                message: format!(
                    "{} values and {} labels do not make whole windows of {wl} values",
                    data.len(),
                    labels.len()
                ),
            });
        }
        let labels = if labels.is_empty() {
            vec![None; n]
        } else {
            labels.into_iter().map(Some).collect()
        };
        Ok(WindowSet::new(
            vec![Group {
                channels,
                input_chans,
                patches,
                source: Source::Memory { data, n },
            }],
            labels,
        ))
    }

    /// Joins two sets (unlabelled use: the tokenizer and pretraining).
    pub fn extend(self, other: WindowSet) -> WindowSet {
        let mut groups = self.groups;
        groups.extend(other.groups);
        let mut labels = self.labels;
        labels.extend(other.labels);
        WindowSet::new(groups, labels)
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True without windows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The groups (electrodes, patches, sizes).
    pub fn groups(&self) -> impl Iterator<Item = (&[String], usize, usize)> {
        self.groups
            .iter()
            .map(|g| (g.channels.as_slice(), g.patches, g.len()))
    }

    /// Labels of all windows (None for unlabelled ones).
    pub fn labels(&self) -> &[Option<i64>] {
        &self.labels
    }

    fn locate(&self, i: usize) -> (usize, usize) {
        let g = self.starts.partition_point(|&s| s <= i) - 1;
        (g, i - self.starts[g])
    }

    /// The batches of one epoch (see the module docs): global window indices.
    pub fn epoch_batches(&self, seed: u64, epoch: usize, batch: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let order = super::rng::epoch_order(seed ^ ((gi as u64) << 32), epoch, g.len());
            for c in order.chunks_exact(batch.max(1)) {
                out.push(c.iter().map(|&l| self.starts[gi] + l).collect());
            }
        }
        if self.groups.len() > 1 {
            let mut rng = ChaCha8Rng::seed_from_u64(super::rng::step_seed(
                seed,
                epoch as u64 ^ 0xBA7C_0000_0000,
            ) as u64);
            out.shuffle(&mut rng);
        }
        out
    }

    /// Consecutive batches of at most `batch` windows covering every window once, each
    /// inside one group (evaluation).
    pub fn eval_batches(&self, batch: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let idx: Vec<usize> = (0..g.len()).map(|l| self.starts[gi] + l).collect();
            out.extend(idx.chunks(batch.max(1)).map(<[usize]>::to_vec));
        }
        out
    }

    /// The µV samples of windows `indices` (all of one group) as one row-major buffer,
    /// with the group; this is the loader's work, measured by the benchmark.
    pub fn gather(&self, indices: &[usize]) -> Result<(Vec<f32>, &Group), WindowError> {
        let (g0, _) = self.locate(indices.first().copied().unwrap_or(0));
        let g = &self.groups[g0];
        let wl = g.window_len();
        let mut x = vec![0f32; indices.len() * wl];
        for (chunk, &i) in x.chunks_exact_mut(wl.max(1)).zip(indices) {
            let (gi, l) = self.locate(i);
            debug_assert_eq!(gi, g0, "a batch spans two groups");
            match &g.source {
                Source::Dataset { ds, rows } => {
                    ds.window_into(rows[l], chunk)
                        .map_err(|e| WindowError::Dataset {
                            path: ds.dir().to_path_buf(),
                            message: e.to_string(),
                        })?
                }
                Source::Memory { data, .. } => chunk.copy_from_slice(&data[l * wl..(l + 1) * wl]),
            }
        }
        Ok((x, g))
    }

    /// Windows `indices` as model input on `device`: `x / 100` as the official
    /// engines (IEEE float division, exactly `samples / 100`).
    pub fn batch(&self, indices: &[usize], device: Device) -> Result<TensorBatch, WindowError> {
        let (x, g) = self.gather(indices)?;
        let shape = [
            indices.len() as i64,
            g.channels.len() as i64,
            g.patches as i64,
            200,
        ];
        let x = (Tensor::from_slice(&x).view(shape).to_device(device)) / 100.0;
        let input_chans = Tensor::from_slice(&g.input_chans).to_device(device);
        let labels = indices
            .iter()
            .map(|&i| self.labels[i])
            .collect::<Option<Vec<i64>>>()
            .map(|l| Tensor::from_slice(&l).to_device(device));
        Ok(TensorBatch {
            x: x.to_kind(Kind::Float),
            input_chans,
            labels,
        })
    }
}

/// The three splits of a fine-tuning dataset, chosen by the dataset's own split names
/// or, when the run file lists subjects, by subject (from any split).
pub struct Splits {
    pub train: WindowSet,
    pub val: Option<WindowSet>,
    pub test: Option<WindowSet>,
    pub classes: Vec<String>,
    pub channels: Vec<String>,
    pub patches: usize,
    pub dataset: Arc<Dataset>,
}

/// Opens `path` and selects the splits (see [`Splits`]). `subjects` are the expanded
/// `data.{train,val,test}_subjects` lists (empty = use the dataset's split).
pub fn open_splits(
    path: &Path,
    subjects: [&[String]; 3],
    labelled_train: bool,
) -> Result<Splits, WindowError> {
    let ds = Arc::new(Dataset::open(path).map_err(|e| WindowError::Dataset {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?);
    let names = ["train", "val", "test"];
    let mut sets: Vec<Option<WindowSet>> = Vec::new();
    for (k, (split, wanted)) in names.iter().zip(subjects).enumerate() {
        let rows: Vec<usize> = if wanted.is_empty() {
            ds.split_indices(split)
        } else {
            let subj_names = &ds.meta().subjects;
            (0..ds.len())
                .filter(|&i| {
                    let s = ds.subjects()[i];
                    usize::try_from(s)
                        .ok()
                        .and_then(|s| subj_names.get(s))
                        .is_some_and(|n| wanted.contains(n))
                })
                .collect()
        };
        if rows.is_empty() {
            if k == 0 {
                return Err(WindowError::Empty {
                    key: if wanted.is_empty() {
                        "the dataset's `train` split".into()
                    } else {
                        "data.train_subjects".into()
                    },
                    path: path.to_path_buf(),
                    fix: format!(
                        "the dataset's subjects are {:?}; list some of them",
                        ds.meta().subjects
                    ),
                });
            }
            if !wanted.is_empty() {
                return Err(WindowError::Empty {
                    key: format!("data.{split}_subjects"),
                    path: path.to_path_buf(),
                    fix: format!(
                        "the dataset's subjects are {:?}; list some of them or remove the key",
                        ds.meta().subjects
                    ),
                });
            }
            sets.push(None);
            continue;
        }
        let labelled = k > 0 || labelled_train;
        sets.push(Some(WindowSet::from_dataset(ds.clone(), rows, labelled)?));
    }
    let mut it = sets.into_iter();
    let train = it.next().flatten().ok_or_else(|| WindowError::Empty {
        key: "data.train_subjects".into(),
        path: path.to_path_buf(),
        fix: "list training subjects".into(),
    })?;
    Ok(Splits {
        train,
        val: it.next().flatten(),
        test: it.next().flatten(),
        classes: ds.classes().to_vec(),
        channels: ds.channels().to_vec(),
        patches: ds.window_shape()[1],
        dataset: ds,
    })
}
