//! The engine: a loaded checkpoint directory and an executor (the exact f32 CPU reference, or the
//! GPU executor on a CUDA device or the host emulator), with the tasks users call: embeddings,
//! fill-mask, classification, reranking, token classification and ColBERT vectors.
//! Texts → tokenizer → packed batches (split so that no batch exceeds `max_batch_tokens`) →
//! executor → task head; results always in input order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::PackedBatch;
use crate::coalesce::{BatchKey, Coalescer, CounterSnapshot};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::heads::Heads;
use crate::gpu::{GpuExecutor, GpuPathChoice};
use crate::kernels::cuda::CudaDevice;
use crate::kernels::device::Device;
use crate::kernels::emu::Emulator;
use crate::kernels::Dtype;
use crate::layout::{load_dense, ColbertSettings, SentenceTransformersLayout};
use crate::model::{Checkpoint, ClassifierHead, Linear, MaskedLmHead};
use crate::reference::ops::{self, Pooling};
use crate::reference::{heads, CpuExecutor};
use crate::tokenize::{collect_per_text, OverlongPolicy, TextTokenizer};
use crate::weights::TensorStore;

/// Where the forward pass runs. The one owner of the `--device` syntax ([`DeviceChoice::parse`]):
/// `auto`, `cpu`, `cuda[:N]`, `emulated[:sm80|:sm90]`, `model:<card>[:sm80|:sm90]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when a usable GPU (driver, device, kernels in this build) is present, else the CPU.
    Auto,
    /// The exact f32 reference executor.
    Cpu,
    /// The GPU executor on the host emulator: the CUDA code path, run on the CPU, reporting
    /// this compute capability (plain `emulated` = sm80).
    Emulated((u32, u32)),
    /// The GPU executor on CUDA device `N` (`cuda` = `cuda:0`), in the driver's numbering
    /// (`CUDA_VISIBLE_DEVICES` applies).
    Cuda(usize),
    /// The GPU executor on the cost model of `card` (computes nothing, predicts times);
    /// `capability` forces a code path, `None` = the card's own.
    Model {
        card: crate::kernels::model::Card,
        capability: Option<(u32, u32)>,
    },
}

impl DeviceChoice {
    /// `emulated` as it was before capabilities: the sm80 path.
    pub const EMULATED: DeviceChoice = DeviceChoice::Emulated((8, 0));

    /// Parse a `--device` value; the error names what is accepted.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        use crate::kernels::model::{parse_capability, Card};
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let one_suffix = |rest: &[&str]| -> std::result::Result<Option<(u32, u32)>, String> {
            match rest {
                [] => Ok(None),
                [cc] => parse_capability(cc).map(Some),
                _ => Err(format!("`{s}`: at most one :smNN suffix")),
            }
        };
        match (head, rest.as_slice()) {
            ("auto", []) => Ok(DeviceChoice::Auto),
            ("cpu", []) => Ok(DeviceChoice::Cpu),
            ("cuda", []) => Ok(DeviceChoice::Cuda(0)),
            ("cuda", [n]) => n
                .parse::<usize>()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("`{s}`: the device index must be a number (cuda:0, cuda:1, …)")),
            ("emulated", rest) => Ok(DeviceChoice::Emulated(one_suffix(rest)?.unwrap_or((8, 0)))),
            ("model", [card, rest @ ..]) => Ok(DeviceChoice::Model {
                card: Card::parse(card)?,
                capability: one_suffix(rest)?,
            }),
            ("model", []) => Err(format!(
                "`model` needs a card: model:<card>[:sm80|:sm90] (cards: {})",
                Card::ALL.map(Card::id).join(", ")
            )),
            _ => Err(format!(
                "unknown device `{s}` (expected auto, cpu, cuda[:N], emulated[:sm80|:sm90] or model:<card>[:sm80|:sm90])"
            )),
        }
    }

    /// Whether this is the cost model (a device that computes nothing).
    pub fn is_model(self) -> bool {
        matches!(self, DeviceChoice::Model { .. })
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        DeviceChoice::parse(s)
    }
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub device: DeviceChoice,
    /// Activation dtype of the GPU executor (the CPU executor is always f32).
    pub dtype: Dtype,
    /// Tokens per forward batch: sizes the GPU arena; longer requests are split (order kept).
    pub max_batch_tokens: usize,
    /// Replay CUDA graphs for small batches (CUDA only).
    pub graphs: bool,
    /// The GPU executor's launch list (see [`GpuPathChoice`]).
    pub gpu_path: GpuPathChoice,
    pub overlong: OverlongPolicy,
    /// Merge concurrent calls into shared forwards (`coalesce`); off: each call runs its own.
    pub coalesce: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            device: DeviceChoice::Auto,
            dtype: Dtype::Bf16,
            max_batch_tokens: 16384,
            graphs: true,
            gpu_path: GpuPathChoice::Auto,
            overlong: OverlongPolicy::Truncate,
            coalesce: true,
        }
    }
}

/// The backbone executor behind an engine.
pub enum Backbone {
    Cpu(CpuExecutor),
    Gpu(GpuExecutor),
}

impl Backbone {
    /// `last_hidden_state` `[tokens, hidden]` in f32.
    pub fn hidden_states(&self, batch: &PackedBatch, hidden: usize) -> Result<Vec<f32>> {
        match self {
            Backbone::Cpu(e) => e.forward(batch),
            Backbone::Gpu(e) => {
                let mut out = vec![0f32; batch.tokens() * hidden];
                e.forward_into(batch, &mut out)?;
                Ok(out)
            }
        }
    }

    pub fn device_name(&self) -> String {
        match self {
            Backbone::Cpu(_) => "cpu".into(),
            Backbone::Gpu(e) => e.device_name(),
        }
    }

