//! The `modernbert` command line. Output: one JSON object per input text, one per line, in input
//! order (or, with `embed --output npy FILE`, one .npy file). Texts come from the arguments, or else from
//! stdin, one per line exactly as given (only the line terminator is removed) or, with `--jsonl`,
//! one JSON object `{"id": …, "text": "…"}` per line (texts with newlines; each output line then
//! carries its input's `id`); they run in chunks,
//! so a long input writes its results as they come and, on a terminal, shows a progress bar on
//! stderr. Errors: one line on stderr and a non-zero exit status.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use serde_json::json;

use modernbert::engine::{Backbone, DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::error::{Error, Result};
use modernbert::gpu::GpuPathChoice;
use modernbert::hub::resolve_model;
use modernbert::kernels::Dtype;
use modernbert::npy::NpyFile;
use modernbert::quantize::{quantize, Precision, Quantized};
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
    /// Sentence embeddings: {"embedding": [...]} per text (or one .npy file with --output npy FILE).
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
        /// Output precision, as sentence-transformers' `precision`: float32, int8, uint8, binary or
        /// ubinary (int8 / uint8 calibrated on all the command's texts, so they are quantized
        /// after the last one runs).
        #[arg(long, default_value = "float32")]
        precision: String,
        /// `--output npy FILE`: write the embeddings to FILE as one NumPy .npy array (float32,
        /// shape (texts, dim), one row per text in input order) instead of JSON lines on stdout.
        /// If any input fails, the command fails naming it and FILE is left as it was.
        #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
        output: Option<Vec<String>>,
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
    /// Token classification: {"tokens": [{"id", "token", "label", "score"}, ...]} per text, one
    /// entry per token (special tokens included).
    TokenClassify {
        #[command(flatten)]
        engine: EngineArgs,
        /// The texts (default: stdin, one text per line).
        #[arg(value_name = "TEXT")]
        texts: Vec<String>,
    },
    /// An HTTP server: text-embeddings-inference's routes (/embed, /rerank, /predict, /tokenize,
    /// /info, /health, /metrics) and OpenAI's /v1/embeddings, concurrent requests sharing forwards.
    #[cfg(feature = "server")]
    Serve {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        server: ServeArgs,
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
        /// auto (CUDA device 0 when usable, else the CPU), cpu, cuda[:N], emulated[:sm80|:sm90]: reported as
        /// "device" (the weights are loaded there).
        #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
        device: DeviceChoice,
    },
}

/// `serve`'s options (text-embeddings-inference's names and defaults, loopback by default).
#[cfg(feature = "server")]
#[derive(Args)]
struct ServeArgs {
    /// The address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    hostname: String,
    /// The port (0: any free port, printed on stderr).
    #[arg(long, short = 'p', default_value_t = 3000)]
    port: u16,
    /// Inputs per request, at most (413 past it).
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Requests in flight, at most (429 past it).
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Truncate over-long texts of requests that do not say `truncate` (else 413).
    #[arg(long)]
    auto_truncate: bool,
    /// Request body bytes, at most (413 past it).
    #[arg(long, default_value_t = 2_000_000)]
    payload_limit: usize,
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
    /// auto (CUDA device 0 when usable, else the CPU), cpu, cuda[:N], emulated[:sm80|:sm90] (the GPU code path
    /// on the host emulator).
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    device: DeviceChoice,
    /// Activation dtype on the GPU (and emulated) device.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    dtype: DtypeArg,
    /// Disable CUDA-graph replay for small batches.
    #[arg(long)]
    no_graphs: bool,
    /// The GPU launch list: auto, portable (sm_80 kernels + cuBLASLt) or hopper (sm_90a GEMMs with
    /// fused epilogues; auto picks it on the emulator, not yet on a real GPU).
    #[arg(long, default_value = "auto", value_parser = GpuPathChoice::parse)]
    gpu_path: GpuPathChoice,
    /// Refuse texts longer than the model's maximum instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
    /// Tokens per forward batch (longer requests are split; output order is kept).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Run each request's own forwards instead of merging concurrent requests (`serve`).
    #[arg(long)]
    no_coalesce: bool,
    /// Stdin lines are JSON objects {"id": …, "text": "…"}; each output line carries the id.
    #[arg(long)]
    jsonl: bool,
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
            gpu_path: self.gpu_path,
            coalesce: !self.no_coalesce,
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

/// The inputs of a command and, with `--jsonl`, their ids: its arguments, or stdin lines when
/// there are none. A line that is not valid UTF-8 (or, with `--jsonl`, not an object with a
/// string `text`) is that input's error; the others still run.
fn inputs(texts: Vec<String>, jsonl: bool) -> Result<(Vec<Input>, Option<Vec<serde_json::Value>>)> {
    if jsonl && !texts.is_empty() {
        return Err(Error::Input("--jsonl reads stdin: give no texts as arguments".into()));
    }
    let lines = texts_or_stdin(texts)?;
    if !jsonl {
        return Ok((lines, None));
    }
    let (inputs, ids) = lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let parsed = line.and_then(|l| {
                serde_json::from_str::<serde_json::Value>(&l).map_err(|e| format!("input: stdin line {}: {e}", i + 1))
            });
            match parsed {
                Ok(serde_json::Value::Object(mut o)) => {
                    let id = o.remove("id").unwrap_or(serde_json::Value::Null);
                    match o.remove("text") {
                        Some(serde_json::Value::String(t)) => (Ok(t), id),
                        _ => (
                            Err(format!("input: stdin line {}: no string \"text\" field", i + 1)),
                            id,
                        ),
                    }
                }
                Ok(_) => (
                    Err(format!("input: stdin line {}: not a JSON object", i + 1)),
                    serde_json::Value::Null,
                ),
                Err(m) => (Err(m), serde_json::Value::Null),
            }
        })
        .unzip();
    Ok((inputs, Some(ids)))
}

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

