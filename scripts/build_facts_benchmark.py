#!/usr/bin/env python3
"""Builds the facts forget/retain benchmark (issue 8): facts the model actually knows, split by
relation into a forget set (where things and people are: every relation whose object is a
place) and a retain set (every other relation: languages, companies, products, sports, jobs,
religions, ...).

Python standard library only; it runs the `intervene` binary (`eval --task mc --prompt cloze`)
once over every candidate question to check which facts the model knows. From the repository
root:

    cargo build --release
    python3 scripts/build_facts_benchmark.py --model models/smollm2 [--intervene PATH] [--seed 0]

Cost: one cloze pass over the 1,170 candidates (4 choices each, a few tokens per choice): 8.8
CPU minutes with SmolLM2-135M at --threads 1 (19 minutes wall on a 2-core machine at load
average 10, 2026-11-26); then a second pass over the ~830 known questions without their
subject.

Sources (SOURCES.md §1c, §1d): ROME's known facts (`rome_known_1000.json`, 1,209 facts) and
CounterFact's ROME-format requests (`counterfact_rome_requests_100.jsonl`, the true object
`target_true`), both with a Wikidata relation id. For every fact with a relation of at least 4
distinct objects, a 4-way multiple-choice question in the WMDP JSONL format is made: the
question is the fact's prompt ("Vinson Massif is located in the continent of"), the choices are
the true object and 3 other objects of the same relation, drawn with a seeded `random.Random`
among the 8 objects closest to the true one in word count and length (so that a choice's
length, which the summed log-likelihood favours when short, says little about the answer).

The model is asked every question as a cloze (`--prompt cloze`: each choice scored as the
continuation " <object>" of the prompt, lm-eval's `multiple_choice` form), and only the
questions it answers correctly are kept, so both sets start at accuracy 1.0 for that model and
chance is 0.25. The lettered lm-eval format is not used to select: SmolLM2-135M answers "A"
to nearly everything there. The kept questions of each set then have their true answer moved to
position k mod 4 (k: the question's index in the set), so each position holds a quarter of the
answers and position is no shortcut in either format (the cloze score does not depend on the
order).

Prior control. A model that has lost a fact can still lean to its object from the relation
alone ("... is located in the continent of" favours Europe): asked with the subject replaced
by "It"/"it", SmolLM2 picked the true object for 41% of the first version's forget questions
and 57% of its retain questions (bench/RESULTS.md, session 9), so a subject-blind model would
have scored far above 0.25 there. Every known question is therefore asked a second time that
way, and each set is drawn (seeded) as a quarter of questions the relation alone answers right
and three quarters it answers wrong: on the kept sets a model that knows the relations but not
the subjects scores 0.25, the same chance as one that knows nothing. At most --max-per-set
questions per set.

Writes into --out (default data/facts/):
  forget_mc.jsonl, retain_mc.jsonl      {"question", "choices", "answer"} (WMDP format)
  forget_text.jsonl, retain_text.jsonl  {"text": "<prompt> <object>."}: one statement per kept fact
  manifest.json                         counts per relation and answer position, sources and
                                        their sha256, settings
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/work/shared/data/knowledge_editing"
# Relations whose object is a place (Wikidata ids as ROME uses them).
FORGET_RELATIONS = {
    "P17",  # located in the country of
    "P30",  # located in the continent
    "P36",  # capital of
    "P131",  # located in (administrative unit)
    "P159",  # headquarters location
    "P276",  # location
    "P495",  # country of origin
    "P740",  # location of formation
    "P19",  # place of birth
    "P20",  # place of death
    "P937",  # work location
    "P27",  # country of citizenship
}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_facts(data):
    facts, seen = [], set()
    known = os.path.join(data, "rome_known_1000.json")
    with open(known) as f:
        for r in json.load(f):
            facts.append((r["relation_id"], r["subject"], r["prompt"], r["attribute"], f"known:{r['known_id']}"))
    cf = os.path.join(data, "counterfact_rome_requests_100.jsonl")
    with open(cf) as f:
        for line in f:
            q = json.loads(line)["request"]
            prompt = q["prompt"].replace("{}", q["subject"])
            facts.append((q["relation_id"], q["subject"], prompt, q["target_true"]["str"], "counterfact:" + q["subject"]))
    out = []
    for rel, subj, prompt, obj, src in facts:
        key = (rel, subj.strip().lower())
        if key in seen or not obj.strip():
            continue
        seen.add(key)
        out.append({"relation": rel, "subject": subj, "prompt": prompt.strip(), "object": obj.strip(), "source": src})
    return out, [known, cf]


def questions(facts, seed):
    objects = {}
    for f in facts:
        objects.setdefault(f["relation"], set()).add(f["object"])
    out = []
    for i, f in enumerate(facts):
        obj = f["object"]
        # The 8 objects nearest in (word count, length), ties by name: distractors like the answer.
        pool = sorted(objects[f["relation"]] - {obj},
                      key=lambda o: (abs(len(o.split()) - len(obj.split())), abs(len(o) - len(obj)), o))[:8]
        if len(pool) < 3:
            continue
        rng = random.Random(seed * 1_000_003 + i)
        choices = rng.sample(pool, 3) + [obj]
        rng.shuffle(choices)
        out.append(dict(f, mc={"question": f["prompt"], "choices": choices, "answer": choices.index(obj)}))
    return out


def relation_only(item):
    """The question with its subject replaced by a pronoun: what the relation alone suggests.
    The caller kept only questions that contain their subject."""
    q, subj = item["mc"]["question"], item["subject"]
    pron = "It" if q.startswith(subj) else "it"
    return dict(item, mc=dict(item["mc"], question=q.replace(subj, pron, 1)))


def balance_prior(rows, prior_right, n, rng):
    """At most `n` rows of which a quarter (rounded) are answered right from the relation alone
    (`prior_right`) and the rest are not, so that a model that knows the relations but not the
    subjects scores chance (0.25), as a model that knows nothing does. Returns the rows in their
    original order, or fewer than `n` when either kind runs short (the quarter is kept)."""
    right = [i for i in range(len(rows)) if prior_right[i]]
    wrong = [i for i in range(len(rows)) if not prior_right[i]]
    n_right = min(len(right), n // 4, len(wrong) // 3)
    n_wrong = min(len(wrong), 3 * n_right)
    keep = set(rng.sample(right, n_right)) | set(rng.sample(wrong, n_wrong))
    return [r for i, r in enumerate(rows) if i in keep], [prior_right[i] for i in range(len(rows)) if i in keep]


def place_answer(mc, pos):
    """The same question with the true answer moved to `pos`, the distractors in their order."""
    true = mc["choices"][mc["answer"]]
    others = [c for i, c in enumerate(mc["choices"]) if i != mc["answer"]]
    return dict(mc, choices=others[:pos] + [true] + others[pos:], answer=pos)


def ask(intervene, model, items, threads):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "candidates.jsonl")
        with open(path, "w") as f:
            for it in items:
                f.write(json.dumps(it["mc"]) + "\n")
        cmd = [intervene, "-q", "--threads", str(threads), "eval", model, "--task", "mc", "--prompt", "cloze",
               "--data", path, "--no-record", "--json"]
        print("+", " ".join(cmd), file=sys.stderr)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["per_item"]["choices"]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "smollm2"))
    ap.add_argument("--intervene", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "intervene"))
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "facts"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-per-set", type=int, default=200)
    a = ap.parse_args()

    facts, sources = load_facts(a.data)
    items = questions(facts, a.seed)
    items = [it for it in items if it["subject"] in it["mc"]["question"]]
    picked = ask(a.intervene, a.model, items, a.threads)
    known = [it for it, p in zip(items, picked) if p == it["mc"]["answer"]]
    # The same questions without their subject: the relation's prior alone.
    prior_picked = ask(a.intervene, a.model, [relation_only(it) for it in known], a.threads)
    prior_right = [p == it["mc"]["answer"] for it, p in zip(known, prior_picked)]
    os.makedirs(a.out, exist_ok=True)
    manifest = {
        "model": os.path.basename(os.path.normpath(a.model)),
        "seed": a.seed,
        "format": "cloze (intervene eval --task mc --prompt cloze)",
        "max_per_set": a.max_per_set,
        "candidates": len(items),
        "answered_correctly": len(known),
        "prior_control": "each set holds a quarter of questions the model answers right with the subject "
                         "replaced by It/it (relation only) and three quarters it answers wrong that way, "
                         "so a model that knows the relations but not the subjects scores 0.25",
        "forget_relations": sorted(FORGET_RELATIONS),
        "sources": {os.path.basename(p): sha256(p) for p in sources},
        "sets": {},
    }
    for name, keep in [("forget", lambda r: r in FORGET_RELATIONS), ("retain", lambda r: r not in FORGET_RELATIONS)]:
        here = [i for i, it in enumerate(known) if keep(it["relation"])]
        rows, prior = balance_prior([known[i] for i in here], [prior_right[i] for i in here], a.max_per_set,
                                    random.Random(a.seed + (name == "retain")))
        rows = [dict(it, mc=place_answer(it["mc"], k % 4)) for k, it in enumerate(rows)]
        write_jsonl(os.path.join(a.out, f"{name}_mc.jsonl"), [it["mc"] for it in rows])
        write_jsonl(os.path.join(a.out, f"{name}_text.jsonl"), [{"text": f"{it['prompt']} {it['object']}."} for it in rows])
        per_rel = {}
        for it in rows:
            per_rel[it["relation"]] = per_rel.get(it["relation"], 0) + 1
        asked = sum(1 for it in items if keep(it["relation"]))
        known_here = sum(1 for it in known if keep(it["relation"]))
        positions = [sum(1 for it in rows if it["mc"]["answer"] == p) for p in range(4)]
        manifest["sets"][name] = {"kept": len(rows), "answered_correctly": known_here, "asked": asked,
                                  "relation_only_right_among_known": sum(prior_right[i] for i in here),
                                  "relation_only_right_kept": sum(prior),
                                  "answer_positions": positions, "per_relation": dict(sorted(per_rel.items()))}
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps({k: manifest[k] for k in ("candidates", "answered_correctly")}), {k: v["kept"] for k, v in manifest["sets"].items()})


if __name__ == "__main__":
    main()
