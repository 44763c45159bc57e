//! Kernel microbenchmarks over the kernels-tests case tables (`src/cases/*.rs`), plus
//! ModernBERT-sized cases built from the same case structs.
//!
//! On a GPU (`--device cuda`, or `MODERNBERT_TEST_DEVICE=cuda`): every launch is timed with CUDA
//! events, with the L2 flushed before each repeat (a memset of 2 × the L2 size on the same stream,
//! outside the timed events); the median of `--repeats` is reported with the achieved GB/s (from
//! the case's minimum DRAM traffic) and TFLOP/s (attention: QKᵀ + PV useful FLOPs), and as a % of
//! the card's ceilings measured in the same run: a large device-to-device copy (GB/s, read + write)
//! and a large cuBLASLt bf16 GEMM (TFLOP/s).
//!
//! On the emulator (default without a GPU) it runs the same launches with wall-clock timing: the
//! numbers mean nothing (it says so); `--smoke` (one case per op, one repeat) is the CI check that
//! the harness works.
//!
//! ```sh
//! cargo run --release -p kernels-tests --bin microbench -- --smoke                 # emulator, CI
//! cargo run --release -p kernels-tests --bin microbench -- --device cuda           # all cases
//! cargo run --release -p kernels-tests --bin microbench -- --device cuda --model-only --json out.jsonl
//! ```

use kernels_tests::cases::{self, attention::AttentionCase};
use kernels_tests::{upload, upload_batch, upload_u32, Dtype, Rng};
use modernbert::kernels::device::{CudaDevice, Device, DeviceBuffer, GemmDesc};
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::params::*;
use modernbert::kernels::{ops, KernelError};
use std::io::Write;

struct Opts {
    cuda: bool,
    smoke: bool,
    repeats: usize,
    dtype: Dtype,
    model_only: bool,
    table_only: bool,
    filter: Option<String>,
    json: Option<String>,
}

fn parse() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let val = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    if flag("--help") || flag("-h") {
        println!(
            "microbench [--device emulator|cuda] [--smoke] [--repeats N] [--dtype bf16|fp16] \
             [--model-only|--table-only] [--op NAME] [--json FILE]"
        );
        std::process::exit(0);
    }
    let env_dev = std::env::var("MODERNBERT_TEST_DEVICE").unwrap_or_default();
    let device = val("--device").unwrap_or(if env_dev.starts_with("cuda") {
        "cuda".into()
    } else {
        "emulator".into()
    });
    let smoke = flag("--smoke");
    Opts {
        cuda: device.starts_with("cuda"),
        smoke,
        repeats: val("--repeats")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 1 } else { 20 })
            .max(1),
        dtype: if val("--dtype").as_deref() == Some("fp16") {
            Dtype::F16
        } else {
            Dtype::Bf16
        },
        model_only: flag("--model-only"),
        table_only: flag("--table-only"),
        filter: val("--op"),
        json: val("--json"),
    }
}

type Launch = Box<dyn Fn(&dyn Device) -> Result<(), KernelError>>;

