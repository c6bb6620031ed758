//! XDF (Extensible Data Format, the files LabRecorder writes), read chunk by
//! chunk, with timestamps post-processed as pyxdf 1.17.5's `load_xdf` does
//! with its defaults.
//!
//! * [`XdfReader`] reads one chunk at a time ([`XdfReader::next_chunk`], or as
//!   an iterator): `FileHeader`, `StreamHeader`, `Samples`, `ClockOffset`,
//!   `Boundary`, `StreamFooter` (other tags are returned as
//!   [`ChunkBody::Unknown`] and skipped, as the specification asks). Headers and
//!   footers are XML ([`StreamHeader`]: name, type, channel count, nominal rate,
//!   channel format, channel labels; the whole XML is kept). Samples come out
//!   decoded ([`SampleData`], every channel format: `int8` … `int64`,
//!   `float32`, `double64`, `string`), with the timestamps that the file leaves
//!   out deduced as the specification says (previous + 1/nominal rate).
//! * [`load`] / [`load_partial`] gather every stream and then, with
//!   [`LoadOptions::default`], give each stream's timestamps as pyxdf does:
//!   the pylsl#67 truncation of a corrupted last clock offset, clock
//!   synchronisation by a robust (Huber, ADMM) linear fit of the clock offsets
//!   per clock segment, with clock resets detected by pyxdf's median/MAD
//!   rules, then dejittering of regularly sampled streams by a least-squares
//!   line per break-free segment. `core/tests/xdf.rs` checks the result
//!   against pyxdf itself (timestamps within 1e-6 s, samples equal).
//!
//! # Errors and partial files
//! A recording cut off by a crash is common (LabRecorder writes as it goes).
//! Every fault is an [`XdfError`] naming the file, the byte offset and what was
//! expected there; the reader stops at the first one, and [`load_partial`]
//! returns everything read before it together with the error. Unlike pyxdf,
//! nothing is skipped silently (pyxdf scans forward to the next `Boundary`
//! chunk and only logs): a caller that wants to go on can, knowing where.
//! Where pyxdf would misread or crash rather than log, this reader is stricter
//! and says so: a timestamp flag byte other than 0 or 8, bytes left over after
//! a chunk's samples, a second `StreamHeader` for one stream id, a `Boundary`
//! chunk without its signature, and `ClockOffset`/`Samples`/`StreamFooter`
//! chunks of a stream whose header has not come are errors. A malformed
//! footer is not (pyxdf ignores it too): its XML is kept, its fields are `None`.
//!
//! Memory stays bounded for hostile input: a chunk is read only as far as the
//! file has bytes (a chunk length past the end of the file is an error before
//! anything is allocated, and without a known file length the chunk grows
//! only with the bytes actually read), and a sample count is checked against
//! the bytes its chunk holds before the samples are allocated. The chunk
//! parser is fuzzed (`fuzz/fuzz_targets/xdf.rs`).
//!
//! # Why the project's own reader
//! The `xdf` crate (0.1.2 on crates.io, checked 2026-12) parses a whole file
//! from one byte slice (`XDFFile::from_bytes`), so a multi-gigabyte recording
//! must fit in memory and nothing is available before the parse ends; one
//! error discards the whole file; its clock correction interpolates between
//! neighbouring clock offsets instead of pyxdf's robust per-segment fit, with
//! neither clock-reset handling nor dejittering, so its timestamps differ from
//! what every Python/MATLAB user of the same file sees; and it brings `nom`,
//! `xmltree`/`xml-rs` and a second `thiserror`. The format itself is small
//! (varlen-prefixed chunks, little-endian values, XML headers), so this reader
//! is ours, with `roxmltree` (read-only XML tree, one dependency: `memchr`)
//! for the headers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The four bytes every XDF file starts with.
pub const MAGIC: &[u8; 4] = b"XDF:";

/// The 16 bytes of a `Boundary` chunk (a UUID; pyxdf scans for it to resync).
pub const BOUNDARY: [u8; 16] = [
    0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4,
];

/// Errors reading an XDF file. Each names the file; those about content name
/// the byte offset and what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum XdfError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot read {path} at byte {offset}: {source}")]
    ReadAt {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{path} is truncated at byte {offset}: expected {expected}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        expected: String,
    },
    #[error("{path}: at byte {offset}: expected {expected}, found {found}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        expected: String,
        found: String,
    },
    #[error("{path}: {chunk} chunk at byte {offset} is for stream {stream_id}, which has no StreamHeader chunk before it; expected the stream's StreamHeader first")]
    NoStreamHeader {
        path: PathBuf,
        offset: u64,
        chunk: &'static str,
        stream_id: u32,
    },
    #[error("{path}: {chunk} chunk at byte {offset}: expected well-formed XML: {source}")]
    Xml {
        path: PathBuf,
        offset: u64,
        chunk: &'static str,
        source: roxmltree::Error,
    },
}

/// Channel value type of a stream (`<channel_format>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFormat {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Double64,
    String,
}

impl ChannelFormat {
    /// The name the XML uses (`int8`, …, `double64`, `string`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Float32 => "float32",
            Self::Double64 => "double64",
            Self::String => "string",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "int8" => Self::Int8,
            "int16" => Self::Int16,
            "int32" => Self::Int32,
            "int64" => Self::Int64,
            "float32" => Self::Float32,
            "double64" => Self::Double64,
            "string" => Self::String,
            _ => return None,
        })
    }

    /// Bytes per value; strings are variable (length-prefixed).
    fn item_bytes(self) -> Option<usize> {
        match self {
            Self::Int8 => Some(1),
            Self::Int16 => Some(2),
            Self::Int32 | Self::Float32 => Some(4),
            Self::Int64 | Self::Double64 => Some(8),
            Self::String => None,
        }
    }
}

/// Sample values of one stream, sample-major (`values[sample * channels + channel]`),
/// in the stream's own channel format so that nothing is converted on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleData {
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Double64(Vec<f64>),
    String(Vec<String>),
}

impl SampleData {
    fn empty(format: ChannelFormat) -> Self {
        match format {
            ChannelFormat::Int8 => Self::Int8(Vec::new()),
            ChannelFormat::Int16 => Self::Int16(Vec::new()),
            ChannelFormat::Int32 => Self::Int32(Vec::new()),
            ChannelFormat::Int64 => Self::Int64(Vec::new()),
            ChannelFormat::Float32 => Self::Float32(Vec::new()),
            ChannelFormat::Double64 => Self::Double64(Vec::new()),
            ChannelFormat::String => Self::String(Vec::new()),
        }
    }

    /// Number of values (samples × channels).
    pub fn len(&self) -> usize {
        match self {
            Self::Int8(v) => v.len(),
            Self::Int16(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Float32(v) => v.len(),
            Self::Double64(v) => v.len(),
            Self::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Numeric values as `f64` (exact for every format but `int64` beyond 2^53);
    /// `None` for a string stream.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Self::Int8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::Int16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::Int64(v) => v.iter().map(|&x| x as f64).collect(),
            Self::Float32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::Double64(v) => v.clone(),
            Self::String(_) => return None,
        })
    }

