//! The tokenizer against transformers: tests/data/tiny-gpt2-gen/ holds a
//! byte-level BPE written by `save_pretrained` and generate_ref.json, whose
//! prompts, ids and texts transformers produced (scripts/make_hf_fixture.py
//! --gen-only). Also: the fixture's greedy references agree with wgpipe's CPU
//! forward, so the generation tests built on it start from a checked fixture.

use std::path::PathBuf;

use serde::Deserialize;
use wgpipe::cpu::gpt2_forward;
use wgpipe::error::Error;
use wgpipe::model::Gpt2Weights;
use wgpipe::tokenizer::{TextStream, Tokenizer, TOKENIZER_FILE};

const FIXTURE: &str = "tiny-gpt2-gen";

#[derive(Deserialize)]
struct GenerateRef {
    eos_token_id: u32,
    cases: Vec<Case>,
    eos_case: EosCase,
    step_logits: StepLogits,
}

#[derive(Deserialize)]
struct Case {
    prompts: Vec<String>,
    prompt_ids: Vec<Vec<u32>>,
    max_new_tokens: usize,
    output_ids: Vec<Vec<u32>>,
    texts: Vec<String>,
}

#[derive(Deserialize)]
struct EosCase {
    prompt_ids: Vec<u32>,
    eos_token_id: u32,
    max_new_tokens: usize,
    output_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct StepLogits {
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(FIXTURE)
}

fn reference() -> GenerateRef {
    let path = fixture_dir().join("generate_ref.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (make it with scripts/make_hf_fixture.py --gen-only)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tokenizer() -> Tokenizer {
    Tokenizer::load(&fixture_dir())
        .unwrap()
        .expect("the generation fixture has a tokenizer.json")
}

#[test]
fn fixture_tokenizer_shape() {
    let tok = tokenizer();
    let r = reference();
    assert_eq!(tok.vocab_size(), 320);
    assert_eq!(r.eos_token_id, 319);
    assert_eq!(tok.decode(&[r.eos_token_id]).unwrap(), "<|endoftext|>");
}

#[test]
fn encode_matches_transformers() {
    let tok = tokenizer();
    for case in reference().cases {
        for (text, want) in case.prompts.iter().zip(&case.prompt_ids) {
            assert_eq!(&tok.encode(text).unwrap(), want, "encoding {text:?}");
        }
    }
}

#[test]
fn decode_matches_transformers() {
    let tok = tokenizer();
    for case in reference().cases {
        for (ids, want) in case.output_ids.iter().zip(&case.texts) {
            assert_eq!(&tok.decode(ids).unwrap(), want, "decoding {ids:?}");
        }
    }
}

#[test]
fn text_stream_reproduces_decode() {
    let tok = tokenizer();
    let mut held_back = 0;
    for case in reference().cases {
        for (ids, want) in case.output_ids.iter().zip(&case.texts) {
            let mut stream = TextStream::new(&tok);
            let mut text = String::new();
            for &id in ids {
                let piece = stream.push(id).unwrap();
                held_back += piece.is_empty() as usize;
                text += &piece;
                assert!(
                    want.starts_with(&text),
                    "{text:?} is not a prefix of {want:?}"
                );
            }
            text += &stream.finish().unwrap();
            assert_eq!(&text, want, "streaming {ids:?}");
        }
    }
    // The random model emits lone bytes of multi-byte characters: the stream
    // had something to hold back.
    assert!(held_back > 0);
}

#[test]
fn missing_tokenizer_json_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Tokenizer::load(dir.path()).unwrap().is_none());
}

#[test]
fn malformed_tokenizer_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKENIZER_FILE);
    let good = std::fs::read_to_string(fixture_dir().join(TOKENIZER_FILE)).unwrap();
    for bad in [
        &good[..good.len() / 2],
        r#"{"model": {"type": "NoSuchModel"}}"#,
    ] {
        std::fs::write(&path, bad).unwrap();
        let err = Tokenizer::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("malformed tokenizer file"), "{msg}");
    }
}

#[test]
fn decoding_an_id_past_the_vocabulary_names_it() {
    let tok = tokenizer();
    for id in [320, 5000, u32::MAX] {
        let msg = tok.decode(&[51, id]).unwrap_err().to_string();
        assert!(msg.contains(&format!("token id {id} ")), "{msg}");
        assert!(msg.contains("vocab size 320"), "{msg}");
    }
}

/// The last position's logits of a CPU forward over `ids`.
fn next_logits(w: &Gpt2Weights, ids: &[u32]) -> Vec<f32> {
    let v = w.config.vocab_size;
    let logits = gpt2_forward(w, ids, 1, ids.len());
    logits[(ids.len() - 1) * v..].to_vec()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn fixture_greedy_references_match_the_cpu_forward() {
    let w = Gpt2Weights::load_checkpoint(&fixture_dir()).unwrap();
    let r = reference();

    // step_logits: the next-token logits after the prompt and each of its first
    // generated tokens.
    let s = &r.step_logits;
    let mut ids = s.prompt_ids.clone();
    for (k, want) in s.logits.iter().enumerate() {
        let got = next_logits(&w, &ids);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "step {k}: max |diff| {diff} (max |logit| {scale})"
        );
        if let Some(&next) = s.generated_ids.get(k) {
            ids.push(next);
        }
    }

    // Every case row: prompt + max_new_tokens argmax tokens, none stopped by eos.
    for case in &r.cases {
        for (prompt, row) in case.prompt_ids.iter().zip(&case.output_ids) {
            assert_eq!(row.len(), prompt.len() + case.max_new_tokens);
            assert_eq!(&row[..prompt.len()], &prompt[..]);
            for t in prompt.len()..row.len() {
                assert_eq!(
                    argmax(&next_logits(&w, &row[..t])),
                    row[t],
                    "position {t} of {row:?}"
                );
            }
        }
    }

    // eos_case: the greedy row cut right after the first eos_token_id, which was
    // generated at position >= 2 (transformers stops there; wgpipe pads with it).
    let e = &r.eos_case;
    let generated = &e.output_ids[e.prompt_ids.len()..];
    assert!(generated.len() >= 3 && generated.len() < e.max_new_tokens);
    assert_eq!(
        generated.iter().position(|&id| id == e.eos_token_id),
        Some(generated.len() - 1)
    );
    let mut ids = e.prompt_ids.clone();
    while ids.len() < e.output_ids.len() {
        ids.push(argmax(&next_logits(&w, &ids)));
    }
    assert_eq!(ids, e.output_ids);
}