/// Median seconds of `repeats` timed runs of `launch` (after one untimed warm-up run), on the
/// device's clock ([`Device::time_launches`]: CUDA events with the L2 flushed before each run, or
/// the wall clock on the emulator).
fn median_seconds(
    dev: &dyn Device,
    repeats: usize,
    launch: &dyn Fn(&dyn Device) -> Result<(), KernelError>,
) -> Result<f64, KernelError> {
    launch(dev)?;
    dev.synchronize()?;
    let mut t = dev.time_launches(repeats, true, &mut || launch(dev))?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// A prepared case: its buffers live inside `launch`.
struct Case {
    op: &'static str,
    name: String,
    /// Minimum DRAM traffic (bytes read + written).
    bytes: f64,
    /// Useful FLOPs (0 for memory-bound ops).
    flops: f64,
    launch: Launch,
}

fn buf(dev: &dyn Device, dt: Dtype, rng: &mut Rng, n: usize, label: &str) -> DeviceBuffer {
    // Moderate values (no overflow when a residual is added repeatedly); for big buffers a short
    // random pattern repeated (host generation time matters at ModernBERT sizes).
    let pattern: Vec<f32> = (0..n.min(1 << 16)).map(|_| 0.5 * rng.normal()).collect();
    let data: Vec<f32> = (0..n).map(|i| pattern[i % pattern.len().max(1)]).collect();
    upload(dev, dt, &data, label)
}

fn zeros(dev: &dyn Device, bytes: usize, label: &str) -> DeviceBuffer {
    dev.upload_new(&vec![0u8; bytes], label).expect("upload")
}

const E: usize = 2; // bytes per bf16/fp16 element

fn layernorm_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::layernorm::LayerNormCase, tag: &str) -> Case {
    let (t, cap, h) = (c.tokens as usize, c.capacity as usize, c.hidden as usize);
    let x = buf(dev, dt, rng, cap * h, "x");
    let delta = buf(dev, dt, rng, cap * h, "delta");
    let w = buf(dev, dt, rng, h, "w");
    let b = buf(dev, dt, rng, h, "b");
    let out = zeros(dev, cap * h * E, "out");
    let batch = upload_batch(dev, c.tokens, 1, c.tokens);
    let p = LayerNormParams {
        residual: x.addr(),
        delta: if c.residual { delta.addr() } else { 0 },
        weight: w.addr(),
        bias: if c.bias { b.addr() } else { 0 },
        out: out.addr(),
        batch: batch.addr(),
        max_tokens: c.capacity,
        hidden: c.hidden,
        eps: 1e-5,
        _pad0: 0,
    };
    let rows = if c.residual { 4 } else { 2 }; // x (+ delta read, x write), out
    Case {
        op: "layernorm",
        name: format!(
            "{tag}t{}_h{}{}{}",
            c.tokens,
            c.hidden,
            if c.residual { "_res" } else { "" },
            if c.bias { "_bias" } else { "" }
        ),
        bytes: (t * h * E * rows) as f64,
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&x, &delta, &w, &b, &out, &batch);
            ops::layernorm(d, dt, &p)
        }),
    }
}

fn embeddings_case(
    dev: &dyn Device,
    dt: Dtype,
    rng: &mut Rng,
    c: &cases::embeddings::EmbeddingCase,
    tag: &str,
) -> Case {
    let (t, cap, h, v) = (
        c.tokens as usize,
        c.capacity as usize,
        c.hidden as usize,
        c.vocab as usize,
    );
    let ids: Vec<u32> = (0..cap).map(|_| rng.below(c.vocab)).collect();
    let ids = upload_u32(dev, &ids, "ids");
    let table = buf(dev, dt, rng, v * h, "table");
    let w = buf(dev, dt, rng, h, "w");
    let b = buf(dev, dt, rng, h, "b");
    let out = zeros(dev, cap * h * E, "out");
    let batch = upload_batch(dev, c.tokens, 1, c.tokens);
    let p = EmbeddingLayerNormParams {
        ids: ids.addr(),
        table: table.addr(),
        weight: w.addr(),
        bias: if c.bias { b.addr() } else { 0 },
        out: out.addr(),
        batch: batch.addr(),
        max_tokens: c.capacity,
        hidden: c.hidden,
        vocab: c.vocab,
        eps: 1e-5,
    };
    Case {
        op: "embeddings",
        name: format!("{tag}t{}_h{}_v{}", c.tokens, c.hidden, c.vocab),
        bytes: (t * (4 + 2 * h * E)) as f64,
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&ids, &table, &w, &b, &out, &batch);
            ops::embeddings(d, dt, &p)
        }),
    }
}

fn rope_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::rope::RopeCase, tag: &str) -> Case {
    let t: u32 = c.seqlens.iter().sum();
    let (cap, heads, hd) = (c.capacity as usize, c.heads as usize, c.head_dim as usize);
    let qkv = buf(dev, dt, rng, cap * 3 * heads * hd, "qkv");
    let cu = upload_u32(dev, &cases::cu_seqlens(&c.seqlens), "cu_seqlens");
    let batch = upload_batch(dev, t, c.seqlens.len() as u32, *c.seqlens.iter().max().unwrap_or(&1));
    let p = RopeParams {
        qkv: qkv.addr(),
        cu_seqlens: cu.addr(),
        batch: batch.addr(),
        max_tokens: c.capacity,
        heads: c.heads,
        head_dim: c.head_dim,
        theta: c.theta,
    };
    Case {
        op: "rope",
        name: format!("{tag}t{t}_s{}_heads{}_hd{}", c.seqlens.len(), c.heads, c.head_dim),
        bytes: (t as usize * 2 * heads * hd * E * 2) as f64, // Q and K, read + write
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&qkv, &cu, &batch);
            ops::rope(d, dt, &p)
        }),
    }
}

