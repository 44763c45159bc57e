//! What a checkpoint directory holds around the transformer (spec §6): sentence-transformers
//! modules (`modules.json`, `1_Pooling`, `Normalize`, `Dense`, prompts) and PyLate ColBERT settings
//! (`[Q] `/`[D] ` prefixes, query expansion, skiplist, the projection).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Pooling;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::Linear;
use crate::weights::TensorStore;

/// sentence-transformers settings of a directory (absent parts are `None`/empty).
#[derive(Debug, Default, Clone)]
pub struct SentenceTransformersLayout {
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    /// Directory of a `Dense` module (sentence-transformers or PyLate), if any.
    pub dense_dir: Option<PathBuf>,
    /// Prompts by name: sentence-transformers' defaults `query` and `document` (both empty),
    /// overridden by `config_sentence_transformers.json`.
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// `similarity_fn_name` of `config_sentence_transformers.json` (sentence-transformers' default:
    /// cosine; PyLate writes `MaxSim`).
    pub similarity_fn_name: Option<String>,
    /// `tokenizer_config.json`'s `model_max_length`, where it is a real bound (transformers writes
    /// 1e30 for "none"): sentence-transformers' limit when `sentence_bert_config.json` sets none.
    pub tokenizer_max_length: Option<usize>,
    /// `sentence_bert_config.json`'s `do_lower_case`: texts are lowercased before tokenising.
    pub do_lower_case: bool,
    pub max_seq_length: Option<usize>,
    pub colbert: Option<ColbertSettings>,
    /// The Pooling module's `include_prompt` (default true): false means a prompt's tokens are
    /// left out of mean pooling, which the engine does not implement (it refuses such calls).
    pub pooling_includes_prompt: bool,
    /// sentence-transformers' `Transformer` module (listed in `modules.json`, or the one it builds
    /// for a directory without `modules.json`) strips each (prompted) text of surrounding
    /// whitespace (Python's `str.strip()`) before tokenising: see [`st_strip`].
    pub strips_text: bool,
}

/// Python's `str.strip()` with no argument: removes the characters for which `str.isspace()`
/// holds (Unicode White_Space plus the separators U+001C–U+001F).
pub fn st_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// PyLate ColBERT settings (`config_sentence_transformers.json`), with PyLate's defaults.
#[derive(Debug, Clone)]
pub struct ColbertSettings {
    pub query_prefix: String,
    pub document_prefix: String,
    pub query_length: usize,
    pub document_length: usize,
    pub do_query_expansion: bool,
    pub attend_to_expansion_tokens: bool,
    pub skiplist_words: Vec<String>,
}

/// An optional JSON file: `None` when nothing is at `path`; what is there must be a readable,
/// regular, bounded JSON file (an unreadable or malformed one is an error, never a silent default).
fn read_json(path: &Path) -> Result<Option<Value>> {
    if !limits::exists(path) {
        return Ok(None);
    }
    let text = limits::read_regular_text(path, limits::file_bound::JSON_CONFIG)?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON ({e})"),
    })
}

