//! The CPU reference executor against Hugging Face transformers, on the committed fixtures made by
//! `scripts/make_fixtures.py` (random checkpoints saved with `save_pretrained`, their inputs and
//! outputs). Real tokens only. Bound: max |Δ| ≤ 1e-4 · max |ref| per output tensor — f32 math on
//! both sides, differing only in summation order and libm (≈1e-6 observed); 1e-4 leaves room for
//! the deepest fixture while any real mistake (a wrong window, theta, norm or GELU) is ≥ 1e-2.
//! Logits must also agree on every row's argmax.

mod common;

use common::{all_fixtures, argmax_rows, relative_max_error, Case, Fixture};
use modernbert::batch::PackedBatch;
use modernbert::config::ModelConfig;
use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::model::Checkpoint;
use modernbert::reference::CpuExecutor;
use modernbert::weights::TensorStore;

const TOLERANCE: f64 = 1e-4;

struct Report {
    fixture: String,
    worst: f64,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, what: &str, got: &[f32], want: &[f32]) {
        if got.len() != want.len() {
            self.failures
                .push(format!("{what}: {} values, expected {}", got.len(), want.len()));
            return;
        }
        let err = relative_max_error(got, want);
        self.worst = self.worst.max(err);
        if !(err <= TOLERANCE) {
            self.failures
                .push(format!("{what}: relative max error {err:.3e} > {TOLERANCE:.0e}"));
        }
    }

    fn check_argmax(&mut self, what: &str, got: &[f32], want: &[f32], width: usize) {
        if got.len() == want.len() && argmax_rows(got, width) != argmax_rows(want, width) {
            self.failures.push(format!("{what}: argmax differs"));
        }
    }
}

