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


def _edited_copy(tmp_path, name, edit):
    """A copy of fixture `name` with `edit(dir)` applied to its files."""
    import shutil

    d = tmp_path / f"{name}_{edit.__name__}"
    shutil.copytree(fixture(name), d)
    edit(d)
    return str(d)


def _json_edit(path, **changes):
    import json

    v = json.loads(path.read_text()) if path.exists() else {}
    v.update(changes)
    path.write_text(json.dumps(v))


def test_directory_settings_as_sentence_transformers_reads_them(tmp_path):
    long_texts = [TEXTS[3], "  padded text \n", "Hello World ABC"]

    # No sentence_bert_config.json: the tokenizer's model_max_length bounds the length.
    def short_tokenizer(d):
        (d / "sentence_bert_config.json").unlink()
        _json_edit(d / "tokenizer_config.json", model_max_length=8)

    # do_lower_case lowercases every (prompted, stripped) text.
    def lower(d):
        _json_edit(d / "sentence_bert_config.json", do_lower_case=True)

    for edit in [short_tokenizer, lower]:
        path = _edited_copy(tmp_path, "st_cls_nonorm", edit)
        assert rel(modernbert.Model(path, device="cpu").encode(long_texts), st_model(path).encode(long_texts)) <= 1e-5
    # A plain transformers directory: sentence-transformers builds Transformer + mean pooling,
    # which strips the texts too.
    plain = fixture("mlm_l3_v5_f32")
    texts = ["  hello world \n", "hello world"]
    ours = modernbert.Model(plain, device="cpu").encode(texts)
    assert rel(ours, st_model(plain).encode(texts)) <= 1e-5 and np.array_equal(ours[0], ours[1])


@pytest.mark.parametrize("fn", ["dot", "euclidean", "manhattan", "cosine"])
def test_similarity_functions_match_sentence_transformers(tmp_path, fn):
    path = _edited_copy(
        tmp_path, "st_cls_nonorm", lambda d: _json_edit(d / "config_sentence_transformers.json", similarity_fn_name=fn)
    )
    st, m = st_model(path), modernbert.Model(path, device="cpu")
    a, b = m.encode(TEXTS[:3]), m.encode(TEXTS[3:])
    assert m.similarity_fn_name == st.similarity_fn_name == fn
    assert rel(m.similarity(a, b), st.similarity(a, b).numpy()) <= 1e-5
    assert m.similarity(a, b[:0]).shape == (3, 0)


def test_edge_arguments_behave_as_in_sentence_transformers():
    path = fixture("st_mean_normalize_prompts")
    st, m = st_model(path), modernbert.Model(path, device="cpu")
    for dim in [0, 1000]:  # no truncation / a slice past the width
        assert rel(m.encode(TEXTS, truncate_dim=dim), st.encode(TEXTS, truncate_dim=dim)) <= 1e-5
    assert m.get_sentence_embedding_dimension(1000) == st.get_sentence_embedding_dimension() == 32
    with pytest.raises(ValueError, match="truncate_dim"):
        m.encode(TEXTS, truncate_dim=-1)
    # 12 binary dimensions: one row packs into 2 bytes as np.packbits does; 3 rows cannot reshape.
    one = m.encode(TEXTS[:1], truncate_dim=12)
    assert np.array_equal(m.encode(TEXTS[:1], truncate_dim=12, precision="binary"),
                          quantize_embeddings(one, precision="binary"))
    with pytest.raises(ValueError, match="bytes"):
        m.encode(TEXTS[:3], truncate_dim=12, precision="binary")
    ce_path = fixture("seqcls_mean_crossenc_v5_bf16")
    pairs = [("q", "a document"), ("q", "another")]
    assert np.array_equal(modernbert.Model(ce_path, device="cpu").predict(pairs, apply_softmax=True),
                          cross_encoder(ce_path).predict(pairs, apply_softmax=True))
