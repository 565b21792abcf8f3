//! `wgpipe serve`: the OpenAI-compatible server ([`wgpipe::serve`]) on the
//! model and layout flags of `generate`, until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use wgpipe::serve::chat::ChatTemplate;
use wgpipe::serve::{EngineConfig, Server, ServerConfig};
use wgpipe::{Error, Result};

use super::generate::DecodeOn;
use super::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub on: DecodeOn,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Sequences decoding at once: the KV-cache slots.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Requests waiting for a slot; one more is answered 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Prompt tokens a pass may carry beside its decode rows (a longer
    /// prompt is read over several passes, between the others' tokens).
    #[arg(long, default_value_t = 32)]
    pub prefill_chunk: usize,
    /// Every request must carry `Authorization: Bearer KEY` (else 401).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model's name in the API (default: the checkpoint's directory name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Seconds requests in flight may take to finish after SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    pub grace: f64,
}

impl ServeArgs {
    pub fn engine(&self, p: usize) -> EngineConfig {
        EngineConfig {
            max_batch: self.max_batch,
            max_queue: self.max_queue,
            groups: self.on.groups.unwrap_or(p),
            prefill_chunk: self.prefill_chunk,
        }
    }

    pub fn model_name(&self) -> String {
        if let Some(n) = &self.served_model_name {
            return n.clone();
        }
        match &self.on.model.checkpoint {
            Some(dir) => dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string()),
            None => self.on.model.model.clone(),
        }
    }
}

pub fn run(args: &ServeArgs, cx: &Context) -> Result<()> {
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        return Err(Error::Input(format!(
            "--grace must be a number of seconds >= 0, got {}",
            args.grace
        )));
    }
    let p = args.on.stages()?;
    let ecfg = args.engine(p);
    if ecfg.max_batch == 0 || ecfg.groups == 0 || ecfg.prefill_chunk == 0 || args.max_queue == 0 {
        return Err(Error::Input(
            "--max-batch, --max-queue, --groups and --prefill-chunk must be at least 1".into(),
        ));
    }
    let chat = match &args.on.model.checkpoint {
        Some(dir) => ChatTemplate::load(dir)?,
        None => None,
    };
    let pipeline = args
        .on
        .pipeline(cx, ecfg.max_batch.div_ceil(ecfg.groups), ecfg.groups, 64)?;
    let (precision, notes) = pipeline.precision()?;
    let storage = wgpipe::device::dtype::describe(&precision, "", &notes);
    let pipeline = Arc::new(pipeline);
    let cfg = ServerConfig {
        model_name: args.model_name(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        grace: Duration::from_secs_f64(args.grace),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("starting the async runtime: {e}")))?;
    rt.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let server = Server::bind(pipeline.clone(), ecfg, &cfg, chat, &addr).await?;
        eprintln!(
            "wgpipe serve: `{}` on {p} device(s) ({}), {} group(s) in flight, {} KV-cache slots; listening on http://{}",
            cfg.model_name,
            pipeline.split(),
            ecfg.groups,
            ecfg.max_batch,
            server.addr
        );
        eprintln!("wgpipe serve: {storage}");
        let engine = server.engine.clone();
        let stop = async move {
            stop_signal().await;
            engine.stop();
            eprintln!("wgpipe serve: stopping: no new requests; finishing those in flight");
        };
        server.run(stop, cfg.grace).await?;
        eprintln!("wgpipe serve: stopped");
        Ok(())
    })
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