fn attention_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &AttentionCase, tag: &str) -> Case {
    let t = c.tokens();
    let qkv = buf(dev, dt, rng, t.max(1) * 3 * c.heads * 64, "qkv");
    let out = zeros(dev, t.max(1) * c.heads * 64 * E, "out");
    let cu = upload_u32(dev, &c.cu_seqlens(), "cu_seqlens");
    let kl = c.key_lens.as_ref().map(|k| upload_u32(dev, k, "key_lens"));
    let batch = upload_batch(
        dev,
        t as u32,
        c.seqlens.len() as u32,
        *c.seqlens.iter().max().unwrap_or(&1),
    );
    let p = AttentionParams {
        qkv: qkv.addr(),
        out: out.addr(),
        cu_seqlens: cu.addr(),
        key_lens: kl.as_ref().map_or(0, |b| b.addr()),
        batch: batch.addr(),
        max_sequences: c.max_sequences as u32,
        max_seqlen: c.max_seqlen as u32,
        heads: c.heads as u32,
        head_dim: 64,
        window_radius: c.radius.map_or(-1, |r| r as i32),
        softmax_scale: 0.125,
    };
    Case {
        op: "attention",
        name: format!("{tag}{}_heads{}", c.name, c.heads),
        bytes: (t * c.heads * 64 * E * 4) as f64, // q, k, v read once, out written
        flops: c.flops(),
        launch: Box::new(move |d| {
            let _keep = (&qkv, &out, &cu, &kl, &batch);
            ops::attention(d, dt, &p)
        }),
    }
}

fn geglu_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::geglu::GegluCase, tag: &str) -> Case {
    let (t, cap, i) = (c.tokens as usize, c.capacity as usize, c.inter as usize);
    let h = buf(dev, dt, rng, cap * 2 * i, "h");
    let out = zeros(dev, cap * i * E, "out");
    let batch = upload_batch(dev, c.tokens, 1, c.tokens);
    let p = GegluParams {
        h: h.addr(),
        out: out.addr(),
        batch: batch.addr(),
        max_tokens: c.capacity,
        inter: c.inter,
        activation: c.activation,
        _pad0: 0,
    };
    Case {
        op: "geglu",
        name: format!("{tag}t{}_i{}_act{}", c.tokens, c.inter, c.activation),
        bytes: (t * 3 * i * E) as f64,
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&h, &out, &batch);
            ops::geglu(d, dt, &p)
        }),
    }
}

fn pad_cases(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::unpad::PadCase, tag: &str) -> Vec<Case> {
    let cu = cases::cu_seqlens(&c.seqlens);
    let t = *cu.last().unwrap() as usize;
    let (s, l, w) = (c.max_sequences as usize, c.padded_len as usize, c.width as usize);
    let padded = std::rc::Rc::new(buf(dev, dt, rng, s * l * w, "padded"));
    let packed = std::rc::Rc::new(buf(dev, dt, rng, t.max(1) * w, "packed"));
    let d_cu = std::rc::Rc::new(upload_u32(dev, &cu, "cu_seqlens"));
    let batch = std::rc::Rc::new(upload_batch(
        dev,
        t as u32,
        c.seqlens.len() as u32,
        *c.seqlens.iter().max().unwrap_or(&1),
    ));
    let p = PadParams {
        padded: padded.addr(),
        packed: packed.addr(),
        cu_seqlens: d_cu.addr(),
        batch: batch.addr(),
        max_sequences: c.max_sequences,
        padded_len: c.padded_len,
        width: c.width,
        _pad0: 0,
    };
    let name = format!("{tag}t{t}_s{}x{}_w{}", c.max_sequences, c.padded_len, c.width);
    let keep = (padded, packed, d_cu, batch);
    let keep2 = keep.clone();
    vec![
        Case {
            op: "unpad",
            name: name.clone(),
            bytes: (t * w * E * 2) as f64,
            flops: 0.0,
            launch: Box::new(move |d| {
                let _keep = &keep;
                ops::unpad(d, dt, &p)
            }),
        },
        Case {
            op: "repad",
            name,
            bytes: (t * w * E + s * l * w * E) as f64,
            flops: 0.0,
            launch: Box::new(move |d| {
                let _keep = &keep2;
                ops::repad(d, dt, &p)
            }),
        },
    ]
}

