//! The time of one hand-off between the steps of a forward (cuda/handoff_sm90.cu), each way a
//! small-batch forward could take: a plain launch per step, a launch per step with programmatic
//! dependent launch, one co-scheduled launch with a grid barrier per step. This number decides
//! that forward's design (profiles/optimisation-log.md).
//!
//! On a GPU: `--steps` steps (default 2000) over `--blocks` blocks (default 132, an H100's or
//! H200's SMs); per way, the median and minimum over `--repeats` (default 5) timed runs of
//! (host wall clock from the first launch to the synchronisation) / steps, each run checked. On
//! the emulator: a smoke check (8 steps over 4 blocks); its times mean nothing and it says so.
//! One JSON line per way with `--json FILE`.
//!
//! cargo run --release -p kernels-tests --bin handoff -- --device cuda --json handoff.jsonl
use kernels_tests::handoff::{Handoff, HandoffRun};
use std::io::Write;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let val = |name: &str| kernels_tests::arg_value(&args, name);
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("handoff [--device emulator|cuda] [--steps N] [--blocks G] [--repeats R] [--json FILE]");
        return;
    }
    let cuda = val("--device").is_some_and(|d| d.starts_with("cuda"));
    let number = |name: &str, default: u32| {
        val(name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("error: {name} {v}: not a number");
                std::process::exit(2)
            })
        })
    };
    let (steps, blocks, repeats) = if cuda {
        (number("--steps", 2000), number("--blocks", 132), number("--repeats", 5))
    } else {
        (number("--steps", 8), number("--blocks", 4), number("--repeats", 1))
    };
    let dev = kernels_tests::bench_device(cuda);
    let dev = &*dev;
    if dev.as_emulator().is_some() {
        println!("# device: emulator — the times MEAN NOTHING; this checks the harness and the kernels.");
    }
    let mut json = val("--json").map(|p| std::fs::File::create(&p).unwrap_or_else(|e| panic!("--json {p}: {e}")));
    let mut failed = false;
    for way in Handoff::ALL {
        let result = (|| -> Result<(f64, f64), String> {
            let mut run = HandoffRun::new(dev, way, steps, blocks).map_err(|e| e.to_string())?;
            let mut per_step = Vec::new();
            for r in 0..=repeats {
                run.reset(dev).map_err(|e| e.to_string())?;
                dev.synchronize().map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                run.launch(dev)
                    .and_then(|_| dev.synchronize())
                    .map_err(|e| e.to_string())?;
                let us = t0.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
                run.check(dev)?;
                if r > 0 {
                    per_step.push(us); // run 0 warms up (module load, first launches)
                }
            }
            per_step.sort_by(f64::total_cmp);
            Ok((per_step[per_step.len() / 2], per_step[0]))
        })();
        match result {
            Ok((median, min)) => {
                println!(
                    "{:<11} {steps} steps x {blocks} blocks: {median:8.3} µs per step (median of {repeats}), min {min:.3}",
                    way.name()
                );
                if let Some(f) = json.as_mut() {
                    writeln!(
                        f,
                        "{{\"bench\":\"handoff\",\"way\":\"{}\",\"device\":{:?},\"emulated\":{},\"steps\":{steps},\
                         \"blocks\":{blocks},\"repeats\":{repeats},\"us_per_step_median\":{median:.4},\"us_per_step_min\":{min:.4}}}",
                        way.name(),
                        dev.name(),
                        dev.as_emulator().is_some()
                    )
                    .expect("--json: write");
                }
            }
            Err(e) => {
                eprintln!("FAIL {}: {e}", way.name());
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
