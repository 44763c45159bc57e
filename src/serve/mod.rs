//! `modernbert serve`: one engine behind an HTTP server (tokio + axum) that speaks
//! text-embeddings-inference's routes (`/embed`, `/rerank`, `/predict`, `/tokenize`, `/info`,
//! `/health`, `/metrics`) and OpenAI's `/v1/embeddings`, so their clients work unchanged.
//!
//! - Concurrency: every request runs its engine call on tokio's blocking pool; the engine merges
//!   concurrent calls into shared forwards (`coalesce`). At most `max_concurrent_requests` run at
//!   once; the next one gets 429 at once (TEI's `Overloaded`).
//! - Errors: a JSON body `{"error", "error_type"}` (OpenAI's `{"error": {"message", "type", ...}}`
//!   on `/v1`), with TEI's statuses: 400 malformed JSON or no inputs, 404 unknown route, 413 too
//!   many inputs (`max_client_batch_size`), a text too long with truncation off, or a body past
//!   the payload limit, 422 a field of the wrong type or value, 424 the model cannot do it or
//!   failed (non-finite outputs name the text), 429 overloaded. A bad request never reaches the
//!   engine and never affects another.
//! - A client that disconnects withdraws its call if it is still queued.
//! - Shutdown (Ctrl-C or SIGTERM): the listener closes, accepted requests finish, then the
//!   process exits.

mod metrics;
mod openai;
mod tei;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::coalesce::{with_call_limits, CallLimits};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The server's settings (TEI's flags and defaults, but loopback by default).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub hostname: String,
    pub port: u16,
    /// The name `/info` and `/v1/embeddings` report.
    pub model_id: String,
    /// Inputs per request, at most (413 past it).
    pub max_client_batch_size: usize,
    /// Requests in flight, at most (429 past it).
    pub max_concurrent_requests: usize,
    /// Truncate over-long texts when a request does not say (`truncate`); else 413.
    pub auto_truncate: bool,
    /// Request body bytes, at most (413 past it).
    pub payload_limit: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            hostname: "127.0.0.1".into(),
            port: 3000,
            model_id: String::new(),
            max_client_batch_size: 32,
            max_concurrent_requests: 512,
            auto_truncate: false,
            payload_limit: 2_000_000,
        }
    }
}

pub(crate) struct AppState {
    pub engine: Engine,
    pub options: ServeOptions,
    /// One per request in flight; held until its engine call returns, also when the client left.
    pub permits: Arc<Semaphore>,
    pub metrics: metrics::Metrics,
}

/// Serve `engine` until Ctrl-C or SIGTERM. Prints `listening on http://ADDR` on stderr once the
/// socket is bound (port 0: a free port, named there).
pub fn serve(engine: Engine, options: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: "tokio runtime".into(),
            message: e.to_string(),
        })?;
    runtime.block_on(run(engine, options))
}

async fn run(engine: Engine, options: ServeOptions) -> Result<()> {
    let addr = format!("{}:{}", options.hostname, options.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(&addr, format!("cannot listen: {e}")))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| Error::io(&addr, e))?;
    let state = Arc::new(AppState {
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
        metrics: metrics::Metrics::default(),
        engine,
        options,
    });
    let app = router(state);
    eprintln!("listening on http://{local}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::io(&addr, e))?;
    eprintln!("shut down: every accepted request answered");
    Ok(())
}

/// The server's routes over `engine`, without a socket: for driving requests in-process (the
/// `http_requests` fuzz target).
pub fn router_for(engine: Engine, options: ServeOptions) -> Router {
    router(Arc::new(AppState {
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
        metrics: metrics::Metrics::default(),
        engine,
        options,
    }))
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.options.payload_limit;
    Router::new()
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/predict", post(tei::predict))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        .route("/health", get(tei::health))
        .route("/metrics", get(metrics::render))
        .route("/v1/embeddings", post(openai::embeddings))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// An error response: TEI's `{"error", "error_type"}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "Validation", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation", message)
    }

    pub fn empty(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Empty", message)
    }

    /// The status of an engine error: the input's fault (413 / 422) or the model's (424).
    pub fn from_engine(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::TextTooLong(_) => Self::validation(message),
            Error::Input(_) | Error::TooLarge(_) => Self::unprocessable(message),
            Error::Tokenizer(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Tokenizer", message),
            Error::Timeout(_) | Error::Cancelled(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", message)
            }
            _ => Self::new(StatusCode::FAILED_DEPENDENCY, "Backend", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "error_type": self.error_type });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON request body whose rejections are JSON errors too: 400 for bytes that are not JSON,
/// 422 for JSON of the wrong shape, 413 past the payload limit, 415 without a JSON content type.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Validation",
                "expected a request with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), "Validation", r.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ApiError::unprocessable(format!("invalid request: {e}")),
                _ => ApiError::new(StatusCode::BAD_REQUEST, "Validation", format!("malformed JSON: {e}")),
            }
        })
    }
}

/// Sets its flag when dropped before [`disarm`](Self::disarm): a handler future dropped because
/// its client went away withdraws the call it queued.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl AppState {
    /// Run `call` on the engine from the blocking pool, within the concurrency limit; `refuse`
    /// makes over-long texts the request's error (truncation off). Records the request's metrics
    /// under `route`.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        route: &'static str,
        inputs: usize,
        refuse_overlong: bool,
        call: impl FnOnce(&Engine) -> std::result::Result<T, ApiError> + Send + 'static,
    ) -> std::result::Result<T, ApiError> {
        let started = Instant::now();
        let result = self.call_inner(inputs, refuse_overlong, call).await;
        self.metrics
            .record(route, inputs, started.elapsed(), result.as_ref().err());
        result
    }

    async fn call_inner<T: Send + 'static>(
        self: &Arc<Self>,
        inputs: usize,
        refuse_overlong: bool,
        call: impl FnOnce(&Engine) -> std::result::Result<T, ApiError> + Send + 'static,
    ) -> std::result::Result<T, ApiError> {
        if inputs == 0 {
            return Err(ApiError::empty("`inputs` cannot be empty"));
        }
        let max = self.options.max_client_batch_size;
        if inputs > max {
            return Err(ApiError::validation(format!(
                "batch size {inputs} > maximum allowed batch size {max}"
            )));
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Overloaded", "Model is overloaded"))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(Some(cancel.clone()));
        let state = self.clone();
        let limits = CallLimits {
            cancel: Some(cancel),
            refuse_overlong,
            ..CallLimits::default()
        };
        // The permit moves into the blocking task: a request whose client left still counts
        // until its engine call (which may be running a shared forward) returns.
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_call_limits(limits, || call(&state.engine))
            }))
        })
        .await;
        guard.disarm();
        match joined {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Backend",
                "internal error (a bug in the server): the engine call panicked",
            )),
        }
    }

    /// Whether this request refuses over-long texts: its own `truncate`, else `--auto-truncate`.
    pub fn refuses_overlong(&self, truncate: Option<bool>) -> bool {
        !truncate.unwrap_or(self.options.auto_truncate)
    }
}