fn pool_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::pooling::PoolCase, tag: &str) -> Case {
    let cu = cases::cu_seqlens(&c.seqlens);
    let t = *cu.last().unwrap() as usize;
    let (ms, h, od) = (c.max_sequences as usize, c.hidden as usize, c.out_dim as usize);
    let hidden = buf(dev, dt, rng, t.max(1) * h, "hidden");
    let out = zeros(dev, ms * od * 4, "out");
    let d_cu = upload_u32(dev, &cu, "cu_seqlens");
    let kl = c.key_lens.as_ref().map(|k| upload_u32(dev, k, "key_lens"));
    let batch = upload_batch(
        dev,
        t as u32,
        c.seqlens.len() as u32,
        *c.seqlens.iter().max().unwrap_or(&1),
    );
    let p = PoolParams {
        hidden: hidden.addr(),
        out: out.addr(),
        cu_seqlens: d_cu.addr(),
        key_lens: kl.as_ref().map_or(0, |b| b.addr()),
        batch: batch.addr(),
        max_sequences: c.max_sequences,
        hidden_dim: c.hidden,
        out_dim: c.out_dim,
        pooling: c.pooling,
        normalize: c.normalize as u32,
        _pad0: 0,
    };
    let n = c.seqlens.len();
    let read = if c.pooling == MB_POOL_CLS {
        n * od * E
    } else {
        t * od * E
    };
    Case {
        op: "pool",
        name: format!(
            "{tag}t{t}_s{n}_h{h}_d{od}_{}",
            if c.pooling == MB_POOL_CLS { "cls" } else { "mean" }
        ),
        bytes: (read + n * od * 4) as f64,
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&hidden, &out, &d_cu, &kl, &batch);
            ops::pool(d, dt, &p)
        }),
    }
}

fn head_cases(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::mlm_head::HeadCase, tag: &str) -> Vec<Case> {
    let (t, cap, h, v) = (
        c.tokens as usize,
        c.capacity as usize,
        c.hidden as usize,
        c.vocab as usize,
    );
    let x = buf(dev, dt, rng, cap * h, "x");
    let db = buf(dev, dt, rng, h, "dense_bias");
    let w = buf(dev, dt, rng, h, "w");
    let b = buf(dev, dt, rng, h, "b");
    let out = zeros(dev, cap * h * E, "out");
    let batch = std::rc::Rc::new(upload_batch(dev, c.tokens, 1, c.tokens));
    let p = HeadActNormParams {
        x: x.addr(),
        dense_bias: if c.dense_bias { db.addr() } else { 0 },
        weight: w.addr(),
        bias: if c.norm_bias { b.addr() } else { 0 },
        out: out.addr(),
        batch: batch.addr(),
        max_tokens: c.capacity,
        hidden: c.hidden,
        activation: c.activation,
        eps: 1e-5,
    };
    let logits_in = buf(dev, dt, rng, cap * v, "logits_in");
    let vb = buf(dev, dt, rng, v, "decoder_bias");
    let logits = zeros(dev, cap * v * 4, "logits");
    let q = BiasAddParams {
        x: logits_in.addr(),
        bias: vb.addr(),
        out: logits.addr(),
        batch: batch.addr(),
        max_rows: c.capacity,
        cols: c.vocab,
    };
    let batch2 = batch.clone();
    vec![
        Case {
            op: "head_act_norm",
            name: format!("{tag}t{}_h{}", c.tokens, c.hidden),
            bytes: (t * h * E * 2) as f64,
            flops: 0.0,
            launch: Box::new(move |d| {
                let _keep = (&x, &db, &w, &b, &out, &batch);
                ops::head_act_norm(d, dt, &p)
            }),
        },
        Case {
            op: "bias_add",
            name: format!("{tag}t{}_v{}", c.tokens, c.vocab),
            bytes: (t * v * (E + 4)) as f64,
            flops: 0.0,
            launch: Box::new(move |d| {
                let _keep = (&logits_in, &vb, &logits, &batch2);
                ops::bias_add(d, dt, &q)
            }),
        },
    ]
}