    /// The activations' dtype, as transformers names it: `float32` on the CPU.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Backbone::Cpu(_) => "float32",
            Backbone::Gpu(e) => match e.dtype() {
                Dtype::Bf16 => "bfloat16",
                Dtype::F16 => "float16",
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct EmbedOptions {
    /// Default: the directory's `1_Pooling`, else mean.
    pub pooling: Option<Pooling>,
    /// Default: whether the directory has a `Normalize` module.
    pub normalize: Option<bool>,
    /// Matryoshka: keep the first `dim` dimensions (before normalisation, so the vectors are unit
    /// at `dim`; see `dim_after_normalize`).
    pub dim: Option<usize>,
    /// Keep the first `dim` dimensions of the finished (normalised) vector instead, as
    /// sentence-transformers' `truncate_dim` does: the vectors are then not unit at `dim`.
    pub dim_after_normalize: bool,
    /// A prompt by name from `config_sentence_transformers.json` (default: its `default_prompt_name`).
    pub prompt_name: Option<String>,
    /// A literal prompt prepended to every text (overrides `prompt_name`).
    pub prompt: Option<String>,
}

impl EmbedOptions {
    /// `SentenceTransformer.encode`'s semantics: the model's own pipeline (its Normalize module
    /// included), then `truncate_dim`, then a normalisation if `normalize_embeddings`.
    pub fn sentence_transformers(
        prompt_name: Option<String>,
        prompt: Option<String>,
        normalize_embeddings: bool,
        truncate_dim: Option<usize>,
    ) -> Self {
        EmbedOptions {
            pooling: None,
            // Normalising after truncation gives unit vectors at `dim` whatever came before.
            normalize: normalize_embeddings.then_some(true),
            dim: truncate_dim,
            dim_after_normalize: !normalize_embeddings,
            prompt_name,
            prompt,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MaskPrediction {
    pub id: u32,
    pub token: String,
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Classification {
    pub logits: Vec<f32>,
    /// The label's index (the JSON output names it by `label`).
    #[serde(skip)]
    pub label_id: usize,
    pub label: String,
    pub score: f32,
}

/// One token's label from [`Engine::token_classify`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TokenLabel {
    pub id: u32,
    pub token: String,
    /// The token's `[labels]` logits.
    #[serde(skip)]
    pub logits: Vec<f32>,
    #[serde(skip)]
    pub label_id: usize,
    pub label: String,
    pub score: f32,
}

pub struct Engine {
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// `None` when the directory has no tokenizer.json (token-id inputs and `info` still work).
    tokenizer: Option<TextTokenizer>,
    pub layout: SentenceTransformersLayout,
    pub backbone: Backbone,
    pub mlm: Option<MaskedLmHead>,
    pub classifier: Option<ClassifierHead>,
    pub dense: Option<Linear>,
    max_batch_tokens: usize,
    max_batch_sequences: usize,
    parameters: usize,
    /// Concurrent calls' queue and the engine's counters.
    coalescer: Coalescer,
}

/// The device to run on, resolved from the user's choice (`None`: the CPU; `Auto` falls back to
/// it when no usable GPU is present).
pub fn open_device(choice: DeviceChoice) -> Result<Option<Arc<dyn Device>>> {
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Emulated(cc) => Ok(Some(Arc::new(Emulator::new().with_compute_capability(cc)))),
        DeviceChoice::Model { card, capability } => {
            Ok(Some(Arc::new(crate::gpu::cost_model::model_device(card, capability)?)))
        }
        DeviceChoice::Cuda(index) => CudaDevice::new(index)
            .map(|d| Some(Arc::new(d) as Arc<dyn Device>))
            .map_err(|e| Error::Device(format!("cuda:{index}: {e}"))),
        DeviceChoice::Auto => Ok(CudaDevice::new(0).ok().map(|d| Arc::new(d) as Arc<dyn Device>)),
    }
}

impl Engine {
    /// Load a checkpoint directory (config.json, model.safetensors or shards, tokenizer.json, and
    /// any sentence-transformers / PyLate files).
    pub fn new(dir: &Path, options: &EngineOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(dir, "model directory does not exist"));
        }
        if options.device.is_model() {
            return Err(Error::Unsupported(
                "a model:<card> device predicts timings and computes nothing: use it with `modernbert bench`".into(),
            ));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let layout = SentenceTransformersLayout::read(dir)?;
        let store = TensorStore::open_dir(dir)?;
        let ckpt = Checkpoint::new(&store, &config)?;
        let weights = ckpt.backbone()?;
        let (mlm, classifier) = if ckpt.has_prediction_head() {
            if store.contains("classifier.weight") {
                (None, Some(ckpt.classifier_head()?))
            } else {
                (Some(ckpt.masked_lm_head()?), None)
            }
        } else {
            (None, None)
        };
        let dense = match &layout.dense_dir {
            Some(d) => Some(load_dense(d, config.hidden_size)?),
            None => None,
        };
        // sentence-transformers' rule: sentence_bert_config.json's max_seq_length, else the
        // smaller of the position table and the tokenizer's model_max_length.
        let max_len = layout
            .max_seq_length
            .or(layout.tokenizer_max_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if crate::limits::exists(&tokenizer_path) {
            Some(TextTokenizer::from_file(&tokenizer_path, max_len, options.overlong)?)
        } else {
            None
        };
        let parameters = weights.parameter_count();
        if options.max_batch_tokens == 0 {
            return Err(Error::Input("max_batch_tokens must be at least 1 (got 0)".into()));
        }
        let max_batch_tokens = options.max_batch_tokens;
        // A sequence is never split, so a batch (and a device arena) must hold the longest one the
        // tokenizer lets through.
        let arena_tokens = max_batch_tokens.max(max_len);
        let max_batch_sequences = arena_tokens.min(4096);
        // The CPU executor's activations for the largest batch, in f32: twice the bf16 arena. The
        // GPU executor checks its own plan against the device.
        let heads = Heads {
            mlm: mlm.as_ref(),
            dense: dense.as_ref(),
            colbert: layout.colbert.is_some(),
        };
        let cpu_plan =
            crate::gpu::arena::ArenaPlan::new(&config, arena_tokens, max_batch_sequences, heads.shapes(&config))?;
        let cpu_bytes = crate::limits::bytes_of("the CPU activations", &[cpu_plan.bytes, 2])?;
        crate::limits::check_fits(
            &format!("a batch of {arena_tokens} tokens (max_batch_tokens {max_batch_tokens}, the model's maximum length {max_len})"),
            cpu_bytes,
            crate::limits::host_memory_limit(),
            "the host",
        )?;
        let gpu = match open_device(options.device)? {
            None => None,
            Some(dev) => {
                match GpuExecutor::with_heads(
                    dev,
                    options.dtype,
                    &config,
                    &weights,
                    &heads,
                    (arena_tokens, max_batch_sequences),
                    options.gpu_path,
                ) {
                    Ok(exec) => Some(exec.with_graphs(options.graphs)),
                    // `auto` falls back to the CPU for models the GPU executor does not support.
                    Err(Error::Unsupported(_)) if options.device == DeviceChoice::Auto => None,
                    Err(e) => return Err(e),
                }
            }
        };
        let backbone = match gpu {
            None => Backbone::Cpu(CpuExecutor::new(config.clone(), weights)),
            Some(exec) => Backbone::Gpu(exec),
        };
        Ok(Engine {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            layout,
            backbone,
            mlm,
            classifier,
            dense,
            max_batch_tokens,
            max_batch_sequences,
            parameters,
            coalescer: Coalescer::new(options.coalesce, max_batch_tokens, max_batch_sequences),
        })
    }

    /// Tokens per forward batch, at most (a longer sequence goes alone).
    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    /// Calls, forwards, tokens and queue wait since the engine was created.
    pub fn counters(&self) -> CounterSnapshot {
        self.coalescer.counters.snapshot()
    }

    /// The tokenizer, or an error saying the directory has none.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::io(self.dir.join("tokenizer.json"), "no such file (needed for text input)"))
    }

    /// Parameters of the backbone plus heads.
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.weight.len() + l.bias.as_ref().map_or(0, Vec::len);
        let head = |h: &crate::model::PredictionHead| {
            lin(&h.dense) + h.norm.weight.len() + h.norm.bias.as_ref().map_or(0, Vec::len)
        };
        self.parameters
            + self.mlm.as_ref().map_or(0, |m| {
                head(&m.head)
                    + m.decoder_weight.as_ref().map_or(0, Vec::len)
                    + m.decoder_bias.as_ref().map_or(0, Vec::len)
            })
            + self
                .classifier
                .as_ref()
                .map_or(0, |c| head(&c.head) + lin(&c.classifier))
            + self.dense.as_ref().map_or(0, lin)
    }

    pub fn task_heads(&self) -> Vec<&'static str> {
        let mut v = vec!["embeddings"];
        if self.mlm.is_some() {
            v.push("fill-mask");
        }
        if self.classifier.is_some() {
            v.push(if self.is_token_classifier() {
                "token-classification"
            } else {
                "classification"
            });
        }
        if self.layout.colbert.is_some() {
            v.push("colbert");
        }
        v
    }

    /// Whether the checkpoint is a `…ForTokenClassification` (its classifier labels tokens).
    pub fn is_token_classifier(&self) -> bool {
        self.config
            .architectures
            .iter()
            .any(|a| a.ends_with("ForTokenClassification"))
    }

    /// Run the backbone on sequences (with their key counts), in chunks of at most
    /// `max_batch_tokens` tokens; `each` gets every chunk's batch, hidden states and first index.
    pub fn run_sequences(
        &self,
        sequences: &[Vec<u32>],
        key_lens: &[usize],
        mut each: impl FnMut(usize, &PackedBatch, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let mut first = 0;
        self.for_each_batch(sequences, key_lens, |batch| {
            let hidden = self.backbone.hidden_states(batch, self.config.hidden_size)?;
            each(first, batch, &hidden)?;
            first += batch.sequences();
            Ok(())
        })
    }

    /// Split sequences into packed batches of at most `max_batch_tokens` tokens (a longer sequence
    /// goes alone) and `max_batch_sequences` sequences, in order.
    fn for_each_batch(
        &self,
        sequences: &[Vec<u32>],
        key_lens: &[usize],
        mut each: impl FnMut(&PackedBatch) -> Result<()>,
    ) -> Result<()> {
        let mut start = 0;
        while start < sequences.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < sequences.len()
                && end - start < self.max_batch_sequences
                && (end == start || tokens + sequences[end].len() <= self.max_batch_tokens)
            {
                tokens += sequences[end].len();
                end += 1;
            }
            let batch = PackedBatch::with_key_lens(&sequences[start..end], &key_lens[start..end])?;
            self.coalescer.counters.forward(batch.tokens());
            each(&batch)?;
            start = end;
        }
        Ok(())
    }

    fn all_keys(sequences: &[Vec<u32>]) -> Vec<usize> {
        sequences.iter().map(Vec::len).collect()
    }

    /// `last_hidden_state` of each text: one `[len, hidden]` matrix per text.
    pub fn hidden_states(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenizer()?.encode_batch(texts)?;
        let h = self.config.hidden_size;
        let mut out = Vec::with_capacity(ids.len());
        self.run_sequences(&ids, &Self::all_keys(&ids), |_, batch, hidden| {
            for b in 0..batch.sequences() {
                let r = batch.seq_range(b);
                out.push(hidden[r.start * h..r.end * h].to_vec());
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The prompt text these options prepend: `prompt`, else the named (or the directory's
    /// default) prompt, else none.
    pub fn prompt_for(&self, options: &EmbedOptions) -> Result<String> {
        if let Some(p) = &options.prompt {
            return Ok(p.clone());
        }
        match options
            .prompt_name
            .as_ref()
            .or(self.layout.default_prompt_name.as_ref())
        {
            None => Ok(String::new()),
            Some(name) => self.layout.prompts.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.layout.prompts.keys().map(String::as_str).collect();
                Error::Input(format!("unknown prompt name {name:?} (this model has: {known:?})"))
            }),
        }
    }

    /// The `Dense` module of the embedding pipeline: a sentence-transformers model's; a ColBERT
    /// model's Dense is for its per-token vectors only.
    fn embedding_dense(&self) -> Option<&Linear> {
        self.dense.as_ref().filter(|_| self.layout.colbert.is_none())
    }

    /// The pipeline's width before truncation: the Dense module's output, or the hidden size.
    fn embedding_width(&self) -> usize {
        self.embedding_dense()
            .map_or(self.config.hidden_size, |d| d.out_features)
    }

    /// The width of [`embed`](Self::embed)'s vectors for these options: the Dense module's output
    /// (or the hidden size), truncated to `options.dim`.
    pub fn embed_dim(&self, options: &EmbedOptions) -> Result<usize> {
        let full = self.embedding_width();
        let dim = options.dim.unwrap_or(full);
        if dim == 0 || dim > full {
            return Err(Error::Input(format!(
                "dim {dim} must be in 1..={full} (the embedding width)"
            )));
        }
        Ok(dim)
    }

    /// Sentence embeddings: prompt → tokens → backbone → pooling → (Dense) → truncate → (normalise).
    /// The first bad text fails the call (its error names it); [`embed_each`](Self::embed_each)
    /// keeps the others.
    pub fn embed(&self, texts: &[&str], options: &EmbedOptions) -> Result<Vec<Vec<f32>>> {
        collect_per_text(self.embed_each(texts, options)?)
    }

    /// As [`embed`](Self::embed), with one result per text: a bad text (too long with truncation
    /// off, non-finite outputs) is that text's error. The outer error is the call's own (an
    /// unknown prompt, a bad `dim`, no tokenizer, a device failure).
    pub fn embed_each(&self, texts: &[&str], options: &EmbedOptions) -> Result<Vec<Result<Vec<f32>>>> {
        if options.dim_after_normalize && options.dim.is_some() {
            let dim = self.embed_dim(options)?;
            let whole = EmbedOptions {
                dim: None,
                dim_after_normalize: false,
                ..options.clone()
            };
            let mut out = self.embed_each(texts, &whole)?;
            for v in out.iter_mut().flatten() {
                v.truncate(dim);
            }
            return Ok(out);
        }
        let prompt = self.prompt_for(options)?;
        // As sentence-transformers' Transformer module: prompt, strip, lowercase, tokenise.
        let prepare = |t: &str| {
            let p = format!("{prompt}{t}");
            let p = if self.layout.strips_text {
                crate::layout::st_strip(&p).to_string()
            } else {
                p
            };
            if self.layout.do_lower_case {
                p.to_lowercase()
            } else {
                p
            }
        };
        let prompted: Vec<String> = texts.iter().map(|t| prepare(t)).collect();
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        let pooling = options.pooling.or(self.layout.pooling).unwrap_or(Pooling::Mean);
        if !prompt.is_empty() && pooling == Pooling::Mean && !self.layout.pooling_includes_prompt {
            // sentence-transformers would leave the prompt's tokens out of the mean: refuse rather
            // than return a different vector.
            return Err(Error::Unsupported(
                "this model's Pooling has include_prompt: false (the prompt's tokens left out of the mean), \
                 which this engine does not implement: it embeds such a model's texts only without a prompt"
                    .into(),
            ));
        }
        let normalize = options.normalize.unwrap_or(self.layout.normalize);
        let dense = self.embedding_dense();
        let (full_dim, dim) = (self.embedding_width(), self.embed_dim(options)?);
        let ids = self.tokenizer()?.encode_each(&refs)?;
        let key = BatchKey::Embed {
            pooling,
            normalize,
            dim,
        };
        per_text(ids, |ids| {
            self.coalescer.run(key, ids, Vec::len, |ids| {
                let mut out = Vec::with_capacity(ids.len());
                if let Backbone::Gpu(exec) = &self.backbone {
                    // Pool, project, truncate and normalise on the device; only [sequences, dim] comes back.
                    self.for_each_batch(ids, &Self::all_keys(ids), |batch| {
                        let mut pooled = vec![0f32; batch.sequences() * dim];
                        exec.pooled_into(batch, pooling, normalize, dim, dense.is_some(), &mut pooled)?;
                        out.extend(pooled.chunks(dim).map(<[f32]>::to_vec));
                        Ok(())
                    })?;
                    return Ok(out);
                }
                self.run_sequences(ids, &Self::all_keys(ids), |_, batch, hidden| {
                    let h = self.config.hidden_size;
                    let mut pooled = ops::pool(hidden, h, &batch.cu_seqlens, Some(&batch.key_lens), pooling);
                    if let Some(d) = dense {
                        let mut projected = vec![0f32; batch.sequences() * d.out_features];
                        ops::linear(
                            &pooled,
                            &d.weight,
                            d.bias.as_deref(),
                            batch.sequences(),
                            h,
                            d.out_features,
                            &mut projected,
                        );
                        pooled = projected;
                    }
                    let mut kept = ops::truncate_rows(&pooled, full_dim, dim);
                    if normalize {
                        ops::l2_normalize_rows(&mut kept, dim);
                    }
                    out.extend(kept.chunks(dim).map(<[f32]>::to_vec));
                    Ok(())
                })?;
                Ok(out)
            })
        })
    }

    /// Top-k predictions for every `[MASK]` of every text, in order.
    pub fn fill_mask(&self, texts: &[&str], top_k: usize) -> Result<Vec<Vec<Vec<MaskPrediction>>>> {
        collect_per_text(self.fill_mask_each(texts, top_k)?)
    }

    /// As [`fill_mask`](Self::fill_mask), with one result per text (a text without `[MASK]` is
    /// that text's error).
    pub fn fill_mask_each(&self, texts: &[&str], top_k: usize) -> Result<Vec<Result<Vec<Vec<MaskPrediction>>>>> {
        if top_k == 0 {
            return Err(Error::Input("top_k must be at least 1 (got 0)".into()));
        }
        self.fill_mask_from_tokens(self.fill_mask_tokens(texts)?, top_k)
    }

    fn mlm(&self) -> Result<&MaskedLmHead> {
        self.mlm.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: no masked-LM head (head.dense / decoder.bias)",
                self.dir.display()
            ))
        })
    }

