//! The EDF/EDF+/BDF reader against pyedflib (an independent implementation:
//! the C EDFlib): files pyedflib writes here (EDF, EDF+ with annotations, BDF,
//! BDF+, record durations 0.25/0.5/2 s, several rates per file, varied digital
//! ranges and units) and the real recordings in ../shared/data. Physical values
//! must equal pyedflib's within 1e-6 relative, annotations must be identical.

use std::path::{Path, PathBuf};
use std::process::Command;

use labramd::recording::{Continuity, EdfReader, Format, Unit};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn shared() -> PathBuf {
    repo().join("../shared/data")
}

fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh to create the project's Python environment (pyedflib)",
        py.display()
    );
    py
}

/// `write DIR`: writes the test files; `dump FILE DIR`: pyedflib's view of
/// FILE (header.json, sigN.f64 physical values, annotations.json).
const SCRIPT: &str = r#"
import sys, json, os
import numpy as np
import pyedflib

def write(d):
    rng = np.random.default_rng(7)
    def hdr(label, dim, fs, pmin, pmax, dmin, dmax):
        return dict(label=label, dimension=dim, sample_frequency=fs, physical_min=pmin,
                    physical_max=pmax, digital_min=dmin, digital_max=dmax, transducer="AgCl", prefilter="HP:0.1Hz")
    def sig(h, secs):
        n = int(h["sample_frequency"] * secs)
        lo, hi = h["physical_min"], h["physical_max"]
        return rng.uniform(min(lo, hi), max(lo, hi), n)
    files = [
        # name, type, record duration, headers, annotations
        ("plain.edf", pyedflib.FILETYPE_EDF, 1.0, [
            hdr("EEG Fp1-REF", "uV", 256, -3276.8, 3276.7, -32768, 32767),
            hdr("EEG Cz-REF", "uV", 256, -500.0, 500.0, -2048, 2047),
            hdr("ECG", "mV", 128, -10.0, 10.0, -32768, 32767),
            hdr("Temp", "degC", 8, 30.0, 40.0, 0, 1000)], []),
        ("plus_annot.edf", pyedflib.FILETYPE_EDFPLUS, 0.5, [
            hdr("Fc5.", "uV", 200, -8092, 8092, -8092, 8092),
            hdr("EEG T3", "V", 100, -0.001, 0.001, -30000, 30000),
            hdr("Resp", "nV", 50, -1e6, 1e6, -100, 100)],
            [(0.0, 2.5, "rest"), (1.25, -1, "stimulus ü"), (3.5, 0.75, "T1"), (4.0, 0.0, "end")]),
        ("long_records.edf", pyedflib.FILETYPE_EDFPLUS, 2.0, [
            hdr("fp1", "uV", 250, -100.0, 100.0, -32767, 32767),
            hdr("EEG A2-A1", "uV", 500, 0.0, 1000.0, 0, 32767)], [(0.5, 1.0, "A"), (2.25, -1, "B")]),
        ("short_records.edf", pyedflib.FILETYPE_EDF, 0.25, [
            hdr("O1", "uV", 1024, -200.0, 200.0, -32768, 32767),
            hdr("O2", "mV", 512, -0.5, 0.5, -1, 1)], []),
        ("plain.bdf", pyedflib.FILETYPE_BDF, 1.0, [
            hdr("A1", "uV", 512, -262144, 262143.96875, -8388608, 8388607),
            hdr("A2", "uV", 512, -1000.0, 1000.0, -100000, 100000),
            hdr("Status", "Boolean", 512, -8388608, 8388607, -8388608, 8388607)], []),
        ("plus.bdf", pyedflib.FILETYPE_BDFPLUS, 0.5, [
            hdr("Cz", "mV", 2048, -1.0, 1.0, -8388608, 8388607),
            hdr("Pz", "uV", 256, 500.0, -500.0, -5000, 5000)], [(0.1, 0.2, "blink"), (1.9, -1, "x")]),
    ]
    for name, ftype, dur, headers, annots in files:
        path = os.path.join(d, name)
        w = pyedflib.EdfWriter(path, len(headers), file_type=ftype)
        w.setSignalHeaders(headers)
        w.setDatarecordDuration(dur)
        secs = 6.0
        w.writeSamples([sig(h, secs) for h in headers])
        for on, du, tx in annots:
            w.writeAnnotation(on, du, tx)
        w.close()