fn colbert_case(dev: &dyn Device, dt: Dtype, rng: &mut Rng, c: &cases::colbert::ColbertCase, tag: &str) -> Case {
    let (r, cap, dim) = (c.rows as usize, c.capacity as usize, c.dim as usize);
    let x = buf(dev, dt, rng, cap * dim, "x");
    let out = zeros(dev, cap * dim * 4, "out");
    let batch = upload_batch(dev, c.rows, 1, c.rows);
    let p = RowNormalizeParams {
        x: x.addr(),
        out: out.addr(),
        batch: batch.addr(),
        max_rows: c.capacity,
        dim: c.dim,
    };
    Case {
        op: "colbert_normalize",
        name: format!("{tag}r{}_d{}", c.rows, c.dim),
        bytes: (r * dim * (E + 4)) as f64,
        flops: 0.0,
        launch: Box::new(move |d| {
            let _keep = (&x, &out, &batch);
            ops::colbert_normalize(d, dt, &p)
        }),
    }
}

// ModernBERT-sized cases (base: hidden 768, 12 heads, I 1152; a 64 K-token batch of 128 × 512).
const T: u32 = 65536;

fn attn(name: &str, seqlens: Vec<u32>, heads: usize, radius: Option<usize>) -> AttentionCase {
    let max = *seqlens.iter().max().unwrap() as usize;
    AttentionCase {
        name: name.into(),
        max_sequences: seqlens.len(),
        seqlens,
        key_lens: None,
        heads,
        radius,
        max_seqlen: max,
        dtypes: &[Dtype::Bf16, Dtype::F16],
    }
}

/// Builds every case of one op (lazily, so that only the selected ops allocate).
type Builder = Box<dyn Fn(&dyn Device, Dtype, &mut Rng, bool, bool, bool) -> Vec<Case>>;

