//! The command-line contract (other tools depend on it) and the bad-input matrix: every malformed
//! checkpoint or input is a one-line error on stderr with a non-zero exit, never a panic.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    common::fixtures_dir().join(name)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_modernbert"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            pipe.write_all(bytes).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Run a command that must succeed; its stdout as JSON lines.
fn json_lines(args: &[&str], stdin: Option<&[u8]>) -> Vec<Value> {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Run a command that must fail with a one-line error containing `needle`.
fn expect_error(args: &[&str], stdin: Option<&[u8]>, needle: &str) {
    let out = run(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed output before failing");
}

/// Run a command whose inputs partly fail: one JSON line per input in order, `{"error": …}`
/// (containing the needle) for each failing one, a one-line summary on stderr, a non-zero exit.
fn expect_input_errors(args: &[&str], stdin: Option<&[u8]>, inputs: usize, failing: &[(usize, &str)]) -> Vec<Value> {
    let out = run(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "{args:?}: exit status");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(
        stderr.contains(&format!("{} input(s) failed", failing.len())),
        "{args:?}: {stderr}"
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), inputs, "{args:?}: one line per input");
    for (i, line) in lines.iter().enumerate() {
        match failing.iter().find(|(at, _)| *at == i) {
            Some((_, needle)) => {
                let e = line["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{args:?}: line {i} is not an error: {line}"));
                assert!(e.contains(needle), "{args:?}: line {i}: expected {needle:?} in {e:?}");
            }
            None => assert!(line.get("error").is_none(), "{args:?}: line {i} failed: {line}"),
        }
    }
    lines
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn embed_uses_the_directory_pooling_and_normalisation() {
    let dir = fixture("st_mean_normalize_prompts");
    let d = dir.to_str().unwrap();
    let lines = json_lines(&["embed", "--model", d, "first text", "a second, longer text"], None);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let e = floats(&l["embedding"]);
        assert_eq!(e.len(), 32);
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "Normalize module applies by default");
    }
    let raw = json_lines(&["embed", "--model", d, "--no-normalize", "first text"], None);
    let norm: f32 = floats(&raw[0]["embedding"]).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "--no-normalize returns the raw mean");
    let short = json_lines(&["embed", "--model", d, "--dim", "8", "first text"], None);
    let e = floats(&short[0]["embedding"]);
    assert_eq!(e.len(), 8);
    assert!(
        (e.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-5,
        "renormalised after truncation"
    );
    let prompted = json_lines(&["embed", "--model", d, "--prompt-name", "query", "first text"], None);
    let literal = json_lines(
        &["embed", "--model", d, "--prompt", "search_query: ", "first text"],
        None,
    );
    assert_eq!(
        prompted[0], literal[0],
        "the fixture's \"query\" prompt is \"search_query: \""
    );
    assert_ne!(prompted[0], lines[0], "the prompt changes the embedding");
}

#[test]
fn stdin_lines_are_taken_exactly_as_given() {
    let d = fixture("st_cls_nonorm");
    let d = d.to_str().unwrap();
    let from_stdin = json_lines(
        &["embed", "--model", d],
        Some(b"  padded  \r\nsecond\nthird without newline"),
    );
    let from_args = json_lines(
        &["embed", "--model", d, "  padded  ", "second", "third without newline"],
        None,
    );
    assert_eq!(from_stdin, from_args);
    // The texts reach the engine as given; embeddings then strip each one, as sentence-transformers'
    // Transformer module does ...
    let trimmed = json_lines(&["embed", "--model", d, "padded"], None);
    assert_eq!(
        from_stdin[0], trimmed[0],
        "sentence-transformers strips surrounding whitespace"
    );
    // ... while for transformers' tasks (here a classifier) the spaces are part of the text.
    let cls = fixture("seqcls_hd64_mean_f32");
    let cls = cls.to_str().unwrap();
    let padded = json_lines(&["classify", "--model", cls, "  padded  "], None);
    let trimmed = json_lines(&["classify", "--model", cls, "padded"], None);
    assert_ne!(padded[0]["logits"], trimmed[0]["logits"], "spaces are part of the text");
    // cls pooling is the directory default; --pooling mean changes the result
    let mean = json_lines(&["embed", "--model", d, "--pooling", "mean", "second"], None);
    assert_ne!(mean[0], from_args[1]);
}

