//! Arena and weight planning from (config.json, options): any config text with any capacity
//! (max_batch_tokens, max_sequences) gives an error or a plan whose buffers lie inside its total,
//! in order and 256-byte aligned — never a panic, never a wrapped size.
//! Input: 8 bytes of max_tokens, 4 of max_sequences, 1 of head flags (bit 0 an MLM head, bit 1
//! a Dense projection, bit 2 ColBERT), 4 of the Dense width (little endian), then config.json text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use modernbert::config::ModelConfig;
use modernbert::gpu::arena::ArenaPlan;
use modernbert::gpu::heads::HeadShapes;
use modernbert::gpu::weights::DeviceWeights;
use modernbert::gpu::GpuPath;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let max_tokens = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let max_sequences = u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
    let flags = data[12];
    let dense_width = u32::from_le_bytes(data[13..17].try_into().unwrap()) as usize;
    let Ok(text) = std::str::from_utf8(&data[17..]) else {
        return;
    };
    let Ok(config) = ModelConfig::from_json_str(text, Path::new("config.json")) else {
        return;
    };
    for path in [GpuPath::Portable, GpuPath::Hopper] {
        let _ = DeviceWeights::planned_bytes(&config, path);
    }
    let heads = HeadShapes {
        mlm_vocab: (flags & 1 != 0).then_some(config.vocab_size),
        dense_out: (flags & 2 != 0).then_some(dense_width),
        colbert: flags & 6 == 6,
    };
    let plan = ArenaPlan::new(&config, max_tokens, max_sequences, heads);
    modernbert_fuzz::report("plan", &plan);
    let Ok(p) = plan else { return };
    // The capacity asked for, rounded up to its CUDA-graph bucket (a power of two, at least 16)
    // when that is at most the largest bucket; the buffers below are checked at the plan's own.
    assert!(p.max_tokens >= max_tokens && p.max_sequences >= max_sequences);
    assert!(
        (p.max_tokens, p.max_sequences) == (max_tokens, max_sequences)
            || (p.max_tokens <= max_tokens.max(16).next_power_of_two()
                && p.max_sequences <= max_sequences.next_power_of_two()
                && p.max_tokens <= modernbert::kernels::graph::MAX_GRAPH_TOKENS),
        "capacity ({max_tokens}, {max_sequences}) planned as ({}, {})",
        p.max_tokens,
        p.max_sequences
    );
    let (max_tokens, max_sequences) = (p.max_tokens, p.max_sequences);
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let (vocab, dense) = (heads.mlm_vocab.unwrap_or(0), heads.dense_out.unwrap_or(0));
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
        (p.pooled, max_sequences * h.max(dense) * 4),
        (p.head_rows, if p.mlm_rows > 0 { max_tokens * 4 } else { 0 }),
        (p.logits, p.mlm_rows * vocab * 2),
        (p.topk, p.topk_bytes),
        (p.projected, max_tokens * dense * 2),
        (p.projected_f32, if heads.colbert { max_tokens * dense * 4 } else { 0 }),
    ];
    assert!(p.mlm_rows <= max_tokens && (p.mlm_rows > 0) == (heads.mlm_vocab.is_some() && max_tokens > 0));
    assert!(
        p.mlm_rows == 0 || p.topk_bytes >= 8 * vocab,
        "one row of k = vocab picks fits"
    );
    let mut end = 0;
    for (at, bytes) in buffers {
        assert!(
            at % 256 == 0 && at >= end,
            "buffer at {at} overlaps the previous one (ends {end})"
        );
        end = at + bytes; // cannot overflow: the plan's checked total bounds it
        assert!(end <= p.bytes, "buffer [{at}, {end}) past the plan's {} bytes", p.bytes);
    }
    assert!(p.inputs.key_lens + 4 * max_sequences <= p.inputs.bytes);
});
