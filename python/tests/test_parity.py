"""modernbert's Python API against sentence-transformers on the committed fixtures.

Tolerances: on the CPU device the engine is exact f32, differing from torch only in the order of
its sums, so ≤ 1e-5 relative to the largest magnitude (the Rust parity tests' bound). The emulated
device runs the GPU code path in bf16 / fp16: the project's rule for it is a cosine ≥ 0.999 per
vector against the f32 reference (and identical argmax for classifiers)."""

import numpy as np
import pytest
from conftest import cross_encoder, fixture, st_model
from sentence_transformers.quantization import quantize_embeddings

import modernbert

TEXTS = [
    "ModernBERT is a bidirectional encoder.",
    "",
    "Ünïcödé text, emoji 🤖 and CJK 漢字 mixed in",
    "a longer text that runs past the sliding window of sixteen tokens so that local attention "
    "and global attention both matter for every position of it, repeated: " * 3,
    "short",
]


def rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)


def row_cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


ENCODE_CASES = [
    dict(),
    dict(prompt_name="query"),
    dict(prompt="search_document: "),
    dict(normalize_embeddings=True),
    dict(truncate_dim=16),
    dict(truncate_dim=8, normalize_embeddings=True),
]


@pytest.mark.parametrize("name", ["st_mean_normalize_prompts", "st_cls_nonorm"])
@pytest.mark.parametrize("kwargs", ENCODE_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_encode_matches_sentence_transformers_on_cpu(name, kwargs):
    ref = st_model(fixture(name)).encode(TEXTS, **kwargs)
    ours = modernbert.Model(fixture(name), device="cpu").encode(TEXTS, **kwargs)
    assert ours.dtype == np.float32
    assert rel(ours, ref) <= 1e-5


def test_query_document_similarity_and_single_text_match_sentence_transformers():
    path = fixture("st_mean_normalize_prompts")
    st, m = st_model(path), modernbert.Model(path, device="cpu")
    q, d = TEXTS[:2], TEXTS[2:]
    assert rel(m.encode_query(q), st.encode_query(q)) <= 1e-5
    assert rel(m.encode_document(d), st.encode_document(d)) <= 1e-5
    a, b = m.encode(q), m.encode(d)
    assert m.similarity_fn_name == st.similarity_fn_name == "cosine"
    assert rel(m.similarity(a, b), st.similarity(a, b).numpy()) <= 1e-5
    one = m.encode(TEXTS[0])
    assert one.shape == (st.get_sentence_embedding_dimension(),)
    assert rel(one, st.encode(TEXTS[0])) <= 1e-5
    assert m.get_sentence_embedding_dimension() == st.get_sentence_embedding_dimension()
    assert m.get_sentence_embedding_dimension(truncate_dim=8) == 8


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_every_precision_is_quantize_embeddings_bit_for_bit(precision):
    m = modernbert.Model(fixture("st_mean_normalize_prompts"), device="cpu")
    texts = TEXTS * 4
    floats = m.encode(texts)
    ours = m.encode(texts, precision=precision)
    ref = quantize_embeddings(floats, precision=precision)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.array_equal(ours, ref)
    # One text: every int8 range is empty (step 0); NumPy's NaN cast gives 0 and so does ours.
    one = m.encode(texts[:1], precision=precision)
    assert np.array_equal(one, quantize_embeddings(floats[:1], precision=precision))


def test_cross_encoder_predict_and_rank_match_sentence_transformers():
    path = fixture("seqcls_mean_crossenc_v5_bf16")
    ce, m = cross_encoder(path), modernbert.Model(path, device="cpu")
    query = "What is the capital of France?"
    docs = ["The capital of France is Paris.", "A quick brown fox jumps over the lazy dog.", "Paris", ""]
    pairs = [(query, d) for d in docs]
    ours, ref = m.predict(pairs), ce.predict(pairs)
    assert ours.shape == ref.shape == (4,)
    assert rel(ours, ref) <= 1e-5
    assert rel(m.predict(pairs[0]), ce.predict(pairs[0])) <= 1e-5
    r_ours = m.rank(query, docs, top_k=3, return_documents=True)
    r_ref = ce.rank(query, docs, top_k=3, return_documents=True)
    assert [r["corpus_id"] for r in r_ours] == [r["corpus_id"] for r in r_ref]
    assert [r["text"] for r in r_ours] == [r["text"] for r in r_ref]
    assert rel([r["score"] for r in r_ours], [r["score"] for r in r_ref]) <= 1e-5


def test_multi_label_predict_is_the_logits():
    path = fixture("seqcls_hd64_mean_f32")
    ce, m = cross_encoder(path), modernbert.Model(path, device="cpu")
    pairs = [("a question", "an answer"), ("first", TEXTS[3])]
    ours, ref = m.predict(pairs), ce.predict(pairs)
    assert ours.shape == ref.shape == (2, 4)
    assert rel(ours, ref) <= 1e-5
    assert rel(m.predict(pairs, apply_softmax=True), ce.predict(pairs, apply_softmax=True)) <= 1e-5


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_emulated_device_within_the_bf16_rule(st_hd64, dtype):
    ref = st_model(st_hd64).encode(TEXTS, prompt_name="query")
    m = modernbert.Model(st_hd64, device="emulated", dtype=dtype)
    assert "emulat" in m.device
    ours = m.encode(TEXTS, prompt_name="query")
    assert row_cosines(ours, ref).min() >= 0.999
    path = fixture("seqcls_hd64_mean_f32")
    pairs = [("a question", "an answer"), ("first", TEXTS[3]), (TEXTS[0], TEXTS[2])]
    logits_ref = cross_encoder(path).predict(pairs)
    logits = modernbert.Model(path, device="emulated", dtype=dtype).predict(pairs)
    assert row_cosines(logits, logits_ref).min() >= 0.999
    assert np.array_equal(logits.argmax(1), logits_ref.argmax(1))