    fn mask_id(&self) -> Result<u32> {
        self.tokenizer()?
            .token_to_id("[MASK]")
            .ok_or_else(|| Error::Tokenizer("the tokenizer has no [MASK] token".into()))
    }

    /// Fill-mask's tokens of each text, or that text's tokenisation error (too long with
    /// truncation off): the first half of [`fill_mask_each`](Self::fill_mask_each), for callers
    /// that size their outputs (with [`mask_count`](Self::mask_count)) before the model runs.
    pub fn fill_mask_tokens(&self, texts: &[&str]) -> Result<Vec<Result<Vec<u32>>>> {
        self.mlm()?;
        self.mask_id()?;
        self.tokenizer()?.encode_each(texts)
    }

    /// A fill-mask text needs a `[MASK]`: that text's error when `ids` has none.
    pub fn require_mask(&self, ids: &[u32]) -> Result<()> {
        match self.mask_count(ids)? {
            0 => Err(Error::Input("has no [MASK] token".into())),
            _ => Ok(()),
        }
    }

    /// `[MASK]` tokens in `ids`: how many predictions (of `k` each) fill-mask gives for them.
    pub fn mask_count(&self, ids: &[u32]) -> Result<usize> {
        let mask_id = self.mask_id()?;
        Ok(ids.iter().filter(|&&t| t == mask_id).count())
    }

