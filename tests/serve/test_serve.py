"""`modernbert serve` tested with real clients on loopback: the `openai` package against
/v1/embeddings, plain HTTP (urllib, http.client) against text-embeddings-inference's routes, the
bad-request matrix with its status codes, a concurrent load with no failed or lost request,
overload (429), client disconnects and graceful shutdown.

Reference values come from the CLI (`modernbert embed`/`rerank`/`classify`), the in-process call
the server wraps; the server may batch a text with other requests' texts, which on the CPU's f32
GEMM changes at most the last ulps: tolerance 1e-5 (absolute, on unit vectors and probabilities).

Run by scripts/serve-check.sh (MODERNBERT_BIN: the CLI to test)."""

import base64
import concurrent.futures as cf
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MODERNBERT_BIN", str(ROOT / "target" / "debug" / "modernbert"))
FIXTURES = ROOT / "tests" / "fixtures"
EMBEDDER = FIXTURES / "st_mean_normalize_prompts"
RERANKER = FIXTURES / "seqcls_mean_crossenc_v5_bf16"
TOL = 1e-5
TEXTS = [f"text {i}: " + "the quick brown fox " * (i % 7 + 1) for i in range(64)]


class Server:
    """A `modernbert serve` process on a free loopback port."""

    def __init__(self, model, *flags):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", str(model), "--device", "cpu", "--port", "0", *flags],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        self.log = []
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"server exited: {self.log}")
            self.log.append(line)
            if line.startswith("listening on http://"):
                self.base = line.split()[-1].strip()
                self.port = int(self.base.rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("server did not start")
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def request(self, method, path, body=None, raw=None, headers=None, timeout=60):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text and path != "/metrics" else text)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, json.loads(text) if text.startswith("{") else text

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        return self.proc.returncode


@pytest.fixture(scope="module")
def embedder():
    s = Server(EMBEDDER, "--max-client-batch-size", "64")
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture(scope="module")
def reranker():
    s = Server(RERANKER)
    yield s
    assert s.stop() == 0, "".join(s.log)


def cli(*args, stdin=None):
    out = subprocess.run([BIN, *args, "--device", "cpu"], input=stdin, capture_output=True, text=True, check=True)
    return [json.loads(l) for l in out.stdout.splitlines()]


def cli_embed(texts, *flags):
    rows = cli("embed", "--model", str(EMBEDDER), *flags, *texts)
    return np.array([r["embedding"] for r in rows], dtype=np.float32)


def test_embed_matches_the_cli(embedder):
    want = cli_embed(TEXTS[:5], "--normalize")
    status, got = embedder.post("/embed", {"inputs": TEXTS[:5]})
    assert status == 200
    assert np.abs(np.array(got, dtype=np.float32) - want).max() <= TOL
    # A single string gives a list of one vector; TEI's defaults: normalize true.
    status, one = embedder.post("/embed", {"inputs": TEXTS[0]})
    assert status == 200 and len(one) == 1 and np.abs(np.array(one[0]) - want[0]).max() <= TOL
    # normalize false, dimensions (truncate then normalise), prompt_name.
    status, raw = embedder.post("/embed", {"inputs": TEXTS[:2], "normalize": False})
    assert np.abs(np.array(raw) - cli_embed(TEXTS[:2], "--no-normalize")).max() <= TOL
    status, short = embedder.post("/embed", {"inputs": TEXTS[:2], "dimensions": 8})
    assert np.abs(np.array(short) - cli_embed(TEXTS[:2], "--normalize", "--dim", "8")).max() <= TOL
    status, q = embedder.post("/embed", {"inputs": TEXTS[:2], "prompt_name": "query"})
    want_q = cli_embed(TEXTS[:2], "--normalize", "--prompt-name", "query")
    assert status == 200 and np.abs(np.array(q) - want_q).max() <= TOL
    assert np.abs(np.array(q) - want[:2]).max() > 1e-3, "the prompt changed nothing"


