"""One llmcompressor run for bench/compress_vs_llmcompressor.sh (issue 5).

Requires (installed by the script into a venv outside the repo): llmcompressor==0.14.0.1,
compressed-tensors==0.19.0, transformers==5.17.0, datasets; torch from /opt/pyref.

usage: llmc_run.py METHOD MODEL_DIR WINDOWS_JSON OUT_DIR
  METHOD: gptq-4-64 | sparsegpt-50 | wanda-50 | awq-4-64
  WINDOWS_JSON: output of `examples/calib_windows` (the token ids our run used).
Env: THREADS (torch threads), SYM=1 for a symmetric GPTQ grid (default asymmetric, as ours).
Saves OUT_DIR as a dense (save_compressed=False) Hugging Face directory with safetensors.
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
    model.save_pretrained(out_dir, save_compressed=False)
    tok.save_pretrained(out_dir)


if __name__ == "__main__":
    main()
