//! wgpipe inside your own program: load a checkpoint once, pipelined over
//! two devices, and generate from two prompts twice on the same loaded
//! pipeline — the second call reuses the devices and the resident weights.
//!
//!     cargo run --release --example embed [CHECKPOINT_DIR]
//!
//! Without an argument it uses the small GPT-2 checkpoint in
//! `tests/data/tiny-gpt2-gen` (random weights, a real byte-level BPE
//! tokenizer). It prints each generated text, then per call the time to the
//! first token, the inter-token latency and tokens/s, and the stage uploads
//! per device (one each, however many calls).

use std::path::PathBuf;

use wgpipe::{GenerateOptions, ModelSource, Pipeline, PipelineConfig, Workload};

fn main() -> wgpipe::Result<()> {
    // 1. One thread per software device, so the two stages run in parallel
    //    (Mesa reads this once, before any device opens; no effect on GPUs).
    if std::env::var_os("LP_NUM_THREADS").is_none() {
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-gpt2-gen"),
        PathBuf::from,
    );
    run(dir)
}

/// Steps 2 to 4 on the checkpoint in `dir`.
pub fn run(dir: PathBuf) -> wgpipe::Result<()> {
    // 2. Build the pipeline once: two devices, the split chosen for decoding
    //    two groups of one sequence, every stage's weights uploaded now.
    let pipeline = Pipeline::new(PipelineConfig {
        devices: "2".into(),
        workload: Workload::Decode {
            sequences: 1,
            groups: 2,
            steps: 16,
        },
        ..PipelineConfig::new(ModelSource::Checkpoint(dir))
    })?;
    println!(
        "{} on {}",
        pipeline.split(),
        pipeline.device_names().join(", ")
    );

    // 3. Generate twice from the same two prompts: greedy, 16 new tokens,
    //    the two prompts in flight at once (one per device).
    let prompts = ["The pipeline".into(), "Every device".into()];
    let opts = GenerateOptions {
        max_new_tokens: 16,
        ..GenerateOptions::default()
    };
    for call in 1..=2 {
        let out = pipeline.generate(&prompts, &opts)?;
        for s in &out.sequences {
            println!("[call {call}] {}", s.text.as_deref().unwrap_or("?"));
        }
        let m = &out.metrics;
        println!(
            "[call {call}] TTFT {:.1} ms, ITL p50 {:.1} ms, {:.1} tokens/s",
            m.ttft_ms, m.itl_ms_p50, m.tokens_per_s
        );
    }

    // 4. The weights went up once: one stage upload per device.
    println!("stage uploads per device: {:?}", pipeline.weight_uploads());
    Ok(())
}
