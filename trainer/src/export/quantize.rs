//! Dynamic int8 quantization of an exported model's weight matrices.
//!
//! Every `MatMul` whose right operand is a 2-D float initializer (the Linear
//! layers: qkv, proj, fc1, fc2, head; not the attention products of two
//! activations) becomes the pattern ONNX Runtime fuses into one
//! `DynamicQuantizeMatMul` kernel (VNNI int8 dot products on x86):
//!
//! ```text
//! x ─ DynamicQuantizeLinear ─┬ x_q ─ MatMulInteger(x_q, W_q, x_zp, 0) ─ Cast(float) ─ Mul ─ y
//!                            ├ x_scale ─────────── Mul(x_scale, W_scale) ────────────┘
//!                            └ x_zp
//! ```
//!
//! Weights: symmetric per-tensor int8 (`W_q = round(W / s)`, `s = max|W| / 127`,
//! zero point 0), as `onnxruntime.quantization.quantize_dynamic` does by default;
//! activations: per-tensor uint8 with a scale and zero point computed at run
//! time, so no calibration data is needed.
//!
//! Why: on the 2-core machines of BENCHMARKS.md the matrix products are most of
//! LaBraM-Base's time, and int8 halves it (the whole window runs at ~0.6× the
//! float export's time) while the file shrinks ~4× (weights are 1 byte). The
//! outputs move by ~1e-2 relative: the eegmat test metrics of the shipped model
//! did not change in the third decimal. The float model stays the reference;
//! this is an opt-in step after `export`.

use std::collections::{HashMap, HashSet};

use super::proto::{attribute_type, data_type, AttributeProto, ModelProto, NodeProto, TensorProto};
use super::ExportError;

/// What [`quantize_int8`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeReport {
    /// `MatMul`s rewritten (weights quantized).
    pub matmuls: usize,
    /// Float weight values replaced by int8 ones.
    pub weights: usize,
    /// The largest relative rounding error of a weight matrix (RMS error / RMS value).
    pub worst_weight_error: f64,
}

fn node(name: String, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name),
        op_type: Some(op.to_string()),
        attribute: Vec::new(),
        domain: None,
    }
}

fn scalar(name: String, dtype: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: Vec::new(),
        data_type: Some(dtype),
        name: Some(name),
        raw_data: Some(raw),
    }
}