    /// The second half of [`fill_mask_each`](Self::fill_mask_each): top-`min(top_k, vocab)`
    /// predictions for every `[MASK]` of the texts [`fill_mask_tokens`](Self::fill_mask_tokens)
    /// gave, one result per text.
    pub fn fill_mask_from_tokens(
        &self,
        tokens: Vec<Result<Vec<u32>>>,
        top_k: usize,
    ) -> Result<Vec<Result<Vec<Vec<MaskPrediction>>>>> {
        if top_k == 0 {
            return Err(Error::Input("top_k must be at least 1 (got 0)".into()));
        }
        let tokens = tokens
            .into_iter()
            .map(|r| r.and_then(|ids| self.require_mask(&ids).map(|()| ids)))
            .collect();
        per_text(tokens, |ids| {
            self.coalescer.run(BatchKey::FillMask { top_k }, ids, Vec::len, |ids| {
                self.fill_mask_batches(ids, top_k)
            })
        })
    }

    fn fill_mask_batches(&self, ids: &[Vec<u32>], top_k: usize) -> Result<Vec<Vec<Vec<MaskPrediction>>>> {
        let mlm = self.mlm()?;
        let (tokenizer, mask_id) = (self.tokenizer()?, self.mask_id()?);
        let top_k = top_k.min(self.config.vocab_size);
        let v = self.config.vocab_size;
        let mut out = Vec::with_capacity(ids.len());
        self.for_each_batch(ids, &Self::all_keys(ids), |batch| {
            let rows: Vec<u32> = (0..batch.tokens() as u32)
                .filter(|&t| batch.ids[t as usize] == mask_id)
                .collect();
            let picks = self.mlm_picks(mlm, batch, &rows, top_k)?;
            let mut per_mask = rows.iter().zip(picks.chunks(top_k)).peekable();
            for b in 0..batch.sequences() {
                let range = batch.seq_range(b);
                let mut masks = Vec::new();
                while let Some((_, row)) = per_mask.next_if(|(r, _)| range.contains(&(**r as usize))) {
                    masks.push(
                        row.iter()
                            .map(|&(id, score)| MaskPrediction {
                                id,
                                // An id past the vocabulary comes with a NaN score (NaN
                                // logits), which `per_text` makes the text's error.
                                token: if (id as usize) < v {
                                    tokenizer.decode_token(id)
                                } else {
                                    String::new()
                                },
                                score,
                            })
                            .collect(),
                    );
                }
                out.push(masks);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The MLM head's top-`k` (id, probability) at the packed `rows` of `batch`, `k` per row: on
    /// the device for a GPU backbone (only the picks come back), else on the host.
    fn mlm_picks(&self, mlm: &MaskedLmHead, batch: &PackedBatch, rows: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
        match &self.backbone {
            Backbone::Gpu(exec) => {
                let mut ids = vec![0u32; rows.len() * k];
                let mut probs = vec![0f32; rows.len() * k];
                exec.mlm_topk_into(batch, rows, k, &mut ids, &mut probs)?;
                Ok(ids.into_iter().zip(probs).collect())
            }
            Backbone::Cpu(e) => {
                let hidden = e.forward(batch)?;
                let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                let logits = heads::mlm_logits(&self.config, mlm, e.tok_embeddings(), &hidden, &rows);
                Ok(logits
                    .chunks(self.config.vocab_size)
                    .flat_map(|l| heads::softmax_topk(l, k))
                    .collect())
            }
        }
    }

    fn classifier(&self) -> Result<&ClassifierHead> {
        self.classifier.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: no classification head (classifier.weight)",
                self.dir.display()
            ))
        })
    }

