//! `config.json` of a ModernBERT checkpoint, in both forms transformers has written:
//! v4 (`global_rope_theta`, `local_rope_theta`, `global_attn_every_n_layers`) and v5
//! (`rope_parameters`, `layer_types`). Every field of the spec's §1 with transformers' defaults.
//!
//! Pitfalls handled here: LayerNorm eps is `norm_eps` (never the vestigial `layer_norm_eps`);
//! layer i is global iff `i % global_attn_every_n_layers == 0` unless `layer_types` says otherwise;
//! the local window is `local_attention / 2` on each side, inclusive; two RoPE thetas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// The activation functions a ModernBERT config may name (`hidden_activation`, `classifier_activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    /// Parse a transformers `ACT2FN` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }
}

/// Which keys a query may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionWindow {
    /// Every key of the sequence (global layers).
    Global,
    /// Keys with `|i − j| ≤ radius` (local layers; radius = `local_attention / 2` = 64 for ModernBERT).
    Local { radius: usize },
}

impl AttentionWindow {
    /// The key range `[lo, hi)` query `i` sees in a sequence whose first `n_keys` tokens are keys.
    pub fn key_range(self, i: usize, n_keys: usize) -> (usize, usize) {
        match self {
            Self::Global => (0, n_keys),
            Self::Local { radius } => (i.saturating_sub(radius), (i + radius + 1).min(n_keys)),
        }
    }
}

/// How a sequence of token vectors becomes one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// The mean over the sequence's tokens.
    Mean,
}

