//! Kernel microbenchmarks over the kernels-tests cases (`src/cases/*.rs`: the same tables, buffers,
//! parameter structs, launches, bytes and FLOPs the kernel tests use), plus ModernBERT-sized cases
//! built from the same case structs.
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

use kernels_tests::cases::{self, Inputs, Prepared, E};
use kernels_tests::{Dtype, Rng};
use modernbert::kernels::device::{Device, DeviceBuffer, GemmDesc};
use modernbert::kernels::params::{MB_POOL_CLS, MB_POOL_MEAN};
use modernbert::kernels::KernelError;
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
    let val = |name: &str| kernels_tests::arg_value(&args, name);
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

fn zeros(dev: &dyn Device, bytes: usize, label: &str) -> DeviceBuffer {
    dev.upload_new(&vec![0u8; bytes], label).expect("upload")
}

// ModernBERT-sized cases (base: hidden 768, 12 heads, I 1152; a 64 K-token batch of 128 × 512).
const T: u32 = 65536;

/// A prepared case and the prefix of its name (`model_` for the ModernBERT-sized ones).
type Bench = (&'static str, Box<dyn Prepared>);

/// Builds every case of one op (lazily, so that only the selected ops allocate).
type Builder = Box<dyn Fn(&dyn Device, Dtype, &mut Rng, bool, bool, bool) -> Vec<Bench>>;

/// gemm_sm90 launched with a block per output tile instead of the product's persistent grid.
struct OnePerTile(cases::gemm_sm90::GemmSm90Run);

impl Prepared for OnePerTile {
    fn name(&self, kernel: usize) -> String {
        format!("{}_one_per_tile", self.0.name(kernel))
    }
    fn kernels(&self) -> &'static [&'static str] {
        self.0.kernels()
    }
    fn launch(&self, dev: &dyn Device, _kernel: usize) -> Result<(), KernelError> {
        self.0
            .launch_scheduled(dev, modernbert::kernels::ops::TileSchedule::OnePerTile)
    }
    fn bytes(&self, kernel: usize) -> f64 {
        self.0.bytes(kernel)
    }
    fn flops(&self, kernel: usize) -> f64 {
        self.0.flops(kernel)
    }
}

/// The attention tests' table, with the 8192-token cases unless smoke-testing.
fn attention_table(table: bool, smoke: bool) -> Vec<cases::attention::AttentionCase> {
    let mut v = cases::attention::cases();
    if table && !smoke {
        v.extend(cases::attention::long_cases());
    }
    v
}

