//! The checkpoint reader's memory and stack stay bounded for any `.pth`: a torch
//! zip whose `data.pkl` nests 200,000 lists (400 KB) is refused with a clean error,
//! through the same entry point `labram-trainer export` uses, on a small stack and
//! through the real binary (which used to abort with a stack overflow, exit 134).

use std::io::Write;
use std::path::Path;

use labram_trainer::export::load_weights;

mod common;
use common::{stderr, trainer};

/// A torch-zip-format checkpoint as `torch.save` lays it out (`<root>/data.pkl`,
/// `<root>/byteorder`, `<root>/version`, entries stored uncompressed) whose pickle
/// is `depth` empty lists, each appended to the one below (protocol 2).
fn deep_pth(path: &Path, depth: usize) {
    let mut pkl = vec![0x80, 2];
    pkl.extend(std::iter::repeat_n(b']', depth));
    pkl.extend(std::iter::repeat_n(b'a', depth - 1));
    pkl.push(b'.');
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [
        ("deep/data.pkl", &pkl[..]),
        ("deep/byteorder", b"little"),
        ("deep/version", b"3\n"),
    ] {
        z.start_file(name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn deeply_nested_pickle_is_a_clean_error_on_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("deep.pth");
    deep_pth(&pth, 200_000);
    assert!(std::fs::metadata(&pth).unwrap().len() > 400_000);
    // 1 MiB: a recursion over 200,000 levels needs several MiB (the main thread's
    // 8 MiB overflowed), so finishing here shows the stack use is bounded.
    let msg = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || load_weights(&pth).unwrap_err().to_string())
        .unwrap()
        .join()
        .expect("load_weights panicked");
    assert!(
        msg.contains("deep.pth") && msg.contains("nesting is too deep"),
        "{msg}"
    );
}

#[test]
fn export_refuses_a_deeply_nested_pickle_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("deep.pth");
    deep_pth(&pth, 200_000);
    let out = dir.path().join("m.onnx");
    let o = trainer(&[
        "export",
        "--checkpoint",
        pth.to_str().unwrap(),
        "--model",
        "labram_base_patch200_200",
        "--num-classes",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    // A clean failure (exit 1 from an error), not an abort (134).
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("deep.pth") && err.contains("nesting is too deep"),
        "{err}"
    );
    assert!(!err.contains("overflowed"), "{err}");
    assert!(!out.exists());
}
