//! Reading user weight files without executing any pickle code: `.safetensors`, zip `.pth`
//! (torch ≥ 1.6, through candle's pickle reader) and the legacy (pre-1.6) `.pth` stream that
//! torchvision's ImageNet files and the lpips heads use (magic, protocol, sys-info and
//! state-dict pickles, then the raw storages). The pickles are only *parsed* (candle's
//! `Stack`), never run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::EvalError;

fn bad(path: &Path, what: impl Into<String>) -> EvalError {
    EvalError::WeightsFile {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Every tensor of a weight file, converted to f32 on `device`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, EvalError> {
    if !path.is_file() {
        return Err(bad(
            path,
            "no such file; check the path given on the command line",
        ));
    }
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        what: "reading the weights".into(),
        source,
    })?;
    read_tensors_from(&bytes, path, device)
}

/// As [`read_tensors`] on bytes already in memory (`path` names them in errors; a zip `.pth`
/// is re-read from `path`).
pub fn read_tensors_from(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, EvalError> {
    let raw: Vec<(String, Tensor)> = if bytes.starts_with(b"PK\x03\x04") {
        check_zip_pickles(path)?;
        candle_core::pickle::read_all(path).map_err(|e| {
            bad(
                path,
                format!("reading the zip .pth checkpoint failed ({e}); re-save it as .safetensors"),
            )
        })?
    } else if bytes.starts_with(&LEGACY_MAGIC) {
        read_legacy(path, bytes)?
    } else {
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| {
                bad(
                    path,
                    format!("neither a .safetensors file nor a PyTorch .pth checkpoint ({e})"),
                )
            })?
            .into_iter()
            .collect()
    };
    let mut out = HashMap::new();
    for (k, t) in raw {
        let t = t.to_dtype(DType::F32)?.to_device(device)?;
        out.insert(k, t);
    }
    if out.is_empty() {
        return Err(bad(path, "holds no tensors"));
    }
    Ok(out)
}

/// Largest `data.pkl` of a zip `.pth` (the pickle only describes the tensors; their data are
/// separate entries).
const MAX_ZIP_PICKLE_BYTES: u64 = 256 << 20;

/// Parses every `data.pkl` of a zip `.pth` with the parser below before candle reads it:
/// candle allocates the length a string op-code declares before reading the string (up to
/// 4 GB from a few bytes of a damaged file), so a pickle whose lengths overrun it, or that
/// expands itself through its memo, is refused here with the reason. Op-codes this parser
/// does not know are left to candle.
fn check_zip_pickles(path: &Path) -> Result<(), EvalError> {
    use std::io::Read;
    let unreadable = |e: &dyn std::fmt::Display| {
        bad(
            path,
            format!("reading the zip .pth checkpoint failed ({e}); re-save it as .safetensors"),
        )
    };
    let f = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        what: "reading the weights".into(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| unreadable(&e))?;
    let names = zip
        .file_names()
        .map(|f| f.map(|f| f.into_owned()))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| unreadable(&e))?;
    for name in names.iter().filter(|n| n.ends_with("data.pkl")) {
        let entry = zip.by_name(name).map_err(|e| unreadable(&e))?;
        if entry.size() > MAX_ZIP_PICKLE_BYTES {
            return Err(bad(
                path,
                format!(
                    "zip .pth: {name} declares {} bytes, more than a checkpoint's pickle needs ({} MiB)",
                    entry.size(),
                    MAX_ZIP_PICKLE_BYTES >> 20
                ),
            ));
        }
        let mut pkl = Vec::new();
        entry
            .take(MAX_ZIP_PICKLE_BYTES)
            .read_to_end(&mut pkl)
            .map_err(|e| unreadable(&e))?;
        if let Err(e) = parse_pickle(&pkl, &mut 0) {
            if !e.contains("is not supported") {
                return Err(bad(path, format!("zip .pth: cannot parse {name} ({e})")));
            }
        }
    }
    Ok(())
}

