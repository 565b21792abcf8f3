//! `wgpipe serve`: an OpenAI-compatible HTTP server over a [`Pipeline`]
//! whose weights stay resident, batching requests continuously across its
//! stages.
//!
//! - [`engine`]: the batcher — a bounded queue, KV-cache slots, and the
//!   passes it hands the pipeline's first device
//!   ([`crate::workload::decode::continuous`] runs them);
//! - [`http`]: the API (axum on tokio);
//! - [`chat`]: the checkpoint's chat template;
//! - [`metrics`]: what `/metrics` reports.

pub mod chat;
pub mod engine;
pub mod http;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use engine::{Engine, EngineConfig, Event, Finish, GenRequest};

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;

/// How the server is reached and named.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub model_name: String,
    pub api_key: Option<String>,
    /// After a stop is asked for: how long requests in flight may take
    /// before they are failed.
    pub grace: Duration,
}

/// A started server: its address, and its engine.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    app: Arc<http::App>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Start the engine on `pipeline` and bind `addr` (port 0: any free one).
    pub async fn bind(
        pipeline: Arc<Pipeline>,
        engine_cfg: EngineConfig,
        cfg: &ServerConfig,
        chat: Option<chat::ChatTemplate>,
        addr: &str,
    ) -> Result<Server> {
        let vocab = pipeline.config().vocab_size;
        let engine = Engine::start(pipeline, engine_cfg)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Input(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("the listening address: {e}")))?;
        let app = Arc::new(http::App {
            engine: engine.clone(),
            chat,
            model: cfg.model_name.clone(),
            api_key: cfg.api_key.clone(),
            vocab,
            created: http::now_s(),
        });
        Ok(Server {
            addr,
            engine,
            app,
            listener,
        })
    }

    /// Serve until `stop` completes; then take no new requests, let those
    /// in flight finish for up to `grace` (failing what is left after it),
    /// and return once every connection has closed.
    pub async fn run(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<()> {
        let engine = self.engine.clone();
        let shutdown = async move {
            stop.await;
            engine.stop();
            let e = engine.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                e.abort("the server stopped before this request finished");
            });
        };
        axum::serve(self.listener, http::router(self.app))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Other(format!("the HTTP server failed: {e}")))?;
        self.engine.stop();
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.wait_ended(grace))
            .await
            .map_err(|e| Error::Other(format!("waiting for the pipeline: {e}")))?;
        Ok(())
    }
}
