//! `--model` resolution: a local directory as is, else a Hugging Face repo id (`org/name`)
//! downloaded into hf-hub's cache (needs the `hub` feature and network access); anything else is
//! an error that says it is neither.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Files a ModernBERT directory may need; missing optional ones are fine.
#[cfg(feature = "hub")]
const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
#[cfg(feature = "hub")]
const OPTIONAL: &[&str] = &[
    "model.safetensors",
    "model.safetensors.index.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "1_Dense/config.json",
    "1_Dense/model.safetensors",
];

/// A local directory, or the cached snapshot of a hub repo id.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let path = PathBuf::from(model);
    if path.is_dir() {
        return Ok(path);
    }
    if !is_repo_id(model) {
        let what = if path.exists() {
            "is not a directory"
        } else {
            "does not exist as a directory"
        };
        return Err(Error::io(
            &path,
            format!("{what}, and is not a Hugging Face repo id of the form org/name"),
        ));
    }
    download(model)
}

/// Whether `model` has the form of a Hugging Face repo id, `org/name`: two parts of ASCII
/// letters, digits, `-`, `_` and `.`, each starting and ending with a letter, digit or `_`, with
/// no `--` or `..` (the hub's own rule, as huggingface_hub's `validate_repo_id` checks it). So a
/// relative path such as `./model` or `../m/x` is never sent to the hub.
pub fn is_repo_id(model: &str) -> bool {
    let part_ok = |part: &str| {
        let edge_ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
        part.chars().all(|c| edge_ok(c) || c == '-' || c == '.')
            && part.starts_with(edge_ok)
            && part.ends_with(edge_ok)
            && !part.contains("--")
            && !part.contains("..")
    };
    match model.split_once('/') {
        Some((org, name)) => part_ok(org) && part_ok(name),
        None => false,
    }
}

#[cfg(feature = "hub")]
fn download(repo_id: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::Api::new().map_err(|e| Error::Io {
        path: repo_id.into(),
        message: e.to_string(),
    })?;
    let repo = api.model(repo_id.to_string());
    let mut dir = None;
    for file in REQUIRED {
        let p = repo.get(file).map_err(|e| Error::Io {
            path: repo_id.into(),
            message: format!("not a local directory, and downloading {file} from the hub failed: {e}"),
        })?;
        dir = p.parent().map(PathBuf::from);
    }
    for file in OPTIONAL {
        let _ = repo.get(file);
    }
    let dir = dir.ok_or_else(|| Error::io(repo_id, "empty download"))?;
    if !dir.join("model.safetensors").is_file() && dir.join("model.safetensors.index.json").is_file() {
        let index = crate::limits::read_regular_text(
            &dir.join("model.safetensors.index.json"),
            crate::limits::file_bound::JSON_CONFIG,
        )?;
        let value: serde_json::Value = serde_json::from_str(&index).map_err(|e| Error::io(&dir, e))?;
        let mut shards: Vec<&str> = value["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            repo.get(shard)
                .map_err(|e| Error::io(&dir, format!("downloading {shard}: {e}")))?;
        }
    }
    Ok(dir)
}

#[cfg(not(feature = "hub"))]
fn download(repo_id: &str) -> Result<PathBuf> {
    Err(Error::io(
        repo_id,
        "not a local directory (built without the `hub` feature, so repo ids are not downloaded)",
    ))
}
