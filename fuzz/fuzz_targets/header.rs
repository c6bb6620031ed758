//! Fuzzes the EDF/BDF header parser and, for inputs that parse, the record
//! reader and the TAL (annotation) parser: any input must give `Ok` or `Err`,
//! never a panic, an out-of-bounds access or an unbounded allocation.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use labram_core::recording::{EdfReader, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.edf");
    let len = Some(data.len() as u64);
    let _ = Header::parse(data, len, path);
    if let Ok(mut reader) = EdfReader::from_reader(Cursor::new(data), len, path) {
        let _ = reader.annotations();
        let _ = reader.record_onsets();
        let n = reader.header().signals.len();
        let all: Vec<usize> = (0..n).collect();
        let _ = reader.read_all(&all);
    }
});
