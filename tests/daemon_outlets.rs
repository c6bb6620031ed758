//! The daemon's outlets as other tools see them (issue 15 §4): a pylsl outlet streams
//! a real recording (PhysioNet eegmat) in real time, the `labramd` binary classifies
//! it, and an independent pylsl inlet reads both outlets' `info.desc()` (XDF
//! meta-data conventions: `desc/channels/channel` label / unit / type, and the
//! `desc/labramd` model element) and records every probability and marker.
//! Checked: the metadata, and with `output.marker_format: int32` that each int32
//! marker is the index of the winning class of the probabilities stamped alike.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use labramd::card::ModelCard;
use serde_json::Value;
use support::*;

const EEGMAT_19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];
const PATCHES: usize = 4;
const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The inlet: resolves `<name>` and `<name>-markers`, writes their descriptions and
/// every sample (LSL timestamps) to OUT once STOP exists and both are quiet.
const INLET: &str = r#"
import json, os, sys
import pylsl

name, stop, out = sys.argv[1:4]

def connect(n):
    s = pylsl.resolve_byprop("name", n, 1, 60)
    if not s:
        sys.exit(f"stream {n} not found")
    inlet = pylsl.StreamInlet(s[0], max_buflen=360, processing_flags=0)
    info = inlet.info(timeout=10)
    inlet.open_stream(timeout=10)
    chans, c = [], info.desc().child("channels").child("channel")
    while not c.empty():
        chans.append({k: c.child_value(k) for k in ("label", "unit", "type")})
        c = c.next_sibling()
    model, e = {}, info.desc().child("labramd").first_child()
    while not e.empty():
        model[e.name()] = e.child_value()
        e = e.next_sibling()
    d = dict(type=info.type(), channel_format=info.channel_format(), channels=chans,
             labramd=model, xml=info.as_xml(), values=[], timestamps=[])
    return inlet, d

streams = [connect(name), connect(name + "-markers")]
print("connected", flush=True)
quiet = 0.0
while True:
    got = False
    for inlet, d in streams:
        s, ts = inlet.pull_sample(timeout=0.05)
        if s is not None:
            d["values"].append(s)
            d["timestamps"].append(ts)
            got = True
    if got:
        quiet = 0.0
    elif os.path.exists(stop):
        quiet += 0.1
        if quiet > 1.0:
            break
json.dump(dict(predictions=streams[0][1], markers=streams[1][1]), open(out, "w"), indent=1)
"#;

struct Received {
    _dir: tempfile::TempDir,
    predictions: Value,
    markers: Value,
}

