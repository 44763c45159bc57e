//! Hostile inputs, run as an attacker or a careless user would: the binary under an address-space
//! limit (`ulimit -v`) and a timeout, over sizes beyond any memory, special files, huge texts,
//! broken weights. Each must end in a clean error (a one-line message, an exit status, no signal,
//! no panic text) or a correct result within the memory bound — never an abort.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The address-space limit every run gets (KiB for `ulimit -v`): the old code needed 3.3 GB for
/// a 20 MB line and aborted at 6.8 GB on 50 MB; the bounded tokeniser needs a fraction of this.
const ULIMIT_KB: u64 = 3 << 20;

fn fixture(name: &str) -> PathBuf {
    common::fixtures_dir().join(name)
}

use common::copy_fixture;

/// Run the binary under `ulimit -v` and `timeout`, stdin from a file (or empty).
fn run_limited(args: &[&str], stdin: Option<&Path>) -> Output {
    let script = format!("ulimit -v {ULIMIT_KB} && exec timeout -s KILL 120 \"$@\"");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_modernbert"))
        .args(args);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().unwrap()
}

/// A clean failure: exit status 1 (not a signal, not a timeout), one `error:` line naming `needle`.
fn expect_clean_error(args: &[&str], stdin: Option<&Path>, needle: &str) {
    let out = run_limited(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: status {:?}, stderr {stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("memory allocation"),
        "{args:?}: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn set_config(dir: &Path, key: &str, value: Value) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn sizes_beyond_memory_are_refused_before_allocation() {
    let d = fixture("mlm_hd64_v5_bf16");
    let d = d.to_str().unwrap();
    for device in ["cpu", "emulated"] {
        for tokens in ["1099511627776", "4611686018427387904", "18446744073709551615"] {
            expect_clean_error(
                &[
                    "embed",
                    "--model",
                    d,
                    "--device",
                    device,
                    "--max-batch-tokens",
                    tokens,
                    "hello world",
                ],
                None,
                "too large",
            );
        }
    }
    // max_position_embeddings sizes the largest batch too (a sequence is never split).
    for positions in [1u64 << 26, 1 << 40, 1 << 62] {
        let t = copy_fixture("mlm_hd64_v5_bf16");
        set_config(t.path(), "max_position_embeddings", positions.into());
        // The tokenizer's model_max_length (8192) would bound the length first: "none" (1e30),
        // as transformers writes it, leaves the position table as the bound.
        let tok = t.path().join("tokenizer_config.json");
        let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
        tc["model_max_length"] = 1e30.into();
        std::fs::write(tok, tc.to_string()).unwrap();
        for device in ["cpu", "emulated"] {
            expect_clean_error(
                &[
                    "embed",
                    "--model",
                    t.path().to_str().unwrap(),
                    "--device",
                    device,
                    "hello",
                ],
                None,
                "too large",
            );
        }
    }
}

#[test]
fn special_files_are_refused_not_read() {
    // config.json as a FIFO: opening it for reading would block forever.
    let t = copy_fixture("st_cls_nonorm");
    let config = t.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    let status = Command::new("mkfifo").arg(&config).status().unwrap();
    assert!(status.success());
    let m = t.path().to_str().unwrap();
    expect_clean_error(&["embed", "--model", m, "x"], None, "not a regular file");
    // A link to /dev/zero: read until memory runs out.
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    expect_clean_error(&["embed", "--model", m, "x"], None, "not a regular file");
    // tokenizer.json as a link to /dev/zero, the weights as a FIFO.
    let t = copy_fixture("st_cls_nonorm");
    let m = t.path().to_str().unwrap();
    std::fs::remove_file(t.path().join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.path().join("tokenizer.json")).unwrap();
    expect_clean_error(&["embed", "--model", m, "x"], None, "not a regular file");
    let t = copy_fixture("st_cls_nonorm");
    let m = t.path().to_str().unwrap();
    std::fs::remove_file(t.path().join("model.safetensors")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(t.path().join("model.safetensors"))
        .status()
        .unwrap()
        .success());
    expect_clean_error(&["embed", "--model", m, "x"], None, "not a regular file");
}

#[test]
fn optional_files_that_exist_must_be_readable() {
    // modules.json decides pooling and normalisation: present but unreadable must not silently
    // fall back to the defaults (the embedding would change without a word).
    let st = "st_mean_normalize_prompts";
    let cases: [(&str, &dyn Fn(&Path), &str); 4] = [
        ("modules.json", &|p| std::fs::create_dir(p).unwrap(), "is a directory"),
        (
            "modules.json",
            &|p| std::os::unix::fs::symlink("/nonexistent", p).unwrap(),
            "modules.json",
        ),
        (
            "config_sentence_transformers.json",
            &|p| std::fs::write(p, "{not json").unwrap(),
            "not valid JSON",
        ),
        (
            "1_Pooling/config.json",
            &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "not a regular file",
        ),
    ];
    for (file, break_it, needle) in cases {
        let t = copy_fixture(st);
        let p = t.path().join(file);
        if p.exists() {
            std::fs::remove_file(&p).unwrap();
        }
        break_it(&p);
        expect_clean_error(&["embed", "--model", t.path().to_str().unwrap(), "x"], None, needle);
    }
}

/// Memory is bounded by the model's maximum length, not by the input: a 50 MB line embeds under
/// the address-space limit, and equals the embedding of its first 64 KiB (both are truncated to
/// the same 8192 tokens).
#[test]
fn a_50_mb_line_is_cut_before_tokenising() {
    let d = fixture("st_mean_normalize_prompts");
    let d = d.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.txt");
    let line = "word ".repeat(10 << 20); // 50 MiB, one line
    std::fs::write(&huge, format!("{line}\nshort\n")).unwrap();
    let short = dir.path().join("prefix.txt");
    std::fs::write(&short, format!("{}\nshort\n", &line[..64 << 10])).unwrap();
    let out = run_limited(&["embed", "--model", d, "--device", "cpu"], Some(&huge));
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let want = run_limited(&["embed", "--model", d, "--device", "cpu"], Some(&short));
    assert!(want.status.success());
    let (got, want) = (json_lines(&out), json_lines(&want));
    assert_eq!(got.len(), 2);
    assert_eq!(got, want, "the cut text embeds as the truncated whole text");
    // With truncation off, the line is refused with a bound on its length; the other line runs.
    let out = run_limited(
        &["embed", "--model", d, "--device", "cpu", "--no-truncate"],
        Some(&huge),
    );
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("at least")
            && lines[0]["error"].as_str().unwrap().contains("more than the maximum"),
        "{lines:?}"
    );
    assert!(lines[1]["embedding"].is_array());
    // A 50 MB line without whitespace, and one of multi-byte characters, are bounded too.
    for unit in ["a", "é"] {
        std::fs::write(&huge, unit.repeat((50 << 20) / unit.len())).unwrap();
        let out = run_limited(&["embed", "--model", d, "--device", "cpu"], Some(&huge));
        assert!(
            out.status.success(),
            "{unit}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json_lines(&out).len(), 1);
    }
}

/// Truncation is unchanged by the cut: for texts far longer than the cut's window, cut at many
/// places, the ids equal the truncation of the whole text's ids (a tokenizer whose maximum is
/// larger than the text never cuts, so it gives the whole text's ids).
#[test]
fn the_cut_keeps_the_truncated_ids() {
    use modernbert::tokenize::{OverlongPolicy, TextTokenizer};
    let shared = common::repo_root().join("../shared/fixtures/modernbert-tokenizer/tokenizer.json");
    let path = if shared.exists() {
        shared
    } else {
        fixture("st_mean_normalize_prompts").join("tokenizer.json")
    };
    let whole = TextTokenizer::from_file(&path, 1 << 30, OverlongPolicy::Truncate).unwrap();
    let word_salad: String = (0..12_000)
        .map(|i| ["the ", "quick, ", "fox\n", "jumps   ", "é ", "42 ", "[MASK] "][i % 7])
        .collect();
    let no_space = "xy".repeat(20_000);
    // Few tokens per byte, so that the first window is not enough and the window must grow.
    let long_words = "antidisestablishmentarianism internationalization ".repeat(1_000);
    let wide_spaces = format!("word{}", " ".repeat(40)).repeat(1_500);
    let mut checked = 0;
    for max_len in [8, 64, 512] {
        let tok = TextTokenizer::from_file(&path, max_len, OverlongPolicy::Truncate).unwrap();
        for text in [
            word_salad.as_str(),
            no_space.as_str(),
            long_words.as_str(),
            wide_spaces.as_str(),
        ] {
            for len in (4 * max_len..text.len()).step_by(997) {
                let mut p = len;
                while !text.is_char_boundary(p) {
                    p -= 1;
                }
                let t = &text[..p];
                let full = whole.encode_batch(&[t]).unwrap().remove(0);
                let mut want: Vec<u32> = full[..full.len().min(max_len - 1)].to_vec();
                if full.len() > max_len {
                    want.push(*full.last().unwrap());
                } else {
                    want = full.clone();
                }
                assert_eq!(
                    tok.encode_batch(&[t]).unwrap().remove(0),
                    want,
                    "max_len {max_len}, {p} bytes"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn non_finite_weights_are_errors_not_null_vectors() {
    let t = copy_fixture("mlm_hd64_v5_bf16"); // head_dim 64: the emulated GPU executor runs it
    let path = t.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    // Every byte 0xFF of the final norm's weight: NaN in f32, bf16 and f16 alike.
    let (name, info) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.contains("final_norm.weight"))
        .expect("final_norm.weight");
    let offsets = info["data_offsets"].as_array().unwrap();
    let (a, b) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    bytes[8 + header_len + a..8 + header_len + b].fill(0xFF);
    std::fs::write(&path, bytes).unwrap();
    let m = t.path().to_str().unwrap();
    for device in ["cpu", "emulated"] {
        let out = run_limited(&["embed", "--model", m, "--device", device, "one", "two"], None);
        assert_eq!(out.status.code(), Some(1), "{device} ({name})");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 2);
        for l in &lines {
            assert!(
                l["error"].as_str().unwrap().contains("NaN or infinite"),
                "{device}: {l}"
            );
        }
    }
    // The Rust API refuses the whole call, naming the first text.
    let engine = modernbert::engine::Engine::new(t.path(), &Default::default()).unwrap();
    let e = engine.embed(&["one"], &Default::default()).unwrap_err().to_string();
    assert!(e.contains("text 1") && e.contains("NaN"), "{e}");
    // The C ABI: MB_ERR_NON_FINITE naming the text, the buffer untouched.
    use modernbert::ffi::*;
    let dir = std::ffi::CString::new(m).unwrap();
    let mut e = std::ptr::null_mut();
    assert_eq!(
        unsafe { mb_engine_create(dir.as_ptr(), std::ptr::null(), &mut e) },
        mb_status::MB_OK
    );
    let texts = [mb_text {
        ptr: "one".as_ptr() as *const std::ffi::c_char,
        len: 3,
    }];
    let mut dim = 0usize;
    assert_eq!(
        unsafe { mb_engine_embed_dim(e, std::ptr::null(), &mut dim) },
        mb_status::MB_OK
    );
    let mut out = vec![7.0f32; dim];
    let s = unsafe {
        mb_embed(
            e,
            texts.as_ptr(),
            1,
            std::ptr::null(),
            out.as_mut_ptr(),
            dim,
            std::ptr::null_mut(),
        )
    };
    let message = unsafe { std::ffi::CStr::from_ptr(mb_last_error()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(s, mb_status::MB_ERR_NON_FINITE, "{message}");
    assert!(message.contains("text 1") && message.contains("NaN"), "{message}");
    assert!(out.iter().all(|&x| x == 7.0), "written despite the error");
    unsafe { mb_engine_destroy(e) };
}

#[test]
fn an_empty_text_embeds_as_cls_sep_everywhere() {
    use modernbert::engine::{DeviceChoice, Engine, EngineOptions};
    let d = fixture("st_mean_normalize_prompts");
    let engine = Engine::new(
        &d,
        &EngineOptions {
            device: DeviceChoice::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let got = engine
        .embed(
            &[""],
            &modernbert::engine::EmbedOptions {
                prompt: Some(String::new()),
                ..Default::default()
            },
        )
        .unwrap();
    // The same as the backbone on [CLS] [SEP], mean-pooled and normalised by hand.
    let tok = engine.tokenizer().unwrap();
    let ids = vec![tok.token_to_id("[CLS]").unwrap(), tok.token_to_id("[SEP]").unwrap()];
    assert_eq!(tok.encode_batch(&[""]).unwrap()[0], ids);
    let h = engine.config.hidden_size;
    let mut want = vec![0f32; h];
    engine
        .run_sequences(&[ids.clone()], &[2], |_, _, hidden| {
            for t in 0..2 {
                for j in 0..h {
                    want[j] += hidden[t * h + j] / 2.0;
                }
            }
            Ok(())
        })
        .unwrap();
    let n = want.iter().map(|x| x * x).sum::<f32>().sqrt();
    want.iter_mut().for_each(|x| *x /= n);
    let err = got[0]
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-5, "empty-text embedding differs from [CLS] [SEP] by {err}");
}

/// The same classes through the C ABI, in this process: a status and a one-line message, the
/// engine pointer left NULL, and this process still alive.
#[test]
fn the_c_abi_refuses_them_without_aborting_the_host() {
    use modernbert::ffi::*;
    use std::ffi::{CStr, CString};
    let create = |dir: &Path, device: mb_device, max_batch_tokens: usize| -> (mb_status, String) {
        let mut o: mb_engine_options = unsafe { std::mem::zeroed() };
        o.struct_size = std::mem::size_of::<mb_engine_options>();
        assert_eq!(unsafe { mb_engine_options_default(&mut o) }, mb_status::MB_OK);
        o.device = device as i32;
        o.max_batch_tokens = max_batch_tokens;
        let dir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut e = std::ptr::null_mut();
        let s = unsafe { mb_engine_create(dir.as_ptr(), &o, &mut e) };
        assert!(e.is_null());
        (
            s,
            unsafe { CStr::from_ptr(mb_last_error()) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let d = fixture("mlm_hd64_v5_bf16");
    for device in [mb_device::MB_DEVICE_CPU, mb_device::MB_DEVICE_EMULATED] {
        for tokens in [1usize << 40, usize::MAX] {
            let (s, m) = create(&d, device, tokens);
            assert_eq!(s, mb_status::MB_ERR_INVALID_ARGUMENT, "{m}");
            assert!(m.contains("too large") && !m.contains('\n'), "{m}");
        }
    }
    let t = copy_fixture("mlm_hd64_v5_bf16");
    let config = t.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    assert!(Command::new("mkfifo").arg(&config).status().unwrap().success());
    let (s, m) = create(t.path(), mb_device::MB_DEVICE_CPU, 16384);
    assert_eq!(s, mb_status::MB_ERR_MODEL, "{m}");
    assert!(m.contains("not a regular file"), "{m}");
}
