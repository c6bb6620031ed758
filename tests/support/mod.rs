//! Helpers shared by the daemon's integration tests: locating `../shared`, making a
//! test model (an ONNX export plus the card the daemon requires), reading the golden
//! safetensors, and finding the project's Python for the pylsl peers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use labramd::card::{ModelCard, Preprocessing, Provenance, CARD_FORMAT};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` (read-only test material).
pub fn shared() -> PathBuf {
    repo().join("../shared")
}

/// The project's venv Python (pylsl, pyedflib, numpy), or a panic that says how to get it.
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup.sh to create the project's Python venv (pylsl, pyedflib)",
        p.display()
    );
    p
}

/// A card for the golden fine-tuning checkpoint on `channels`.
pub fn golden_card(channels: &[&str], patches: usize, hop_s: f64) -> ModelCard {
    ModelCard {
        format: CARD_FORMAT,
        adaptation: None,
        architecture: "labram_base_patch200_200".into(),
        trained: false,
        task: "golden parity checkpoint (untrained)".into(),
        classes: vec!["class0".into(), "class1".into()],
        channels: channels.iter().map(|s| s.to_string()).collect(),
        patch_size: 200,
        sample_rate_hz: 200.0,
        window_patches: patches,
        hop_s,
        preprocessing: Preprocessing::default(),
        provenance: Provenance {
            checkpoint: Some("finetune_base.pth".into()),
            ..Provenance::default()
        },
    }
}

/// Puts a model for `channels` into `dir` (`dir/m.onnx` + `dir/m.yaml`): the golden
/// checkpoint exported by torch.onnx (`../shared/golden/reference_torch_export.onnx`,
/// the same ONNX contract as `labram-trainer export`), linked, with a card beside it.
pub fn golden_model(dir: &Path, channels: &[&str], patches: usize, hop_s: f64) -> PathBuf {
    let model = dir.join("m.onnx");
    let src = shared().join("golden/reference_torch_export.onnx");
    assert!(src.exists(), "{} missing", src.display());
    if !model.exists() {
        std::os::unix::fs::symlink(&src, &model).expect("link the reference export");
    }
    golden_card(channels, patches, hop_s)
        .save(&ModelCard::path_for(&model))
        .expect("write card");
    model
}

/// A tensor of a safetensors file: (shape, little-endian bytes).
pub fn safetensor(file: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(file).expect("read safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let t = &header[name];
    let shape = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    (shape, bytes[8 + n + a..8 + n + b].to_vec())
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET (real socket, no client library): (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled (or fully labelled) series in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A child process killed when dropped (a failing test leaves nothing running).
pub struct Proc {
    pub child: std::process::Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: std::process::Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.into(),
            log,
        }
    }

    /// Waits up to `secs` for the exit status.
    pub fn wait(&mut self, secs: f64) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if t.elapsed().as_secs_f64() > secs {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `python tests/support/lsl_peer.py ARGS`.
pub fn lsl_peer(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(python());
    c.arg(repo().join("tests/support/lsl_peer.py")).args(args);
    c
}
