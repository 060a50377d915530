"""llama.cpp on the same f32 weights as intervene (issue 2, "Speed"): builds an F32 GGUF from
an imported intervene checkpoint, checks that llama.cpp's greedy continuation of "The capital of
France is" equals ours, then times prefill of the 128-token bench prompt and greedy decode.

Usage:  python bench/llamacpp_bench.py [--ckpt models/smollm2]
            [--orig-gguf models/SmolLM2-135M-Instruct.Q4_1.gguf] [--out-gguf models/smollm2-f32.gguf]
            [--intervene target/release/intervene] [--threads 2] [--repeats 7] [--decode-tokens 64]
Needs:  numpy, safetensors, gguf (gguf-py), llama-cpp-python, transformers (tokenizer only).
Prints one JSON object on stdout; exits 1 when the greedy check fails.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import gguf
import numpy as np
from safetensors.numpy import load_file

# Hugging Face tensor name (after "model.layers.{i}.") -> llama.cpp name (after "blk.{i}.").
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def to_gguf_permute(w, heads):
    """llama.cpp stores q/k rows interleaved per rotary pair; HF keeps the two halves apart
    (rotate_half). This is the permutation llama.cpp's converter applies."""
    out, inp = w.shape
    hd = out // heads
    return w.reshape(heads, 2, hd // 2, inp).swapaxes(1, 2).reshape(out, inp)


def gguf_name(hf):
    if hf in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf]
    parts = hf.split(".")
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}." + LAYER_NAMES[".".join(parts[3:])]
    raise KeyError(hf)


def make_f32_gguf(ckpt, orig_path, out_path):
    """Writes the checkpoint's tensors as F32 with all of the original GGUF's metadata (the
    tokenizer and llama.* keys) and file type ALL_F32, in the original's tensor order."""
    orig = gguf.GGUFReader(orig_path)
    arch = orig.fields["general.architecture"].contents()
    heads = int(orig.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(orig.fields[f"{arch}.attention.head_count_kv"].contents())
    hf = load_file(os.path.join(ckpt, "model.safetensors"))
    tensors = {}
    for name, w in hf.items():
        if name == "lm_head.weight" and "output.weight" not in [t.name for t in orig.tensors]:
            continue  # tied: llama.cpp reuses token_embd, as in the original file
        w = np.ascontiguousarray(w.astype(np.float32))
        if name.endswith("self_attn.q_proj.weight"):
            w = to_gguf_permute(w, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            w = to_gguf_permute(w, kv_heads)
        tensors[gguf_name(name)] = np.ascontiguousarray(w)
    order = [t.name for t in orig.tensors]
    missing = set(order) ^ set(tensors)
    if missing:
        raise SystemExit(f"tensor sets differ between {orig_path} and {ckpt}: {sorted(missing)}")

    tmp = out_path + ".tmp"
    w = gguf.GGUFWriter(tmp, arch)
    for key, field in orig.fields.items():
        # The writer emits the GGUF header counts and general.architecture itself.
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = field.contents()
        if key == "general.file_type":
            val = int(gguf.LlamaFileType.ALL_F32)
        w.add_key_value(key, val, vtype, sub_type=sub)
    for name in order:
        w.add_tensor(name, tensors[name], raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out_path)


def last_logits(llm):
    n_vocab = llm.n_vocab()
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))


def greedy(llm, prompt_ids, n):
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(last_logits(llm)))
        out.append(nxt)
        llm.eval([nxt])
    return out


def bench_prompt_ids(ckpt, path, n):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = tok(open(path).read(), add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        raise SystemExit(f"{path} encodes to {len(ids)} tokens, fewer than {n}")
    return ids[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="models/smollm2")
    ap.add_argument("--orig-gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out-gguf", default="models/smollm2-f32.gguf")
    ap.add_argument("--intervene", default=None, help="binary whose greedy output is compared")
    ap.add_argument("--prompt", default="bench/prompt.txt")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rebuild", action="store_true")
    a = ap.parse_args()

    t0 = time.perf_counter()
    built = False
    if a.rebuild or not os.path.exists(a.out_gguf):
        make_f32_gguf(a.ckpt, a.orig_gguf, a.out_gguf)
        built = True
    convert_s = time.perf_counter() - t0

    from llama_cpp import Llama
    import llama_cpp

    llm = Llama(model_path=a.out_gguf, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=a.threads,
                n_threads_batch=a.threads, logits_all=False, verbose=False)

    # Greedy check on the reference prompt: ids come from the committed reference (our
    # tokenizer's ids; the round trip script checks them against transformers').
    ref = json.load(open("fixtures/smollm2/reference.json"))["prompts"][0]
    cpp_greedy = greedy(llm, ref["ids"], len(ref["greedy"]))
    ours = ref["greedy"]
    ours_src = "fixtures/smollm2/reference.json"
    if a.intervene:
        out = subprocess.run([a.intervene, "generate", a.ckpt, "--prompt", ref["text"], "--max-tokens",
                              str(len(ref["greedy"])), "--json", "-q"], capture_output=True, text=True,
                             check=True)
        ours = json.loads(out.stdout)["ids"]
        ours_src = a.intervene
    greedy_ok = cpp_greedy == ours

    ids = bench_prompt_ids(a.ckpt, a.prompt, a.prompt_tokens)
    ctx = llm._ctx.ctx

    def prefill():
        llm.reset()  # n_tokens = 0, so eval drops every cached position first
        t = time.perf_counter()
        llm.eval(ids)
        llama_cpp.llama_synchronize(ctx)
        return time.perf_counter() - t

    prefill()  # warm-up
    prefill_s = [prefill() for _ in range(a.repeats)]

    decode_s = []
    gen = []
    for run in range(1 + min(3, a.repeats)):
        llm.reset()
        llm.eval(ids)
        nxt = int(np.argmax(last_logits(llm)))
        gen = []
        t = time.perf_counter()
        for _ in range(a.decode_tokens):
            gen.append(nxt)
            llm.eval([nxt])
            nxt = int(np.argmax(last_logits(llm)))
        if run > 0:  # the first run warms up
            decode_s.append(time.perf_counter() - t)

    p = statistics.median(prefill_s)
    d = statistics.median(decode_s)
    print(json.dumps({
        "tool": "llama.cpp (llama-cpp-python %s)" % llama_cpp.__version__,
        "gguf": a.out_gguf,
        "gguf_built_now": built,
        "gguf_build_s": convert_s,
        "threads": a.threads,
        "load_avg": " ".join(open("/proc/loadavg").read().split()[:3]),
        "greedy_check": {"prompt": ref["text"], "llama_cpp": cpp_greedy, "ours": ours,
                         "ours_from": ours_src, "equal": greedy_ok},
        "prompt_tokens": len(ids),
        "prompt_ids": ids,
        "prefill": {"median_s": p, "samples_s": prefill_s, "tokens_per_s": len(ids) / p},
        "decode": {"tokens": a.decode_tokens, "median_s": d, "samples_s": decode_s,
                   "tokens_per_s": a.decode_tokens / d, "greedy_ids": gen},
    }, indent=1))
    sys.exit(0 if greedy_ok else 1)


if __name__ == "__main__":
    main()
