//! The C ABI (`src/ffi.rs`), called through its `extern "C"` functions as a C host would:
//! - the committed header `include/modernbert.h` is what cbindgen generates now
//!   (`MODERNBERT_BLESS_HEADER=1` rewrites it);
//! - every entry point gives the Rust API's results, bit for bit;
//! - the bad-input matrix: NULL pointers, zero counts, invalid UTF-8, out-of-range options, too-small
//!   buffers (nothing written, the needed size reported), over-long texts, missing heads → the
//!   expected status and a one-line message, and guard elements past every buffer untouched;
//! - 16 threads × 1000 calls on shared engines equal a sequential run.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::ffi::*;
use modernbert::tokenize::OverlongPolicy;

use mb_status::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const ST: &str = "st_mean_normalize_prompts";
const CLS: &str = "seqcls_cls_allbias_v4_f32";
const CROSS: &str = "seqcls_mean_crossenc_v5_bf16";
const MLM: &str = "mlm_l3_v5_f32";
const COLBERT: &str = "colbert_hd64_pylate";

/// An engine handle, destroyed on drop.
struct Handle(*mut mb_engine);
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}
impl Handle {
    /// The raw handle (a method, so closures capture the `Sync` handle, not its pointer field).
    fn p(&self) -> *mut mb_engine {
        self.0
    }

    fn counters(&self) -> mb_counters {
        let mut c: mb_counters = unsafe { std::mem::zeroed() };
        c.struct_size = std::mem::size_of::<mb_counters>();
        assert_eq!(unsafe { mb_engine_counters(self.0, &mut c) }, mb_status::MB_OK);
        c
    }
}
impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { mb_engine_destroy(self.0) }
    }
}

fn options(device: mb_device, overlong: mb_overlong) -> mb_engine_options {
    let mut o: mb_engine_options = unsafe { std::mem::zeroed() };
    o.struct_size = std::mem::size_of::<mb_engine_options>();
    assert_eq!(unsafe { mb_engine_options_default(&mut o) }, MB_OK);
    o.device = device as i32;
    o.overlong = overlong as i32;
    o
}

fn open_with(name: &str, device: mb_device, overlong: mb_overlong) -> Handle {
    let dir = CString::new(fixture(name).to_str().unwrap()).unwrap();
    let o = options(device, overlong);
    let mut e = null_mut();
    let status = unsafe { mb_engine_create(dir.as_ptr(), &o, &mut e) };
    assert_eq!(status, MB_OK, "{name}: {}", last_error());
    assert!(!e.is_null());
    Handle(e)
}

fn open(name: &str) -> Handle {
    open_with(name, mb_device::MB_DEVICE_CPU, mb_overlong::MB_OVERLONG_TRUNCATE)
}

fn rust_engine(name: &str, device: DeviceChoice) -> Engine {
    Engine::new(
        &fixture(name),
        &EngineOptions {
            device,
            overlong: OverlongPolicy::Truncate,
            ..Default::default()
        },
    )
    .unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(mb_last_error()) }.to_str().unwrap().to_string()
}

fn text(s: &str) -> mb_text {
    mb_text {
        ptr: s.as_ptr() as *const c_char,
        len: s.len(),
    }
}