/// The float values of a 2-D FLOAT initializer stored as `raw_data`.
fn float_matrix(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != Some(data_type::FLOAT) || t.dims.len() != 2 {
        return None;
    }
    let raw = t.raw_data.as_ref()?;
    let n = usize::try_from(t.dims[0] * t.dims[1]).ok()?;
    if raw.len() != 4 * n {
        return None;
    }
    Some(
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Symmetric per-tensor int8: (values, scale, relative RMS error).
fn quantize(w: &[f32]) -> (Vec<i8>, f32, f64) {
    let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let q: Vec<i8> = w
        .iter()
        .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let (mut err, mut sum) = (0.0f64, 0.0f64);
    for (&v, &qv) in w.iter().zip(&q) {
        let d = v as f64 - qv as f64 * scale as f64;
        err += d * d;
        sum += v as f64 * v as f64;
    }
    let rel = if sum > 0.0 { (err / sum).sqrt() } else { 0.0 };
    (q, scale, rel)
}

/// Rewrites `model` in place (see the module documentation). A model with no
/// weight `MatMul` (not a LaBraM export, or quantized already) is an error.
pub fn quantize_int8(model: &mut ModelProto) -> Result<QuantizeReport, ExportError> {
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Internal("the model has no graph".into()))?;
    let index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.name.clone().map(|n| (n, i)))
        .collect();
    let mut report = QuantizeReport {
        matmuls: 0,
        weights: 0,
        worst_weight_error: 0.0,
    };
    let mut replaced: HashSet<String> = HashSet::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);
    for n in std::mem::take(&mut graph.node) {
        let weight = (n.op_type.as_deref() == Some("MatMul") && n.input.len() == 2)
            .then(|| n.input[1].clone())
            .filter(|w| index.contains_key(w));
        let values = weight
            .as_ref()
            .and_then(|w| float_matrix(&graph.initializer[index[w]]));
        let (Some(w), Some(values)) = (weight, values) else {
            nodes.push(n);
            continue;
        };
        let dims = graph.initializer[index[&w]].dims.clone();
        let (q, scale, rel) = quantize(&values);
        report.matmuls += 1;
        report.weights += q.len();
        report.worst_weight_error = report.worst_weight_error.max(rel);
        let base = n.name.clone().unwrap_or_else(|| w.clone());
        let (wq, ws, wz) = (
            format!("{w}_quantized"),
            format!("{w}_scale"),
            format!("{w}_zero_point"),
        );
        if replaced.insert(w.clone()) {
            new_inits.push(TensorProto {
                dims,
                data_type: Some(data_type::INT8),
                name: Some(wq.clone()),
                raw_data: Some(q.iter().map(|&v| v as u8).collect()),
            });
            new_inits.push(scalar(
                ws.clone(),
                data_type::FLOAT,
                scale.to_le_bytes().to_vec(),
            ));
            new_inits.push(scalar(wz.clone(), data_type::INT8, vec![0]));
        }
        let x = n.input[0].as_str();
        let y = n
            .output
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{base}/out"));
        let (xq, xs, xz) = (
            format!("{base}/x_quantized"),
            format!("{base}/x_scale"),
            format!("{base}/x_zero_point"),
        );
        let (yi, yf, s) = (
            format!("{base}/y_int32"),
            format!("{base}/y_float"),
            format!("{base}/scale"),
        );
        nodes.push(node(
            format!("{base}/quantize"),
            "DynamicQuantizeLinear",
            &[x],
            &[&xq, &xs, &xz],
        ));
        nodes.push(node(
            format!("{base}/matmul_int"),
            "MatMulInteger",
            &[&xq, &wq, &xz, &wz],
            &[&yi],
        ));
        let mut cast = node(format!("{base}/cast"), "Cast", &[&yi], &[&yf]);
        cast.attribute.push(AttributeProto {
            name: Some("to".into()),
            i: Some(data_type::FLOAT as i64),
            r#type: Some(attribute_type::INT),
            ..Default::default()
        });
        nodes.push(cast);
        nodes.push(node(format!("{base}/scales"), "Mul", &[&xs, &ws], &[&s]));
        nodes.push(node(format!("{base}/rescale"), "Mul", &[&yf, &s], &[&y]));
    }
    if report.matmuls == 0 {
        graph.node = nodes;
        return Err(ExportError::Internal(
            "no MatMul with a float weight matrix found: is this a labram-trainer export, and not quantized already?".into(),
        ));
    }
    // Float weights that nothing reads any more go; shared ones stay.
    let still_used: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let drop: HashSet<String> = replaced
        .iter()
        .filter(|w| !still_used.contains(w.as_str()))
        .cloned()
        .collect();
    graph
        .initializer
        .retain(|t| t.name.as_ref().is_none_or(|n| !drop.contains(n)));
    graph.initializer.extend(new_inits);
    graph.node = nodes;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_int8_rounding() {
        let (q, s, rel) = quantize(&[0.0, 1.27, -1.27, 0.5]);
        assert!((s - 0.01).abs() < 1e-7, "{s}");
        assert_eq!(q, vec![0, 127, -127, 50]);
        assert!(rel < 1e-6, "{rel}");
        let (q, s, _) = quantize(&[0.0, 0.0]);
        assert_eq!((q, s), (vec![0, 0], 1.0));
    }

    fn matmul_model() -> ModelProto {
        let w: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        ModelProto {
            graph: Some(super::super::proto::GraphProto {
                node: vec![
                    node("mm".into(), "MatMul", &["x", "w"], &["y"]),
                    node("aa".into(), "MatMul", &["y", "y"], &["z"]),
                ],
                initializer: vec![TensorProto {
                    dims: vec![2, 2],
                    data_type: Some(data_type::FLOAT),
                    name: Some("w".into()),
                    raw_data: Some(w),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rewrites_weight_matmuls_only() {
        let mut m = matmul_model();
        let r = quantize_int8(&mut m).unwrap();
        assert_eq!((r.matmuls, r.weights), (1, 4));
        let g = m.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
        assert_eq!(
            ops,
            [
                "DynamicQuantizeLinear",
                "MatMulInteger",
                "Cast",
                "Mul",
                "Mul",
                "MatMul"
            ]
        );
        // The activation product keeps its inputs; the rewritten one still ends in `y`.
        assert_eq!(g.node[4].output, vec!["y".to_string()]);
        assert_eq!(g.node[5].input, vec!["y".to_string(), "y".to_string()]);
        let names: Vec<&str> = g
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        assert_eq!(names, ["w_quantized", "w_scale", "w_zero_point"]);
        let q = g.initializer[0].raw_data.as_ref().unwrap();
        // scale 4/127: 1 -> 32 (31.75), -2 -> -64 (-63.5 rounds away), 0.5 -> 16, 4 -> 127
        assert_eq!(q, &vec![32u8, (-64i8) as u8, 16, 127]);
        // Quantizing again finds nothing to do.
        assert!(quantize_int8(&mut m).is_err());
    }
}
