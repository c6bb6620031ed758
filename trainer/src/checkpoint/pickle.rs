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
//! # Bounded for any input
//! The stream is untrusted, so memory and stack stay bounded whatever it holds:
//! * the machine executes at most [`MAX_WORK`] units of work (one per opcode, plus
//!   one per item an opcode copies, such as `OrderedDict(list)` or a tuple dict
//!   key), so its memory is linear in the stream plus a fixed budget;
//! * the shared object graph it builds may be arbitrarily deep (200,000 nested
//!   lists are 400 KB): it is never walked or dropped recursively. Containers free
//!   their children through an explicit work list (`release`), and when parsing
//!   ends every container still reachable is emptied the same way, which also
//!   frees reference cycles (`Machine`'s `Drop`);
//! * the owned tree handed out ([`Value`]) is at most [`MAX_DEPTH`] levels deep and
//!   at most [`MAX_NODES`] nodes and [`MAX_OWNED_BYTES`] bytes, so the recursive
//!   derives on it (`Drop`, `Clone`, `Debug`, `PartialEq`) and
//!   [`Value::try_map_tensors`] / [`Value::visit_tensors`] stay a few hundred
//!   frames deep.
//!
//! Fuzzed (`fuzz/fuzz_targets/pickle.rs`, which compiles this file in, with a depth
//! amplifier) and tested on a 1 MiB stack.
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
///
/// Its derives and walks recurse: that is safe because [`parse`] never builds a tree
/// deeper than [`MAX_DEPTH`] (a hostile stream's depth lives only in the machine's
/// internal graph, which is freed iteratively).
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

#[derive(Default)]
struct DictV {
    items: Vec<(V, V)>,
    index: HashMap<HashKey, usize>,
}

impl Drop for DictV {
    /// Frees the entries without recursing (see [`release`]).
    fn drop(&mut self) {
        let mut work = Vec::with_capacity(self.items.len() * 2);
        for (k, v) in self.items.drain(..) {
            work.push(k);
            work.push(v);
        }
        release(work);
    }
}

/// The elements of a tuple or list. Its own type so that dropping it frees a
/// deeply nested graph with an explicit work list instead of the call stack.
#[derive(Clone, Default)]
struct Items(Vec<V>);

impl std::ops::Deref for Items {
    type Target = Vec<V>;
    fn deref(&self) -> &Vec<V> {
        &self.0
    }
}

impl std::ops::DerefMut for Items {
    fn deref_mut(&mut self) -> &mut Vec<V> {
        &mut self.0
    }
}

impl Drop for Items {
    /// Frees the elements without recursing (see [`release`]).
    fn drop(&mut self) {
        release(std::mem::take(&mut self.0));
    }
}

/// A torch storage named by a persistent id.
struct StorageV {
    key: String,
    dtype: DType,
    numel: u64,
}

/// Values on the machine's stack. Lists, dicts and objects are shared and mutable,
/// exactly as in Python, because the memo may hold them before they are filled.
///
/// Deliberately not `Debug`: a derived `Debug` would recurse through a graph of
/// any depth. Error messages use [`V::kind`].
#[derive(Clone)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<DictV>>),
    Global(AllowedGlobal),
    Storage(Rc<StorageV>),
    Tensor(Rc<TensorRef>),
    Object(Rc<RefCell<ObjectV>>),
}

struct ObjectV {
    class: &'static str,
    state: Option<V>,
}

impl Drop for ObjectV {
    /// Frees the state without recursing (see [`release`]).
    fn drop(&mut self) {
        release(self.state.take().into_iter().collect());
    }
}

