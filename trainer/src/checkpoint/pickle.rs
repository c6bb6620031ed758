//! A safe, non-executing reader for the pickle streams inside torch `.pth` files.
//!
//! Python's `pickle` is a small stack machine whose `GLOBAL`/`REDUCE` opcodes import
//! and call arbitrary functions: loading an untrusted `.pth` with it runs code. This
//! module re-implements only the part of the machine that `torch.save` needs to
//! describe tensors, dicts, lists, numbers, strings and a few inert objects. It never
//! calls anything: the handful of allowed globals (see [`AllowedGlobal`]) are
//! interpreted here, by name, as data constructors. Any other opcode or global is
//! refused with an error naming it and its byte offset.
//!
//! Hand-written because no maintained Rust crate offers a pickle reader restricted to
//! an allow-list with torch's persistent storages (`serde-pickle` rejects `GLOBAL`/
//! `BINPERSID`, and `candle`'s reader is tied to its own tensor type).
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Element type of a torch storage, named after the `torch.*Storage` global that
/// announces it in the pickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn from_storage_name(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
}

/// The only globals a pickle may reference. Each is interpreted as data, never called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedGlobal {
    /// `collections.OrderedDict`: an (ordered) dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: an `nn.Parameter`,
    /// read as its tensor.
    RebuildParameter,
    /// `torch.<X>Storage`: only a marker inside a storage's persistent id.
    Storage(DType),
    /// `argparse.Namespace`: an attribute bag (training arguments).
    Namespace,
}

impl AllowedGlobal {
    fn lookup(module: &str, name: &str) -> Option<AllowedGlobal> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(AllowedGlobal::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(AllowedGlobal::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(AllowedGlobal::RebuildParameter),
            ("argparse", "Namespace") => Some(AllowedGlobal::Namespace),
            ("torch", s) => DType::from_storage_name(s).map(AllowedGlobal::Storage),
            _ => None,
        }
    }
}

/// A tensor as described by the pickle: a view into a storage held elsewhere in the
/// archive (`<root>/data/<key>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Storage key (the file name under `data/`).
    pub storage_key: String,
    pub dtype: DType,
    /// Number of elements the storage declares.
    pub storage_numel: u64,
    /// Offset of the first element, in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// Strides in elements (may be 0 for expanded dimensions).
    pub stride: Vec<u64>,
}

/// The object tree rebuilt from a pickle. `T` is how tensors are held: straight from
/// the pickle they are [`TensorRef`]s (views into storages elsewhere in the archive);
/// the checkpoint reader replaces them by materialised tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T = TensorRef> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value<T>>),
    List(Vec<Value<T>>),
    /// Dict entries in insertion order (Python dicts and `OrderedDict`s keep it).
    Dict(Vec<(Value<T>, Value<T>)>),
    Tensor(T),
    /// An inert object: its class (`module.Name`) and the state given to `BUILD`
    /// (for `argparse.Namespace`, a dict of attributes).
    Object {
        class: String,
        state: Box<Value<T>>,
    },
}

impl<T> Value<T> {
    /// Replace every tensor by `f(tensor)`, keeping the tree's shape.
    pub fn try_map_tensors<U, E>(
        self,
        f: &mut impl FnMut(T) -> Result<U, E>,
    ) -> Result<Value<U>, E> {
        Ok(match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(x) => Value::Float(x),
            Value::Str(s) => Value::Str(s),
            Value::Bytes(b) => Value::Bytes(b),
            Value::Tuple(t) => Value::Tuple(
                t.into_iter()
                    .map(|v| v.try_map_tensors(f))
                    .collect::<Result<_, _>>()?,
            ),
            Value::List(t) => Value::List(
                t.into_iter()
                    .map(|v| v.try_map_tensors(f))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Dict(d) => Value::Dict(
                d.into_iter()
                    .map(|(k, v)| Ok((k.try_map_tensors(f)?, v.try_map_tensors(f)?)))
                    .collect::<Result<_, E>>()?,
            ),
            Value::Tensor(t) => Value::Tensor(f(t)?),
            Value::Object { class, state } => Value::Object {
                class,
                state: Box::new(state.try_map_tensors(f)?),
            },
        })
    }

