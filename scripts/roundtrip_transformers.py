"""Round trip into transformers: load an intervene checkpoint directory with
AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer, and compare with the reference
values transformers computed from the original GGUF (fixtures/smollm2/reference.json) and with
intervene's own greedy output.

Usage:  python scripts/roundtrip_transformers.py models/smollm2 [target/release/intervene]
Needs:  pip install torch transformers
Prints one line per prompt and a summary; exits 1 when a check fails.
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

LOGIT_TOL = 1e-3  # f32 CPU kernels differ in summation order; 1e-3 is far below any argmax gap we rely on


def main():
    ckpt = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/intervene"
    ref = json.load(open("fixtures/smollm2/reference.json"))
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    ok = True
    worst = 0.0
    with torch.no_grad():
        for p in ref["prompts"]:
            ids = tok(p["text"], add_special_tokens=True)["input_ids"]
            same_ids = ids == p["ids"]
            logits = model(torch.tensor([ids])).logits[0]
            top_ids = torch.tensor(p["top_ids"])
            ours = torch.gather(logits, 1, top_ids)
            diff = (ours - torch.tensor(p["top_logits"])).abs().max().item()
            worst = max(worst, diff)
            out = subprocess.run([binary, "generate", ckpt, "--prompt", p["text"], "--max-tokens",
                                  str(len(p["greedy"])), "--json", "-q"], capture_output=True, text=True)
            gen = json.loads(out.stdout)["ids"] if out.returncode == 0 else None
            line_ok = same_ids and diff <= LOGIT_TOL and gen == p["greedy"]
            ok &= line_ok
            print(f"{'ok ' if line_ok else 'BAD'} tokens_equal={same_ids} max_abs_logit_diff={diff:.2e} "
                  f"intervene_greedy_equal={gen == p['greedy']} prompt={p['text'][:40]!r}")
    print(f"transformers loads {ckpt}: max |logit diff| vs GGUF reference {worst:.2e} (tol {LOGIT_TOL}); "
          f"{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
