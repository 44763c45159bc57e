//! text-embeddings-inference's routes, with its request and response JSON: `/embed`, `/rerank`,
//! `/predict`, `/tokenize`, `/info`, `/health`. Where TEI and sentence-transformers differ the
//! engine's (sentence-transformers') rules hold, e.g. an empty string is embedded as
//! `[CLS] [SEP]`, not refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, AppState, JsonBody};
use crate::engine::{Classification, EmbedOptions, Engine};
use crate::quantize::{quantize, Precision, Quantized};
use crate::tokenize::{collect_per_text, TokenSpan};

type Reply<T> = Result<Json<T>, ApiError>;

/// `"text"` or `["text", ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(s) => vec![s],
            Inputs::Many(v) => v,
        }
    }
}

fn yes() -> bool {
    true
}

/// TEI's `truncation_direction`: only `Right` (keep the first tokens) is implemented.
pub(crate) fn check_direction(d: &Option<String>) -> Result<(), ApiError> {
    match d.as_deref() {
        None | Some("Right") | Some("right") => Ok(()),
        Some(other) => Err(ApiError::unprocessable(format!(
            "truncation_direction {other:?} is not supported (only \"Right\")"
        ))),
    }
}

fn engine_err(e: crate::Error) -> ApiError {
    ApiError::from_engine(e)
}

#[derive(Deserialize)]
pub(crate) struct EmbedRequest {
    inputs: Inputs,
    #[serde(default = "yes")]
    normalize: bool,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    dimensions: Option<usize>,
    /// Not TEI's: sentence-transformers' `precision` (`float32`, `int8`, `uint8`, `binary`,
    /// `ubinary`), calibrated on the request's own texts as `quantize_embeddings` does.
    precision: Option<String>,
}