/// Take the tensors named in `spec` (`name → shape`) out of `tensors`, failing with one
/// error that lists every missing and every mis-shaped tensor.
pub fn take_checked(
    tensors: &HashMap<String, Tensor>,
    spec: &[(String, Vec<usize>)],
    path: &Path,
    what: &str,
) -> Result<HashMap<String, Tensor>, EvalError> {
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut out = HashMap::new();
    for (name, shape) in spec {
        match tensors.get(name) {
            None => missing.push(format!("{name} {shape:?}")),
            Some(t) if t.dims() != shape.as_slice() => misshaped.push(format!(
                "{name}: expected {shape:?}, file has {:?}",
                t.dims()
            )),
            Some(t) => {
                out.insert(name.clone(), t.clone());
            }
        }
    }
    if missing.is_empty() && misshaped.is_empty() {
        return Ok(out);
    }
    let mut msg = format!("does not hold the {what} weights:");
    if !missing.is_empty() {
        msg.push_str(&format!(
            "\n  {} missing: {}",
            missing.len(),
            missing
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !misshaped.is_empty() {
        msg.push_str(&format!(
            "\n  {} mis-shaped: {}",
            misshaped.len(),
            misshaped.join("; ")
        ));
    }
    let present: Vec<&String> = tensors.keys().take(8).collect();
    msg.push_str(&format!(
        "\n  (the file holds {} tensors, e.g. {present:?}); give the {what} file in its published layout",
        tensors.len()
    ));
    Err(bad(path, msg))
}

/// The pickle of the legacy format's magic number 0x1950a86a20f9469cfc6c (protocol 2).
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// A parsed pickle value. Calls (`REDUCE`) are recorded, never performed.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Call(Box<Value>, Box<Value>),
    PersId(Box<Value>),
    Mark,
}

/// Number of values in `v` (itself and everything inside it), or `None` when more than
/// `limit`.
fn count_values(v: &Value, limit: usize) -> Option<usize> {
    let mut n = 0usize;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n += 1;
        if n > limit {
            return None;
        }
        match v {
            Value::Tuple(items) | Value::List(items) => todo.extend(items),
            Value::Dict(kv) => todo.extend(kv.iter().flat_map(|(k, v)| [k, v])),
            Value::Call(f, a) => todo.extend([&**f, &**a]),
            Value::PersId(id) => todo.push(id),
            _ => {}
        }
    }
    Some(n)
}

/// Values the memo may copy while one pickle is parsed, beyond a small allowance per input
/// byte: torch memoises small objects (globals, strings, storage tuples), while a pickle that
/// nests memoised lists in themselves doubles its size with every few bytes.
const MEMO_COPY_BUDGET: usize = 1 << 20;

/// Parse one pickle (protocols 0–2 subset torch uses, Python 2 and 3 strings) from `b` at
/// `*pos`, leaving `*pos` after its STOP. Nothing is imported or called.
fn parse_pickle(b: &[u8], pos: &mut usize) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let limit = MEMO_COPY_BUDGET.saturating_add(b.len().saturating_mul(16));
    let mut used = 0usize;
    // a copy of `v` made by the memo, charged to the budget
    let mut copy = |v: &Value| -> Result<Value, String> {
        let n = count_values(v, limit - used).ok_or_else(|| {
            format!(
                "its memo copies more than {limit} values (a pickle that expands itself; torch never writes one)"
            )
        })?;
        used += n;
        Ok(v.clone())
    };
    fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
        let s = b.get(*pos..*pos + n).ok_or("truncated pickle")?;
        *pos += n;
        Ok(s)
    }
    fn line(b: &[u8], pos: &mut usize) -> Result<String, String> {
        let end = b[*pos..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("truncated pickle")?;
        let s = String::from_utf8_lossy(&b[*pos..*pos + end]).to_string();
        *pos += end + 1;
        Ok(s)
    }
    fn u32le(s: &[u8]) -> u32 {
        u32::from_le_bytes(s.try_into().expect("4 bytes"))
    }
    fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>, String> {
        let i = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no MARK")?;
        let items = stack.split_off(i + 1);
        stack.pop();
        Ok(items)
    }
    fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
        stack.pop().ok_or_else(|| "stack underflow".to_string())
    }
    fn into_dict(v: Value) -> Value {
        // OrderedDict(...) as Python 2 pickles it: a call with a list of [key, value] lists.
        match v {
            Value::Call(f, args) if matches!(&*f, Value::Global(m, n) if m == "collections" && n == "OrderedDict") =>
            {
                let mut d = Vec::new();
                if let Value::Tuple(a) = *args {
                    if let Some(Value::List(items)) = a.into_iter().next() {
                        for it in items {
                            if let Value::List(kv) | Value::Tuple(kv) = it {
                                let mut kv = kv.into_iter();
                                if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                                    d.push((k, v));
                                }
                            }
                        }
                    }
                }
                Value::Dict(d)
            }
            other => other,
        }
    }
    loop {
        let op = *b.get(*pos).ok_or("truncated pickle")?;
        *pos += 1;
        match op {
            0x80 => {
                take(b, pos, 1)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(take(b, pos, 1)?[0] as i64)),
            b'M' => {
                let s = take(b, pos, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([s[0], s[1]]) as i64))
            }
            b'J' => stack.push(Value::Int(u32le(take(b, pos, 4)?) as i32 as i64)),
            0x8a => {
                let n = take(b, pos, 1)?[0] as usize;
                let s = take(b, pos, n)?;
                if n > 8 {
                    return Err("integer wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (i, &x) in s.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v))
            }
            b'G' => {
                let s = take(b, pos, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    s.try_into().expect("8 bytes"),
                )))
            }
            b'U' => {
                let n = take(b, pos, 1)?[0] as usize;
                stack.push(Value::Str(
                    String::from_utf8_lossy(take(b, pos, n)?).to_string(),
                ))
            }
            b'T' | b'X' => {
                let n = u32le(take(b, pos, 4)?) as usize;
                stack.push(Value::Str(
                    String::from_utf8_lossy(take(b, pos, n)?).to_string(),
                ))
            }
            0x8c => {
                let n = take(b, pos, 1)?[0] as usize;
                stack.push(Value::Str(
                    String::from_utf8_lossy(take(b, pos, n)?).to_string(),
                ))
            }
            b'c' => {
                let m = line(b, pos)?;
                let n = line(b, pos)?;
                stack.push(Value::Global(m, n))
            }
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items))
            }
            b']' => stack.push(Value::List(Vec::new())),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err("APPENDS to a non-list".into()),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                let top = pop(&mut stack)?;
                let mut d = match into_dict(top) {
                    Value::Dict(d) => d,
                    Value::Call(f, a) => {
                        // e.g. OrderedDict() called with no items, filled by SETITEMS
                        if matches!(&*f, Value::Global(_, n) if n == "OrderedDict") {
                            let _ = a;
                            Vec::new()
                        } else {
                            return Err("SETITEM on a non-dict".into());
                        }
                    }
                    _ => return Err("SETITEM on a non-dict".into()),
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                stack.push(Value::Dict(d))
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(into_dict(Value::Call(Box::new(f), Box::new(args))))
            }
            b'b' => {
                // BUILD sets state (e.g. an OrderedDict's `_metadata`); the object stays.
                pop(&mut stack)?;
            }
            b'Q' => {
                let id = pop(&mut stack)?;
                stack.push(Value::PersId(Box::new(id)))
            }
            b'q' => {
                let k = take(b, pos, 1)?[0] as u32;
                memo.insert(k, copy(stack.last().ok_or("empty stack")?)?);
            }
            b'r' => {
                let k = u32le(take(b, pos, 4)?);
                memo.insert(k, copy(stack.last().ok_or("empty stack")?)?);
            }
            b'h' => {
                let k = take(b, pos, 1)?[0] as u32;
                stack.push(copy(memo.get(&k).ok_or("unknown memo key")?)?)
            }
            b'j' => {
                let k = u32le(take(b, pos, 4)?);
                stack.push(copy(memo.get(&k).ok_or("unknown memo key")?)?)
            }
            other => {
                return Err(format!(
                    "pickle op-code 0x{other:02x} at byte {} is not supported",
                    *pos - 1
                ))
            }
        }
    }
}

