"""The package's contract beyond parity: the other heads against the fixtures' transformers
outputs, threads, pickling, bad inputs, devices by index, the progress bar."""

import json
import pickle
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import fixture
from safetensors.numpy import load_file

import modernbert

ST = fixture("st_mean_normalize_prompts")


def expected(name, case):
    meta = json.load(open(f"{fixture(name)}/expected.json"))
    c = next(c for c in meta["cases"] if c["name"] == case)
    return c, load_file(f"{fixture(name)}/expected.safetensors")


def rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return np.abs(ours - ref).max() / np.abs(ref).max()


def test_token_logits_and_classify_match_transformers():
    c, t = expected("tokcls_l2_v5_f32", "texts")
    m = modernbert.Model(fixture("tokcls_l2_v5_f32"), device="cpu")
    per_text = m.token_logits(c["texts"])
    assert [len(x) for x in per_text] == [len(ids) for ids in c["input_ids"]]
    assert rel(np.concatenate(per_text), t["texts.token_logits"]) <= 1e-5
    c, t = expected("seqcls_hd64_mean_f32", "texts")
    m = modernbert.Model(fixture("seqcls_hd64_mean_f32"), device="cpu")
    results = m.classify(c["texts"])
    ref = t["texts.seq_logits"]
    assert rel(np.stack([r["logits"] for r in results]), ref) <= 1e-5
    assert [r["label_id"] for r in results] == list(ref.argmax(1))
    assert all(r["label"] == m.labels[r["label_id"]] and 0 < r["score"] <= 1 for r in results)


def test_fill_mask_ranks_the_transformers_logits():
    m = modernbert.Model(fixture("mlm_l3_v5_f32"), device="cpu")
    text = "The capital of France is [MASK]."
    top = m.fill_mask(text, top_k=3)
    assert len(top) == 1 and len(top[0]) == 3  # one [MASK], three predictions
    scores = [p["score"] for p in top[0]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    with pytest.raises(ValueError, match="MASK"):
        m.fill_mask("no mask here")


def test_colbert_vectors_match_pylate():
    c, t = expected("colbert_hd64_pylate", "documents_skiplist")
    m = modernbert.Model(fixture("colbert_hd64_pylate"), device="cpu")
    vectors = m.colbert(c["texts"], is_query=c["is_query"])
    assert [len(v) for v in vectors] == list(t["documents_skiplist.colbert_counts"].astype(int))
    assert rel(np.concatenate(vectors), t["documents_skiplist.colbert"]) <= 1e-5


def test_eight_threads_on_one_model_equal_sequential_calls():
    m = modernbert.Model(ST, device="cpu")
    texts = [f"text number {i} " + "word " * (i % 37) for i in range(96)]
    sequential = [m.encode(texts[i : i + 3]) for i in range(0, len(texts), 3)]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda i: m.encode(texts[i : i + 3]), range(0, len(texts), 3)))
    assert all(np.array_equal(a, b) for a, b in zip(sequential, threaded))


def test_the_gil_is_released_during_a_call():
    # With a switch interval of a minute the interpreter never takes the GIL from a running
    # thread, so the counting thread (which gives the GIL up in each sleep) can count only while
    # the main thread has released it: from reading `before` to reading `after` that is exactly
    # the time inside the engine. Holding the GIL there would leave the count unchanged.
    m = modernbert.Model(ST, device="cpu")
    texts = ["a text of a few words to embed " * 40] * 100
    count, done = [0], threading.Event()

    def counter():
        while not done.is_set():
            time.sleep(0.0002)
            count[0] += 1

    old = sys.getswitchinterval()
    t = threading.Thread(target=counter)
    try:
        sys.setswitchinterval(60.0)
        t.start()
        before = count[0]
        m.encode(texts)
        after = count[0]
    finally:
        done.set()
        t.join()
        sys.setswitchinterval(old)
    assert after > before, "no other thread ran while the engine computed"


def test_a_model_pickles_as_its_path_and_options():
    m = modernbert.Model(ST, device="cpu", max_batch_tokens=512)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2._options == m._options and m2.device == "cpu"
    assert np.array_equal(m2.encode(["pickled"]), m.encode(["pickled"]))
    assert len(pickle.dumps(m)) < 1000  # the path and options, not the weights


