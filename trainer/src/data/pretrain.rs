//! The pretraining store: HDF5 in the layout of the official maker
//! (`make_h5dataset_for_pretrain.py` with `shock/utils/h5.py`), so that stores
//! made by either side are interchangeable:
//!
//! ```text
//! /<recording>/eeg          float32 [channels, samples], µV at 200 Hz, chunks (channels, 200)
//!     attrs  lFreq   float64  band-pass low edge (Hz)
//!            hFreq   float64  band-pass high edge (Hz)
//!            rsFreq  int64    sample rate (200)
//!            chOrder string[] electrode names, upper case, in row order
//! ```
//!
//! The official store holds float64 (what MNE returns); this writer stores
//! float32 (half the size, the precision the model computes in) and the reader
//! accepts either. The writer adds attributes the official one lacks —
//! `filterMode` (`causal`/`zero-phase`), `notchFreq` (Hz, 0 = off), `unit`,
//! `source` (the recording's file name) and `preprocessing` (the JSON record that
//! goes into model cards) — which official readers ignore.
//!
//! Built on `hdf5-metno` (the maintained fork of the `hdf5` crate) against the
//! system libhdf5.

use std::path::{Path, PathBuf};

use hdf5::types::{VarLenAscii, VarLenUnicode};
use labram_core::card::{FilterMode, Preprocessing};

/// Errors writing or reading a store; each names the file, group or attribute.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("HDF5 {path}: {context}: {source}")]
    Hdf5 {
        path: PathBuf,
        context: String,
        source: hdf5::Error,
    },
    #[error("HDF5 {path}, group `{group}`: {message}")]
    Layout {
        path: PathBuf,
        group: String,
        message: String,
    },
}

/// One recording of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecording {
    /// Group name.
    pub name: String,
    /// Electrode names (`chOrder`).
    pub channels: Vec<String>,
    /// Sample rate (`rsFreq`).
    pub rate_hz: f64,
    /// Band-pass edges (`lFreq`, `hFreq`) when present.
    pub band_hz: Option<[f64; 2]>,
    /// `[channels][samples]` µV.
    pub data: Vec<Vec<f32>>,
}

/// Writes a store group by group.
pub struct StoreWriter {
    file: hdf5::File,
    path: PathBuf,
    pre: Preprocessing,
    groups: usize,
}

impl StoreWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path, pre: &Preprocessing) -> Result<Self, StoreError> {
        let file = hdf5::File::create(path).map_err(|source| StoreError::Hdf5 {
            path: path.to_path_buf(),
            context: "cannot create the file".into(),
            source,
        })?;
        let w = Self {
            file,
            path: path.to_path_buf(),
            pre: pre.clone(),
            groups: 0,
        };
        let text = serde_json::to_string(pre).unwrap_or_default();
        w.str_attr(&w.file, "preprocessing", &text)?;
        Ok(w)
    }

    fn err(&self, context: String) -> impl FnOnce(hdf5::Error) -> StoreError + '_ {
        move |source| StoreError::Hdf5 {
            path: self.path.clone(),
            context,
            source,
        }
    }

    fn str_attr(&self, loc: &hdf5::Location, name: &str, value: &str) -> Result<(), StoreError> {
        let v: VarLenUnicode = value.parse().map_err(|e| StoreError::Layout {
            path: self.path.clone(),
            group: loc.name(),
            message: format!("attribute `{name}` holds a NUL byte: {e}"),
        })?;
        loc.new_attr::<VarLenUnicode>()
            .create(name)
            .and_then(|a| a.write_scalar(&v))
            .map_err(self.err(format!("attribute `{name}`")))
    }

    /// A group name not used yet in this store, from a recording's name.
    pub fn unique_name(&self, wanted: &str) -> String {
        let base: String = wanted
            .chars()
            .map(|c| if c == '/' || c == '.' { '_' } else { c })
            .collect();
        let base = if base.is_empty() {
            "recording".to_string()
        } else {
            base
        };
        let mut name = base.clone();
        let mut k = 1;
        while self.file.link_exists(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// Adds one recording as group `name` (see [`Self::unique_name`]):
    /// `channels` electrode names, `data` `[channels][samples]` at 200 Hz.
    pub fn add(
        &mut self,
        name: &str,
        source: &str,
        channels: &[&str],
        data: &[Vec<f32>],
    ) -> Result<(), StoreError> {
        let c = data.len();
        let t = data.first().map_or(0, Vec::len);
        if c == 0 || t == 0 || c != channels.len() || data.iter().any(|r| r.len() != t) {
            return Err(StoreError::Layout {
                path: self.path.clone(),
                group: name.to_string(),
                message: format!(
                    "{c} rows × {t} samples for {} channel names: need equal, non-empty rows",
                    channels.len()
                ),
            });
        }
        let group = self
            .file
            .create_group(name)
            .map_err(self.err(format!("group `{name}`")))?;
        let ds = group
            .new_dataset::<f32>()
            .chunk((c, t.min(200)))
            .shape((c, t))
            .create("eeg")
            .map_err(self.err(format!("dataset `{name}/eeg`")))?;
        let mut flat = Vec::with_capacity(c * t);
        for row in data {
            flat.extend_from_slice(row);
        }
        ds.write_raw(&flat)
            .map_err(self.err(format!("writing `{name}/eeg`")))?;
        let [lo, hi] = self.pre.bandpass_hz.unwrap_or([0.0, 0.0]);
        let scalar_f64 = |n: &str, v: f64| {
            ds.new_attr::<f64>()
                .create(n)
                .and_then(|a| a.write_scalar(&v))
                .map_err(self.err(format!("attribute `{n}` of `{name}/eeg`")))
        };
        scalar_f64("lFreq", lo)?;
        scalar_f64("hFreq", hi)?;
        scalar_f64("notchFreq", self.pre.notch_hz.unwrap_or(0.0))?;
        ds.new_attr::<i64>()
            .create("rsFreq")
            .and_then(|a| a.write_scalar(&(self.pre.sample_rate_hz.round() as i64)))
            .map_err(self.err(format!("attribute `rsFreq` of `{name}/eeg`")))?;
        let names: Vec<VarLenUnicode> = channels
            .iter()
            .map(|s| s.to_uppercase().parse().unwrap_or_default())
            .collect();
        ds.new_attr::<VarLenUnicode>()
            .shape(names.len())
            .create("chOrder")
            .and_then(|a| a.write_raw(&names))
            .map_err(self.err(format!("attribute `chOrder` of `{name}/eeg`")))?;
        let mode = match self.pre.mode {
            FilterMode::Causal => "causal",
            FilterMode::ZeroPhase => "zero-phase",
        };
        self.str_attr(&ds, "filterMode", mode)?;
        self.str_attr(&ds, "unit", &self.pre.unit)?;
        self.str_attr(&ds, "source", source)?;
        self.groups += 1;
        Ok(())
    }

    /// Groups written.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> Result<usize, StoreError> {
        self.file.flush().map_err(|source| StoreError::Hdf5 {
            path: self.path.clone(),
            context: "flush".into(),
            source,
        })?;
        Ok(self.groups)
    }
}

