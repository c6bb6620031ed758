//! Issue 17 §4: a lab's path from the official weights to a served, adapted
//! model, step by step as README "From the official weights to a calibrated
//! session" gives it, run with the real binaries on a CPU-sized slice:
//!
//! 1. `make-dataset eegmat` from labelled recordings (eegmat Subject00-02
//!    stand in for the lab's own: train 00-01, validation 02);
//! 2. `finetune` with `configs/train-finetune-lab-official-cpu.yaml` (the
//!    README's run file cut to 2 steps of 8 windows) from
//!    `../shared/golden/pretrain_base.pth`, the official-format stand-in for
//!    `checkpoints/labram-base.pth`, `--export lab/m.onnx`;
//! 3. `evaluate --adaptation baseline --save-population --card-adaptation` on a
//!    person the model never saw (Subject03), the population head trained on
//!    the validation person: the card then says `baseline`;
//! 4. `labramd run --config configs/lab.yaml` (only the stream name and the
//!    metrics port changed for the test) against `labramd replay` of Subject03:
//!    the daemon takes the protocol from the card, says `calibrating` for the
//!    first 60 s of the session, then classifies.
//!
//! Every command runs in a temporary folder as its current directory, so the
//! relative paths of the run file and the daemon config resolve as in the
//! README. The figures of so small a run mean nothing; the test asserts that
//! the path works, not its accuracy.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use labram_core::adapt::{Mode, PopulationModel};
use labram_core::card::ModelCard;
use labram_trainer::train::config::{RawRunConfig, RunConfig, StageName};

fn repo() -> PathBuf {
    manifest().join("..")
}