    /// Logits per text of the classification head.
    pub fn num_labels(&self) -> Result<usize> {
        Ok(self.classifier()?.classifier.out_features)
    }

    /// Sequence-classification logits `[labels]` for tokenised sequences.
    pub fn sequence_logits(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let cls = self.classifier()?;
        if self.is_token_classifier() {
            return Err(Error::Unsupported("this is a token-classification checkpoint".into()));
        }
        let labels = cls.classifier.out_features;
        let mut out = Vec::with_capacity(ids.len());
        self.run_sequences(ids, &Self::all_keys(ids), |_, batch, hidden| {
            let logits = heads::sequence_logits(&self.config, cls, hidden, batch, self.config.classifier_pooling);
            out.extend(logits.chunks(labels).map(<[f32]>::to_vec));
            Ok(())
        })?;
        Ok(out)
    }

    /// Classify texts: logits, the argmax label (from `id2label`) and its probability.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>> {
        collect_per_text(self.classify_each(texts)?)
    }

    /// As [`classify`](Self::classify), with one result per text.
    pub fn classify_each(&self, texts: &[&str]) -> Result<Vec<Result<Classification>>> {
        let ids = self.tokenizer()?.encode_each(texts)?;
        per_text(ids, |ids| {
            Ok(self
                .shared_sequence_logits(ids)?
                .into_iter()
                .map(|l| self.classification(l))
                .collect())
        })
    }

    /// [`sequence_logits`](Self::sequence_logits) in a forward shared with concurrent callers:
    /// texts and pairs, for classification, reranking and prediction alike (the logits depend
    /// only on the ids; each task's rule applies after).
    fn shared_sequence_logits(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.coalescer
            .run(BatchKey::SequenceLogits, ids, Vec::len, |ids| self.sequence_logits(ids))
    }

    /// Logits → the argmax label (from `id2label`) and its probability (sigmoid for one label;
    /// the first maximum of the softmax otherwise).
    fn classification(&self, l: Vec<f32>) -> Classification {
        let (best, score) = if l.len() == 1 {
            (0, sigmoid(l[0]))
        } else {
            let p = ops::softmax(&l);
            let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            (best, p[best])
        };
        let label = self
            .config
            .id2label
            .get(best)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{best}"));
        Classification {
            logits: l,
            label_id: best,
            label,
            score,
        }
    }

    /// Cross-encoder relevance of each document to the query: `sigmoid(logit)` for a one-logit
    /// classifier (sentence-transformers' CrossEncoder default), else the softmax probability of
    /// the last label.
    pub fn rerank(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        collect_per_text(self.rerank_each(query, documents)?)
    }

    /// As [`rerank`](Self::rerank), with one result per document.
    pub fn rerank_each(&self, query: &str, documents: &[&str]) -> Result<Vec<Result<f32>>> {
        if documents.is_empty() {
            return Err(Error::Input("no documents given".into()));
        }
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        let ids = self.tokenizer()?.encode_each_pair(&pairs)?;
        per_text(ids, |ids| {
            Ok(self
                .shared_sequence_logits(ids)?
                .iter()
                .map(|l| Self::relevance(l))
                .collect())
        })
    }

    /// The reranking rule from a pair's logits: `sigmoid` of a single logit, else the softmax
    /// probability of the last label.
    pub fn relevance(logits: &[f32]) -> f32 {
        match logits {
            [one] => sigmoid(*one),
            _ => *ops::softmax(logits).last().expect("a classifier has labels"),
        }
    }

    /// Classification of `(first, second)` pairs (cross-encoder input): raw logits, the argmax
    /// label and its probability, one result per pair.
    pub fn classify_pairs_each(&self, pairs: &[(&str, &str)]) -> Result<Vec<Result<Classification>>> {
        self.num_labels()?;
        let ids = self.tokenizer()?.encode_each_pair(pairs)?;
        per_text(ids, |ids| {
            Ok(self
                .shared_sequence_logits(ids)?
                .into_iter()
                .map(|l| self.classification(l))
                .collect())
        })
    }

    /// sentence-transformers' `CrossEncoder.predict`: each (first, second) pair's logits through
    /// the model's activation (`config.cross_encoder_activation`, else sigmoid for one label and
    /// identity otherwise). One result per pair.
    pub fn predict_pairs_each(&self, pairs: &[(&str, &str)]) -> Result<Vec<Result<Vec<f32>>>> {
        let labels = self.num_labels()?;
        let activation: fn(f32) -> f32 = match self.config.cross_encoder_activation.as_deref() {
            None if labels == 1 => sigmoid,
            None => |x| x,
            Some("torch.nn.modules.activation.Sigmoid") => sigmoid,
            Some("torch.nn.modules.linear.Identity") => |x| x,
            Some("torch.nn.modules.activation.Tanh") => f32::tanh,
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "CrossEncoder activation_fn {other:?} (supported: torch.nn Sigmoid, Identity, Tanh)"
                )))
            }
        };
        let ids = self.tokenizer()?.encode_each_pair(pairs)?;
        per_text(ids, |ids| {
            let mut logits = self.shared_sequence_logits(ids)?;
            logits.iter_mut().flatten().for_each(|x| *x = activation(*x));
            Ok(logits)
        })
    }

    /// Token-classification logits: one `[labels]` vector per token of each text.
    pub fn token_logits(&self, texts: &[&str]) -> Result<Vec<Vec<Vec<f32>>>> {
        Ok(collect_per_text(self.token_labels_each(texts)?)?
            .into_iter()
            .map(|tokens| tokens.into_iter().map(|t| t.logits).collect())
            .collect())
    }

    /// Token classification: per token of each text its id, the argmax label (from `id2label`)
    /// and that label's softmax probability, as transformers' token-classification pipeline
    /// without aggregation (special tokens included; the caller may drop them).
    pub fn token_classify(&self, texts: &[&str]) -> Result<Vec<Vec<TokenLabel>>> {
        collect_per_text(self.token_classify_each(texts)?)
    }

    /// As [`token_classify`](Self::token_classify), with one result per text.
    pub fn token_classify_each(&self, texts: &[&str]) -> Result<Vec<Result<Vec<TokenLabel>>>> {
        if !self.is_token_classifier() {
            return Err(Error::Unsupported(format!(
                "{}: not a token-classification checkpoint (architectures: {:?})",
                self.dir.display(),
                self.config.architectures
            )));
        }
        self.token_labels_each(texts)
    }

    /// The classifier applied to every token: logits and argmax label per token, per text.
    fn token_labels_each(&self, texts: &[&str]) -> Result<Vec<Result<Vec<TokenLabel>>>> {
        let cls = self.classifier()?;
        let tokenizer = self.tokenizer()?;
        let ids = tokenizer.encode_each(texts)?;
        let labels = cls.classifier.out_features;
        per_text(ids, |ids| {
            self.coalescer.run(BatchKey::TokenLogits, ids, Vec::len, |ids| {
                let mut out = Vec::with_capacity(ids.len());
                self.run_sequences(ids, &Self::all_keys(ids), |_, batch, hidden| {
                    let logits = heads::token_logits(&self.config, cls, hidden, batch.tokens());
                    for b in 0..batch.sequences() {
                        out.push(
                            batch
                                .seq_range(b)
                                .map(|t| {
                                    let id = batch.ids[t];
                                    let c = self.classification(logits[t * labels..][..labels].to_vec());
                                    TokenLabel {
                                        id,
                                        token: tokenizer.decode_token(id),
                                        logits: c.logits,
                                        label_id: c.label_id,
                                        label: c.label,
                                        score: c.score,
                                    }
                                })
                                .collect(),
                        );
                    }
                    Ok(())
                })?;
                Ok(out)
            })
        })
    }

    fn colbert_settings(&self) -> Result<&ColbertSettings> {
        self.layout
            .colbert
            .as_ref()
            .ok_or_else(|| Error::Unsupported(format!("{}: not a PyLate ColBERT directory", self.dir.display())))
    }

    /// PyLate token ids: `[CLS] prefix …` (truncated to `length`), queries padded with `[MASK]` to
    /// `query_length` when query expansion is on. Returns ids and how many leading tokens are keys.
    pub fn colbert_tokens(&self, texts: &[&str], is_query: bool) -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
        Ok(collect_per_text(self.colbert_tokens_each(texts, is_query)?)?
            .into_iter()
            .unzip())
    }

    /// As [`colbert_tokens`](Self::colbert_tokens), per text: `(ids, keys)` or that text's error.
    pub fn colbert_tokens_each(&self, texts: &[&str], is_query: bool) -> Result<Vec<Result<(Vec<u32>, usize)>>> {
        let s = self.colbert_settings()?;
        let (prefix, length) = if is_query {
            (&s.query_prefix, s.query_length)
        } else {
            (&s.document_prefix, s.document_length)
        };
        let prefix_id = self
            .tokenizer()?
            .token_to_id(prefix)
            .ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {prefix:?} token")))?;
        if length < 3 {
            return Err(Error::Config {
                path: self.dir.clone(),
                message: format!("ColBERT length {length}"),
            });
        }
        let tok = self.tokenizer()?.with_max_len(length - 1)?;
        let mask_id = self.tokenizer()?.token_to_id("[MASK]");
        if is_query && s.do_query_expansion && mask_id.is_none() {
            return Err(Error::Tokenizer("query expansion needs a [MASK] token".into()));
        }
        Ok(tok
            .encode_each(texts)?
            .into_iter()
            .map(|r| {
                r.map(|mut seq| {
                    seq.insert(1.min(seq.len()), prefix_id);
                    let real = seq.len();
                    match mask_id {
                        Some(mask_id) if is_query && s.do_query_expansion => {
                            seq.resize(length.max(real), mask_id);
                            let keys = if s.attend_to_expansion_tokens { seq.len() } else { real };
                            (seq, keys)
                        }
                        _ => (seq, real),
                    }
                })
            })
            .collect())
    }

    /// ColBERT multi-vectors: per token `normalize(Dense(h))`; documents drop skiplist tokens.
    pub fn colbert(&self, texts: &[&str], is_query: bool) -> Result<Vec<Vec<Vec<f32>>>> {
        collect_per_text(self.colbert_each(texts, is_query)?)
    }

    /// As [`colbert`](Self::colbert), with one result per text.
    pub fn colbert_each(&self, texts: &[&str], is_query: bool) -> Result<Vec<Result<Vec<Vec<f32>>>>> {
        self.colbert_dim()?;
        self.colbert_from_tokens(self.colbert_tokens_each(texts, is_query)?, is_query)
    }

    /// The width of ColBERT's vectors (the Dense module's output).
    pub fn colbert_dim(&self) -> Result<usize> {
        self.colbert_settings()?;
        self.dense
            .as_ref()
            .map(|d| d.out_features)
            .ok_or_else(|| Error::Weights(format!("{}: ColBERT model without a Dense module", self.dir.display())))
    }

    /// The token ids a ColBERT call drops: PyLate's skiplist, for documents only.
    fn colbert_skiplist(&self, is_query: bool) -> Result<Vec<u32>> {
        let s = self.colbert_settings()?;
        let tokenizer = self.tokenizer()?;
        Ok(if is_query {
            Vec::new()
        } else {
            s.skiplist_words
                .iter()
                .filter_map(|w| tokenizer.token_to_id(w))
                .collect()
        })
    }

    /// Vectors a ColBERT call gives for the tokens `ids`: all of a query's, a document's less the
    /// skiplist.
    pub fn colbert_vector_count(&self, ids: &[u32], is_query: bool) -> Result<usize> {
        let skip = self.colbert_skiplist(is_query)?;
        Ok(ids.iter().filter(|t| !skip.contains(t)).count())
    }

    /// The second half of [`colbert_each`](Self::colbert_each): the vectors of the texts
    /// [`colbert_tokens_each`](Self::colbert_tokens_each) gave, one result per text.
    pub fn colbert_from_tokens(
        &self,
        tokens: Vec<Result<(Vec<u32>, usize)>>,
        is_query: bool,
    ) -> Result<Vec<Result<Vec<Vec<f32>>>>> {
        let dim = self.colbert_dim()?;
        let dense = self.dense.as_ref().expect("colbert_dim checked the Dense module");
        let skip = self.colbert_skiplist(is_query)?;
        let key = BatchKey::Colbert { is_query };
        per_text(tokens, |tokens| {
            self.coalescer.run(
                key,
                tokens,
                |t| t.0.len(),
                |tokens| {
                    let (ids, keys): (Vec<Vec<u32>>, Vec<usize>) = tokens.iter().cloned().unzip();
                    let mut out = Vec::with_capacity(ids.len());
                    self.for_each_batch(&ids, &keys, |batch| {
                        let vectors = self.colbert_vectors(dense, batch)?;
                        for b in 0..batch.sequences() {
                            out.push(
                                batch
                                    .seq_range(b)
                                    .filter(|&t| !skip.contains(&batch.ids[t]))
                                    .map(|t| vectors[t * dim..][..dim].to_vec())
                                    .collect(),
                            );
                        }
                        Ok(())
                    })?;
                    Ok(out)
                },
            )
        })
    }

    /// `normalize(Dense(h))` of every token of `batch`, `[tokens, dim]`: on the device for a GPU
    /// backbone (only these f32 rows come back, not the hidden states), else on the host.
    fn colbert_vectors(&self, dense: &Linear, batch: &PackedBatch) -> Result<Vec<f32>> {
        let (t, h, dim) = (batch.tokens(), self.config.hidden_size, dense.out_features);
        let mut out = vec![0f32; t * dim];
        match &self.backbone {
            Backbone::Gpu(exec) => exec.colbert_into(batch, &mut out)?,
            Backbone::Cpu(e) => {
                let hidden = e.forward(batch)?;
                ops::linear(&hidden, &dense.weight, dense.bias.as_deref(), t, h, dim, &mut out);
                ops::l2_normalize_rows(&mut out, dim);
            }
        }
        Ok(out)
    }
}