/// An input's outcome: its result, or why it failed (printed in its place).
type Outcome<T> = std::result::Result<T, String>;

/// Run a task's per-text form on the inputs that are texts; one outcome per input, in order. The
/// outer error is the task's own (a bad option, a device failure): it stops the command.
fn per_input<T>(inputs: &[Input], task: impl FnOnce(&[&str]) -> Result<Vec<Result<T>>>) -> Result<Vec<Outcome<T>>> {
    let texts: Vec<&str> = inputs.iter().filter_map(|i| i.as_deref().ok()).collect();
    let mut results = if texts.is_empty() { Vec::new() } else { task(&texts)? }.into_iter();
    Ok(inputs
        .iter()
        .map(|input| match input {
            Ok(_) => results.next().expect("one result per text").map_err(|e| e.to_string()),
            Err(message) => Err(message.clone()),
        })
        .collect())
}

/// Chunks are sized in bytes of text, an estimate of their tokens that needs no tokenising: about
/// four bytes per token in English text. A wrong guess only makes a chunk's batches fuller or
/// emptier (results from batches of other sizes: the same up to rounding).
const BYTES_PER_TOKEN: usize = 4;
/// Bytes counted per input on top of its own text: its special tokens ([CLS], [SEP]).
const SPECIAL_TOKEN_BYTES: usize = 2 * BYTES_PER_TOKEN;

/// Bytes of text per chunk: about one forward batch of `max_batch_tokens` on the CPU, which gains
/// nothing from bigger calls (so the progress bar moves often), four on a GPU, where the last
/// batch of every call may be part-full (so a chunk of several batches keeps them full).
fn chunk_bytes(engine: &Engine, max_batch_tokens: usize) -> usize {
    let batches = if matches!(engine.backbone, Backbone::Cpu(_)) {
        1
    } else {
        4
    };
    max_batch_tokens.saturating_mul(batches).saturating_mul(BYTES_PER_TOKEN)
}