/// The attention kind of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Global,
    Local,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_activation: Activation,
    pub max_position_embeddings: usize,
    pub norm_eps: f32,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub global_attn_every_n_layers: usize,
    /// Total local window (128 for ModernBERT); the radius is half of it.
    pub local_attention: usize,
    pub global_rope_theta: f32,
    pub local_rope_theta: f32,
    /// One entry per layer.
    pub layer_kinds: Vec<LayerKind>,
    pub pad_token_id: u32,
    pub cls_token_id: u32,
    pub sep_token_id: u32,
    pub classifier_pooling: Pooling,
    pub classifier_activation: Activation,
    pub classifier_bias: bool,
    pub decoder_bias: bool,
    pub tie_word_embeddings: bool,
    /// `id2label`, ordered by id (empty when the config has none).
    pub id2label: Vec<String>,
    pub architectures: Vec<String>,
    /// A sentence-transformers CrossEncoder's `activation_fn` (`sentence_transformers.activation_fn`,
    /// or the older `sbert_ce_default_activation_function`), e.g. `torch.nn.modules.activation.Sigmoid`.
    pub cross_encoder_activation: Option<String>,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        self.layer_kinds[layer]
    }

    /// The attention window of a layer.
    pub fn window(&self, layer: usize) -> AttentionWindow {
        match self.layer_kinds[layer] {
            LayerKind::Global => AttentionWindow::Global,
            LayerKind::Local => AttentionWindow::Local {
                radius: self.local_attention / 2,
            },
        }
    }

    /// The RoPE base of a layer.
    pub fn rope_theta(&self, layer: usize) -> f32 {
        match self.layer_kinds[layer] {
            LayerKind::Global => self.global_rope_theta,
            LayerKind::Local => self.local_rope_theta,
        }
    }

    /// `"G L L G …"` — one letter per layer.
    pub fn layer_pattern(&self) -> String {
        self.layer_kinds
            .iter()
            .map(|k| if *k == LayerKind::Global { "G" } else { "L" })
            .collect::<Vec<_>>()
            .join("")
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::limits::read_regular_text(path, crate::limits::file_bound::JSON_CONFIG)?;
        Self::from_json_str(&text, path)
    }

    /// Parse config.json text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: PathBuf::from(path),
            message,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| err(format!("not valid JSON ({e})")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| err("top level is not a JSON object".into()))?;
        let f = Fields { obj, err: &err };

        if let Some(mt) = obj.get("model_type").and_then(Value::as_str) {
            if mt != "modernbert" {
                return Err(err(format!("model_type is {mt:?}, expected \"modernbert\"")));
            }
        }

        let vocab_size = f.usize("vocab_size", 50368)?;
        let hidden_size = f.usize("hidden_size", 768)?;
        let intermediate_size = f.usize("intermediate_size", 1152)?;
        let num_hidden_layers = f.usize("num_hidden_layers", 22)?;
        let num_attention_heads = f.usize("num_attention_heads", 12)?;
        for (name, v) in [
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
            ("num_hidden_layers", num_hidden_layers),
            ("num_attention_heads", num_attention_heads),
        ] {
            if v == 0 {
                return Err(err(format!("{name} must be positive")));
            }
        }
        if hidden_size % num_attention_heads != 0 {
            return Err(err(format!(
                "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )));
        }
        if (hidden_size / num_attention_heads) % 2 != 0 {
            return Err(err("head_dim must be even for RoPE".into()));
        }
        // Generous sanity bounds so a corrupt config cannot ask for absurd allocations.
        if hidden_size > 1 << 16 || intermediate_size > 1 << 18 || vocab_size > 1 << 24 || num_hidden_layers > 1024 {
            return Err(err("model dimensions are implausibly large".into()));
        }

        let activation = |key: &str| -> Result<Activation> {
            let name = f.string(key, "gelu")?;
            Activation::from_name(&name).ok_or_else(|| err(format!("{key} {name:?} is not a supported activation")))
        };
        let hidden_activation = activation("hidden_activation")?;
        let classifier_activation = activation("classifier_activation")?;

        let global_attn_every_n_layers = f.usize("global_attn_every_n_layers", 3)?;
        if global_attn_every_n_layers == 0 {
            return Err(err("global_attn_every_n_layers must be positive".into()));
        }
        // v5 may carry `sliding_window` (the half window) instead of `local_attention`.
        let local_attention = match (obj.get("local_attention"), obj.get("sliding_window")) {
            (Some(_), _) => f.usize("local_attention", 128)?,
            (None, Some(Value::Number(_))) => f
                .usize("sliding_window", 64)?
                .checked_mul(2)
                .ok_or_else(|| err("sliding_window is implausibly large".into()))?,
            _ => 128,
        };

        if local_attention > 1 << 20 {
            return Err(err(format!("local_attention {local_attention} is implausibly large")));
        }

        let layer_kinds = match obj.get("layer_types") {
            Some(Value::Array(types)) => {
                if types.len() != num_hidden_layers {
                    return Err(err(format!(
                        "layer_types has {} entries for {num_hidden_layers} layers",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(LayerKind::Global),
                        Some("sliding_attention") => Ok(LayerKind::Local),
                        _ => Err(err(format!(
                            "layer_types entry {t} is not full_attention/sliding_attention"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None | Some(Value::Null) => (0..num_hidden_layers)
                .map(|i| {
                    if i % global_attn_every_n_layers == 0 {
                        LayerKind::Global
                    } else {
                        LayerKind::Local
                    }
                })
                .collect(),
            Some(other) => return Err(err(format!("layer_types is not a list: {other}"))),
        };

        let (global_rope_theta, local_rope_theta) = rope_thetas(&f)?;

        let pooling = f.string("classifier_pooling", "cls")?;
        let classifier_pooling = match pooling.as_str() {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            other => return Err(err(format!("classifier_pooling {other:?} must be \"cls\" or \"mean\""))),
        };

        let id2label = match obj.get("id2label") {
            Some(Value::Object(map)) => {
                let mut pairs = BTreeMap::new();
                for (k, v) in map {
                    let id: usize = k
                        .parse()
                        .map_err(|_| err(format!("id2label key {k:?} is not an integer")))?;
                    let label = v
                        .as_str()
                        .ok_or_else(|| err(format!("id2label[{k}] is not a string")))?;
                    pairs.insert(id, label.to_string());
                }
                if pairs.keys().enumerate().any(|(i, &k)| i != k) {
                    return Err(err("id2label ids are not 0..n".into()));
                }
                pairs.into_values().collect()
            }
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(err("id2label is not an object".into())),
        };

        let architectures = match obj.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };

        let cross_encoder_activation = obj
            .get("sentence_transformers")
            .and_then(|st| st.get("activation_fn"))
            .or_else(|| obj.get("sbert_ce_default_activation_function"))
            .and_then(Value::as_str)
            .map(String::from);

        // Checked after the conversion to f32, the precision it is used in (1e-85 would become 0).
        let eps = f.f64("norm_eps", 1e-5)? as f32;
        if !(eps > 0.0 && eps < 1.0) {
            return Err(err(format!(
                "norm_eps {} is out of range (0, 1) in f32",
                f.f64("norm_eps", 1e-5)?
            )));
        }

        Ok(ModelConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            hidden_activation,
            max_position_embeddings: f.usize("max_position_embeddings", 8192)?,
            norm_eps: eps,
            norm_bias: f.bool("norm_bias", false)?,
            attention_bias: f.bool("attention_bias", false)?,
            mlp_bias: f.bool("mlp_bias", false)?,
            global_attn_every_n_layers,
            local_attention,
            global_rope_theta,
            local_rope_theta,
            layer_kinds,
            pad_token_id: f.u32("pad_token_id", 50283)?,
            cls_token_id: f.u32("cls_token_id", 50281)?,
            sep_token_id: f.u32("sep_token_id", 50282)?,
            classifier_pooling,
            classifier_activation,
            classifier_bias: f.bool("classifier_bias", false)?,
            decoder_bias: f.bool("decoder_bias", true)?,
            tie_word_embeddings: f.bool("tie_word_embeddings", true)?,
            id2label,
            architectures,
            cross_encoder_activation,
        })
    }
}

/// The two RoPE bases: v5 `rope_parameters` (per layer type, or one flat dict for both), else the
/// v4 keys, else transformers' defaults (160000 global, 10000 local).
fn rope_thetas(f: &Fields) -> Result<(f32, f32)> {
    let err = f.err;
    if let Some(Value::Object(scaling)) = f.obj.get("rope_scaling") {
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str);
        if kind != Some("default") {
            return Err(err(format!(
                "rope_scaling {kind:?} is not supported (only the default RoPE)"
            )));
        }
    }
    let theta_of = |params: &serde_json::Map<String, Value>, what: &str| -> Result<Option<f32>> {
        if let Some(kind) = params.get("rope_type").and_then(Value::as_str) {
            if kind != "default" {
                return Err(err(format!(
                    "rope_parameters{what}: rope_type {kind:?} is not supported"
                )));
            }
        }
        match params.get("rope_theta") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| *t > 1.0 && t.is_finite())
                .map(|t| Some(t as f32))
                .ok_or_else(|| err(format!("rope_parameters{what}.rope_theta is not a number > 1"))),
        }
    };
    let mut global = f.opt_f64("global_rope_theta")?.map(|t| t as f32);
    let mut local = f.opt_f64("local_rope_theta")?.map(|t| t as f32);
    match f.obj.get("rope_parameters") {
        Some(Value::Object(params)) => {
            let full = params.get("full_attention").and_then(Value::as_object);
            let sliding = params.get("sliding_attention").and_then(Value::as_object);
            if full.is_some() || sliding.is_some() {
                if let Some(p) = full {
                    global = theta_of(p, "[full_attention]")?.or(global);
                }
                if let Some(p) = sliding {
                    local = theta_of(p, "[sliding_attention]")?.or(local);
                }
            } else if let Some(t) = theta_of(params, "")? {
                global = Some(t);
                local = Some(t);
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(err("rope_parameters is not an object".into())),
    }
    let check = |t: f32, name: &str| {
        if t > 1.0 && t.is_finite() {
            Ok(t)
        } else {
            Err(err(format!("{name} {t} is not a number > 1")))
        }
    };
    Ok((
        check(global.unwrap_or(160_000.0), "global_rope_theta")?,
        check(local.unwrap_or(10_000.0), "local_rope_theta")?,
    ))
}

/// Typed access to config fields with defaults and one-line errors.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Value>,
    err: &'a dyn Fn(String) -> Error,
}

impl Fields<'_> {
    fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| (self.err)(format!("{key} is not a non-negative integer: {v}"))),
        }
    }
    fn u32(&self, key: &str, default: u32) -> Result<u32> {
        let v = self.usize(key, default as usize)?;
        u32::try_from(v).map_err(|_| (self.err)(format!("{key} {v} does not fit in 32 bits")))
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| (self.err)(format!("{key} is not a boolean: {v}"))),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| (self.err)(format!("{key} is not a number: {v}"))),
        }
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }
    fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.present(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(String::from)
                .ok_or_else(|| (self.err)(format!("{key} is not a string: {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_modernbert_base() {
        let c = parse(r#"{"model_type": "modernbert"}"#).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.head_dim()), (768, 22, 64));
        assert_eq!(c.layer_pattern(), "GLLGLLGLLGLLGLLGLLGLLG");
        assert_eq!(c.window(1), AttentionWindow::Local { radius: 64 });
        assert_eq!((c.global_rope_theta, c.local_rope_theta), (160000.0, 10000.0));
        assert_eq!(c.norm_eps, 1e-5);
        assert_eq!(c.hidden_activation, Activation::GeluErf);
    }

    #[test]
    fn norm_eps_wins_over_layer_norm_eps() {
        let c = parse(r#"{"layer_norm_eps": 1e-12, "norm_eps": 1e-6}"#).unwrap();
        assert_eq!(c.norm_eps, 1e-6);
        let c = parse(r#"{"layer_norm_eps": 1e-12}"#).unwrap();
        assert_eq!(c.norm_eps, 1e-5, "layer_norm_eps is vestigial");
    }

    #[test]
    fn v4_and_v5_forms_agree() {
        let v4 = parse(
            r#"{"num_hidden_layers": 4, "global_attn_every_n_layers": 2, "global_rope_theta": 50000.0,
                "local_rope_theta": 5000.0, "local_attention": 16}"#,
        )
        .unwrap();
        let v5 = parse(
            r#"{"num_hidden_layers": 4, "layer_types": ["full_attention", "sliding_attention",
                "full_attention", "sliding_attention"], "local_attention": 16,
                "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 50000.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}}}"#,
        )
        .unwrap();
        for c in [&v4, &v5] {
            assert_eq!(c.layer_pattern(), "GLGL");
            assert_eq!((c.rope_theta(0), c.rope_theta(1)), (50000.0, 5000.0));
            assert_eq!(c.window(1), AttentionWindow::Local { radius: 8 });
        }
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, needle) in [
            ("{", "not valid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"model_type": "bert"}"#, "model_type"),
            (r#"{"hidden_size": 100, "num_attention_heads": 3}"#, "not a multiple"),
            (r#"{"hidden_size": "768"}"#, "hidden_size is not"),
            (r#"{"hidden_activation": "mish"}"#, "hidden_activation"),
            (r#"{"classifier_pooling": "max"}"#, "classifier_pooling"),
            (
                r#"{"num_hidden_layers": 2, "layer_types": ["full_attention"]}"#,
                "layer_types",
            ),
            (
                r#"{"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}"#,
                "yarn",
            ),
            (r#"{"num_attention_heads": 0}"#, "positive"),
            (r#"{"norm_eps": -1}"#, "norm_eps"),
            (r#"{"norm_eps": 1e-85}"#, "norm_eps"),
            (r#"{"sliding_window": 9223372036854775808}"#, "sliding_window"),
            (r#"{"local_attention": 9223372036854775808}"#, "local_attention"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains('\n'), "one-line error: {e}");
        }
    }
}