/// Outputs whose values can be checked for NaN and infinity.
pub trait Finite {
    fn is_finite(&self) -> bool;
}

impl Finite for f32 {
    fn is_finite(&self) -> bool {
        f32::is_finite(*self)
    }
}

impl<T: Finite> Finite for Vec<T> {
    fn is_finite(&self) -> bool {
        self.iter().all(Finite::is_finite)
    }
}

impl Finite for Classification {
    fn is_finite(&self) -> bool {
        self.logits.is_finite() && self.score.is_finite()
    }
}

impl Finite for TokenLabel {
    fn is_finite(&self) -> bool {
        self.logits.is_finite() && self.score.is_finite()
    }
}

impl Finite for MaskPrediction {
    fn is_finite(&self) -> bool {
        self.score.is_finite()
    }
}

/// Run `task` on the items that are `Ok` (in order) and put its outputs back in input order beside
/// the items' own errors. An output with a NaN or an infinity becomes its text's error: broken
/// weights must not pass for a result.
fn per_text<S, T: Finite>(items: Vec<Result<S>>, task: impl FnOnce(&[S]) -> Result<Vec<T>>) -> Result<Vec<Result<T>>> {
    let mut good = Vec::with_capacity(items.len());
    let mut slots: Vec<Option<Error>> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Ok(s) => {
                good.push(s);
                slots.push(None);
            }
            Err(e) => slots.push(Some(e)),
        }
    }
    let outputs = if good.is_empty() { Vec::new() } else { task(&good)? };
    if outputs.len() != good.len() {
        return Err(Error::Device(format!(
            "{} outputs for {} texts",
            outputs.len(),
            good.len()
        )));
    }
    let mut outputs = outputs.into_iter();
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Some(e) => Err(e),
            None => {
                let v = outputs.next().expect("one output per good item (checked above)");
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(Error::NonFinite(
                        "the model's outputs are NaN or infinite (are the checkpoint's weights finite?)".into(),
                    ))
                }
            }
        })
        .collect())
}

fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::DeviceChoice;

    #[test]
    fn device_syntax() {
        assert_eq!(DeviceChoice::parse("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:0"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(DeviceChoice::parse("emulated:sm90"), Ok(DeviceChoice::Emulated((9, 0))));
        for bad in ["cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1:2", "gpu", "cpu:0"] {
            assert!(DeviceChoice::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(DeviceChoice::parse("cuda:x")
            .unwrap_err()
            .contains("index must be a number"));
    }
}
