//! The safe `.pth` reader against torch itself: every tensor of the golden checkpoints
//! (model, optimizer state, 0-d tensors) and every scalar (epoch, args, scaler) must
//! come out exactly as `torch.load` sees them. torch (the project's venv) dumps what it
//! reads to safetensors + JSON; the Rust reader must agree bit for bit.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use labram_trainer::checkpoint::{
    self, pickle, Checkpoint, CheckpointError, Format, Item, RawTensor,
};
use proptest::prelude::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name)
}

fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh to create the project's Python environment",
        p.display()
    );
    p
}

fn run_python(script: &str, args: &[&Path]) {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("failed to start the venv's python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Walks what `torch.load` returns and writes every tensor (by tree path) to a
/// safetensors file and every other leaf to JSON.
const DUMP: &str = r#"
import sys, json, argparse, torch
from safetensors.torch import save_file
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
tensors, scalars = {}, {}
def walk(o, p):
    if isinstance(o, torch.Tensor):
        tensors[p] = o.detach().contiguous().clone()
    elif isinstance(o, dict):
        for k, v in o.items():
            walk(v, f"{p}/{k}")
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            walk(v, f"{p}/{i}")
    elif isinstance(o, argparse.Namespace):
        walk(vars(o), p)
    else:
        scalars[p] = o
walk(ck, "")
save_file(tensors, sys.argv[2])
json.dump(scalars, open(sys.argv[3], "w"))
"#;

fn key_str(k: &Item) -> String {
    match k {
        Item::Str(s) => s.clone(),
        Item::Int(i) => i.to_string(),
        Item::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        other => panic!("unexpected key kind {}", other.kind()),
    }
}

fn walk<'a>(
    v: &'a Item,
    p: String,
    tensors: &mut BTreeMap<String, &'a RawTensor>,
    scalars: &mut BTreeMap<String, &'a Item>,
) {
    match v {
        Item::Tensor(t) => {
            tensors.insert(p, t);
        }
        Item::Dict(d) => {
            for (k, x) in d {
                walk(x, format!("{p}/{}", key_str(k)), tensors, scalars);
            }
        }
        Item::List(l) | Item::Tuple(l) => {
            for (i, x) in l.iter().enumerate() {
                walk(x, format!("{p}/{i}"), tensors, scalars);
            }
        }
        Item::Object { state, .. } => walk(state, p, tensors, scalars),
        leaf => {
            scalars.insert(p, leaf);
        }
    }
}

fn scalar_eq(a: &Item, b: &serde_json::Value) -> bool {
    match (a, b) {
        (Item::None, serde_json::Value::Null) => true,
        (Item::Bool(x), serde_json::Value::Bool(y)) => x == y,
        (Item::Int(x), serde_json::Value::Number(n)) => n.as_i64() == Some(*x),
        (Item::Float(x), serde_json::Value::Number(n)) => {
            n.as_f64().map(f64::to_bits) == Some(x.to_bits())
        }
        (Item::Str(x), serde_json::Value::String(y)) => x == y,
        _ => false,
    }
}

/// Load `pth` with torch and with the Rust reader, and compare everything.
fn compare_with_torch(pth: &Path) -> Checkpoint {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("ref.safetensors");
    let js = dir.path().join("ref.json");
    run_python(DUMP, &[pth, &st, &js]);
    let reference = Checkpoint::load(&st).unwrap();
    let ref_scalars: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();

    let ck = Checkpoint::load(pth).unwrap();
    assert_eq!(ck.format, Format::TorchZip);
    let (mut tensors, mut scalars) = (BTreeMap::new(), BTreeMap::new());
    walk(&ck.root, String::new(), &mut tensors, &mut scalars);

    let Item::Dict(ref_entries) = &reference.root else {
        panic!("reference is not a dict")
    };
    assert_eq!(tensors.len(), ref_entries.len(), "tensor count differs");
    for (k, v) in ref_entries {
        let (Item::Str(name), Item::Tensor(want)) = (k, v) else {
            panic!("bad reference entry")
        };
        let got = tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in the Rust reading"));
        assert_eq!(got.dtype, want.dtype, "{name}: dtype");
        assert_eq!(got.shape, want.shape, "{name}: shape");
        assert!(got.bytes == want.bytes, "{name}: bytes differ");
    }
    assert_eq!(
        scalars.keys().collect::<Vec<_>>(),
        ref_scalars.keys().collect::<Vec<_>>(),
        "scalar paths differ"
    );
    for (k, want) in &ref_scalars {
        assert!(
            scalar_eq(scalars[k], want),
            "{k}: {:?} vs {want}",
            scalars[k]
        );
    }
    ck
}

#[test]
fn golden_finetune_checkpoint_is_bit_exact_with_torch() {
    let ck = compare_with_torch(&golden("finetune_base.pth"));
    assert_eq!(ck.epoch(), Some(0));
    assert_eq!(
        ck.arg("model").and_then(Item::as_str),
        Some("labram_base_patch200_200")
    );
    assert_eq!(ck.arg("layer_decay").and_then(Item::as_f64), Some(0.65));
    assert_eq!(ck.arg("nb_classes").and_then(Item::as_int), Some(2));
    let sd = ck.state_dict().unwrap();
    assert_eq!(sd.len(), 223);
    assert_eq!(sd["head.weight"].shape, [2, 200]);
    assert_eq!(sd.values().map(|t| t.numel()).sum::<usize>(), 5_820_338);
    // 0-d optimizer step tensor.
    let step = ck
        .root
        .get("optimizer")
        .and_then(|o| o.get("state"))
        .and_then(|s| match s {
            Item::Dict(d) => d.first().map(|(_, v)| v),
            _ => None,
        })
        .and_then(|e| e.get("step"));
    match step {
        Some(Item::Tensor(t)) => {
            assert!(t.shape.is_empty());
            assert_eq!(t.to_f32().unwrap().data, [1.0]);
        }
        other => panic!("optimizer step: {other:?}"),
    }
}

#[test]
fn golden_pretrain_and_tokenizer_checkpoints_are_bit_exact_with_torch() {
    let ck = compare_with_torch(&golden("pretrain_base.pth"));
    let sd = ck.state_dict().unwrap();
    assert_eq!(sd.len(), 228);
    assert_eq!(sd.values().map(|t| t.numel()).sum::<usize>(), 9_153_520);
    let ck = compare_with_torch(&golden("vqnsp_base.pth"));
    let sd = ck.state_dict().unwrap();
    assert_eq!(sd.len(), 236);
    assert_eq!(sd.values().map(|t| t.numel()).sum::<usize>(), 8_587_601);
    assert_eq!(sd["quantize.embedding.initted"].data, [1.0]);
}

#[test]
fn views_offsets_dtypes_and_odd_root_names_match_torch() {
    let dir = tempfile::tempdir().unwrap();
    // File stem and the archive's root folder differ on purpose.
    let pth = dir.path().join("renamed.pth");
    run_python(
        r#"
import sys, torch
torch.manual_seed(0)
base = torch.randn(6, 5)
obj = {
    "transposed": base.t(),
    "sliced": base[2:, 1:4],
    "strided": base[::2, ::2],
    "expanded": torch.randn(1, 3).expand(4, 3),
    "scalar": torch.tensor(3.5),
    "empty": torch.zeros(0, 4),
    "i64": torch.arange(-3, 7),
    "i32": torch.arange(5, dtype=torch.int32),
    "f16": torch.randn(7).half(),
    "bf16": torch.randn(7).bfloat16(),
    "f64": torch.randn(3, dtype=torch.float64),
    "u8": torch.arange(250, 256, dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "shared_a": base[0],
    "shared_b": base[1],
    "nested": [1, 2.5, "x", None, True, (3, 4), {"k": torch.ones(2)}],
    "big": 2**40 + 1,
    "neg": -70000,
}
torch.save(obj, sys.argv[1])
import zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert names[0].startswith("renamed/"), names
"#,
        &[&pth],
    );
    // torch names the root after the stem; rename the archive file afterwards too.
    let moved = dir.path().join("other_name.bin");
    std::fs::rename(&pth, &moved).unwrap();
    let ck = compare_with_torch(&moved);
    match ck.root.get("big") {
        Some(Item::Int(v)) => assert_eq!(*v, (1i64 << 40) + 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malicious_pickle_is_refused_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("evil.pth");
    let marker = dir.path().join("pwned");
    run_python(
        r#"
import sys, os, pickle, zipfile
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"model": Evil()}, protocol=2))
"#,
        &[&pth, &marker],
    );
    let e = Checkpoint::load(&pth).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CheckpointError::Pickle { .. }), "{msg}");
    assert!(
        msg.contains("posix.system") && msg.contains("evil.pth"),
        "{msg}"
    );
    assert!(!marker.exists(), "the pickle was executed");
}

