#!/usr/bin/env python3
"""Side by side: Hugging Face transformers' ModernBertModel on the paper's synthetic sets vs `modernbert bench`.

Same sets as `modernbert bench` (src/bench.rs documents the generator; this file re-implements it
bit for bit and checks the id checksum against our JSON when both are present), same protocol
(batches of 512 short / 32 long sequences, right-padded to the batch's set length with an attention
mask like the paper's notebooks, one warm-up batch, --passes timed passes, real tokens only,
torch.cuda.synchronize at the end of each pass, inputs pre-copied to the device), bf16 weights
(`torch_dtype=torch.bfloat16`), attention `sdpa` and `flash_attention_2` when flash-attn is
installed (transformers unpads internally for FA2). Weights: random at the ModernBERT-base/large
shape (speed does not depend on values) or a checkpoint directory / repo id with --model.

Prints a table and one JSON line per (set, attention implementation) with tokens_per_s and, when
our JSON lines are given (--ours FILE, or --run-ours to run the binary), `ratio_ours_over_hf`.

GPU:   python scripts/bench_transformers.py --shape base --set all --ours ours.jsonl
       (ours.jsonl from: target/release/modernbert bench --shape base --set all --device cuda > ours.jsonl)
CPU smoke (tiny): .venv-ref/bin/python scripts/bench_transformers.py --device cpu --shape base --layers 1 \
       --sequences 2 --passes 1 --max-len 640 --dtype float32 --run-ours
Self-test of the generator: python scripts/bench_transformers.py --self-test
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SEED = 42
ID_LO, ID_HI, MIN_LEN = 100, 16000, 32
SETS = {  # name: (index, max_len, normal (mean, sd) or None, batch sequences, paper total tokens)
    "short-fixed": (0, 512, None, 512, 4_194_304),
    "short-variable": (1, 512, (256.0, 64.0), 512, 2_096_510),
    "long-fixed": (2, 8192, None, 32, 67_108_864),
    "long-variable": (3, 8192, (4096.0, 1024.0), 32, 33_604_913),
}


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    return mix64(((seed * GOLDEN) & MASK64) ^ stream)


def draw(key: int, i: int) -> int:
    return mix64((key + ((i + 1) * GOLDEN)) & MASK64)


def unit(x: int) -> float:
    return ((x >> 11) + 1) / float(1 << 53)


def set_lengths(name: str, n: int, seed: int = SEED):
    index, max_len, normal, _, _ = SETS[name]
    if normal is None:
        return [max_len] * n
    mean, sd = normal
    key = stream_key(seed, 16 * index + 1)
    out = []
    for s in range(n):
        u1, u2 = unit(draw(key, 2 * s)), unit(draw(key, 2 * s + 1))
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        length = math.trunc(mean + sd * z)
        out.append(int(min(max(length, MIN_LEN), max_len)))
    return out


def set_ids_flat(name: str, total: int, seed: int = SEED):
    """All ids of the set back to back (numpy uint64 arithmetic wraps like Rust's wrapping ops)."""
    import numpy as np

    index = SETS[name][0]
    key = np.uint64(stream_key(seed, 16 * index + 2))
    out = np.empty(total, dtype=np.int64)
    chunk = 1 << 22
    with np.errstate(over="ignore"):
        for lo in range(0, total, chunk):
            i = np.arange(lo + 1, min(lo + chunk, total) + 1, dtype=np.uint64)
            z = key + i * np.uint64(GOLDEN)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            out[lo:lo + len(i)] = ID_LO + (((z >> np.uint64(32)) * np.uint64(ID_HI - ID_LO)) >> np.uint64(32)).astype(np.int64)
    return out


def ids_checksum(flat) -> int:
    import numpy as np

    with np.errstate(over="ignore"):
        j = np.arange(1, len(flat) + 1, dtype=np.uint64)
        return int((j * flat.astype(np.uint64)).sum(dtype=np.uint64))


def self_test() -> None:
    assert mix64(0) == 0
    # Pure-Python and numpy id generation agree.
    flat = set_ids_flat("short-variable", 1000)
    key = stream_key(SEED, 16 * 1 + 2)
    py = [ID_LO + (((draw(key, j) >> 32) * (ID_HI - ID_LO)) >> 32) for j in range(1000)]
    assert list(flat) == py, "numpy and python generators differ"
    lens = set_lengths("short-variable", 8192)
    print(json.dumps({"self_test": "ok", "short_variable_total_8192": sum(lens), "paper": SETS["short-variable"][4],
                      "first_lengths": lens[:8], "checksum_first_1000_ids": ids_checksum(flat)}))


def load_ours(path: str):
    ours = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                v = json.loads(line)
                if v.get("bench") == "throughput":
                    ours[v["set"]] = v
    return ours


def run_ours(args, sets) -> dict:
    exe = args.ours_binary or os.path.join(os.path.dirname(__file__), "..", "target", "release", "modernbert")
    if not os.path.exists(exe):
        exe = os.path.join(os.path.dirname(__file__), "..", "target", "debug", "modernbert")
    cmd = [exe, "bench", "--set", ",".join(sets), "--sequences", str(args.sequences), "--passes", str(args.passes),
           "--device", {"cuda": "cuda", "cpu": "cpu"}[args.device]]
    cmd += ["--model", args.model] if args.model else ["--shape", args.shape]
    if args.layers:
        cmd += ["--layers", str(args.layers)]
    if args.max_len:
        cmd += ["--max-len", str(args.max_len)]
    print("# running ours:", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ours = {}
    for line in out.splitlines():
        v = json.loads(line)
        ours[v["set"]] = v
    return ours


def build_model(args, attn, torch):
    from transformers import AutoModel, ModernBertConfig, ModernBertModel

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    if args.model:
        model = AutoModel.from_pretrained(args.model, dtype=dtype, attn_implementation=attn)
    else:
        kw = dict(pad_token_id=50283, bos_token_id=50281, eos_token_id=50282, cls_token_id=50281, sep_token_id=50282)
        if args.shape == "large":
            kw.update(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16)
        if args.layers:
            kw.update(num_hidden_layers=args.layers)
        cfg = ModernBertConfig(**kw)
        torch.manual_seed(0)
        model = ModernBertModel._from_config(cfg, attn_implementation=attn, dtype=dtype)
    return model.to(args.device).eval()


def bench_set(model, name, args, torch, ours_line=None):
    import numpy as np

    index, max_len, _, per_batch, _ = SETS[name]
    lens = set_lengths(name, args.sequences)
    if args.max_len:
        lens = [min(l, args.max_len) for l in lens]
        max_len = min(max_len, args.max_len)
    flat = set_ids_flat(name, sum(lens))
    checksum = ids_checksum(flat)
    # The checksum covers the sequences run: compare it when ours ran the same prefix of the set.
    # (A shorter prefix here is the same generator and distribution; the throughputs still compare.)
    ours = ours_line or {}
    if ours.get("ids_checksum") is not None and ours.get("sequences") == args.sequences \
            and ours.get("max_len_cap") == args.max_len and str(checksum) != str(ours["ids_checksum"]):
        raise SystemExit(f"{name}: id checksum {checksum} differs from ours {ours['ids_checksum']}: not the same data")
    # Right-padded batches with an attention mask (the paper's notebooks), pre-copied to the device.
    batches = []
    offs = np.concatenate([[0], np.cumsum(lens)])
    for b0 in range(0, len(lens), per_batch):
        bl = lens[b0:b0 + per_batch]
        ids = np.zeros((len(bl), max_len), dtype=np.int64)
        mask = np.zeros((len(bl), max_len), dtype=np.int64)
        for r, l in enumerate(bl):
            ids[r, :l] = flat[offs[b0 + r]:offs[b0 + r] + l]
            mask[r, :l] = 1
        batches.append((torch.from_numpy(ids).to(args.device), torch.from_numpy(mask).to(args.device)))
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    passes = []
    with torch.inference_mode():
        model(input_ids=batches[0][0], attention_mask=batches[0][1])  # one warm-up batch
        sync()
        for _ in range(args.passes):
            t = time.perf_counter()
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask)
            sync()
            passes.append(time.perf_counter() - t)
    tokens = sum(lens)
    return {"tokens_per_pass": tokens, "pass_s": [round(p, 6) for p in passes],
            "tokens_per_s": round(tokens * args.passes / sum(passes), 1), "ids_checksum": str(checksum),
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if args.device == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["base", "large"], default="base")
    ap.add_argument("--model", help="checkpoint directory or repo id instead of random weights")
    ap.add_argument("--layers", type=int, help="override the layer count (CI only)")
    ap.add_argument("--set", default="all", help="comma list of " + ", ".join(SETS) + " or all")
    ap.add_argument("--sequences", type=int, default=8192)
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--max-len", type=int, help="CI only: cap every length (not the paper's protocol)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--attn", default="auto", help="comma list of sdpa, flash_attention_2, eager; auto = sdpa (+ FA2 if installed)")
    ap.add_argument("--ours", help="file of `modernbert bench` JSON lines to compare with")
    ap.add_argument("--run-ours", action="store_true", help="run target/{release,debug}/modernbert bench with the same settings")
    ap.add_argument("--ours-binary")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    import torch
    import transformers

    sets = list(SETS) if args.set == "all" else args.set.split(",")
    for s in sets:
        if s not in SETS:
            raise SystemExit(f"unknown set {s}")
    if args.attn == "auto":
        attns = ["sdpa"]
        try:
            import flash_attn  # noqa: F401
            if args.device == "cuda":
                attns.append("flash_attention_2")
        except ImportError:
            print("# flash-attn not installed: sdpa only", file=sys.stderr)
    else:
        attns = args.attn.split(",")
    ours = load_ours(args.ours) if args.ours else (run_ours(args, sets) if args.run_ours else {})
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for attn in attns:
        model = build_model(args, attn, torch)
        for s in sets:
            r = bench_set(model, s, args, torch, ours.get(s))
            mine = ours.get(s, {}).get("tokens_per_s")
            line = {"bench": "transformers", "set": s, "attn_implementation": attn, "dtype": args.dtype,
                    "device": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
                    "shape": args.model or args.shape, "layers": args.layers, "sequences": args.sequences,
                    "passes": args.passes, "max_len_cap": args.max_len, **r,
                    "ours_tokens_per_s": mine, "ours_device": ours.get(s, {}).get("device"),
                    "ours_sequences": ours.get(s, {}).get("sequences"),
                    "ratio_ours_over_hf": round(mine / r["tokens_per_s"], 3) if mine else None}
            print(json.dumps(line))
            rows.append((s, attn, r["tokens_per_s"], mine, line["ratio_ours_over_hf"]))
        del model
    print(f"# {device_name}, {args.dtype}, {args.model or args.shape}", file=sys.stderr)
    print(f"{'set':>15} | {'attn':>17} | {'HF K tok/s':>10} | {'ours K tok/s':>12} | {'ours/HF':>7}", file=sys.stderr)
    for s, attn, hf, mine, ratio in rows:
        m = f"{mine / 1e3:.1f}" if mine else "-"
        print(f"{s:>15} | {attn:>17} | {hf / 1e3:>10.1f} | {m:>12} | {ratio if ratio else '-':>7}", file=sys.stderr)
    if any(r[3] and ours.get(r[0], {}).get("device_kind") not in (None, "cuda") for r in rows) and args.device == "cuda":
        print("# WARNING: our numbers did not come from a CUDA device", file=sys.stderr)


if __name__ == "__main__":
    main()