fn pick<C>(table: Vec<C>, model: Vec<C>, t: bool, m: bool, smoke: bool) -> Vec<(C, &'static str)> {
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

/// Prepares the picked cases with `new`, the op's `cases::<op>::*Run::new`. The inputs repeat a
/// short drawn pattern: ModernBERT-sized buffers would take longer to draw than to time.
fn prepare<C, R: Prepared + 'static>(
    dev: &dyn Device,
    dt: Dtype,
    rng: &mut Rng,
    picked: Vec<(C, &'static str)>,
    new: fn(&dyn Device, &C, &mut Inputs) -> R,
) -> Vec<Bench> {
    picked
        .into_iter()
        .map(|(c, tag)| {
            let run = new(dev, &c, &mut Inputs::repeating(rng, dt, 1 << 16));
            (tag, Box::new(run) as Box<dyn Prepared>)
        })
        .collect()
}

/// `(op, builder(dev, dtype, rng, table, model, smoke))`.
fn builders() -> Vec<(&'static str, Builder)> {
    use cases::*;
    vec![
        (
            "layernorm",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = [768, 1024]
                    .map(|hidden| layernorm::LayerNormCase {
                        tokens: T,
                        capacity: T,
                        hidden,
                        residual: true,
                        bias: false,
                    })
                    .to_vec();
                let picked = pick(layernorm::cases(), model, t, m, s);
                prepare(d, dt, r, picked, layernorm::LayerNormRun::new)
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
                let picked = pick(embeddings::cases(), model, t, m, s);
                prepare(d, dt, r, picked, embeddings::EmbeddingRun::new)
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
                prepare(d, dt, r, pick(rope::cases(), model, t, m, s), rope::RopeRun::new)
            }),
        ),
        (
            "attention",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let picked = pick(attention_table(t, s), attention::model_cases(), t, m, s);
                prepare(d, dt, r, picked, attention::AttentionRun::new)
            }),
        ),
        (
            // The same cases on the Hopper kernel (sm_90a; elsewhere it does not exist).
            "attention_sm90",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let picked = pick(attention_table(t, s), attention::model_cases(), t, m, s)
                    .into_iter()
                    .map(|(c, prefix)| (c.on(attention::AttentionKernel::Sm90), prefix))
                    .collect();
                prepare(d, dt, r, picked, attention::AttentionRun::new)
            }),
        ),
        (
            "geglu",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = [1152, 2624]
                    .map(|inter| geglu::GegluCase {
                        tokens: T,
                        capacity: T,
                        inter,
                        activation: 0,
                    })
                    .to_vec();
                prepare(d, dt, r, pick(geglu::cases(), model, t, m, s), geglu::GegluRun::new)
            }),
        ),
        (
            "gather",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                // Fill-mask's launch: 128 masked rows of a 4096-token batch at base width.
                let model = vec![gather::GatherCase {
                    tokens: 4096,
                    width: 768,
                    rows: (0..128).map(|i| i * 31).collect(),
                }];
                prepare(d, dt, r, pick(gather::cases(), model, t, m, s), gather::GatherRun::new)
            }),
        ),
        (
            "topk",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                // Fill-mask's launch: 128 rows of ModernBERT's vocabulary, k = 5.
                let model = vec![topk::TopkCase {
                    rows: 128,
                    cols: 50368,
                    k: 5,
                    ties: false,
                    nans: false,
                }];
                prepare(d, dt, r, pick(topk::cases(), model, t, m, s), topk::TopkRun::new)
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
                prepare(d, dt, r, pick(pooling::cases(), model, t, m, s), pooling::PoolRun::new)
            }),
        ),
        (
            "mlm_head",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let model = vec![mlm_head::HeadCase {
                    tokens: 4096,
                    capacity: 4096,
                    hidden: 768,
                    dense_bias: false,
                    norm_bias: false,
                    activation: 0,
                }];
                prepare(
                    d,
                    dt,
                    r,
                    pick(mlm_head::cases(), model, t, m, s),
                    mlm_head::HeadRun::new,
                )
            }),
        ),
        (
            "gemm_sm90",
            // sm_90a only: on another GPU its launches fail with "unknown kernel" (reported per case).
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let picked = pick(gemm_sm90::cases(), gemm_sm90::bench_cases(T), t, m, s);
                prepare(d, dt, r, picked, gemm_sm90::GemmSm90Run::new)
            }),
        ),
        (
            // The same launches with a block a tile: what the persistent schedule saves.
            "gemm_sm90_one_per_tile",
            Box::new(|d: &dyn Device, dt, r: &mut Rng, t, m, s| {
                let picked = pick(gemm_sm90::cases(), gemm_sm90::bench_cases(T), t, m, s);
                prepare(d, dt, r, picked, |d, c, i| {
                    OnePerTile(gemm_sm90::GemmSm90Run::new(d, c, i))
                })
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
                prepare(
                    d,
                    dt,
                    r,
                    pick(colbert::cases(), model, t, m, s),
                    colbert::ColbertRun::new,
                )
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
    let dev = kernels_tests::bench_device(o.cuda);
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
        for (tag, case) in build(dev, o.dtype, &mut rng, table, model, o.smoke) {
            for (k, &kernel) in case.kernels().iter().enumerate() {
                let name = format!("{tag}{}", case.name(k));
                let (bytes, flops) = (case.bytes(k), case.flops(k));
                match median_seconds(dev, o.repeats, &|d| case.launch(d, k)) {
                    Ok(s) => {
                        let gbps = bytes / s / 1e9;
                        let tflops = flops / s / 1e12;
                        let flops_cols = if flops > 0.0 {
                            (format!("{tflops:.2}"), format!("{:.1}", 100.0 * tflops / tf))
                        } else {
                            ("-".into(), "-".into())
                        };
                        println!(
                            "{:<18} {:<44} {:>10.2} {:>9.1} {:>7.1} {:>9} {:>7}",
                            kernel,
                            name,
                            s * 1e6,
                            gbps,
                            100.0 * gbps / bw,
                            flops_cols.0,
                            flops_cols.1
                        );
                        if let Some(f) = json.as_mut() {
                            let line = serde_json_line(&[
                                ("kind", "\"kernel\"".into()),
                                ("op", format!("{kernel:?}")),
                                ("case", format!("{name:?}")),
                                ("dtype", format!("{:?}", format!("{:?}", o.dtype))),
                                ("device", format!("{:?}", dev.name())),
                                ("time_us", format!("{:.3}", s * 1e6)),
                                ("bytes", format!("{bytes}")),
                                ("flops", format!("{flops}")),
                                ("gbps", format!("{gbps:.3}")),
                                ("pct_copy_bw", format!("{:.2}", 100.0 * gbps / bw)),
                                ("tflops", format!("{tflops:.4}")),
                                ("pct_gemm", format!("{:.2}", 100.0 * tflops / tf)),
                                ("emulator", format!("{is_emu}")),
                            ]);
                            writeln!(f, "{line}").unwrap();
                        }
                    }
                    Err(KernelError::UnknownKernel(k)) if k.contains("_sm90") && !is_emu => {
                        println!("{kernel:<18} {name:<44} SKIPPED: sm_90a code, not compute capability 9.0");
                    }
                    Err(e) => {
                        failures += 1;
                        println!("{kernel:<18} {name:<44} FAILED: {e}");
                    }
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
        let dev = modernbert::kernels::emu::Emulator::new();
        let (bw, tf, _) = ceilings(&dev, 1).unwrap();
        assert!(bw > 0.0 && tf > 0.0);
        let mut rng = Rng::new(1);
        let mut ops = Vec::new();
        for (op, build) in builders() {
            let cases = build(&dev, Dtype::Bf16, &mut rng, true, false, true);
            assert!(!cases.is_empty(), "{op}");
            for (_, c) in cases {
                for (k, &kernel) in c.kernels().iter().enumerate() {
                    let s = median_seconds(&dev, 1, &|d| c.launch(d, k))
                        .unwrap_or_else(|e| panic!("{op} {}: {e}", c.name(k)));
                    assert!(s >= 0.0 && c.bytes(k) > 0.0);
                    ops.push(kernel);
                }
            }
        }
        for op in [
            "layernorm",
            "embeddings",
            "rope",
            "attention",
            "geglu",
            "gather_rows",
            "softmax_topk",
            "pool",
            "head_act_norm",
            "colbert_normalize",
        ] {
            assert!(ops.contains(&op), "{op} missing");
        }
    }
}