    /// Appends `other` (same format; a mismatch cannot come from the reader,
    /// which decodes every chunk of a stream with the stream's format).
    fn append(&mut self, other: SampleData) {
        match (self, other) {
            (Self::Int8(a), Self::Int8(b)) => a.extend(b),
            (Self::Int16(a), Self::Int16(b)) => a.extend(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend(b),
            (Self::Float32(a), Self::Float32(b)) => a.extend(b),
            (Self::Double64(a), Self::Double64(b)) => a.extend(b),
            (Self::String(a), Self::String(b)) => a.extend(b),
            _ => debug_assert!(false, "chunk format differs from its stream's"),
        }
    }

    fn truncate(&mut self, values: usize) {
        match self {
            Self::Int8(v) => v.truncate(values),
            Self::Int16(v) => v.truncate(values),
            Self::Int32(v) => v.truncate(values),
            Self::Int64(v) => v.truncate(values),
            Self::Float32(v) => v.truncate(values),
            Self::Double64(v) => v.truncate(values),
            Self::String(v) => v.truncate(values),
        }
    }
}

/// A stream's header (`StreamHeader` chunk): the fields every reader needs,
/// parsed, and the whole XML for the rest (`desc`, hostnames, …).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHeader {
    pub name: String,
    /// `<type>` (`EEG`, `Markers`, …).
    pub content_type: String,
    pub channel_count: usize,
    /// Hz; 0 for an irregular stream (markers).
    pub nominal_srate: f64,
    pub channel_format: ChannelFormat,
    pub source_id: String,
    /// `desc/channels/channel/label` in order (empty when the header has none).
    pub channel_labels: Vec<String>,
    /// `desc/synchronization/can_drop_samples` is `true`: pyxdf does not
    /// dejitter such streams (video, HMD), since a line through dropped frames
    /// would shift them.
    pub can_drop_samples: bool,
    pub xml: String,
}

/// The fields of a `StreamFooter` chunk pyxdf uses, and its XML.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamFooter {
    /// `info/sample_count`; `None` when absent or when the footer's XML is
    /// malformed (pyxdf ignores a corrupt footer too: a recorder that crashed
    /// while writing it must not cost the recording).
    pub sample_count: Option<u64>,
    pub xml: String,
}

/// One chunk, with the byte offset of its length field.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub offset: u64,
    pub body: ChunkBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChunkBody {
    /// The file header's XML (`<info><version>1.0</version>…`).
    FileHeader {
        xml: String,
    },
    StreamHeader {
        stream_id: u32,
        header: StreamHeader,
    },
    /// Timestamps (as in the file, the left-out ones deduced) and values.
    Samples {
        stream_id: u32,
        time_stamps: Vec<f64>,
        data: SampleData,
    },
    /// The recorder's measurement: at `collection_time` (the stream's clock),
    /// the recorder's clock minus the stream's was `offset_value`.
    ClockOffset {
        stream_id: u32,
        collection_time: f64,
        offset_value: f64,
    },
    Boundary,
    StreamFooter {
        stream_id: u32,
        footer: StreamFooter,
    },
    /// A tag this reader does not know; its content is skipped.
    Unknown {
        tag: u16,
        len: u64,
    },
}

/// What the reader keeps per stream to decode its samples.
#[derive(Debug, Clone)]
struct Decode {
    format: ChannelFormat,
    channels: usize,
    /// 1/nominal rate (0 for irregular streams), added to the previous
    /// timestamp for a sample stored without one.
    tdiff: f64,
    last_timestamp: f64,
}

/// Reads an XDF file chunk by chunk; see the module doc.
pub struct XdfReader<R> {
    inner: R,
    path: PathBuf,
    /// Byte offset of the next unread byte.
    pos: u64,
    /// The file's length when known: a chunk may not claim more.
    len: Option<u64>,
    streams: HashMap<u32, Decode>,
    /// Set after an error or at the end: the iterator is fused.
    done: bool,
}

impl XdfReader<BufReader<File>> {
    /// Opens `path` and checks the magic bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, XdfError> {
        let path = path.as_ref();
        let io = |source| XdfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(XdfError::Io {
                path: path.to_path_buf(),
                source: io::Error::other("is a directory; expected an XDF file"),
            });
        }
        Self::from_reader(BufReader::new(file), Some(meta.len()), path)
    }
}

