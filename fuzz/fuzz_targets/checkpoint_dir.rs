//! A whole checkpoint directory: `config.json` + `model.safetensors` through
//! `ModelConfig::from_file`, `TensorStore::open_dir`, `Checkpoint::new` and every weight getter
//! (backbone, MLM head, classifier head). Only `Err`s, never a panic.
//!
//! Input layout: `u16` little-endian N, then N bytes of config.json, then the safetensors file
//! (the seed corpus is written by fuzz/make_corpus.py in this layout).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modernbert::config::ModelConfig;
use modernbert::model::Checkpoint;
use modernbert::weights::TensorStore;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (config_bytes, weights_bytes) = rest.split_at(n.min(rest.len()));
    let dir = modernbert_fuzz::scratch_dir();
    let config_path = modernbert_fuzz::write_file(dir, "config.json", config_bytes);
    modernbert_fuzz::write_file(dir, "model.safetensors", weights_bytes);

    let config = ModelConfig::from_file(&config_path);
    modernbert_fuzz::report("config", &config);
    let Ok(config) = config else { return };
    modernbert_fuzz::check_config(&config);
    let store = TensorStore::open_dir(dir);
    modernbert_fuzz::report("open_dir", &store);
    let Ok(store) = store else { return };
    let checkpoint = Checkpoint::new(&store, &config);
    modernbert_fuzz::report("checkpoint", &checkpoint);
    let Ok(checkpoint) = checkpoint else { return };
    let backbone = checkpoint.backbone();
    modernbert_fuzz::report("backbone", &backbone);
    if let Ok(backbone) = backbone {
        assert_eq!(backbone.layers.len(), config.num_hidden_layers);
        assert!(backbone.layers[0].attn_norm.is_none());
        assert_eq!(backbone.tok_embeddings.len(), config.vocab_size * config.hidden_size);
        let _ = backbone.parameter_count();
    }
    let _ = checkpoint.has_prediction_head();
    modernbert_fuzz::report("masked_lm_head", &checkpoint.masked_lm_head());
    modernbert_fuzz::report("classifier_head", &checkpoint.classifier_head());
});