    /// Call `f` on every tensor of the tree, in order.
    pub fn visit_tensors(&self, f: &mut impl FnMut(&T)) {
        match self {
            Value::Tuple(t) | Value::List(t) => t.iter().for_each(|v| v.visit_tensors(f)),
            Value::Dict(d) => d.iter().for_each(|(k, v)| {
                k.visit_tensors(f);
                v.visit_tensors(f);
            }),
            Value::Tensor(t) => f(t),
            Value::Object { state, .. } => state.visit_tensors(f),
            _ => {}
        }
    }

    /// The value under string key `key`, if `self` is a dict (or an object whose
    /// state is one, such as `argparse.Namespace`).
    pub fn get(&self, key: &str) -> Option<&Value<T>> {
        match self {
            Value::Dict(d) => d.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                _ => None,
            }),
            Value::Object { state, .. } => state.get(key),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Object { .. } => "object",
        }
    }
}

/// Why a pickle stream was refused. Offsets are byte positions in the stream.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleError {
    #[error("pickle opcode {name} (0x{code:02x}) at byte {pos} is not allowed: only the opcodes torch.save needs for tensors, containers, numbers and strings are accepted")]
    RefusedOpcode {
        code: u8,
        name: &'static str,
        pos: usize,
    },
    #[error("pickle global `{module}.{name}` at byte {pos} is not allowed (allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage, argparse.Namespace); the file may be malicious or was saved with objects that are not plain tensors: re-save it as a state dict")]
    RefusedGlobal {
        module: String,
        name: String,
        pos: usize,
    },
    #[error("pickle stream ends early at byte {pos} (truncated or corrupt file)")]
    Truncated { pos: usize },
    #[error("pickle stream is malformed at byte {pos}: {detail}")]
    Malformed { pos: usize, detail: String },
    #[error("pickle stream has no STOP opcode")]
    NoStop,
}

fn opcode_name(code: u8) -> &'static str {
    match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "UNKNOWN",
    }
}

/// Hashable form of a dict key, so that `SETITEM` on an existing key replaces it in
/// O(1) like Python does (instead of a quadratic scan an adversarial file could exploit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HashKey {
    None,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<HashKey>),
}

#[derive(Debug, Default)]
struct DictV {
    items: Vec<(V, V)>,
    index: HashMap<HashKey, usize>,
}

/// A torch storage named by a persistent id.
#[derive(Debug, Clone)]
struct StorageV {
    key: String,
    dtype: DType,
    numel: u64,
}

/// Values on the machine's stack. Lists, dicts and objects are shared and mutable,
/// exactly as in Python, because the memo may hold them before they are filled.
#[derive(Debug, Clone)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<V>>),
    List(Rc<RefCell<Vec<V>>>),
    Dict(Rc<RefCell<DictV>>),
    Global(AllowedGlobal),
    Storage(Rc<StorageV>),
    Tensor(Rc<TensorRef>),
    Object(Rc<RefCell<ObjectV>>),
}

#[derive(Debug)]
struct ObjectV {
    class: &'static str,
    state: Option<V>,
}

