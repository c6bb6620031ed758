//! The daemon's ONNX Runtime stage against the golden reference: the torch.onnx
//! export of the golden fine-tuning checkpoint must reproduce the official PyTorch
//! logits, and the model checks must refuse files that break the contract.

mod support;

use labramd::inference::{probabilities, Classifier, Device, InferenceError};
use support::*;

const GOLDEN_19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];

#[test]
fn golden_logits_and_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path(), &GOLDEN_19, 8, 1.0);
    let mut c = Classifier::new(&model, Device::Cpu, 2).expect("load golden export");
    assert_eq!(c.num_classes(), 2);
    assert_eq!(c.num_channels(), 19);
    let (shape, eeg) = safetensor(&shared().join("golden/inputs.safetensors"), "eeg_uv");
    assert_eq!(shape, vec![2, 19, 8, 200]);
    let eeg = f32s(&eeg);
    let (_, want) = safetensor(&shared().join("golden/outputs.safetensors"), "ft.logits");
    let want = f32s(&want);

    let got = c.logits(&eeg, 2).unwrap();
    let flat: Vec<f32> = got.concat();
    let err = rel_l2(&flat, &want);
    assert!(
        err < 1e-5,
        "rel-L2 {err:e} vs golden ft.logits {want:?}, got {flat:?}"
    );

    // The daemon's single-window path agrees with the batch path.
    let per = 19 * 8 * 200;
    for b in 0..2 {
        let mut p = [0.0f32; 2];
        c.classify_one_into(&eeg[b * per..(b + 1) * per], &mut p)
            .unwrap();
        let mut want_p = [0.0f32; 2];
        probabilities(&got[b], &mut want_p);
        assert!(
            (p[0] - want_p[0]).abs() < 1e-6 && (p[1] - want_p[1]).abs() < 1e-6,
            "{p:?} vs {want_p:?}"
        );
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
    }
    // A shape change (4 patches) reallocates and still works; a ragged input is refused.
    let sub: Vec<f32> = (0..19)
        .flat_map(|ch| eeg[ch * 1600..ch * 1600 + 800].to_vec())
        .collect();
    assert_eq!(c.classify(&sub, 1).unwrap()[0].len(), 2);
    assert!(matches!(
        c.logits(&eeg[..1000], 1),
        Err(InferenceError::Shape { .. })
    ));
}

#[test]
fn contract_violations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Card lists 3 classes, the model has 2 logits.
    let model = golden_model(dir.path(), &GOLDEN_19, 8, 1.0);
    let mut card = golden_card(&GOLDEN_19, 8, 1.0);
    card.classes.push("extra".into());
    card.save(&labramd::card::ModelCard::path_for(&model))
        .unwrap();
    let err = Classifier::new(&model, Device::Cpu, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("logits")
            && err.contains("2 classes")
            && err.contains("not a valid LaBraM export"),
        "{err}"
    );

    // No card beside the model.
    std::fs::remove_file(labramd::card::ModelCard::path_for(&model)).unwrap();
    let err = Classifier::new(&model, Device::Cpu, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.yaml") && err.contains("labram-trainer export"),
        "{err}"
    );

    // Not an ONNX file at all.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    golden_card(&GOLDEN_19, 8, 1.0)
        .save(&labramd::card::ModelCard::path_for(&junk))
        .unwrap();
    let err = Classifier::new(&junk, Device::Cpu, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.onnx"), "{err}");
}

/// Writes a tiny ONNX model with the given inputs (name, elem type, rank) and one
/// float output `logits` [batch, 2], with the `onnx` Python package.
fn tiny_onnx(path: &std::path::Path, inputs: &[(&str, &str, usize)]) {
    let spec: Vec<String> = inputs
        .iter()
        .map(|(n, t, r)| format!("('{n}', TensorProto.{t}, {r})"))
        .collect();
    let script = format!(
        "import onnx, sys\n\
         from onnx import helper, TensorProto\n\
         ins = [{}]\n\
         vi = [helper.make_tensor_value_info(n, t, [f'd{{i}}' for i in range(r)]) for n, t, r in ins]\n\
         out = helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['b', 2])\n\
         c = helper.make_node('Constant', [], ['logits'], value=helper.make_tensor('v', TensorProto.FLOAT, [1, 2], [0.0, 0.0]))\n\
         g = helper.make_graph([c], 'g', vi, [out])\n\
         m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 18)])\n\
         m.ir_version = 9\n\
         onnx.save(m, sys.argv[1])\n",
        spec.join(", ")
    );
    let status = std::process::Command::new(python())
        .args(["-c", &script])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "could not write {}", path.display());
}

#[test]
fn wrong_input_names_types_and_ranks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    type Inputs<'a> = &'a [(&'a str, &'a str, usize)];
    let cases: [(&str, Inputs, &str); 3] = [
        (
            "names.onnx",
            &[("x", "FLOAT", 4), ("input_chans", "INT64", 1)],
            "expected exactly `eeg` and `input_chans`",
        ),
        (
            "rank.onnx",
            &[("eeg", "FLOAT", 3), ("input_chans", "INT64", 1)],
            "rank 3",
        ),
        (
            "type.onnx",
            &[("eeg", "FLOAT", 4), ("input_chans", "INT32", 1)],
            "expected int64",
        ),
    ];
    for (file, inputs, needle) in cases {
        let model = dir.path().join(file);
        tiny_onnx(&model, inputs);
        golden_card(&GOLDEN_19, 8, 1.0)
            .save(&labramd::card::ModelCard::path_for(&model))
            .unwrap();
        let err = Classifier::new(&model, Device::Cpu, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("not a valid LaBraM export"),
            "{file}: {err}"
        );
    }
}

#[test]
fn cuda_request_falls_back_to_cpu_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_model(dir.path(), &GOLDEN_19, 8, 1.0);
    let c = Classifier::new(&model, Device::Cuda, 1).expect("falls back to CPU");
    // Without the `cuda` feature (or with the CPU-only library) CUDA cannot register:
    // the session runs on CPU and says why.
    if !cfg!(feature = "cuda") {
        assert_eq!(c.device(), Device::Cpu);
    }
    if c.device() == Device::Cpu {
        assert!(c.cuda_fallback().is_some_and(|w| !w.is_empty()));
    }
}
