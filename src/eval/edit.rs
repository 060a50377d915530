//! Knowledge-editing criteria as the study computes them (`utils/evals.py::f1_accuracy_generate`
//! and `f1_locality_generate`, composability.md §3), plus two teacher-forced measures.
//!
//! Generation F1 (edit success on the prompt, generalisation on the rephrases, locality on the
//! NQ question against its gold answer):
//! * target ids `T` = `enc(" " + answer)` with special tokens, truncated to `max_length` (30),
//!   then every pad (= eos, as the study sets it) and bos id removed. The answer is used
//!   verbatim, so a zsRE `alt` that already starts with a space gets two, as in the study.
//! * greedy generation from `enc(prompt)` (special tokens on) up to `max_length` tokens in all,
//!   prompt included (at least one new token: HF `generate` always takes one step); after an
//!   eos only padding follows. Generated ids minus the excluded set {eos, bos, the newline
//!   token} are cut to `|T|`: that is `G`.
//! * `F1 = 2PR/(P+R)` with `P = |set(G) & set(T)| / len(G)`, `R = |set(G) & set(T)| / len(T)`,
//!   0 when nothing is shared; each criterion is the plain mean over its prompts' F1.
//!
//! We stop generating once `G` has `|T|` ids: what the study generated after that point is cut
//! away, so the F1 is the same and most steps are saved. The study's excluded id is the literal
//! 13, "the new line token for llama" (Llama-2's `<0x0A>`; on Llama-3 it is "."); we exclude
//! the tokenizer's own newline token, which is what the comment means on any vocabulary.
//!
//! Teacher-forced, on the edit prompt with the same `T`: `edit_acc_tf` is the fraction of
//! target tokens that are the argmax given the prompt and the earlier target tokens (mean over
//! requests), `target_logprob` the mean over requests of `log P(T | prompt)` (natural log).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{mean, Outcome, Progress};
use crate::backend::cpu::argmax::argmax;
use crate::backend::cpu::softmax::logsumexp;
use crate::data::EditRequest;
use crate::error::{Error, Result};
use crate::model::{Decoder, Hooks, Llama, Logits};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct EditSettings {
    /// The study's `max_length`: total tokens, prompt included, for generation and the cap on
    /// target length (30 at the time of the paper's runs).
    pub max_length: usize,
    /// Requests per teacher-forced forward pass.
    pub batch_size: usize,
}

/// Tokenisation and generation rules shared by the edited and the baseline model.
pub struct Rules<'t> {
    tok: &'t Tokenizer,
    max_length: usize,
    eos: Option<u32>,
    bos: Option<u32>,
    /// eos, bos and the newline token: never counted in a generated answer.
    exclude: BTreeSet<u32>,
}

impl<'t> Rules<'t> {
    pub fn new(tok: &'t Tokenizer, model: &Llama, max_length: usize) -> Result<Self> {
        if max_length == 0 {
            return Err(Error::usage("--max-length", "must be at least 1"));
        }
        let cfg = model.config();
        let eos = tok.eos_id().or(cfg.eos_token_id);
        let bos = cfg.bos_token_id;
        let newline = match tok.encode("\n", false)?.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let exclude = [eos, bos, newline].into_iter().flatten().collect();
        Ok(Rules {
            tok,
            max_length,
            eos,
            bos,
            exclude,
        })
    }

    /// `T`: the answer's ids as the study forms them.
    pub fn target(&self, answer: &str) -> Result<Vec<u32>> {
        let mut ids = self.tok.encode(&format!(" {answer}"), true)?;
        ids.truncate(self.max_length);
        ids.retain(|&t| Some(t) != self.eos && Some(t) != self.bos);
        Ok(ids)
    }

