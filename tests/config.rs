//! Model configuration (presets, validation, config.json) and weight
//! initialisation.

mod common;

use common::{err_string, scratch, tiny};
use wgpipe::error::Error;
use wgpipe::model::{Gpt2Config, Gpt2Weights};

#[test]
fn config_presets() {
    let g = Gpt2Config::named("gpt2").unwrap();
    assert_eq!(
        (
            g.vocab_size,
            g.n_positions,
            g.n_embd,
            g.n_layer,
            g.n_head,
            g.n_inner
        ),
        (50257, 1024, 768, 12, 12, 3072)
    );
    assert_eq!(g.head_dim(), 64);
    assert_eq!(g.num_params(), 124_439_808);
    assert_eq!(
        Gpt2Config::named("gpt2-medium").unwrap().num_params(),
        354_823_168
    );
    assert_eq!(
        Gpt2Config::named("gpt2-large").unwrap().num_params(),
        774_030_080
    );
    assert_eq!(
        Gpt2Config::named("gpt2-xl").unwrap().num_params(),
        1_557_611_200
    );
    for name in wgpipe::model::config::KNOWN_CONFIGS {
        Gpt2Config::named(name).unwrap().validate().unwrap();
    }
    let (e, s) = err_string(Gpt2Config::named("gpt3"));
    assert!(matches!(e, Error::Config(_)));
    assert!(
        s.contains("gpt3") && s.contains("tiny") && s.contains("gpt2-xl"),
        "{s}"
    );
}

#[test]
fn config_validate() {
    let mut c = tiny();
    c.n_head = 5; // 36 % 5 != 0
    let (e, s) = err_string(c.validate());
    assert!(matches!(e, Error::Config(_)));
    assert!(s.contains("36") && s.contains('5'), "{s}");
    for field in 0..6 {
        let mut c = tiny();
        *[
            &mut c.vocab_size,
            &mut c.n_positions,
            &mut c.n_embd,
            &mut c.n_layer,
            &mut c.n_head,
            &mut c.n_inner,
        ][field] = 0;
        let (e, _) = err_string(c.validate());
        assert!(matches!(e, Error::Config(_)));
    }
}

#[test]
fn config_json() {
    let dir = scratch("config_json");
    let p = dir.join("config.json");
    std::fs::write(&p, r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "n_inner": null}"#).unwrap();
    let c = Gpt2Config::from_json_file(&p).unwrap();
    assert_eq!(c.n_inner, 144);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
    std::fs::write(&p, r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "n_inner": 50, "layer_norm_epsilon": 1e-3}"#).unwrap();
    let c = Gpt2Config::from_json_file(&p).unwrap();
    assert_eq!((c.n_inner, c.layer_norm_epsilon), (50, 1e-3));

    // missing key, wrong type, unsupported activation, not divisible
    for (text, needle) in [
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_layer": 2, "n_head": 3}"#,
            "n_embd",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": "36", "n_layer": 2, "n_head": 3}"#,
            "n_embd",
        ),
        (
            r#"{"vocab_size": -1, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3}"#,
            "vocab_size",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "activation_function": "relu"}"#,
            "activation_function",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 5}"#,
            "n_head 5",
        ),
        (r#"[1, 2]"#, "object"),
    ] {
        std::fs::write(&p, text).unwrap();
        let (e, s) = err_string(Gpt2Config::from_json_file(&p));
        assert!(matches!(e, Error::Config(_)), "{s}");
        assert!(s.contains(needle) && s.contains("config.json"), "{s}");
    }
    std::fs::write(&p, "{ not json").unwrap();
    let (e, s) = err_string(Gpt2Config::from_json_file(&p));
    assert!(
        matches!(e, Error::Json { .. }) && s.contains("config.json"),
        "{s}"
    );
    let (e, s) = err_string(Gpt2Config::from_json_file(&dir.join("nope.json")));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("nope.json"),
        "{s}"
    );
}

#[test]
fn init_is_deterministic_and_nontrivial() {
    let cfg = Gpt2Config::named("small-test").unwrap();
    let a = Gpt2Weights::init(&cfg, 7).unwrap();
    let b = Gpt2Weights::init(&cfg, 7).unwrap();
    let c = Gpt2Weights::init(&cfg, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.wte, c.wte);
    assert_ne!(a.layers[2].mlp_proj_w, c.layers[2].mlp_proj_w);
    assert_eq!(a.layers.len(), 3);
    assert_eq!(a.wte.len(), 311 * 50);
    assert_eq!(a.wpe.len(), 128 * 50);
    assert_eq!(a.layers[0].c_fc_w.len(), 50 * 123);
    assert_eq!(a.layers[0].mlp_proj_w.len(), 123 * 50);
    let count: usize = a
        .named_tensors()
        .iter()
        .map(|(_, t, s)| {
            assert_eq!(t.len(), s.iter().product::<usize>());
            t.len()
        })
        .sum();
    assert_eq!(count, cfg.num_params());
    // LN gains perturbed around 1, biases non-zero, std about 0.02.
    let l = &a.layers[0];
    assert!(l.ln_1_g.iter().all(|&g| (g - 1.0).abs() < 0.6) && l.ln_1_g.iter().any(|&g| g != 1.0));
    assert!(l.ln_2_b.iter().any(|&x| x != 0.0) && l.c_attn_b.iter().any(|&x| x != 0.0));
    let std = (a.wte.iter().map(|x| (x * x) as f64).sum::<f64>() / a.wte.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "wte std {std}");
    let pstd = (l.attn_proj_w.iter().map(|x| (x * x) as f64).sum::<f64>()
        / l.attn_proj_w.len() as f64)
        .sqrt();
    assert!((pstd - 0.02 / 6f64.sqrt()).abs() < 0.002, "proj std {pstd}");
    // Bad configs are refused.
    let mut bad = cfg.clone();
    bad.n_head = 7;
    assert!(matches!(Gpt2Weights::init(&bad, 0), Err(Error::Config(_))));
}
