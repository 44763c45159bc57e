"""CPU throughput of transformers' ModernBertModel (random weights, ModernBERT-base shape, sdpa, float32).

Times 8 sequences x 512 tokens (no padding): one warm-up, then the median of 5 runs. Prints one JSON line:
{"impl": "transformers-sdpa", "threads": N, "tokens": 4096, "seconds": ..., "tokens_per_s": ...}

Run: .venv-ref/bin/python scripts/bench_cpu_torch.py [--threads N]   (default: all cores)
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import ModernBertConfig, ModernBertModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModernBertConfig(pad_token_id=50283, bos_token_id=50281, eos_token_id=50282, cls_token_id=50281,
                           sep_token_id=50282)  # defaults = ModernBERT-base shape
    model = ModernBertModel._from_config(cfg, attn_implementation="sdpa").eval()
    ids = torch.randint(100, 16000, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(args.runs):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    tokens = args.batch * args.seq
    print(json.dumps({"impl": "transformers-sdpa", "threads": args.threads, "tokens": tokens,
                      "seconds": round(sec, 4), "tokens_per_s": round(tokens / sec, 1)}))


if __name__ == "__main__":
    main()
