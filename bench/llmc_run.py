"""One llmcompressor run for bench/compress_vs_llmcompressor.sh (issue 5).

Requires (installed by the script into a venv outside the repo): llmcompressor==0.14.0.1,
compressed-tensors==0.19.0, transformers==5.17.0, datasets; torch from /opt/pyref.

usage: llmc_run.py METHOD MODEL_DIR WINDOWS_JSON OUT_DIR
  METHOD: rtn-4-64 | gptq-4-64 | sparsegpt-50 | wanda-50 | awq-4-64 (bits-group / percent)
  WINDOWS_JSON: output of `examples/calib_windows` (the token ids our run used).
Env: THREADS (torch threads), SYM=1 for a symmetric GPTQ grid (default asymmetric, as ours),
ACT_ORDER=0 for GPTQ without activation ordering (default 1: llmcompressor's own default,
actorder="static", columns in descending Hessian-diagonal order with each group's grid fitted
on the original weights, which ours does with --act-order --static-groups).
Saves OUT_DIR as a dense Hugging Face directory (the original tensor names, F32 safetensors).
"""

import json
import os
import sys

import torch


def recipe(method, sym, act_order):
    # The bare name is what llmcompressor's docs show, but its SparseGPT still pruned lm_head
    # with it (session 5); the regex form matches the module by its full name.
    ignore = ["lm_head", "re:.*lm_head"]
    name, a, b = (method.split("-") + [None])[:3]
    if name in ("rtn", "gptq", "awq"):
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(
            num_bits=int(a),
            type="int",
            symmetric=bool(sym) if name in ("rtn", "gptq") else False,
            strategy="group",
            group_size=int(b),
        )
        scheme = QuantizationScheme(targets=["Linear"], weights=weights)
        if name == "rtn":
            # Round-to-nearest with the min-max observer (range widened to contain 0, as
            # GPTQ's quantizer): llmcompressor's data-free weight quantisation.
            from llmcompressor.modifiers.quantization import QuantizationModifier

            return QuantizationModifier(config_groups={"group_0": scheme}, ignore=ignore)
        if name == "gptq":
            from llmcompressor.modifiers.quantization import GPTQModifier

            return GPTQModifier(
                config_groups={"group_0": scheme},
                ignore=ignore,
                block_size=128,
                dampening_frac=0.01,
                # Stated, not left to the default, so that the row says what ran.
                actorder="static" if act_order else None,
            )
        from llmcompressor.modifiers.awq import AWQModifier

        return AWQModifier(config_groups={"group_0": scheme}, ignore=ignore)
    sparsity = int(a) / 100
    if name == "sparsegpt":
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        return SparseGPTModifier(
            sparsity=sparsity,
            mask_structure="0:0",
            block_size=128,
            dampening_frac=0.01,
            targets=["Linear"],
            ignore=ignore,
        )
    if name == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        return WandaPruningModifier(
            sparsity=sparsity, mask_structure="0:0", targets=["Linear"], ignore=ignore
        )
    raise SystemExit(f"unknown method {method}")


def fold_fake_quant(model):
    """Writes each quantised Linear's dequantised weight into `weight`.

    GPTQ and AWQ leave the quantised values in `weight` already, but the data-free
    QuantizationModifier (rtn) only attaches `weight_scale`/`weight_zero_point` and quantises in
    the forward hook and at save time. Re-applying the same scale/zero point is idempotent for
    the first two, so the count of elements it changes (printed) checks that claim too.
    """
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    changed = total = 0
    for name, m in model.named_modules():
        scale = getattr(m, "weight_scale", None)
        scheme = getattr(m, "quantization_scheme", None)
        if scale is None or scheme is None or scheme.weights is None:
            continue
        zp = getattr(m, "weight_zero_point", None)
        with torch.no_grad():
            w = m.weight.data
            q = fake_quantize(w, scale.data, None if zp is None else zp.data, scheme.weights)
            changed += int((q != w).sum())
            total += w.numel()
            w.copy_(q)
    if total:
        print(f"llmc_run: fake-quant fold changed {changed} of {total} weights", file=sys.stderr)


def main():
    method, model_dir, windows_json, out_dir = sys.argv[1:5]
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.cuda.is_available():
        # llmcompressor 0.14's AWQ pins its activation cache (`Tensor.pin_memory`), which a
        # CPU-only torch refuses ("Found no NVIDIA driver"); pinning only matters for copies to
        # a GPU, so on CPU it is the identity.
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    windows = json.load(open(windows_json))["windows"]
    seqlen = len(windows[0])
    ds = Dataset.from_dict(
        {"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]}
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    oneshot(
        model=model,
        tokenizer=tok,
        dataset=ds,
        recipe=recipe(
            method,
            os.environ.get("SYM", "0") == "1",
            os.environ.get("ACT_ORDER", "1") == "1",
        ),
        max_seq_length=seqlen,
        num_calibration_samples=len(windows),
        shuffle_calibration_samples=False,
    )
    fold_fake_quant(model)
    # Dense weights only: llmcompressor's saved directory also holds weight_scale /
    # weight_zero_point (I8) tensors our importer refuses; with save_compressed=False the weights
    # themselves are already the quantised-dequantised values, so keep exactly the original
    # checkpoint's tensor names and copy its config/tokenizer files.
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        names = set(f.keys())
    sd = model.state_dict()
    dense = {k: sd[k].detach().float().contiguous() for k in names}
    # Only the decoder blocks' linears may change (ours leaves embeddings, norms and the tied
    # LM head alone; a comparison where theirs did not would be unfair). AWQ folds its scales
    # into the RMSNorm weights on both sides, so for it the blocks' norms may change too.
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        for k in sorted(names):
            linear = ".layers." in k and k.endswith("proj.weight")
            folded = method.startswith("awq") and ".layers." in k and "layernorm" in k
            if not (linear or folded) and not torch.equal(f.get_tensor(k).float(), dense[k]):
                raise SystemExit(f"llmc_run: {method} changed {k}, which must stay untouched")
    os.makedirs(out_dir, exist_ok=True)
    save_file(dense, os.path.join(out_dir, "model.safetensors"))
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(model_dir, f)):
            shutil.copy(os.path.join(model_dir, f), out_dir)


if __name__ == "__main__":
    main()
