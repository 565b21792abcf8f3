//! Train the tiny model on a token file for a few hundred steps, pipelined
//! over two devices with 1F1B, and watch the loss fall.
//!
//!     cargo run --release --example train_tokens
//!
//! The token file is made here: a nanoGPT-style `train.bin` (little-endian
//! uint16) holding a small synthetic "language" — sentences drawn from a few
//! fixed word patterns — so there is something to learn. Any train.bin whose
//! ids fit the vocabulary works the same way (`wgpipe train --data FILE`).

use wgpipe::data::{write_token_file, TokenStream};
use wgpipe::{
    ModelSource, Optimizer, Pipeline, PipelineConfig, ScheduleKind, Split, TrainConfig, Workload,
};

fn main() -> wgpipe::Result<()> {
    // As `wgpipe train` does: on Mesa's software adapters, one thread per
    // device, so the two pipeline devices run in parallel (no effect on GPUs).
    if std::env::var_os("LP_NUM_THREADS").is_none() {
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    // 1. A token stream: 20k tokens of patterned "sentences" over 97 ids.
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let patterns: [&[u16]; 4] = [
        &[5, 17, 33, 2],
        &[8, 17, 41, 60, 2],
        &[12, 70, 33, 2],
        &[90, 3, 3, 41, 2],
    ];
    let mut tokens = Vec::new();
    while tokens.len() < 20_000 {
        let p = patterns[next(4) as usize];
        tokens.extend_from_slice(p);
        tokens.push(20 + next(10) as u16); // a little noise between sentences
    }
    let dir = std::env::temp_dir().join("wgpipe-train-example");
    std::fs::create_dir_all(&dir).map_err(|e| wgpipe::Error::io(&dir, e))?;
    let path = dir.join("train.bin");
    write_token_file(&path, &tokens)?;

    // 2. The tiny model, randomly initialised, on two devices: 1F1B, four
    //    microbatches of one 32-token window each, the layers split evenly.
    let (batch, seq) = (4, 32);
    let pipeline = Pipeline::new(PipelineConfig {
        devices: "2".into(),
        split: Split::Even,
        schedule: ScheduleKind::OneFOneB,
        microbatches: Some(batch),
        workload: Workload::Train {
            sequences: 1,
            tokens: seq,
        },
        ..PipelineConfig::new(ModelSource::Preset {
            name: "tiny".into(),
            seed: 0,
        })
    })?;

    // 3. A trainer on the pipeline's devices: AdamW, gradients clipped to 1.
    let mut trainer = pipeline.trainer(TrainConfig {
        optimizer: Optimizer::AdamW {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        grad_clip: Some(1.0),
        recompute: false,
        batch,
        seq,
    })?;
    let stream = TokenStream::read(&path, pipeline.config().vocab_size)?;
    let mut windows = stream.windows(batch, seq, 0)?;

    // 4. Train: loss every 25 steps.
    for step in 0..300 {
        let report = trainer.train_step(&windows.next_batch())?;
        if step % 25 == 0 || step == 299 {
            println!("step {step:>3}  loss {:.4}", report.pass.loss);
        }
    }
    println!(
        "(a uniform guess over 97 tokens is ln 97 = {:.4})",
        (97f64).ln()
    );
    Ok(())
}
