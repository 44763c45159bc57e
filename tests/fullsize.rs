//! One full-size check: a random ModernBERT-base (22 layers × 768, vocab 50368, real window and
//! thetas) built by transformers when the test runs (scripts/make_fullsize.py, cached under
//! target/), two sequences of 512 and 300 tokens, compared with the CPU reference.
//!
//! Heavy (a 600 MB checkpoint and the Python reference environment), so it is `#[ignore]`d for a
//! plain `cargo test`; `scripts/test.sh` (the README's test command, run by CI) includes it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{relative_max_error, Fixture};
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::model::Checkpoint;
use modernbert::reference::CpuExecutor;
use modernbert::weights::TensorStore;

fn reference_python() -> PathBuf {
    if let Ok(p) = std::env::var("MODERNBERT_REF_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = common::repo_root().join(".venv-ref/bin/python");
    assert!(
        venv.is_file(),
        "no Python reference environment: run `bash scripts/reference-env.sh` (or set MODERNBERT_REF_PYTHON)"
    );
    venv
}

#[test]
#[ignore = "heavy: builds a 600 MB ModernBERT-base with transformers; scripts/test.sh runs it"]
fn base_shaped_model_at_512_tokens_matches_transformers() {
    let dir = common::repo_root().join("target/fullsize-base");
    let status = Command::new(reference_python())
        .arg(common::repo_root().join("scripts/make_fullsize.py"))
        .arg("--out")
        .arg(&dir)
        .status()
        .expect("run scripts/make_fullsize.py");
    assert!(status.success(), "make_fullsize.py failed");

    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(
        (config.num_hidden_layers, config.hidden_size, config.vocab_size),
        (22, 768, 50368)
    );
    let store = TensorStore::open_dir(&dir).unwrap();
    let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
    let exec = CpuExecutor::new(config, weights);

    let fx = Fixture::load(&dir);
    for case in &fx.expected.cases {
        let batch = PackedBatch::from_sequences(&case.input_ids).unwrap();
        assert!(batch.max_seqlen() >= 512);
        let start = std::time::Instant::now();
        let hidden = exec.forward(&batch).unwrap();
        let (want, _) = fx.output(case, "last_hidden_state").unwrap();
        let err = relative_max_error(&hidden, &want);
        println!(
            "full-size {}: {} tokens in {:.2} s, worst relative error {err:.3e}",
            case.name,
            batch.tokens(),
            start.elapsed().as_secs_f64()
        );
        assert!(err <= 1e-4, "relative max error {err:.3e} > 1e-4");
    }
}