impl SentenceTransformersLayout {
    /// Read the sentence-transformers / PyLate files of `dir` (none of them is required).
    pub fn read(dir: &Path) -> Result<Self> {
        let mut layout = SentenceTransformersLayout {
            pooling_includes_prompt: true,
            ..Default::default()
        };
        for name in ["query", "document"] {
            layout.prompts.insert(name.into(), String::new());
        }
        let modules_path = dir.join("modules.json");
        let mut is_pylate = false;
        let modules = read_json(&modules_path)?;
        // Without modules.json sentence-transformers builds Transformer + mean Pooling.
        layout.strips_text = modules.is_none();
        if let Some(modules) = modules {
            let list = modules.as_array().ok_or_else(|| Error::Config {
                path: modules_path.clone(),
                message: "modules.json is not a list".into(),
            })?;
            for module in list {
                let kind = module.get("type").and_then(Value::as_str).unwrap_or_default();
                let sub = module.get("path").and_then(Value::as_str).unwrap_or_default();
                if sub.contains("..") || sub.starts_with('/') {
                    return Err(Error::Config {
                        path: modules_path.clone(),
                        message: format!("module path {sub:?}"),
                    });
                }
                let sub_dir = dir.join(sub);
                is_pylate |= kind.starts_with("pylate");
                if kind == "sentence_transformers.models.Transformer" {
                    layout.strips_text = true;
                } else if kind.ends_with(".Pooling") {
                    let config = sub_dir.join("config.json");
                    layout.pooling = Some(read_pooling(&config)?);
                    layout.pooling_includes_prompt = read_json(&config)?
                        .and_then(|v| v.get("include_prompt").and_then(Value::as_bool))
                        .unwrap_or(true);
                } else if kind.ends_with(".Normalize") {
                    layout.normalize = true;
                } else if kind.ends_with(".Dense") || kind.ends_with(".Dense.Dense") {
                    layout.dense_dir = Some(sub_dir);
                }
            }
        }
        if let Some(v) = read_json(&dir.join("sentence_bert_config.json"))? {
            layout.max_seq_length = v.get("max_seq_length").and_then(Value::as_u64).map(|n| n as usize);
            layout.do_lower_case = v.get("do_lower_case").and_then(Value::as_bool).unwrap_or(false);
        }
        if let Some(v) = read_json(&dir.join("tokenizer_config.json"))? {
            layout.tokenizer_max_length = v
                .get("model_max_length")
                .and_then(Value::as_f64)
                .filter(|&n| (1.0..1e9).contains(&n))
                .map(|n| n as usize);
        }
        let st_path = dir.join("config_sentence_transformers.json");
        if let Some(v) = read_json(&st_path)? {
            if let Some(Value::Object(p)) = v.get("prompts") {
                for (name, text) in p {
                    if let Some(t) = text.as_str() {
                        layout.prompts.insert(name.clone(), t.to_string());
                    }
                }
            }
            layout.default_prompt_name = v.get("default_prompt_name").and_then(Value::as_str).map(String::from);
            layout.similarity_fn_name = v.get("similarity_fn_name").and_then(Value::as_str).map(String::from);
            if is_pylate || v.get("query_prefix").is_some() {
                let s = |k: &str, d: &str| v.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
                let n = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
                let b = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
                let skiplist_words = match v.get("skiplist_words") {
                    Some(Value::Array(a)) => a.iter().filter_map(|w| w.as_str().map(String::from)).collect(),
                    _ => default_skiplist(),
                };
                layout.colbert = Some(ColbertSettings {
                    query_prefix: s("query_prefix", "[Q] "),
                    document_prefix: s("document_prefix", "[D] "),
                    query_length: n("query_length", 32),
                    document_length: n("document_length", 180),
                    do_query_expansion: b("do_query_expansion", true),
                    attend_to_expansion_tokens: b("attend_to_expansion_tokens", false),
                    skiplist_words,
                });
            }
        } else if is_pylate {
            return Err(Error::io(
                st_path,
                "PyLate model without config_sentence_transformers.json",
            ));
        }
        Ok(layout)
    }
}

/// PyLate's default skiplist: the characters of Python's `string.punctuation`.
fn default_skiplist() -> Vec<String> {
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars().map(String::from).collect()
}

fn read_pooling(path: &Path) -> Result<Pooling> {
    let v = read_json(path)?.ok_or_else(|| Error::io(path, "missing pooling config"))?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(mode) = v.get("pooling_mode").and_then(Value::as_str) {
        return match mode {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(Error::Unsupported(format!(
                "{}: pooling mode {other:?}",
                path.display()
            ))),
        };
    }
    let others = [
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ];
    if let Some(k) = others.iter().find(|k| flag(k)) {
        return Err(Error::Unsupported(format!(
            "{}: {k} (only cls and mean pooling)",
            path.display()
        )));
    }
    match (flag("pooling_mode_cls_token"), flag("pooling_mode_mean_tokens")) {
        (true, false) => Ok(Pooling::Cls),
        (false, true) => Ok(Pooling::Mean),
        (true, true) => Err(Error::Unsupported(format!(
            "{}: cls and mean pooling together",
            path.display()
        ))),
        (false, false) => Err(Error::Config {
            path: path.to_path_buf(),
            message: "no pooling mode enabled".into(),
        }),
    }
}

/// Load a `Dense` module's projection (`linear.weight [out, in]`, optional `linear.bias`).
/// Its activation must be the identity (PyLate's and most ST dense layers).
pub fn load_dense(dir: &Path, in_features: usize) -> Result<Linear> {
    let cfg_path = dir.join("config.json");
    if let Some(cfg) = read_json(&cfg_path)? {
        let act = cfg
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("torch.nn.modules.linear.Identity");
        if !act.ends_with("Identity") {
            return Err(Error::Unsupported(format!(
                "{}: dense activation {act:?}",
                cfg_path.display()
            )));
        }
    }
    let store = if limits::exists(&dir.join("model.safetensors")) {
        TensorStore::open_dir(dir)?
    } else {
        return Err(Error::io(dir.join("model.safetensors"), "missing dense weights"));
    };
    let shape = store
        .shape("linear.weight")
        .ok_or_else(|| Error::Weights(format!("{}: missing tensor \"linear.weight\"", dir.display())))?
        .to_vec();
    let out = shape.first().copied().unwrap_or(0);
    let weight = store.f32("linear.weight", &[out, in_features])?;
    let bias = if store.contains("linear.bias") {
        Some(store.f32("linear.bias", &[out])?)
    } else {
        None
    };
    Ok(Linear {
        weight,
        bias,
        out_features: out,
        in_features,
    })
}
