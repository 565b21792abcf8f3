//! Text <-> token ids, from the `tokenizer.json` that Hugging Face's
//! `save_pretrained` writes into a checkpoint directory (GPT-2's byte-level BPE
//! and any other pipeline the `tokenizers` crate reads).
//!
//! [`Tokenizer`] encodes a prompt and decodes ids; [`TextStream`] turns ids
//! generated one at a time into text that can be printed as it arrives, holding
//! back a character whose UTF-8 bytes are split across tokens until it is whole.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file name `save_pretrained` gives the tokenizer in a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The replacement character that lossy UTF-8 decoding puts where bytes are
/// missing: at the end of a decoded text it may be a character not yet complete.
const REPLACEMENT: char = '\u{FFFD}';

/// A Hugging Face tokenizer loaded from `tokenizer.json`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer of a checkpoint directory: `dir/tokenizer.json`, or `None`
    /// when the directory has no such file.
    pub fn load(dir: &Path) -> Result<Option<Tokenizer>> {
        let path = dir.join(TOKENIZER_FILE);
        match path.try_exists() {
            Ok(true) => Tokenizer::from_file(&path).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Reads a `tokenizer.json`; a file that does not parse is an
    /// [`Error::Input`] naming the file and the parser's message.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let malformed = |e: &dyn std::fmt::Display| {
            Error::Input(format!("{}: malformed tokenizer file: {e}", path.display()))
        };
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| malformed(&e))?;
        check_bpe_merges(&json).map_err(|e| malformed(&e))?;
        check_precompiled(&json).map_err(|e| malformed(&e))?;
        let mut inner = unpanicked(path, "loading it", || {
            tokenizers::Tokenizer::from_bytes(&bytes)
        })?
        .map_err(|e| malformed(&e))?;
        // Prompts are encoded as they are, as transformers' tokenizer(text)
        // does: its fast tokenizers turn the file's padding and truncation
        // off unless a call asks for them. (Left on, a `"padding": {"strategy":
        // {"Fixed": 4294967296}}` would pad every prompt to 2^32 ids.)
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| malformed(&e))?;
        let vocab_size = unpanicked(path, "counting its vocabulary", || {
            inner.get_vocab_size(true)
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
            vocab_size,
        })
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of token ids, special tokens included: valid ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The ids of `text` as transformers' `tokenizer(text)` gives them:
    /// with the special tokens the tokenizer's post-processor adds (Llama 3's
    /// and Qwen2's BOS; GPT-2 adds none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// The ids of `text` without the special tokens the post-processor
    /// adds: what `apply_chat_template` tokenizes a rendered chat with (its
    /// template writes the BOS itself).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = unpanicked(&self.path, &format!("encoding {text:?}"), || {
            self.inner.encode(text, special)
        })?
        .map_err(|e| {
            Error::Input(format!(
                "{}: cannot encode {text:?}: {e}",
                self.path.display()
            ))
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included. Bytes that are not valid
    /// UTF-8 (a character cut off by the end of `ids`, say) become U+FFFD, as
    /// in transformers' `decode`. An id outside `0..vocab_size` is an error
    /// (the `tokenizers` crate would silently drop it).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if ids.is_empty() {
            // Nothing to decode (and tokenizers' BPE decoder would underflow).
            return Ok(String::new());
        }
        let unknown = unpanicked(&self.path, "looking up ids", || {
            ids.iter()
                .find(|&&id| self.inner.id_to_token(id).is_none())
                .copied()
        })?;
        if let Some(id) = unknown {
            return Err(Error::Input(format!(
                "token id {id} is out of range for the tokenizer {} (vocab size {})",
                self.path.display(),
                self.vocab_size
            )));
        }
        let what = format!("decoding {} ids", ids.len());
        unpanicked(&self.path, &what, || self.inner.decode(ids, false))?.map_err(|e| {
            Error::Input(format!(
                "{}: cannot decode {} ids: {e}",
                self.path.display(),
                ids.len()
            ))
        })
    }
}

/// `f()`, a panic in it — inside the `tokenizers` crate, which some
/// malformed `tokenizer.json` files provoke (a `Strip` decoder told to cut
/// more than a token holds, say) — turned into an [`Error::Input`] naming the
/// file and what was being done. (The panic's own message is still printed
/// by the panic hook.) A tokenizer that panicked once may do so again; its
/// state is not otherwise used after the error.
fn unpanicked<T>(path: &Path, doing: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let msg = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Error::Input(format!(
            "{}: the tokenizers library failed {doing}: {msg}; the tokenizer file is malformed",
            path.display()
        ))
    })
}