impl<R: Read> XdfReader<R> {
    /// Reads from `inner` (positioned at the start of the file); `len`, when
    /// known, bounds every chunk; `path` names the file in errors.
    pub fn from_reader(inner: R, len: Option<u64>, path: &Path) -> Result<Self, XdfError> {
        let mut r = Self {
            inner,
            path: path.to_path_buf(),
            pos: 0,
            len,
            streams: HashMap::new(),
            done: false,
        };
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic, "the magic bytes `XDF:`")?;
        if &magic != MAGIC {
            return Err(r.malformed(
                0,
                "the magic bytes `XDF:` (not an XDF file?)",
                format!("{:?}", String::from_utf8_lossy(&magic)),
            ));
        }
        Ok(r)
    }

    /// The file name used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of the next chunk.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn malformed(&self, offset: u64, expected: &str, found: String) -> XdfError {
        XdfError::Malformed {
            path: self.path.clone(),
            offset,
            expected: expected.to_string(),
            found,
        }
    }

    /// Reads as much of `buf` as the input has; the count read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, XdfError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(XdfError::ReadAt {
                        path: self.path.clone(),
                        offset: self.pos + n as u64,
                        source,
                    })
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), XdfError> {
        let at = self.pos;
        let n = self.fill(buf)?;
        if n < buf.len() {
            return Err(XdfError::Truncated {
                path: self.path.clone(),
                offset: at,
                expected: format!("{what} ({} bytes; the file ends after {n})", buf.len()),
            });
        }
        Ok(())
    }

    /// The next chunk, `Ok(None)` at the end of the file. After an error the
    /// reader returns `Ok(None)`: the error says where the file went wrong.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, XdfError> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_chunk();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_chunk(&mut self) -> Result<Option<Chunk>, XdfError> {
        let offset = self.pos;
        // End of file exactly at a chunk boundary is the normal end.
        let mut first = [0u8; 1];
        if self.fill(&mut first)? == 0 {
            return Ok(None);
        }
        let chunk_len = varlen_value(first[0], |buf| {
            self.read_exact(buf, "the chunk length (variable-length integer)")
        })?
        .ok_or_else(|| {
            self.malformed(
                offset,
                "a chunk length: a variable-length integer of 1, 4 or 8 bytes",
                format!("length byte {}", first[0]),
            )
        })?;
        let tag_at = self.pos;
        if chunk_len < 2 {
            return Err(self.malformed(
                offset,
                "a chunk length of at least 2 (the tag)",
                chunk_len.to_string(),
            ));
        }
        if let Some(len) = self.len {
            let left = len.saturating_sub(tag_at);
            if chunk_len > left {
                return Err(self.malformed(
                    offset,
                    &format!(
                        "a chunk that ends within the file ({left} bytes left after the length field)"
                    ),
                    format!("a chunk length of {chunk_len} bytes, past the end of the file"),
                ));
            }
        }
        let mut tag = [0u8; 2];
        self.read_exact(&mut tag, "the chunk tag")?;
        let tag = u16::from_le_bytes(tag);
        let content_len = chunk_len - 2;
        let body = match tag {
            1 => {
                let content_at = self.pos;
                let bytes = self.read_content(content_len, "the FileHeader chunk's XML")?;
                let xml = String::from_utf8_lossy(&bytes).into_owned();
                roxmltree::Document::parse(&xml).map_err(|source| XdfError::Xml {
                    path: self.path.clone(),
                    offset: content_at,
                    chunk: "FileHeader",
                    source,
                })?;
                ChunkBody::FileHeader { xml }
            }
            2 | 3 | 4 | 6 => {
                let name = chunk_name(tag);
                if content_len < 4 {
                    return Err(self.malformed(
                        offset,
                        &format!("a {name} chunk of at least 6 bytes (tag and stream id)"),
                        format!("a chunk length of {chunk_len}"),
                    ));
                }
                let mut id = [0u8; 4];
                self.read_exact(&mut id, "the chunk's stream id")?;
                let stream_id = u32::from_le_bytes(id);
                let content_at = self.pos;
                let bytes = self.read_content(content_len - 4, &format!("the {name} chunk"))?;
                if tag != 2 && !self.streams.contains_key(&stream_id) {
                    return Err(XdfError::NoStreamHeader {
                        path: self.path.clone(),
                        offset,
                        chunk: name,
                        stream_id,
                    });
                }
                match tag {
                    2 => self.stream_header(stream_id, &bytes, offset, content_at)?,
                    3 => self.samples(stream_id, &bytes, content_at)?,
                    4 => {
                        if bytes.len() != 16 {
                            return Err(self.malformed(
                                content_at,
                                "a ClockOffset chunk's two 8-byte doubles (16 bytes)",
                                format!("{} bytes", bytes.len()),
                            ));
                        }
                        let d = |i: usize| {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&bytes[i..i + 8]);
                            f64::from_le_bytes(b)
                        };
                        ChunkBody::ClockOffset {
                            stream_id,
                            collection_time: d(0),
                            offset_value: d(8),
                        }
                    }
                    _ => ChunkBody::StreamFooter {
                        stream_id,
                        footer: StreamFooter::parse(&bytes),
                    },
                }
            }
            5 => {
                let content_at = self.pos;
                let bytes = self.read_content(content_len, "the Boundary chunk")?;
                if bytes[..] != BOUNDARY[..] {
                    return Err(self.malformed(
                        content_at,
                        "a Boundary chunk's 16-byte signature",
                        format!("{} other bytes", bytes.len()),
                    ));
                }
                ChunkBody::Boundary
            }
            _ => {
                self.skip(content_len, "the content of a chunk with an unknown tag")?;
                ChunkBody::Unknown {
                    tag,
                    len: chunk_len,
                }
            }
        };
        Ok(Some(Chunk { offset, body }))
    }

    /// Reads `n` bytes of chunk content, growing the buffer only as bytes
    /// arrive (so a lying length never allocates beyond the input).
    fn read_content(&mut self, n: u64, what: &str) -> Result<Vec<u8>, XdfError> {
        let at = self.pos;
        let mut out = Vec::new();
        let got = (&mut self.inner)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|source| XdfError::ReadAt {
                path: self.path.clone(),
                offset: at,
                source,
            })?;
        self.pos += got as u64;
        if (got as u64) < n {
            return Err(XdfError::Truncated {
                path: self.path.clone(),
                offset: at,
                expected: format!("{what} ({n} bytes; the file ends after {got})"),
            });
        }
        Ok(out)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), XdfError> {
        let at = self.pos;
        let got = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|source| {
            XdfError::ReadAt {
                path: self.path.clone(),
                offset: at,
                source,
            }
        })?;
        self.pos += got;
        if got < n {
            return Err(XdfError::Truncated {
                path: self.path.clone(),
                offset: at,
                expected: format!("{what} ({n} bytes; the file ends after {got})"),
            });
        }
        Ok(())
    }

    fn stream_header(
        &mut self,
        stream_id: u32,
        bytes: &[u8],
        offset: u64,
        content_at: u64,
    ) -> Result<ChunkBody, XdfError> {
        if self.streams.contains_key(&stream_id) {
            return Err(self.malformed(
                offset,
                &format!("one StreamHeader chunk per stream (stream {stream_id} has one before)"),
                "a second StreamHeader chunk".into(),
            ));
        }
        let header = StreamHeader::parse(bytes, &self.path, content_at)?;
        let tdiff = if header.nominal_srate > 0.0 {
            1.0 / header.nominal_srate
        } else {
            0.0
        };
        self.streams.insert(
            stream_id,
            Decode {
                format: header.channel_format,
                channels: header.channel_count,
                tdiff,
                last_timestamp: 0.0,
            },
        );
        Ok(ChunkBody::StreamHeader { stream_id, header })
    }

    fn samples(
        &mut self,
        stream_id: u32,
        bytes: &[u8],
        content_at: u64,
    ) -> Result<ChunkBody, XdfError> {
        let path = self.path.clone();
        let Some(dec) = self.streams.get_mut(&stream_id) else {
            // Checked by the caller; kept total for safety.
            return Err(XdfError::NoStreamHeader {
                path,
                offset: content_at,
                chunk: "Samples",
                stream_id,
            });
        };
        let mut c = Cursor {
            bytes,
            at: 0,
            base: content_at,
            path: &path,
        };
        let n = c.varlen("the number of samples")?;
        // Smallest possible sample: a timestamp flag byte, then per channel the
        // value (numeric) or a 2-byte varlen length (string). Checked before
        // anything is allocated.
        let min_sample = match dec.format.item_bytes() {
            Some(b) => dec.channels.checked_mul(b),
            None => dec.channels.checked_mul(2),
        }
        .and_then(|v| v.checked_add(1));
        let fits = min_sample
            .and_then(|m| (n as u128).checked_mul(m as u128))
            .is_some_and(|need| need <= c.left() as u128);
        if !fits {
            return Err(XdfError::Malformed {
                path: path.clone(),
                offset: content_at,
                expected: format!(
                    "a sample count whose samples ({} channel(s) of {}) fit in the chunk's {} bytes",
                    dec.channels,
                    dec.format.name(),
                    c.left()
                ),
                found: format!("{n} samples"),
            });
        }
        let n = n as usize;
        let mut stamps = Vec::with_capacity(n);
        let mut data = SampleData::empty(dec.format);
        let nv = n * dec.channels;
        for k in 0..n {
            let flag_at = c.offset();
            let flag = c.take(1, "a sample's timestamp flag byte")?[0];
            let t = match flag {
                0 => dec.last_timestamp + dec.tdiff,
                8 => f64::from_le_bytes(c.array::<8>("a sample's 8-byte timestamp")?),
                other => {
                    return Err(XdfError::Malformed {
                        path: path.clone(),
                        offset: flag_at,
                        expected: format!(
                            "sample {k}'s timestamp flag byte: 0 (deduced) or 8 (a double follows)"
                        ),
                        found: other.to_string(),
                    })
                }
            };
            dec.last_timestamp = t;
            stamps.push(t);
            let ch = dec.channels;
            macro_rules! numeric {
                ($v:ident, $t:ty, $w:literal) => {{
                    if $v.capacity() == 0 {
                        $v.reserve_exact(nv);
                    }
                    for _ in 0..ch {
                        $v.push(<$t>::from_le_bytes(c.array::<$w>("a sample value")?));
                    }
                }};
            }
            match &mut data {
                SampleData::Int8(v) => numeric!(v, i8, 1),
                SampleData::Int16(v) => numeric!(v, i16, 2),
                SampleData::Int32(v) => numeric!(v, i32, 4),
                SampleData::Int64(v) => numeric!(v, i64, 8),
                SampleData::Float32(v) => numeric!(v, f32, 4),
                SampleData::Double64(v) => numeric!(v, f64, 8),
                SampleData::String(v) => {
                    for _ in 0..ch {
                        let len_at = c.offset();
                        let len = c.varlen("a string value's length")?;
                        if len > c.left() as u64 {
                            return Err(XdfError::Malformed {
                                path: path.clone(),
                                offset: len_at,
                                expected: format!(
                                    "a string value that fits in the chunk ({} bytes left)",
                                    c.left()
                                ),
                                found: format!("a length of {len} bytes"),
                            });
                        }
                        let s = c.take(len as usize, "a string value")?;
                        // pyxdf decodes with errors="replace", as this does.
                        v.push(String::from_utf8_lossy(s).into_owned());
                    }
                }
            }
        }
        if c.left() != 0 {
            return Err(XdfError::Malformed {
                path: path.clone(),
                offset: c.offset(),
                expected: format!("the end of the Samples chunk after its {n} samples"),
                found: format!("{} more bytes", c.left()),
            });
        }
        Ok(ChunkBody::Samples {
            stream_id,
            time_stamps: stamps,
            data,
        })
    }
}

