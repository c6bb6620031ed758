//! The EDF / BDF header: 256 bytes of fixed fields, then 256 bytes per signal
//! (ten fields, each stored as an array over the signals). Every field is
//! ASCII, space-padded; every parse error names the field, its byte offset and
//! the bytes found.

use std::path::{Path, PathBuf};

use super::RecordingError;

/// File flavour, from the version field and the `reserved` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 16-bit EDF (version `0`).
    Edf,
    /// 24-bit BioSemi BDF (version byte `0xFF` + `BIOSEMI`).
    Bdf,
}

/// EDF+/BDF+ continuity (`reserved` field starting `EDF+C`/`EDF+D` or `BDF+C`/`BDF+D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Plain EDF/BDF: records follow each other without gaps.
    Plain,
    /// EDF+C / BDF+C: contiguous, with an annotation signal.
    PlusContinuous,
    /// EDF+D / BDF+D: records may have gaps; each record's onset is in its
    /// time-keeping annotation.
    PlusDiscontinuous,
}

/// What the physical dimension says about a signal's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// A voltage: multiply physical values by `to_uv` to get µV.
    Voltage { to_uv: f64 },
    /// Anything else (`Boolean`, `%`, `degC`, empty…): values are kept as
    /// they are and the signal is not EEG.
    Other,
}

impl Unit {
    /// Reads a physical-dimension field: `uV`, `µV` (Latin-1, UTF-8 micro
    /// sign or Greek mu), `mV`, `V`, `nV` (case-insensitive) are voltages.
    pub fn parse(dimension: &str) -> Self {
        let d = dimension.trim();
        let lower = d.to_lowercase();
        let to_uv = match lower.as_str() {
            "uv" | "µv" | "μv" | "microvolt" | "microvolts" => Some(1.0),
            "mv" => Some(1e3),
            "v" | "volt" | "volts" => Some(1e6),
            "nv" => Some(1e-3),
            _ => None,
        };
        // "MV" would be megavolt in SI, but no amplifier writes that; files
        // that write "MV" mean millivolt.
        to_uv.map_or(Unit::Other, |to_uv| Unit::Voltage { to_uv })
    }
}

/// One signal's header fields plus what is derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalHeader {
    /// Label, trimmed (e.g. `EEG Fp1-REF`, `Fc5.`, `Status`, `EDF Annotations`).
    pub label: String,
    pub transducer: String,
    /// Physical dimension as written (e.g. `uV`).
    pub physical_dimension: String,
    pub physical_min: f64,
    pub physical_max: f64,
    pub digital_min: i32,
    pub digital_max: i32,
    pub prefilter: String,
    pub samples_per_record: usize,
    pub reserved: String,
    /// The `EDF Annotations` / `BDF Annotations` signal of EDF+/BDF+.
    pub is_annotation: bool,
    pub unit: Unit,
    /// physical = gain · (digital + offset), EDFlib's formula (as pyedflib).
    pub gain: f64,
    pub offset: f64,
    /// Byte offset of this signal inside a data record.
    pub record_offset: usize,
}

impl SignalHeader {
    /// Samples per second (None when the record duration is 0, as in
    /// annotation-only files).
    pub fn sample_rate_hz(&self, record_duration_s: f64) -> Option<f64> {
        (record_duration_s > 0.0).then(|| self.samples_per_record as f64 / record_duration_s)
    }

    /// A voltage signal (not annotations, not `Boolean` etc.).
    pub fn is_voltage(&self) -> bool {
        !self.is_annotation && matches!(self.unit, Unit::Voltage { .. })
    }

    /// Factor from physical values to µV (1 for non-voltage signals, whose
    /// values stay as they are).
    pub fn to_uv(&self) -> f64 {
        match self.unit {
            Unit::Voltage { to_uv } => to_uv,
            Unit::Other => 1.0,
        }
    }

    /// Physical value of one digital sample.
    #[inline]
    pub fn physical(&self, digital: i32) -> f64 {
        self.gain * (self.offset + digital as f64)
    }
}

/// The parsed header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// File the header came from (for error messages).
    pub path: PathBuf,
    pub format: Format,
    pub continuity: Continuity,
    pub patient: String,
    pub recording: String,
    /// `dd.mm.yy` as written.
    pub start_date: String,
    /// `hh.mm.ss` as written.
    pub start_time: String,
    pub header_bytes: usize,
    pub reserved: String,
    /// Number of data records (from the header, or from the file size when
    /// the header says -1).
    pub n_records: usize,
    /// Duration of one data record in seconds (may be fractional, or 0 for
    /// annotation-only files).
    pub record_duration_s: f64,
    pub signals: Vec<SignalHeader>,
    /// Bytes per sample: 2 (EDF) or 3 (BDF).
    pub sample_bytes: usize,
    /// Bytes per data record.
    pub record_bytes: usize,
}