fn eegmat(file: &str) -> String {
    shared()
        .join("data/eegmat")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn session(subject: u32) -> String {
    format!(
        "rest={},arithmetic={}",
        eegmat(&format!("Subject{subject:02}_1.edf")),
        eegmat(&format!("Subject{subject:02}_2.edf"))
    )
}

/// `labram-trainer args…` in `dir` with `RUST_LOG`, output echoed for a
/// failing test's report; panics on a non-zero exit.
fn step(dir: &Path, log: &str, args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .output()
        .expect("run labram-trainer");
    eprintln!(
        "labram-trainer {} ({:.1} s)\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "labram-trainer {} failed", args[0]);
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The walkthrough's run file and its CPU cut describe the same run but for
/// the budget: same weights, data, network and output names.
#[test]
fn the_lab_run_file_and_its_cpu_cut_agree() {
    let full = repo().join("configs/train-finetune-lab-official.yaml");
    let cpu = repo().join("configs/train-finetune-lab-official-cpu.yaml");
    let raw = |p: &Path| {
        let text = std::fs::read_to_string(p).expect("run file");
        RawRunConfig::from_yaml(&text, p).expect("run file parses")
    };
    let (f, c) = (raw(&full), raw(&cpu));
    for p in [&full, &cpu] {
        RunConfig::load(p, StageName::Finetune).expect("a valid finetune run file");
    }
    assert_eq!(f.init, Some(PathBuf::from("checkpoints/labram-base.pth")));
    assert_eq!(c.init, f.init);
    assert_eq!(c.data, f.data);
    assert_eq!(f.data.dataset, Some(PathBuf::from("out/lab-dataset")));
    assert_eq!(c.model, f.model);
    assert_eq!(c.optim.balance_classes, f.optim.balance_classes);
}

#[test]
fn official_weights_to_a_served_adapted_model() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let golden = shared().join("golden/pretrain_base.pth");
    assert!(golden.exists(), "{} missing", golden.display());

    // 1. The lab's labelled recordings -> a window dataset, split by person.
    let mut args = vec![
        "make-dataset",
        "eegmat",
        "--mode",
        "causal",
        "--train",
        "0-1",
        "--val",
        "2",
        "--window-patches",
        "4",
        "--hop-s",
        "4",
        "--output",
        "out/lab-dataset",
    ];
    let files: Vec<String> = (0..3)
        .flat_map(|s| [1, 2].map(|k| eegmat(&format!("Subject{s:02}_{k}.edf"))))
        .collect();
    args.extend(files.iter().map(String::as_str));
    let out = step(dir, "warn", &args);
    // 180 s of rest and 60 s of arithmetic per person, 4-s windows every 4 s.
    assert!(
        stderr(&out).contains("wrote 180 windows from 6 file(s) (train 120, val 60)")
            || stdout(&out).contains("wrote 180 windows from 6 file(s) (train 120, val 60)"),
        "make-dataset did not write the expected windows"
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/lab-dataset/meta.json")).expect("meta.json"),
    )
    .expect("meta.json is JSON");
    assert_eq!(meta["classes"], serde_json::json!(["rest", "arithmetic"]));
    assert_eq!(meta["preprocessing"]["mode"], "causal");

    // 2. Fine-tune from the official-format checkpoint, export ONNX + card.
    let cpu_run = repo().join("configs/train-finetune-lab-official-cpu.yaml");
    let out = step(
        dir,
        "info",
        &[
            "finetune",
            "--config",
            cpu_run.to_str().expect("utf-8 path"),
            "--init",
            golden.to_str().expect("utf-8 path"),
            "--export",
            "lab/m.onnx",
            "--no-plots",
        ],
    );
    let log = stderr(&out);
    assert!(
        log.contains("initialised from")
            && log.contains("pretrain_base.pth: took the `student.*` weights; fresh: [fc_norm.bias, fc_norm.weight, head.bias, head.weight]; ignored: [lm_head.bias, lm_head.weight, mask_token, norm.bias, norm.weight]"),
        "the log does not say which tensors of the official checkpoint were taken"
    );
    assert!(stdout(&out).contains(
        "exported lab/m.onnx (2 classes: rest, arithmetic; 19 electrodes; 4 patches, hop 4 s)"
    ));
    let model = dir.join("lab/m.onnx");
    let onnx_bytes = std::fs::metadata(&model).expect("m.onnx").len();
    assert!(
        onnx_bytes > 10_000_000,
        "a LaBraM-Base export, not {onnx_bytes} bytes"
    );
    let exported = ModelCard::load_for_model(&model).expect("the exported card loads");
    assert_eq!(exported.classes, ["rest", "arithmetic"]);
    assert_eq!(exported.channels.len(), 19);
    assert_eq!(exported.adaptation, None, "no protocol before step 3");
    let command = exported.provenance.command.clone().unwrap_or_default();
    assert!(
        command.contains("--init pretrain_base.pth"),
        "the card records the initial weights: {command}"
    );

    // 3. A session protocol on a person the model never saw; the head on the
    // validation person; the protocol into the card.
    let (test_person, train_person) = (session(3), session(2));
    let evaluate = |extra: &[&str]| -> Vec<String> {
        [
            "evaluate",
            "--model",
            "lab/m.onnx",
            "--adaptation",
            "baseline",
            "--features",
            "logits",
            "--session",
            &test_person,
            "--train-session",
            &train_person,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    // Refused first: a population file outside the model's folder, which the
    // card could not name relative to itself; the card stays as it was.
    let bad = Command::new(env!("CARGO_BIN_EXE_labram-trainer"))
        .args(evaluate(&[
            "--save-population",
            "elsewhere.population.yaml",
            "--card-adaptation",
        ]))
        .current_dir(dir)
        .output()
        .expect("run labram-trainer");
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("outside the model's folder"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(ModelCard::load_for_model(&model).expect("card"), exported);

    let good = evaluate(&[
        "--save-population",
        "lab/m.population.yaml",
        "--card-adaptation",
    ]);
    let out = step(
        dir,
        "warn",
        &good.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let text = stdout(&out);
    assert!(
        text.contains("adaptation: baseline (baseline 60 s"),
        "{text}"
    );
    // 40 scored windows: (180 - 60) / 4 of rest and (60 - 20) / 4 of arithmetic.
    assert!(text.contains("windows: 40"), "{text}");
    assert!(text.contains("balanced accuracy: "), "{text}");
    let card = ModelCard::load_for_model(&model).expect("the adapted card loads");
    let a = card.adaptation.clone().expect("an adaptation section");
    assert_eq!(a.mode, Mode::Baseline);
    assert_eq!(a.baseline_s, 60.0);
    assert_eq!(a.features.as_deref(), Some("logits"));
    assert_eq!(a.population.as_deref(), Some("m.population.yaml"));
    assert_eq!(
        ModelCard {
            adaptation: None,
            ..card.clone()
        },
        exported,
        "only the adaptation section changed"
    );
    assert!(!dir.join("lab/m.yaml.tmp").exists());
    let pop_path = card.population_path(&model).expect("a population path");
    assert_eq!(pop_path, dir.join("lab/m.population.yaml"));
    let pop: PopulationModel = serde_norway::from_str(
        &std::fs::read_to_string(&pop_path).expect("the population file resolves"),
    )
    .expect("a population head");
    assert!(pop.recentred, "a baseline head learns re-centred features");
    assert_eq!(pop.classes, card.classes);
    assert_eq!(pop.space.dim, 2, "the model's two logits");

    // 4. The daemon serves it under the card's protocol.
    serve(dir, &model);
    eprintln!("walkthrough: {:.1} s", t0.elapsed().as_secs_f64());
}

/// The daemon binary of this workspace, built (or found up to date) by cargo
/// in this test's profile: the trainer's tests cannot name another package's
/// binary, and a stale one would test old code.
fn labramd() -> PathBuf {
    let trainer = PathBuf::from(env!("CARGO_BIN_EXE_labram-trainer"));
    let bin_dir = trainer.parent().expect("the binary's folder");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "labramd", "--bin", "labramd"])
        .current_dir(repo());
    if bin_dir.ends_with("release") {
        build.arg("--release");
    }
    let out = build.output().expect("run cargo build -p labramd");
    assert!(
        out.status.success(),
        "cargo build -p labramd failed:\n{}",
        stderr(&out)
    );
    let bin = bin_dir.join("labramd");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// Kills a child this test started when it goes out of scope (a failing
/// assertion must not leave a replay or a daemon running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, model: &Path) {
    let bin = labramd();
    let stream = format!("lab-walkthrough-{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    // configs/lab.yaml as shipped, but for the stream it reads and the port.
    let shipped =
        std::fs::read_to_string(repo().join("configs/lab.yaml")).expect("configs/lab.yaml");
    for key in ["name: MyAmp ", "127.0.0.1:9464", "path: lab/m.onnx"] {
        assert_eq!(shipped.matches(key).count(), 1, "configs/lab.yaml: {key}");
    }
    assert!(
        !shipped.contains("\nadaptation:"),
        "the protocol comes from the card"
    );
    let config = dir.join("lab-test.yaml");
    std::fs::write(
        &config,
        shipped
            .replace("name: MyAmp ", &format!("name: {stream} "))
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{port}")),
    )
    .expect("write the test config");
    assert_eq!(
        dir.join("lab/m.onnx"),
        model,
        "configs/lab.yaml names lab/m.onnx"
    );

    // The unseen person, rest then arithmetic, 10x real time.
    let _replay = Reaped(
        Command::new(&bin)
            .args([
                "replay",
                &eegmat("Subject03_1.edf"),
                &eegmat("Subject03_2.edf"),
            ])
            .args(["--speed", "10", "--wait-consumers", "60", "--name", &stream])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start labramd replay"),
    );
    let err_path = dir.join("labramd.stderr");
    let mut daemon = Reaped(
        Command::new(&bin)
            .args(["run", "--config", "lab-test.yaml", "--print"])
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("start labramd run"),
    );
    let lines = std::io::BufReader::new(daemon.0.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // 60 s of baseline at 10x, then two classified windows.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut seen, mut classified) = (Vec::new(), 0);
    while classified < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                classified += usize::from(is_classified(&l));
                seen.push(l);
            }
            Err(_) => break,
        }
    }
    // SIGINT: the daemon drains and closes its outlets.
    let pid = daemon.0.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let _ = daemon.0.wait();
    let log = std::fs::read_to_string(&err_path).unwrap_or_default();
    eprintln!(
        "--- labramd stdout\n{}\n--- labramd stderr\n{log}",
        seen.join("\n")
    );
    assert!(
        log.contains("adaptation as the model card lab/m.yaml says"),
        "the daemon did not take the protocol from the card"
    );
    assert!(log.contains("mode=baseline"), "not served under baseline");
    assert_eq!(classified, 2, "no classified windows within 90 s");
    let first_class = seen
        .iter()
        .position(|l| is_classified(l))
        .expect("a classified line");
    let calibrating = seen[..first_class]
        .iter()
        .filter(|l| l.contains("calibrating"))
        .count();
    // 60 s of baseline in 4-s windows every 4 s: the first window ends at 4 s.
    assert!(
        calibrating >= 14,
        "{calibrating} calibrating windows before the first prediction"
    );
}

/// A `--print` line of a classified window: `TIME  CLASS  p=... latency ...`
/// (while the session learns: `TIME  calibrating 52s ...`).
fn is_classified(line: &str) -> bool {
    matches!(line.split_whitespace().nth(1), Some("rest" | "arithmetic"))
}
