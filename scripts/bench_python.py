"""The Python package's numbers, on the CPU device (run on an idle machine):

1. Per-call overhead of Python over the Rust API for one 32-token text: `Model.encode([text])`
   against the same `Engine::embed` call timed in Rust inside the same process
   (`Engine._time_embed`, no Python in its loop), on the small committed fixture so that the
   forward itself is short and the difference is visible. p50 over `--calls` calls each.
2. `encode` throughput beside sentence-transformers' `SentenceTransformer.encode` on one random
   base-size checkpoint (scripts/bench_cpu_compare.py's target/cpu-compare-base: random weights at
   ModernBERT-base's shape, mean pooling), the same texts, the same thread count, interleaved by
   round ("the same minute"); texts/s and tokens/s, the median over rounds; both outputs checked
   against each other.

Run (repo root, the package installed into .venv-ref by scripts/python-check.sh or `pip install ./python`):
  .venv-ref/bin/python scripts/bench_python.py [--threads 2] [--rounds 3] [--texts 256]
Prints one JSON line per measurement and a markdown summary.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text).ids)


def text_of(tokenizer, n: int, seed: int) -> str:
    """A text of exactly `n` tokens (special tokens included) under this tokenizer."""
    words = ["engine", "vector", "search", "model", "token", "fast", "exact", "query", "document", "layer"]
    out, i = [], seed
    while True:
        out.append(words[i % len(words)])
        i += 7
        t = " ".join(out)
        k = tokens(tokenizer, t)
        if k == n:
            return t
        if k > n:
            out.pop()
            out.append("a")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=128, help="tokens per text for the throughput part")
    ap.add_argument("--only", choices=["overhead"], help="run the first part alone")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    import modernbert

    torch.set_num_threads(args.threads)
    results = []

    # ---- 1. overhead per call --------------------------------------------------------------
    fixture = str(ROOT / "tests/fixtures/st_mean_normalize_prompts")
    tok = Tokenizer.from_file(f"{fixture}/tokenizer.json")
    text = text_of(tok, 32, 0)
    m = modernbert.Model(fixture, device="cpu")
    for _ in range(200):  # warm up both paths
        m.encode([text])
    # Paired: each Python call next to one Rust-timed call, so drifts in the forward's own time
    # (frequency, the other tenant's load) cancel in the median of the differences.
    rust, python = [], []
    for _ in range(args.rounds * args.calls):
        rust += m._engine._time_embed([text], 1)
        t = time.perf_counter()
        m.encode([text])
        python.append(time.perf_counter() - t)
    p50 = lambda xs: statistics.median(xs) * 1e6  # noqa: E731
    p99 = lambda xs: sorted(xs)[int(0.99 * len(xs))] * 1e6  # noqa: E731
    diff = [p - r for p, r in zip(python, rust)]
    r = dict(part="overhead", model="st_mean_normalize_prompts (hidden 32)", tokens=tokens(tok, text),
             rust_p50_us=round(p50(rust), 2), python_p50_us=round(p50(python), 2),
             overhead_p50_us=round(p50(diff), 2),
             rust_p99_us=round(p99(rust), 2), python_p99_us=round(p99(python), 2), calls=len(python))
    print(json.dumps(r), flush=True)
    results.append(r)

    if args.only == "overhead":
        return

    # ---- 2. encode throughput beside sentence-transformers ------------------------------------
    base = ROOT / "target/cpu-compare-base"
    if not (base / "modules.json").exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_cpu_compare

        bench_cpu_compare.prepare(ROOT / "target/fullsize-base", base)
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    texts = [text_of(tok, args.tokens, i) for i in range(args.texts)]
    n_tokens = sum(tokens(tok, t) for t in texts)
    ours = modernbert.Model(str(base), device="cpu")
    st = SentenceTransformer(str(base), device="cpu", model_kwargs={"dtype": torch.float32})
    a, b = ours.encode(texts[:8]), st.encode(texts[:8])
    agree = float(np.abs(a - b).max() / np.abs(b).max())
    times = {"modernbert": [], "sentence-transformers": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ours.encode(texts)
        times["modernbert"].append(time.perf_counter() - t)
        t = time.perf_counter()
        st.encode(texts, batch_size=32)
        times["sentence-transformers"].append(time.perf_counter() - t)
    for name, ts in times.items():
        s = statistics.median(ts)
        r = dict(part="throughput", impl=name, texts=len(texts), tokens=n_tokens, seconds=round(s, 3),
                 texts_per_s=round(len(texts) / s, 1), tokens_per_s=round(n_tokens / s), threads=args.threads,
                 rounds=[round(x, 3) for x in ts])
        print(json.dumps(r), flush=True)
        results.append(r)
    ratio = statistics.median(times["sentence-transformers"]) / statistics.median(times["modernbert"])
    print(json.dumps(dict(part="agreement", max_rel_diff_first_8=agree, speedup=round(ratio, 2))), flush=True)
    load = os.getloadavg()[0]
    print(f"\nload average at the end: {load:.2f}; torch {torch.__version__}, modernbert {modernbert.__version__}")
    o = results[0]
    print(f"| 1 × {o['tokens']} tokens, per call | Rust {o['rust_p50_us']} µs | Python {o['python_p50_us']} µs "
          f"| overhead {o['overhead_p50_us']} µs |")
    print(f"| encode {len(texts)} × {args.tokens} | modernbert {results[1]['texts_per_s']} texts/s "
          f"| sentence-transformers {results[2]['texts_per_s']} texts/s | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