impl<R: Read> Iterator for XdfReader<R> {
    type Item = Result<Chunk, XdfError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// The value of a variable-length integer whose length byte is `nb`, reading
/// its bytes with `read`; `None` for a length byte other than 1, 4 or 8.
fn varlen_value(
    nb: u8,
    mut read: impl FnMut(&mut [u8]) -> Result<(), XdfError>,
) -> Result<Option<u64>, XdfError> {
    let mut b = [0u8; 8];
    let n = match nb {
        1 | 4 | 8 => nb as usize,
        _ => return Ok(None),
    };
    read(&mut b[..n])?;
    Ok(Some(u64::from_le_bytes(b)))
}

fn chunk_name(tag: u16) -> &'static str {
    match tag {
        1 => "FileHeader",
        2 => "StreamHeader",
        3 => "Samples",
        4 => "ClockOffset",
        5 => "Boundary",
        6 => "StreamFooter",
        _ => "unknown",
    }
}

/// A position in one chunk's content, for errors at absolute offsets.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    base: u64,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], XdfError> {
        if n > self.left() {
            return Err(XdfError::Malformed {
                path: self.path.to_path_buf(),
                offset: self.offset(),
                expected: format!("{what} ({n} bytes) within the chunk"),
                found: format!("the chunk's end after {} bytes", self.left()),
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], XdfError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn varlen(&mut self, what: &str) -> Result<u64, XdfError> {
        let at = self.offset();
        let nb = self.take(1, what)?[0];
        let v = varlen_value(nb, |buf| {
            let n = buf.len();
            buf.copy_from_slice(self.take(n, what)?);
            Ok(())
        })?;
        v.ok_or_else(|| XdfError::Malformed {
            path: self.path.to_path_buf(),
            offset: at,
            expected: format!("{what}: a variable-length integer of 1, 4 or 8 bytes"),
            found: format!("length byte {nb}"),
        })
    }
}

/// The text of the first child element of `node` named `name`.
fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn child_text(node: roxmltree::Node, name: &str) -> Option<String> {
    child(node, name).map(|c| c.text().unwrap_or("").to_string())
}

impl StreamHeader {
    /// Parses a `StreamHeader` chunk's XML (`content_at`: its byte offset, for errors).
    pub fn parse(bytes: &[u8], path: &Path, content_at: u64) -> Result<Self, XdfError> {
        // pyxdf decodes with errors="replace".
        let xml = String::from_utf8_lossy(bytes).into_owned();
        let doc = roxmltree::Document::parse(&xml).map_err(|source| XdfError::Xml {
            path: path.to_path_buf(),
            offset: content_at,
            chunk: "StreamHeader",
            source,
        })?;
        let bad = |expected: String, found: String| XdfError::Malformed {
            path: path.to_path_buf(),
            offset: content_at,
            expected,
            found,
        };
        let info = doc.root_element();
        if info.tag_name().name() != "info" {
            return Err(bad(
                "a StreamHeader whose root element is <info>".into(),
                format!("<{}>", info.tag_name().name()),
            ));
        }
        let field = |name: &str| {
            child_text(info, name).ok_or_else(|| {
                bad(
                    format!("a StreamHeader with <info><{name}>"),
                    format!("no <{name}>"),
                )
            })
        };
        let count_text = field("channel_count")?;
        let channel_count = count_text.trim().parse::<usize>().map_err(|_| {
            bad(
                "<channel_count>: a non-negative integer".into(),
                format!("{count_text:?}"),
            )
        })?;
        let rate_text = field("nominal_srate")?;
        let nominal_srate = rate_text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite())
            .ok_or_else(|| {
                bad(
                    "<nominal_srate>: a finite number (Hz, 0 for irregular)".into(),
                    format!("{rate_text:?}"),
                )
            })?;
        let format_text = field("channel_format")?;
        let channel_format = ChannelFormat::parse(format_text.trim()).ok_or_else(|| {
            bad(
                "<channel_format>: int8, int16, int32, int64, float32, double64 or string".into(),
                format!("{format_text:?}"),
            )
        })?;
        let desc = child(info, "desc");
        let channel_labels = desc
            .and_then(|d| child(d, "channels"))
            .map(|chs| {
                chs.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == "channel")
                    .map(|c| child_text(c, "label").unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let can_drop_samples = desc
            .and_then(|d| child(d, "synchronization"))
            .and_then(|s| child_text(s, "can_drop_samples"))
            .is_some_and(|v| v.to_lowercase() == "true");
        Ok(Self {
            name: child_text(info, "name").unwrap_or_default(),
            content_type: child_text(info, "type").unwrap_or_default(),
            channel_count,
            nominal_srate,
            channel_format,
            source_id: child_text(info, "source_id").unwrap_or_default(),
            channel_labels,
            can_drop_samples,
            xml,
        })
    }
}

impl StreamFooter {
    fn parse(bytes: &[u8]) -> Self {
        let xml = String::from_utf8_lossy(bytes).into_owned();
        let sample_count = roxmltree::Document::parse(&xml).ok().and_then(|doc| {
            let root = doc.root_element();
            (root.tag_name().name() == "info")
                .then(|| child_text(root, "sample_count"))
                .flatten()
                .and_then(|s| s.trim().parse::<u64>().ok())
        });
        Self { sample_count, xml }
    }
}

/// pyxdf's `load_xdf` keyword arguments that shape timestamps; the default is
/// pyxdf's default.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub synchronize_clocks: bool,
    pub handle_clock_resets: bool,
    pub dejitter_timestamps: bool,
    pub jitter_break_threshold_seconds: f64,
    pub jitter_break_threshold_samples: f64,
    pub clock_reset_threshold_seconds: f64,
    pub clock_reset_threshold_stds: f64,
    pub clock_reset_threshold_offset_seconds: f64,
    pub clock_reset_threshold_offset_stds: f64,
    pub winsor_threshold: f64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            synchronize_clocks: true,
            handle_clock_resets: true,
            dejitter_timestamps: true,
            jitter_break_threshold_seconds: 1.0,
            jitter_break_threshold_samples: 500.0,
            clock_reset_threshold_seconds: 5.0,
            clock_reset_threshold_stds: 5.0,
            clock_reset_threshold_offset_seconds: 1.0,
            clock_reset_threshold_offset_stds: 10.0,
            winsor_threshold: 0.0001,
        }
    }
}