/// Reads the string array attribute `chOrder`, whichever string type wrote it
/// (h5py writes variable-length UTF-8; other tools write ASCII or fixed length).
fn read_names(attr: &hdf5::Attribute) -> hdf5::Result<Vec<String>> {
    if let Ok(v) = attr.read_raw::<VarLenUnicode>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = attr.read_raw::<VarLenAscii>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    let v = attr.read_raw::<hdf5::types::FixedAscii<64>>()?;
    Ok(v.iter()
        .map(|s| s.as_str().trim_end_matches('\0').to_string())
        .collect())
}

fn read_number(ds: &hdf5::Dataset, name: &str) -> Option<f64> {
    let a = ds.attr(name).ok()?;
    a.read_scalar::<f64>()
        .ok()
        .or_else(|| a.read_scalar::<i64>().ok().map(|v| v as f64))
}

/// Reads every recording of a store (official layout), in group order.
pub fn read_store(path: &Path) -> Result<Vec<StoredRecording>, StoreError> {
    let e = |context: String| {
        move |source| StoreError::Hdf5 {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let file = hdf5::File::open(path).map_err(e("cannot open the file".into()))?;
    let mut out = Vec::new();
    for name in file.member_names().map_err(e("listing groups".into()))? {
        let layout = |message: String| StoreError::Layout {
            path: path.to_path_buf(),
            group: name.clone(),
            message,
        };
        let group = file.group(&name).map_err(e(format!("group `{name}`")))?;
        let ds = group
            .dataset("eeg")
            .map_err(|err| layout(format!("no dataset `eeg`: {err}")))?;
        let shape = ds.shape();
        if shape.len() != 2 {
            return Err(layout(format!(
                "`eeg` has shape {shape:?}, expected [channels, samples]"
            )));
        }
        let flat: Vec<f32> = ds
            .read_raw::<f32>()
            .map_err(e(format!("reading `{name}/eeg`")))?;
        let channels = match ds.attr("chOrder") {
            Ok(a) => read_names(&a).map_err(e(format!("attribute `chOrder` of `{name}/eeg`")))?,
            Err(err) => return Err(layout(format!("no attribute `chOrder`: {err}"))),
        };
        if channels.len() != shape[0] {
            return Err(layout(format!(
                "`chOrder` names {} channels but `eeg` has {} rows",
                channels.len(),
                shape[0]
            )));
        }
        let rate_hz = read_number(&ds, "rsFreq")
            .ok_or_else(|| layout("no numeric attribute `rsFreq`".into()))?;
        let band_hz = match (read_number(&ds, "lFreq"), read_number(&ds, "hFreq")) {
            (Some(l), Some(h)) => Some([l, h]),
            _ => None,
        };
        let t = shape[1];
        let data = flat.chunks(t.max(1)).map(<[f32]>::to_vec).collect();
        out.push(StoredRecording {
            name,
            channels,
            rate_hz,
            band_hz,
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.h5");
        let mut w = StoreWriter::create(&path, &Preprocessing::default()).unwrap();
        let data = vec![
            (0..450).map(|i| i as f32).collect::<Vec<_>>(),
            vec![-1.5; 450],
        ];
        let name = w.unique_name("rec.one");
        assert_eq!(name, "rec_one");
        w.add(&name, "rec.one.edf", &["FP1", "FTT9h"], &data)
            .unwrap();
        assert_eq!(w.unique_name("rec.one"), "rec_one_1");
        assert!(w.add("bad", "x", &["FP1"], &data).is_err());
        w.finish().unwrap();
        let back = read_store(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].channels, vec!["FP1", "FTT9H"]);
        assert_eq!(back[0].rate_hz, 200.0);
        assert_eq!(back[0].band_hz, Some([0.1, 75.0]));
        assert_eq!(back[0].data, data);
    }
}
