#!/usr/bin/env python3
"""The transformers side of `bench/eval.sh`: the same MMLU questions and WikiText-2 windows that
`intervene eval` scores, timed on the CPU with the same algorithm (one forward per question,
read the " A".." D" log-likelihoods off the last position; non-overlapping windows for
perplexity). Batch size 1, no padding, `logits_to_keep=1` for MC: the strongest plain
transformers setup, so the comparison is not flattered by padding or unneeded logits.

Also counts the arithmetic each side must do (`forward_gflop`: multiply-adds x 2 of the
linears, causal attention and the LM head rows kept) and measures the best rate torch.matmul
(MKL) reaches on this machine at the model's shapes, so the report can say how close to the
machine's f32 ceiling each side runs.

Prints one JSON object: questions, mc_seconds, mc_acc, mc_gflop, ppl_tokens, ppl_seconds, ppl,
ppl_gflop, matmul_gflops.
"""
import argparse
import csv
import glob
import json
import math
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def mmlu(dirname, per_subject):
    qs = []
    for path in sorted(glob.glob(os.path.join(dirname, "*.csv"))):
        subject = os.path.basename(path)[: -len(".csv")]
        for suffix in ("_test", "_dev", "_val"):
            if subject.endswith(suffix):
                subject = subject[: -len(suffix)]
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[:per_subject]
        for r in rows:
            qs.append((subject, r[0], r[1:5], "ABCD".index(r[5].strip())))
    return qs


def context(subject, question, choices):
    s = (f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
         f"{question.strip()}\n")
    for letter, c in zip("ABCD", choices):
        s += f"{letter}. {c}\n"
    return s + "Answer:"


def forward_gflop(cfg, tokens, logit_rows):
    """GFLOP of one causal forward over `tokens` positions with `logit_rows` LM-head rows."""
    c, i, l = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    h, g = cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or c // h
    linear = c * h * d + 2 * c * g * d + h * d * c + 3 * c * i
    # Q K^T and P V over the keys each position sees (t + 1 for position t).
    attention = 2 * h * d * tokens * (tokens + 1) // 2
    return 2 * (l * (linear * tokens + attention) + c * cfg.vocab_size * logit_rows) / 1e9


def matmul_peak(shapes=((2048, 2048, 2048), (2048, 576, 1536), (2048, 1536, 576))):
    """Best GFLOP/s of torch.matmul over a few repeats of each shape."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmlu", required=True)
    ap.add_argument("--per-subject", type=int, required=True)
    ap.add_argument("--wiki", required=True)
    ap.add_argument("--layout")
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--windows", type=int, required=True)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    letters = [tok(" " + l, add_special_tokens=False).input_ids for l in "ABCD"]
    assert all(len(l) == 1 for l in letters)
    letters = [l[0] for l in letters]

    qs = mmlu(a.mmlu, a.per_subject)
    correct = 0
    mc_gflop = 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        for subject, question, choices, answer in qs:
            ids = tok(context(subject, question, choices), add_special_tokens=False).input_ids
            mc_gflop += forward_gflop(model.config, len(ids), 1)
            logits = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
            lls = torch.log_softmax(logits.double(), -1)[letters]
            correct += int(torch.argmax(lls).item() == answer)
    mc_seconds = time.perf_counter() - t0

    raw = open(a.wiki, encoding="utf-8").read().split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    if a.layout:  # restore the blank rows of the original layout (SOURCES.md 4a/4b)
        content = iter(l for l in raw if l.strip())
        rows = ["" if not l.strip() else next(content) + "\n"
                for l in open(a.layout, encoding="utf-8").read().split("\n")[:-1]]
    else:
        rows = ["" if not l.strip() else l + "\n" for l in raw]
    enc = tok("\n\n".join(rows), return_tensors="pt").input_ids
    n = min(enc.numel() // a.seqlen, a.windows)
    nll = 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            x = enc[:, i * a.seqlen:(i + 1) * a.seqlen]
            logits = model(x).logits[0, :-1].double()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
    ppl_seconds = time.perf_counter() - t0
    with torch.no_grad():
        peak = matmul_peak()
    print(json.dumps(dict(questions=len(qs), mc_seconds=mc_seconds, mc_acc=correct / len(qs),
                          mc_gflop=mc_gflop, ppl_tokens=n * a.seqlen, ppl_seconds=ppl_seconds,
                          ppl=math.exp(nll / (n * (a.seqlen - 1))),
                          ppl_gflop=n * forward_gflop(model.config, a.seqlen, a.seqlen),
                          matmul_gflops=peak)))


if __name__ == "__main__":
    main()