/// Streams 10 s of eegmat through a daemon with `output: {markers: true, <output>}`.
fn run(tag: &str, output: &str) -> Received {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = golden_model(d, &EEGMAT_19, PATCHES, 1.0);
    let mut card = golden_card(&EEGMAT_19, PATCHES, 1.0);
    card.provenance.checkpoint_sha256 = Some(DIGEST.into());
    card.save(&ModelCard::path_for(&model)).unwrap();
    let pid = std::process::id();
    let in_name = format!("labramd-outlets-{tag}-{pid}");
    let out_name = format!("labramd-outlets-{tag}-pred-{pid}");
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "input:\n  name: {in_name}\n  resolve_timeout_s: 60\n  unit: auto\n\
             model:\n  path: {}\n  device: cpu\n  threads: 1\n\
             window: {{patches: {PATCHES}, hop_s: 1.0}}\n\
             output: {{name: {out_name}, markers: true{output}}}\n\
             metrics: {{listen: \"127.0.0.1:{}\"}}\n",
            model.display(),
            free_port()
        ),
    )
    .unwrap();
    let stop = d.join("stop");
    let done = d.join("done");
    let script = d.join("inlet.py");
    std::fs::write(&script, INLET).unwrap();
    let mut inlet_cmd = Command::new(python());
    inlet_cmd
        .arg(&script)
        .arg(&out_name)
        .arg(&stop)
        .arg(d.join("inlet.json"));
    let mut inlet = Proc::spawn("inlet", inlet_cmd, d.join("inlet.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    cmd.args(["run", "--config"]).arg(&config);
    let mut daemon = Proc::spawn("labramd", cmd, d.join("labramd.log"));
    let edf = shared().join("data/eegmat/Subject00_1.edf");
    let mut outlet = Proc::spawn(
        "outlet",
        lsl_peer(&[
            "outlet",
            "--edf",
            edf.to_str().unwrap(),
            "--name",
            &in_name,
            "--start-s",
            "10",
            "--seconds",
            "10",
            "--done-file",
            done.to_str().unwrap(),
            "--out",
            d.join("outlet.json").to_str().unwrap(),
        ]),
        d.join("outlet.log"),
    );
    let t = Instant::now();
    while !done.exists() {
        if let Ok(Some(s)) = daemon.child.try_wait() {
            panic!("labramd exited early ({s}):\n{}", daemon.log_text());
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the outlet never finished:\n{}\n{}",
            outlet.log_text(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("TERM");
    let exit = daemon.wait(30.0);
    std::fs::write(&stop, "stop").unwrap();
    assert!(
        inlet.wait(30.0).is_some_and(|s| s.success()),
        "inlet failed:\n{}",
        inlet.log_text()
    );
    outlet.wait(30.0);
    assert!(
        exit.is_some_and(|s| s.success()),
        "labramd did not exit cleanly:\n{}",
        daemon.log_text()
    );
    let text = std::fs::read_to_string(d.join("inlet.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    Received {
        predictions: v["predictions"].clone(),
        markers: v["markers"].clone(),
        _dir: dir,
    }
}

fn channels(v: &Value) -> Vec<(String, String, String)> {
    v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("label"), s("unit"), s("type"))
        })
        .collect()
}

fn model_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v["labramd"][key]
        .as_str()
        .unwrap_or_else(|| panic!("desc/labramd/{key} missing: {}", v["xml"]))
}

/// Index of the largest value.
fn argmax(p: &[Value]) -> i64 {
    let p: Vec<f64> = p.iter().map(|x| x.as_f64().unwrap()).collect();
    let mut best = 0;
    for i in 1..p.len() {
        if p[i] > p[best] {
            best = i;
        }
    }
    best as i64
}

/// Pairs each prediction with the marker stamped alike (both are stamped with the
/// window's last input sample).
fn pairs(r: &Received) -> Vec<(Vec<Value>, Value)> {
    let pv = r.predictions["values"].as_array().unwrap();
    let pt = r.predictions["timestamps"].as_array().unwrap();
    let mv = r.markers["values"].as_array().unwrap();
    let mt = r.markers["timestamps"].as_array().unwrap();
    assert!(pv.len() >= 4, "too few predictions: {}", pv.len());
    assert_eq!(pv.len(), mv.len(), "one marker per prediction");
    pv.iter()
        .zip(pt)
        .zip(mv.iter().zip(mt))
        .map(|((p, tp), (m, tm))| {
            let (tp, tm) = (tp.as_f64().unwrap(), tm.as_f64().unwrap());
            assert!((tp - tm).abs() < 1e-6, "prediction at {tp}, marker at {tm}");
            (p.as_array().unwrap().clone(), m[0].clone())
        })
        .collect()
}

#[test]
fn outlets_describe_themselves() {
    let r = run("meta", "");
    let p = &r.predictions;
    assert_eq!(
        channels(p),
        vec![
            ("class0".into(), "probability".into(), "Probability".into()),
            ("class1".into(), "probability".into(), "Probability".into()),
        ],
        "{}",
        p["xml"]
    );
    assert_eq!(model_field(p, "model_name"), "m.onnx");
    assert!(model_field(p, "model").ends_with("m.onnx"));
    assert_eq!(model_field(p, "architecture"), "labram_base_patch200_200");
    assert_eq!(model_field(p, "classes"), "class0,class1");
    assert_eq!(model_field(p, "checkpoint_sha256"), DIGEST);
    assert_eq!(model_field(p, "adaptation"), "off");
    assert_eq!(model_field(p, "marker_format"), "string");
    let m = &r.markers;
    assert_eq!(m["type"], "Markers");
    assert_eq!(m["channel_format"], 3, "cf_string");
    assert_eq!(
        channels(m),
        vec![("class".into(), "".into(), "Marker".into())],
        "{}",
        m["xml"]
    );
    assert_eq!(model_field(m, "marker_format"), "string");
    assert_eq!(model_field(m, "classes"), "class0,class1");
    let classes = ["class0", "class1"];
    for (probs, marker) in pairs(&r) {
        assert_eq!(marker, classes[argmax(&probs) as usize], "{probs:?}");
    }
}

#[test]
fn int32_markers_are_the_winning_class_index() {
    let r = run("int32", ", marker_format: int32");
    assert_eq!(model_field(&r.predictions, "marker_format"), "int32");
    let m = &r.markers;
    assert_eq!(m["channel_format"], 4, "cf_int32");
    assert_eq!(model_field(m, "marker_format"), "int32");
    assert_eq!(
        channels(m),
        vec![("class".into(), "".into(), "Marker".into())]
    );
    for (probs, marker) in pairs(&r) {
        assert_eq!(marker.as_i64(), Some(argmax(&probs)), "{probs:?}");
    }
}