#[test]
fn fill_mask_lists_top_k_per_mask_in_order() {
    let d = fixture("mlm_l3_v5_f32");
    let lines = json_lines(
        &[
            "fill-mask",
            "--model",
            d.to_str().unwrap(),
            "--top-k",
            "3",
            "the [MASK] is [MASK] here",
            "one [MASK]",
        ],
        None,
    );
    assert_eq!(lines.len(), 2);
    let masks = lines[0]["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 2, "one list per [MASK]");
    assert_eq!(lines[1]["masks"].as_array().unwrap().len(), 1);
    for m in masks {
        let preds = m.as_array().unwrap();
        assert_eq!(preds.len(), 3);
        let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0 && scores[2] > 0.0);
        assert!(preds[0]["id"].as_u64().is_some() && preds[0]["token"].is_string());
    }
    let lines = expect_input_errors(
        &[
            "fill-mask",
            "--model",
            d.to_str().unwrap(),
            "no mask here",
            "The [MASK] is here.",
        ],
        None,
        2,
        &[(0, "has no [MASK]")],
    );
    assert!(lines[1]["masks"].as_array().is_some_and(|m| m.len() == 1));
}

#[test]
fn classify_rerank_colbert_and_info() {
    let cls = fixture("seqcls_cls_allbias_v4_f32");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(cls.join("config.json")).unwrap()).unwrap();
    let labels: Vec<&str> = config["id2label"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let out = json_lines(
        &["classify", "--model", cls.to_str().unwrap(), "good", "bad movie"],
        None,
    );
    assert_eq!(out.len(), 2);
    for o in &out {
        assert_eq!(o["logits"].as_array().unwrap().len(), 3);
        assert!(labels.contains(&o["label"].as_str().unwrap()));
        let p = o["score"].as_f64().unwrap();
        assert!(p > 1.0 / 3.0 - 1e-6 && p <= 1.0, "softmax probability of the argmax");
    }

    let ce = fixture("seqcls_mean_crossenc_v5_bf16");
    let scores = json_lines(
        &[
            "rerank",
            "--model",
            ce.to_str().unwrap(),
            "--query",
            "what?",
            "doc one",
            "doc two",
            "three",
        ],
        None,
    );
    assert_eq!(scores.len(), 3);
    assert!(scores
        .iter()
        .all(|s| (0.0..=1.0).contains(&s["score"].as_f64().unwrap())));

    let cb = fixture("colbert_hd64_pylate");
    let q = json_lines(
        &["colbert", "--model", cb.to_str().unwrap(), "--query", "short query"],
        None,
    );
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(cb.join("config_sentence_transformers.json")).unwrap()).unwrap();
    let vectors = q[0]["vectors"].as_array().unwrap();
    assert_eq!(
        vectors.len() as u64,
        settings["query_length"].as_u64().unwrap(),
        "expanded to query_length"
    );
    let v = floats(&vectors[0]);
    assert!((v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-5);
    let doc = json_lines(&["colbert", "--model", cb.to_str().unwrap(), "a, b. c!"], None);
    assert!(
        doc[0]["vectors"].as_array().unwrap().len() < 10,
        "punctuation is skipped in documents"
    );

    let info = json_lines(
        &[
            "info",
            "--model",
            fixture("backbone_hd64_w16_l4_v5_f32").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(info[0]["layer_pattern"], "GLGL");
    assert_eq!(info[0]["window_radius"], 8);
    assert!(info[0]["parameters"].as_u64().unwrap() > 0);
}

#[test]
fn device_choice() {
    let d = fixture("st_cls_nonorm");
    let d = d.to_str().unwrap();
    // No GPU (or driver) on the test machines: a clear error, and auto falls back to the CPU.
    if !modernbert::kernels::cuda::cuda_available() {
        expect_error(
            &["embed", "--model", d, "--device", "cuda", "x"],
            None,
            "device: cuda:0: ",
        );
        let info = json_lines(&["info", "--model", d, "--device", "auto"], None);
        assert_eq!(info[0]["device"], "cpu");
    }
    assert_eq!(
        json_lines(&["embed", "--model", d, "--device", "auto", "x"], None).len(),
        1
    );
    assert_eq!(
        json_lines(&["embed", "--model", d, "--device", "cpu", "x"], None).len(),
        1
    );
}

use common::copy_fixture;

/// Rewrite model.safetensors with one tensor's header entry replaced.
fn rewrite_header(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let embed =
        |dir: &Path, needle: &str| expect_error(&["embed", "--model", dir.to_str().unwrap(), "text"], None, needle);
    let base = "st_cls_nonorm";

    embed(Path::new("/nonexistent/model-dir"), "does not exist as a directory");

    let t = copy_fixture(base);
    std::fs::write(t.path().join("config.json"), "{ \"hidden_size\": 32, ").unwrap();
    embed(t.path(), "not valid JSON");

    let t = copy_fixture(base);
    std::fs::remove_file(t.path().join("config.json")).unwrap();
    embed(t.path(), "config.json");

    let t = copy_fixture(base);
    let cfg = std::fs::read_to_string(t.path().join("config.json")).unwrap();
    std::fs::write(
        t.path().join("config.json"),
        cfg.replace("\"hidden_size\": 32", "\"hidden_size\": 48"),
    )
    .unwrap();
    embed(t.path(), "has shape");

    let t = copy_fixture("seqcls_cls_allbias_v4_f32"); // v4 config: no layer_types to disagree
    let cfg = std::fs::read_to_string(t.path().join("config.json")).unwrap();
    std::fs::write(
        t.path().join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    embed(t.path(), "missing tensor \"model.layers.2.attn_norm.weight\"");

    let t = copy_fixture(base);
    let cfg = std::fs::read_to_string(t.path().join("config.json")).unwrap();
    std::fs::write(
        t.path().join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .unwrap();
    embed(t.path(), "layer_types has 2 entries for 1 layers");

    let t = copy_fixture(base);
    let st = t.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    embed(t.path(), "invalid safetensors");

    let t = copy_fixture(base);
    std::fs::write(t.path().join("model.safetensors"), b"").unwrap();
    embed(t.path(), "invalid safetensors");

    let t = copy_fixture(base);
    std::fs::remove_file(t.path().join("model.safetensors")).unwrap();
    embed(t.path(), "no model.safetensors");

    let t = copy_fixture(base);
    rewrite_header(t.path(), |h| {
        let e = h.get_mut("final_norm.weight").unwrap();
        e["data_offsets"][1] = Value::from(1u64 << 40);
    });
    embed(t.path(), "invalid safetensors");

    let t = copy_fixture(base);
    rewrite_header(t.path(), |h| {
        let e = h.get_mut("final_norm.weight").unwrap();
        e["dtype"] = Value::from("I32");
    });
    embed(t.path(), "dtype I32");

    let t = copy_fixture(base);
    rewrite_header(t.path(), |h| {
        let e = h.get_mut("final_norm.weight").unwrap();
        e["dtype"] = Value::from("F64");
        e["shape"] = Value::from(vec![16]);
    });
    embed(t.path(), "has shape [16], expected [32]");

    let t = copy_fixture(base);
    std::fs::write(t.path().join("tokenizer.json"), "{\"model\": ").unwrap();
    embed(t.path(), "tokenizer");

    let t = copy_fixture(base);
    let tok = std::fs::read(t.path().join("tokenizer.json")).unwrap();
    std::fs::write(t.path().join("tokenizer.json"), &tok[..tok.len() / 3]).unwrap();
    embed(t.path(), "tokenizer");

    let t = copy_fixture(base);
    std::fs::remove_file(t.path().join("tokenizer.json")).unwrap();
    embed(t.path(), "tokenizer.json");

    let t = copy_fixture(base);
    std::fs::write(
        t.path().join("1_Pooling/config.json"),
        "{\"pooling_mode_max_tokens\": true}",
    )
    .unwrap();
    embed(t.path(), "only cls and mean");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = fixture("st_cls_nonorm");
    let d = d.to_str().unwrap();
    expect_error(&["embed", "--model", d], Some(b""), "no texts");
    // An empty text is a text ([CLS] [SEP]), as in sentence-transformers.
    assert_eq!(json_lines(&["embed", "--model", d, ""], None).len(), 1);
    let blank = json_lines(&["embed", "--model", d], Some(b"fine\n\nfine"));
    assert_eq!(blank.len(), 3);
    assert_eq!(blank[0], blank[2]);
    assert_ne!(blank[0], blank[1]);
    // One bad input is its own error line; the others still get their results.
    let lines = expect_input_errors(
        &["embed", "--model", d],
        Some(b"ok\n\xff\xfe bad\nok\n"),
        3,
        &[(1, "stdin line 2 is not valid UTF-8")],
    );
    assert_eq!(lines[0], lines[2]);
    let long = "word ".repeat(9000);
    expect_input_errors(
        &["embed", "--model", d, "--no-truncate", "short", &long],
        None,
        2,
        &[(1, "more than the maximum")],
    );
    expect_error(
        &[
            "fill-mask",
            "--model",
            &fixture("mlm_l3_v5_f32").to_string_lossy(),
            "--top-k",
            "0",
            "[MASK]",
        ],
        None,
        "top_k must be at least 1",
    );
    expect_error(
        &["embed", "--model", d, "--max-batch-tokens", "0", "x"],
        None,
        "max_batch_tokens must be at least 1",
    );
    assert_eq!(
        json_lines(&["embed", "--model", d, &long], None).len(),
        1,
        "truncated by default"
    );
    expect_error(
        &["embed", "--model", d, "--dim", "0", "x"],
        None,
        "dim 0 must be in 1..=",
    );
    expect_error(
        &["embed", "--model", d, "--dim", "33", "x"],
        None,
        "dim 33 must be in 1..=32",
    );
    expect_error(
        &["embed", "--model", d, "--prompt-name", "nope", "x"],
        None,
        "unknown prompt name",
    );
    expect_error(&["classify", "--model", d, "x"], None, "no classification head");
    expect_error(&["colbert", "--model", d, "x"], None, "not a PyLate ColBERT directory");
    expect_error(&["fill-mask", "--model", d, "[MASK]"], None, "no masked-LM head");
    let out = run(&["embed"], None);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn a_model_that_is_neither_a_directory_nor_a_repo_id() {
    let d = fixture("st_cls_nonorm");
    let neither = "is not a Hugging Face repo id of the form org/name";
    for model in [
        "foo",
        "./missing-model",
        "/nonexistent/model-dir",
        "org/name/extra",
        "org/-name",
        "org/na..me",
        "/org",
    ] {
        for command in [&["info", "--model", model][..], &["embed", "--model", model, "x"]] {
            expect_error(command, None, "does not exist as a directory");
            expect_error(command, None, neither);
        }
    }
    let file = d.join("config.json");
    let file = file.to_str().unwrap();
    expect_error(&["info", "--model", file], None, "is not a directory, and ");
    expect_error(&["info", "--model", file], None, neither);
    // An existing directory is taken as is, whatever its name looks like.
    assert_eq!(json_lines(&["info", "--model", d.to_str().unwrap()], None).len(), 1);
}

/// A command's `--help`, which must succeed.
fn help(command: &[&str]) -> String {
    let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
    let out = run(&args, None);
    assert!(out.status.success(), "{args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The entries of one section of a help text (`Options:`, `Arguments:`, `Commands:`): each entry's
/// name (its first word) and its description (the rest of its line, or the lines indented under it
/// in long help).
fn help_entries(help: &str, section: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            inside = line == section;
            continue;
        }
        if !inside || line.trim().is_empty() {
            continue;
        }
        // Entries are indented 2 spaces (6 for an option without a short form); the lines of a
        // long help's description, 10.
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 {
            // `  -s, --long <VALUE>  Description`: the description follows two or more spaces.
            let entry = line.trim_start();
            let (name, description) = match entry.find("  ") {
                Some(at) => (&entry[..at], entry[at..].trim()),
                None => (entry, ""),
            };
            entries.push((name.to_string(), description.to_string()));
        } else if let Some((_, description)) = entries.last_mut() {
            description.push_str(line.trim());
        }
    }
    entries
}

/// The subcommands, as the top-level help lists them.
fn subcommands() -> Vec<String> {
    help_entries(&help(&[]), "Commands:")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn every_command_option_and_argument_has_help() {
    let top = help(&[]);
    for (name, description) in help_entries(&top, "Commands:") {
        assert!(!description.is_empty(), "command {name} has no description");
    }
    let commands = subcommands();
    assert!(commands.len() >= 7, "{commands:?}");
    for command in &commands {
        let text = help(&[command]);
        let options = help_entries(&text, "Options:");
        assert!(
            options.iter().any(|(name, _)| name.contains("--help")),
            "{command}: {text}"
        );
        let arguments = help_entries(&text, "Arguments:");
        for (name, description) in options.iter().chain(&arguments) {
            assert!(
                !description.is_empty(),
                "`{command} --help`: {name} has no description:\n{text}"
            );
        }
    }
}

#[test]
fn each_command_lists_only_the_options_it_uses() {
    let options = |command: &str| -> Vec<String> {
        help_entries(&help(&[command]), "Options:")
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let has = |listed: &[String], option: &str| listed.iter().any(|name| name.split([' ', ',']).any(|w| w == option));
    // What `run` reads for each: the texts commands build a batching engine; info only loads the
    // model on a device to report it.
    let engine = [
        "--model",
        "--device",
        "--dtype",
        "--no-graphs",
        "--no-truncate",
        "--max-batch-tokens",
    ];
    for command in ["embed", "fill-mask", "classify", "rerank", "colbert"] {
        let listed = options(command);
        for option in engine {
            assert!(has(&listed, option), "{command} lacks {option}: {listed:?}");
        }
    }
    let info = options("info");
    for option in ["--model", "--device"] {
        assert!(has(&info, option), "info lacks {option}: {info:?}");
    }
    for option in [
        "--dtype",
        "--no-graphs",
        "--no-truncate",
        "--max-batch-tokens",
        "--query",
        "--top-k",
    ] {
        assert!(
            !has(&info, option),
            "info lists {option}, which it does not use: {info:?}"
        );
    }
    for command in ["fill-mask", "classify", "rerank", "colbert", "info"] {
        assert!(!has(&options(command), "--output"), "{command} lists --output");
    }
    assert!(!has(&options("classify"), "--top-k"));
}

/// Many stdin lines of varied lengths, with no repeats.
fn many_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("line {i}: {}", "word ".repeat(i % 7)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn long_inputs_run_in_chunks_with_the_same_output_and_no_progress_bar_on_a_pipe() {
    let d = fixture("st_mean_normalize_prompts");
    let d = d.to_str().unwrap();
    let texts = many_lines(300);
    // --max-batch-tokens 16: chunks of a few texts (many chunks); the default: one chunk.
    let small = ["embed", "--model", d, "--max-batch-tokens", "16"];
    let out = run(&small, Some(texts.as_bytes()));
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "stderr is not a terminal: no progress bar, nothing at all: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chunked: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let whole = json_lines(&["embed", "--model", d], Some(texts.as_bytes()));
    assert_eq!(chunked.len(), 300);
    assert_eq!(whole.len(), 300);
    for (i, (a, b)) in chunked.iter().zip(&whole).enumerate() {
        let (a, b) = (floats(&a["embedding"]), floats(&b["embedding"]));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(a.len() == b.len() && diff <= 1e-6, "text {i}: differs by {diff}");
    }
    // A failing input in a later chunk: its error line in its place, as from one call.
    let mut bad = texts.clone().into_bytes();
    bad.extend_from_slice(b"\n\xff\nthe last line");
    let lines = expect_input_errors(&small, Some(&bad), 302, &[(300, "stdin line 301 is not valid UTF-8")]);
    assert_eq!(lines[..300], chunked[..]);
    let mlm = fixture("mlm_l3_v5_f32");
    let masks: String = (0..100)
        .map(|i| {
            if i == 77 {
                "no mask".to_string()
            } else {
                format!("text {i} [MASK]")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    expect_input_errors(
        &[
            "fill-mask",
            "--model",
            mlm.to_str().unwrap(),
            "--max-batch-tokens",
            "16",
        ],
        Some(masks.as_bytes()),
        100,
        &[(77, "has no [MASK]")],
    );
}

/// A .npy file's header fields and f32 data, checked against the format (version 1.0,
/// little-endian f32, C order, data at a multiple of 64 bytes).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data_start = 10 + header_len;
    assert_eq!(data_start % 64, 0, "the data starts at a multiple of 64 bytes");
    let header = std::str::from_utf8(&bytes[10..data_start]).unwrap();
    assert!(header.ends_with('\n'));
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_at = header.find("'shape': (").unwrap() + "'shape': (".len();
    let shape: Vec<usize> = header[shape_at..header[shape_at..].find(')').unwrap() + shape_at]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[data_start..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "data for the whole shape, no more"
    );
    (shape, data)
}

/// The JSON embeddings of texts, as rows.
fn json_embeddings(args: &[&str], stdin: &[u8]) -> Vec<Vec<f32>> {
    json_lines(args, Some(stdin))
        .iter()
        .map(|l| floats(&l["embedding"]))
        .collect()
}

fn max_difference(rows: &[Vec<f32>], flat: &[f32]) -> f32 {
    assert_eq!(rows.concat().len(), flat.len());
    rows.concat()
        .iter()
        .zip(flat)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

#[test]
fn embed_npy_holds_the_json_embeddings() {
    let d = fixture("st_mean_normalize_prompts");
    let d = d.to_str().unwrap();
    let texts = many_lines(40);
    let tmp = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--dim", "8"], &["--max-batch-tokens", "16"]] {
        let npy = tmp.path().join("out.npy");
        let mut args = vec!["embed", "--model", d, "--output", "npy", npy.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args, Some(texts.as_bytes()));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{args:?}: the output is the file"
        );
        let (shape, data) = read_npy(&npy);
        let mut json_args = vec!["embed", "--model", d];
        json_args.extend_from_slice(extra);
        let want = json_embeddings(&json_args, texts.as_bytes());
        assert_eq!(shape, [want.len(), want[0].len()], "{args:?}");
        assert!(max_difference(&want, &data) <= 1e-6, "{args:?}");
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.npy"], "no temporary file left beside it");
    }
}

#[test]
fn embed_npy_fails_whole_naming_the_input_and_leaves_no_file() {
    let d = fixture("st_cls_nonorm");
    let d = d.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("out.npy");
    let npy_arg = npy.to_str().unwrap();
    let left = || -> Vec<_> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    expect_error(
        &["embed", "--model", d, "--output", "npy", npy_arg],
        Some(b"ok\n\xff\xfe bad\nok\n"),
        "text 2 of 3 failed, so",
    );
    expect_error(
        &["embed", "--model", d, "--output", "npy", npy_arg],
        Some(b"ok\n\xff\xfe bad\nok\n"),
        "stdin line 2 is not valid UTF-8",
    );
    assert!(left().is_empty(), "nothing written: {:?}", left());
    // A file that is there stays as it was; a text that fails inside the model, after earlier
    // chunks were written, removes the temporary file.
    std::fs::write(&npy, b"earlier contents").unwrap();
    let long = "word ".repeat(9000);
    let mut stdin = many_lines(50).into_bytes();
    stdin.extend_from_slice(format!("\n{long}\nshort").as_bytes());
    expect_error(
        &[
            "embed",
            "--model",
            d,
            "--no-truncate",
            "--max-batch-tokens",
            "16",
            "--output",
            "npy",
            npy_arg,
        ],
        Some(&stdin),
        "text 51 of 52 failed, so",
    );
    assert_eq!(std::fs::read(&npy).unwrap(), b"earlier contents");
    assert_eq!(left(), ["out.npy"]);
    // An option the model refuses fails before any file is made.
    expect_error(
        &["embed", "--model", d, "--output", "npy", npy_arg, "--dim", "0", "x"],
        None,
        "dim 0",
    );
    assert_eq!(left(), ["out.npy"]);
    // An option refused once the file is begun (the prompt is looked up with the first chunk).
    expect_error(
        &[
            "embed",
            "--model",
            d,
            "--output",
            "npy",
            npy_arg,
            "--prompt-name",
            "nope",
            "x",
        ],
        None,
        "unknown prompt name",
    );
    assert_eq!(left(), ["out.npy"]);
    // A place where no file can be made: the error names the file asked for.
    let nowhere = tmp.path().join("no-such-dir/out.npy");
    let nowhere = nowhere.to_str().unwrap();
    expect_error(&["embed", "--model", d, "--output", "npy", nowhere, "x"], None, nowhere);
    // A file format other than npy is refused, naming it, before anything is written.
    expect_error(
        &["embed", "--model", d, "--output", "csv", npy_arg, "x"],
        None,
        "--output csv: the file format must be npy",
    );
    assert_eq!(left(), ["out.npy"]);
}

#[test]
#[ignore = "needs the Python reference environment (numpy); scripts/test.sh runs it"]
fn embed_npy_reads_back_with_numpy() {
    let d = fixture("st_mean_normalize_prompts");
    let d = d.to_str().unwrap();
    let texts = many_lines(25);
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("embeddings.npy");
    let out = run(
        &["embed", "--model", d, "--output", "npy", npy.to_str().unwrap()],
        Some(texts.as_bytes()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read_back = Command::new(common::reference_python())
        .args([
            "-c",
            "import json, sys, numpy\n\
             a = numpy.load(sys.argv[1])\n\
             print(json.dumps({'dtype': a.dtype.str, 'shape': list(a.shape),\n\
                               'c_order': bool(a.flags.c_contiguous), 'data': a.ravel().tolist()}))",
        ])
        .arg(&npy)
        .output()
        .expect("run the reference Python");
    assert!(
        read_back.status.success(),
        "{}",
        String::from_utf8_lossy(&read_back.stderr)
    );
    let array: Value = serde_json::from_slice(&read_back.stdout).unwrap();
    let want = json_embeddings(&["embed", "--model", d], texts.as_bytes());
    assert_eq!(array["dtype"], "<f4");
    assert_eq!(array["c_order"], true);
    assert_eq!(array["shape"], serde_json::json!([want.len(), want[0].len()]));
    assert!(max_difference(&want, &floats(&array["data"])) <= 1e-6);
}

/// `--jsonl`: stdin objects with ids (a text with a newline is one input); every output line
/// carries its input's id, bad lines are their own errors.
#[test]
fn jsonl_input_keeps_ids_and_newlines() {
    let m = fixture("st_mean_normalize_prompts");
    let m = m.to_str().unwrap();
    let stdin = b"{\"id\": 7, \"text\": \"first line\\nsecond line\"}\n{\"id\": \"b\", \"text\": \"plain\"}\nnot json\n{\"id\": 3}\n";
    let out = run(&["embed", "--model", m, "--device", "cpu", "--jsonl"], Some(stdin));
    assert_eq!(out.status.code(), Some(1), "two bad lines");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        (lines[0]["id"].clone(), lines[1]["id"].clone()),
        (Value::from(7), Value::from("b"))
    );
    assert!(lines[2]["error"].as_str().unwrap().contains("line 3"), "{}", lines[2]);
    assert!(lines[3]["error"].as_str().unwrap().contains("\"text\""), "{}", lines[3]);
    assert_eq!(lines[3]["id"], Value::from(3));
    let want = json_lines(
        &[
            "embed",
            "--model",
            m,
            "--device",
            "cpu",
            "first line\nsecond line",
            "plain",
        ],
        None,
    );
    assert_eq!(lines[0]["embedding"], want[0]["embedding"]);
    assert_eq!(lines[1]["embedding"], want[1]["embedding"]);
    expect_error(
        &["embed", "--model", m, "--jsonl", "an argument"],
        None,
        "--jsonl reads stdin",
    );
}

/// `embed --precision`: sentence-transformers' quantize_embeddings over the command's texts.
#[test]
fn embed_precision_quantizes_the_whole_input() {
    use modernbert::quantize::{quantize, Precision, Quantized};
    let m = fixture("st_mean_normalize_prompts");
    let m = m.to_str().unwrap();
    let texts = ["a cat", "a dog", "stock markets fell", "rain"];
    let floats: Vec<f32> = json_lines(
        &[&["embed", "--model", m, "--device", "cpu"][..], &texts[..]].concat(),
        None,
    )
    .iter()
    .flat_map(|l| {
        l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect::<Vec<_>>()
    })
    .collect();
    let dim = floats.len() / texts.len();
    for name in ["int8", "uint8", "binary", "ubinary"] {
        let p = Precision::parse(name).unwrap();
        let want: Vec<i64> = match quantize(floats.clone(), dim, p, None).unwrap() {
            Quantized::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Quantized::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Quantized::F32(_) => unreachable!(),
        };
        let got: Vec<i64> = json_lines(
            &[
                &["embed", "--model", m, "--device", "cpu", "--precision", name][..],
                &texts[..],
            ]
            .concat(),
            None,
        )
        .iter()
        .flat_map(|l| {
            l["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
        assert_eq!(got, want, "{name}");
    }
    expect_error(&["embed", "--model", m, "--precision", "int4", "a"], None, "int4");
    expect_error(
        &[
            "embed",
            "--model",
            m,
            "--precision",
            "int8",
            "--output",
            "npy",
            "/dev/null",
            "a",
        ],
        None,
        "float32",
    );
}

/// `token-classify`: one label per token, as the Rust API gives it.
#[test]
fn token_classify_prints_a_label_per_token() {
    let m = fixture("tokcls_l2_v5_f32");
    let lines = json_lines(
        &[
            "token-classify",
            "--model",
            m.to_str().unwrap(),
            "--device",
            "cpu",
            "John lives in Paris",
            "x",
        ],
        None,
    );
    let engine = modernbert::engine::Engine::new(&m, &Default::default()).unwrap();
    let want = engine.token_classify(&["John lives in Paris", "x"]).unwrap();
    for (l, w) in lines.iter().zip(&want) {
        let tokens = l["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), w.len());
        for (t, w) in tokens.iter().zip(w) {
            assert_eq!(
                (t["id"].as_u64().unwrap() as u32, t["label"].as_str().unwrap()),
                (w.id, w.label.as_str())
            );
            assert!((t["score"].as_f64().unwrap() as f32 - w.score).abs() <= 1e-6);
        }
    }
    expect_error(
        &[
            "token-classify",
            "--model",
            fixture("st_mean_normalize_prompts").to_str().unwrap(),
            "a",
        ],
        None,
        "not a token-classification checkpoint",
    );
}