def dump(path, d):
    f = pyedflib.EdfReader(path)
    n = f.signals_in_file
    hd = dict(labels=f.getSignalLabels(), rates=[f.getSampleFrequency(i) for i in range(n)],
              dims=[f.getPhysicalDimension(i) for i in range(n)],
              n_samples=[int(x) for x in f.getNSamples()],
              record_duration=f.getFileDuration() / max(f.datarecords_in_file, 1),
              n_records=f.datarecords_in_file)
    for i in range(n):
        f.readSignal(i).astype("<f8").tofile(os.path.join(d, f"sig{i}.f64"))
    on, du, tx = f.readAnnotations()
    json.dump(dict(onsets=[float(x) for x in on], durations=[float(x) for x in du], texts=[str(t) for t in tx]),
              open(os.path.join(d, "annotations.json"), "w"))
    json.dump(hd, open(os.path.join(d, "header.json"), "w"))
    f.close()

if sys.argv[1] == "write":
    write(sys.argv[2])
else:
    dump(sys.argv[2], sys.argv[3])
"#;

fn run_py(args: &[&str]) {
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyedflib helper {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_f64(path: &Path) -> Vec<f64> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Compares our reading of `file` with pyedflib's; returns (signals, annotations) compared.
fn compare_with_pyedflib(file: &Path) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    run_py(&["dump", file.to_str().unwrap(), dir.path().to_str().unwrap()]);
    let hd: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("header.json")).unwrap())
            .unwrap();
    let ann: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("annotations.json")).unwrap(),
    )
    .unwrap();

    let mut r = EdfReader::open(file).unwrap_or_else(|e| panic!("{e}"));
    let h = r.header().clone();
    let data = h.data_signals();
    let labels = hd["labels"].as_array().unwrap();
    assert_eq!(data.len(), labels.len(), "{}: signal count", file.display());
    assert_eq!(h.n_records as u64, hd["n_records"].as_u64().unwrap());
    let values = r.read_all(&data).unwrap();
    for (k, &s) in data.iter().enumerate() {
        let sh = &h.signals[s];
        assert_eq!(
            sh.label,
            labels[k].as_str().unwrap(),
            "{}: label {k}",
            file.display()
        );
        assert_eq!(
            sh.physical_dimension,
            hd["dims"][k].as_str().unwrap().trim()
        );
        let rate = h.sample_rate_hz(s).unwrap();
        assert!(
            (rate - hd["rates"][k].as_f64().unwrap()).abs() < 1e-9,
            "{}: rate of {}",
            file.display(),
            sh.label
        );
        let want = read_f64(&dir.path().join(format!("sig{k}.f64")));
        assert_eq!(
            values[k].len(),
            want.len(),
            "{}: samples of {}",
            file.display(),
            sh.label
        );
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        for (i, (a, b)) in values[k].iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(scale * 1e-6),
                "{}: {} sample {i}: ours {a} pyedflib {b}",
                file.display(),
                sh.label
            );
        }
    }
    let ours = r.annotations().unwrap();
    let onsets = ann["onsets"].as_array().unwrap();
    assert_eq!(
        ours.len(),
        onsets.len(),
        "{}: annotation count",
        file.display()
    );
    for (i, a) in ours.iter().enumerate() {
        let on = onsets[i].as_f64().unwrap();
        let du = ann["durations"][i].as_f64().unwrap();
        let tx = ann["texts"][i].as_str().unwrap();
        assert!(
            (a.onset_s - on).abs() < 1e-7,
            "{}: onset {i}: {} vs {on}",
            file.display(),
            a.onset_s
        );
        match a.duration_s {
            Some(d) => assert!(
                (d - du).abs() < 1e-7,
                "{}: duration {i}: {d} vs {du}",
                file.display()
            ),
            None => assert_eq!(
                du,
                -1.0,
                "{}: annotation {i} has no duration",
                file.display()
            ),
        }
        assert_eq!(a.text, tx, "{}: text {i}", file.display());
    }
    (data.len(), ours.len())
}

