#!/usr/bin/env python3
"""One training step in PyTorch (CPU, f32), the reference side of bench/train_step.sh: the same
LCG token batch, the upper layers trainable, next-token cross-entropy, AdamW(lr 1e-5).

Usage: train_step.py <model dir> <batch> <seq len> <upper layers>
"""

import resource
import sys
import time

import torch
from transformers import LlamaForCausalLM


def tokens(batch, length, vocab):
    x = 12345
    out = []
    for _ in range(batch):
        row = []
        for _ in range(length):
            x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
            row.append((x >> 8) % vocab)
        out.append(row)
    return out


def main():
    model_dir, b, t, upper = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    t0 = time.time()
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    load_s = time.time() - t0
    n = model.config.num_hidden_layers
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for layer in model.model.layers[n - upper:]:
        for p in layer.parameters():
            p.requires_grad_(True)
            params.append(p)
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.tensor(tokens(b, t, model.config.vocab_size))
    t1 = time.time()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    fb_s = time.time() - t1
    opt.step()
    step_s = time.time() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch:   load {load_s:.2f}s, forward+backward {fb_s:.2f}s, step total {step_s:.2f}s, "
          f"loss {loss.item():.6f}, peak RSS {rss:.0f} MiB, threads {torch.get_num_threads()}")


main()
