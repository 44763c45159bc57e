//! `ModelConfig::from_json_str` on arbitrary text: only `Err`s, never a panic; every accepted config
//! satisfies the invariants of `check_config`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use modernbert::config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = ModelConfig::from_json_str(text, Path::new("config.json"));
    modernbert_fuzz::report("config", &config);
    if let Ok(config) = config {
        modernbert_fuzz::check_config(&config);
    }
});