fn flatten(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

fn check_case(fx: &Fixture, case: &Case, exec: &CpuExecutor, pipeline: Option<&Engine>, report: &mut Report) {
    let what = |kind: &str| format!("{}/{}", case.name, kind);
    // Tokenisation: our ids must be the ids transformers' tokenizer produced.
    if let (Some(p), Some(texts)) = (pipeline, &case.texts) {
        let ids = if case.is_query.is_some() {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let (ids, keys) = p.colbert_tokens(&refs, case.is_query.unwrap()).unwrap();
            if let Some(mask) = &case.attention_mask {
                let want: Vec<usize> = mask.iter().map(|m| m.iter().filter(|&&v| v == 1).count()).collect();
                if keys != want {
                    report
                        .failures
                        .push(format!("{}: key counts {keys:?}, expected {want:?}", what("tokens")));
                }
            }
            ids
        } else {
            let prompt = case
                .prompt_name
                .as_ref()
                .map(|n| p.layout.prompts[n].clone())
                .unwrap_or_default();
            let full: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            p.tokenizer().unwrap().encode_batch(&refs).unwrap()
        };
        if ids != case.input_ids {
            report
                .failures
                .push(format!("{}: token ids differ from transformers'", what("tokens")));
        }
    }
    if let (Some(p), Some(pairs)) = (pipeline, &case.pairs) {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        if p.tokenizer().unwrap().encode_pairs(&refs).unwrap() != case.input_ids {
            report
                .failures
                .push(format!("{}: pair token ids differ", what("tokens")));
        }
    }

    let key_lens: Vec<usize> = match &case.attention_mask {
        Some(mask) => mask.iter().map(|m| m.iter().filter(|&&v| v == 1).count()).collect(),
        None => case.input_ids.iter().map(Vec::len).collect(),
    };
    let batch = PackedBatch::with_key_lens(&case.input_ids, &key_lens).unwrap();
    let hidden = exec.forward(&batch).unwrap();

    if let Some((want, _)) = fx.output(case, "last_hidden_state") {
        report.check(&what("last_hidden_state"), &hidden, &want);
    }
    if let Some((want, shape)) = fx.output(case, "mlm_logits") {
        let p = pipeline.expect("MLM fixture has a tokenizer");
        let rows: Vec<usize> = (0..batch.tokens()).collect();
        let got = exec.mlm_logits(p.mlm.as_ref().expect("MLM head"), &hidden, &rows);
        report.check(&what("mlm_logits"), &got, &want);
        report.check_argmax(&what("mlm_logits"), &got, &want, shape[1]);
    }
    if let Some((want, shape)) = fx.output(case, "seq_logits") {
        let p = pipeline.expect("classifier fixture has a tokenizer");
        let got = flatten(&p.sequence_logits(&case.input_ids).unwrap());
        report.check(&what("seq_logits"), &got, &want);
        report.check_argmax(&what("seq_logits"), &got, &want, shape[1]);
    }
    if let Some((want, shape)) = fx.output(case, "token_logits") {
        let p = pipeline.expect("token classifier fixture has a tokenizer");
        let cls = p.classifier.as_ref().expect("classifier head");
        let got = exec.token_logits(cls, &hidden, batch.tokens());
        report.check(&what("token_logits"), &got, &want);
        report.check_argmax(&what("token_logits"), &got, &want, shape[1]);
    }
    if let Some((want, _)) = fx.output(case, "embedding") {
        let p = pipeline.expect("sentence-transformers fixture has a tokenizer");
        let texts: Vec<&str> = case.texts.as_ref().expect("texts").iter().map(String::as_str).collect();
        // An explicit empty prompt when the case used none (the directory may have a default).
        let options = EmbedOptions {
            prompt_name: case.prompt_name.clone(),
            prompt: if case.prompt_name.is_none() {
                Some(String::new())
            } else {
                None
            },
            ..Default::default()
        };
        let got = flatten(&p.embed(&texts, &options).unwrap());
        report.check(&what("embedding"), &got, &want);
    }
    if let Some((want, _)) = fx.output(case, "colbert") {
        let p = pipeline.expect("ColBERT fixture has a tokenizer");
        let texts: Vec<&str> = case.texts.as_ref().expect("texts").iter().map(String::as_str).collect();
        let vectors = p.colbert(&texts, case.is_query.unwrap_or(false)).unwrap();
        let counts: Vec<f32> = vectors.iter().map(|v| v.len() as f32).collect();
        let (want_counts, _) = fx.output(case, "colbert_counts").expect("colbert_counts");
        if counts != want_counts {
            report.failures.push(format!(
                "{}: vectors per text {counts:?}, expected {want_counts:?}",
                what("colbert")
            ));
        } else {
            let got: Vec<f32> = vectors.iter().flatten().flatten().copied().collect();
            report.check(&what("colbert"), &got, &want);
        }
    }
}

#[test]
fn cpu_reference_matches_transformers_on_every_fixture() {
    let mut reports = Vec::new();
    for fx in all_fixtures() {
        let config = ModelConfig::from_file(&fx.dir.join("config.json")).unwrap();
        let store = TensorStore::open_dir(&fx.dir).unwrap();
        let weights = Checkpoint::new(&store, &config).unwrap().backbone().unwrap();
        let exec = CpuExecutor::new(config, weights);
        let pipeline = fx.dir.join("tokenizer.json").is_file().then(|| {
            Engine::new(
                &fx.dir,
                &EngineOptions {
                    device: DeviceChoice::Cpu,
                    ..Default::default()
                },
            )
            .unwrap()
        });
        let mut report = Report {
            fixture: fx.name.clone(),
            worst: 0.0,
            failures: Vec::new(),
        };
        for case in &fx.expected.cases {
            check_case(&fx, case, &exec, pipeline.as_ref(), &mut report);
        }
        reports.push(report);
    }
    let mut failed = Vec::new();
    for r in &reports {
        println!("{:<40} worst relative error {:.3e}", r.fixture, r.worst);
        for f in &r.failures {
            failed.push(format!("{}: {f}", r.fixture));
        }
    }
    assert!(failed.is_empty(), "parity failures:\n{}", failed.join("\n"));
}