fn bytes(b: &[u8]) -> mb_text {
    mb_text {
        ptr: b.as_ptr() as *const c_char,
        len: b.len(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const CANARY: f32 = f32::from_bits(0x7fc0_dead);

/// A buffer of `n` canaries plus `GUARD` canaries past its declared capacity.
const GUARD: usize = 16;
fn canaries(n: usize) -> Vec<f32> {
    vec![CANARY; n + GUARD]
}
fn untouched(v: &[f32]) -> bool {
    v.iter().all(|x| x.to_bits() == CANARY.to_bits())
}

// ---------------------------------------------------------------------------------------------

#[test]
fn header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi.rs"))
        .with_src(root.join("src/ffi/outputs.rs"))
        .generate()
        .expect("cbindgen");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = root.join("include/modernbert.h");
    if std::env::var_os("MODERNBERT_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    // scripts/c-abi-check.sh diffs this copy against the committed header.
    if let Some(out) = std::env::var_os("MODERNBERT_HEADER_OUT") {
        std::fs::write(out, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/modernbert.h is stale: regenerate it with MODERNBERT_BLESS_HEADER=1 cargo test --test c_abi header_is_current"
    );
}

#[test]
fn device_index_is_for_cuda_only_and_a_missing_one_fails_by_name() {
    let dir = CString::new(fixture(ST).to_str().unwrap()).unwrap();
    let mut o = options(mb_device::MB_DEVICE_CPU, mb_overlong::MB_OVERLONG_TRUNCATE);
    o.device_index = 1;
    let mut e = null_mut();
    assert_eq!(
        unsafe { mb_engine_create(dir.as_ptr(), &o, &mut e) },
        MB_ERR_INVALID_ARGUMENT
    );
    assert!(
        e.is_null() && last_error().contains("device_index 1 is for MB_DEVICE_CUDA only"),
        "{}",
        last_error()
    );
    // An index past the machine's devices (or no driver at all, as on a CPU-only machine): a device
    // error that names the index.
    o.device = mb_device::MB_DEVICE_CUDA as i32;
    o.device_index = 4000;
    assert_eq!(unsafe { mb_engine_create(dir.as_ptr(), &o, &mut e) }, MB_ERR_DEVICE);
    assert!(e.is_null() && last_error().contains("cuda:4000"), "{}", last_error());
}

#[test]
fn version_and_defaults() {
    let v = unsafe { CStr::from_ptr(mb_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let o = options(mb_device::MB_DEVICE_AUTO, mb_overlong::MB_OVERLONG_TRUNCATE);
    let d = EngineOptions::default();
    assert_eq!(o.max_batch_tokens, d.max_batch_tokens);
    assert_eq!(o.graphs != 0, d.graphs);
    assert_eq!(o.dtype, mb_dtype::MB_DTYPE_BF16 as i32);
    assert_eq!(last_error(), "");

    // ABI growth: an older caller's shorter struct gets only the fields it has; the rest keep
    // their bytes (here 0x55) and are not read past struct_size.
    let mut raw = [0x55u8; std::mem::size_of::<mb_engine_options>()];
    let short = std::mem::offset_of!(mb_engine_options, max_batch_tokens);
    raw[..8].copy_from_slice(&short.to_ne_bytes());
    let status = unsafe { mb_engine_options_default(raw.as_mut_ptr() as *mut mb_engine_options) };
    assert_eq!(status, MB_OK);
    assert!(raw[short..].iter().all(|&b| b == 0x55));
    let o: mb_engine_options = unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const mb_engine_options) };
    assert_eq!((o.device, o.dtype), (0, 0));
    // ... and creating an engine from it uses defaults for the missing fields.
    let dir = CString::new(fixture(ST).to_str().unwrap()).unwrap();
    let mut e = null_mut();
    let mut o2 = o;
    o2.device = mb_device::MB_DEVICE_CPU as i32;
    o2.max_batch_tokens = 0; // past struct_size: ignored
    assert_eq!(
        unsafe { mb_engine_create(dir.as_ptr(), &o2, &mut e) },
        MB_OK,
        "{}",
        last_error()
    );
    let _h = Handle(e);
    // NULL options: all defaults.
    let mut e2 = null_mut();
    assert_eq!(
        unsafe { mb_engine_create(dir.as_ptr(), null(), &mut e2) },
        MB_OK,
        "{}",
        last_error()
    );
    unsafe { mb_engine_destroy(e2) };
    unsafe { mb_engine_destroy(null_mut()) };
}

#[test]
fn embed_matches_rust_api() {
    for (device, dev_rust, name) in [
        (mb_device::MB_DEVICE_CPU, DeviceChoice::Cpu, ST),
        (mb_device::MB_DEVICE_EMULATED, DeviceChoice::EMULATED, COLBERT),
    ] {
        let h = open_with(name, device, mb_overlong::MB_OVERLONG_TRUNCATE);
        let r = rust_engine(name, dev_rust);
        let texts = ["The capital of France is Paris.", "A short one", "naïve café — ünïcödé"];
        let c_texts: Vec<mb_text> = texts.iter().map(|t| text(t)).collect();
        for opts in [
            None,
            Some((
                mb_pooling::MB_POOLING_CLS,
                mb_normalize::MB_NORMALIZE_OFF,
                8usize,
                Some("query"),
                None,
            )),
            Some((
                mb_pooling::MB_POOLING_MEAN,
                mb_normalize::MB_NORMALIZE_ON,
                0,
                None,
                Some("search_query: "),
            )),
        ] {
            let prompt_name = opts.and_then(|o| o.3).map(|s| CString::new(s).unwrap());
            let prompt = opts.and_then(|o| o.4).map(|s| CString::new(s).unwrap());
            let c_opts = opts.map(|(p, n, dim, _, _)| mb_embed_options {
                struct_size: std::mem::size_of::<mb_embed_options>(),
                pooling: p as i32,
                normalize: n as i32,
                dim,
                prompt_name: prompt_name.as_ref().map_or(null(), |s| s.as_ptr()),
                prompt: prompt.as_ref().map_or(null(), |s| s.as_ptr()),
                timeout_us: 0,
            });
            let rust_opts = opts.map_or(EmbedOptions::default(), |(p, n, dim, pn, pr)| EmbedOptions {
                pooling: match p {
                    mb_pooling::MB_POOLING_CLS => Some(modernbert::reference::ops::Pooling::Cls),
                    mb_pooling::MB_POOLING_MEAN => Some(modernbert::reference::ops::Pooling::Mean),
                    _ => None,
                },
                normalize: match n {
                    mb_normalize::MB_NORMALIZE_ON => Some(true),
                    mb_normalize::MB_NORMALIZE_OFF => Some(false),
                    _ => None,
                },
                dim: (dim != 0).then_some(dim),
                dim_after_normalize: false,
                prompt_name: pn.map(String::from),
                prompt: pr.map(String::from),
            });
            if name == COLBERT && rust_opts.prompt_name.is_some() {
                continue;
            }
            let po = c_opts.as_ref().map_or(null(), |o| o as *const _);
            let mut dim = 0;
            assert_eq!(
                unsafe { mb_engine_embed_dim(h.0, po, &mut dim) },
                MB_OK,
                "{}",
                last_error()
            );
            let want = r.embed(&texts, &rust_opts).unwrap();
            assert_eq!(dim, want[0].len());
            let mut out = canaries(texts.len() * dim);
            let mut needed = 0;
            let s = unsafe {
                mb_embed(
                    h.0,
                    c_texts.as_ptr(),
                    texts.len(),
                    po,
                    out.as_mut_ptr(),
                    texts.len() * dim,
                    &mut needed,
                )
            };
            assert_eq!(s, MB_OK, "{}", last_error());
            assert_eq!(needed, texts.len() * dim);
            assert_eq!(bits(&out[..needed]), bits(&want.concat()));
            assert!(untouched(&out[needed..]));
            assert_eq!(last_error(), "");
        }
    }
}

#[test]
fn colbert_matches_rust_api() {
    for (device, dev_rust) in [
        (mb_device::MB_DEVICE_CPU, DeviceChoice::Cpu),
        (mb_device::MB_DEVICE_EMULATED, DeviceChoice::EMULATED),
    ] {
        let h = open_with(COLBERT, device, mb_overlong::MB_OVERLONG_TRUNCATE);
        let r = rust_engine(COLBERT, dev_rust);
        let texts = ["what is the capital of france?", "Paris, the capital; of France!", "x"];
        let c_texts: Vec<mb_text> = texts.iter().map(|t| text(t)).collect();
        let mut dim = 0;
        assert_eq!(unsafe { mb_engine_colbert_dim(h.0, &mut dim) }, MB_OK);
        for is_query in [1, 0] {
            let want = r.colbert(&texts, is_query != 0).unwrap();
            // Sizes first.
            let mut counts = vec![usize::MAX; texts.len()];
            let mut total = 0;
            let s = unsafe {
                mb_colbert_sizes(
                    h.0,
                    c_texts.as_ptr(),
                    texts.len(),
                    is_query,
                    counts.as_mut_ptr(),
                    &mut total,
                )
            };
            assert_eq!(s, MB_OK, "{}", last_error());
            assert_eq!(counts, want.iter().map(Vec::len).collect::<Vec<_>>());
            assert_eq!(total, counts.iter().sum::<usize>());
            // The NULL / 0 query path says the same.
            let mut needed = 0;
            let s = unsafe {
                mb_colbert(
                    h.0,
                    c_texts.as_ptr(),
                    texts.len(),
                    is_query,
                    null_mut(),
                    0,
                    counts.as_mut_ptr(),
                    &mut needed,
                )
            };
            assert_eq!(s, MB_ERR_BUFFER_TOO_SMALL);
            assert_eq!(needed, total * dim);
            let mut out = canaries(needed);
            let mut counts2 = vec![0usize; texts.len()];
            let s = unsafe {
                mb_colbert(
                    h.0,
                    c_texts.as_ptr(),
                    texts.len(),
                    is_query,
                    out.as_mut_ptr(),
                    needed,
                    counts2.as_mut_ptr(),
                    null_mut(),
                )
            };
            assert_eq!(s, MB_OK, "{}", last_error());
            assert_eq!(counts2, counts);
            let flat: Vec<f32> = want.iter().flatten().flatten().copied().collect();
            assert_eq!(bits(&out[..needed]), bits(&flat));
            assert!(untouched(&out[needed..]));
        }
    }
}

#[test]
fn classify_and_rerank_match_rust_api() {
    let h = open(CLS);
    let r = rust_engine(CLS, DeviceChoice::Cpu);
    let texts = ["I loved it", "terrible, awful", "it was fine I guess"];
    let c_texts: Vec<mb_text> = texts.iter().map(|t| text(t)).collect();
    let mut labels = 0;
    assert_eq!(unsafe { mb_engine_num_labels(h.0, &mut labels) }, MB_OK);
    assert_eq!(labels, 3);
    let want = r.classify(&texts).unwrap();
    let mut logits = canaries(texts.len() * labels);
    let mut ids = vec![u32::MAX; texts.len()];
    let mut scores = vec![0f32; texts.len()];
    let mut needed = 0;
    let s = unsafe {
        mb_classify(
            h.0,
            c_texts.as_ptr(),
            texts.len(),
            logits.as_mut_ptr(),
            texts.len() * labels,
            ids.as_mut_ptr(),
            scores.as_mut_ptr(),
            &mut needed,
        )
    };
    assert_eq!(s, MB_OK, "{}", last_error());
    assert_eq!(needed, 9);
    let flat: Vec<f32> = want.iter().flat_map(|c| c.logits.clone()).collect();
    assert_eq!(bits(&logits[..needed]), bits(&flat));
    assert!(untouched(&logits[needed..]));
    for (i, c) in want.iter().enumerate() {
        assert_eq!(scores[i].to_bits(), c.score.to_bits());
        let mut name = null();
        assert_eq!(unsafe { mb_engine_label(h.0, ids[i] as usize, &mut name) }, MB_OK);
        assert_eq!(unsafe { CStr::from_ptr(name) }.to_str().unwrap(), c.label);
    }
    // Logits only.
    let mut logits2 = vec![0f32; 9];
    let s = unsafe {
        mb_classify(
            h.0,
            c_texts.as_ptr(),
            3,
            logits2.as_mut_ptr(),
            9,
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, MB_OK);
    assert_eq!(bits(&logits2), bits(&flat));

    let h = open(CROSS);
    let r = rust_engine(CROSS, DeviceChoice::Cpu);
    let query = "capital of france";
    let docs = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin"];
    let c_docs: Vec<mb_text> = docs.iter().map(|t| text(t)).collect();
    let want = r.rerank(query, &docs).unwrap();
    let mut out = canaries(docs.len());
    let mut needed = 0;
    let s = unsafe {
        mb_rerank(
            h.0,
            query.as_ptr() as *const c_char,
            query.len(),
            c_docs.as_ptr(),
            3,
            out.as_mut_ptr(),
            3,
            &mut needed,
        )
    };
    assert_eq!(s, MB_OK, "{}", last_error());
    assert_eq!(needed, 3);
    assert_eq!(bits(&out[..3]), bits(&want));
    assert!(untouched(&out[3..]));
    let mut name = null();
    assert_eq!(unsafe { mb_engine_label(h.0, 0, &mut name) }, MB_OK);
    assert_eq!(unsafe { CStr::from_ptr(name) }.to_str().unwrap(), "LABEL_0");
}

#[test]
fn fill_mask_matches_rust_api() {
    let h = open(MLM);
    let r = rust_engine(MLM, DeviceChoice::Cpu);
    let texts = ["The capital of France is [MASK].", "[MASK] and [MASK] went up the hill"];
    let c_texts: Vec<mb_text> = texts.iter().map(|t| text(t)).collect();
    let k = 4;
    let want = r.fill_mask(&texts, k).unwrap();
    let mut counts = vec![0usize; 2];
    let mut total = 0;
    assert_eq!(
        unsafe { mb_fill_mask_sizes(h.0, c_texts.as_ptr(), 2, counts.as_mut_ptr(), &mut total) },
        MB_OK
    );
    assert_eq!(counts, vec![1, 2]);
    assert_eq!(total, 3);
    let mut ids = vec![u32::MAX; total * k + GUARD];
    let mut scores = canaries(total * k);
    let mut needed = 0;
    let s = unsafe {
        mb_fill_mask(
            h.0,
            c_texts.as_ptr(),
            2,
            k,
            ids.as_mut_ptr(),
            scores.as_mut_ptr(),
            total * k,
            counts.as_mut_ptr(),
            &mut needed,
        )
    };
    assert_eq!(s, MB_OK, "{}", last_error());
    assert_eq!(needed, total * k);
    let flat: Vec<_> = want.iter().flatten().flatten().collect();
    assert_eq!(ids[..needed], flat.iter().map(|p| p.id).collect::<Vec<_>>()[..]);
    assert_eq!(
        bits(&scores[..needed]),
        flat.iter().map(|p| p.score.to_bits()).collect::<Vec<_>>()
    );
    assert!(ids[needed..].iter().all(|&i| i == u32::MAX) && untouched(&scores[needed..]));
    for p in &flat {
        let mut len = 0;
        assert_eq!(
            unsafe { mb_token_text(h.0, p.id, null_mut(), 0, &mut len) },
            MB_ERR_BUFFER_TOO_SMALL
        );
        let mut buf = vec![b'#' as c_char; len + 1 + GUARD];
        assert_eq!(
            unsafe { mb_token_text(h.0, p.id, buf.as_mut_ptr(), len + 1, &mut len) },
            MB_OK
        );
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(), p.token);
        assert!(buf[len + 1..].iter().all(|&c| c == b'#' as c_char));
    }
    // top_k past the vocabulary: clamped, as in the Rust API.
    let mut counts = vec![0usize; 1];
    let mut needed = 0;
    let s = unsafe {
        mb_fill_mask(
            h.0,
            c_texts.as_ptr(),
            1,
            1 << 40,
            null_mut(),
            null_mut(),
            0,
            counts.as_mut_ptr(),
            &mut needed,
        )
    };
    assert_eq!(s, MB_ERR_BUFFER_TOO_SMALL);
    assert_eq!(needed, r.config.vocab_size);
}

// ---------------------------------------------------------------------------------------------
// The bad-input matrix

struct Case {
    name: &'static str,
    want: mb_status,
    run: Box<dyn Fn() -> (mb_status, bool)>,
}

fn case(name: &'static str, want: mb_status, run: impl Fn() -> mb_status + 'static) -> Case {
    Case {
        name,
        want,
        run: Box::new(move || (run(), true)),
    }
}

/// A case that also checks its output buffers afterwards (`true`: untouched as required).
fn case_buf(name: &'static str, want: mb_status, run: impl Fn() -> (mb_status, bool) + 'static) -> Case {
    Case {
        name,
        want,
        run: Box::new(run),
    }
}

#[test]
fn bad_input_matrix() {
    use std::rc::Rc;
    let st = Rc::new(open(ST));
    let cls = Rc::new(open(CLS));
    let cross = Rc::new(open(CROSS));
    let mlm = Rc::new(open(MLM));
    let col = Rc::new(open(COLBERT));
    let refuse = Rc::new(open_with(ST, mb_device::MB_DEVICE_CPU, mb_overlong::MB_OVERLONG_REFUSE));
    let st_dir = CString::new(fixture(ST).to_str().unwrap()).unwrap();
    let dir = move || st_dir.clone();
    let good = ["hello world", "second text"];
    let goods = move || good.iter().map(|t| text(t)).collect::<Vec<_>>();
    let dim = 32usize;

    // Run mb_embed on the ST engine with the given texts and buffer size; report whether the
    // buffer (and its guard) stayed all canaries.
    let embed = {
        let st = st.clone();
        move |texts: &[mb_text], n: usize, cap: usize, opts: *const mb_embed_options| {
            let mut out = canaries(cap);
            let s = unsafe { mb_embed(st.0, texts.as_ptr(), n, opts, out.as_mut_ptr(), cap, null_mut()) };
            (s, untouched(&out))
        }
    };
    let eopts = |f: &dyn Fn(&mut mb_embed_options)| {
        let mut o: mb_embed_options = unsafe { std::mem::zeroed() };
        o.struct_size = std::mem::size_of::<mb_embed_options>();
        f(&mut o);
        o
    };
    let create = {
        let dir = dir.clone();
        move |f: &dyn Fn(&mut mb_engine_options)| {
            let mut o = options(mb_device::MB_DEVICE_CPU, mb_overlong::MB_OVERLONG_TRUNCATE);
            f(&mut o);
            let mut e = std::ptr::dangling_mut::<mb_engine>();
            let d = dir();
            let s = unsafe { mb_engine_create(d.as_ptr(), &o, &mut e) };
            assert!(e.is_null(), "out_engine is NULL after a failure");
            s
        }
    };
    let long_text: Rc<String> = Rc::new("word ".repeat(9000));

    let mut cases: Vec<Case> = Vec::new();
    // --- engine creation
    cases.push(case("create: model NULL", MB_ERR_NULL_POINTER, || {
        let mut e = null_mut();
        unsafe { mb_engine_create(null(), null(), &mut e) }
    }));
    cases.push(case("create: out_engine NULL", MB_ERR_NULL_POINTER, {
        let dir = dir.clone();
        move || unsafe { mb_engine_create(dir().as_ptr(), null(), null_mut()) }
    }));
    cases.push(case("create: model \"\"", MB_ERR_INVALID_ARGUMENT, || {
        let mut e = null_mut();
        unsafe { mb_engine_create(c"".as_ptr(), null(), &mut e) }
    }));
    cases.push(case("create: model not UTF-8", MB_ERR_INVALID_UTF8, || {
        let mut e = null_mut();
        unsafe { mb_engine_create(c"/tmp/\xff\xfe".as_ptr(), null(), &mut e) }
    }));
    cases.push(case("create: no such directory", MB_ERR_MODEL, || {
        let mut e = null_mut();
        unsafe { mb_engine_create(c"/nonexistent/model/dir".as_ptr(), null(), &mut e) }
    }));
    cases.push(case("create: directory without a model", MB_ERR_MODEL, || {
        let mut e = null_mut();
        let d = CString::new(fixture("").to_str().unwrap()).unwrap();
        unsafe { mb_engine_create(d.as_ptr(), null(), &mut e) }
    }));
    cases.push(case("create: struct_size 0", MB_ERR_INVALID_ARGUMENT, {
        let c = create.clone();
        move || c(&|o| o.struct_size = 0)
    }));
    cases.push(case("create: device 7", MB_ERR_INVALID_ARGUMENT, {
        let c = create.clone();
        move || c(&|o| o.device = 7)
    }));
    cases.push(case("create: dtype -1", MB_ERR_INVALID_ARGUMENT, {
        let c = create.clone();
        move || c(&|o| o.dtype = -1)
    }));
    cases.push(case("create: overlong 5", MB_ERR_INVALID_ARGUMENT, {
        let c = create.clone();
        move || c(&|o| o.overlong = 5)
    }));
    cases.push(case("create: max_batch_tokens 0", MB_ERR_INVALID_ARGUMENT, {
        let c = create.clone();
        move || c(&|o| o.max_batch_tokens = 0)
    }));
    cases.push(case("options_default: NULL", MB_ERR_NULL_POINTER, || unsafe {
        mb_engine_options_default(null_mut())
    }));
    cases.push(case("options_default: struct_size 0", MB_ERR_INVALID_ARGUMENT, || {
        let mut o: mb_engine_options = unsafe { std::mem::zeroed() };
        unsafe { mb_engine_options_default(&mut o) }
    }));
    // --- embed: texts
    cases.push(case_buf("embed: engine NULL", MB_ERR_NULL_POINTER, {
        move || {
            let mut out = canaries(64);
            let s = unsafe { mb_embed(null(), goods().as_ptr(), 2, null(), out.as_mut_ptr(), 64, null_mut()) };
            (s, untouched(&out))
        }
    }));
    cases.push(case_buf("embed: texts NULL", MB_ERR_NULL_POINTER, {
        let st = st.clone();
        move || {
            let mut out = canaries(64);
            let s = unsafe { mb_embed(st.0, null(), 2, null(), out.as_mut_ptr(), 64, null_mut()) };
            (s, untouched(&out))
        }
    }));
    cases.push(case_buf("embed: n_texts 0", MB_ERR_INVALID_ARGUMENT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 0, 64, null())
    }));
    cases.push(case_buf("embed: texts[1].ptr NULL", MB_ERR_NULL_POINTER, {
        let embed = embed.clone();
        move || embed(&[text("ok"), mb_text { ptr: null(), len: 3 }], 2, 64, null())
    }));
    cases.push(case_buf("embed: invalid UTF-8 byte", MB_ERR_INVALID_UTF8, {
        let embed = embed.clone();
        move || embed(&[bytes(b"abc\xffdef")], 1, 64, null())
    }));
    cases.push(case_buf("embed: truncated UTF-8 sequence", MB_ERR_INVALID_UTF8, {
        let embed = embed.clone();
        move || embed(&[bytes(&"caf\u{e9}".as_bytes()[..4])], 1, 64, null())
    }));
    cases.push(case_buf("embed: UTF-16 surrogate encoded", MB_ERR_INVALID_UTF8, {
        let embed = embed.clone();
        move || embed(&[bytes(b"\xed\xa0\x80")], 1, 64, null())
    }));
    cases.push(case_buf("embed: over-long text refused", MB_ERR_TEXT_TOO_LONG, {
        let (refuse, long_text) = (refuse.clone(), long_text.clone());
        move || {
            let mut out = canaries(dim);
            let t = [text(&long_text)];
            let s = unsafe { mb_embed(refuse.0, t.as_ptr(), 1, null(), out.as_mut_ptr(), dim, null_mut()) };
            (s, untouched(&out))
        }
    }));
    // --- embed: output buffer
    cases.push(case_buf(
        "embed: out NULL, capacity 0 (size query)",
        MB_ERR_BUFFER_TOO_SMALL,
        {
            let (st, goods) = (st.clone(), goods);
            move || {
                let mut needed = 0;
                let s = unsafe { mb_embed(st.0, goods().as_ptr(), 2, null(), null_mut(), 0, &mut needed) };
                (s, needed == 2 * dim)
            }
        },
    ));
    cases.push(case_buf("embed: capacity one short", MB_ERR_BUFFER_TOO_SMALL, {
        let (st, goods) = (st.clone(), goods);
        move || {
            let mut out = canaries(2 * dim);
            let mut needed = 0;
            let s = unsafe {
                mb_embed(
                    st.0,
                    goods().as_ptr(),
                    2,
                    null(),
                    out.as_mut_ptr(),
                    2 * dim - 1,
                    &mut needed,
                )
            };
            (s, needed == 2 * dim && untouched(&out))
        }
    }));
    cases.push(case("embed: out NULL with capacity", MB_ERR_NULL_POINTER, {
        let (st, goods) = (st.clone(), goods);
        move || unsafe { mb_embed(st.0, goods().as_ptr(), 2, null(), null_mut(), 1000, null_mut()) }
    }));
    cases.push(case_buf("embed: misaligned out", MB_ERR_INVALID_ARGUMENT, {
        let (st, goods) = (st.clone(), goods);
        move || {
            let mut out = canaries(2 * dim + 1);
            let p = (out.as_mut_ptr() as *mut u8).wrapping_add(1) as *mut f32;
            let s = unsafe { mb_embed(st.0, goods().as_ptr(), 2, null(), p, 2 * dim, null_mut()) };
            (s, untouched(&out))
        }
    }));
    // --- embed: options
    cases.push(case_buf("embed: dim past the model's", MB_ERR_INPUT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 1000, &eopts(&|o| o.dim = 33))
    }));
    cases.push(case_buf("embed: pooling 9", MB_ERR_INVALID_ARGUMENT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 64, &eopts(&|o| o.pooling = 9))
    }));
    cases.push(case_buf("embed: normalize -1", MB_ERR_INVALID_ARGUMENT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 64, &eopts(&|o| o.normalize = -1))
    }));
    cases.push(case_buf("embed: unknown prompt_name", MB_ERR_INPUT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 64, &eopts(&|o| o.prompt_name = c"no-such-prompt".as_ptr()))
    }));
    cases.push(case_buf("embed: prompt not UTF-8", MB_ERR_INVALID_UTF8, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 64, &eopts(&|o| o.prompt = c"\xc3(".as_ptr()))
    }));
    cases.push(case_buf("embed: options struct_size 0", MB_ERR_INVALID_ARGUMENT, {
        let (embed, goods) = (embed.clone(), goods);
        move || embed(&goods(), 2, 64, &eopts(&|o| o.struct_size = 0))
    }));
    cases.push(case("embed_dim: out_dim NULL", MB_ERR_NULL_POINTER, {
        let st = st.clone();
        move || unsafe { mb_engine_embed_dim(st.0, null(), null_mut()) }
    }));
    // --- classify / rerank
    cases.push(case_buf("classify: embedding-only model", MB_ERR_UNSUPPORTED, {
        let (st, goods) = (st.clone(), goods);
        move || {
            let mut out = canaries(64);
            let s = unsafe {
                mb_classify(
                    st.0,
                    goods().as_ptr(),
                    2,
                    out.as_mut_ptr(),
                    64,
                    null_mut(),
                    null_mut(),
                    null_mut(),
                )
            };
            (s, untouched(&out))
        }
    }));
    cases.push(case_buf("classify: logits too small", MB_ERR_BUFFER_TOO_SMALL, {
        let (cls, goods) = (cls.clone(), goods);
        move || {
            let mut out = canaries(5);
            let mut ids = [u32::MAX; 2];
            let mut needed = 0;
            let s = unsafe {
                mb_classify(
                    cls.0,
                    goods().as_ptr(),
                    2,
                    out.as_mut_ptr(),
                    5,
                    ids.as_mut_ptr(),
                    null_mut(),
                    &mut needed,
                )
            };
            (s, untouched(&out) && needed == 6 && ids == [u32::MAX; 2])
        }
    }));
    cases.push(case("num_labels: embedding-only model", MB_ERR_UNSUPPORTED, {
        let st = st.clone();
        move || unsafe { mb_engine_num_labels(st.0, &mut 0) }
    }));
    cases.push(case("label: index out of range", MB_ERR_INVALID_ARGUMENT, {
        let cls = cls.clone();
        move || unsafe { mb_engine_label(cls.0, 3, &mut null()) }
    }));
    cases.push(case_buf("rerank: query NULL", MB_ERR_NULL_POINTER, {
        let (cross, goods) = (cross.clone(), goods);
        move || {
            let mut out = canaries(2);
            let s = unsafe { mb_rerank(cross.0, null(), 3, goods().as_ptr(), 2, out.as_mut_ptr(), 2, null_mut()) };
            (s, untouched(&out))
        }
    }));
    cases.push(case("rerank: no documents", MB_ERR_INVALID_ARGUMENT, {
        let (cross, goods) = (cross.clone(), goods);
        move || unsafe {
            mb_rerank(
                cross.0,
                c"q".as_ptr(),
                1,
                goods().as_ptr(),
                0,
                [0f32; 2].as_mut_ptr(),
                2,
                null_mut(),
            )
        }
    }));
    cases.push(case_buf("rerank: scores too small", MB_ERR_BUFFER_TOO_SMALL, {
        let (cross, goods) = (cross.clone(), goods);
        move || {
            let mut out = canaries(1);
            let mut needed = 0;
            let s = unsafe {
                mb_rerank(
                    cross.0,
                    c"q".as_ptr(),
                    1,
                    goods().as_ptr(),
                    2,
                    out.as_mut_ptr(),
                    1,
                    &mut needed,
                )
            };
            (s, untouched(&out) && needed == 2)
        }
    }));
    // --- fill-mask
    let fill = {
        let mlm = mlm.clone();
        move |engine: *const mb_engine, t: &str, top_k: usize, cap: usize, counts: bool| {
            let e = if engine.is_null() {
                mlm.0 as *const mb_engine
            } else {
                engine
            };
            let texts = [text(t)];
            let mut ids = vec![u32::MAX; cap + GUARD];
            let mut scores = canaries(cap);
            let mut c = [usize::MAX; 1];
            let cp = if counts { c.as_mut_ptr() } else { null_mut() };
            let s = unsafe {
                mb_fill_mask(
                    e,
                    texts.as_ptr(),
                    1,
                    top_k,
                    ids.as_mut_ptr(),
                    scores.as_mut_ptr(),
                    cap,
                    cp,
                    null_mut(),
                )
            };
            (s, untouched(&scores) && ids.iter().all(|&i| i == u32::MAX))
        }
    };
    cases.push(case_buf("fill_mask: top_k 0", MB_ERR_INVALID_ARGUMENT, {
        let fill = fill.clone();
        move || fill(null(), "a [MASK] b", 0, 10, true)
    }));
    cases.push(case_buf("fill_mask: no [MASK]", MB_ERR_INPUT, {
        let fill = fill.clone();
        move || fill(null(), "no mask here", 5, 10, true)
    }));
    cases.push(case_buf("fill_mask: no MLM head", MB_ERR_UNSUPPORTED, {
        let (fill, st) = (fill.clone(), st.clone());
        move || fill(st.0, "a [MASK] b", 5, 10, true)
    }));
    cases.push(case_buf("fill_mask: mask_counts NULL", MB_ERR_NULL_POINTER, {
        let fill = fill.clone();
        move || fill(null(), "a [MASK] b", 5, 10, false)
    }));
    cases.push(case_buf("fill_mask: buffers too small", MB_ERR_BUFFER_TOO_SMALL, {
        let fill = fill.clone();
        move || fill(null(), "a [MASK] b [MASK]", 5, 9, true)
    }));
    cases.push(case("token_text: id out of range", MB_ERR_INVALID_ARGUMENT, {
        let mlm = mlm.clone();
        move || unsafe { mb_token_text(mlm.0, 1_000_000, [0 as c_char; 8].as_mut_ptr(), 8, null_mut()) }
    }));
    cases.push(case_buf("token_text: buffer too small", MB_ERR_BUFFER_TOO_SMALL, {
        let mlm = mlm.clone();
        move || {
            let mut len = 0;
            assert_eq!(
                unsafe { mb_token_text(mlm.0, 100, null_mut(), 0, &mut len) },
                MB_ERR_BUFFER_TOO_SMALL
            );
            let mut buf = vec![b'#' as c_char; len + GUARD];
            let s = unsafe { mb_token_text(mlm.0, 100, buf.as_mut_ptr(), len, null_mut()) };
            (s, buf.iter().all(|&c| c == b'#' as c_char))
        }
    }));
    // --- ColBERT
    cases.push(case("colbert: not a ColBERT model", MB_ERR_UNSUPPORTED, {
        let (st, goods) = (st.clone(), goods);
        move || unsafe {
            mb_colbert(
                st.0,
                goods().as_ptr(),
                2,
                0,
                [0f32; 4].as_mut_ptr(),
                4,
                [0usize; 2].as_mut_ptr(),
                null_mut(),
            )
        }
    }));
    cases.push(case("colbert: token_counts NULL", MB_ERR_NULL_POINTER, {
        let (col, goods) = (col.clone(), goods);
        move || unsafe {
            mb_colbert(
                col.0,
                goods().as_ptr(),
                2,
                0,
                [0f32; 4].as_mut_ptr(),
                4,
                null_mut(),
                null_mut(),
            )
        }
    }));
    cases.push(case_buf("colbert: out too small", MB_ERR_BUFFER_TOO_SMALL, {
        let (col, goods) = (col.clone(), goods);
        move || {
            let mut out = canaries(100);
            let mut counts = [0usize; 2];
            let mut needed = 0;
            let s = unsafe {
                mb_colbert(
                    col.0,
                    goods().as_ptr(),
                    2,
                    1,
                    out.as_mut_ptr(),
                    100,
                    counts.as_mut_ptr(),
                    &mut needed,
                )
            };
            (s, untouched(&out) && needed > 100 && counts[0] > 0)
        }
    }));
    cases.push(case("colbert_sizes: engine NULL", MB_ERR_NULL_POINTER, {
        move || unsafe { mb_colbert_sizes(null(), goods().as_ptr(), 2, 0, [0usize; 2].as_mut_ptr(), null_mut()) }
    }));
    cases.push(case("colbert_dim: not a ColBERT model", MB_ERR_UNSUPPORTED, {
        let cls = cls.clone();
        move || unsafe { mb_engine_colbert_dim(cls.0, &mut 0) }
    }));

    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (status, buffers_ok) = (c.run)();
        let msg = last_error();
        if status != c.want || !buffers_ok || msg.is_empty() || msg.contains('\n') {
            failures.push(format!(
                "{}: got {status:?} (want {:?}), buffers ok: {buffers_ok}, message {msg:?}",
                c.name, c.want
            ));
        }
        // A successful call clears the message.
        let v = unsafe { mb_engine_embed_dim(st.0, null(), &mut 0) };
        assert_eq!((v, last_error()), (MB_OK, String::new()));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("bad-input matrix: {} cases", cases.len());
}

