#!/usr/bin/env python3
"""The transformers peer of `moe bench --device cuda`: a random-weight
OLMoE-1B-7B in bf16 (the shapes of the synthetic model moe benchmarks),
sdpa attention and the experts on torch's grouped_mm, timed the way moe's
benchmark times itself:

  prefill P   one forward over a P-token prompt (only the last position's
              logits: a 50K-token prompt's full logits would be 5 GB),
              synchronised, median of --repeat runs (one run past 8192);
  decode      greedy one-token steps on the cache of that prompt, the
              median step's rate, as tok/s.

  python3 bench/transformers_peer.py [--device cuda] [--prompts 2048,50000]
      [--gen-tokens 128] [--layers 16] [--repeat 3] [--json FILE]

Prints one line a prompt length; with --json also writes them as a JSON
list. Weights are initialised on the device itself (a 7B model initialised
on a CPU takes minutes). Needs torch and transformers.
"""
import argparse
import inspect
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import OlmoeConfig, OlmoeForCausalLM


def olmoe_1b_7b(layers, context):
    """OLMoE-1B-7B's shapes (as moe's synthetic model has them)."""
    return OlmoeConfig(vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=layers,
                       num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
                       norm_topk_prob=False, max_position_embeddings=context, rope_theta=10000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False)


def build(args, context):
    cfg = olmoe_1b_7b(args.layers, context)
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = OlmoeForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    experts = "default"
    if hasattr(model, "set_experts_implementation"):
        try:
            model.set_experts_implementation(args.experts)
            experts = args.experts
        except Exception as e:  # an older transformers: say so, run its default
            print(f"note: experts implementation {args.experts!r} not set: {e}", file=sys.stderr)
    # small weights, as a trained model's, so activations stay finite in bf16
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    return model.eval(), experts


def cache_kw(model):
    """The forward's name for the cache argument (`cache` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def prefill(model, ids, device):
    cache = transformers.DynamicCache()
    sync(device)
    t = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kw(model): cache})
    sync(device)
    return time.perf_counter() - t, out.logits[:, -1].argmax(-1, keepdim=True), cache


@torch.no_grad()
def decode(model, nxt, cache, steps, device):
    times, kw = [], cache_kw(model)
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        out = model(input_ids=nxt, use_cache=True, **{kw: cache})
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", default="2048,50000", help="prompt lengths, comma-separated")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--experts", default="grouped_mm")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    prompts = [int(p) for p in args.prompts.split(",") if p]
    if not prompts or min(prompts) < 1 or args.gen_tokens < 1:
        ap.error("--prompts needs lengths of at least 1 and --gen-tokens at least 1")

    model, experts = build(args, max(prompts) + args.gen_tokens + 1)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    # a warm-up forward: kernels chosen and compiled before anything is timed
    warm = torch.randint(0, 50304, (1, 64), generator=g).to(args.device)
    _, nxt, cache = prefill(model, warm, args.device)
    decode(model, nxt, cache, 4, args.device)

    rows = []
    for P in prompts:
        ids = torch.randint(0, 50304, (1, P), generator=g).to(args.device)
        runs = 1 if P > 8192 else args.repeat
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        pre = []
        for _ in range(runs):
            del cache
            s, nxt, cache = prefill(model, ids, args.device)
            pre.append(s)
        steps = decode(model, nxt, cache, args.gen_tokens, args.device)
        row = {"peer": "transformers", "version": transformers.__version__, "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "experts": experts, "attention": "sdpa", "dtype": "bf16", "layers": args.layers,
               "prompt_tokens": P, "prefill_s": statistics.median(pre), "prefill_tps": P / statistics.median(pre),
               "gen_tokens": args.gen_tokens, "decode_tps": 1.0 / statistics.median(steps),
               "peak_gpu_bytes": torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else 0}
        rows.append(row)
        print(f"transformers {row['version']} ({experts}, sdpa, bf16) on {row['device']}: prompt {P}: "
              f"prefill {row['prefill_s']:.3f} s = {row['prefill_tps']:.0f} tok/s | decode at {P} context "
              f"{row['decode_tps']:.1f} tok/s over {args.gen_tokens} | peak {row['peak_gpu_bytes'] / 2**30:.1f} GiB",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