/// Consecutive chunks of the inputs, each closed once its texts (plus `extra_bytes` per input)
/// reach `budget` bytes; every chunk has at least one input.
fn chunk_ranges(inputs: &[Input], extra_bytes: usize, budget: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, input) in inputs.iter().enumerate() {
        let text_bytes = input.as_ref().map_or(0, String::len);
        bytes = bytes.saturating_add(text_bytes).saturating_add(extra_bytes);
        if bytes >= budget {
            chunks.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < inputs.len() {
        chunks.push(start..inputs.len());
    }
    chunks
}

/// Run a task over the inputs chunk by chunk, so that a long input shows its progress and its
/// results are written as they come; `each` gets every chunk's first input index and outcomes,
/// in order, so the output has the lines of one call, in the same order.
fn in_chunks<T>(
    inputs: &[Input],
    chunks: Vec<Range<usize>>,
    mut task: impl FnMut(&[&str]) -> Result<Vec<Result<T>>>,
    mut each: impl FnMut(usize, Vec<Outcome<T>>) -> Result<()>,
) -> Result<()> {
    let progress = Progress::new(inputs.len(), chunks.len());
    for chunk in chunks {
        let outcomes = per_input(&inputs[chunk.clone()], &mut task)?;
        progress.suspend(|| each(chunk.start, outcomes))?;
        progress.advance(chunk.len());
    }
    Ok(())
}

/// A progress bar on stderr, advanced as chunks of texts complete. Shown only for inputs of more
/// than one chunk and only when stderr is a terminal, so pipes, logs and tests never see it; it is
/// cleared when dropped, before any error line is printed.
struct Progress {
    bar: Option<ProgressBar>,
    /// Whether stdout shares the terminal, so that the bar must be hidden while lines are written.
    stdout_is_terminal: bool,
}

impl Progress {
    fn new(texts: usize, chunks: usize) -> Self {
        let stdout_is_terminal = std::io::stdout().is_terminal();
        if chunks < 2 || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                stdout_is_terminal,
            };
        }
        let style = ProgressStyle::with_template("{wide_bar} {pos}/{len} texts, {elapsed} elapsed, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(texts as u64), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_finish(ProgressFinish::AndClear);
        bar.tick();
        Progress {
            bar: Some(bar),
            stdout_is_terminal,
        }
    }

    /// Run `f`, which writes to stdout, with the bar hidden when both are on the terminal, so that
    /// their lines do not mix.
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) if self.stdout_is_terminal => bar.suspend(f),
            _ => f(),
        }
    }

    fn advance(&self, texts: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(texts as u64);
        }
    }
}

/// The JSON-lines output on stdout: one line per input, its result or `{"error": …}`.
struct JsonLines<'a> {
    out: &'a mut dyn Write,
    /// Inputs printed as errors.
    failed: usize,
    /// `--jsonl`: each input's id, added to its line.
    ids: Option<Vec<serde_json::Value>>,
}

impl JsonLines<'_> {
    fn value(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.out, "{value}").map_err(|e| Error::io("<stdout>", e))
    }

    /// One chunk's lines (its first input is `first`), flushed so that they are out while the
    /// progress bar is suspended.
    fn outcomes<T>(
        &mut self,
        first: usize,
        outcomes: Vec<Outcome<T>>,
        to_json: impl Fn(T) -> serde_json::Value,
    ) -> Result<()> {
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let mut line = match outcome {
                Ok(v) => to_json(v),
                Err(message) => {
                    self.failed += 1;
                    json!({ "error": message })
                }
            };
            if let (Some(ids), serde_json::Value::Object(o)) = (&self.ids, &mut line) {
                o.insert("id".into(), ids[first + i].clone());
            }
            self.value(line)?;
        }
        self.out.flush().map_err(|e| Error::io("<stdout>", e))
    }

    /// A texts command: the task over the inputs in chunks, each input's line in order.
    fn run<T>(
        &mut self,
        inputs: &[Input],
        chunks: Vec<Range<usize>>,
        task: impl FnMut(&[&str]) -> Result<Vec<Result<T>>>,
        to_json: impl Fn(T) -> serde_json::Value,
    ) -> Result<()> {
        in_chunks(inputs, chunks, task, |first, outcomes| {
            self.outcomes(first, outcomes, &to_json)
        })
    }
}

/// `embed --output FORMAT FILE`'s file, when given: `npy` is the one file format (JSON lines, the
/// default, go to stdout).
fn npy_output(output: Option<Vec<String>>) -> Result<Option<PathBuf>> {
    match output.as_deref() {
        None => Ok(None),
        Some([format, file]) if format == "npy" => Ok(Some(PathBuf::from(file))),
        Some([format, _]) => Err(Error::Input(format!(
            "--output {format}: the file format must be npy (JSON lines, the default, go to stdout)"
        ))),
        Some(_) => Err(Error::Input(
            "--output takes a format and a file: --output npy FILE".into(),
        )),
    }
}

