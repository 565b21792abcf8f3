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
use wgpipe::device::place_devices;
use wgpipe::executor::train::{Optimizer, TrainOptions, Trainer};
use wgpipe::executor::DeviceGroup;
use wgpipe::model::{Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Schedule, ScheduleKind};

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

    // 2. The tiny model, randomly initialised, on two devices.
    let cfg = Gpt2Config::named("tiny")?;
    let w = Gpt2Weights::init(&cfg, 0)?;
    let gpus = place_devices("2", 1)?.open()?;
    let groups: Vec<DeviceGroup> = gpus.iter().map(|g| DeviceGroup::single(&g[0])).collect();

    // 3. 1F1B over 2 devices, 4 microbatches of one 32-token window each.
    let (batch, seq, m) = (4, 32, 4);
    let schedule = Schedule::generate(ScheduleKind::OneFOneB, 2, m, 1, false)?;
    let mut trainer = Trainer::new(&groups, &w, &schedule, batch, seq, &TrainOptions::default())?;
    let stream = TokenStream::read(&path, cfg.vocab_size)?;
    let mut windows = stream.windows(batch, seq, 0)?;
    let opt = Optimizer::AdamW {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };

    // 4. Train: loss every 25 steps.
    for step in 0..300 {
        let run = trainer.forward_backward(&windows.next_batch())?;
        trainer.optimizer_step(&opt, Some(1.0))?;
        if step % 25 == 0 || step == 299 {
            println!("step {step:>3}  loss {:.4}", run.loss);
        }
    }
    println!(
        "(a uniform guess over 97 tokens is ln 97 = {:.4})",
        (97f64).ln()
    );
    Ok(())
}
