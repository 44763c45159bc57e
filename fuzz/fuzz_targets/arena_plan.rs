//! Arena and weight planning from (config.json, options): any config text with any capacity
//! (max_batch_tokens, max_sequences) gives an error or a plan whose buffers lie inside its total,
//! in order and 256-byte aligned — never a panic, never a wrapped size.
//! Input: 8 bytes of max_tokens, 4 of max_sequences (little endian), then config.json text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use modernbert::config::ModelConfig;
use modernbert::gpu::arena::ArenaPlan;
use modernbert::gpu::weights::DeviceWeights;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let max_tokens = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let max_sequences = u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
    let Ok(text) = std::str::from_utf8(&data[12..]) else { return };
    let Ok(config) = ModelConfig::from_json_str(text, Path::new("config.json")) else { return };
    let _ = DeviceWeights::planned_bytes(&config);
    let plan = ArenaPlan::new(&config, max_tokens, max_sequences);
    modernbert_fuzz::report("plan", &plan);
    let Ok(p) = plan else { return };
    let (h, i) = (config.hidden_size, config.intermediate_size);
    // (offset, bytes) of every buffer, in layout order.
    let buffers = [
        (p.inputs_at, p.inputs.bytes),
        (p.x, max_tokens * h * 2),
        (p.normed, max_tokens * h * 2),
        (p.qkv, max_tokens * 3 * h * 2),
        (p.attn, max_tokens * h * 2),
        (p.proj, max_tokens * h * 2),
        (p.wide, max_tokens * 2 * i * 2),
        (p.gated, max_tokens * i * 2),
        (p.last_hidden, max_tokens * h * 2),
        (p.pooled, max_sequences * h * 4),
    ];
    let mut end = 0;
    for (at, bytes) in buffers {
        assert!(at % 256 == 0 && at >= end, "buffer at {at} overlaps the previous one (ends {end})");
        end = at + bytes; // cannot overflow: the plan's checked total bounds it
        assert!(end <= p.bytes, "buffer [{at}, {end}) past the plan's {} bytes", p.bytes);
    }
    assert!(p.inputs.key_lens + 4 * max_sequences <= p.inputs.bytes);
});