/// Size of the fixed part of the header.
pub const FIXED_BYTES: usize = 256;
/// Per-signal header bytes.
pub const SIGNAL_BYTES: usize = 256;
/// Widths of the ten per-signal fields, in file order.
const SIGNAL_FIELDS: [(&str, usize); 10] = [
    ("label", 16),
    ("transducer type", 80),
    ("physical dimension", 8),
    ("physical minimum", 8),
    ("physical maximum", 8),
    ("digital minimum", 8),
    ("digital maximum", 8),
    ("prefiltering", 80),
    ("number of samples in each data record", 8),
    ("reserved", 32),
];
/// Largest signal count accepted (the field has 4 digits).
const MAX_SIGNALS: usize = 9999;

/// Decodes a header field: ASCII as is; bytes that are not valid UTF-8 are
/// read as Latin-1 (older files write `µ` as 0xB5).
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.trim_matches(|c: char| c == ' ' || c == '\0').to_string(),
        Err(_) => bytes
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .trim_matches(|c: char| c == ' ' || c == '\0')
            .to_string(),
    }
}

struct FieldCtx<'a> {
    path: &'a Path,
    bytes: &'a [u8],
}

impl FieldCtx<'_> {
    fn err(
        &self,
        field: &str,
        offset: usize,
        len: usize,
        reason: impl Into<String>,
    ) -> RecordingError {
        let end = (offset + len).min(self.bytes.len());
        let raw = self.bytes.get(offset..end).unwrap_or(&[]);
        RecordingError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            offset,
            value: String::from_utf8_lossy(raw).into_owned(),
            reason: reason.into(),
        }
    }

    fn text(&self, offset: usize, len: usize) -> String {
        decode_text(&self.bytes[offset..offset + len])
    }

    fn float(&self, field: &str, offset: usize, len: usize) -> Result<f64, RecordingError> {
        let s = self.text(offset, len);
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(field, offset, len, "not a number")),
        }
    }

    fn int(&self, field: &str, offset: usize, len: usize) -> Result<i64, RecordingError> {
        let s = self.text(offset, len);
        if let Ok(v) = s.parse::<i64>() {
            return Ok(v);
        }
        // Some writers put "-32768.0": accept integral decimals.
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => Ok(v as i64),
            _ => Err(self.err(field, offset, len, "not an integer")),
        }
    }
}

impl Header {
    /// Number of signals a header declares, from its first 256 bytes: the
    /// caller reads `256 · (n + 1)` bytes and calls [`Header::parse`].
    pub fn signal_count(fixed: &[u8], path: &Path) -> Result<usize, RecordingError> {
        if fixed.len() < FIXED_BYTES {
            return Err(RecordingError::Truncated {
                path: path.to_path_buf(),
                offset: fixed.len() as u64,
                what: format!("the fixed header needs {FIXED_BYTES} bytes"),
            });
        }
        let ctx = FieldCtx { path, bytes: fixed };
        let ns = ctx.int("number of signals", 252, 4)?;
        if ns < 1 || ns as usize > MAX_SIGNALS {
            return Err(ctx.err("number of signals", 252, 4, "must be 1..9999"));
        }
        Ok(ns as usize)
    }