/// `tokenizers` (0.23) builds a BPE model by cutting the model's
/// `continuing_subword_prefix` off the second token of every merge without
/// checking that the token starts with it: a longer prefix underflows a
/// length, and one that ends inside a character makes a `str` of invalid
/// UTF-8 — undefined behaviour, which no `catch_unwind` contains. So such
/// merges are refused before the crate sees them.
fn check_bpe_merges(json: &serde_json::Value) -> std::result::Result<(), String> {
    let model = &json["model"];
    let prefix = match model["continuing_subword_prefix"].as_str() {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(()),
    };
    let Some(merges) = model["merges"].as_array() else {
        return Ok(());
    };
    for (i, merge) in merges.iter().enumerate() {
        // "a b" (the legacy form) or ["a", "b"].
        let second = match merge {
            serde_json::Value::String(m) => m.split(' ').nth(1),
            pair => pair[1].as_str(),
        };
        if let Some(b) = second.filter(|b| !b.starts_with(prefix)) {
            return Err(format!(
                "merge {i} ({merge}): its second token {b:?} does not start with the model's \
                 continuing_subword_prefix {prefix:?}"
            ));
        }
    }
    Ok(())
}

/// `tokenizers`' `Precompiled` normalizer (spm_precompiled 0.1) reserves
/// room for as many trie entries as the first four bytes of its
/// `precompiled_charsmap` state — 8 GiB for a few bytes of base64. So a
/// charsmap whose trie would be longer than the charsmap itself is refused
/// first, wherever in the file (a `Sequence`'s list, say) it is.
fn check_precompiled(v: &serde_json::Value) -> std::result::Result<(), String> {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            let charsmap = o.get("precompiled_charsmap").and_then(Value::as_str);
            if let (Some("Precompiled"), Some(map)) =
                (o.get("type").and_then(Value::as_str), charsmap)
            {
                if let Some(trie) = base64_head(map).map(u32::from_le_bytes) {
                    if trie as usize > map.len() {
                        return Err(format!(
                            "a Precompiled normalizer's precompiled_charsmap states a trie of {trie} bytes \
                             but holds {} characters of base64",
                            map.len()
                        ));
                    }
                }
            }
            o.values().try_for_each(check_precompiled)
        }
        Value::Array(a) => a.iter().try_for_each(check_precompiled),
        _ => Ok(()),
    }
}

/// The first four bytes that standard base64 `s` encodes (its first six
/// characters); None when it is shorter or not base64 there.
fn base64_head(s: &str) -> Option<[u8; 4]> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bits = (s.as_bytes().get(..6)?.iter())
        .try_fold(0u64, |acc, &c| Some(acc << 6 | u64::from(sextet(c)?)))?;
    Some(((bits >> 4) as u32).to_be_bytes())
}