/// One stream of a loaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub id: u32,
    pub header: StreamHeader,
    pub footer: Option<StreamFooter>,
    /// One per sample, after synchronisation and dejittering (as options say).
    pub time_stamps: Vec<f64>,
    /// Sample-major values, `header.channel_count` per sample.
    pub data: SampleData,
    pub clock_times: Vec<f64>,
    pub clock_values: Vec<f64>,
    /// Measured rate of a regular stream (pyxdf's `effective_srate`); 0 otherwise.
    pub effective_srate: f64,
    /// Break-free segments (inclusive sample index ranges), as pyxdf's `segments`.
    pub segments: Vec<(usize, usize)>,
    /// Sample ranges per clock segment, as pyxdf's `clock_segments`.
    pub clock_segments: Vec<(usize, usize)>,
}

/// A loaded file: its header's XML and its streams in the order their
/// headers appear.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Xdf {
    pub file_header: Option<String>,
    pub streams: Vec<Stream>,
}

/// What [`load_partial`] read, and the error that stopped it, if any.
#[derive(Debug)]
pub struct Partial {
    pub xdf: Xdf,
    pub error: Option<XdfError>,
}

/// Loads a whole file; any fault is an error.
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Xdf, XdfError> {
    let p = load_partial(path, options);
    match p.error {
        Some(e) => Err(e),
        None => Ok(p.xdf),
    }
}

/// Loads what the file holds up to its first fault, post-processed as pyxdf
/// would, and that fault (`None` for a sound file).
pub fn load_partial(path: impl AsRef<Path>, options: &LoadOptions) -> Partial {
    match XdfReader::open(path) {
        Ok(r) => load_from(r, options),
        Err(e) => Partial {
            xdf: Xdf::default(),
            error: Some(e),
        },
    }
}

/// [`load_partial`] on an open reader.
pub fn load_from<R: Read>(reader: XdfReader<R>, options: &LoadOptions) -> Partial {
    let mut xdf = Xdf::default();
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut error = None;
    for chunk in reader {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        // The reader refuses chunks of streams without a header, so every
        // lookup below finds its stream.
        let stream = |id: u32| index.get(&id).copied();
        match chunk.body {
            ChunkBody::FileHeader { xml } => xdf.file_header = Some(xml),
            ChunkBody::StreamHeader { stream_id, header } => {
                index.insert(stream_id, xdf.streams.len());
                xdf.streams.push(Stream {
                    id: stream_id,
                    data: SampleData::empty(header.channel_format),
                    header,
                    footer: None,
                    time_stamps: Vec::new(),
                    clock_times: Vec::new(),
                    clock_values: Vec::new(),
                    effective_srate: 0.0,
                    segments: Vec::new(),
                    clock_segments: Vec::new(),
                });
            }
            ChunkBody::Samples {
                stream_id,
                time_stamps,
                data,
            } => {
                if let Some(i) = stream(stream_id) {
                    let s = &mut xdf.streams[i];
                    s.time_stamps.extend(time_stamps);
                    s.data.append(data);
                }
            }
            ChunkBody::ClockOffset {
                stream_id,
                collection_time,
                offset_value,
            } => {
                if let Some(i) = stream(stream_id) {
                    xdf.streams[i].clock_times.push(collection_time);
                    xdf.streams[i].clock_values.push(offset_value);
                }
            }
            ChunkBody::StreamFooter { stream_id, footer } => {
                if let Some(i) = stream(stream_id) {
                    xdf.streams[i].footer = Some(footer);
                }
            }
            ChunkBody::Boundary | ChunkBody::Unknown { .. } => {}
        }
    }
    for s in &mut xdf.streams {
        sync::process(s, options);
    }
    Partial { xdf, error }
}

/// pyxdf's timestamp post-processing, written from its algorithm (pyxdf
/// 1.17.5, `_truncate_corrupted_offsets`, `_clock_sync`, `_jitter_removal`).
mod sync {
    use super::{LoadOptions, Stream};

    pub(super) fn process(s: &mut Stream, o: &LoadOptions) {
        if o.synchronize_clocks {
            truncate_corrupted_offsets(s);
            clock_sync(s, o);
        }
        if o.dejitter_timestamps {
            dejitter(s, o);
        } else {
            let n = s.time_stamps.len();
            if s.header.nominal_srate != 0.0 && n > 1 {
                s.effective_srate = (n - 1) as f64 / (s.time_stamps[n - 1] - s.time_stamps[0]);
            }
            if n > 0 {
                s.segments.push((0, n - 1));
            }
        }
    }

    /// numpy's median (mean of the two middle values for an even count).
    pub(super) fn median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    /// pylsl#67 / liblsl#246: an outlet destroyed under a connected inlet adds
    /// a sample past the footer's count and a garbage last clock offset. Both
    /// must be seen before anything is dropped (either alone is legitimate).
    fn truncate_corrupted_offsets(s: &mut Stream) {
        let Some(count) = s.footer.as_ref().and_then(|f| f.sample_count) else {
            return;
        };
        if s.time_stamps.len() as u64 <= count {
            return;
        }
        if s.clock_times.len() < 3 || !last_offset_anomalous(&s.clock_times, &s.clock_values) {
            return;
        }
        s.clock_times.pop();
        s.clock_values.pop();
        let count = count as usize;
        s.time_stamps.truncate(count);
        s.data.truncate(count * s.header.channel_count);
    }

    fn last_offset_anomalous(times: &[f64], values: &[f64]) -> bool {
        let intervals: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let median_interval = median(&intervals[..intervals.len() - 1]);
        let last_interval = intervals[intervals.len() - 1].abs();
        let time_ratio = if median_interval > 0.0 {
            last_interval / median_interval
        } else if last_interval > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        let head = &values[..values.len() - 1];
        let median_val = median(head);
        let mad = median(
            &head
                .iter()
                .map(|v| (v - median_val).abs())
                .collect::<Vec<_>>(),
        );
        let z = if mad > f64::EPSILON {
            (values[values.len() - 1] - median_val).abs() / (1.4826 * mad)
        } else {
            0.0
        };
        time_ratio > 10.0 || z > 10.0
    }

    /// Where consecutive differences jump: beyond `stds` MADs and `secs` seconds
    /// from their median.
    fn glitches(diff: &[f64], stds: f64, secs: f64) -> Vec<bool> {
        let med = median(diff);
        let shift: Vec<f64> = diff.iter().map(|d| d - med).collect();
        let mad = median(&shift.iter().map(|d| d.abs()).collect::<Vec<_>>()) + f64::EPSILON;
        shift
            .iter()
            .map(|&d| (d / mad).abs() > stds && d.abs() > secs)
            .collect()
    }

    /// Inclusive `(start, end)` ranges between the `true`s of `breaks` (one
    /// per gap between consecutive items).
    fn segments(breaks: &[bool]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in breaks.iter().enumerate() {
            if b {
                out.push((start, i));
                start = i + 1;
            }
        }
        out.push((start, breaks.len()));
        out
    }

    /// Clock segments: a reset is a step back in collection time, or a
    /// collection-time jump together with an offset jump.
    fn clock_resets(s: &Stream, o: &LoadOptions) -> Vec<(usize, usize)> {
        let td: Vec<f64> = s.clock_times.windows(2).map(|w| w[1] - w[0]).collect();
        let vd: Vec<f64> = s.clock_values.windows(2).map(|w| w[1] - w[0]).collect();
        let tg = glitches(
            &td,
            o.clock_reset_threshold_stds,
            o.clock_reset_threshold_seconds,
        );
        let vg = glitches(
            &vd,
            o.clock_reset_threshold_offset_stds,
            o.clock_reset_threshold_offset_seconds,
        );
        let resets: Vec<bool> = (0..td.len())
            .map(|i| td[i] < 0.0 || (tg[i] && vg[i]))
            .collect();
        segments(&resets)
    }