def test_embed_precision_matches_the_cli(embedder):
    # sentence-transformers' quantize_embeddings over the request's texts, as `embed --precision`.
    for precision in ["int8", "uint8", "binary", "ubinary"]:
        want = [r["embedding"] for r in cli("embed", "--model", str(EMBEDDER), "--precision", precision, *TEXTS[:4])]
        status, got = embedder.post("/embed", {"inputs": TEXTS[:4], "precision": precision})
        assert status == 200 and got == want, precision
    status, got = embedder.post("/embed", {"inputs": "a", "precision": "int4"})
    assert status == 422 and "int4" in got["error"]


def test_openai_client(embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=embedder.base + "/v1", api_key="unused", max_retries=0, timeout=60)
    want = cli_embed(TEXTS[:4], "--normalize")
    # The SDK asks for base64 by default and decodes it (little-endian f32).
    r = client.embeddings.create(input=TEXTS[:4], model="any")
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert [d.index for d in r.data] == [0, 1, 2, 3]
    assert np.abs(got - want).max() <= TOL
    assert r.usage.prompt_tokens == r.usage.total_tokens > 4
    r = client.embeddings.create(input=TEXTS[0], model="any", encoding_format="float", dimensions=8)
    assert np.abs(np.array(r.data[0].embedding) - cli_embed(TEXTS[:1], "--normalize", "--dim", "8")[0]).max() <= TOL
    # An error reaches the SDK as its exception with the server's message.
    with pytest.raises(openai.APIStatusError) as e:
        client.embeddings.create(input=[], model="any")
    assert e.value.status_code == 400 and "cannot be empty" in str(e.value)


def test_openai_base64_is_little_endian_f32(embedder):
    status, r = embedder.post("/v1/embeddings", {"input": "hello", "encoding_format": "base64"})
    assert status == 200 and r["object"] == "list" and r["data"][0]["object"] == "embedding"
    b = base64.b64decode(r["data"][0]["embedding"])
    vec = struct.unpack(f"<{len(b) // 4}f", b)
    status, f = embedder.post("/v1/embeddings", {"input": "hello"})
    assert list(vec) == pytest.approx(f["data"][0]["embedding"], abs=0)


def test_rerank_predict_info(reranker):
    docs = ["a cat on a mat", "stock markets fell", "cats sit on mats", "rain tomorrow"]
    want = [r["score"] for r in cli("rerank", "--model", str(RERANKER), "--query", "where is the cat", *docs)]
    status, ranks = reranker.post("/rerank", {"query": "where is the cat", "texts": docs, "return_text": True})
    assert status == 200
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    for r in ranks:
        assert abs(r["score"] - want[r["index"]]) <= TOL and r["text"] == docs[r["index"]]
    status, raw = reranker.post("/rerank", {"query": "where is the cat", "texts": docs, "raw_scores": True})
    for r in raw:
        assert abs(1 / (1 + np.exp(-r["score"])) - want[r["index"]]) <= TOL and "text" not in r
    # /predict: one text, one pair, a batch of both; one label → sigmoid of the logit.
    classified = cli("classify", "--model", str(RERANKER), "a cat on a mat")[0]
    status, one = reranker.post("/predict", {"inputs": "a cat on a mat"})
    assert status == 200 and one[0]["label"] == "LABEL_0" and abs(one[0]["score"] - classified["score"]) <= TOL
    status, pair = reranker.post("/predict", {"inputs": ["where is the cat", "a cat on a mat"]})
    assert status == 200 and abs(pair[0]["score"] - want[0]) <= TOL
    status, batch = reranker.post("/predict", {"inputs": [["a cat on a mat"], ["where is the cat", "a cat on a mat"]]})
    assert status == 200 and len(batch) == 2
    assert abs(batch[0][0]["score"] - one[0]["score"]) <= TOL and abs(batch[1][0]["score"] - pair[0]["score"]) <= TOL
    status, info = reranker.request("GET", "/info")
    assert status == 200 and info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert info["max_client_batch_size"] == 32 and info["model_dtype"] == "float32"


