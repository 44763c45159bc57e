//! Helpers shared by the fuzz targets: a per-process scratch directory for the files the loader
//! reads (safetensors is mmapped, so the input must be a real file), and the checks run on every
//! successfully loaded config.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use modernbert::config::{LayerKind, ModelConfig};

/// A directory private to this process: `$MODERNBERT_FUZZ_TMP` (set by scripts/fuzz.sh), else
/// `/dev/shm` when it exists (no disk traffic), else the system temp dir.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("MODERNBERT_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = PathBuf::from("/dev/shm");
                if shm.is_dir() {
                    shm
                } else {
                    std::env::temp_dir()
                }
            });
        let dir = base.join(format!("modernbert-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create fuzz scratch dir");
        dir
    })
}

/// Write `bytes` to `name` inside `dir` (replacing the previous input).
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fuzz input file");
    path
}

/// Invariants every config that `from_json_str` accepts must satisfy, and the accessors the
/// executor calls on it (none of them may panic).
pub fn check_config(c: &ModelConfig) {
    assert!(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0);
    assert!(c.head_dim() > 0 && c.head_dim() % 2 == 0);
    assert_eq!(c.layer_kinds.len(), c.num_hidden_layers);
    assert!(c.norm_eps > 0.0 && c.norm_eps.is_finite());
    assert!(c.global_rope_theta > 1.0 && c.global_rope_theta.is_finite());
    assert!(c.local_rope_theta > 1.0 && c.local_rope_theta.is_finite());
    let pattern = c.layer_pattern();
    assert_eq!(pattern.len(), c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let _ = c.window(l);
        let _ = c.rope_theta(l);
        assert_eq!(c.layer_kind(l) == LayerKind::Global, pattern.as_bytes()[l] == b'G');
    }
}

/// With `MODERNBERT_FUZZ_VERBOSE=1`, print how far an input got (to check the seed corpus:
/// `MODERNBERT_FUZZ_VERBOSE=1 cargo fuzz run <target> corpus/<target>/*` runs each file once).
pub fn report<T, E: std::fmt::Display>(stage: &str, r: &Result<T, E>) {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    if *VERBOSE.get_or_init(|| std::env::var_os("MODERNBERT_FUZZ_VERBOSE").is_some_and(|v| v == "1")) {
        match r {
            Ok(_) => eprintln!("[fuzz] {stage}: ok"),
            Err(e) => eprintln!("[fuzz] {stage}: error: {e}"),
        }
    }
}
