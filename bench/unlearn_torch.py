#!/usr/bin/env python3
"""Time per optimisation step of RMU and GD in PyTorch on the CPU: the reference side of
bench/unlearn_speed.sh (issue 8), doing per step what `intervene rmu` / `intervene gd` do.

RMU (src/interventions/unlearn/rmu.rs): a forward that stops at layer L on a forget batch, MSE
of its hidden states to c*u; a forward to L on a retain batch, alpha * MSE to the frozen
model's layer-L states (computed once before the loop, untimed, as ours does); each followed by
its backward, which autograd stops at the lowest trained tensor; one AdamW step (eps 1e-6, no
decay) on mlp.down_proj of layers L-2..L. u is the tool's draw (SplitMix64 from --seed,
uniform [0,1) with 24-bit mantissas, unit L2 norm) and c = --steering-scale x the median token
norm at L on forget batch 0, so step 0 matches the tool's losses.

GD (src/interventions/unlearn/gd.rs): the whole model on a forget batch, the mean next-token
NLL negated; the whole model on a retain batch, retain_weight x its mean NLL; one Adam step
(eps 1e-8, no decay) on every tensor of the upper half of the layers plus the final norm (plus
the LM head if untied; SmolLM2 ties it to the embedding, which stays frozen).

Batches: consecutive documents of the JSONL files (`text`), tokenised with the checkpoint's
tokenizer.json with its special tokens (SmolLM2 adds none), right-truncated to --max-len;
step t uses forget and retain batch t (wrapping). Ours packs each batch without padding;
here it is right-padded to its longest document with an attention mask and the pads are
left out of every loss, so the printed real/padded token counts show the extra work.

Requirements: /opt/pyref/bin/python with torch 2.x (CPU) and transformers >= 4.50 (uses the
`dtype=` keyword and `use_cache=False`), plus `tokenizers` and numpy (pulled in by
transformers). Run from the repository root:

    /opt/pyref/bin/python bench/unlearn_torch.py rmu --threads 1 --steps 20 \
        --layer 7 --lr 2e-2 --alpha 10 --steering-scale 2 --skip-first 1
    /opt/pyref/bin/python bench/unlearn_torch.py gd --threads 1 --steps 20 --lr 1e-5

Prints one JSON line: per-step wall time (median, min, mean, ms) and process CPU time over
--steps timed steps after --warmup untimed ones, token counts, and the losses of the first
--report-steps steps.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM
from transformers.utils import logging as hf_logging

MASK64 = (1 << 64) - 1


def splitmix64(seed):
    """The tool's SplitMix64 stream (src/data/rng.rs), so u is the same vector as ours."""
    state = seed & MASK64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


def random_direction(seed, hidden):
    """rmu.rs `random_directions` for one forget file: f32 draws, the norm closed in f64."""
    rng = splitmix64(seed)
    u = np.array([(next(rng) >> 40) for _ in range(hidden)], dtype=np.float64) / float(1 << 24)
    u = u.astype(np.float32)
    norm = np.float32(np.sqrt(np.sum(u.astype(np.float64) ** 2)))
    return torch.from_numpy(u / norm)


def load_docs(path, tok, max_len, min_tokens):
    """corpus.rs `TokenCorpus::load`: blank documents and those shorter than min_tokens after
    truncation are dropped, so batch boundaries fall where ours do."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            if not text.strip():
                continue
            ids = tok.encode(text, add_special_tokens=True).ids[:max_len]
            if len(ids) >= max(min_tokens, 1):
                docs.append(ids)
    if not docs:
        raise SystemExit(f"{path}: no document with at least {min_tokens} tokens")
    return docs


def pad(seqs, pad_id):
    """Right padding keeps every real token at its own position, so under the causal mask its
    hidden state is the same as in an unpadded run."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