    /// Parses a complete header (`256 · (ns + 1)` bytes or more; extra bytes
    /// are ignored). `file_len` (the file's size) completes an unknown
    /// record count (-1) and detects truncation. Never panics, whatever the
    /// bytes.
    pub fn parse(
        bytes: &[u8],
        file_len: Option<u64>,
        path: &Path,
    ) -> Result<Header, RecordingError> {
        let ns = Self::signal_count(bytes, path)?;
        let need = FIXED_BYTES + ns * SIGNAL_BYTES;
        if bytes.len() < need {
            return Err(RecordingError::Truncated {
                path: path.to_path_buf(),
                offset: bytes.len() as u64,
                what: format!("the header of {ns} signals needs {need} bytes"),
            });
        }
        let ctx = FieldCtx { path, bytes };
        let format = if bytes[0] == 0xFF && &bytes[1..8] == b"BIOSEMI" {
            Format::Bdf
        } else if decode_text(&bytes[0..8]) == "0" {
            Format::Edf
        } else {
            return Err(ctx.err(
                "version",
                0,
                8,
                "neither EDF (`0`) nor BDF (0xFF `BIOSEMI`): not an EDF/BDF file",
            ));
        };
        let patient = ctx.text(8, 80);
        let recording = ctx.text(88, 80);
        let start_date = ctx.text(168, 8);
        let start_time = ctx.text(176, 8);
        let header_bytes = ctx.int("number of bytes in header record", 184, 8)?;
        if header_bytes != need as i64 {
            return Err(ctx.err(
                "number of bytes in header record",
                184,
                8,
                format!("must be 256 × (1 + {ns} signals) = {need}"),
            ));
        }
        let reserved = ctx.text(192, 44);
        let continuity = if reserved.starts_with("EDF+D") || reserved.starts_with("BDF+D") {
            Continuity::PlusDiscontinuous
        } else if reserved.starts_with("EDF+C") || reserved.starts_with("BDF+C") {
            Continuity::PlusContinuous
        } else {
            Continuity::Plain
        };
        let n_records_field = ctx.int("number of data records", 236, 8)?;
        if n_records_field < -1 {
            return Err(ctx.err(
                "number of data records",
                236,
                8,
                "must be >= 0 (or -1: unknown)",
            ));
        }
        let record_duration_s = ctx.float("duration of a data record", 244, 8)?;
        if record_duration_s < 0.0 {
            return Err(ctx.err("duration of a data record", 244, 8, "must be >= 0 seconds"));
        }

        // Per-signal fields: field k of signal i is at
        // 256 + ns·(sum of widths before k) + i·width_k.
        let mut field_base = [0usize; 10];
        let mut acc = FIXED_BYTES;
        for (k, (_, w)) in SIGNAL_FIELDS.iter().enumerate() {
            field_base[k] = acc;
            acc += ns * w;
        }
        let at = |k: usize, i: usize| field_base[k] + i * SIGNAL_FIELDS[k].1;
        let sample_bytes = match format {
            Format::Edf => 2,
            Format::Bdf => 3,
        };
        let (dig_lo, dig_hi) = match format {
            Format::Edf => (i16::MIN as i64, i16::MAX as i64),
            Format::Bdf => (-(1i64 << 23), (1i64 << 23) - 1),
        };
        let mut signals = Vec::with_capacity(ns);
        let mut record_bytes = 0usize;
        for i in 0..ns {
            let name = |k: usize| format!("signal {} {}", i + 1, SIGNAL_FIELDS[k].0);
            let label = ctx.text(at(0, i), 16);
            let transducer = ctx.text(at(1, i), 80);
            let physical_dimension = ctx.text(at(2, i), 8);
            let physical_min = ctx.float(&name(3), at(3, i), 8)?;
            let physical_max = ctx.float(&name(4), at(4, i), 8)?;
            let digital_min = ctx.int(&name(5), at(5, i), 8)?;
            let digital_max = ctx.int(&name(6), at(6, i), 8)?;
            let prefilter = ctx.text(at(7, i), 80);
            let spr = ctx.int(&name(8), at(8, i), 8)?;
            let sig_reserved = ctx.text(at(9, i), 32);
            let is_annotation = label == "EDF Annotations" || label == "BDF Annotations";
            if !(dig_lo..=dig_hi).contains(&digital_min) {
                return Err(ctx.err(
                    &name(5),
                    at(5, i),
                    8,
                    format!("outside {dig_lo}..={dig_hi}"),
                ));
            }
            if !(dig_lo..=dig_hi).contains(&digital_max) {
                return Err(ctx.err(
                    &name(6),
                    at(6, i),
                    8,
                    format!("outside {dig_lo}..={dig_hi}"),
                ));
            }
            if digital_max <= digital_min && !is_annotation {
                return Err(ctx.err(
                    &name(6),
                    at(6, i),
                    8,
                    format!("must be greater than the digital minimum {digital_min}"),
                ));
            }
            if physical_max == physical_min && !is_annotation {
                return Err(ctx.err(
                    &name(4),
                    at(4, i),
                    8,
                    format!("equals the physical minimum {physical_min}: no scaling possible"),
                ));
            }
            if !(1..=100_000_000).contains(&spr) {
                return Err(ctx.err(&name(8), at(8, i), 8, "must be 1..=100000000"));
            }
            let spr = spr as usize;
            // EDFlib: bitvalue = (pmax − pmin)/(dmax − dmin); offset = pmax/bitvalue − dmax.
            let (gain, offset) = if digital_max > digital_min {
                let g = (physical_max - physical_min) / (digital_max - digital_min) as f64;
                (g, physical_max / g - digital_max as f64)
            } else {
                (1.0, 0.0)
            };
            signals.push(SignalHeader {
                unit: Unit::parse(&physical_dimension),
                label,
                transducer,
                physical_dimension,
                physical_min,
                physical_max,
                digital_min: digital_min as i32,
                digital_max: digital_max as i32,
                prefilter,
                samples_per_record: spr,
                reserved: sig_reserved,
                is_annotation,
                gain,
                offset,
                record_offset: record_bytes,
            });
            record_bytes = record_bytes
                .checked_add(spr * sample_bytes)
                .ok_or_else(|| ctx.err(&name(8), at(8, i), 8, "data record size overflows"))?;
        }
        if record_bytes > 1 << 30 {
            return Err(RecordingError::Field {
                path: path.to_path_buf(),
                field: "number of samples in each data record".into(),
                offset: field_base[8],
                value: record_bytes.to_string(),
                reason: "a data record would be larger than 1 GiB".into(),
            });
        }
        let data_bytes = file_len.map(|l| l.saturating_sub(need as u64));
        let n_records = if n_records_field == -1 {
            match data_bytes {
                Some(d) => (d / record_bytes as u64) as usize,
                None => {
                    return Err(ctx.err(
                        "number of data records",
                        236,
                        8,
                        "is -1 (unknown) and the file size is not known",
                    ))
                }
            }
        } else {
            n_records_field as usize
        };
        if let Some(d) = data_bytes {
            let want = n_records as u64 * record_bytes as u64;
            if d < want {
                let have_records = d / record_bytes as u64;
                return Err(RecordingError::Truncated {
                    path: path.to_path_buf(),
                    offset: need as u64 + d,
                    what: format!(
                        "the header announces {n_records} data records of {record_bytes} bytes \
                         ({want} bytes after the {need}-byte header) but only {have_records} complete \
                         records are present"
                    ),
                });
            }
        }
        // EDF+ allows 0-s records only in annotation-only files: with ordinary
        // signals, every sample rate (samples per record / duration) is undefined,
        // and callers that skip signals without a rate would report them missing.
        if record_duration_s == 0.0 {
            let data: Vec<&str> = signals
                .iter()
                .filter(|s| !s.is_annotation)
                .map(|s| s.label.as_str())
                .collect();
            if !data.is_empty() {
                let shown = data.iter().take(5).copied().collect::<Vec<_>>().join(", ");
                let more = if data.len() > 5 { ", …" } else { "" };
                return Err(ctx.err(
                    "duration of a data record",
                    244,
                    8,
                    format!(
                        "is 0 s, but the file has {} ordinary signal(s) ({shown}{more}) whose sample \
                         rates would be undefined (only annotation-only EDF+ files may have 0-s \
                         records); the header is corrupt: rewrite it with the real record duration \
                         (samples per record / sample rate, usually 1 s)",
                        data.len()
                    ),
                ));
            }
        }
        Ok(Header {
            path: path.to_path_buf(),
            format,
            continuity,
            patient,
            recording,
            start_date,
            start_time,
            header_bytes: need,
            reserved,
            n_records,
            record_duration_s,
            signals,
            sample_bytes,
            record_bytes,
        })
    }