impl V {
    fn kind(&self) -> &'static str {
        match self {
            V::None => "None",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "float",
            V::Str(_) => "str",
            V::Bytes(_) => "bytes",
            V::Tuple(_) => "tuple",
            V::List(_) => "list",
            V::Dict(_) => "dict",
            V::Global(_) => "global",
            V::Storage(_) => "storage",
            V::Tensor(_) => "tensor",
            V::Object(_) => "object",
        }
    }

    fn hash_key(&self, depth: usize) -> Option<HashKey> {
        if depth > 32 {
            return None;
        }
        Some(match self {
            V::None => HashKey::None,
            V::Bool(b) => HashKey::Bool(*b),
            V::Int(i) => HashKey::Int(*i),
            V::Float(f) => HashKey::Float(f.to_bits()),
            V::Str(s) => HashKey::Str(s.clone()),
            V::Bytes(b) => HashKey::Bytes(b.clone()),
            V::Tuple(t) => HashKey::Tuple(
                t.iter()
                    .map(|v| v.hash_key(depth + 1))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }
}

/// Upper bounds that keep a hostile stream from exhausting memory or the call stack
/// while the shared object graph is turned into an owned tree.
const MAX_DEPTH: usize = 200;
const MAX_NODES: usize = 5_000_000;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
}

impl<'a> Machine<'a> {
    fn err(&self, detail: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            pos: self.pos,
            detail: detail.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated { pos: self.pos })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| PickleError::Truncated { pos: self.pos })
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated { pos: self.pos })?;
        let s = std::str::from_utf8(&rest[..nl]).map_err(|_| self.err("non-UTF-8 text line"))?;
        self.pos += nl + 1;
        Ok(s)
    }

    fn utf8(&self, b: &[u8]) -> Result<Rc<str>, PickleError> {
        std::str::from_utf8(b)
            .map(Rc::from)
            .map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn pop(&mut self) -> Result<V, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&mut self) -> Result<&mut V, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        let pos = self.pos;
        self.stack.last_mut().ok_or(PickleError::Malformed {
            pos,
            detail: "stack underflow".into(),
        })
    }

    fn pop_mark(&mut self) -> Result<Vec<V>, PickleError> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK"))?;
        if m > self.stack.len() {
            return Err(self.err("MARK beyond stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {idx} is not defined")))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, dict: &V, pairs: Vec<V>) -> Result<(), PickleError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        let V::Dict(d) = dict else {
            return Err(self.err(format!("SETITEM(S) on a {}, not a dict", dict.kind())));
        };
        let mut d = d.borrow_mut();
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let hk = k.hash_key(0).ok_or_else(|| {
                self.err(format!("dict key of type {} is not supported", k.kind()))
            })?;
            match d.index.get(&hk) {
                Some(&i) => d.items[i].1 = v,
                None => {
                    let i = d.items.len();
                    d.index.insert(hk, i);
                    d.items.push((k, v));
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, list: &V, items: Vec<V>) -> Result<(), PickleError> {
        let V::List(l) = list else {
            return Err(self.err(format!("APPEND(S) on a {}, not a list", list.kind())));
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str, pos: usize) -> Result<(), PickleError> {
        match AllowedGlobal::lookup(module, name) {
            Some(g) => {
                self.stack.push(V::Global(g));
                Ok(())
            }
            None => Err(PickleError::RefusedGlobal {
                module: module.to_string(),
                name: name.to_string(),
                pos,
            }),
        }
    }

    /// `BINPERSID`: torch names each storage `('storage', torch.XStorage, key, location, numel)`.
    fn persistent_load(&mut self, pid: V) -> Result<V, PickleError> {
        let bad = |m: &Self| {
            m.err("persistent id is not ('storage', torch.<T>Storage, key, location, numel)")
        };
        let V::Tuple(t) = pid else {
            return Err(bad(self));
        };
        let [V::Str(tag), V::Global(AllowedGlobal::Storage(dtype)), V::Str(key), V::Str(_location), V::Int(numel)] =
            t.as_slice()
        else {
            return Err(bad(self));
        };
        if &**tag != "storage" || *numel < 0 {
            return Err(bad(self));
        }
        if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
            return Err(self.err(format!("storage key {key:?} is not a plain file name")));
        }
        Ok(V::Storage(Rc::new(StorageV {
            key: key.to_string(),
            dtype: *dtype,
            numel: *numel as u64,
        })))
    }

    fn int_tuple(&self, v: &V, what: &str) -> Result<Vec<u64>, PickleError> {
        let V::Tuple(t) = v else {
            return Err(self.err(format!("tensor {what} is a {}, not a tuple", v.kind())));
        };
        t.iter()
            .map(|x| match x {
                V::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => Err(self.err(format!("tensor {what} holds a non-negative-int entry"))),
            })
            .collect()
    }

    /// `REDUCE`: apply one of the allowed constructors to its argument tuple.
    fn reduce(&mut self, func: V, args: V) -> Result<V, PickleError> {
        let V::Tuple(args) = args else {
            return Err(self.err(format!(
                "REDUCE arguments are a {}, not a tuple",
                args.kind()
            )));
        };
        match func {
            V::Global(AllowedGlobal::OrderedDict) => {
                let d = V::Dict(Rc::new(RefCell::new(DictV::default())));
                match args.as_slice() {
                    [] => {}
                    [V::List(items)] => {
                        let items = items.borrow().clone();
                        for it in items {
                            let V::Tuple(p) = it else {
                                return Err(self.err("OrderedDict item is not a pair"));
                            };
                            if p.len() != 2 {
                                return Err(self.err("OrderedDict item is not a pair"));
                            }
                            self.set_items(&d, vec![p[0].clone(), p[1].clone()])?;
                        }
                    }
                    _ => return Err(self.err("OrderedDict called with unexpected arguments")),
                }
                Ok(d)
            }
            V::Global(AllowedGlobal::RebuildTensorV2) => {
                if args.len() < 6 || args.len() > 7 {
                    return Err(self.err(format!(
                        "_rebuild_tensor_v2 expects 6 or 7 arguments, got {}",
                        args.len()
                    )));
                }
                let V::Storage(st) = &args[0] else {
                    return Err(self.err("_rebuild_tensor_v2: first argument is not a storage"));
                };
                let V::Int(offset) = args[1] else {
                    return Err(self.err("_rebuild_tensor_v2: storage offset is not an int"));
                };
                if offset < 0 {
                    return Err(self.err("_rebuild_tensor_v2: negative storage offset"));
                }
                let shape = self.int_tuple(&args[2], "size")?;
                let stride = self.int_tuple(&args[3], "stride")?;
                if shape.len() != stride.len() {
                    return Err(self.err("_rebuild_tensor_v2: size and stride differ in length"));
                }
                Ok(V::Tensor(Rc::new(TensorRef {
                    storage_key: st.key.clone(),
                    dtype: st.dtype,
                    storage_numel: st.numel,
                    offset: offset as u64,
                    shape,
                    stride,
                })))
            }
            V::Global(AllowedGlobal::RebuildParameter) => match args.first() {
                Some(t @ V::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter: first argument is not a tensor")),
            },
            V::Global(g) => Err(self.err(format!("REDUCE on {g:?}, which is not callable here"))),
            other => Err(self.err(format!(
                "REDUCE on a {}, not an allowed global",
                other.kind()
            ))),
        }
    }

    fn run(mut self) -> Result<V, PickleError> {
        loop {
            let op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("pickle protocol {p} is unknown")));
                    }
                }
                0x95 => {
                    // FRAME: only a length prefix; the content follows inline.
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(V::None),
                0x88 => self.stack.push(V::Bool(true)),
                0x89 => self.stack.push(V::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(V::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(V::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(V::Int(v as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement, n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err("integer wider than 64 bits"));
                    }
                    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    a[..n].copy_from_slice(b);
                    self.stack.push(V::Int(i64::from_le_bytes(a)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(V::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(V::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(V::Str(s));
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(V::Str(s));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(V::Bytes(Rc::from(b)));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(V::Bytes(Rc::from(b)));
                }
                0x8e => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    self.stack.push(V::Bytes(Rc::from(b)));
                }
                b'}' => self
                    .stack
                    .push(V::Dict(Rc::new(RefCell::new(DictV::default())))),
                b']' => self.stack.push(V::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(V::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(V::Tuple(Rc::new(items)));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?.clone();
                    self.set_items(&d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?.clone();
                    self.set_items(&d, items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?.clone();
                    self.append(&l, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let l = self.top()?.clone();
                    self.append(&l, items)?;
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i =
                        u32::try_from(self.memo.len()).map_err(|_| self.err("memo too large"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name, op_pos)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (V::Str(m), V::Str(n)) => self.global(&m, &n, op_pos)?,
                        _ => return Err(self.err("STACK_GLOBAL operands are not strings")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let st = self.persistent_load(pid)?;
                    self.stack.push(st);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); only argparse.Namespace.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    match (&cls, &args) {
                        (V::Global(AllowedGlobal::Namespace), V::Tuple(a)) if a.is_empty() => {
                            self.stack.push(V::Object(Rc::new(RefCell::new(ObjectV {
                                class: "argparse.Namespace",
                                state: None,
                            }))));
                        }
                        (V::Global(AllowedGlobal::OrderedDict), V::Tuple(a)) if a.is_empty() => {
                            self.stack
                                .push(V::Dict(Rc::new(RefCell::new(DictV::default()))));
                        }
                        _ => {
                            return Err(self.err(format!(
                                "NEWOBJ on a {} is not allowed (only argparse.Namespace())",
                                cls.kind()
                            )))
                        }
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    match &target {
                        V::Object(o) => o.borrow_mut().state = Some(state),
                        // An OrderedDict's BUILD carries instance attributes such as
                        // torch's `_metadata` (per-module version numbers); they do not
                        // change any tensor, so they are dropped.
                        V::Dict(_) => {}
                        other => {
                            return Err(
                                self.err(format!("BUILD on a {} is not allowed", other.kind()))
                            )
                        }
                    }
                }
                other => {
                    return Err(PickleError::RefusedOpcode {
                        code: other,
                        name: opcode_name(other),
                        pos: op_pos,
                    })
                }
            }
        }
    }
}

/// Turn the shared object graph into an owned tree, refusing cycles (by depth) and
/// blow-ups through shared sub-objects (by a node budget).
fn to_owned(v: &V, depth: usize, budget: &mut usize) -> Result<Value, PickleError> {
    let fail = |d: &str| PickleError::Malformed {
        pos: 0,
        detail: d.to_string(),
    };
    if depth > MAX_DEPTH {
        return Err(fail("object nesting is too deep (cyclic structure?)"));
    }
    if *budget == 0 {
        return Err(fail("object graph expands to too many nodes"));
    }
    *budget -= 1;
    let rec = |x: &V, budget: &mut usize| to_owned(x, depth + 1, budget);
    Ok(match v {
        V::None => Value::None,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::Int(*i),
        V::Float(f) => Value::Float(*f),
        V::Str(s) => Value::Str(s.to_string()),
        V::Bytes(b) => Value::Bytes(b.to_vec()),
        V::Tuple(t) => Value::Tuple(t.iter().map(|x| rec(x, budget)).collect::<Result<_, _>>()?),
        V::List(l) => Value::List(
            l.borrow()
                .iter()
                .map(|x| rec(x, budget))
                .collect::<Result<_, _>>()?,
        ),
        V::Dict(d) => Value::Dict(
            d.borrow()
                .items
                .iter()
                .map(|(k, x)| Ok((rec(k, budget)?, rec(x, budget)?)))
                .collect::<Result<_, PickleError>>()?,
        ),
        V::Tensor(t) => Value::Tensor((**t).clone()),
        V::Object(o) => {
            let o = o.borrow();
            Value::Object {
                class: o.class.to_string(),
                state: Box::new(match &o.state {
                    Some(s) => rec(s, budget)?,
                    None => Value::Dict(Vec::new()),
                }),
            }
        }
        V::Global(g) => return Err(fail(&format!("a bare global ({g:?}) is left in the data"))),
        V::Storage(s) => {
            return Err(fail(&format!(
                "a bare storage ({}) is left in the data",
                s.key
            )))
        }
    })
}

/// Parse a pickle stream into an owned object tree without executing anything.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    let m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let v = m.run()?;
    let mut budget = MAX_NODES;
    to_owned(&v, 0, &mut budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ('echo hi',)), protocol 2.
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"cposix\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.");
        let e = parse(&p).unwrap_err();
        assert!(
            matches!(&e, PickleError::RefusedGlobal { module, name, pos: 2 } if module == "posix" && name == "system"),
            "{e}"
        );
        assert!(e.to_string().contains("posix.system"));
    }

    #[test]
    fn refuses_inst_opcode() {
        let p = b"\x80\x02(i__builtin__\nobject\n.";
        let e = parse(p).unwrap_err();
        assert!(
            matches!(e, PickleError::RefusedOpcode { name: "INST", .. }),
            "{e}"
        );
    }

    #[test]
    fn memoized_dict_filled_after_put_is_shared() {
        // d = {}; memo[0] = d; d['a'] = 1; result = (d, memo[0])
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01sh\x00\x86.";
        let v = parse(p).unwrap();
        let d = Value::Dict(vec![(Value::Str("a".into()), Value::Int(1))]);
        assert_eq!(v, Value::Tuple(vec![d.clone(), d]));
    }

    #[test]
    fn long1_and_floats() {
        // LONG1 of -2 (1 byte 0xfe), BINFLOAT 1.5, tuple2
        let mut p = vec![0x80, 2, 0x8a, 1, 0xfe, b'G'];
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(&[0x86, b'.']);
        assert_eq!(
            parse(&p).unwrap(),
            Value::Tuple(vec![Value::Int(-2), Value::Float(1.5)])
        );
    }

    #[test]
    fn cyclic_list_is_an_error_not_a_crash() {
        // l = []; memo[0] = l; l.append(l)
        let p = b"\x80\x02]q\x00h\x00a.";
        assert!(parse(p).is_err());
    }

    #[test]
    fn truncated_streams_error() {
        let p = b"\x80\x02}q\x00X\x05\x00\x00\x00ab";
        assert!(matches!(parse(p), Err(PickleError::Truncated { .. })));
        assert!(parse(b"").is_err());
        assert!(parse(b"\x80\x02}").is_err());
    }
}
