//! The text path of every command: arbitrary bytes as a text (invalid UTF-8 is the CLI's per-line
//! error, checked by tests/cli.rs), a maximum length and a policy. Bounded tokenisation must give
//! exactly the whole text's ids after truncation (a differential check against a tokenizer whose
//! maximum exceeds any input, which never cuts), or refuse an over-long text when truncation is off.
//! Input: 1 byte of max_len (2..=65), 1 byte of policy, then the text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use modernbert::tokenize::{OverlongPolicy, TextTokenizer};

fn tokenizer(max_len: usize, policy: OverlongPolicy) -> TextTokenizer {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/st_mean_normalize_prompts/tokenizer.json"
    );
    TextTokenizer::from_file(std::path::Path::new(path), max_len, policy).expect("fixture tokenizer")
}

fuzz_target!(|data: &[u8]| {
    static WHOLE: OnceLock<TextTokenizer> = OnceLock::new();
    static CUT: OnceLock<Vec<[TextTokenizer; 2]>> = OnceLock::new();
    if data.len() < 2 {
        return;
    }
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let max_len = 2 + data[0] as usize % 64;
    let refuse = data[1] % 2 == 1;
    let whole = WHOLE.get_or_init(|| tokenizer(1 << 30, OverlongPolicy::Truncate));
    let cut = CUT.get_or_init(|| {
        (2..66)
            .map(|m| {
                [
                    tokenizer(m, OverlongPolicy::Truncate),
                    tokenizer(m, OverlongPolicy::Refuse),
                ]
            })
            .collect()
    });
    let tok = &cut[max_len - 2][refuse as usize];
    let full = whole.encode_batch(&[text]).expect("the whole text tokenises").remove(0);
    let got = tok.encode_each(&[text]).expect("tokenises").remove(0);
    if full.len() > max_len {
        if refuse {
            assert!(got.is_err(), "over-long text ({} tokens) not refused", full.len());
            return;
        }
        let mut want = full[..max_len - 1].to_vec();
        want.push(*full.last().unwrap());
        assert_eq!(got.expect("truncated"), want, "max_len {max_len}");
    } else {
        assert_eq!(got.expect("fits"), full, "max_len {max_len}");
    }
});