class Batches:
    """Padded tensors per batch index, built once: tokenising and padding are not part of our
    timed step either (ours tokenises before the loop)."""

    def __init__(self, docs, bs, pad_id):
        self.docs, self.bs, self.pad_id, self.cache = docs, bs, pad_id, {}

    def get(self, i):
        """Batch i, wrapping around the corpus as ours does: (batch index, ids, mask)."""
        key = i % -(-len(self.docs) // self.bs)
        if key not in self.cache:
            seqs = self.docs[key * self.bs : (key + 1) * self.bs]
            self.cache[key] = (key, *pad(seqs, self.pad_id))
        return self.cache[key]


def hidden(model, ids, mask):
    # The model was cut after layer L with its final norm removed, so this is h_L.
    return model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


def masked_mse(h, target, keep):
    # Boolean indexing keeps real, unskipped rows only: mean over kept rows x hidden.
    return (h[keep] - (target if target.dim() == 1 else target[keep])).pow(2).mean()


def run_rmu(a, model, forget, retain, pad_id):
    n = model.config.num_hidden_layers
    if not 0 <= a.layer < n:
        raise SystemExit(f"--layer {a.layer}: the model has {n} layers")
    # Every pass stops at L, as ours: drop the layers above and the final norm.
    model.model.layers = model.model.layers[: a.layer + 1]
    model.model.norm = torch.nn.Identity()
    update = range(max(a.layer - 2, 0), a.layer + 1)
    params = [model.model.layers[l].mlp.down_proj.weight for l in update]
    for p in params:
        p.requires_grad_(True)
    c = model.config.hidden_size

    fb = Batches(forget, a.batch_size, pad_id)
    rb = Batches(retain, a.batch_size, pad_id)
    total = a.warmup + a.steps
    with torch.no_grad():
        # apply.rs `median_token_norm`: over every real token of forget batch 0, upper median.
        _, ids, mask = fb.get(0)
        h = hidden(model, ids, mask)[mask.bool()]
        norms = sorted(h.double().pow(2).sum(-1).sqrt().float().tolist())
        median_norm = norms[len(norms) // 2]
        coef = np.float32(a.steering_scale) * np.float32(median_norm)
        control = random_direction(a.seed, c) * torch.tensor(coef)
        frozen = {}
        for t in range(total):
            key, ids, mask = rb.get(t)
            if key not in frozen:
                frozen[key] = hidden(model, ids, mask).clone()

    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)

    def keep_of(mask):
        pos = torch.arange(mask.shape[1]).unsqueeze(0)
        return mask.bool() & (pos >= a.skip_first)

    def step(t):
        opt.zero_grad(set_to_none=True)
        _, ids, mask = fb.get(t)
        lf = masked_mse(hidden(model, ids, mask), control, keep_of(mask))
        lf.backward()
        key, ids_r, mask_r = rb.get(t)
        lr_ = masked_mse(hidden(model, ids_r, mask_r), frozen[key], keep_of(mask_r))
        (a.alpha * lr_).backward()
        opt.step()
        rec = {"step": t, "forget_loss": lf.item(), "retain_loss": lr_.item()}
        return rec, (mask, mask_r)

    return step, total, {"median_token_norm": median_norm, "steering_coef": float(coef)}


def run_gd(a, model, forget, retain, pad_id):
    n = model.config.num_hidden_layers
    params = [p for l in range(n // 2, n) for p in model.model.layers[l].parameters()]
    params.append(model.model.norm.weight)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    if not tied:
        params.append(model.lm_head.weight)
    for p in params:
        p.requires_grad_(True)
    fb = Batches(forget, a.batch_size, pad_id)
    rb = Batches(retain, a.batch_size, pad_id)
    opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def nll(ids, mask):
        # HF's causal-LM mean over labels != -100: pads never score, nor predict.
        labels = ids.masked_fill(mask == 0, -100)
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss

    def step(t):
        opt.zero_grad(set_to_none=True)
        _, ids, mask = fb.get(t)
        lf = nll(ids, mask)
        (-lf).backward()
        _, ids_r, mask_r = rb.get(t)
        lr_ = nll(ids_r, mask_r)
        (a.retain_weight * lr_).backward()
        opt.step()
        rec = {"step": t, "forget_nll": lf.item(), "retain_nll": lr_.item()}
        return rec, (mask, mask_r)

    info = {
        "tied_embeddings": tied,
        "trained_tensors": len(params),
        "trained_params": sum(p.numel() for p in params),
    }
    return step, a.warmup + a.steps, info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=["rmu", "gd"])
    p.add_argument("--model", default="models/smollm2")
    p.add_argument("--forget", default="data/facts/forget_text.jsonl")
    p.add_argument("--retain", default="data/facts/retain_text.jsonl")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-steps", type=int, default=3, help="steps whose losses are printed")
    p.add_argument("--layer", type=int, default=7)
    p.add_argument("--alpha", type=float, default=1200.0)
    p.add_argument("--steering-scale", type=float, default=4.0)
    p.add_argument("--skip-first", type=int, default=0)
    p.add_argument("--retain-weight", type=float, default=40.0)
    a = p.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.batch_size < 1 or a.max_len < 2:
        raise SystemExit("--steps, --batch-size >= 1; --warmup >= 0; --max-len >= 2")

    torch.set_num_threads(a.threads)
    hf_logging.disable_progress_bar()  # keeps stderr to real problems
    tok = Tokenizer.from_file(f"{a.model}/tokenizer.json")
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa")
    model.train(False)  # no dropout in Llama, but stated
    for q in model.parameters():
        q.requires_grad_(False)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    # A next-token loss needs 2 tokens; RMU's hidden-state loss needs 1 (apply.rs).
    min_tokens = 1 if a.method == "rmu" else 2
    forget = load_docs(a.forget, tok, a.max_len, min_tokens)
    retain = load_docs(a.retain, tok, a.max_len, min_tokens)

    runner = run_rmu if a.method == "rmu" else run_gd
    step, total, info = runner(a, model, forget, retain, pad_id)
    wall, cpu, curve = [], [], []
    real = padded = 0
    for t in range(total):
        t0, c0 = time.perf_counter(), time.process_time()
        rec, masks = step(t)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if t < a.report_steps:
            curve.append(rec)
        if t >= a.warmup:
            wall.append(dt * 1e3)
            cpu.append(dc * 1e3)
            real += sum(int(m.sum()) for m in masks)
            padded += sum(m.numel() for m in masks)
    print(
        json.dumps(
            {
                "side": "torch",
                "method": a.method,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "steps": len(wall),
                "warmup": a.warmup,
                "median_ms": statistics.median(wall),
                "min_ms": min(wall),
                "mean_ms": statistics.fmean(wall),
                # CPU time of the whole process (all threads): with --threads 1 it is the step's
                # cost even when a busy machine makes a niced run wait for a core.
                "cpu_median_ms": statistics.median(cpu),
                "cpu_min_ms": min(cpu),
                "cpu_mean_ms": statistics.fmean(cpu),
                "real_tokens_per_step": real / len(wall),
                "padded_tokens_per_step": padded / len(wall),
                "forget_docs": len(forget),
                "forget_tokens": sum(map(len, forget)),
                "retain_docs": len(retain),
                "retain_tokens": sum(map(len, retain)),
                **info,
                "curve": curve,
            }
        )
    )


if __name__ == "__main__":
    main()