def test_tokenize_spans(embedder):
    text = "héllo wörld, ModernBERT"
    status, toks = embedder.post("/tokenize", {"inputs": text})
    assert status == 200 and len(toks) == 1
    toks = toks[0]
    assert toks[0]["special"] and toks[-1]["special"] and toks[0]["start"] is None
    body = toks[1:-1]
    raw = text.encode()
    for t in body:
        assert not t["special"] and raw[t["start"]:t["stop"]].decode() == t["text"]
    # In order, and together covering every non-space byte (byte-level pieces of one character
    # share its span).
    assert [t["start"] for t in body] == sorted(t["start"] for t in body)
    covered = {i for t in body for i in range(t["start"], t["stop"])}
    assert {i for i, b in enumerate(raw) if b != ord(" ")} <= covered
    status, plain = embedder.post("/tokenize", {"inputs": [text], "add_special_tokens": False})
    assert [t["id"] for t in plain[0]] == [t["id"] for t in body]


def test_health_and_metrics(embedder):
    assert embedder.request("GET", "/health")[0] == 200
    status, info = embedder.request("GET", "/info")
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] > 0
    status, text = embedder.request("GET", "/metrics")
    assert status == 200
    assert "te_request_count{route=\"embed\"}" in text and "modernbert_forwards_total" in text


# (case, method, path, body or raw bytes, status, error_type)
BAD = [
    ("malformed JSON", "POST", "/embed", b'{"inputs": ', 400, "Validation"),
    ("not JSON at all", "POST", "/embed", b"\xff\xfe", 400, "Validation"),
    ("inputs of the wrong type", "POST", "/embed", {"inputs": 5}, 422, "Validation"),
    ("token ids (not supported)", "POST", "/embed", {"inputs": [101, 102]}, 422, "Validation"),
    ("normalize of the wrong type", "POST", "/embed", {"inputs": "a", "normalize": "yes"}, 422, "Validation"),
    ("no inputs field", "POST", "/embed", {"text": "a"}, 422, "Validation"),
    ("an empty list", "POST", "/embed", {"inputs": []}, 400, "Empty"),
    ("too many inputs", "POST", "/embed", {"inputs": ["a"] * 65}, 413, "Validation"),
    ("too long, truncation off", "POST", "/embed", {"inputs": "word " * 9000}, 413, "Validation"),
    ("dimensions 0", "POST", "/embed", {"inputs": "a", "dimensions": 0}, 422, "Validation"),
    ("dimensions too large", "POST", "/embed", {"inputs": "a", "dimensions": 4096}, 422, "Validation"),
    ("unknown prompt name", "POST", "/embed", {"inputs": "a", "prompt_name": "nope"}, 422, "Validation"),
    ("left truncation", "POST", "/embed", {"inputs": "a", "truncation_direction": "Left"}, 422, "Validation"),
    ("rerank with no texts", "POST", "/rerank", {"query": "q", "texts": []}, 400, "Empty"),
    ("rerank on an embedding model", "POST", "/rerank", {"query": "q", "texts": ["a"]}, 424, "Backend"),
    ("predict with three texts", "POST", "/predict", {"inputs": [["a", "b", "c"]]}, 422, "Validation"),
    ("openai: bad encoding_format", "POST", "/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 422, None),
    ("openai: no input", "POST", "/v1/embeddings", {"model": "m"}, 422, None),
    ("unknown route", "POST", "/v2/embed", {"inputs": "a"}, 404, "NotFound"),
    ("wrong method", "GET", "/embed", None, 405, None),
]


@pytest.mark.parametrize("case,method,path,body,status,error_type", BAD, ids=[b[0] for b in BAD])
def test_bad_requests(embedder, case, method, path, body, status, error_type):
    raw = body if isinstance(body, bytes) else None
    got_status, got = embedder.request(method, path, body=None if raw else body, raw=raw)
    assert got_status == status, (case, got)
    if status == 405:
        return
    if path.startswith("/v1"):
        assert isinstance(got, dict) and got["error"]["message"], got
    else:
        assert isinstance(got, dict) and got["error"] and got["error_type"] == error_type, got
    # The server is unaffected.
    assert embedder.post("/embed", {"inputs": "still fine"})[0] == 200


def test_missing_content_type_and_truncation(embedder):
    status, got = embedder.request("POST", "/embed", raw=b'{"inputs": "a"}', headers={"Content-Type": "text/plain"})
    assert status == 415 and got["error_type"] == "Validation"
    status, got = embedder.post("/embed", {"inputs": "word " * 9000, "truncate": True})
    assert status == 200 and len(got) == 1


def test_concurrent_load_loses_nothing_and_shares_forwards(embedder):
    """64 clients x 8 single-text requests on keep-alive connections: every answer 200 and equal
    to the sequential CLI's, in fewer forwards than calls."""
    want = cli_embed(TEXTS, "--normalize")

    def metric(name):
        text = embedder.request("GET", "/metrics")[1]
        return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))

    calls0, forwards0 = metric("modernbert_calls_total"), metric("modernbert_forwards_total")

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", embedder.port, timeout=120)
        out = []
        for k in range(8):
            i = (c * 8 + k) % len(TEXTS)
            conn.request("POST", "/embed", json.dumps({"inputs": TEXTS[i]}), {"Content-Type": "application/json"})
            r = conn.getresponse()
            out.append((i, r.status, json.loads(r.read())))
        conn.close()
        return out

    with cf.ThreadPoolExecutor(64) as pool:
        results = [x for f in [pool.submit(client, c) for c in range(64)] for x in f.result()]
    assert len(results) == 512
    for i, status, body in results:
        assert status == 200, body
        assert np.abs(np.array(body[0], dtype=np.float32) - want[i]).max() <= TOL
    calls, forwards = metric("modernbert_calls_total") - calls0, metric("modernbert_forwards_total") - forwards0
    assert calls == 512 and forwards < calls, (calls, forwards)


