//! Shared helpers of the integration tests: the committed transformers fixtures and error metrics.
#![allow(dead_code)]

pub mod counting;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use modernbert::engine::DeviceChoice;
use modernbert::kernels::device::Device;
use modernbert::weights::TensorStore;
use serde::Deserialize;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the reference environment (transformers, numpy): `MODERNBERT_REF_PYTHON`, else
/// the repository's `.venv-ref` (scripts/reference-env.sh).
pub fn reference_python() -> PathBuf {
    if let Ok(p) = std::env::var("MODERNBERT_REF_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv-ref/bin/python");
    assert!(
        venv.is_file(),
        "no Python reference environment: run `bash scripts/reference-env.sh` (or set MODERNBERT_REF_PYTHON)"
    );
    venv
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// A writable copy of a fixture directory.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join(name), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[derive(Deserialize, Debug)]
pub struct Expected {
    pub description: String,
    pub task: String,
    pub cases: Vec<Case>,
}

#[derive(Deserialize, Debug)]
pub struct Case {
    pub name: String,
    pub input_ids: Vec<Vec<u32>>,
    #[serde(default)]
    pub texts: Option<Vec<String>>,
    #[serde(default)]
    pub pairs: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub is_query: Option<bool>,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub attention_mask: Option<Vec<Vec<u32>>>,
    pub outputs: HashMap<String, String>,
}

pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
    pub expected: Expected,
    pub tensors: TensorStore,
}

impl Fixture {
    pub fn load(dir: &Path) -> Fixture {
        let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
        let expected: Expected = serde_json::from_str(&text).expect("expected.json schema");
        let tensors = TensorStore::open_files(&[dir.join("expected.safetensors")]).expect("expected.safetensors");
        Fixture {
            name: dir.file_name().unwrap().to_string_lossy().into(),
            dir: dir.to_path_buf(),
            expected,
            tensors,
        }
    }

    /// An expected output tensor (f32) and its shape.
    pub fn output(&self, case: &Case, kind: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        let name = case.outputs.get(kind)?;
        let shape = self
            .tensors
            .shape(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name))
            .to_vec();
        Some((self.tensors.f32(name, &shape).unwrap(), shape))
    }
}

pub fn all_fixtures() -> Vec<Fixture> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures found");
    dirs.iter().map(|d| Fixture::load(d)).collect()
}

/// `max |got − want| / max |want|` — the fixtures' error measure (relative to the output's scale,
/// so it is meaningful for tensors with entries near zero).
pub fn relative_max_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "length mismatch: got {} want {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    let err = got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
        let d = (g as f64 - w as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    err / scale
}

/// Row-wise argmax.
pub fn argmax_rows(x: &[f32], width: usize) -> Vec<usize> {
    x.chunks(width)
        .map(|r| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
        .collect()
}

/// The device under test: `MODERNBERT_TEST_DEVICE` (the emulator unless it says `cuda`).
pub fn test_device() -> Arc<dyn Device> {
    match modernbert::kernels::from_env() {
        Ok(d) => Arc::from(d),
        Err(e) => panic!("MODERNBERT_TEST_DEVICE: {e}"),
    }
}

/// The engine's device choice matching [`test_device`].
pub fn test_device_choice() -> DeviceChoice {
    if test_device().as_emulator().is_some() {
        DeviceChoice::EMULATED
    } else {
        // `cuda` or `cuda:N`, as test_device opened it.
        let v = std::env::var("MODERNBERT_TEST_DEVICE").unwrap_or_default();
        DeviceChoice::parse(&v).unwrap_or_else(|e| panic!("MODERNBERT_TEST_DEVICE: {e}"))
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// `n` token ids below `vocab` from a small LCG (deterministic per seed).
pub fn random_ids(n: usize, seed: u64, vocab: u32) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32 % vocab
        })
        .collect()
}

/// A packed batch of random sequences of these lengths (sequence j from seed `seed + j`).
pub fn random_batch(lens: &[usize], seed: u64, vocab: u32) -> modernbert::batch::PackedBatch {
    let seqs: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(j, &n)| random_ids(n, seed + j as u64, vocab))
        .collect();
    modernbert::batch::PackedBatch::from_sequences(&seqs).unwrap()
}

/// The index of the first value whose bits differ between `got` and `want`.
pub fn first_bit_difference(got: &[f32], want: &[f32]) -> Option<usize> {
    assert_eq!(got.len(), want.len(), "outputs of different lengths");
    got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits())
}

/// An engine on `device` (activations in `dtype` on a GPU) with batches of at most 64 tokens
/// (several batches in small tests).
pub fn small_batch_engine(
    dir: &Path,
    device: DeviceChoice,
    dtype: modernbert::kernels::Dtype,
) -> modernbert::engine::Engine {
    modernbert::engine::Engine::new(
        dir,
        &modernbert::engine::EngineOptions {
            device,
            dtype,
            max_batch_tokens: 64,
            ..Default::default()
        },
    )
    .unwrap()
}
