//! What the C ABI adds to an embed call (issue 5, item 6): a 32-token text embedded through the
//! Rust API (`Engine::embed`) and through the C entry point (`mb_embed`, called as a C host calls
//! it: `mb_text` array in, caller's float buffer out) on two engines of the same model, calls
//! interleaved; prints the median and p10 of each and the median difference.
//!
//!   cargo run --release --example ffi_overhead [MODEL_DIR] [ITERATIONS]
//!
//! Default model: tests/fixtures/st_mean_normalize_prompts (tiny, so the forward pass is short and
//! the overhead is visible) on the CPU device.

use std::ffi::{c_char, CString};
use std::ptr::{null, null_mut};
use std::time::Instant;

use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::ffi::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/st_mean_normalize_prompts").to_string()
    });
    let iterations: usize = args.get(2).map_or(20000, |s| s.parse().expect("ITERATIONS"));

    let engine = Engine::new(
        dir.as_ref(),
        &EngineOptions {
            device: DeviceChoice::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let c_dir = CString::new(dir.clone()).unwrap();
    let mut o: mb_engine_options = unsafe { std::mem::zeroed() };
    o.struct_size = std::mem::size_of::<mb_engine_options>();
    unsafe {
        assert_eq!(mb_engine_options_default(&mut o), mb_status::MB_OK);
    }
    o.device = mb_device::MB_DEVICE_CPU as i32;
    let mut handle = null_mut();
    assert_eq!(
        unsafe { mb_engine_create(c_dir.as_ptr(), &o, &mut handle) },
        mb_status::MB_OK
    );

    // A text of exactly 32 tokens ([CLS] + 30 + [SEP]).
    let tok = engine.tokenizer().unwrap();
    let mut text = String::new();
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"];
    let mut i = 0;
    while tok.encode_batch(&[&text]).map_or(0, |v| v[0].len()) < 32 {
        text.push_str(if text.is_empty() { "" } else { " " });
        text.push_str(words[i % words.len()]);
        i += 1;
    }
    let tokens = tok.encode_batch(&[&text]).unwrap()[0].len();
    assert_eq!(tokens, 32, "could not build a 32-token text");

    let options = EmbedOptions::default();
    let dim = engine.embed(&[&text], &options).unwrap()[0].len();
    let c_text = [mb_text {
        ptr: text.as_ptr() as *const c_char,
        len: text.len(),
    }];
    let mut out = vec![0f32; dim];

    let rust_call = || std::hint::black_box(engine.embed(std::hint::black_box(&[text.as_str()]), &options).unwrap());
    let c_call = |out: &mut [f32]| {
        let s = unsafe {
            mb_embed(
                handle,
                c_text.as_ptr(),
                1,
                null(),
                out.as_mut_ptr(),
                out.len(),
                null_mut(),
            )
        };
        assert_eq!(s, mb_status::MB_OK);
        std::hint::black_box(&out);
    };
    // Same results.
    c_call(&mut out);
    assert_eq!(out, rust_call()[0]);

    for _ in 0..iterations / 10 {
        rust_call();
        c_call(&mut out);
    }
    let (mut rust, mut c) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    for _ in 0..iterations {
        let t = Instant::now();
        rust_call();
        rust.push(t.elapsed().as_nanos() as f64 / 1e3);
        let t = Instant::now();
        c_call(&mut out);
        c.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p) as usize]
    };
    let (rm, r10) = (q(&mut rust, 0.5), q(&mut rust, 0.1));
    let (cm, c10) = (q(&mut c, 0.5), q(&mut c, 0.1));
    println!("model: {dir} (dim {dim}), text: {tokens} tokens, {iterations} calls each, interleaved");
    println!("Rust Engine::embed : median {rm:8.2} us   p10 {r10:8.2} us");
    println!("C mb_embed         : median {cm:8.2} us   p10 {c10:8.2} us");
    println!(
        "C ABI overhead     : median {:+8.2} us   p10 {:+8.2} us",
        cm - rm,
        c10 - r10
    );
    unsafe { mb_engine_destroy(handle) };
}
