//! The `modernbert` command line. Output: one JSON object per input text, one per line, in input
//! order. Texts come from the arguments, or else from stdin, one per line exactly as given (only
//! the line terminator is removed). Errors: one line on stderr and a non-zero exit status.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::error::{Error, Result};
use modernbert::hub::resolve_model;
use modernbert::kernels::Dtype;
use modernbert::reference::ops::Pooling;
use modernbert::tokenize::OverlongPolicy;

#[derive(Parser)]
#[command(
    name = "modernbert",
    version,
    about = "ModernBERT inference: embeddings, fill-mask, classification, reranking, ColBERT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings: {"embedding": [...]} per text.
    Embed {
        #[command(flatten)]
        engine: EngineArgs,
        /// Pooling (default: the directory's sentence-transformers config, else mean).
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// L2-normalise (default: on iff the directory has a Normalize module).
        #[arg(long, overrides_with = "no_normalize")]
        normalize: bool,
        /// Do not L2-normalise, even when the directory has a Normalize module.
        #[arg(long, overrides_with = "normalize")]
        no_normalize: bool,
        /// Keep the first N dimensions (Matryoshka), normalising after truncation.
        #[arg(long, value_name = "N")]
        dim: Option<usize>,
        /// A prompt name from config_sentence_transformers.json (e.g. "query").
        #[arg(long, value_name = "NAME")]
        prompt_name: Option<String>,
        /// A literal prompt prepended to each text (e.g. "search_query: ").
        #[arg(long)]
        prompt: Option<String>,
        /// The texts to embed (default: stdin, one text per line).
        #[arg(value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// Fill-mask: {"masks": [[{"id", "token", "score"}, ...], ...]} per text, one list per [MASK].
    FillMask {
        #[command(flatten)]
        engine: EngineArgs,
        /// Predictions per [MASK], most probable first.
        #[arg(long, value_name = "K", default_value_t = 5)]
        top_k: usize,
        /// The texts, each with at least one [MASK] (default: stdin, one text per line).
        #[arg(value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// Sequence classification: {"logits": [...], "label": "...", "score": p} per text.
    Classify {
        #[command(flatten)]
        engine: EngineArgs,
        /// The texts to classify (default: stdin, one text per line).
        #[arg(value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// Cross-encoder reranking: {"score": s} per document.
    Rerank {
        #[command(flatten)]
        engine: EngineArgs,
        /// The query every document is scored against.
        #[arg(long)]
        query: String,
        /// The documents to score (default: stdin, one document per line).
        #[arg(value_name = "DOC")]
        documents: Vec<String>,
    },
    /// ColBERT multi-vectors (PyLate directories): {"vectors": [[...], ...]} per text.
    Colbert {
        #[command(flatten)]
        engine: EngineArgs,
        /// Encode as queries ([Q] prefix, query expansion) instead of documents.
        #[arg(long)]
        query: bool,
        /// The texts to encode (default: stdin, one text per line).
        #[arg(value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// The paper's throughput protocol (4 synthetic sets) or --latency: one JSON line per result.
    Bench {
        #[command(flatten)]
        args: modernbert::bench::BenchArgs,
    },
    /// Config summary, parameter count, global/local layer pattern.
    Info {
        #[command(flatten)]
        model: ModelArg,
        /// auto (CUDA when usable, else the CPU), cpu, cuda, emulated[:sm80|:sm90]: reported as
        /// "device" (the weights are loaded there).
        #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
        device: DeviceChoice,
    },
}

/// `--model`: the checkpoint a command loads.
#[derive(Args)]
struct ModelArg {
    /// A local checkpoint directory, or a Hugging Face repo id org/name (downloaded and cached).
    #[arg(long, value_name = "DIR|ORG/NAME")]
    model: String,
}

/// The options of the commands that run a model on texts: what to load, where, and how texts are
/// batched.
#[derive(Args)]
struct EngineArgs {
    #[command(flatten)]
    model: ModelArg,
    /// auto (CUDA when usable, else the CPU), cpu, cuda, emulated[:sm80|:sm90] (the GPU code path
    /// on the host emulator).
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    device: DeviceChoice,
    /// Activation dtype on the GPU (and emulated) device.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    dtype: DtypeArg,
    /// Disable CUDA-graph replay for small batches.
    #[arg(long)]
    no_graphs: bool,
    /// Refuse texts longer than the model's maximum instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
    /// Tokens per forward batch (longer requests are split; output order is kept).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    max_batch_tokens: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Bf16,
    Fp16,
}

#[derive(Clone, Copy, ValueEnum)]
enum PoolingArg {
    Cls,
    Mean,
}

impl EngineArgs {
    fn load(&self) -> Result<Engine> {
        let options = EngineOptions {
            device: self.device,
            dtype: match self.dtype {
                DtypeArg::Bf16 => Dtype::Bf16,
                DtypeArg::Fp16 => Dtype::F16,
            },
            max_batch_tokens: self.max_batch_tokens,
            graphs: !self.no_graphs,
            overlong: if self.no_truncate {
                OverlongPolicy::Refuse
            } else {
                OverlongPolicy::Truncate
            },
        };
        Engine::new(&resolve_model(&self.model.model)?, &options)
    }
}

/// One input of a command: its text, or why it is not one (a stdin line that is not UTF-8).
type Input = std::result::Result<String, String>;

/// The inputs of a command: its arguments, or stdin lines when there are none. A line that is not
/// valid UTF-8 is that input's error; the others still run.
fn texts_or_stdin(texts: Vec<String>) -> Result<Vec<Input>> {
    if !texts.is_empty() {
        return Ok(texts.into_iter().map(Ok).collect());
    }
    let mut lines = Vec::new();
    let mut reader = std::io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io("<stdin>", e))?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
            let bad = e.utf8_error().valid_up_to();
            format!(
                "input: stdin line {} is not valid UTF-8 (bad byte at offset {bad})",
                lines.len() + 1
            )
        });
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(Error::Input(
            "no texts: give them as arguments or on stdin, one per line".into(),
        ));
    }
    Ok(lines)
}