    pub fn prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.tok.encode(text, true)?;
        if ids.is_empty() {
            return Err(Error::usage(
                "--data",
                format!("the prompt {text:?} encodes to no tokens"),
            ));
        }
        Ok(ids)
    }

    /// `G`: greedy generation filtered and cut to `target_len` ids.
    pub fn generate(&self, model: &Llama, prompt: &[u32], target_len: usize) -> Result<Vec<u32>> {
        let budget = self.max_length.saturating_sub(prompt.len()).max(1);
        let mut dec = Decoder::new(model, prompt.len() + budget);
        let mut logits = dec.feed(prompt)?;
        let mut kept = Vec::with_capacity(target_len);
        for step in 0..budget {
            if kept.len() >= target_len {
                break;
            }
            let next = argmax(logits)
                .ok_or_else(|| Error::Check("generation: every logit is NaN".into()))?
                as u32;
            if Some(next) == self.eos {
                break;
            }
            if !self.exclude.contains(&next) {
                kept.push(next);
            }
            if step + 1 < budget && kept.len() < target_len {
                logits = dec.feed(&[next])?;
            }
        }
        Ok(kept)
    }
}

/// The study's token-set F1 of generated ids `g` against target ids `t`.
pub fn token_set_f1(g: &[u32], t: &[u32]) -> f64 {
    let gs: BTreeSet<u32> = g.iter().copied().collect();
    let ts: BTreeSet<u32> = t.iter().copied().collect();
    let common = gs.intersection(&ts).count();
    if common == 0 || g.is_empty() {
        return 0.0;
    }
    let p = common as f64 / g.len() as f64;
    let r = common as f64 / t.len() as f64;
    2.0 * p * r / (p + r)
}

/// Per-request results.
struct Item {
    edit: f64,
    rephrase: Vec<f64>,
    locality: Vec<f64>,
    /// The edited model's locality answers `G`, for the agreement with a baseline.
    locality_ids: Vec<Vec<u32>>,
    agreement: Vec<bool>,
}

/// Scores the requests; with `baseline`, also how often its locality answers equal ours.
pub fn evaluate(
    model: &Llama,
    baseline: Option<&Llama>,
    tok: &Tokenizer,
    requests: &[EditRequest],
    s: &EditSettings,
    quiet: bool,
) -> Result<Outcome> {
    let rules = Rules::new(tok, model, s.max_length)?;
    let bar = Progress::new(requests.len(), "edit requests", quiet);
    let mut items = Vec::with_capacity(requests.len());
    for r in requests {
        let t = rules.target(&r.target_new)?;
        let f1 = |m: &Llama, prompt: &str, t: &[u32]| -> Result<(f64, Vec<u32>)> {
            let g = rules.generate(m, &rules.prompt(prompt)?, t.len())?;
            Ok((token_set_f1(&g, t), g))
        };
        let edit = f1(model, &r.prompt, &t)?.0;
        let rephrase = r
            .rephrase_prompts
            .iter()
            .map(|p| Ok(f1(model, p, &t)?.0))
            .collect::<Result<Vec<_>>>()?;
        let (mut locality, mut locality_ids, mut agreement) = (Vec::new(), Vec::new(), Vec::new());
        for l in &r.locality {
            let lt = rules.target(&l.answer)?;
            let (f, g) = f1(model, &l.prompt, &lt)?;
            if let Some(b) = baseline {
                agreement.push(f1(b, &l.prompt, &lt)?.1 == g);
            }
            locality.push(f);
            locality_ids.push(g);
        }
        items.push(Item {
            edit,
            rephrase,
            locality,
            locality_ids,
            agreement,
        });
        bar.inc(1);
    }
    bar.finish();
    let tf = teacher_forced(model, &rules, requests, s.batch_size)?;
    summarise(requests, &items, &tf, baseline.is_some(), s)
}

/// `(accuracy, log P(T | prompt))` per request; `None` where `T` is empty.
fn teacher_forced(
    model: &Llama,
    rules: &Rules,
    requests: &[EditRequest],
    batch: usize,
) -> Result<Vec<Option<(f64, f64)>>> {
    let mut seqs = Vec::with_capacity(requests.len());
    for r in requests {
        let p = rules.prompt(&r.prompt)?;
        let t = rules.target(&r.target_new)?;
        seqs.push((p.len(), t.len(), [p, t].concat()));
    }
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(batch.max(1)) {
        let inputs: Vec<&[u32]> = chunk.iter().map(|(_, _, s)| s.as_slice()).collect();
        let fwd = model.forward(&inputs, Logits::All, &Hooks::default())?;
        for (b, (plen, tlen, seq)) in chunk.iter().enumerate() {
            if *tlen == 0 {
                out.push(None);
                continue;
            }
            let (mut hits, mut logprob) = (0usize, 0.0f64);
            for i in 0..*tlen {
                let pos = plen + i - 1;
                let row = fwd
                    .logits_at(b, pos)
                    .ok_or_else(|| Error::Check("teacher forcing: missing logits".into()))?;
                let target = seq[pos + 1];
                hits += usize::from(argmax(row) == Some(target as usize));
                logprob += f64::from(row[target as usize]) - f64::from(logsumexp(row));
            }
            out.push(Some((hits as f64 / *tlen as f64, logprob)));
        }
    }
    Ok(out)
}

