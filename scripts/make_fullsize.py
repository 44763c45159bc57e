"""Build a random ModernBERT at full size (default: the real ModernBERT-base shape) with a reference output.

Writes into --out DIR: config.json + model.safetensors (f32, ModernBertModel naming, via save_pretrained),
expected.json / expected.safetensors (same schema as tests/fixtures: one case "base_512_300" with two
sequences of 512 and 300 tokens, random ids in [100, 16000) between [CLS]=50281 and [SEP]=50282, output
"last_hidden_state" packed [812, hidden]), and a stamp file written last. If DIR already has a stamp for
the same arguments, nothing is done. Never committed: generated at test/bench time.

Run: .venv-ref/bin/python scripts/make_fullsize.py --out /tmp/mb-base [--layers 22 --hidden 768 ...]
"""
import argparse
import json
import sys
from pathlib import Path

CLS, SEP, PAD = 50281, 50282, 50283


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=1152)
    ap.add_argument("--vocab", type=int, default=50368)
    ap.add_argument("--local-attention", type=int, default=128)
    ap.add_argument("--global-every", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = ap.parse_args()
    stamp = args.out / "stamp.json"
    key = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items()) if k != "threads"}
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        print(f"{args.out}: up to date, nothing to do")
        return
    stamp.unlink(missing_ok=True)

    import torch  # heavy imports only when there is work to do
    from safetensors.torch import save_file
    from transformers import ModernBertConfig, ModernBertModel
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_fixtures import packed, pad_batch
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    cfg = ModernBertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_attention_heads=args.heads,
                           intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                           local_attention=args.local_attention, global_attn_every_n_layers=args.global_every,
                           pad_token_id=PAD, bos_token_id=CLS, eos_token_id=SEP, cls_token_id=CLS, sep_token_id=SEP)
    model = ModernBertModel(cfg).eval()  # default init (std 0.02 linears)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    model.save_pretrained(args.out)

    seqs = [[CLS] + torch.randint(100, 16000, (n - 2,), generator=g).tolist() + [SEP] for n in (512, 300)]
    ids, mask = pad_batch(seqs, PAD)
    with torch.no_grad():
        h = packed(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
    save_file({"base_512_300.last_hidden_state": h}, str(args.out / "expected.safetensors"))
    doc = {"description": f"random ModernBertModel {key} (LayerNorm weights U(0.5,1.5)), f32, v5 config",
           "task": "backbone",
           "cases": [{"name": "base_512_300", "input_ids": seqs,
                      "outputs": {"last_hidden_state": "base_512_300.last_hidden_state"}}]}
    (args.out / "expected.json").write_text(json.dumps(doc) + "\n")
    stamp.write_text(json.dumps(key) + "\n")
    print(f"{args.out}: wrote model + expected {list(h.shape)}")


if __name__ == "__main__":
    main()