/// Decoded text of ids that arrive one at a time, for printing while a model
/// generates. Whatever [`push`](TextStream::push) and
/// [`finish`](TextStream::finish) return, concatenated, is
/// `tokenizer.decode(all ids)`.
///
/// Each push decodes all ids so far and returns the text past what was already
/// returned, up to a trailing run of U+FFFD: those may be the bytes of a
/// character whose remaining bytes come with the next tokens, so they wait
/// until a later push shows more text after them, or until `finish`. This
/// needs a decoder whose output for a prefix of ids is a prefix of its output
/// for all of them, except for that trailing U+FFFD run; GPT-2's byte-level
/// decoder is one. Decoding all ids each time costs O(n) per token, which is
/// nothing beside a forward pass at the sequence lengths GPT-2 allows.
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// The text returned so far: a prefix of the decoded text.
    emitted: String,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            emitted: String::new(),
        }
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one id; returns the text that became complete with it (often empty
    /// mid-character, sometimes more than one token's worth).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = match self.tokenizer.decode(&self.ids) {
            Ok(text) => text,
            Err(e) => {
                self.ids.pop();
                return Err(e);
            }
        };
        let stable = text.trim_end_matches(REPLACEMENT);
        self.take_new(stable)
    }

    /// The text still held back (a trailing U+FFFD run, if any); the stream
    /// is empty and can be used again afterwards.
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids)?;
        let rest = self.take_new(&text)?;
        self.ids.clear();
        self.emitted.clear();
        Ok(rest)
    }

    /// The part of `text` past what was already returned, now returned too.
    fn take_new(&mut self, text: &str) -> Result<String> {
        if text.len() <= self.emitted.len() {
            return Ok(String::new());
        }
        match text.strip_prefix(self.emitted.as_str()) {
            Some(new) => {
                let new = new.to_string();
                self.emitted.push_str(&new);
                Ok(new)
            }
            None => Err(Error::Input(format!(
                "{}: the decoder is not prefix-stable (decoding {} ids changed text \
                 already printed), so it cannot stream",
                self.tokenizer.path.display(),
                self.ids.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level BPE in the shape GPT-2's tokenizer.json has: the 256 byte
    /// symbols, a few merges, and `<|endoftext|>` last.
    fn tiny_tokenizer_json() -> String {
        let mut vocab = serde_json::Map::new();
        let symbols = byte_symbols();
        for (id, s) in symbols.iter().enumerate() {
            vocab.insert(s.to_string(), id.into());
        }
        let merges = [("h", "e"), ("Ġ", "w"), ("Ġw", "o")];
        for (a, b) in merges {
            vocab.insert(format!("{a}{b}"), vocab.len().into());
        }
        let eos = vocab.len();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": eos, "content": "<|endoftext|>", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true,
                "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab,
                "merges": merges.iter().map(|(a, b)| vec![*a, *b]).collect::<Vec<_>>()}
        })
        .to_string()
    }

    /// GPT-2's byte -> printable character table, in id order (bytes_to_unicode).
    fn byte_symbols() -> Vec<char> {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut out: Vec<char> = (0..256u32)
            .filter(|&b| printable(b))
            .map(|b| char::from_u32(b).unwrap())
            .collect();
        out.extend(
            (0..256u32)
                .filter(|&b| !printable(b))
                .enumerate()
                .map(|(n, _)| char::from_u32(256 + n as u32).unwrap()),
        );
        out
    }

    fn tiny() -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), tiny_tokenizer_json()).unwrap();
        let tok = Tokenizer::load(dir.path())
            .unwrap()
            .expect("tokenizer.json is there");
        (dir, tok)
    }

    #[test]
    fn round_trip_and_merges() {
        let (_dir, tok) = tiny();
        assert_eq!(tok.vocab_size(), 256 + 3 + 1);
        let text = "hello world, héllo 🙂";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // "he" and " wo" are single tokens.
        assert_eq!(tok.encode("he").unwrap(), vec![256]);
        assert_eq!(tok.encode(" wo").unwrap(), vec![258]);
        // No special tokens are added; the eos token decodes as its text.
        assert_eq!(tok.decode(&[256, 259]).unwrap(), "he<|endoftext|>");
    }

    #[test]
    fn decode_rejects_ids_outside_the_vocabulary() {
        let (_dir, tok) = tiny();
        let err = tok.decode(&[256, 260]).unwrap_err().to_string();
        assert!(
            err.contains("token id 260") && err.contains("vocab size 260"),
            "{err}"
        );
    }

    #[test]
    fn stream_holds_back_split_characters() {
        let (_dir, tok) = tiny();
        let text = "a🙂b";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), 6, "one token per byte: {ids:?}");
        let mut stream = TextStream::new(&tok);
        let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        assert_eq!(pieces, ["a", "", "", "", "🙂", "b"]);
        assert_eq!(stream.finish().unwrap(), "");
    }

    #[test]
    fn stream_finish_returns_an_incomplete_tail() {
        let (_dir, tok) = tiny();
        let ids = tok.encode("x🙂").unwrap();
        let cut = &ids[..3]; // "x" and two of the emoji's four bytes
        let mut stream = TextStream::new(&tok);
        let mut out = String::new();
        for &id in cut {
            out += &stream.push(id).unwrap();
        }
        assert_eq!(out, "x");
        out += &stream.finish().unwrap();
        assert_eq!(out, tok.decode(cut).unwrap());
        assert!(out.ends_with(REPLACEMENT), "{out:?}");
    }

    #[test]
    fn stream_push_of_a_bad_id_leaves_the_stream_as_it_was() {
        let (_dir, tok) = tiny();
        let mut stream = TextStream::new(&tok);
        assert_eq!(stream.push(256).unwrap(), "he");
        assert!(stream.push(9999).is_err());
        assert_eq!(stream.ids(), &[256]);
        assert_eq!(stream.push(258).unwrap(), " wo");
    }

    #[test]
    fn load_without_tokenizer_json_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Tokenizer::load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn malformed_tokenizer_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENIZER_FILE);
        std::fs::write(&path, r#"{"model": {"type": "BPE""#).unwrap();
        let err = Tokenizer::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}