#[test]
fn files_written_by_pyedflib() {
    let dir = tempfile::tempdir().unwrap();
    run_py(&["write", dir.path().to_str().unwrap()]);
    let expect = [
        ("plain.edf", 4, 0, Format::Edf, 1.0),
        ("plus_annot.edf", 3, 4, Format::Edf, 0.5),
        ("long_records.edf", 2, 2, Format::Edf, 2.0),
        ("short_records.edf", 2, 0, Format::Edf, 0.25),
        ("plain.bdf", 3, 0, Format::Bdf, 1.0),
        ("plus.bdf", 2, 2, Format::Bdf, 0.5),
    ];
    for (name, n_sig, n_ann, format, dur) in expect {
        let path = dir.path().join(name);
        let (s, a) = compare_with_pyedflib(&path);
        assert_eq!((s, a), (n_sig, n_ann), "{name}");
        let r = EdfReader::open(&path).unwrap();
        assert_eq!(r.header().format, format, "{name}");
        assert_eq!(r.header().record_duration_s, dur, "{name}");
        println!("{name}: {s} signals, {a} annotations equal pyedflib's");
    }
    // units: voltages to µV, others kept
    let r = EdfReader::open(dir.path().join("plus_annot.edf")).unwrap();
    let units: Vec<Unit> = r.header().signals.iter().map(|s| s.unit).collect();
    assert_eq!(units[0], Unit::Voltage { to_uv: 1.0 });
    assert_eq!(units[1], Unit::Voltage { to_uv: 1e6 });
    assert_eq!(units[2], Unit::Voltage { to_uv: 1e-3 });
    let r = EdfReader::open(dir.path().join("plain.edf")).unwrap();
    assert!(!r.header().signals[3].is_voltage(), "degC is not EEG");
    let mut r = EdfReader::open(dir.path().join("plain.bdf")).unwrap();
    let status = r.header().signal_index("Status").unwrap();
    assert!(!r.header().signals[status].is_voltage());
    let uv = r.read_all_uv(&[1]).unwrap();
    let phys = r.read_all(&[1]).unwrap();
    assert_eq!(uv[0][10], phys[0][10] as f32);
}

#[test]
fn eegmat_recordings_equal_pyedflib() {
    for name in ["Subject00_1.edf", "Subject01_2.edf"] {
        let path = shared().join("eegmat").join(name);
        let (s, a) = compare_with_pyedflib(&path);
        let r = EdfReader::open(&path).unwrap();
        assert_eq!(r.header().continuity, Continuity::PlusContinuous);
        assert_eq!(r.header().sample_rate_hz(0), Some(500.0));
        assert_eq!(s, 21, "{name}");
        println!("{name}: {s} signals, {a} annotations equal pyedflib's");
    }
}

#[test]
fn eegmmidb_with_its_30_annotations() {
    let path = shared().join("eegmmidb/S001R04.edf");
    let (s, a) = compare_with_pyedflib(&path);
    assert_eq!((s, a), (64, 30));
    let mut r = EdfReader::open(&path).unwrap();
    assert_eq!(r.header().signals[0].label, "Fc5.");
    assert_eq!(r.header().sample_rate_hz(0), Some(160.0));
    let ann = r.annotations().unwrap();
    let t0 = ann.iter().filter(|a| a.text == "T0").count();
    let t1 = ann.iter().filter(|a| a.text == "T1").count();
    let t2 = ann.iter().filter(|a| a.text == "T2").count();
    assert_eq!((t0, t1, t2), (15, 8, 7));
    assert_eq!(ann[1].onset_s, 4.2);
    assert_eq!(ann[1].duration_s, Some(4.1));
    assert_eq!(r.record_onsets().unwrap().len(), 125);
}

#[test]
fn biosemi_bdf_and_its_status_channel() {
    let path = shared().join("bdf/Newtest17-256.bdf");
    let (s, _) = compare_with_pyedflib(&path);
    assert_eq!(s, 17);
    let mut r = EdfReader::open(&path).unwrap();
    let h = r.header().clone();
    assert_eq!(h.format, Format::Bdf);
    assert_eq!(h.sample_rate_hz(0), Some(256.0));
    let st = h.signal_index("Status").unwrap();
    assert_eq!(st, 16);
    assert_eq!(h.signals[st].physical_dimension, "Boolean");
    assert!(!h.signals[st].is_voltage() && h.signals[0].is_voltage());
    let status = r.read_digital(st).unwrap();
    assert_eq!(status.len(), 15360);
    // Low 16 bits switch between 254 and 255: 40 rising edges to 255 (first at 414).
    let low: Vec<i32> = status.iter().map(|v| v & 0xFFFF).collect();
    let onsets: Vec<usize> = (1..low.len())
        .filter(|&i| low[i] == 255 && low[i - 1] != 255)
        .collect();
    assert_eq!(onsets.len(), 40, "{onsets:?}");
    assert_eq!(onsets[0], 414);
    // frames in time order for replay
    r.seek_record(0).unwrap();
    let mut frames = Vec::new();
    let eeg: Vec<usize> = (0..16).collect();
    let b = r.read_frames(&eeg, &mut frames).unwrap().unwrap();
    assert_eq!((b.frames, frames.len(), b.onset_s), (256, 256 * 16, 0.0));
    let all = r.read_all_uv(&eeg).unwrap();
    assert_eq!(frames[16 * 5 + 3], all[3][5]);
}

#[test]
fn truncated_real_file_is_an_error() {
    let src = shared().join("eegmmidb/S001R04.edf");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.edf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let e = EdfReader::open(&cut)
        .err()
        .expect("truncated file must not open")
        .to_string();
    assert!(
        e.contains("cut.edf") && e.contains("truncated") && e.contains("124 complete records"),
        "{e}"
    );
}
