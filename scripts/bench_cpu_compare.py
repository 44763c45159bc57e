"""This engine's CPU executor beside PyTorch on the same random ModernBERT-base checkpoint, same threads, interleaved.

Shapes: batch 1 x 32 and 1 x 128 tokens (latency: p50 of the in-process call), 64 x 128 and 8 x 512
(throughput: tokens/s of one call's p50). Three implementations, each on token ids (tokenization is not
timed on any side), f32, the same torch/rayon thread count:
  - ours: `modernbert bench --model DIR --latency --device cpu` (the binary's own per-call clock);
  - transformers: AutoModel (ModernBertModel, sdpa) forward(input_ids, attention_mask);
  - sentence-transformers: SentenceTransformer(DIR).forward(features) (transformer + mean pooling).
Each round runs every shape on all three back to back ("the same minute"); the report is the median
over rounds. Memory: our process's peak resident bytes (VmHWM: load + runs) at batch 1, against the
backbone's f32 weight bytes, and the same for a fresh transformers process that loads and runs 1 x 32.

The checkpoint is scripts/make_fullsize.py's (random weights at the real shape, f32 safetensors),
with the repository's ModernBERT tokenizer and a mean-pooling sentence-transformers layout beside it.

Run (repo root, after `cargo build --release`):
  .venv-ref/bin/python scripts/bench_cpu_compare.py [--threads 2] [--rounds 3] [--runs 5]
Prints one JSON line per shape and a summary table (markdown) with the ratios.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1, 32), (1, 128), (64, 128), (8, 512)]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def prepare(base: Path, out: Path) -> None:
    """A sentence-transformers directory over the full-size checkpoint (links, not copies)."""
    subprocess.run([sys.executable, str(ROOT / "scripts/make_fullsize.py"), "--out", str(base)], check=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ["config.json", "model.safetensors"]:
        link = out / name
        if not link.exists():
            link.symlink_to((base / name).resolve())
    tok = out / "tokenizer.json"
    if not tok.exists():
        tok.write_bytes((ROOT / "tests/data/modernbert-tokenizer/tokenizer.json").read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192,
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling/config.json").write_text(json.dumps({"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}))


def ours(binary: Path, model: Path, batch: int, length: int, runs: int, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [str(binary), "bench", "--model", str(model), "--latency", "--device", "cpu", "--runs", str(runs),
           "--batches", str(batch), "--lengths", str(length)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = [json.loads(l) for l in out.splitlines() if l.startswith("{")][-1]
    return {"s": line["p50_us"] / 1e6, "peak_host_bytes": line.get("peak_host_bytes"),
            "f32_weight_bytes": line.get("f32_weight_bytes")}


def timed(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


TORCH_PEAK = """
import sys, torch
from transformers import AutoModel
torch.set_num_threads(int(sys.argv[2]))
m = AutoModel.from_pretrained(sys.argv[1], attn_implementation="sdpa", dtype=torch.float32).eval()
ids = torch.randint(100, 16000, (1, 32))
with torch.inference_mode():
    m(input_ids=ids, attention_mask=torch.ones_like(ids))
print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5, help="timed calls per shape and implementation (after a warm-up)")
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/modernbert")
    ap.add_argument("--base", type=Path, default=ROOT / "target/fullsize-base")
    ap.add_argument("--dir", type=Path, default=ROOT / "target/cpu-compare-base")
    args = ap.parse_args()
    if not args.binary.exists():
        sys.exit(f"{args.binary} is missing: run `cargo build --release` first")
    prepare(args.base, args.dir)

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel
    import transformers
    import sentence_transformers

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    hf = AutoModel.from_pretrained(args.dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    st = SentenceTransformer(str(args.dir), device="cpu", model_kwargs={"attn_implementation": "sdpa"})
    st.eval()
    gen = torch.Generator().manual_seed(0)

    results = {shape: {"ours": [], "transformers": [], "sentence-transformers": []} for shape in SHAPES}
    memory = {}
    for r in range(args.rounds):
        for batch, length in SHAPES:
            ids = torch.randint(100, 16000, (batch, length), generator=gen)
            mask = torch.ones_like(ids)
            o = ours(args.binary, args.dir, batch, length, args.runs, args.threads)
            results[(batch, length)]["ours"].append(o["s"])
            if batch == 1 and length == 32:
                memory["ours"] = o
            with torch.inference_mode():
                results[(batch, length)]["transformers"].append(
                    timed(lambda: hf(input_ids=ids, attention_mask=mask), args.runs))
                feats = {"input_ids": ids, "attention_mask": mask}
                results[(batch, length)]["sentence-transformers"].append(
                    timed(lambda: st.forward(dict(feats)), args.runs))
            print(f"round {r + 1}/{args.rounds} {batch}x{length} done", file=sys.stderr)

    torch_peak_kib = int(subprocess.run([sys.executable, "-c", TORCH_PEAK, str(args.dir), str(args.threads)],
                                        check=True, capture_output=True, text=True).stdout.split()[-1])
    f32_bytes = memory["ours"]["f32_weight_bytes"]
    header = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "rounds": args.rounds, "runs": args.runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(header))
    rows = []
    for (batch, length), by_impl in results.items():
        med = {k: statistics.median(v) for k, v in by_impl.items()}
        tokens = batch * length
        line = {"batch": batch, "len": length, "tokens": tokens,
                **{f"{k}_s": round(v, 5) for k, v in med.items()},
                **{f"{k}_rounds_s": [round(x, 5) for x in by_impl[k]] for k in by_impl},
                "ours_over_transformers_time": round(med["ours"] / med["transformers"], 3),
                "ours_over_st_time": round(med["ours"] / med["sentence-transformers"], 3)}
        print(json.dumps(line))
        rows.append(line)
    print(json.dumps({"memory": {
        "f32_weight_bytes": f32_bytes,
        "ours_peak_host_bytes_batch1": memory["ours"]["peak_host_bytes"],
        "ours_peak_over_f32_weights": round(memory["ours"]["peak_host_bytes"] / f32_bytes, 3),
        "transformers_peak_host_bytes_batch1": torch_peak_kib * 1024,
        "transformers_peak_over_f32_weights": round(torch_peak_kib * 1024 / f32_bytes, 3)}}))

    print("\n| batch × len | ours | transformers | sentence-transformers | ours / transformers | ours / ST |")
    print("|---|---|---|---|---|---|")
    for l in rows:
        if l["batch"] == 1:
            cell = lambda k: f"{l[k + '_s'] * 1e3:.1f} ms"
            ratio = lambda k: f"{l[k]:.2f}× the time"
        else:
            cell = lambda k: f"{l['tokens'] / l[k + '_s']:.0f} tok/s"
            ratio = lambda k: f"{1 / l[k]:.2f}× the tok/s"
        print(f"| {l['batch']} × {l['len']} | {cell('ours')} | {cell('transformers')} | {cell('sentence-transformers')} "
              f"| {ratio('ours_over_transformers_time')} | {ratio('ours_over_st_time')} |")


if __name__ == "__main__":
    main()
