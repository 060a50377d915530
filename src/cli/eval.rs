//! `intervene eval DIR --task edit|mc|ppl --data FILE`: score a checkpoint on one criterion
//! (src/eval/) and append the result to its provenance.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use intervene::checkpoint::{provenance::TOOL_VERSION, Checkpoint, Evaluation, TOKENIZER_FILE};
use intervene::data::{
    read_mc, read_requests, read_text_corpus, wikitext_join, wikitext_rows_with_layout,
};
use intervene::eval::{edit, mc, ppl, record, Outcome};
use intervene::model::Llama;
use intervene::tokenizer::Tokenizer;
use intervene::Error;
use serde_json::json;

use super::common::{print_json, Backend, GlobalOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Edit success, generalisation, locality (generation F1) and teacher-forced accuracy.
    Edit,
    /// Zero-shot multiple-choice accuracy (MMLU CSV or WMDP JSONL).
    Mc,
    /// Perplexity over non-overlapping windows.
    Ppl,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Edit => "edit",
            Task::Mc => "mc",
            Task::Ppl => "ppl",
        }
    }
}

/// How `--task mc` puts a question to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum McPrompt {
    /// lm-eval's MMLU/WMDP prompt: description, question, lettered choices, "Answer:".
    Lettered,
    /// The question as the context, each choice's text as its continuation (a fact's prompt).
    Cloze,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint directory (a plain Hugging Face directory is evaluated but nothing is recorded).
    pub dir: PathBuf,
    /// What to measure.
    #[arg(long, value_enum)]
    pub task: Task,
    /// Edit requests (zsRE, CounterFact, ROME JSONL), MMLU CSV or directory, WMDP JSONL, or text.
    #[arg(long)]
    pub data: PathBuf,
    /// Most items to score (requests, questions, windows; default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Items to skip first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// ppl: window length in tokens (default: the model's context, at most 2048).
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// edit: the unedited model, to report `locality_agreement`.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// edit: the study's `max_length` in tokens (prompt + generated; also caps the target).
    #[arg(long, default_value_t = 30)]
    pub max_length: usize,
    /// mc: at most N questions per subject (after --offset/--limit).
    #[arg(long, value_name = "N")]
    pub limit_per_subject: Option<usize>,
    /// mc: the topic the description names for a JSONL file not named wmdp_bio/cyber/chem.
    #[arg(long)]
    pub subject: Option<String>,
    /// mc: the prompt format (recorded in the evaluation's settings).
    #[arg(long, value_enum, default_value_t = McPrompt::Lettered)]
    pub prompt: McPrompt,
    /// ppl: WikiText `.tokens` file whose blank lines restore a raw file's row layout
    /// (found automatically for `wiki.test.raw` beside `wiki.test.tokens`).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Do not append the result to provenance.json.
    #[arg(long)]
    pub no_record: bool,
    /// Print the metrics object (plus `per_item`) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs, g: &GlobalOpts) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        return Err(Error::usage("--batch-size", "must be at least 1").into());
    }
    let ckpt = Checkpoint::open(&a.dir)?;
    let tok = Tokenizer::from_file(a.dir.join(TOKENIZER_FILE))?;
    let start = Instant::now();
    let data_path = a.data.display().to_string();
    let (outcome, extra_inputs) = match a.task {
        Task::Edit => (run_edit(&a, &ckpt, &tok, g.quiet)?, Vec::new()),
        Task::Mc => {
            let qs = read_mc(&a.data)?;
            let model = Llama::load(&ckpt)?;
            let s = mc::McSettings {
                format: match a.prompt {
                    McPrompt::Lettered => mc::McFormat::Lettered,
                    McPrompt::Cloze => mc::McFormat::Cloze,
                },
                batch_size: a.batch_size,
                offset: a.offset,
                limit: a.limit,
                limit_per_subject: a.limit_per_subject,
                topic: a.subject.clone(),
            };
            // Single-token scoring (MMLU, WMDP) runs on the resolved device; the rest on the CPU.
            let backend = g.backend()?;
            let mut o = match &backend {
                Backend::Cpu => mc::evaluate(&model, &tok, &qs, &a.data, &s, g.quiet)?,
                #[cfg(feature = "gpu")]
                Backend::Gpu(gpu) => {
                    let on_gpu = intervene::model::GpuLlama::upload(gpu, &model)?;
                    mc::evaluate_on(&model, &on_gpu, &tok, &qs, &a.data, &s, g.quiet)?
                }
            };
            o.settings["device"] = json!(backend.name());
            (o, Vec::new())
        }
        Task::Ppl => {
            let (text, layout, join) = ppl_text(&a)?;
            let tokens = tok.encode(&text, true)?;
            let model = Llama::load(&ckpt)?;
            let s = ppl::PplSettings {
                seqlen: a.seqlen.unwrap_or_else(|| ppl::default_seqlen(&model)),
                batch_size: a.batch_size,
                offset: a.offset,
                limit: a.limit,
            };
            let mut o = ppl::evaluate(&model, &tokens, &s, &data_path, g.quiet)?;
            o.settings["join"] = json!(join);
            let inputs = match layout {
                Some(p) => vec![record::data_file("layout", &p)?],
                None => Vec::new(),
            };
            (o, inputs)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let mut settings = outcome.settings.clone();
    if settings.get("device").is_none() {
        settings["device"] = json!(g.device_name());
    }
    if !extra_inputs.is_empty() {
        settings["inputs"] = json!(extra_inputs);
    }
    if let Some(b) = &a.baseline {
        settings["baseline"] = json!(Checkpoint::open(b)?.provenance.map(|p| p.id));
    }
    let recorded = match (&ckpt.provenance, a.no_record) {
        (_, true) => false,
        (None, false) => {
            eprintln!(
                "note: `{}` has no provenance.json (not an intervene checkpoint); the evaluation is not recorded",
                a.dir.display()
            );
            false
        }
        (Some(p), false) => {
            record::append(
                &a.dir,
                Evaluation {
                    checkpoint: p.id.clone(),
                    task: a.task.name().to_string(),
                    data: record::data_file("data", &a.data)?,
                    settings,
                    metrics: outcome.metrics.clone(),
                    seconds,
                    tool_version: TOOL_VERSION.to_string(),
                },
            )?;
            true
        }
    };
    report(&a, &outcome, seconds, recorded)?;
    Ok(ExitCode::SUCCESS)
}

fn run_edit(
    a: &EvalArgs,
    ckpt: &Checkpoint,
    tok: &Tokenizer,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let (_, requests) = read_requests(&a.data, a.offset, a.limit)?;
    let model = Llama::load(ckpt)?;
    let baseline = match &a.baseline {
        Some(dir) => {
            let b = Checkpoint::open(dir)?;
            if b.config.vocab_size != ckpt.config.vocab_size {
                return Err(Error::usage(
                    "--baseline",
                    format!(
                        "`{}` has a vocabulary of {}, the checkpoint {}: not the same tokenizer",
                        dir.display(),
                        b.config.vocab_size,
                        ckpt.config.vocab_size
                    ),
                )
                .into());
            }
            Some(Llama::load(&b)?)
        }
        None => None,
    };
    let s = edit::EditSettings {
        max_length: a.max_length,
        batch_size: a.batch_size,
    };
    let mut o = edit::evaluate(&model, baseline.as_ref(), tok, &requests, &s, quiet)?;
    o.settings["offset"] = json!(a.offset);
    o.settings["limit"] = json!(a.limit);
    Ok(o)
}

/// The perplexity text and how it was joined: JSONL documents by `"\n\n"`; raw text as the
/// study joins WikiText (HF rows by `"\n\n"`), with the blank rows restored from a layout file
/// when one is given or sits beside `wiki.test.raw`.
fn ppl_text(a: &EvalArgs) -> anyhow::Result<(String, Option<PathBuf>, &'static str)> {
    let is_json = a
        .data
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "jsonl" | "json"));
    if is_json {
        let corpus = read_text_corpus(&a.data)?;
        return Ok((
            corpus.documents.join("\n\n"),
            None,
            "documents joined by \"\\n\\n\"",
        ));
    }
    let layout = a.layout.clone().or_else(|| sibling_layout(&a.data));
    match layout {
        Some(l) => {
            let rows = wikitext_rows_with_layout(&a.data, &l)?;
            Ok((
                rows.join("\n\n"),
                Some(l),
                "wikitext rows (layout restored) joined by \"\\n\\n\"",
            ))
        }
        None => {
            let corpus = read_text_corpus(&a.data)?;
            let text = corpus.documents.concat();
            Ok((
                wikitext_join(&text),
                None,
                "wikitext rows joined by \"\\n\\n\"",
            ))
        }
    }
}

fn sibling_layout(data: &Path) -> Option<PathBuf> {
    let name = data.file_name()?.to_str()?;
    let stem = name.strip_suffix(".raw")?;
    let l = data.with_file_name(format!("{stem}.tokens"));
    l.is_file().then_some(l)
}

fn report(a: &EvalArgs, o: &Outcome, seconds: f64, recorded: bool) -> anyhow::Result<()> {
    if a.json {
        let mut m = o.metrics.clone();
        if !o.per_item.is_null() {
            m["per_item"] = o.per_item.clone();
        }
        m["seconds"] = json!(seconds);
        return print_json(&m);
    }
    let width = o.table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{} on {}", a.task.name(), a.data.display());
    for (k, v) in &o.table {
        println!("  {k:<width$}  {v}");
    }
    println!(
        "  {:<width$}  {seconds:.1} s{}",
        "time",
        if recorded { " (recorded)" } else { "" }
    );
    Ok(())
}