/// `(op, builder(dev, dtype, rng, table, model, smoke))`.
fn builders() -> Vec<(&'static str, Builder)> {
    fn pick<C: Clone>(table: Vec<C>, model: Vec<C>, t: bool, m: bool, smoke: bool) -> Vec<(C, &'static str)> {
        let mut v: Vec<(C, &'static str)> = Vec::new();
        if t {
            v.extend(table.into_iter().map(|c| (c, "")));
        }
        if m {
            v.extend(model.into_iter().map(|c| (c, "model_")));
        }
        if smoke {
            v.truncate(1);
        }
        v
    }
    use cases::*;
    vec![
        (
            "layernorm",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![
                    layernorm::LayerNormCase {
                        tokens: T,
                        capacity: T,
                        hidden: 768,
                        residual: true,
                        bias: false,
                    },
                    layernorm::LayerNormCase {
                        tokens: T,
                        capacity: T,
                        hidden: 1024,
                        residual: true,
                        bias: false,
                    },
                ];
                pick(layernorm::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| layernorm_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "embeddings",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![embeddings::EmbeddingCase {
                    tokens: T,
                    capacity: T,
                    hidden: 768,
                    vocab: 50368,
                    bias: false,
                }];
                pick(embeddings::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| embeddings_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "rope",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![rope::RopeCase {
                    seqlens: vec![512; 128],
                    capacity: T,
                    heads: 12,
                    head_dim: 64,
                    theta: 160_000.0,
                }];
                pick(rope::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| rope_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "attention",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let mut table = attention::cases();
                if t && !s {
                    table.extend(attention::long_cases());
                }
                let model = vec![
                    attn("global_128x512", vec![512; 128], 12, None),
                    attn("local64_128x512", vec![512; 128], 12, Some(64)),
                    attn("global_8x8192", vec![8192; 8], 12, None),
                    attn("local64_8x8192", vec![8192; 8], 12, Some(64)),
                ];
                pick(table, model, t, m, s)
                    .iter()
                    .map(|(c, tag)| attention_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "geglu",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![
                    geglu::GegluCase {
                        tokens: T,
                        capacity: T,
                        inter: 1152,
                        activation: 0,
                    },
                    geglu::GegluCase {
                        tokens: T,
                        capacity: T,
                        inter: 2624,
                        activation: 0,
                    },
                ];
                pick(geglu::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| geglu_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "unpad",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let lens: Vec<u32> = (0..128).map(|i| 192 + (i * 37) % 320).collect();
                let model = vec![unpad::PadCase {
                    seqlens: lens,
                    max_sequences: 128,
                    padded_len: 512,
                    width: 768,
                }];
                pick(unpad::cases(), model, t, m, s)
                    .iter()
                    .flat_map(|(c, tag)| pad_cases(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "pool",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let base = pooling::PoolCase {
                    seqlens: vec![512; 128],
                    key_lens: None,
                    max_sequences: 128,
                    hidden: 768,
                    out_dim: 768,
                    pooling: MB_POOL_MEAN,
                    normalize: true,
                };
                let model = vec![
                    base.clone(),
                    pooling::PoolCase {
                        pooling: MB_POOL_CLS,
                        ..base
                    },
                ];
                pick(pooling::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| pool_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "mlm_head",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![mlm_head::HeadCase {
                    tokens: 4096,
                    capacity: 4096,
                    hidden: 768,
                    vocab: 50368,
                    dense_bias: false,
                    norm_bias: false,
                    activation: 0,
                }];
                pick(mlm_head::cases(), model, t, m, s)
                    .iter()
                    .flat_map(|(c, tag)| head_cases(d, dt, r, c, tag))
                    .collect()
            }),
        ),
        (
            "colbert",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![colbert::ColbertCase {
                    rows: T,
                    capacity: T,
                    dim: 128,
                }];
                pick(colbert::cases(), model, t, m, s)
                    .iter()
                    .map(|(c, tag)| colbert_case(d, dt, r, c, tag))
                    .collect()
            }),
        ),
    ]
}

/// Ceilings measured in this run: device-to-device copy GB/s (read + write) and bf16 GEMM TFLOP/s.
fn ceilings(d: &dyn Device, repeats: usize) -> Result<(f64, f64, String), KernelError> {
    let emulated = d.as_emulator().is_some();
    let (copy_bytes, gemm_n) = if emulated {
        (1usize << 20, 128u32)
    } else {
        (1usize << 30, 8192u32)
    };
    let src = d.alloc(copy_bytes, "copy_src")?;
    let dst = std::cell::RefCell::new(d.alloc(copy_bytes, "copy_dst")?);
    let copy_s = median_seconds(d, repeats.max(5), &|d| d.copy(&src, &mut dst.borrow_mut()))?;
    let n = gemm_n as usize;
    let a = zeros(d, n * n * E, "gemm_a");
    let w = zeros(d, n * n * E, "gemm_w");
    let o = zeros(d, n * n * E, "gemm_out");
    let g = GemmDesc {
        a: a.addr(),
        w: w.addr(),
        bias: 0,
        out: o.addr(),
        m: gemm_n,
        n: gemm_n,
        k: gemm_n,
    };
    let gemm_s = median_seconds(d, repeats.max(5), &move |d| d.gemm(Dtype::Bf16, &g))?;
    let gemm = if emulated { "host (emulator)" } else { "cuBLASLt" };
    let what = format!("D2D copy {} MiB, {gemm} bf16 GEMM {n}x{n}x{n}", copy_bytes >> 20);
    Ok((
        2.0 * copy_bytes as f64 / copy_s / 1e9,
        2.0 * (n * n * n) as f64 / gemm_s / 1e12,
        what,
    ))
}

fn main() {
    let o = parse();
    let dev: Box<dyn Device> = if o.cuda {
        match CudaDevice::new(0) {
            Ok(c) => Box::new(c),
            Err(e) => {
                eprintln!("error: --device cuda: {e}");
                std::process::exit(1);
            }
        }
    } else {
        Box::new(Emulator::new())
    };
    let dev = &*dev;
    let is_emu = dev.as_emulator().is_some();
    if is_emu {
        println!("# device: emulator — timings are wall-clock of the CPU emulation and MEAN NOTHING; this is a smoke check of the harness.");
    } else {
        println!(
            "# device: {} — CUDA events, L2 flushed (2 x L2 memset) before every repeat, median of {} repeats",
            dev.name(),
            o.repeats
        );
    }
    // The emulator runs the table cases only (ModernBERT sizes take minutes there) unless asked.
    let (table, model) = match (o.table_only, o.model_only) {
        (true, _) => (true, false),
        (_, true) => (false, true),
        _ => (true, !is_emu),
    };
    let mut json = o
        .json
        .as_ref()
        .map(|p| std::fs::File::create(p).unwrap_or_else(|e| panic!("--json {p}: {e}")));
    let (bw, tf, what) = ceilings(dev, o.repeats).unwrap_or_else(|e| panic!("ceilings: {e}"));
    println!(
        "# ceilings measured now ({what}): {bw:.1} GB/s, {tf:.2} TFLOP/s{}",
        if is_emu { " (emulator: meaningless)" } else { "" }
    );
    if let Some(f) = json.as_mut() {
        let line = serde_json_line(&[
            ("kind", "\"ceilings\"".into()),
            ("device", format!("{:?}", dev.name())),
            ("copy_gbps", format!("{bw:.3}")),
            ("gemm_tflops", format!("{tf:.4}")),
            ("what", format!("{what:?}")),
        ]);
        writeln!(f, "{line}").unwrap();
    }
    println!(
        "{:<18} {:<44} {:>10} {:>9} {:>7} {:>9} {:>7}",
        "op", "case", "time_us", "GB/s", "%bw", "TFLOP/s", "%gemm"
    );
    let mut rng = Rng::new(1);
    let mut failures = 0;
    for (op, build) in builders() {
        if o.filter.as_deref().is_some_and(|f| f != op) {
            continue;
        }
        for case in build(dev, o.dtype, &mut rng, table, model, o.smoke) {
            match median_seconds(dev, o.repeats, &case.launch) {
                Ok(s) => {
                    let gbps = case.bytes / s / 1e9;
                    let tflops = case.flops / s / 1e12;
                    let flops_cols = if case.flops > 0.0 {
                        (format!("{tflops:.2}"), format!("{:.1}", 100.0 * tflops / tf))
                    } else {
                        ("-".into(), "-".into())
                    };
                    println!(
                        "{:<18} {:<44} {:>10.2} {:>9.1} {:>7.1} {:>9} {:>7}",
                        case.op,
                        case.name,
                        s * 1e6,
                        gbps,
                        100.0 * gbps / bw,
                        flops_cols.0,
                        flops_cols.1
                    );
                    if let Some(f) = json.as_mut() {
                        let line = serde_json_line(&[
                            ("kind", "\"kernel\"".into()),
                            ("op", format!("{:?}", case.op)),
                            ("case", format!("{:?}", case.name)),
                            ("dtype", format!("{:?}", format!("{:?}", o.dtype))),
                            ("device", format!("{:?}", dev.name())),
                            ("time_us", format!("{:.3}", s * 1e6)),
                            ("bytes", format!("{}", case.bytes)),
                            ("flops", format!("{}", case.flops)),
                            ("gbps", format!("{gbps:.3}")),
                            ("pct_copy_bw", format!("{:.2}", 100.0 * gbps / bw)),
                            ("tflops", format!("{tflops:.4}")),
                            ("pct_gemm", format!("{:.2}", 100.0 * tflops / tf)),
                            ("emulator", format!("{is_emu}")),
                        ]);
                        writeln!(f, "{line}").unwrap();
                    }
                }
                Err(e) => {
                    failures += 1;
                    println!("{:<18} {:<44} FAILED: {e}", case.op, case.name);
                }
            }
        }
    }
    if failures > 0 {
        eprintln!("error: {failures} case(s) failed");
        std::process::exit(1);
    }
}

/// A flat JSON object from already-encoded values (kernels-tests has no serde dependency).
fn serde_json_line(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CI smoke check: one case per op on the emulator, ceilings included.
    #[test]
    fn smoke_on_the_emulator() {
        let dev = Emulator::new();
        let (bw, tf, _) = ceilings(&dev, 1).unwrap();
        assert!(bw > 0.0 && tf > 0.0);
        let mut rng = Rng::new(1);
        let mut ops = Vec::new();
        for (op, build) in builders() {
            let cases = build(&dev, Dtype::Bf16, &mut rng, true, false, true);
            assert!(!cases.is_empty(), "{op}");
            for c in cases {
                let s = median_seconds(&dev, 1, &c.launch).unwrap_or_else(|e| panic!("{op} {}: {e}", c.name));
                assert!(s >= 0.0 && c.bytes > 0.0);
                ops.push(c.op);
            }
        }
        for op in [
            "layernorm",
            "embeddings",
            "rope",
            "attention",
            "geglu",
            "unpad",
            "repad",
            "pool",
            "head_act_norm",
            "bias_add",
            "colbert_normalize",
        ] {
            assert!(ops.contains(&op), "{op} missing");
        }
    }
}
