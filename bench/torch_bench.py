"""PyTorch/transformers on CPU on the same checkpoint as intervene (issue 2, "Speed"): loads the
imported intervene checkpoint directory in f32, times prefill of the 128-token bench prompt and
greedy decode with the KV cache (past_key_values).

Usage:  python bench/torch_bench.py [--ckpt models/smollm2] [--threads 2] [--repeats 7]
            [--decode-tokens 64]
Needs:  torch, transformers. Prints one JSON object on stdout.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="models/smollm2")
    ap.add_argument("--prompt", default="bench/prompt.txt")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.ckpt)
    ids = tok(open(a.prompt).read(), add_special_tokens=False)["input_ids"][: a.prompt_tokens]
    if len(ids) < a.prompt_tokens:
        raise SystemExit(f"{a.prompt} encodes to fewer than {a.prompt_tokens} tokens")
    model = AutoModelForCausalLM.from_pretrained(a.ckpt, dtype=torch.float32).eval()
    x = torch.tensor([ids])

    def prefill():
        t = time.perf_counter()
        out = model(x, use_cache=True)
        return time.perf_counter() - t, out

    with torch.inference_mode():
        prefill()  # warm-up
        prefill_s = [prefill()[0] for _ in range(a.repeats)]

        # Greedy decode by hand, one token per step through the cache, so exactly
        # decode_tokens steps run (no early stop at EOS) and only the steps are timed.
        decode_s = []
        gen = []
        for run in range(1 + min(3, a.repeats)):
            _, out = prefill()
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            gen = []
            t = time.perf_counter()
            for _ in range(a.decode_tokens):
                gen.append(nxt)
                out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = int(out.logits[0, -1].argmax())
            if run > 0:  # the first run warms up
                decode_s.append(time.perf_counter() - t)

    p = statistics.median(prefill_s)
    d = statistics.median(decode_s)
    print(json.dumps({
        "tool": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}",
        "checkpoint": a.ckpt,
        "threads": torch.get_num_threads(),
        "load_avg": " ".join(open("/proc/loadavg").read().split()[:3]),
        "prompt_tokens": len(ids),
        "prompt_ids": ids,
        "prefill": {"what": "model(x, use_cache=True), logits for all 128 positions",
                    "median_s": p, "samples_s": prefill_s, "tokens_per_s": len(ids) / p},
        "decode": {"tokens": a.decode_tokens, "median_s": d, "samples_s": decode_s,
                   "tokens_per_s": a.decode_tokens / d, "greedy_ids": gen},
    }, indent=1))


if __name__ == "__main__":
    main()
