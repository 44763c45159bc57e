//! `--model` resolution: a local directory as is, else a Hugging Face repo id (`org/name`)
//! downloaded into hf-hub's cache (needs the `hub` feature and network access).

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
    let looks_like_repo = model.split('/').count() == 2 && !model.starts_with('.') && !model.starts_with('/');
    if !looks_like_repo {
        return Err(Error::io(&path, "model directory does not exist"));
    }
    download(model)
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