/// `embed --output npy`: the whole command fails on the first input that fails, naming it.
fn npy_input_error(index: usize, inputs: usize, path: &Path, message: &str) -> Error {
    Error::Input(format!(
        "text {} of {inputs} failed, so {} was not written: {message}",
        index + 1,
        path.display()
    ))
}

/// `embed --precision`: the successful embeddings quantized together (sentence-transformers'
/// `quantize_embeddings` over the call's matrix), one row of JSON numbers each.
fn quantized_rows(outcomes: &[Outcome<Vec<f32>>], dim: usize, precision: Precision) -> Result<Vec<serde_json::Value>> {
    let good: Vec<f32> = outcomes.iter().flatten().flatten().copied().collect();
    let n = good.len() / dim;
    if n == 0 {
        return Ok(Vec::new());
    }
    let width = precision.width(n, dim);
    let rows: Vec<serde_json::Value> = match quantize(good, dim, precision, None)? {
        Quantized::F32(v) => v.chunks(width).map(|r| json!(r)).collect(),
        Quantized::I8(v) => v.chunks(width).map(|r| json!(r)).collect(),
        Quantized::U8(v) => v.chunks(width).map(|r| json!(r)).collect(),
    };
    Ok(rows)
}

/// Run a command; returns how many inputs failed (each printed as `{"error": "…"}` in its place).
fn run(cli: Cli, out: &mut dyn Write) -> Result<usize> {
    let mut lines = JsonLines {
        out,
        failed: 0,
        ids: None,
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
            precision,
            output,
            texts,
        } => {
            let npy = npy_output(output)?;
            let precision = Precision::parse(&precision)?;
            if npy.is_some() && precision != Precision::Float32 {
                return Err(Error::Input(
                    "--output npy writes float32: use it without --precision".into(),
                ));
            }
            let (texts, ids) = inputs(texts, engine.jsonl)?;
            lines.ids = ids;
            // Stdin lines that are not UTF-8 are known already: fail before the model loads.
            if let Some(path) = &npy {
                if let Some((i, Err(message))) = texts.iter().enumerate().find(|(_, t)| t.is_err()) {
                    return Err(npy_input_error(i, texts.len(), path, message));
                }
            }
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
                dim_after_normalize: false,
                prompt_name,
                prompt,
            };
            let chunks = chunk_ranges(
                &texts,
                SPECIAL_TOKEN_BYTES,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            let task = |t: &[&str]| pipeline.embed_each(t, &options);
            match &npy {
                None if precision != Precision::Float32 => {
                    let dim = pipeline.embed_dim(&options)?;
                    let mut outcomes = Vec::with_capacity(texts.len());
                    in_chunks(&texts, chunks, task, |_, chunk| {
                        outcomes.extend(chunk);
                        Ok(())
                    })?;
                    let rows = quantized_rows(&outcomes, dim, precision)?;
                    let mut rows = rows.into_iter();
                    let outcomes = outcomes
                        .into_iter()
                        .map(|o| o.map(|_| rows.next().expect("one row per embedding")))
                        .collect();
                    lines.outcomes(0, outcomes, |e| json!({ "embedding": e }))?;
                }
                None => lines.run(&texts, chunks, task, |e| json!({ "embedding": e }))?,
                Some(path) => {
                    let mut file = NpyFile::create(path, texts.len(), pipeline.embed_dim(&options)?)?;
                    in_chunks(&texts, chunks, task, |first, outcomes| {
                        for (i, outcome) in outcomes.into_iter().enumerate() {
                            let row = outcome.map_err(|m| npy_input_error(first + i, texts.len(), path, &m))?;
                            file.write_row(&row)?;
                        }
                        Ok(())
                    })?;
                    file.finish()?;
                }
            }
        }
        Command::FillMask { engine, top_k, texts } => {
            let (texts, ids) = inputs(texts, engine.jsonl)?;
            lines.ids = ids;
            let pipeline = engine.load()?;
            let chunks = chunk_ranges(
                &texts,
                SPECIAL_TOKEN_BYTES,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            lines.run(
                &texts,
                chunks,
                |t| pipeline.fill_mask_each(t, top_k),
                |masks| json!({ "masks": masks }),
            )?;
        }
        Command::Classify { engine, texts } => {
            let (texts, ids) = inputs(texts, engine.jsonl)?;
            lines.ids = ids;
            let pipeline = engine.load()?;
            let chunks = chunk_ranges(
                &texts,
                SPECIAL_TOKEN_BYTES,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            lines.run(
                &texts,
                chunks,
                |t| pipeline.classify_each(t),
                |c| serde_json::to_value(c).expect("plain data serialises"),
            )?;
        }
        Command::Rerank {
            engine,
            query,
            documents,
        } => {
            let (documents, ids) = inputs(documents, engine.jsonl)?;
            lines.ids = ids;
            let pipeline = engine.load()?;
            // Each document is encoded with the query: [CLS] query [SEP] document [SEP].
            let chunks = chunk_ranges(
                &documents,
                query.len() + SPECIAL_TOKEN_BYTES + BYTES_PER_TOKEN,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            lines.run(
                &documents,
                chunks,
                |d| pipeline.rerank_each(&query, d),
                |s| json!({ "score": s }),
            )?;
        }
        Command::Colbert { engine, query, texts } => {
            let (texts, ids) = inputs(texts, engine.jsonl)?;
            lines.ids = ids;
            let pipeline = engine.load()?;
            // The [Q] / [D] marker is one more token.
            let chunks = chunk_ranges(
                &texts,
                SPECIAL_TOKEN_BYTES + BYTES_PER_TOKEN,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            lines.run(
                &texts,
                chunks,
                |t| pipeline.colbert_each(t, query),
                |v| json!({ "vectors": v }),
            )?;
        }
        Command::TokenClassify { engine, texts } => {
            let (texts, ids) = inputs(texts, engine.jsonl)?;
            lines.ids = ids;
            let pipeline = engine.load()?;
            let chunks = chunk_ranges(
                &texts,
                SPECIAL_TOKEN_BYTES,
                chunk_bytes(&pipeline, engine.max_batch_tokens),
            );
            lines.run(
                &texts,
                chunks,
                |t| pipeline.token_classify_each(t),
                |tokens| json!({ "tokens": tokens }),
            )?;
        }
        #[cfg(feature = "server")]
        Command::Serve { engine, server } => {
            if engine.no_truncate || engine.jsonl {
                return Err(Error::Input(
                    "serve: truncation is per request (`truncate`, --auto-truncate); --no-truncate and --jsonl do not apply"
                        .into(),
                ));
            }
            let pipeline = engine.load()?;
            let options = modernbert::serve::ServeOptions {
                hostname: server.hostname,
                port: server.port,
                model_id: engine.model.model.clone(),
                max_client_batch_size: server.max_client_batch_size,
                max_concurrent_requests: server.max_concurrent_requests,
                auto_truncate: server.auto_truncate,
                payload_limit: server.payload_limit,
            };
            modernbert::serve::serve(pipeline, options)?;
        }
        Command::Bench { args } => modernbert::bench::run(&args, &mut |v| lines.value(v))?,
        Command::Info { model, device } => {
            let options = EngineOptions {
                device,
                ..EngineOptions::default()
            };
            let p = Engine::new(&resolve_model(&model.model)?, &options)?;
            let c = &p.config;
            lines.value(json!({
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
    Ok(lines.failed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_inputs_in_order_within_the_budget() {
        let inputs: Vec<Input> = (0..50)
            .map(|i| {
                if i % 9 == 4 {
                    Err(format!("bad {i}"))
                } else {
                    Ok("x".repeat(i % 13))
                }
            })
            .collect();
        for budget in [1, 10, 40, 1000] {
            let chunks = chunk_ranges(&inputs, 3, budget);
            assert_eq!(chunks.first().unwrap().start, 0);
            assert_eq!(chunks.last().unwrap().end, inputs.len());
            for pair in chunks.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "consecutive");
            }
            for chunk in &chunks {
                assert!(!chunk.is_empty());
                // Closed as soon as the budget is reached: without its last input, under it.
                let bytes = |r: Range<usize>| -> usize {
                    inputs[r].iter().map(|i| i.as_ref().map_or(0, String::len) + 3).sum()
                };
                assert!(bytes(chunk.start..chunk.end - 1) < budget, "{budget}: {chunk:?}");
            }
        }
        assert_eq!(chunk_ranges(&inputs, 3, usize::MAX), [0..inputs.len()]);
    }
}
