//! A small, deterministic ONNX graph builder on top of the [`proto`](super::proto)
//! messages: nodes are appended in topological order, every value gets a name derived
//! from its scope and a running counter, and constants are interned, so building the
//! same network twice gives the same bytes.

use std::collections::BTreeMap;

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};

/// An operator attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// The graph under construction.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
    const_i64: BTreeMap<Vec<i64>, String>,
    const_f32: BTreeMap<u32, String>,
    domains: std::collections::BTreeSet<String>,
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = Some(*i);
            a.r#type = Some(attribute_type::INT);
        }
        Attr::Float(f) => {
            a.f = Some(*f);
            a.r#type = Some(attribute_type::FLOAT);
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            a.r#type = Some(attribute_type::INTS);
        }
    }
    a
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Dimension {
                dim_value: Some(*v),
                dim_param: None,
            },
            Dim::Named(n) => Dimension {
                dim_value: None,
                dim_param: Some((*n).to_string()),
            },
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

impl GraphBuilder {
    /// Declares a float32 graph input.
    pub fn input_f32(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, data_type::FLOAT, dims));
        name.to_string()
    }

    /// Declares an int64 graph input.
    pub fn input_i64(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, data_type::INT64, dims));
        name.to_string()
    }

    /// Declares a float32 graph output, produced by the value `value`.
    pub fn output_f32(&mut self, value: &str, dims: &[Dim]) {
        self.outputs.push(value_info(value, data_type::FLOAT, dims));
    }

    /// Adds a float32 initializer (a weight) under `name`.
    pub fn weight(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type::FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(raw),
        });
        name.to_string()
    }

    /// A float32 initializer shared by several nodes: added on first use only.
    pub fn weight_once(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        if !self
            .initializers
            .iter()
            .any(|t| t.name.as_deref() == Some(name))
        {
            self.weight(name, dims, data);
        }
        name.to_string()
    }

    /// An int64 1-D constant (shapes, axes, indices), shared between its users.
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(n) = self.const_i64.get(values) {
            return n.clone();
        }
        let name = format!("const_i64_{}", self.const_i64.len());
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: Some(data_type::INT64),
            name: Some(name.clone()),
            raw_data: Some(raw),
        });
        self.const_i64.insert(values.to_vec(), name.clone());
        name
    }

    /// A float32 scalar constant, shared between its users.
    pub fn scalar(&mut self, value: f32) -> String {
        if let Some(n) = self.const_f32.get(&value.to_bits()) {
            return n.clone();
        }
        let name = format!("const_f32_{}", self.const_f32.len());
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: Some(data_type::FLOAT),
            name: Some(name.clone()),
            raw_data: Some(value.to_le_bytes().to_vec()),
        });
        self.const_f32.insert(value.to_bits(), name.clone());
        name
    }

    /// Appends a node with one output and returns that output's name.
    pub fn op(&mut self, scope: &str, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.op_multi(scope, op, inputs, attrs, 1).remove(0)
    }

    /// Appends a node with `n_outputs` outputs and returns their names.
    pub fn op_multi(
        &mut self,
        scope: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        n_outputs: usize,
    ) -> Vec<String> {
        self.op_in_domain(scope, "", op, inputs, attrs, n_outputs)
    }

    /// Appends a node of operator `op` from `domain` (`""` is the default ONNX domain)
    /// with `n_outputs` outputs and returns their names.
    pub fn op_in_domain(
        &mut self,
        scope: &str,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        n_outputs: usize,
    ) -> Vec<String> {
        let id = self.counter;
        self.counter += 1;
        let name = format!("{scope}/{op}_{id}");
        let outputs: Vec<String> = if n_outputs == 1 {
            vec![format!("{name}:0")]
        } else {
            (0..n_outputs).map(|i| format!("{name}:{i}")).collect()
        };
        if !domain.is_empty() {
            self.domains.insert(domain.to_string());
        }
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name: Some(name),
            op_type: Some(op.to_string()),
            attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
        });
        outputs
    }

    /// Renames the output of the last node (used for the graph output `logits`).
    pub fn rename_last_output(&mut self, new_name: &str) -> String {
        if let Some(node) = self.nodes.last_mut() {
            if let Some(o) = node.output.first_mut() {
                *o = new_name.to_string();
            }
        }
        new_name.to_string()
    }

    /// Operator domains other than the default one that the graph uses.
    pub fn extra_domains(&self) -> Vec<String> {
        self.domains.iter().cloned().collect()
    }

    /// Finishes the graph.
    pub fn build(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(name.to_string()),
            initializer: self.initializers,
            doc_string: None,
            input: self.inputs,
            output: self.outputs,
            value_info: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn zero_valued_attributes_are_written() {
        // ONNX's checker counts set fields: an `axis = 0` must still be on the wire.
        let a = attribute("axis", &Attr::Int(0));
        let bytes = a.encode_to_vec();
        let back = AttributeProto::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.i, Some(0));
        assert_eq!(back.r#type, Some(attribute_type::INT));
    }

    #[test]
    fn constants_are_interned_and_names_are_deterministic() {
        let build = || {
            let mut g = GraphBuilder::default();
            let x = g.input_f32("x", &[Dim::Named("n"), Dim::Fixed(4)]);
            let s1 = g.ints(&[0, -1]);
            let s2 = g.ints(&[0, -1]);
            assert_eq!(s1, s2);
            let y = g.op("/a", "Reshape", &[&x, &s1], &[]);
            let z = g.op_in_domain("/b", "com.microsoft", "Gelu", &[&y], &[], 1);
            g.output_f32(&z[0], &[Dim::Named("n"), Dim::Fixed(4)]);
            assert_eq!(g.extra_domains(), vec!["com.microsoft".to_string()]);
            g.build("t").encode_to_vec()
        };
        let (a, b) = (build(), build());
        assert_eq!(a, b);
        let graph = GraphProto::decode(a.as_slice()).expect("decode");
        assert_eq!(graph.initializer.len(), 1);
        assert_eq!(graph.node[0].name.as_deref(), Some("/a/Reshape_0"));
        assert_eq!(graph.node[1].domain.as_deref(), Some("com.microsoft"));
    }
}