#[test]
fn last_error_is_per_thread() {
    let e = open(ST);
    assert_eq!(
        unsafe { mb_embed(e.0, null(), 1, null(), null_mut(), 0, null_mut()) },
        MB_ERR_NULL_POINTER
    );
    let here = last_error();
    assert!(here.contains("texts is NULL"), "{here}");
    let there = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(there, "");
    assert_eq!(last_error(), here);
}

// ---------------------------------------------------------------------------------------------
// Threads

/// Concurrent calls share forwards (coalescing), so a text may run in a batch of another height
/// than alone; the CPU's f32 GEMM may then block its sums differently: equal within 1e-5
/// (absolute, on unit vectors and logits of order 1), not bit for bit.
#[test]
fn sixteen_threads_match_sequential() {
    const THREADS: usize = 16;
    const CALLS: usize = 1000;
    let st = open(ST);
    let cls = open(CLS);
    let inputs: Vec<Vec<&str>> = vec![
        vec!["hello"],
        vec!["the quick brown fox"],
        vec!["a", "bb cc"],
        vec!["jumps over the lazy dog", "short"],
        vec!["naïve"],
        vec!["one two three four five six"],
        vec!["x y", "z", "w v u"],
        vec!["Paris is in France"],
    ];
    let c_inputs: Vec<Vec<mb_text>> = inputs.iter().map(|v| v.iter().map(|t| text(t)).collect()).collect();
    struct Inputs(Vec<Vec<mb_text>>);
    unsafe impl Sync for Inputs {}
    impl Inputs {
        fn get(&self, i: usize) -> &[mb_text] {
            &self.0[i]
        }
    }
    let c_inputs = Inputs(c_inputs);

    // Call `i` of a thread: an embedding on one engine, or classification logits on the other.
    let call = |i: usize, which: usize| -> Vec<u32> {
        let t = c_inputs.get(which);
        if i.is_multiple_of(2) {
            let mut out = vec![0f32; t.len() * 32];
            let s = unsafe {
                mb_embed(
                    st.p(),
                    t.as_ptr(),
                    t.len(),
                    null(),
                    out.as_mut_ptr(),
                    out.len(),
                    null_mut(),
                )
            };
            assert_eq!(s, MB_OK, "{}", last_error());
            bits(&out)
        } else {
            let mut out = vec![0f32; t.len() * 3];
            let s = unsafe {
                mb_classify(
                    cls.p(),
                    t.as_ptr(),
                    t.len(),
                    out.as_mut_ptr(),
                    out.len(),
                    null_mut(),
                    null_mut(),
                    null_mut(),
                )
            };
            assert_eq!(s, MB_OK, "{}", last_error());
            bits(&out)
        }
    };
    let which = |thread: usize, i: usize| (thread * 3 + i * 5) % inputs.len();

    let start = std::time::Instant::now();
    let reference: Vec<[Vec<u32>; 2]> = (0..inputs.len()).map(|w| [call(0, w), call(1, w)]).collect();
    // The sequential run: the same calls one after another.
    for thread in 0..THREADS {
        for i in 0..CALLS / 16 {
            assert_eq!(call(i, which(thread, i)), reference[which(thread, i)][i % 2]);
        }
    }
    let sequential = start.elapsed();

    let start = std::time::Instant::now();
    let mismatches = std::sync::atomic::AtomicUsize::new(0);
    let close = |a: &[u32], b: &[u32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| (f32::from_bits(x) - f32::from_bits(y)).abs() <= 1e-5)
    };
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (call, reference, mismatches, close) = (&call, &reference, &mismatches, &close);
            s.spawn(move || {
                for i in 0..CALLS {
                    let w = which(thread, i);
                    if !close(&call(i, w), &reference[w][i % 2]) {
                        mismatches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let threaded = start.elapsed();
    assert_eq!(mismatches.into_inner(), 0);
    let c = st.counters();
    assert!(c.forwards < c.calls, "16 threads never shared a forward: {c:?}");
    eprintln!(
        "{THREADS} threads x {CALLS} calls: {threaded:?} ({:.1} us/call); sequential sample of {} calls: {sequential:?}",
        threaded.as_secs_f64() * 1e6 / (THREADS * CALLS) as f64,
        THREADS * CALLS / 16
    );
}

/// The serving entry points (src/ffi/outputs.rs) against the Rust API: quantized embeddings equal
/// `quantize(embed)` byte for byte at every precision, token classification equals
/// `token_classify`, the counters count, the sizes come before any write.
#[test]
fn serving_entry_points_match_rust_api() {
    use modernbert::quantize::{quantize, Precision, Quantized};
    assert_eq!(mb_abi_version(), MB_ABI_VERSION);

    let e = open("st_mean_normalize_prompts");
    let rust = rust_engine("st_mean_normalize_prompts", DeviceChoice::Cpu);
    let strs = [
        "a cat",
        "a dog on a mat",
        "stock markets",
        "rain",
        "",
        "x y z",
        "the end",
        "ok",
    ];
    let texts: Vec<mb_text> = strs.iter().map(|s| text(s)).collect();
    let rows = rust.embed(&strs, &EmbedOptions::default()).unwrap();
    let dim = rows[0].len();
    for (code, precision) in [
        (0, Precision::Float32),
        (1, Precision::Int8),
        (2, Precision::Uint8),
        (3, Precision::Binary),
        (4, Precision::Ubinary),
    ] {
        let want: Vec<u8> = match quantize(rows.concat(), dim, precision, None).unwrap() {
            Quantized::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            Quantized::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Quantized::U8(v) => v,
        };
        let (mut row_bytes, mut needed) = (0usize, 0usize);
        // Size query first: nothing written.
        let s = unsafe {
            mb_embed_quantized(
                e.0,
                texts.as_ptr(),
                texts.len(),
                null(),
                code,
                null_mut(),
                0,
                &mut row_bytes,
                &mut needed,
            )
        };
        assert_eq!(s, MB_ERR_BUFFER_TOO_SMALL, "{precision:?}");
        assert_eq!(
            (needed, row_bytes * texts.len()),
            (want.len(), want.len()),
            "{precision:?}"
        );
        let mut out = vec![0xA5u8; needed + 8];
        let s = unsafe {
            mb_embed_quantized(
                e.0,
                texts.as_ptr(),
                texts.len(),
                null(),
                code,
                out.as_mut_ptr(),
                needed,
                &mut row_bytes,
                &mut needed,
            )
        };
        assert_eq!(s, MB_OK, "{precision:?}: {}", last_error());
        assert_eq!(&out[..needed], &want[..], "{precision:?}");
        assert!(
            out[needed..].iter().all(|&b| b == 0xA5),
            "{precision:?}: wrote past the capacity"
        );
    }
    let mut out = [0u8; 64];
    let s = unsafe {
        mb_embed_quantized(
            e.0,
            texts.as_ptr(),
            1,
            null(),
            5,
            out.as_mut_ptr(),
            64,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, MB_ERR_INVALID_ARGUMENT, "{}", last_error());
    // 3 texts x 32 bits pack into 12 bytes: 4 per row; 3 texts x 4 dims (dim 4) do not split evenly.
    let opts = mb_embed_options {
        struct_size: std::mem::size_of::<mb_embed_options>(),
        pooling: 0,
        normalize: 0,
        dim: 4,
        prompt_name: null(),
        prompt: null(),
        timeout_us: 0,
    };
    let s = unsafe {
        mb_embed_quantized(
            e.0,
            texts.as_ptr(),
            3,
            &opts,
            3,
            out.as_mut_ptr(),
            64,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(s, MB_ERR_INVALID_ARGUMENT, "{}", last_error());

    // Counters: calls and forwards counted, a short struct written only up to its size.
    let mut c: mb_counters = unsafe { std::mem::zeroed() };
    c.struct_size = std::mem::size_of::<mb_counters>();
    assert_eq!(unsafe { mb_engine_counters(e.0, &mut c) }, MB_OK);
    assert!(c.calls >= 5 && c.forwards >= 5 && c.tokens > 0, "{c:?}");
    let mut short: mb_counters = unsafe { std::mem::zeroed() };
    short.struct_size = 2 * std::mem::size_of::<u64>();
    short.forwards = 12345;
    assert_eq!(unsafe { mb_engine_counters(e.0, &mut short) }, MB_OK);
    assert_eq!((short.calls, short.forwards), (c.calls, 12345), "{short:?}");
    short.struct_size = 0;
    assert_eq!(unsafe { mb_engine_counters(e.0, &mut short) }, MB_ERR_INVALID_ARGUMENT);

    // Token classification.
    let t = open("tokcls_l2_v5_f32");
    let rust = rust_engine("tokcls_l2_v5_f32", DeviceChoice::Cpu);
    let strs = ["John lives in Paris", "", "a b c d e f"];
    let texts: Vec<mb_text> = strs.iter().map(|s| text(s)).collect();
    let want = rust.token_classify(&strs).unwrap();
    let labels = rust.num_labels().unwrap();
    let (mut counts, mut total) = (vec![0usize; 3], 0usize);
    assert_eq!(
        unsafe { mb_token_classify_sizes(t.0, texts.as_ptr(), 3, counts.as_mut_ptr(), &mut total) },
        MB_OK
    );
    assert_eq!(counts, want.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(total, counts.iter().sum::<usize>());
    let mut logits = canaries(total * labels);
    let mut ids = vec![u32::MAX; total];
    let mut scores = vec![-1f32; total];
    let mut needed = 0usize;
    let s = unsafe {
        mb_token_classify(
            t.0,
            texts.as_ptr(),
            3,
            logits.as_mut_ptr(),
            total * labels,
            ids.as_mut_ptr(),
            scores.as_mut_ptr(),
            counts.as_mut_ptr(),
            &mut needed,
        )
    };
    assert_eq!(s, MB_OK, "{}", last_error());
    assert_eq!(needed, total * labels);
    let flat: Vec<_> = want.iter().flatten().collect();
    assert_eq!(
        bits(&logits[..needed]),
        bits(&flat.iter().flat_map(|t| t.logits.clone()).collect::<Vec<_>>())
    );
    assert!(untouched(&logits[needed..]));
    assert_eq!(ids, flat.iter().map(|t| t.label_id as u32).collect::<Vec<_>>());
    assert_eq!(bits(&scores), bits(&flat.iter().map(|t| t.score).collect::<Vec<_>>()));
    let mut small = canaries(needed - 1);
    let s = unsafe {
        mb_token_classify(
            t.0,
            texts.as_ptr(),
            3,
            small.as_mut_ptr(),
            needed - 1,
            null_mut(),
            null_mut(),
            counts.as_mut_ptr(),
            &mut needed,
        )
    };
    assert_eq!(s, MB_ERR_BUFFER_TOO_SMALL);
    assert!(untouched(&small));
    // An embedding model has no token classifier.
    let s = unsafe { mb_token_classify_sizes(e.0, texts.as_ptr(), 3, counts.as_mut_ptr(), null_mut()) };
    assert_eq!(s, MB_ERR_UNSUPPORTED, "{}", last_error());
}

/// `timeout_us`: a call queued behind a long one leaves at its deadline with MB_ERR_TIMEOUT and
/// writes nothing; with no timeout the same call succeeds.
#[test]
fn a_queued_call_times_out() {
    let e = open("st_mean_normalize_prompts");
    let long: Vec<String> = (0..2000).map(|i| format!("text {i} {}", "word ".repeat(40))).collect();
    let mut dim = 0usize;
    assert_eq!(unsafe { mb_engine_embed_dim(e.0, null(), &mut dim) }, MB_OK);
    let forwards = |e: &Handle| e.counters();
    let before = forwards(&e).forwards;
    std::thread::scope(|s| {
        let (engine, long) = (&e, &long);
        s.spawn(move || {
            let long_texts: Vec<mb_text> = long.iter().map(|s| text(s)).collect();
            let mut out = vec![0f32; long_texts.len() * dim];
            let s = unsafe {
                mb_embed(
                    engine.0,
                    long_texts.as_ptr(),
                    long_texts.len(),
                    null(),
                    out.as_mut_ptr(),
                    out.len(),
                    null_mut(),
                )
            };
            assert_eq!(s, MB_OK);
        });
        while forwards(&e).forwards == before {
            std::thread::yield_now();
        }
        let opts = mb_embed_options {
            struct_size: std::mem::size_of::<mb_embed_options>(),
            pooling: 0,
            normalize: 0,
            dim: 0,
            prompt_name: null(),
            prompt: null(),
            timeout_us: 1000,
        };
        let one = [text("queued")];
        let mut out = canaries(dim);
        let s = unsafe { mb_embed(e.0, one.as_ptr(), 1, &opts, out.as_mut_ptr(), dim, null_mut()) };
        assert_eq!(s, MB_ERR_TIMEOUT, "{}", last_error());
        assert!(untouched(&out));
    });
    assert_eq!(forwards(&e).timed_out, 1);
}
