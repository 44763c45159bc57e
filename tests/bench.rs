//! `modernbert bench` through the binary, on the CPU and the emulated device, at reduced sizes
//! (1 layer, 2 sequences, 1 pass, long sets capped at 640 tokens): the harness is exercised in CI
//! (every set, the latency mode, the JSON fields); the numbers are not checked (no GPU here).

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_modernbert"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains('|'), "no human table on stderr: {stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SMALL: &[&str] = &["--shape", "base", "--layers", "1", "--sequences", "2", "--passes", "1"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    SMALL.iter().chain(extra).copied().collect()
}

#[test]
fn throughput_all_sets_on_the_cpu() {
    let lines = bench(&with(&[
        "--device",
        "cpu",
        "--set",
        "all",
        "--max-len",
        "640",
        "--memory-budget-gb",
        "80",
    ]));
    let sets: Vec<&str> = lines.iter().map(|l| l["set"].as_str().unwrap()).collect();
    assert_eq!(sets, ["short-fixed", "short-variable", "long-fixed", "long-variable"]);
    for l in &lines {
        assert_eq!(l["bench"], "throughput");
        assert_eq!(l["device_kind"], "cpu");
        assert_eq!(l["sequences"], 2);
        assert_eq!(l["passes"], 1);
        assert_eq!(l["seed"], 42);
        assert!(l["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(l["flops_per_token"].as_f64().unwrap() > 1e6);
        assert!(l["mfu"].is_null(), "the CPU has no vendor peak here: {l}");
        assert!(l["cpu_gemm_tflops"].as_f64().unwrap() > 0.0);
        assert!(l["peak_device_bytes"].is_null());
        assert!(l["max_batch"].as_u64().unwrap() > 0);
        assert!(l["device"].as_str().unwrap().starts_with("cpu"));
        assert_eq!(l["pass_s"].as_array().unwrap().len(), 1);
        assert!(l["protocol"].as_str().unwrap().starts_with("reduced"));
        let total = l["lengths"]["total"].as_u64().unwrap();
        assert_eq!(total, l["tokens_per_pass"].as_u64().unwrap());
        assert!(l["lengths"]["max"].as_u64().unwrap() <= 640);
    }
    // Fixed sets: exactly 2 × 512 tokens; the long ones capped at 640.
    assert_eq!(lines[0]["tokens_per_pass"], 1024);
    assert_eq!(lines[2]["tokens_per_pass"], 1280);
    assert_eq!(lines[0]["batch_sequences"], 512);
    assert_eq!(lines[2]["batch_sequences"], 32);
    // The paper's BS column: a bigger budget never fits fewer sequences; long < short.
    assert!(lines[2]["max_batch"].as_u64() < lines[0]["max_batch"].as_u64());
}

#[test]
fn same_set_twice_gives_the_same_data() {
    let a = bench(&with(&["--device", "cpu", "--set", "short-variable"]));
    let b = bench(&with(&[
        "--device",
        "cpu",
        "--set",
        "short-variable",
        "--memory-budget-gb",
        "24",
    ]));
    assert_eq!(a[0]["ids_checksum"], b[0]["ids_checksum"]);
    assert_eq!(a[0]["lengths"], b[0]["lengths"]);
    assert!(b[0]["max_batch"].as_u64() < a[0]["max_batch"].as_u64());
}

#[test]
fn throughput_on_the_emulated_device() {
    let lines = bench(&with(&[
        "--device",
        "emulated",
        "--set",
        "short-fixed,long-variable",
        "--max-len",
        "64",
    ]));
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["device_kind"], "emulated");
        assert_eq!(l["dtype"], "bf16");
        assert!(l["peak_device_bytes"].as_u64().unwrap() > 0);
        assert!(l["mfu"].is_null());
    }
}

#[test]
fn latency_mode_cpu_and_emulated() {
    let cpu = bench(&[
        "--shape",
        "base",
        "--layers",
        "1",
        "--device",
        "cpu",
        "--latency",
        "--runs",
        "3",
        "--batches",
        "1,2",
        "--lengths",
        "8,32",
    ]);
    assert_eq!(cpu.len(), 4);
    for l in &cpu {
        assert_eq!(l["bench"], "latency");
        assert!(l["graphs"].is_null());
        assert!(l["p50_us"].as_f64().unwrap() > 0.0);
        assert!(l["p99_us"].as_f64().unwrap() >= l["p50_us"].as_f64().unwrap());
        assert_eq!(l["runs"], 3);
    }
    let emu = bench(&[
        "--shape",
        "base",
        "--layers",
        "1",
        "--device",
        "emulated",
        "--latency",
        "--runs",
        "2",
        "--batches",
        "1",
        "--lengths",
        "8",
    ]);
    let graphs: Vec<&Value> = emu.iter().map(|l| &l["graphs"]).collect();
    assert_eq!(graphs, [&Value::Bool(true), &Value::Bool(false)]);
    assert_eq!(emu[0]["graph_used"], true);
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        vec!["--shape", "base", "--sequences", "0"],
        vec!["--shape", "base", "--layers", "1", "--device", "cpu", "--max-len", "8"],
        vec![
            "--shape",
            "base",
            "--layers",
            "1",
            "--latency",
            "--lengths",
            "9000",
            "--device",
            "cpu",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_modernbert"))
            .arg("bench")
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