def test_bad_inputs_are_python_exceptions_with_the_engines_message():
    m = modernbert.Model(ST, device="cpu")
    assert m.encode([]).shape == (0, 32)  # as sentence-transformers: no texts, no vectors
    assert m.encode([], precision="ubinary").shape == (0, 4)
    for bad in [[1, "a"], ["a", None], [b"bytes"], 3]:
        with pytest.raises(modernbert.InputTypeError):
            m.encode(bad)
    assert issubclass(modernbert.InputTypeError, TypeError) and issubclass(modernbert.InputTypeError, ValueError)
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate is not UTF-8 (a ValueError)
        m.encode(["bad \udc80 text"])
    with pytest.raises(ValueError, match="unknown prompt name"):
        m.encode(["x"], prompt_name="nope")
    with pytest.raises(ValueError, match="precision"):
        m.encode(["x"], precision="int4")
    assert m.encode(["x"], truncate_dim=33).shape == (1, 32)  # a slice past the width, as there
    for bad in [dict(truncate_dim=-1), dict(batch_size=0), dict(prompt_name=1)]:
        with pytest.raises(ValueError):
            m.encode(["x"], **bad)
    with pytest.raises(ValueError, match="top_k"):
        modernbert.Model(fixture("mlm_l3_v5_f32"), device="cpu").fill_mask("a [MASK]", top_k=-2)
    with pytest.raises(ValueError, match="torch"):
        m.encode(["x"], convert_to_tensor=True)
    with pytest.raises(ValueError, match="no classification head|unsupported"):
        m.predict([("a", "b")])
    with pytest.raises(ValueError, match="does not exist"):
        modernbert.Model("/no/such/model/dir")
    with pytest.raises(ValueError, match="unknown device `gpu`"):
        modernbert.Model(ST, device="gpu")
    with pytest.raises(ValueError, match="index must be a number"):
        modernbert.Model(ST, device="cuda:x")
    with pytest.raises(ValueError, match="dtype"):
        modernbert.Model(ST, dtype="int8")
    strict = modernbert.Model(ST, device="cpu", truncate=False)
    long_text = "word " * 9000
    with pytest.raises(ValueError, match="text 2 .*8192"):
        strict.encode(["fine", long_text])
    # The model keeps working after every error.
    assert m.encode("still fine").shape == (32,)
    assert modernbert.Model(ST, device="cpu").encode(long_text).shape == (32,)  # truncated


def test_a_pooling_without_the_prompt_is_refused_not_approximated(tmp_path):
    # include_prompt: false leaves the prompt's tokens out of sentence-transformers' mean; the
    # engine does not implement it, so a prompted call is an error, an unprompted one exact.
    import shutil

    from conftest import st_model

    d = tmp_path / "no_prompt_pooling"
    shutil.copytree(ST, d)
    pooling = json.loads((d / "1_Pooling" / "config.json").read_text())
    pooling["include_prompt"] = False
    (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    m = modernbert.Model(str(d), device="cpu")
    with pytest.raises(ValueError, match="include_prompt"):
        m.encode(["x"], prompt_name="query")
    texts = ["first text", "second"]
    assert rel(m.encode(texts), st_model(str(d)).encode(texts)) <= 1e-5


def test_a_missing_cuda_index_is_an_error_naming_it():
    # On a machine without a GPU the driver is missing; with one, index 4000 does not exist.
    with pytest.raises(RuntimeError, match="cuda:4000"):
        modernbert.Model(ST, device="cuda:4000")


def test_two_engines_on_two_emulated_devices_in_one_process(st_hd64):
    a = modernbert.Model(st_hd64, device="emulated")
    b = modernbert.Model(st_hd64, device="emulated:sm90")
    texts = ["one", "two words"]
    with ThreadPoolExecutor(2) as pool:
        ea, eb = pool.map(lambda m: m.encode(texts), [a, b])
    assert np.array_equal(ea, a.encode(texts)) and np.array_equal(eb, b.encode(texts))


def test_progress_bar_gives_the_same_embeddings(capsys):
    m = modernbert.Model(ST, device="cpu")
    texts = [f"text {i}" for i in range(2100)]
    plain = m.encode(texts)
    with_bar = m.encode(texts, show_progress_bar=True, precision="float32")
    assert np.array_equal(plain, with_bar)
    assert "2100/2100" in capsys.readouterr().err  # tqdm drew on stderr
    q = m.encode(texts, show_progress_bar=True, precision="int8")
    from sentence_transformers.quantization import quantize_embeddings

    assert np.array_equal(q, quantize_embeddings(plain, precision="int8"))


def test_outputs_own_the_engines_buffer():
    e = modernbert.Model(ST, device="cpu").encode(["a", "b"])
    assert e.flags["C_CONTIGUOUS"] and e.flags["WRITEABLE"] and not e.flags["OWNDATA"]
    assert type(e.base).__name__ == "PySliceContainer"  # the Rust Vec, handed over
