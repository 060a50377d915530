#!/usr/bin/env python3
"""The editing subcommands' computation in PyTorch on CPU, for bench/edit_speed.sh (issue 7).

Requirements (the reference venv, e.g. /opt/pyref/bin/python): torch (CPU), transformers,
tokenizers, safetensors, peft (LoRA only). Tested with torch 2.15, transformers 5.24,
peft 0.21. Not used by the Rust tool at run time.

    python bench/edit_torch.py memit MODEL --requests FILE --limit N --ours OURS.json \
        --stats-corpus TEXT --stats-samples S --stats-seqlen T --cache-dir DIR --out DIR
    python bench/edit_torch.py rome  MODEL ... (same flags; --limit R)
    python bench/edit_torch.py ft    MODEL --requests FILE --limit N --ours OURS.json --out DIR
    python bench/edit_torch.py lora  MODEL --requests FILE --limit N --ours OURS.json --out DIR

MODEL is an `intervene import`ed checkpoint directory (Hugging Face layout, f32). Requests:
zsRE (MEND) JSONL only. The computation follows src/interventions/edit/ step for step, so that
both sides do the same work (same passes, same sequences, same optimiser steps):

* covariance.rs: the corpus (plain text = one document; JSONL = its `text` fields) tokenised,
  cut into pieces of --stats-seqlen tokens (pieces of 2+ tokens, the first --stats-samples);
  forwards of up to 4096 tokens stopping after the top edited layer; E[k k^T] of the
  down_proj input over every token (f32 products, f64 sums), cached per layer in --cache-dir.
* templates.rs: as many prefixes sampled (top-k 5) as ours, of the same lengths; the
  computation then uses OUR templates (read from the --json report of our run, OURS.json),
  so both sides edit with the same prompts.
* value.rs: delta added at the subject's last token of every rewriting prompt and of the
  "{subject} is a" KL prompt (MLP output of layer l for ROME, residual leaving layer L for
  MEMIT); loss = NLL + kl_factor*KL + wd*||delta||/||init||^2; Adam; clamp after each step; a
  forward and a backward every iteration (ours computes the gradient of the last iteration
  too); the NLL/KL head runs on the scored rows only, as ours (train/head.rs).
  Early stop: every request runs exactly as many iterations as it did in OUR run (from
  OURS.json), so the work is equal; the iteration where this side's own rule (loss < 5e-2)
  would have stopped is reported beside it.
* memit.rs: keys per (request, template group) forward, residuals at L on the plain prompts,
  R / (m - i), Delta W = R^T (lambda C + K K^T)^-1 K in f64 (Cholesky), layer by layer.
* rome.rs: k_bar over all templates (one forward), u = C^-1 k_bar / ||.||, value at the MLP
  output, Lambda = (v - W k) / (u.k), W += Lambda u^T, request after request.
* ft.rs / lora.rs: every request in one padded batch, teacher-forced target loss (per-example
  mean for FT, token mean for LoRA) on the target rows only, Adam; a batch whose loss is below
  the stop loss takes no step; exactly as many epochs as OUR run did (the epoch where this
  side's own stop rule would have ended is reported); initial and final loss with a plain
  inference forward in chunks of 8 (full logits, as ours' eval_loss). LoRA: peft's LoraConfig
  (rank, alpha, q/v of every layer, dropout 0), merged at the end.

Batches are right-padded (PyTorch has no packed-sequence attention here); the padded token
count is reported beside the real one. The changed tensors are saved (safetensors) to --out,
as ours writes its changed tensors. Prints one JSON object on stdout: phase times, losses.

Driven by bench/edit_speed.sh, which runs all four paths beside ours and prints, per run, the
quantity both sides should agree on (MEMIT's final ||Z - H||, the value losses, FT's final
loss). LoRA's final loss differs by design: PEFT draws its A matrices from torch's generator,
ours from its own seeded one, so only the work (the epochs, the shapes) is the same.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

T0 = time.perf_counter()
from tokenizers import Tokenizer  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

STARTS = ["The", "Therefore", "Because", "I", "You"]
ROME_GROUPS = [(5, 10), (10, 10)]
MEMIT_GROUPS = [(10, 5)]
BATCH_TOKENS = 4096
VALUE_STOP = 5e-2
PAD = 2


class Stop(Exception):
    pass


def now():
    return time.perf_counter()


class Tok:
    def __init__(self, model_dir):
        self.t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))

    def enc(self, text, special):
        return self.t.encode(text, add_special_tokens=special).ids


def read_zsre(path, limit):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            out.append({"subject": r["subject"], "prompt": r["src"], "target_new": r["alt"]})
            if len(out) == limit:
                break
    return out


class Req:
    """prompts.rs::PreparedRequest."""

    def __init__(self, tok, r):
        self.tok = tok
        at = r["prompt"].find(r["subject"])
        if at < 0:
            raise SystemExit(f"subject {r['subject']!r} not in prompt {r['prompt']!r}")
        self.prefix = r["prompt"][:at]
        self.subject = r["subject"]
        self.suffix = r["prompt"][at + len(r["subject"]):]
        t = r["target_new"]
        self.target = tok.enc(t if t.startswith(" ") else " " + t, False)

    def locate(self, prefix, suffix):
        head = self.tok.enc(prefix + self.subject, True)
        toks = self.tok.enc(prefix + self.subject + suffix, True)
        return toks, len(head) - 1

    def in_context(self, ctx):
        pre, suf = ctx.split("{}", 1)
        return self.locate(pre + self.prefix, self.suffix + suf)

    def rewriting(self, ctx):
        toks, sl = self.in_context(ctx)
        return toks + self.target[:-1], sl, len(toks) - 1

    def kl_prompt(self):
        return self.locate("", " is a")


STATS = {"real_tokens": 0, "padded_tokens": 0, "forwards": 0}


def pad(seqs):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    STATS["real_tokens"] += sum(len(s) for s in seqs)
    STATS["padded_tokens"] += ids.numel()
    STATS["forwards"] += 1
    return ids, mask


def first(out):
    return out[0] if isinstance(out, tuple) else out


def run_until(model, seqs, layer, capture=(), mlp_out=None):
    """Forward stopping after decoder layer `layer`: its output, the down_proj inputs of the
    layers in `capture`, and the MLP output of layer `mlp_out`."""
    got = {}
    hooks = []
    layers = model.model.layers
    for l in capture:
        def pre(_m, args, l=l):
            got[("k", l)] = args[0]
        hooks.append(layers[l].mlp.down_proj.register_forward_pre_hook(pre))
    if mlp_out is not None:
        def mo(_m, _a, out):
            got["mlp"] = out
        hooks.append(layers[mlp_out].mlp.register_forward_hook(mo))

    def stop(_m, _a, out):
        got["h"] = first(out)
        raise Stop()
    hooks.append(layers[layer].register_forward_hook(stop))
    ids, mask = pad(seqs)
    try:
        with torch.inference_mode():
            model.model(input_ids=ids, attention_mask=mask, use_cache=False)
    except Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return got, mask


# ---------------------------------------------------------------- covariance (covariance.rs)

def stats_pieces(tok, corpus, samples, seqlen):
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    if corpus.lower().endswith((".jsonl", ".json", ".ndjson")):
        docs = [json.loads(l)["text"] for l in text.splitlines() if l.strip()]
    else:
        docs = [text]
    pieces = []
    for d in docs:
        ids = tok.enc(d, True)
        for i in range(0, len(ids), seqlen):
            c = ids[i:i + seqlen]
            if len(c) >= 2:
                pieces.append(c)
                if len(pieces) == samples:
                    return pieces
    return pieces


def layer_stats(model, tok, layers, a, timings):
    paths = {l: os.path.join(a.cache_dir, f"torch-cov-l{l}-s{a.stats_samples}-t{a.stats_seqlen}.pt")
             for l in layers}
    covs = {l: torch.load(p) for l, p in paths.items() if os.path.exists(p)}
    missing = [l for l in layers if l not in covs]
    t = now()
    reused = not missing
    if missing:
        pieces = stats_pieces(tok, a.stats_corpus, a.stats_samples, a.stats_seqlen)
        n = model.config.intermediate_size
        sums = {l: torch.zeros(n, n, dtype=torch.float64) for l in missing}
        count = 0
        i = 0
        while i < len(pieces):
            j, toks = i, 0
            while j < len(pieces) and (j == i or toks + len(pieces[j]) <= BATCH_TOKENS):
                toks += len(pieces[j])
                j += 1
            got, mask = run_until(model, pieces[i:j], max(missing), capture=missing)
            keep = mask.bool()
            for l in missing:
                x = got[("k", l)][keep]
                sums[l] += (x.T @ x).double()
            count += toks
            i = j
        os.makedirs(a.cache_dir, exist_ok=True)
        for l in missing:
            covs[l] = (sums[l] / count).float()
            torch.save(covs[l], paths[l])
    timings["covariance"] = now() - t
    return [covs[l] for l in layers], reused


# ---------------------------------------------------------------- templates (templates.rs)

def sample_templates(model, tok, groups, seed):
    """The same number of top-k prefixes of the same lengths as ours (the edit uses ours)."""
    torch.manual_seed(seed)
    out = []
    for length, n_gen in groups:
        for start in STARTS:
            for _ in range(n_gen // len(STARTS)):
                ids = torch.tensor([tok.enc(start, True)])
                with torch.inference_mode():
                    g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                       top_k=5, top_p=1.0, temperature=1.0,
                                       max_new_tokens=max(length - ids.shape[1], 0),
                                       min_new_tokens=max(length - ids.shape[1], 0),
                                       pad_token_id=PAD)
                out.append(tok.t.decode(g[0].tolist(), skip_special_tokens=False))
    return out


# ---------------------------------------------------------------- value vector (value.rs)

def row_log_probs(model, h, b, p):
    return torch.log_softmax(model.lm_head(h[b, p]), dim=-1)


def optimise_value(model, layer, site, rewriting, kl, target, hp, iters):
    plain_toks, plain_sl, _ = rewriting[0]
    if site == "mlp":
        got, _ = run_until(model, [plain_toks], layer, mlp_out=layer)
        init = got["mlp"][0, plain_sl].clone()
    else:
        got, _ = run_until(model, [plain_toks], layer)
        init = got["h"][0, plain_sl].clone()
    init_norm = init.norm().item()
    n_rw, t_len = len(rewriting), len(target)
    kl_b = torch.tensor([n_rw + i for i in range(len(kl))])
    kl_p = torch.tensor([sl for _, sl in kl])
    with torch.inference_mode():
        ids, mask = pad([t for t, _ in kl])
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        kl_init = torch.log_softmax(logits[torch.arange(len(kl)), kl_p], dim=-1).clone()
    seqs = [t for t, _, _ in rewriting] + [t for t, _ in kl]
    ids, mask = pad(seqs)
    sub = torch.zeros(ids.shape[0], ids.shape[1], 1)
    for b, (_, sl, _) in enumerate(rewriting):
        sub[b, sl] = 1
    for i, (_, sl) in enumerate(kl):
        sub[n_rw + i, sl] = 1
    ce_b, ce_p, ce_t = [], [], []
    for s, (_, _, f) in enumerate(rewriting):
        for j, t in enumerate(target):
            ce_b.append(s)
            ce_p.append(f + j)
            ce_t.append(t)
    ce_b, ce_p, ce_t = torch.tensor(ce_b), torch.tensor(ce_p), torch.tensor(ce_t)
    delta = torch.zeros(model.config.hidden_size, requires_grad=True)

    def add(_m, _a, out):
        if isinstance(out, tuple):
            return (out[0] + sub * delta,) + tuple(out[1:])
        return out + sub * delta
    mod = model.model.layers[layer].mlp if site == "mlp" else model.model.layers[layer]
    hook = mod.register_forward_hook(add)
    opt = torch.optim.Adam([delta], lr=hp["lr"])
    max_norm = hp["clamp"] * init_norm
    losses, own_stop = [], None
    try:
        for it in range(iters):
            opt.zero_grad()
            STATS["forwards"] += 1
            STATS["real_tokens"] += int(mask.sum())
            STATS["padded_tokens"] += ids.numel()
            h = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            lp = row_log_probs(model, h, ce_b, ce_p)
            nll = -lp[torch.arange(len(ce_t)), ce_t].sum() / (n_rw * t_len)
            kl_lp = row_log_probs(model, h, kl_b, kl_p)
            klv = hp["kl_factor"] * torch.nn.functional.kl_div(
                kl_init, kl_lp, log_target=True, reduction="batchmean")
            wd = hp["weight_decay"] * delta.norm() / init_norm ** 2
            loss = nll + klv + wd
            loss.backward()
            total = loss.item()
            losses.append(total)
            if own_stop is None and total < VALUE_STOP:
                own_stop = it
            if it + 1 == iters:
                break
            opt.step()
            with torch.no_grad():
                dn = delta.norm()
                if dn > max_norm:
                    delta.mul_(max_norm / dn)
    finally:
        hook.remove()
    return {"value": (init + delta.detach()), "losses": losses, "own_stop": own_stop,
            "init_norm": init_norm, "delta_norm": delta.norm().item()}


# ---------------------------------------------------------------- MEMIT and ROME

def keys_at(model, layer, located):
    got, _ = run_until(model, [t for t, _ in located], layer, capture=[layer])
    k = got[("k", layer)]
    return torch.stack([k[b, sl] for b, (_, sl) in enumerate(located)])


def residual_at(model, layer, located):
    got, _ = run_until(model, [t for t, _ in located], layer)
    return torch.stack([got["h"][b, sl] for b, (_, sl) in enumerate(located)])


def our_templates(ours):
    return ours["report"]["templates"]


def our_value_iters(ours, method):
    m = ours["report"]["method"]
    if method == "memit":
        return [len(v[1]["losses"]) for v in m["values"]], [v[1]["losses"][-1]["total"] for v in m["values"]]
    return ([len(r["value"]["losses"]) for r in m["requests"]],
            [r["value"]["losses"][-1]["total"] for r in m["requests"]])


HP = {"lr": 0.5, "weight_decay": 1e-3, "clamp": 4.0, "kl_factor": 0.0625}


def down_w(model, l):
    return model.model.layers[l].mlp.down_proj.weight


def cmd_memit(model, tok, reqs, a, ours, timings):
    layers = list(range(4, 9))
    lam = 15000.0 * model.config.intermediate_size / 11008.0
    t = now()
    sample_templates(model, tok, MEMIT_GROUPS, a.seed)
    timings["templates"] = now() - t
    covs, reused = layer_stats(model, tok, layers, a, timings)
    groups = our_templates(ours)
    flat = [c for g in groups for c in g]
    iters, ours_final = our_value_iters(ours, "memit")
    zl = layers[-1]
    t = now()
    values = []
    for r, n in zip(reqs, iters):
        values.append(optimise_value(model, zl, "residual", [r.rewriting(c) for c in flat],
                                     [r.kl_prompt()], r.target, HP, n))
    timings["values"] = now() - t
    t = now()
    plain = [r.in_context("{}") for r in reqs]
    z = torch.stack([v["value"] for v in values]).double()

    def residuals():
        return z - residual_at(model, zl, plain).double()
    report = []
    m = len(layers)
    for i, (l, c) in enumerate(zip(layers, covs)):
        keys = []
        for r in reqs:
            means = [keys_at(model, l, [r.in_context(x) for x in g]).double().mean(0) for g in groups]
            keys.append(torch.stack(means).mean(0))
        k = torch.stack(keys)  # n x dff
        full = residuals()
        res = full / (m - i)
        a_mat = lam * c.double() + k.T @ k
        lower = torch.linalg.cholesky(a_mat)
        x = torch.cholesky_solve(k.T.contiguous(), lower)  # dff x n
        dw = res.T @ x.T  # d x dff
        with torch.no_grad():
            down_w(model, l).add_(dw.float())
        report.append({"layer": l, "residual_norm": full.norm().item(), "update_norm": dw.norm().item()})
    final = residuals().norm().item()
    timings["layers"] = now() - t
    changed = {f"model.layers.{l}.mlp.down_proj.weight": down_w(model, l) for l in layers}
    return changed, {
        "covariance_reused": reused,
        "lambda": lam,
        "value_iters": iters,
        "value_final_loss": [v["losses"][-1] for v in values],
        "ours_value_final_loss": ours_final,
        "own_early_stop_iter": [v["own_stop"] for v in values],
        "layers": report,
        "final_residual_norm": final,
        "ours_final_residual_norm": ours["report"]["method"]["final_residual_norm"],
    }


def cmd_rome(model, tok, reqs, a, ours, timings):
    layer = 5
    t = now()
    sample_templates(model, tok, ROME_GROUPS, a.seed)
    timings["templates"] = now() - t
    (c,), reused = layer_stats(model, tok, [layer], a, timings)
    t = now()
    lower = torch.linalg.cholesky(c.double())
    timings["cholesky"] = now() - t
    flat = [x for g in our_templates(ours) for x in g]
    iters, ours_final = our_value_iters(ours, "rome")
    per, out = [], []
    w = down_w(model, layer)
    for r, n in zip(reqs, iters):
        t = now()
        k_bar = keys_at(model, layer, [r.in_context(x) for x in flat]).double().mean(0)
        u = torch.cholesky_solve(k_bar[:, None], lower)[:, 0]
        u = u / u.norm()
        v = optimise_value(model, layer, "mlp", [r.rewriting(x) for x in flat],
                           [r.kl_prompt()], r.target, HP, n)
        key = keys_at(model, layer, [r.in_context("{}")])[0].double()
        cur = w.detach().double() @ key
        right = (v["value"].double() - cur) / torch.dot(u, key)
        with torch.no_grad():
            w.add_(torch.outer(right, u).float())
        after = (w.detach().double() @ key - v["value"].double()).norm().item()
        per.append(now() - t)
        out.append({"value_iters": n, "value_final_loss": v["losses"][-1], "own_early_stop_iter": v["own_stop"],
                    "update_norm": right.norm().item(), "residual_after": after})
    timings["requests"] = sum(per)
    timings["per_request"] = per
    return {f"model.layers.{layer}.mlp.down_proj.weight": w}, {
        "covariance_reused": reused, "requests": out, "ours_value_final_loss": ours_final}


# ---------------------------------------------------------------- FT and LoRA (ft.rs, lora.rs)

def examples(tok, model, reqs_raw, max_length=30):
    drop = {model.config.bos_token_id, model.config.eos_token_id}
    ex = []
    for r in reqs_raw:
        p = tok.enc(r["prompt"], True)
        t = [x for x in tok.enc(" " + r["target_new"], True)[:max_length] if x not in drop]
        ex.append((p, t))
    return ex


def batch_targets(ex, kind):
    n, total = len(ex), sum(len(t) for _, t in ex)
    seqs, b, p, tk, w = [], [], [], [], []
    for s, (pr, tg) in enumerate(ex):
        seqs.append(pr + tg)
        for i, t in enumerate(tg):
            b.append(s)
            p.append(len(pr) + i - 1)
            tk.append(t)
            w.append(1.0 / (len(tg) * n) if kind == "per_example" else 1.0 / total)
    return seqs, torch.tensor(b), torch.tensor(p), torch.tensor(tk), torch.tensor(w)


def eval_loss(model, ex, kind, chunk=8):
    seqs, b, p, tk, w = batch_targets(ex, kind)
    total = 0.0
    with torch.inference_mode():
        for c in range(0, len(seqs), chunk):
            ids, mask = pad(seqs[c:c + chunk])
            lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, -1)
            sel = (b >= c) & (b < c + chunk)
            total -= (w[sel].double() * lp[b[sel] - c, p[sel], tk[sel]].double()).sum().item()
    return total


def train(model, inner, params, ex, kind, lr, epochs, stop, timings):
    seqs, b, p, tk, w = batch_targets(ex, kind)
    ids, mask = pad(seqs)
    opt = torch.optim.Adam(params, lr=lr)
    per_epoch, own_stop = [], None
    t = now()
    for e in range(epochs):
        opt.zero_grad()
        STATS["forwards"] += 1
        STATS["real_tokens"] += int(mask.sum())
        STATS["padded_tokens"] += ids.numel()
        h = inner(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        lp = torch.log_softmax(model.lm_head(h[b, p]), -1)
        loss = -(w * lp[torch.arange(len(tk)), tk]).sum()
        loss.backward()
        lv = loss.item()
        if lv >= stop:
            opt.step()
        per_epoch.append(lv)
        if own_stop is None and lv < stop:
            own_stop = e
    timings["train"] = now() - t
    return per_epoch, own_stop


def cmd_ft(model, tok, reqs_raw, a, ours, timings):
    ex = examples(tok, model, reqs_raw)
    layers = range(4, 9)
    params = [down_w(model, l) for l in layers]
    for q in params:
        q.requires_grad_(True)
    epochs = ours["report"]["epochs_run"]
    t = now()
    initial = eval_loss(model, ex, "per_example")
    timings["initial_loss"] = now() - t
    losses, own = train(model, model.model, params, ex, "per_example", 5e-5, epochs, 1e-2, timings)
    t = now()
    final = eval_loss(model, ex, "per_example")
    timings["final_loss"] = now() - t
    changed = {f"model.layers.{l}.mlp.down_proj.weight": down_w(model, l) for l in layers}
    return changed, {"epochs": epochs, "initial_loss": initial, "final_loss": final,
                     "loss_per_epoch_last": losses[-1], "own_early_stop_epoch": own,
                     "ours_initial_loss": ours["report"]["initial_loss"],
                     "ours_final_loss": ours["report"]["final_loss"]}


def cmd_lora(model, tok, reqs_raw, a, ours, timings):
    from peft import LoraConfig, get_peft_model
    ex = examples(tok, model, reqs_raw)
    epochs = ours["report"]["epochs_run"]
    t = now()
    initial = eval_loss(model, ex, "token_mean")
    timings["initial_loss"] = now() - t
    torch.manual_seed(a.seed)
    pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                          lora_dropout=0.0, bias="none"))
    params = [q for q in pm.parameters() if q.requires_grad]
    losses, own = train(model, pm.base_model.model.model, params, ex, "token_mean", 5e-3, epochs,
                        1e-2, timings)
    t = now()
    merged = pm.merge_and_unload()
    final = eval_loss(merged, ex, "token_mean")
    timings["final_loss"] = now() - t
    changed = {}
    for i, layer in enumerate(merged.model.layers):
        changed[f"model.layers.{i}.self_attn.q_proj.weight"] = layer.self_attn.q_proj.weight
        changed[f"model.layers.{i}.self_attn.v_proj.weight"] = layer.self_attn.v_proj.weight
    return changed, {"epochs": epochs, "adapters": 2 * len(merged.model.layers),
                     "initial_loss": initial, "final_loss": final,
                     "loss_per_epoch_last": losses[-1], "own_early_stop_epoch": own,
                     "ours_initial_loss": ours["report"]["initial_loss"],
                     "ours_final_loss": ours["report"]["final_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("method", choices=["memit", "rome", "ft", "lora"])
    ap.add_argument("model")
    ap.add_argument("--requests", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--ours", required=True, help="our run's --json output (templates, iterations)")
    ap.add_argument("--stats-corpus")
    ap.add_argument("--stats-samples", type=int, default=1000)
    ap.add_argument("--stats-seqlen", type=int, default=256)
    ap.add_argument("--cache-dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(True)
    with open(a.ours) as f:
        ours = json.load(f)
    timings = {"import": now() - T0}
    t = now()
    tok = Tok(a.model)
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32,
                                             attn_implementation="sdpa").eval()
    for q in model.parameters():
        q.requires_grad_(False)
    timings["load"] = now() - t
    raw = read_zsre(a.requests, a.limit)
    if a.method in ("memit", "rome"):
        if not (a.stats_corpus and a.cache_dir):
            ap.error("memit/rome need --stats-corpus and --cache-dir")
        reqs = [Req(tok, r) for r in raw]
        fn = cmd_memit if a.method == "memit" else cmd_rome
        changed, rep = fn(model, tok, reqs, a, ours, timings)
    else:
        fn = cmd_ft if a.method == "ft" else cmd_lora
        changed, rep = fn(model, tok, raw, a, ours, timings)
    t = now()
    from safetensors.torch import save_file
    os.makedirs(a.out, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in changed.items()},
              os.path.join(a.out, "changed.safetensors"))
    timings["save"] = now() - t
    timings["total_after_import"] = now() - T0 - timings["import"]
    json.dump({"method": a.method, "requests": len(raw), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "timings": timings, "tokens": STATS, "report": rep},
              sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