def test_overload_429_disconnect_and_graceful_shutdown():
    s = Server(EMBEDDER, "--max-concurrent-requests", "1", "--max-client-batch-size", "4000",
               "--payload-limit", "100000000")
    try:
        slow = {"inputs": ["the quick brown fox jumps " * 60] * 3000}
        with cf.ThreadPoolExecutor(2) as pool:
            first = pool.submit(s.post, "/embed", slow, timeout=600)
            # Wait until the slow request is running (its forwards counted), then overload.
            deadline = time.time() + 60
            while time.time() < deadline:
                text = s.request("GET", "/metrics")[1]
                if any(l.startswith("modernbert_forwards_total ") and float(l.split()[-1]) > 0 for l in text.splitlines()):
                    break
                time.sleep(0.01)
            status, body = s.post("/embed", {"inputs": "one more"})
            assert status == 429 and body["error_type"] == "Overloaded", body
            # SIGTERM while the slow request runs: it is still answered, then the server exits.
            s.proc.send_signal(signal.SIGTERM)
            status, vectors = first.result(timeout=600)
            assert status == 200 and len(vectors) == 3000
        assert s.proc.wait(timeout=60) == 0
        assert any("every accepted request answered" in l for l in s.log), s.log
    finally:
        s.stop()

    # A client that sends half a request, or a request and then leaves, affects no one.
    s = Server(EMBEDDER)
    try:
        for payload in [b"POST /embed HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"inp",
                        b"POST /embed HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"inputs\": \"abc\"}"]:
            with socket.create_connection(("127.0.0.1", s.port)) as c:
                c.sendall(payload)
        assert s.post("/embed", {"inputs": "after"})[0] == 200
    finally:
        assert s.stop() == 0