/// Run a task's per-text form on the inputs that are texts; one outcome per input, in order. The
/// outer error is the task's own (a bad option, a device failure): it stops the command.
fn per_input<T>(
    inputs: &[Input],
    task: impl FnOnce(&[&str]) -> Result<Vec<Result<T>>>,
    to_json: impl Fn(T) -> serde_json::Value,
) -> Result<Vec<std::result::Result<serde_json::Value, String>>> {
    let texts: Vec<&str> = inputs.iter().filter_map(|i| i.as_deref().ok()).collect();
    let mut results = if texts.is_empty() { Vec::new() } else { task(&texts)? }.into_iter();
    Ok(inputs
        .iter()
        .map(|input| match input {
            Ok(_) => results
                .next()
                .expect("one result per text")
                .map(&to_json)
                .map_err(|e| e.to_string()),
            Err(message) => Err(message.clone()),
        })
        .collect())
}

/// Run a command; returns how many inputs failed (each printed as `{"error": "…"}` in its place).
fn run(cli: Cli, out: &mut dyn Write) -> Result<usize> {
    let mut emit =
        |value: serde_json::Value| -> Result<()> { writeln!(out, "{value}").map_err(|e| Error::io("<stdout>", e)) };
    let mut failed = 0;
    // One JSON line per input: the result, or its error.
    let mut emit_each = |results: Vec<std::result::Result<serde_json::Value, String>>,
                         emit: &mut dyn FnMut(serde_json::Value) -> Result<()>|
     -> Result<()> {
        for r in results {
            match r {
                Ok(v) => emit(v)?,
                Err(message) => {
                    failed += 1;
                    emit(json!({ "error": message }))?;
                }
            }
        }
        Ok(())
    };
    match cli.command {
        Command::Embed {
            engine,
            pooling,
            normalize,
            no_normalize,
            dim,
            prompt_name,
            prompt,
            texts,
        } => {
            let texts = texts_or_stdin(texts)?;
            let pipeline = engine.load()?;
            let options = EmbedOptions {
                pooling: pooling.map(|p| match p {
                    PoolingArg::Cls => Pooling::Cls,
                    PoolingArg::Mean => Pooling::Mean,
                }),
                normalize: if normalize {
                    Some(true)
                } else if no_normalize {
                    Some(false)
                } else {
                    None
                },
                dim,
                prompt_name,
                prompt,
            };
            let results = per_input(
                &texts,
                |t| pipeline.embed_each(t, &options),
                |e| json!({ "embedding": e }),
            )?;
            emit_each(results, &mut emit)?;
        }
        Command::FillMask { engine, top_k, texts } => {
            let texts = texts_or_stdin(texts)?;
            let pipeline = engine.load()?;
            let results = per_input(
                &texts,
                |t| pipeline.fill_mask_each(t, top_k),
                |masks| json!({ "masks": masks }),
            )?;
            emit_each(results, &mut emit)?;
        }
        Command::Classify { engine, texts } => {
            let texts = texts_or_stdin(texts)?;
            let pipeline = engine.load()?;
            let results = per_input(
                &texts,
                |t| pipeline.classify_each(t),
                |c| serde_json::to_value(c).expect("plain data serialises"),
            )?;
            emit_each(results, &mut emit)?;
        }
        Command::Rerank {
            engine,
            query,
            documents,
        } => {
            let documents = texts_or_stdin(documents)?;
            let pipeline = engine.load()?;
            let results = per_input(
                &documents,
                |d| pipeline.rerank_each(&query, d),
                |s| json!({ "score": s }),
            )?;
            emit_each(results, &mut emit)?;
        }
        Command::Colbert { engine, query, texts } => {
            let texts = texts_or_stdin(texts)?;
            let pipeline = engine.load()?;
            let results = per_input(&texts, |t| pipeline.colbert_each(t, query), |v| json!({ "vectors": v }))?;
            emit_each(results, &mut emit)?;
        }
        Command::Bench { args } => modernbert::bench::run(&args, &mut emit)?,
        Command::Info { model, device } => {
            let options = EngineOptions {
                device,
                ..EngineOptions::default()
            };
            let p = Engine::new(&resolve_model(&model.model)?, &options)?;
            let c = &p.config;
            emit(json!({
                "model": p.dir.display().to_string(),
                "architectures": c.architectures,
                "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size,
                "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads,
                "head_dim": c.head_dim(),
                "vocab_size": c.vocab_size,
                "max_position_embeddings": c.max_position_embeddings,
                "norm_eps": c.norm_eps,
                "biases": { "norm": c.norm_bias, "attention": c.attention_bias, "mlp": c.mlp_bias, "classifier": c.classifier_bias },
                "local_attention": c.local_attention,
                "window_radius": c.local_attention / 2,
                "global_rope_theta": c.global_rope_theta,
                "local_rope_theta": c.local_rope_theta,
                "layer_pattern": c.layer_pattern(),
                "global_layers": c.layer_kinds.iter().filter(|k| **k == modernbert::config::LayerKind::Global).count(),
                "parameters": p.parameter_count(),
                "device": p.backbone.device_name(),
                "tasks": p.task_heads(),
                "pooling": p.layout.pooling,
                "normalize": p.layout.normalize,
                "prompts": p.layout.prompts,
                "max_tokens": p.tokenizer().map(|t| t.max_len()).ok(),
            }))?;
        }
    }
    Ok(failed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result =
        run(cli, &mut out).and_then(|failed| out.flush().map_err(|e| Error::io("<stdout>", e)).map(|()| failed));
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("error: {failed} input(s) failed; each has an {{\"error\": …}} line in its place");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