fn golden_pickle() -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(golden("finetune_base.pth")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut e = z.by_name("checkpoint/data.pkl").unwrap();
    let mut b = Vec::new();
    e.read_to_end(&mut b).unwrap();
    b
}

#[test]
fn golden_pickle_truncated_anywhere_is_an_error() {
    let p = golden_pickle();
    assert!(pickle::parse(&p).is_ok());
    for cut in (0..p.len()).step_by(37) {
        assert!(pickle::parse(&p[..cut]).is_err(), "cut at {cut} parsed");
    }
}

#[test]
fn golden_file_truncated_anywhere_is_an_error() {
    let bytes = std::fs::read(golden("finetune_base.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.pth");
    // A spread of cut points, including inside the central directory at the end.
    let n = bytes.len();
    for cut in [
        0,
        1,
        3,
        100,
        40_000,
        n / 2,
        n - 5000,
        n - 100,
        n - 22,
        n - 1,
    ] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(Checkpoint::load(&p).is_err(), "cut at {cut} loaded");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pickle_reader_never_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pickle::parse(&data);
    }

    #[test]
    fn pickle_reader_never_panics_on_mutated_golden_pickle(
        cut in 0usize..40_000,
        flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 0..8),
    ) {
        let mut p = golden_pickle();
        for (i, b) in flips {
            let i = i % p.len();
            p[i] = b;
        }
        p.truncate(cut.min(p.len()));
        let _ = pickle::parse(&p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_golden_file_never_panics(pos in 0usize..23_364_668, byte in any::<u8>()) {
        let mut bytes = std::fs::read(golden("finetune_base.pth")).unwrap();
        let pos = pos % bytes.len();
        let changed = bytes[pos] != byte;
        bytes[pos] = byte;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.pth");
        std::fs::write(&p, &bytes).unwrap();
        let r = Checkpoint::load(&p);
        // Storage bytes are CRC-checked by the zip reader, so any change is caught
        // unless it lands in zip padding or unused header fields.
        if !changed {
            prop_assert!(r.is_ok());
        }
    }
}

#[test]
fn load_state_dict_detects_format_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let sd = checkpoint::load_state_dict(&golden("pretrain_base.pth")).unwrap();
    let p = dir.path().join("weights.pth"); // safetensors content, misleading extension
    let mut meta = BTreeMap::new();
    meta.insert("source".to_string(), "pretrain_base.pth".to_string());
    checkpoint::save_safetensors(&sd, &meta, &p).unwrap();
    let back = Checkpoint::load(&p).unwrap();
    assert_eq!(back.format, Format::Safetensors);
    assert_eq!(back.metadata, meta);
    assert_eq!(back.state_dict().unwrap(), sd);
}