    /// EDF+ / BDF+ (has an annotation signal and a `+` continuity flag).
    pub fn is_plus(&self) -> bool {
        self.continuity != Continuity::Plain
    }

    /// Indices of the annotation signals.
    pub fn annotation_signals(&self) -> Vec<usize> {
        (0..self.signals.len())
            .filter(|&i| self.signals[i].is_annotation)
            .collect()
    }

    /// Indices of the data (non-annotation) signals.
    pub fn data_signals(&self) -> Vec<usize> {
        (0..self.signals.len())
            .filter(|&i| !self.signals[i].is_annotation)
            .collect()
    }

    /// Sample rate of signal `i` in Hz (None for 0-s records).
    pub fn sample_rate_hz(&self, i: usize) -> Option<f64> {
        self.signals.get(i)?.sample_rate_hz(self.record_duration_s)
    }

    /// Index of the signal labelled `label` (trimmed, exact).
    pub fn signal_index(&self, label: &str) -> Option<usize> {
        self.signals.iter().position(|s| s.label == label.trim())
    }

    /// Total duration in seconds (records × record duration).
    pub fn duration_s(&self) -> f64 {
        self.n_records as f64 * self.record_duration_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(Unit::parse("uV"), Unit::Voltage { to_uv: 1.0 });
        assert_eq!(Unit::parse("µV"), Unit::Voltage { to_uv: 1.0 });
        assert_eq!(Unit::parse("mV"), Unit::Voltage { to_uv: 1e3 });
        assert_eq!(Unit::parse(" V "), Unit::Voltage { to_uv: 1e6 });
        assert_eq!(Unit::parse("nV"), Unit::Voltage { to_uv: 1e-3 });
        assert_eq!(Unit::parse("Boolean"), Unit::Other);
        assert_eq!(Unit::parse(""), Unit::Other);
        // Latin-1 micro sign decodes to U+00B5
        assert_eq!(
            Unit::parse(&decode_text(&[0xB5, b'V'])),
            Unit::Voltage { to_uv: 1.0 }
        );
    }
}
