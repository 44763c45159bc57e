#!/usr/bin/env python3
"""Write the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (pure Python, no deps).

    python3 fuzz/make_corpus.py

config_json:       the fixture configs (tests/fixtures/*/config.json) plus hand-made edge cases.
safetensors_store: tiny safetensors files (F32/F16/BF16/I64, scalars, empty tensors, metadata)
                   and corrupted variants (truncated, huge header length, overlapping offsets, ...).
http_requests:     a route byte, then JSON bodies of the server's routes (valid, broken, edge options).
checkpoint_dir:    u16-LE length of config.json, config.json, model.safetensors: tiny complete
                   checkpoints (v4 and v5 configs, with/without `model.` prefix, biases, heads) and
                   broken ones (missing tensor, wrong shape, extra layer).
Deterministic: re-running rewrites the same files. Crash reproducers found later are added by
hand as corpus/<target>/crash-*.
"""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "F64": 8, "U8": 1, "BOOL": 1}


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape); data is a deterministic byte pattern."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        if dtype == "F32":
            count = n // 4
            blob = b"".join(struct.pack("<f", 0.25 * ((i % 7) - 3)) for i in range(count))
        else:
            blob = bytes((i * 37 + 11) % 256 for i in range(n))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def raw_safetensors(header_obj, data):
    h = json.dumps(header_obj, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tiny_config(v5=False, **over):
    c = {
        "architectures": ["ModernBertModel"],
        "model_type": "modernbert",
        "vocab_size": 8,
        "hidden_size": 4,
        "intermediate_size": 4,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "hidden_activation": "gelu",
        "max_position_embeddings": 64,
        "norm_eps": 1e-5,
        "norm_bias": False,
        "attention_bias": False,
        "mlp_bias": False,
        "global_attn_every_n_layers": 2,
        "pad_token_id": 0,
        "cls_token_id": 1,
        "sep_token_id": 2,
    }
    if v5:
        c["layer_types"] = ["full_attention", "sliding_attention"]
        c["sliding_window"] = 8
        c["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": 160000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        }
    else:
        c["local_attention"] = 16
        c["global_rope_theta"] = 160000.0
        c["local_rope_theta"] = 10000.0
    c.update(over)
    return c


def tiny_tensors(c, prefix="", heads=(), dtype="F32"):
    V, H, I, L = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    nb, ab, mb = c.get("norm_bias", False), c.get("attention_bias", False), c.get("mlp_bias", False)
    t = []

    def norm(stem):
        t.append((f"{stem}.weight", dtype, [H]))
        if nb:
            t.append((f"{stem}.bias", dtype, [H]))

    def lin(stem, o, i, bias):
        t.append((f"{stem}.weight", dtype, [o, i]))
        if bias:
            t.append((f"{stem}.bias", dtype, [o]))

    t.append((f"{prefix}embeddings.tok_embeddings.weight", dtype, [V, H]))
    norm(f"{prefix}embeddings.norm")
    for l in range(L):
        s = f"{prefix}layers.{l}"
        if l > 0:
            norm(f"{s}.attn_norm")
        lin(f"{s}.attn.Wqkv", 3 * H, H, ab)
        lin(f"{s}.attn.Wo", H, H, ab)
        norm(f"{s}.mlp_norm")
        lin(f"{s}.mlp.Wi", 2 * I, H, mb)
        lin(f"{s}.mlp.Wo", H, I, mb)
    norm(f"{prefix}final_norm")
    cb = c.get("classifier_bias", False)
    if "mlm" in heads or "cls" in heads:
        lin("head.dense", H, H, cb)
        norm("head.norm")
    if "mlm" in heads:
        t.append(("decoder.bias", dtype, [V]))
    if "decoder" in heads:
        t.append(("decoder.weight", dtype, [V, H]))
    if "cls" in heads:
        lin("classifier", 3, H, True)
    return t


def checkpoint_input(config, st_bytes):
    cj = json.dumps(config, indent=1).encode() if not isinstance(config, bytes) else config
    return struct.pack("<H", len(cj)) + cj + st_bytes


def main():
    for t in ("config_json", "safetensors_store", "checkpoint_dir"):
        d = os.path.join(CORPUS, t)
        if os.path.isdir(d):
            for f in os.listdir(d):
                if not f.startswith("crash-"):
                    os.remove(os.path.join(d, f))

    for t in ("config_json", "safetensors_store", "checkpoint_dir"):
        os.makedirs(os.path.join(CORPUS, t), exist_ok=True)

    # ---- config_json ----
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    for name in sorted(os.listdir(fixtures)):
        p = os.path.join(fixtures, name, "config.json")
        if os.path.isfile(p):
            shutil.copyfile(p, os.path.join(CORPUS, "config_json", f"fixture-{name}.json"))
    cfg = lambda name, obj: write("config_json", name, obj if isinstance(obj, str) else json.dumps(obj))
    cfg("minimal.json", {"model_type": "modernbert"})
    cfg("empty-object.json", {})
    cfg("tiny-v4.json", tiny_config())
    cfg("tiny-v5.json", tiny_config(v5=True))
    cfg("v5-flat-rope.json", tiny_config(v5=True, rope_parameters={"rope_type": "default", "rope_theta": 5e5}))
    cfg("v5-nulls.json", tiny_config(v5=True, layer_types=None, rope_parameters=None, local_attention=None))
    cfg("labels.json", tiny_config(id2label={"0": "neg", "1": "pos", "2": "neutral"}, classifier_pooling="mean",
                                   classifier_activation="silu", hidden_activation="gelu_new"))
    cfg("bad-labels.json", tiny_config(id2label={"0": "a", "2": "b"}))
    cfg("rope-scaling.json", tiny_config(rope_scaling={"rope_type": "linear", "factor": 2.0}))
    cfg("wrong-model-type.json", tiny_config(model_type="bert"))
    cfg("odd-head-dim.json", tiny_config(hidden_size=6, num_attention_heads=2))
    cfg("layer-types-mismatch.json", tiny_config(v5=True, num_hidden_layers=3))
    cfg("huge-dims.json", tiny_config(hidden_size=1 << 20, vocab_size=1 << 30))
    cfg("negative.json", tiny_config(num_hidden_layers=-1, norm_eps=-1.0))
    cfg("strings.json", tiny_config(hidden_size="768", norm_bias="yes"))
    cfg("big-numbers.json", '{"pad_token_id": 4294967296, '
                            '"norm_eps": 1e300, "global_rope_theta": 1e39}')
    cfg("not-object.json", "[1, 2, 3]")
    cfg("truncated.json", json.dumps(tiny_config())[:100])

    # ---- safetensors_store ----
    st = lambda name, data: write("safetensors_store", name, data)
    st("f32.safetensors", safetensors([("a", "F32", [2, 3]), ("b", "F32", [4])]))
    st("mixed.safetensors", safetensors([("x", "F32", [2]), ("y", "BF16", [1, 2]), ("z", "F16", [3]),
                                         ("i", "I64", [1]), ("d", "F64", [2])]))
    st("scalar-empty.safetensors", safetensors([("s", "F32", []), ("e", "F32", [0, 5]), ("u", "U8", [3])]))
    st("metadata.safetensors", safetensors([("w", "BF16", [2, 2])], metadata={"format": "pt"}))
    st("empty-header.safetensors", raw_safetensors({}, b""))
    good = safetensors([("a", "F32", [4])])
    st("truncated.safetensors", good[:-4])
    st("huge-header-len.safetensors", struct.pack("<Q", 1 << 40) + good[8:])
    st("header-len-only.safetensors", struct.pack("<Q", 16))
    st("offsets-past-end.safetensors",
       raw_safetensors({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1600]}}, b"\0" * 16))
    st("offsets-overlap.safetensors",
       raw_safetensors({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
    st("offsets-reversed.safetensors",
       raw_safetensors({"x": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8))
    st("shape-overflow.safetensors",
       raw_safetensors({"x": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 0]}}, b""))
    st("size-mismatch.safetensors",
       raw_safetensors({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8))
    st("bad-dtype.safetensors",
       raw_safetensors({"x": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, b"\0"))
    st("not-json.safetensors", struct.pack("<Q", 5) + b"{{{{{")
    st("empty.safetensors", b"")

    # ---- checkpoint_dir ----
    ck = lambda name, c, tensors: write("checkpoint_dir", name, checkpoint_input(c, safetensors(tensors)))
    c4 = tiny_config()
    ck("tiny-v4.bin", c4, tiny_tensors(c4))
    c4b = tiny_config(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
    ck("tiny-v4-allbias-bf16-cls.bin", c4b, tiny_tensors(c4b, prefix="model.", heads=("cls",), dtype="BF16"))
    c5 = tiny_config(v5=True, tie_word_embeddings=False)
    ck("tiny-v5-mlm-untied.bin", c5, tiny_tensors(c5, prefix="model.", heads=("mlm", "decoder"), dtype="F16"))
    c5t = tiny_config(v5=True, num_hidden_layers=1, layer_types=["full_attention"])
    ck("tiny-v5-mlm-tied.bin", c5t, tiny_tensors(c5t, prefix="model.", heads=("mlm",)))
    ck("missing-tensor.bin", c4, [t for t in tiny_tensors(c4) if "mlp_norm" not in t[0]])
    ck("wrong-shape.bin", c4, [(n, d, [s[0] + 1] + s[1:] if "Wo" in n else s) for n, d, s in tiny_tensors(c4)])
    ck("extra-layer.bin", c4, tiny_tensors(tiny_config(num_hidden_layers=3)))
    ck("int-dtype.bin", c4, [(n, "I64" if "final_norm" in n else d, s) for n, d, s in tiny_tensors(c4)])
    write("checkpoint_dir", "bad-config.bin", checkpoint_input(b"{\"hidden_size\": 0}", safetensors(tiny_tensors(c4))))
    write("checkpoint_dir", "no-weights.bin", checkpoint_input(c4, b""))

    # ---- http_requests: 1 byte of route (embed, rerank, predict, tokenize, v1/embeddings, info),
    # then the body ----
    routes = {"embed": 0, "rerank": 1, "predict": 2, "tokenize": 3, "v1": 4, "info": 5}
    http = lambda name, route, body: write("http_requests", name, bytes([routes[route]]) + body)
    http("embed-one.json", "embed", b'{"inputs": "hello world"}')
    http("embed-options.json", "embed",
         b'{"inputs": ["a", "", "b c"], "normalize": false, "truncate": true, "prompt_name": "query", "dimensions": 8}')
    http("embed-bad.json", "embed", b'{"inputs": [1, 2], "dimensions": -1}')
    http("rerank.json", "rerank", b'{"query": "q", "texts": ["a", "b"], "raw_scores": true, "return_text": true}')
    http("predict-batch.json", "predict", b'{"inputs": [["a"], ["q", "d"]], "raw_scores": false}')
    http("tokenize.json", "tokenize", '{"inputs": ["h\u00e9llo w\u00f6rld"], "add_special_tokens": false}'.encode())
    http("openai.json", "v1", b'{"input": ["a", "b"], "encoding_format": "base64", "model": "m", "dimensions": 4}')
    http("info.json", "info", b"")
    http("truncated.json", "embed", b'{"inputs": ["a", ')

    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(CORPUS) for f in fs)
    print(f"corpus: {total} bytes in {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