    fn clock_sync(s: &mut Stream, o: &LoadOptions) {
        if s.time_stamps.is_empty() || s.clock_times.is_empty() {
            return;
        }
        let nc = s.clock_times.len();
        let ranges = if o.handle_clock_resets && nc > 1 {
            clock_resets(s, o)
        } else {
            vec![(0, nc - 1)]
        };
        let w = o.winsor_threshold;
        let coef: Vec<(f64, f64)> = ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    return (s.clock_values[a], 0.0);
                }
                let x: Vec<f64> = s.clock_times[a..=b].iter().map(|t| t / w).collect();
                let y: Vec<f64> = s.clock_values[a..=b].iter().map(|v| v / w).collect();
                match robust_fit(&x, &y) {
                    // A singular fit (all collection times equal) cannot map
                    // anything; pyxdf then leaves the timestamps as they are.
                    Some((c0, c1)) => (c0 * w, c1),
                    None => (0.0, 0.0),
                }
            })
            .collect();
        let ts = &mut s.time_stamps;
        let n = ts.len();
        if ranges.len() == 1 {
            let (c0, c1) = coef[0];
            for t in ts.iter_mut() {
                *t += c0 + c1 * *t;
            }
            s.clock_segments.push((0, n - 1));
            return;
        }
        // Timestamps are assumed in order: a segment's samples end at the
        // first one closer to the next segment's first clock offset than to
        // this segment's last.
        let mut start = 0;
        for (&(c0, c1), &(_, end)) in coef.iter().zip(&ranges) {
            let stop = if end + 1 < nc {
                let cur_end = s.clock_times[end];
                let next_start = s.clock_times[end + 1];
                let first_far = ts[start..]
                    .iter()
                    .position(|&t| (t - cur_end).abs() >= (t - next_start).abs());
                start + first_far.unwrap_or(n - start)
            } else {
                n
            };
            if start != stop {
                s.clock_segments.push((start, stop - 1));
                for t in &mut ts[start..stop] {
                    *t += c0 + c1 * *t;
                }
                start = stop;
            }
        }
    }

    /// Huber-loss line fit `y ≈ c0 + c1·x` by ADMM (rho 1, 1000 iterations),
    /// as pyxdf's `_robust_fit` (after Boyd's ADMM examples): the collection
    /// times are shifted by their minimum for conditioning, and the result is
    /// shifted back. `None` when the normal matrix is not positive definite.
    pub(super) fn robust_fit(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
        const RHO: f64 = 1.0;
        const ITERS: usize = 1000;
        let n = y.len();
        let off = x.iter().copied().fold(f64::INFINITY, f64::min);
        let a1: Vec<f64> = x.iter().map(|v| v - off).collect();
        // AᵀA = [[n, Σa], [Σa, Σa²]] with A = [1, a1]; Cholesky L = [[l00,0],[l10,l11]].
        let sa: f64 = a1.iter().sum();
        let saa: f64 = a1.iter().map(|v| v * v).sum();
        let m00 = n as f64;
        if n == 0 {
            return None;
        }
        let l00 = m00.sqrt();
        let l10 = sa / l00;
        let d = saa - l10 * l10;
        // numpy's Cholesky refuses a matrix that is not positive definite.
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let l11 = d.sqrt();
        let aty0: f64 = y.iter().sum();
        let aty1: f64 = a1.iter().zip(y).map(|(a, v)| a * v).sum();
        let mut z = vec![0.0; n];
        let mut u = vec![0.0; n];
        let mut dv = vec![0.0; n];
        let (mut x0, mut x1) = (0.0, 0.0);
        for _ in 0..ITERS {
            // r = Aᵀy + Aᵀ(z − u)
            let mut r0 = 0.0;
            let mut r1 = 0.0;
            for i in 0..n {
                let e = z[i] - u[i];
                r0 += e;
                r1 += a1[i] * e;
            }
            let r0 = aty0 + r0;
            let r1 = aty1 + r1;
            // Solve L w = r, then Lᵀ x = w.
            let w0 = r0 / l00;
            let w1 = (r1 - l10 * w0) / l11;
            x1 = w1 / l11;
            x0 = (w0 - l10 * x1) / l00;
            for i in 0..n {
                dv[i] = x0 + a1[i] * x1 - y[i] + u[i];
            }
            for i in 0..n {
                let di = dv[i];
                let inv = if di != 0.0 { 1.0 / di } else { 0.0 };
                let tmp = (1.0 - (1.0 + 1.0 / RHO) * inv.abs()).max(0.0);
                z[i] = RHO / (1.0 + RHO) * di + 1.0 / (1.0 + RHO) * tmp * di;
                u[i] = di - z[i];
            }
        }
        Some((x0 - x1 * off, x1))
    }

    /// Least-squares line through each break-free segment's timestamps
    /// against the sample index; a break is a step beyond both thresholds.
    fn dejitter(s: &mut Stream, o: &LoadOptions) {
        s.effective_srate = 0.0;
        let n = s.time_stamps.len();
        if n == 0 {
            return;
        }
        let srate = s.header.nominal_srate;
        if srate == 0.0 || s.header.can_drop_samples {
            s.segments.push((0, n - 1));
            if srate != 0.0 && n > 1 {
                let dur = s.time_stamps[n - 1] - s.time_stamps[0];
                if dur > 0.0 {
                    s.effective_srate = (n - 1) as f64 / dur;
                }
            }
            return;
        }
        let tdiff = if srate > 0.0 { 1.0 / srate } else { 0.0 };
        let thresh = o
            .jitter_break_threshold_seconds
            .max(o.jitter_break_threshold_samples * tdiff);
        let ts = &mut s.time_stamps;
        let breaks: Vec<bool> = ts
            .windows(2)
            .map(|w| (w[1] - w[0]).abs() > thresh)
            .collect();
        let segs = segments(&breaks);
        for &(a, b) in &segs {
            let m = (b - a + 1) as f64;
            let mi = (a + b) as f64 / 2.0;
            let mt = ts[a..=b].iter().sum::<f64>() / m;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (i, t) in (a..=b).zip(&ts[a..=b]) {
                let di = i as f64 - mi;
                sxy += di * (t - mt);
                sxx += di * di;
            }
            let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            let intercept = mt - slope * mi;
            for (i, t) in (a..=b).zip(ts[a..=b].iter_mut()) {
                *t = intercept + slope * i as f64;
            }
        }
        if segs.iter().any(|&(a, b)| b > a) {
            let count: usize = segs.iter().map(|&(a, b)| b - a).sum();
            let dur: f64 = segs.iter().map(|&(a, b)| ts[b] - ts[a]).sum();
            s.effective_srate = count as f64 / dur;
        }
        s.segments.extend(segs);
    }
}

#[cfg(test)]
pub(crate) mod testfile {
    //! A minimal XDF writer for tests and fuzz seeds.

    use super::{BOUNDARY, MAGIC};

    /// A chunk: 4-byte varlen length, tag, content.
    pub fn chunk(tag: u16, content: &[u8]) -> Vec<u8> {
        let mut out = vec![4u8];
        out.extend_from_slice(&(content.len() as u32 + 2).to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(content);
        out
    }

    pub fn with_id(id: u32, content: &[u8]) -> Vec<u8> {
        let mut v = id.to_le_bytes().to_vec();
        v.extend_from_slice(content);
        v
    }

    pub fn header_xml(name: &str, channels: usize, srate: f64, format: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><info><name>{name}</name><type>EEG</type>\
             <channel_count>{channels}</channel_count><nominal_srate>{srate}</nominal_srate>\
             <channel_format>{format}</channel_format><source_id>src</source_id>\
             <desc><channels><channel><label>Fp1</label></channel><channel><label>Fp2</label>\
             </channel></channels></desc></info>"
        )
    }

