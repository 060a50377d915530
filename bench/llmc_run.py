"""One llmcompressor run for bench/compress_vs_llmcompressor.sh (issue 5).

Requires (installed by the script into a venv outside the repo): llmcompressor==0.14.0.1,
compressed-tensors==0.19.0, transformers==5.17.0, datasets; torch from /opt/pyref.

usage: llmc_run.py METHOD MODEL_DIR WINDOWS_JSON OUT_DIR
  METHOD: gptq-4-64 | sparsegpt-50 | wanda-50 | awq-4-64
  WINDOWS_JSON: output of `examples/calib_windows` (the token ids our run used).
Env: THREADS (torch threads), SYM=1 for a symmetric GPTQ grid (default asymmetric, as ours).
Saves OUT_DIR as a dense Hugging Face directory (the original tensor names, F32 safetensors).
"""

import json
import os
import sys

import torch


def recipe(method, sym):
    ignore = ["lm_head"]
    name, a, b = (method.split("-") + [None])[:3]
    if name in ("gptq", "awq"):
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(
            num_bits=int(a),
            type="int",
            symmetric=bool(sym) if name == "gptq" else False,
            strategy="group",
            group_size=int(b),
        )
        scheme = QuantizationScheme(targets=["Linear"], weights=weights)
        if name == "gptq":
            from llmcompressor.modifiers.quantization import GPTQModifier

            return GPTQModifier(
                config_groups={"group_0": scheme},
                ignore=ignore,
                block_size=128,
                dampening_frac=0.01,
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


def main():
    method, model_dir, windows_json, out_dir = sys.argv[1:5]
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
        recipe=recipe(method, os.environ.get("SYM", "0") == "1"),
        max_seq_length=seqlen,
        num_calibration_samples=len(windows),
        shuffle_calibration_samples=False,
    )
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
    os.makedirs(out_dir, exist_ok=True)
    save_file(dense, os.path.join(out_dir, "model.safetensors"))
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(model_dir, f)):
            shutil.copy(os.path.join(model_dir, f), out_dir)


if __name__ == "__main__":
    main()