/// Frees values whose containers may nest arbitrarily deep, with an explicit work
/// list: a container this list holds the last reference to is emptied into the
/// list before its handle is dropped, so every drop that runs is of an empty
/// container (or of a shared one, which only decrements a count). Stack use is
/// constant and time linear in the number of values freed.
fn release(mut work: Vec<V>) {
    while let Some(v) = work.pop() {
        match v {
            V::Tuple(mut t) => {
                if let Some(items) = Rc::get_mut(&mut t) {
                    work.append(&mut items.0);
                }
            }
            V::List(mut l) => {
                if let Some(items) = Rc::get_mut(&mut l) {
                    work.append(&mut items.get_mut().0);
                }
            }
            V::Dict(mut d) => {
                if let Some(d) = Rc::get_mut(&mut d) {
                    let d = d.get_mut();
                    d.index.clear();
                    for (k, v) in d.items.drain(..) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            V::Object(mut o) => {
                if let Some(o) = Rc::get_mut(&mut o) {
                    work.extend(o.get_mut().state.take());
                }
            }
            _ => {}
        }
    }
}

/// Frees a whole graph, shared parts and reference cycles included (a list that
/// holds itself is never the last owner of itself, so [`release`] alone would
/// leak it): every list, dict and object reachable from `roots` is emptied.
/// Shared tuples are looked into once each (they are immutable, so they cannot
/// be emptied while shared, but may hold the lists of a cycle).
fn teardown(mut work: Vec<V>) {
    let mut seen_tuples: std::collections::HashSet<*const Items> = Default::default();
    while let Some(v) = work.pop() {
        match v {
            V::Tuple(mut t) => match Rc::get_mut(&mut t) {
                Some(items) => work.append(&mut items.0),
                None => {
                    if seen_tuples.insert(Rc::as_ptr(&t)) {
                        work.extend(t.iter().cloned());
                    }
                }
            },
            V::List(l) => {
                if let Ok(mut items) = l.try_borrow_mut() {
                    work.append(&mut items.0);
                }
            }
            V::Dict(d) => {
                if let Ok(mut d) = d.try_borrow_mut() {
                    d.index.clear();
                    for (k, v) in d.items.drain(..) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            V::Object(o) => {
                if let Ok(mut o) = o.try_borrow_mut() {
                    work.extend(o.state.take());
                }
            }
            _ => {}
        }
    }
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

    /// The hashable form of a dict key, or None for a key that is not hashable
    /// here (or is a tuple nested deeper than 32 or larger than [`MAX_KEY_NODES`]
    /// nodes: a tuple of shared tuples would otherwise expand exponentially).
    /// `nodes` counts the nodes built so far.
    fn hash_key(&self, depth: usize, nodes: &mut usize) -> Option<HashKey> {
        if depth > 32 || *nodes >= MAX_KEY_NODES {
            return None;
        }
        *nodes += 1;
        Some(match self {
            V::None => HashKey::None,
            V::Bool(b) => HashKey::Bool(*b),
            V::Int(i) => HashKey::Int(*i),
            V::Float(f) => HashKey::Float(f.to_bits()),
            V::Str(s) => HashKey::Str(s.clone()),
            V::Bytes(b) => HashKey::Bytes(b.clone()),
            V::Tuple(t) => HashKey::Tuple(
                t.iter()
                    .map(|v| v.hash_key(depth + 1, nodes))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }
}

/// Upper bounds that keep a hostile stream from exhausting memory or the call stack
/// while the shared object graph is turned into an owned tree: its depth, its node
/// count and its bytes (strings, bytes, tensor shapes; a string shared a million
/// times through the memo is copied a million times). `torch.save` files of the
/// official models are a few levels deep and a few ten thousand nodes.
pub const MAX_DEPTH: usize = 200;
pub const MAX_NODES: usize = 5_000_000;
pub const MAX_OWNED_BYTES: usize = 1 << 30;
/// Work the machine may do (one unit per opcode, plus one per item an opcode
/// copies): bounds its memory (each unit allocates at most a stack slot, a memo
/// entry or an empty container, about 100 bytes) beyond the stream's own size.
/// The golden LaBraM-base checkpoints take about 9,000 opcodes; a full training
/// checkpoint with Adam's state about four times that.
pub const MAX_WORK: usize = 5_000_000;
/// Nodes of one dict key (nested tuples).
const MAX_KEY_NODES: usize = 4096;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
    /// Work units left (see [`MAX_WORK`]).
    work_left: usize,
}

impl Drop for Machine<'_> {
    /// Frees everything the machine still holds without recursing, cycles included.
    fn drop(&mut self) {
        let mut roots = std::mem::take(&mut self.stack);
        roots.extend(self.memo.drain().map(|(_, v)| v));
        teardown(roots);
    }
}

impl<'a> Machine<'a> {
    fn err(&self, detail: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            pos: self.pos,
            detail: detail.into(),
        }
    }

    /// Spends `units` of the work budget ([`MAX_WORK`]).
    fn spend(&mut self, units: usize) -> Result<(), PickleError> {
        match self.work_left.checked_sub(units) {
            Some(left) => {
                self.work_left = left;
                Ok(())
            }
            None => Err(self.err(format!(
                "the stream needs more than {MAX_WORK} steps to unpickle, far more than any torch.save file: refused as a resource exhaustion attempt"
            ))),
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
            let mut nodes = 0;
            let hk = k.hash_key(0, &mut nodes);
            self.spend(nodes)?;
            let hk = hk.ok_or_else(|| {
                self.err(format!(
                    "dict key of type {} is not supported (or is a tuple nested deeper than 32 or larger than {MAX_KEY_NODES} items)",
                    k.kind()
                ))
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
                        self.spend(items.len())?;
                        for it in items.iter() {
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

    fn run(&mut self) -> Result<V, PickleError> {
        loop {
            let op_pos = self.pos;
            let op = self.u8()?;
            self.spend(1)?;
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
                b']' => self
                    .stack
                    .push(V::List(Rc::new(RefCell::new(Items::default())))),
                b')' => self.stack.push(V::Tuple(Rc::new(Items::default()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::Tuple(Rc::new(Items(items))));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(V::Tuple(Rc::new(Items(items))));
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

/// What [`to_owned`] may still build: nodes and bytes.
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    /// Charges one node holding `payload` bytes besides the node itself.
    fn charge(&mut self, payload: usize) -> Result<(), PickleError> {
        let fail = |d: String| PickleError::Malformed { pos: 0, detail: d };
        if self.nodes == 0 {
            return Err(fail(format!(
                "object graph expands to more than {MAX_NODES} nodes"
            )));
        }
        self.nodes -= 1;
        let cost = payload.saturating_add(std::mem::size_of::<Value>());
        self.bytes = self.bytes.checked_sub(cost).ok_or_else(|| {
            fail(format!(
                "object graph expands to more than {MAX_OWNED_BYTES} bytes (shared strings or tensors copied many times?)"
            ))
        })?;
        Ok(())
    }
}

/// A container [`to_owned`] is converting: the children still to convert (handles
/// cloned out of the shared graph) and those converted so far.
struct Frame {
    kind: FrameKind,
    todo: std::vec::IntoIter<V>,
    done: Vec<Value>,
}

enum FrameKind {
    Tuple,
    List,
    /// Children are keys and values, alternating.
    Dict,
    Object(&'static str),
}

impl Frame {
    fn new(kind: FrameKind, children: Vec<V>) -> Frame {
        Frame {
            done: Vec::with_capacity(children.len()),
            todo: children.into_iter(),
            kind,
        }
    }

    fn close(self) -> Value {
        match self.kind {
            FrameKind::Tuple => Value::Tuple(self.done),
            FrameKind::List => Value::List(self.done),
            FrameKind::Dict => {
                let mut pairs = Vec::with_capacity(self.done.len() / 2);
                let mut it = self.done.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Value::Dict(pairs)
            }
            FrameKind::Object(class) => {
                let mut done = self.done;
                Value::Object {
                    class: class.to_string(),
                    state: Box::new(done.pop().unwrap_or(Value::Dict(Vec::new()))),
                }
            }
        }
    }
}

/// Turn the shared object graph into an owned tree, refusing cycles (by depth) and
/// blow-ups through shared sub-objects (by a node and byte budget). Iterative, with
/// an explicit stack of at most [`MAX_DEPTH`] + 1 frames, so the call stack does not
/// depend on the input even in unoptimised builds.
fn to_owned(root: &V) -> Result<Value, PickleError> {
    let fail = |d: String| PickleError::Malformed { pos: 0, detail: d };
    let mut budget = Budget {
        nodes: MAX_NODES,
        bytes: MAX_OWNED_BYTES,
    };
    let mut frames: Vec<Frame> = Vec::new();
    let mut pending = Some(root.clone());
    loop {
        let finished = match pending.take() {
            Some(v) => {
                if frames.len() > MAX_DEPTH {
                    return Err(fail(format!(
                        "object nesting is too deep (more than {MAX_DEPTH} levels; cyclic structure?)"
                    )));
                }
                let payload = match &v {
                    V::Str(s) => s.len(),
                    V::Bytes(b) => b.len(),
                    V::Tensor(t) => t.storage_key.len() + 8 * (t.shape.len() + t.stride.len()),
                    _ => 0,
                };
                budget.charge(payload)?;
                match v {
                    V::None => Some(Value::None),
                    V::Bool(b) => Some(Value::Bool(b)),
                    V::Int(i) => Some(Value::Int(i)),
                    V::Float(f) => Some(Value::Float(f)),
                    V::Str(s) => Some(Value::Str(s.to_string())),
                    V::Bytes(b) => Some(Value::Bytes(b.to_vec())),
                    V::Tensor(t) => Some(Value::Tensor((*t).clone())),
                    V::Tuple(t) => {
                        frames.push(Frame::new(FrameKind::Tuple, t.to_vec()));
                        None
                    }
                    V::List(l) => {
                        frames.push(Frame::new(FrameKind::List, l.borrow().to_vec()));
                        None
                    }
                    V::Dict(d) => {
                        let children = d
                            .borrow()
                            .items
                            .iter()
                            .flat_map(|(k, v)| [k.clone(), v.clone()])
                            .collect();
                        frames.push(Frame::new(FrameKind::Dict, children));
                        None
                    }
                    V::Object(o) => {
                        let o = o.borrow();
                        let children = o.state.iter().cloned().collect();
                        frames.push(Frame::new(FrameKind::Object(o.class), children));
                        None
                    }
                    V::Global(g) => {
                        return Err(fail(format!("a bare global ({g:?}) is left in the data")))
                    }
                    V::Storage(s) => {
                        return Err(fail(format!(
                            "a bare storage ({}) is left in the data",
                            s.key
                        )))
                    }
                }
            }
            // The top container has no children left: it is complete.
            None => match frames.pop() {
                Some(f) => Some(f.close()),
                None => return Err(fail("internal error: nothing left to convert".into())),
            },
        };
        if let Some(value) = finished {
            match frames.last_mut() {
                Some(parent) => parent.done.push(value),
                None => return Ok(value),
            }
        }
        pending = frames.last_mut().and_then(|f| f.todo.next());
    }
}

/// Parse a pickle stream into an owned object tree without executing anything.
///
/// Memory and stack are bounded for any input (see the module documentation); the
/// tree returned is at most [`MAX_DEPTH`] levels deep.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work_left: MAX_WORK,
    };
    let root = m.run()?;
    let tree = to_owned(&root);
    // The graph (root, memo, whatever is left on the stack) is freed by the
    // machine's iterative teardown, never by recursive drops.
    m.stack.push(root);
    drop(m);
    tree
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

    /// `depth` empty lists, each appended to the one below: a list nested `depth`
    /// levels deep (protocol 2, 2 bytes per level), then `tail` and STOP.
    fn nested_lists(depth: usize, tail: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.extend_from_slice(tail);
        p.push(b'.');
        p
    }

    /// Runs `f` on a thread with a 1 MiB stack: a recursion over 200,000 levels
    /// needs several MiB (the main thread's 8 MiB overflowed), so passing shows
    /// the stack use does not grow with the input's depth.
    fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("the parser panicked")
    }

    #[test]
    fn deeply_nested_lists_are_a_clean_error_on_a_small_stack() {
        // 200,000 levels (400 KB) used to overflow the main thread's 8 MiB stack
        // while the graph was dropped after the depth check had refused it.
        let e = on_small_stack(|| parse(&nested_lists(200_000, b"")).unwrap_err());
        assert!(e.to_string().contains("nesting is too deep"), "{e}");
        // Just inside the limit it parses, and the tree's own (recursive) drop,
        // clone and comparison stay within the small stack.
        let v = on_small_stack(|| {
            let v = parse(&nested_lists(MAX_DEPTH + 1, b"")).unwrap();
            assert_eq!(v.clone(), v);
            format!("{v:?}").len()
        });
        assert!(v > MAX_DEPTH);
    }

    #[test]
    fn deep_graphs_dropped_while_running_do_not_recurse() {
        // POP drops the only handle of a 200,000-deep list; memo overwrites and
        // dict replacements do the same. The stream then returns None.
        let v = on_small_stack(|| parse(&nested_lists(200_000, b"0N")).unwrap());
        assert_eq!(v, Value::None);
        // d = {}; d[0] = <deep list>; d[0] = None  → {0: None}
        let n = 100_000;
        let mut p = vec![0x80, 2, b'}', b'K', 0];
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.extend_from_slice(b"sK\x00Ns.");
        let v = on_small_stack(move || parse(&p));
        assert_eq!(v.unwrap(), Value::Dict(vec![(Value::Int(0), Value::None)]));
        // A deep tuple chain (TUPLE1 200,000 times) is refused cleanly too.
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, 200_000));
        p.push(b'.');
        let e = on_small_stack(move || parse(&p).unwrap_err());
        assert!(e.to_string().contains("too deep"), "{e}");
    }

    #[test]
    fn teardown_frees_reference_cycles() {
        // l = [l]; t = (l,) shared twice: the cycle is broken and every
        // allocation freed.
        let l = V::List(Rc::new(RefCell::new(Items::default())));
        let V::List(inner) = &l else { unreachable!() };
        let weak = Rc::downgrade(inner);
        inner.borrow_mut().push(l.clone());
        let t = V::Tuple(Rc::new(Items(vec![l.clone()])));
        teardown(vec![l, t.clone(), t]);
        assert!(weak.upgrade().is_none(), "the self-referencing list leaked");
    }

    #[test]
    fn shared_strings_cannot_expand_past_the_byte_budget() {
        // s = "x" * 1 MiB; memo[0] = s; [s, s, … 1100 times] is over 1 GiB as a tree.
        let mut p = vec![0x80, 2, b'X'];
        p.extend_from_slice(&(1u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', 1 << 20));
        p.extend_from_slice(b"q\x000]");
        for _ in 0..1100 {
            p.extend_from_slice(b"h\x00a");
        }
        p.push(b'.');
        let e = parse(&p).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
    }

    #[test]
    fn exponential_tuple_keys_and_repeated_copies_are_refused() {
        // k0 = (0,); k(i+1) = (k(i), k(i)) 30 times: a 2^30-node key as a tree.
        let mut p = vec![0x80, 2, b'}', b'K', 0, 0x85, b'q', 0];
        for _ in 0..30 {
            p.extend_from_slice(b"0h\x00h\x00\x86q\x00");
        }
        p.extend_from_slice(b"Ns.");
        let e = parse(&p).unwrap_err();
        assert!(e.to_string().contains("dict key of type tuple"), "{e}");
        // OrderedDict(l) for a 200,000-pair list, 30 times: 6 M copied items.
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"ccollections\nOrderedDict\nq\x00");
        p.extend_from_slice(b"K\x00K\x01\x86q\x01](");
        p.extend(std::iter::repeat_n([b'h', 1], 200_000).flatten());
        p.extend_from_slice(b"eq\x02");
        for _ in 0..30 {
            p.extend_from_slice(b"h\x00h\x02\x85R0");
        }
        p.extend_from_slice(b"N.");
        let e = parse(&p).unwrap_err();
        assert!(e.to_string().contains("steps"), "{e}");
    }

    #[test]
    fn truncated_streams_error() {
        let p = b"\x80\x02}q\x00X\x05\x00\x00\x00ab";
        assert!(matches!(parse(p), Err(PickleError::Truncated { .. })));
        assert!(parse(b"").is_err());
        assert!(parse(b"\x80\x02}").is_err());
    }
}