/// `POST /embed` → `[[f32, ...], ...]`, one vector per input (integers with `precision`).
pub(crate) async fn embed(State(s): State<Arc<AppState>>, JsonBody(r): JsonBody<EmbedRequest>) -> Reply<Value> {
    check_direction(&r.truncation_direction)?;
    let precision = match r.precision.as_deref() {
        None => Precision::Float32,
        Some(p) => Precision::parse(p).map_err(engine_err)?,
    };
    let texts = r.inputs.into_vec();
    let options = EmbedOptions {
        normalize: Some(r.normalize),
        dim: r.dimensions,
        prompt_name: r.prompt_name,
        ..EmbedOptions::default()
    };
    let refuse = s.refuses_overlong(r.truncate);
    s.call("embed", texts.len(), refuse, move |e| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = e.embed(&refs, &options).map_err(engine_err)?;
        if precision == Precision::Float32 {
            return Ok(json!(rows));
        }
        let (n, dim) = (rows.len(), rows[0].len());
        let width = precision.width(n, dim);
        Ok(
            match quantize(rows.concat(), dim, precision, None).map_err(engine_err)? {
                Quantized::F32(v) => json!(v.chunks(width).collect::<Vec<_>>()),
                Quantized::I8(v) => json!(v.chunks(width).collect::<Vec<_>>()),
                Quantized::U8(v) => json!(v.chunks(width).collect::<Vec<_>>()),
            },
        )
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
pub(crate) struct RerankRequest {
    query: String,
    texts: Vec<String>,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
}

#[derive(Serialize)]
pub(crate) struct Rank {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    score: f32,
}

/// `POST /rerank` → `[{"index", "score", "text"?}]`, most relevant first.
pub(crate) async fn rerank(State(s): State<Arc<AppState>>, JsonBody(r): JsonBody<RerankRequest>) -> Reply<Vec<Rank>> {
    check_direction(&r.truncation_direction)?;
    if r.texts.is_empty() {
        return Err(ApiError::empty("`texts` cannot be empty"));
    }
    let refuse = s.refuses_overlong(r.truncate);
    let (query, texts, raw, return_text) = (r.query, r.texts, r.raw_scores, r.return_text);
    s.call("rerank", texts.len(), refuse, move |e| {
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query.as_str(), t.as_str())).collect();
        let classes = collect_per_text(e.classify_pairs_each(&pairs).map_err(engine_err)?).map_err(engine_err)?;
        let mut ranks: Vec<Rank> = classes
            .iter()
            .enumerate()
            .map(|(index, c)| Rank {
                index,
                text: return_text.then(|| texts[index].clone()),
                score: if raw {
                    *c.logits.last().expect("a classifier has labels")
                } else {
                    Engine::relevance(&c.logits)
                },
            })
            .collect();
        ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(ranks)
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
pub(crate) struct PredictRequest {
    inputs: Value,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
}

#[derive(Serialize)]
pub(crate) struct Prediction {
    score: f32,
    label: String,
}

/// One `/predict` input: a text or a (first, second) pair.
enum PredictInput {
    Text(String),
    Pair(String, String),
}

/// TEI's `/predict` inputs: `"text"`, `["first", "second"]` (one pair), or a list of `["text"]` /
/// `["first", "second"]` lists (a batch). The flag says whether the reply is a batch.
fn predict_inputs(v: Value) -> Result<(Vec<PredictInput>, bool), ApiError> {
    fn strings(items: &[Value]) -> Option<Vec<String>> {
        items.iter().map(|v| v.as_str().map(str::to_string)).collect()
    }
    fn one(items: Vec<String>) -> Result<PredictInput, ApiError> {
        match <[String; 2]>::try_from(items) {
            Ok([a, b]) => Ok(PredictInput::Pair(a, b)),
            Err(v) if v.len() == 1 => Ok(PredictInput::Text(v.into_iter().next().expect("one"))),
            Err(v) => Err(ApiError::unprocessable(format!(
                "an input of `inputs` is a text or a pair of texts, not {} texts",
                v.len()
            ))),
        }
    }
    let bad = || ApiError::unprocessable("`inputs` must be a string, a pair of strings, or a list of those");
    match v {
        Value::String(s) => Ok((vec![PredictInput::Text(s)], false)),
        Value::Array(items) if items.is_empty() => Err(ApiError::empty("`inputs` cannot be empty")),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok((vec![one(strings(&items).expect("all strings"))?], false))
        }
        Value::Array(items) => {
            let batch = items
                .iter()
                .map(|item| match item {
                    Value::Array(inner) => strings(inner).ok_or_else(bad).and_then(one),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((batch, true))
        }
        _ => Err(bad()),
    }
}

/// Scores of every label, highest first: softmax (sigmoid for one label), or the raw logits.
fn predictions(e: &Engine, c: &Classification, raw: bool) -> Vec<Prediction> {
    let scores: Vec<f32> = if raw {
        c.logits.clone()
    } else if c.logits.len() == 1 {
        vec![Engine::relevance(&c.logits)]
    } else {
        crate::reference::ops::softmax(&c.logits)
    };
    let mut out: Vec<Prediction> = scores
        .into_iter()
        .enumerate()
        .map(|(i, score)| Prediction {
            score,
            label: e
                .config
                .id2label
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("LABEL_{i}")),
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// `POST /predict` → `[{"score", "label"}, ...]` for one input, `[[...], ...]` for a batch.
pub(crate) async fn predict(State(s): State<Arc<AppState>>, JsonBody(r): JsonBody<PredictRequest>) -> Reply<Value> {
    check_direction(&r.truncation_direction)?;
    let (inputs, batch) = predict_inputs(r.inputs)?;
    let refuse = s.refuses_overlong(r.truncate);
    let raw = r.raw_scores;
    s.call("predict", inputs.len(), refuse, move |e| {
        // Texts and pairs are two engine calls; the results go back in input order.
        let texts: Vec<&str> = inputs
            .iter()
            .filter_map(|i| match i {
                PredictInput::Text(t) => Some(t.as_str()),
                PredictInput::Pair(..) => None,
            })
            .collect();
        let pairs: Vec<(&str, &str)> = inputs
            .iter()
            .filter_map(|i| match i {
                PredictInput::Pair(a, b) => Some((a.as_str(), b.as_str())),
                PredictInput::Text(_) => None,
            })
            .collect();
        let mut of_texts = if texts.is_empty() {
            Vec::new()
        } else {
            e.classify_each(&texts).map_err(engine_err)?
        }
        .into_iter();
        let mut of_pairs = if pairs.is_empty() {
            Vec::new()
        } else {
            e.classify_pairs_each(&pairs).map_err(engine_err)?
        }
        .into_iter();
        let results: Vec<_> = inputs
            .iter()
            .map(|i| match i {
                PredictInput::Text(_) => of_texts.next(),
                PredictInput::Pair(..) => of_pairs.next(),
            })
            .map(|r| r.expect("one result per input"))
            .collect();
        let classes = collect_per_text(results).map_err(engine_err)?;
        let mut per_input: Vec<Vec<Prediction>> = classes.iter().map(|c| predictions(e, c, raw)).collect();
        Ok(if batch {
            json!(per_input)
        } else {
            json!(per_input.remove(0))
        })
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
pub(crate) struct TokenizeRequest {
    inputs: Inputs,
    #[serde(default = "yes")]
    add_special_tokens: bool,
    prompt_name: Option<String>,
}

/// `POST /tokenize` → `[[{"id", "text", "special", "start", "stop"}, ...], ...]` (byte offsets
/// into the prompted text; `null` for special tokens).
pub(crate) async fn tokenize(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<TokenizeRequest>,
) -> Reply<Vec<Vec<TokenSpan>>> {
    let texts = r.inputs.into_vec();
    let (special, prompt_name) = (r.add_special_tokens, r.prompt_name);
    s.call("tokenize", texts.len(), false, move |e| {
        let options = EmbedOptions {
            prompt_name,
            ..EmbedOptions::default()
        };
        let prompt = e.prompt_for(&options).map_err(engine_err)?;
        let tokenizer = e.tokenizer().map_err(engine_err)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tokenizer
                    .spans(&format!("{prompt}{t}"), special)
                    .map_err(|err| engine_err(err.for_text(i)))
            })
            .collect()
    })
    .await
    .map(Json)
}

/// `GET /info`: TEI's fields, with `model_type` from the heads the checkpoint has.
pub(crate) async fn info(State(s): State<Arc<AppState>>) -> Json<Value> {
    let e = &s.engine;
    let o = &s.options;
    let model_type = match e.num_labels() {
        Ok(labels) => {
            let id2label: BTreeMap<String, String> = (0..labels)
                .map(|i| {
                    (
                        i.to_string(),
                        e.config
                            .id2label
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("LABEL_{i}")),
                    )
                })
                .collect();
            let label2id: BTreeMap<String, usize> = id2label
                .iter()
                .map(|(i, l)| (l.clone(), i.parse().unwrap_or(0)))
                .collect();
            let kind = if labels == 1 { "reranker" } else { "classifier" };
            json!({ kind: { "id2label": id2label, "label2id": label2id } })
        }
        Err(_) => {
            let pooling = e.layout.pooling.unwrap_or(crate::reference::ops::Pooling::Mean);
            json!({ "embedding": { "pooling": pooling } })
        }
    };
    Json(json!({
        "model_id": o.model_id,
        "model_sha": null,
        "model_dtype": e.backbone.dtype_name(),
        "model_type": model_type,
        "max_concurrent_requests": o.max_concurrent_requests,
        "max_input_length": e.tokenizer().map(|t| t.max_len()).unwrap_or(e.config.max_position_embeddings),
        "max_batch_tokens": e.max_batch_tokens(),
        "max_batch_requests": null,
        "max_client_batch_size": o.max_client_batch_size,
        "auto_truncate": o.auto_truncate,
        "tokenization_workers": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "device": e.backbone.device_name(),
    }))
}

/// `GET /health`: 200 once the model is loaded (the server listens only after that).
pub(crate) async fn health() -> StatusCode {
    StatusCode::OK
}