fn summarise(
    requests: &[EditRequest],
    items: &[Item],
    tf: &[Option<(f64, f64)>],
    with_baseline: bool,
    s: &EditSettings,
) -> Result<Outcome> {
    let edits: Vec<f64> = items.iter().map(|i| i.edit).collect();
    // A request's rephrases (or locality prompts) are averaged first, so a request with several
    // counts once, as in the study where every zsRE request has exactly one.
    let per_request = |f: fn(&Item) -> &Vec<f64>| -> Vec<f64> {
        items.iter().filter_map(|i| mean(f(i))).collect()
    };
    let gens = per_request(|i| &i.rephrase);
    let locs = per_request(|i| &i.locality);
    let accs: Vec<f64> = tf.iter().flatten().map(|x| x.0).collect();
    let lps: Vec<f64> = tf.iter().flatten().map(|x| x.1).collect();
    let mut metrics = json!({
        "edit_success": mean(&edits),
        "generalization": mean(&gens),
        "locality": mean(&locs),
        "edit_acc_tf": mean(&accs),
        "target_logprob": mean(&lps),
        "count": items.len(),
        "generalization_count": gens.len(),
        "locality_count": locs.len(),
    });
    let mut table = vec![
        ("edit_success".to_string(), fmt(mean(&edits))),
        ("generalization".to_string(), fmt(mean(&gens))),
        ("locality".to_string(), fmt(mean(&locs))),
        ("edit_acc_tf".to_string(), fmt(mean(&accs))),
        ("target_logprob".to_string(), fmt(mean(&lps))),
    ];
    if with_baseline {
        let agree: Vec<f64> = items
            .iter()
            .flat_map(|i| i.agreement.iter().map(|&a| f64::from(u8::from(a))))
            .collect();
        metrics["locality_agreement"] = json!(mean(&agree));
        table.push(("locality_agreement".to_string(), fmt(mean(&agree))));
    }
    table.push(("requests".to_string(), items.len().to_string()));
    let per_item: Vec<Value> = requests
        .iter()
        .zip(items)
        .zip(tf)
        .map(|((r, i), t)| {
            json!({
                "line": r.line,
                "edit_f1": i.edit,
                "rephrase_f1": i.rephrase,
                "locality_f1": i.locality,
                "locality_ids": i.locality_ids,
                "edit_acc_tf": t.map(|x| x.0),
                "target_logprob": t.map(|x| x.1),
            })
        })
        .collect();
    Ok(Outcome {
        metrics,
        settings: json!({
            "max_length": s.max_length,
            "batch_size": s.batch_size,
            "target": "enc(\" \" + answer) with special tokens, truncated to max_length, eos/bos removed",
            "excluded_from_generation": "eos, bos, newline token",
        }),
        per_item: Value::Array(per_item),
        table,
    })
}

fn fmt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_is_on_sets_with_list_lengths() {
        assert_eq!(token_set_f1(&[1, 2], &[1, 2]), 1.0);
        assert_eq!(token_set_f1(&[3], &[1, 2]), 0.0);
        assert_eq!(token_set_f1(&[], &[1]), 0.0);
        // G = [1, 1]: common {1}; P = 1/2, R = 1/2.
        assert!((token_set_f1(&[1, 1], &[1, 2]) - 0.5).abs() < 1e-12);
        // P = 1/1, R = 1/3 -> F1 = 0.5.
        assert!((token_set_f1(&[5], &[5, 6, 7]) - 0.5).abs() < 1e-12);
    }
}
