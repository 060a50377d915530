"""Formats the outputs bench/foundation.sh collected in one directory as the markdown section
"Foundation (issue 2)" of bench/RESULTS.md: machine, figures side by side, targets met or not.

Usage:  python bench/report.py OUTDIR   (markdown on stdout)
"""
import datetime
import json
import os
import re
import subprocess
import sys


def read(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def mark(ok):
    return "met" if ok else "NOT met"


def main():
    d = sys.argv[1]
    ours = json.loads(read(d, "ours.json"))
    try:
        cpp = json.loads(read(d, "llamacpp.json"))
    except (OSError, ValueError):
        cpp = None
    torch = json.loads(read(d, "torch.json"))
    tv = read(d, "import_time.txt")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", tv).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv).group(1))
    f32_bytes = int(read(d, "f32_bytes.txt"))
    rt_out = read(d, "roundtrip.txt").strip().splitlines()
    rt_ok = read(d, "roundtrip_rc.txt").strip() == "0"

    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if l.startswith("Model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()

    same_prompt = ours["prompt_ids"] == torch["prompt_ids"] and (
        cpp is None or cpp["prompt_ids"] == ours["prompt_ids"])
    peak = ours["gemm_f32"]["512x576x1536"]["gflops_median"]
    peak_big = ours["gemm_f32"]["1024x1024x1024"]["gflops_median"]
    p_ours = ours["prefill"]["median_s"]
    p_torch = torch["prefill"]["median_s"]
    p_cpp = cpp["prefill"]["median_s"] if cpp else float("nan")
    d_ours = ours["decode"]["tokens_per_s"]
    d_cpp = cpp["decode"]["tokens_per_s"] if cpp else float("nan")
    d_torch = torch["decode"]["tokens_per_s"]
    bound = ours["decode"]["bandwidth_bound_tokens_per_s"]
    gflops = ours["prefill"]["gflops"]
    t = ours["prompt_tokens"]

    L = []
    L.append("")
    L.append("## Foundation (issue 2)")
    L.append("")
    L.append(f"- Machine: {cpu}, {os.cpu_count()} cores; {ours['threads']} threads everywhere")
    L.append(f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; commit {commit}"
             + (" (with uncommitted changes)" if dirty else ""))
    L.append(f"- Load average (1/5/15 min): intervene bench start {ours['load_avg_start']}, end "
             f"{ours['load_avg_end']}; llama.cpp end {cpp['load_avg'] if cpp else '-'}; "
             f"PyTorch end {torch['load_avg']}. The machine is shared: medians of repeats, "
             "noisy when the load is above 2.")
    L.append(f"- Repeats: prefill median of {len(ours['prefill']['samples_s'])} (after a warm-up), "
             f"decode median of {len(ours['decode']['samples_s'])} runs")
    L.append(f"- Prompt: the first {t} tokens of bench/prompt.txt; identical ids in all three: "
             f"{same_prompt}")
    L.append("")
    L.append(f"| f32, {t}-token prompt | intervene | llama.cpp (F32 GGUF) | PyTorch |")
    L.append("|---|---|---|---|")
    L.append(f"| prefill, median s | {p_ours:.3f} | {p_cpp:.3f} | {p_torch:.3f} |")
    L.append(f"| prefill, tokens/s | {t / p_ours:.0f} | {t / p_cpp:.0f} | {t / p_torch:.0f} |")
    L.append(f"| decode, tokens/s ({ours['decode']['tokens']} tokens, KV cache) | {d_ours:.1f} | {d_cpp:.1f} | "
             f"{d_torch:.1f} |")
    L.append("")
    L.append(f"- f32 GEMM peak (gemm crate, same run, median): {peak:.0f} GFLOP/s at 512x576x1536, "
             f"{peak_big:.0f} GFLOP/s at 1024^3")
    L.append(f"- Prefill achieved: {gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% of the "
             f"512x576x1536 peak (counted: {ours['prefill']['flops_counted']}; "
             f"{ours['prefill']['flops'] / 1e9:.1f} GFLOP)")
    L.append(f"- Memory bandwidth (read-only sum over 1 GiB, {ours['threads']} threads): "
             f"{ours['bandwidth']['gb_per_s']:.1f} GB/s; weights read per decode token "
             f"{ours['decode']['weight_bytes_per_token'] / 1e6:.0f} MB (all linears + tied "
             f"embedding as LM head) -> bound {bound:.1f} tokens/s; decode at "
             f"{100 * d_ours / bound:.0f}% of it")
    if cpp:
        g = cpp["greedy_check"]
        L.append(f"- llama.cpp greedy on {g['prompt']!r} equals ours ({g['ours_from']}): "
                 f"{g['equal']} ({g['llama_cpp']})")
    L.append(f"- Import of {os.path.basename('models/SmolLM2-135M-Instruct.Q4_1.gguf')}: "
             f"{secs:.2f} s wall, peak RSS {rss_kib / 1024:.0f} MiB vs f32 model "
             f"{f32_bytes / 2**20:.0f} MiB ({rss_kib * 1024 / f32_bytes:.2f}x)")
    L.append(f"- Round trip (scripts/roundtrip_transformers.py): {'PASS' if rt_ok else 'FAIL'}; "
             f"{rt_out[-1] if rt_out else ''}")
    L.append("")
    L.append("| target | value | status |")
    L.append("|---|---|---|")
    L.append(f"| prefill no slower than llama.cpp | {p_ours:.3f} s vs {p_cpp:.3f} s | "
             f"{mark(p_ours <= p_cpp)} |")
    L.append(f"| prefill faster than PyTorch | {p_ours:.3f} s vs {p_torch:.3f} s | "
             f"{mark(p_ours < p_torch)} |")
    L.append(f"| prefill >= 60% of GEMM peak | {100 * gflops / peak:.0f}% | "
             f"{mark(gflops >= 0.6 * peak)} |")
    L.append(f"| decode >= 80% of bandwidth bound | {100 * d_ours / bound:.0f}% | "
             f"{mark(d_ours >= 0.8 * bound)} |")
    L.append(f"| import < 5 s | {secs:.2f} s | {mark(secs < 5)} |")
    L.append(f"| import peak memory < 2x f32 model | {rss_kib * 1024 / f32_bytes:.2f}x | "
             f"{mark(rss_kib * 1024 < 2 * f32_bytes)} |")
    L.append(f"| transformers round trip | {'PASS' if rt_ok else 'FAIL'} | {mark(rt_ok)} |")
    if cpp:
        L.append(f"| llama.cpp greedy equals ours | {cpp['greedy_check']['equal']} | "
                 f"{mark(cpp['greedy_check']['equal'])} |")
    print("\n".join(L))


if __name__ == "__main__":
    main()
