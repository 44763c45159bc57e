//! OpenAI's embeddings route, `POST /v1/embeddings`: `input` as a string or a list of strings,
//! `encoding_format` `float` or `base64` (the little-endian f32 bytes, as OpenAI's SDKs decode
//! them), `dimensions`; `model` and `user` are accepted and ignored. Vectors are L2-normalised (as
//! OpenAI's and TEI's are); over-long texts are truncated only with `--auto-truncate`. Errors use
//! OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, with the TEI statuses.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::tei::Inputs;
use super::{ApiError, AppState, JsonBody};
use crate::engine::EmbedOptions;
use crate::tokenize::collect_per_text;

#[derive(Deserialize)]
pub(crate) struct EmbeddingsRequest {
    input: Inputs,
    #[allow(dead_code)]
    model: Option<String>,
    #[allow(dead_code)]
    user: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

/// An [`ApiError`] in OpenAI's shape.
pub(crate) struct OpenAiError(ApiError);

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = if e.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = json!({
            "error": { "message": e.message, "type": kind, "param": null, "code": e.error_type }
        });
        (e.status, Json(body)).into_response()
    }
}

pub(crate) async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Result<JsonBody<EmbeddingsRequest>, ApiError>,
) -> Result<Json<Value>, OpenAiError> {
    let JsonBody(r) = body.map_err(OpenAiError)?;
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OpenAiError(ApiError::unprocessable(format!(
                "encoding_format {other:?} is not supported (float or base64)"
            ))))
        }
    };
    let texts = r.input.into_vec();
    let options = EmbedOptions {
        normalize: Some(true),
        dim: r.dimensions,
        ..EmbedOptions::default()
    };
    let refuse = s.refuses_overlong(None);
    let model = s.options.model_id.clone();
    s.call("v1/embeddings", texts.len(), refuse, move |e| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = e.embed(&refs, &options).map_err(ApiError::from_engine)?;
        // The usage counts the model's tokens (special tokens included), as tokenised for it.
        let tokens: usize = collect_per_text(
            e.tokenizer()
                .and_then(|t| t.encode_each(&refs))
                .map_err(ApiError::from_engine)?,
        )
        .map_err(ApiError::from_engine)?
        .iter()
        .map(Vec::len)
        .sum();
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(index, v)| {
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({ "object": "embedding", "embedding": embedding, "index": index })
            })
            .collect();
        Ok(json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }))
    })
    .await
    .map(Json)
    .map_err(OpenAiError)
}