    /// Samples chunk content for `stream`: float32 values, the first sample
    /// stamped with `t0`, the rest deduced.
    pub fn samples_f32(stream: u32, t0: f64, rows: &[&[f32]]) -> Vec<u8> {
        let mut c = with_id(stream, &[1, rows.len() as u8]);
        for (k, row) in rows.iter().enumerate() {
            if k == 0 {
                c.push(8);
                c.extend_from_slice(&t0.to_le_bytes());
            } else {
                c.push(0);
            }
            for v in *row {
                c.extend_from_slice(&v.to_le_bytes());
            }
        }
        chunk(3, &c)
    }

    /// A sound file: stream 1 (2 × float32, 100 Hz; two Samples chunks, two
    /// clock offsets, a footer), stream 7 (string markers), a boundary.
    pub fn sound() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend(chunk(
            1,
            b"<?xml version=\"1.0\"?><info><version>1.0</version></info>",
        ));
        f.extend(chunk(
            2,
            &with_id(1, header_xml("amp", 2, 100.0, "float32").as_bytes()),
        ));
        f.extend(chunk(
            2,
            &with_id(7, header_xml("marks", 1, 0.0, "string").as_bytes()),
        ));
        f.extend(samples_f32(
            1,
            10.0,
            &[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]],
        ));
        let mut m = with_id(7, &[1, 1, 8]);
        m.extend_from_slice(&10.015f64.to_le_bytes());
        m.extend_from_slice(&[1, 4]);
        m.extend_from_slice(b"rest");
        f.extend(chunk(3, &m));
        for (t, o) in [(10.0f64, 0.5f64), (15.0, 0.5)] {
            let mut c = with_id(1, &t.to_le_bytes());
            c.extend_from_slice(&o.to_le_bytes());
            f.extend(chunk(4, &c));
        }
        f.extend(chunk(5, &BOUNDARY));
        f.extend(samples_f32(1, 10.03, &[&[7.0, 8.0]]));
        f.extend(chunk(
            6,
            &with_id(
                1,
                b"<?xml version=\"1.0\"?><info><sample_count>4</sample_count></info>",
            ),
        ));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testfile::*;
    use super::*;
    use std::io::Cursor as IoCursor;

    fn path() -> &'static Path {
        Path::new("rec.xdf")
    }

    fn read(bytes: &[u8], known_len: bool) -> Partial {
        let len = known_len.then_some(bytes.len() as u64);
        match XdfReader::from_reader(IoCursor::new(bytes), len, path()) {
            Ok(r) => load_from(r, &LoadOptions::default()),
            Err(e) => Partial {
                xdf: Xdf::default(),
                error: Some(e),
            },
        }
    }

    fn raw() -> LoadOptions {
        LoadOptions {
            synchronize_clocks: false,
            dejitter_timestamps: false,
            ..LoadOptions::default()
        }
    }

    #[test]
    fn sound_file_chunks_and_values() {
        let f = sound();
        let r = XdfReader::from_reader(IoCursor::new(&f), Some(f.len() as u64), path()).unwrap();
        let chunks: Vec<Chunk> = r.collect::<Result<_, _>>().unwrap();
        let kinds: Vec<&str> = chunks
            .iter()
            .map(|c| match &c.body {
                ChunkBody::FileHeader { .. } => "file",
                ChunkBody::StreamHeader { .. } => "header",
                ChunkBody::Samples { .. } => "samples",
                ChunkBody::ClockOffset { .. } => "offset",
                ChunkBody::Boundary => "boundary",
                ChunkBody::StreamFooter { .. } => "footer",
                ChunkBody::Unknown { .. } => "unknown",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "file", "header", "header", "samples", "samples", "offset", "offset", "boundary",
                "samples", "footer"
            ]
        );
        assert_eq!(chunks[0].offset, 4);
        let ChunkBody::StreamHeader { header, .. } = &chunks[1].body else {
            panic!("a stream header")
        };
        assert_eq!(header.name, "amp");
        assert_eq!(header.channel_labels, ["Fp1", "Fp2"]);
        assert_eq!(header.channel_format, ChannelFormat::Float32);

        let x = XdfReader::from_reader(IoCursor::new(&f), None, path()).unwrap();
        let p = load_from(x, &raw());
        assert!(p.error.is_none());
        let amp = &p.xdf.streams[0];
        // Deduced timestamps: the previous one + 1/100 s.
        let want = [10.0, 10.01, 10.02, 10.03];
        for (a, b) in amp.time_stamps.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert_eq!(
            amp.data,
            SampleData::Float32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        );
        assert_eq!(amp.footer.as_ref().unwrap().sample_count, Some(4));
        let marks = &p.xdf.streams[1];
        assert_eq!(marks.data, SampleData::String(vec!["rest".into()]));
        assert_eq!(marks.time_stamps, [10.015]);
    }

    #[test]
    fn clock_offsets_shift_timestamps() {
        let p = read(&sound(), true);
        assert!(p.error.is_none());
        // A constant 0.5 s offset: every timestamp moves by 0.5 s.
        let amp = &p.xdf.streams[0];
        for (a, b) in amp.time_stamps.iter().zip([10.5, 10.51, 10.52, 10.53]) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        assert_eq!(amp.clock_segments, [(0, 3)]);
        assert!((amp.effective_srate - 100.0).abs() < 1e-6);
        // The marker stream has no clock offsets: left as recorded.
        assert_eq!(p.xdf.streams[1].time_stamps, [10.015]);
    }

    #[test]
    fn wrong_magic_names_file_and_offset() {
        let mut f = sound();
        f[..4].copy_from_slice(b"EDF+");
        let e = read(&f, true).error.expect("an error");
        let msg = e.to_string();
        assert!(matches!(e, XdfError::Malformed { offset: 0, .. }), "{e:?}");
        assert!(msg.contains("rec.xdf") && msg.contains("XDF:"), "{msg}");
    }

    #[test]
    fn truncated_file_keeps_what_came_before() {
        let f = sound();
        // Cut inside the last Samples chunk (the footer and that chunk go).
        let footer = f.len()
            - chunk(
                6,
                &with_id(
                    1,
                    b"<?xml version=\"1.0\"?><info><sample_count>4</sample_count></info>",
                ),
            )
            .len();
        let cut = footer - 5;
        for known in [true, false] {
            let p = read(&f[..cut], known);
            let e = p.error.expect("an error");
            let msg = e.to_string();
            assert!(msg.contains("rec.xdf") && msg.contains("byte"), "{msg}");
            if known {
                // The length field already says the chunk passes the end.
                assert!(msg.contains("past the end"), "{msg}");
            } else {
                assert!(matches!(e, XdfError::Truncated { .. }), "{e:?}");
            }
            let amp = &p.xdf.streams[0];
            assert_eq!(amp.time_stamps.len(), 3, "the first chunk's samples stay");
            assert_eq!(amp.clock_times, [10.0, 15.0]);
            assert_eq!(p.xdf.streams[1].data.len(), 1);
            assert!(amp.footer.is_none());
        }
    }

    #[test]
    fn cut_inside_a_chunk_header_is_truncated() {
        let f = sound();
        // Four bytes past the magic: the FileHeader chunk's length is cut.
        let p = read(&f[..6], false);
        let e = p.error.expect("an error");
        assert!(matches!(e, XdfError::Truncated { offset: 5, .. }), "{e:?}");
    }

    #[test]
    fn huge_chunk_length_allocates_nothing() {
        let mut f = MAGIC.to_vec();
        f.push(8);
        f.extend_from_slice(&(1u64 << 60).to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(b"<info/>");
        let e = read(&f, true).error.expect("an error");
        assert!(
            matches!(e, XdfError::Malformed { offset: 4, .. })
                && e.to_string().contains("past the end"),
            "{e}"
        );
        // Unknown length: only the bytes present are read.
        let e = read(&f, false).error.expect("an error");
        assert!(matches!(e, XdfError::Truncated { .. }), "{e}");
    }

    #[test]
    fn samples_for_a_stream_without_header() {
        let mut f = MAGIC.to_vec();
        f.extend(chunk(
            2,
            &with_id(1, header_xml("amp", 2, 100.0, "float32").as_bytes()),
        ));
        f.extend(samples_f32(1, 1.0, &[&[1.0, 2.0]]));
        let at = f.len() as u64;
        f.extend(samples_f32(9, 1.0, &[&[1.0, 2.0]]));
        let p = read(&f, true);
        let e = p.error.expect("an error");
        assert!(
            matches!(e, XdfError::NoStreamHeader { stream_id: 9, offset, .. } if offset == at),
            "{e:?}"
        );
        assert!(e.to_string().contains("stream 9"), "{e}");
        assert_eq!(p.xdf.streams[0].time_stamps.len(), 1);
    }

    #[test]
    fn sample_count_beyond_the_chunk_is_refused_before_allocating() {
        let mut f = MAGIC.to_vec();
        f.extend(chunk(
            2,
            &with_id(1, header_xml("amp", 2, 100.0, "float32").as_bytes()),
        ));
        let mut c = with_id(1, &[8]);
        c.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend(chunk(3, &c));
        let e = read(&f, true).error.expect("an error");
        assert!(e.to_string().contains("fit in the chunk"), "{e}");
    }

    #[test]
    fn malformed_headers_name_the_field() {
        for (xml, want) in [
            (
                "<info><channel_count>x</channel_count></info>",
                "channel_count",
            ),
            (
                "<info><channel_count>1</channel_count><nominal_srate>1</nominal_srate>\
                 <channel_format>float16</channel_format></info>",
                "channel_format",
            ),
            ("<info><name>a</info>", "XML"),
            ("<stream/>", "<info>"),
        ] {
            let mut f = MAGIC.to_vec();
            f.extend(chunk(2, &with_id(1, xml.as_bytes())));
            let e = read(&f, true).error.expect("an error");
            let msg = e.to_string();
            assert!(msg.contains(want) && msg.contains("byte 15"), "{msg}");
        }
    }

    #[test]
    fn bad_timestamp_flag_and_trailing_bytes() {
        let mut f = MAGIC.to_vec();
        f.extend(chunk(
            2,
            &with_id(1, header_xml("amp", 1, 0.0, "int16").as_bytes()),
        ));
        let mut bad = f.clone();
        bad.extend(chunk(3, &with_id(1, &[1, 1, 3, 0, 0])));
        let e = read(&bad, true).error.expect("an error");
        assert!(e.to_string().contains("timestamp flag"), "{e}");
        let mut trailing = f.clone();
        trailing.extend(chunk(3, &with_id(1, &[1, 1, 0, 5, 0, 9])));
        let e = read(&trailing, true).error.expect("an error");
        assert!(e.to_string().contains("1 more bytes"), "{e}");
    }

    #[test]
    fn robust_fit_ignores_an_outlier() {
        let x: Vec<f64> = (0..50).map(|i| 1000.0 + i as f64).collect();
        let mut y: Vec<f64> = x.iter().map(|v| 3.0 + 0.25 * v).collect();
        let (c0, c1) = sync::robust_fit(&x, &y).unwrap();
        assert!(
            (c0 - 3.0).abs() < 1e-6 && (c1 - 0.25).abs() < 1e-9,
            "{c0} {c1}"
        );
        y[20] += 1e4;
        let (c0, c1) = sync::robust_fit(&x, &y).unwrap();
        assert!(
            (c0 - 3.0).abs() < 0.5 && (c1 - 0.25).abs() < 1e-3,
            "{c0} {c1}"
        );
        // All collection times equal: no line.
        assert!(sync::robust_fit(&[5.0, 5.0], &[1.0, 2.0]).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any corruption of a sound file (bytes overwritten, then cut) gives
        /// chunks or an error naming the file and an offset within it, never a
        /// panic.
        #[test]
        fn corrupted_files_fail_cleanly(
            edits in proptest::collection::vec((0usize..2000, 0u8..=255), 0..6),
            cut in 0usize..2000,
        ) {
            let mut f = sound();
            for (at, b) in edits {
                let at = at % f.len();
                f[at] = b;
            }
            let cut = cut.min(f.len());
            let f = &f[..cut];
            for known in [true, false] {
                let p = read(f, known);
                if let Some(e) = p.error {
                    let msg = e.to_string();
                    proptest::prop_assert!(msg.contains("rec.xdf"), "{}", msg);
                    let offset = match e {
                        XdfError::Truncated { offset, .. }
                        | XdfError::Malformed { offset, .. }
                        | XdfError::NoStreamHeader { offset, .. }
                        | XdfError::Xml { offset, .. }
                        | XdfError::ReadAt { offset, .. } => offset,
                        XdfError::Io { .. } => 0,
                    };
                    proptest::prop_assert!(offset <= f.len() as u64, "{}", msg);
                }
            }
        }
    }

    /// A file cut anywhere returns exactly the chunks that end before the cut
    /// (the same as the whole file's), then an error unless the cut falls
    /// between chunks.
    #[test]
    fn every_cut_keeps_the_chunks_before_it() {
        let f = sound();
        let all: Vec<Chunk> = XdfReader::from_reader(IoCursor::new(&f), None, path())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut ends: Vec<u64> = all.iter().skip(1).map(|c| c.offset).collect();
        ends.push(f.len() as u64);
        for cut in 4..=f.len() {
            let mut r = XdfReader::from_reader(IoCursor::new(&f[..cut]), None, path()).unwrap();
            let mut got = Vec::new();
            let mut failed = false;
            for c in &mut r {
                match c {
                    Ok(c) => got.push(c),
                    Err(_) => failed = true,
                }
            }
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(got[..], all[..whole], "cut at {cut}");
            assert_eq!(
                failed,
                !(cut == 4 || ends.contains(&(cut as u64))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn missing_file_and_directory_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.xdf");
        let p = load_partial(&missing, &LoadOptions::default());
        assert!(p.xdf.streams.is_empty());
        let msg = p.error.expect("an error").to_string();
        assert!(msg.contains("nope.xdf"), "{msg}");
        let e = load(dir.path(), &LoadOptions::default()).expect_err("a directory");
        assert!(e.to_string().contains("directory"), "{e}");
        // A sound file on disk loads through the same path.
        let f = dir.path().join("ok.xdf");
        std::fs::write(&f, sound()).unwrap();
        assert_eq!(load(&f, &LoadOptions::default()).unwrap().streams.len(), 2);
    }

    #[test]
    fn median_as_numpy() {
        assert_eq!(sync::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(sync::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