/// One tensor's place in the legacy stream.
struct LegacyTensor {
    name: String,
    storage: String,
    dtype: DType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn ints(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Tuple(t) | Value::List(t) => t
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Some(*i as usize),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn tensor_of(name: String, v: &Value) -> Option<LegacyTensor> {
    let Value::Call(f, args) = v else { return None };
    let Value::Global(_, fname) = &**f else {
        return None;
    };
    let Value::Tuple(a) = &**args else {
        return None;
    };
    if fname == "_rebuild_parameter" {
        return tensor_of(name, a.first()?);
    }
    if fname != "_rebuild_tensor_v2" && fname != "_rebuild_tensor" {
        return None;
    }
    let Value::PersId(pid) = a.first()? else {
        return None;
    };
    let Value::Tuple(p) = &**pid else { return None };
    let Value::Global(_, ty) = p.get(1)? else {
        return None;
    };
    let Value::Str(key) = p.get(2)? else {
        return None;
    };
    let dtype = match ty.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        _ => return None,
    };
    let offset = match a.get(1)? {
        Value::Int(i) => usize::try_from(*i).ok()?,
        _ => return None,
    };
    Some(LegacyTensor {
        name,
        storage: key.clone(),
        dtype,
        offset,
        size: ints(a.get(2)?)?,
        stride: ints(a.get(3)?)?,
    })
}

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>, EvalError> {
    let mut pos = LEGACY_MAGIC.len();
    let next = |what: &str, pos: &mut usize| {
        parse_pickle(bytes, pos).map_err(|e| {
            bad(
                path,
                format!("legacy .pth: cannot parse the {what} pickle ({e})"),
            )
        })
    };
    let _protocol = next("protocol version", &mut pos)?;
    let _sys = next("system info", &mut pos)?;
    let main = next("state dict", &mut pos)?;
    let keys = next("storage keys", &mut pos)?;
    let keys: Vec<String> = match keys {
        Value::List(v) | Value::Tuple(v) => v
            .into_iter()
            .map(|o| match o {
                Value::Str(s) => Ok(s),
                other => Err(bad(path, format!("legacy .pth: storage key {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(bad(
                path,
                format!("legacy .pth: expected the list of storage keys, found {other:?}"),
            ))
        }
    };
    let Value::Dict(dict) = main else {
        return Err(bad(
            path,
            "legacy .pth: the checkpoint is not a state dict (save `model.state_dict()`)",
        ));
    };
    let mut infos = Vec::new();
    for (k, v) in dict {
        let name = match k {
            Value::Str(s) => s,
            _ => continue,
        };
        if let Some(t) = tensor_of(name, &v) {
            infos.push(t);
        }
    }
    // Storages follow in key order, each as a u64 element count then the raw data.
    let mut storages: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for key in &keys {
        let elem = infos
            .iter()
            .find(|i| &i.storage == key)
            .map(|i| i.dtype.size_in_bytes())
            .unwrap_or(4);
        let n = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| bad(path, "legacy .pth: truncated storage header"))?;
        pos += 8;
        // a count the file cannot hold is as truncated as a short one (and must not overflow)
        let end = n
            .checked_mul(elem)
            .and_then(|len| pos.checked_add(len))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "legacy .pth: storage {key} declares {n} elements, more than the {} bytes left in the file hold",
                        bytes.len() - pos
                    ),
                )
            })?;
        storages.insert(key.clone(), (pos, end - pos));
        pos = end;
    }
    let mut out = Vec::new();
    for info in infos {
        let &(start, len) = storages.get(&info.storage).ok_or_else(|| {
            bad(
                path,
                format!("legacy .pth: tensor {} has no storage", info.name),
            )
        })?;
        if info.size.len() != info.stride.len() {
            return Err(bad(
                path,
                format!(
                    "legacy .pth: tensor {} has {} sizes but {} strides",
                    info.name,
                    info.size.len(),
                    info.stride.len()
                ),
            ));
        }
        let overruns = || {
            bad(
                path,
                format!("legacy .pth: tensor {} overruns its storage", info.name),
            )
        };
        // Row-major contiguity check (sizes whose product overflows cannot fit the storage).
        let mut expect = 1usize;
        for (d, s) in info.size.iter().zip(&info.stride).rev() {
            if *d != 1 && *s != expect {
                return Err(bad(
                    path,
                    format!("legacy .pth: tensor {} is not contiguous", info.name),
                ));
            }
            expect = expect.checked_mul(*d).ok_or_else(overruns)?;
        }
        let es = info.dtype.size_in_bytes();
        let nbytes = expect.checked_mul(es).ok_or_else(overruns)?;
        let off = info.offset.checked_mul(es).ok_or_else(overruns)?;
        if off.checked_add(nbytes).is_none_or(|end| end > len) {
            return Err(overruns());
        }
        let data = &bytes[start + off..start + off + nbytes];
        let t = Tensor::from_raw_buffer(data, info.dtype, &info.size, &Device::Cpu)?;
        out.push((info.name, t));
    }
    Ok(out)
}
