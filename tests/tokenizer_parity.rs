//! Rust tokenisation equals Python `tokenizers` on ModernBERT's real vocabulary layout
//! (tests/data/tokenizer-parity.json, made by scripts/make_tokenizer_parity.py: unicode, code,
//! whitespace runs, `[MASK]` with its absorbed space, special tokens inline, pairs), and the
//! over-long policies behave as documented.

mod common;

use modernbert::tokenize::{OverlongPolicy, TextTokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct ParityCase {
    text: String,
    #[serde(default)]
    pair: Option<String>,
    ids: Vec<u32>,
}

fn tokenizer(max_len: usize, policy: OverlongPolicy) -> TextTokenizer {
    let path = common::repo_root().join("tests/data/modernbert-tokenizer/tokenizer.json");
    TextTokenizer::from_file(&path, max_len, policy).unwrap()
}

#[test]
fn ids_equal_python_tokenizers_on_every_line() {
    let text = std::fs::read_to_string(common::repo_root().join("tests/data/tokenizer-parity.json")).unwrap();
    let cases: Vec<ParityCase> = serde_json::from_str(&text).unwrap();
    assert!(
        cases.len() >= 300,
        "expected a few hundred lines, found {}",
        cases.len()
    );
    let tok = tokenizer(8192, OverlongPolicy::Truncate);
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for case in &cases {
        // Empty texts are compared too: [CLS] [SEP], as Python's tokenizers gives.
        compared += 1;
        let got = match &case.pair {
            None => tok.encode_batch(&[case.text.as_str()]),
            Some(p) => tok.encode_pairs(&[(case.text.as_str(), p.as_str())]),
        }
        .unwrap();
        if got[0] != case.ids {
            mismatches.push(format!(
                "{:?} / {:?}: got {:?}, want {:?}",
                case.text, case.pair, got[0], case.ids
            ));
        }
    }
    println!("{compared} lines compared, {} mismatches", mismatches.len());
    assert!(compared >= 300);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn batches_keep_order_and_mask_absorbs_its_space() {
    let tok = tokenizer(8192, OverlongPolicy::Truncate);
    let ids = tok.encode_batch(&["Paris is the [MASK] of France.", "a"]).unwrap();
    assert_eq!(ids[0], vec![50281, 36062, 310, 253, 50284, 273, 6181, 15, 50282]);
    assert_eq!(ids[1].first(), Some(&50281));
    assert_eq!(ids[1].last(), Some(&50282));
    assert_eq!(tok.decode_token(36062), "Paris");
}

#[test]
fn overlong_texts_truncate_by_default_and_can_be_refused() {
    let long = "word ".repeat(10_000);
    let tok = tokenizer(8192, OverlongPolicy::Truncate);
    let ids = tok.encode_batch(&[long.as_str()]).unwrap();
    assert_eq!(ids[0].len(), 8192);
    assert_eq!(
        (ids[0][0], ids[0][8191]),
        (50281, 50282),
        "special tokens survive truncation"
    );
    let strict = tokenizer(8192, OverlongPolicy::Refuse);
    let err = strict.encode_batch(&["short", long.as_str()]).unwrap_err().to_string();
    assert!(
        err.contains("text 2 has") && err.contains("more than the maximum 8192"),
        "{err}"
    );
    // pairs truncate longest-first within the maximum
    let small = tokenizer(16, OverlongPolicy::Truncate);
    let pair = small.encode_pairs(&[("a b c d e f g h i j", long.as_str())]).unwrap();
    assert_eq!(pair[0].len(), 16);
}

#[test]
fn empty_inputs() {
    let tok = tokenizer(8192, OverlongPolicy::Truncate);
    assert!(tok.encode_batch(&[]).unwrap_err().to_string().contains("no texts"));
    // An empty text is [CLS] [SEP]; an empty second text of a pair adds only its [SEP].
    let (cls, sep) = (tok.token_to_id("[CLS]").unwrap(), tok.token_to_id("[SEP]").unwrap());
    assert_eq!(tok.encode_batch(&["ok", ""]).unwrap()[1], vec![cls, sep]);
    let pair = tok.encode_pairs(&[("q", "")]).unwrap().remove(0);
    assert_eq!((pair[0], &pair[pair.len() - 2..]), (cls, &[sep, sep][..]));
}
