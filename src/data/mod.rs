//! Readers for the evaluation and intervention data: edit requests (zsRE, CounterFact, ROME),
//! ROME known facts, multiple-choice benchmarks (MMLU, WMDP), text corpora (C4, WikiText, TOFU)
//! and calibration-window sampling. File formats are described in `../shared/data/SOURCES.md`.
//!
//! Every reader treats its file as hostile input: file and line sizes are capped
//! (`source::Limits`), nothing indexes unchecked, records come back in file order, and
//! errors name the file, the line and the field.

pub mod calib;
mod csv;
mod fields;
pub mod known;
pub mod mc;
pub mod requests;
pub mod rng;
mod source;
pub mod text;

pub use calib::{sample_window_positions, sample_windows, Window};
pub use known::{read_known_facts, KnownFact};
pub use mc::{read_mc, read_mmlu, read_wmdp_jsonl, McQuestion};
pub use requests::{read_requests, EditRequest, LocalityPrompt, RequestFormat};
pub use text::{
    read_text_corpus, wikitext_join, wikitext_rows, wikitext_rows_with_layout, TextCorpus,
};

/// P11: every reader, fed random bytes shaped like its format, returns `Ok` or `Err` and never
/// panics.
#[cfg(test)]
mod hostile_tests {
    use super::rng::SplitMix64;
    use super::*;
    use std::path::Path;

    /// Random text over an alphabet that reaches the parsers' interesting states.
    fn noise(rng: &mut SplitMix64, pieces: &[&str]) -> String {
        let n = rng.below(40) as usize;
        (0..n)
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn random_inputs_never_panic() {
        const JSON: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\n",
            " ",
            "1",
            "-1",
            "null",
            "\"src\"",
            "\"alt\"",
            "\"prompt\"",
            "\"subject\"",
            "\"target_new\"",
            "\"{}\"",
            "\"request\"",
            "\"text\"",
            "\"choices\"",
            "\"answer\"",
            "\"question\"",
            "\"x\"",
            "\u{e9}",
        ];
        const CSV: &[&str] = &["\"", ",", "\n", "\r\n", "a", "A", "E", " ", "\"\""];
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SplitMix64::new(11);
        for i in 0..400 {
            let json = dir.path().join(format!("f{i}.jsonl"));
            std::fs::write(&json, noise(&mut rng, JSON)).unwrap();
            let _ = read_requests(&json, 0, None);
            let _ = read_known_facts(&json);
            let _ = read_wmdp_jsonl(&json);
            let _ = read_text_corpus(&json);
            let csv = dir.path().join(format!("s{i}_test.csv"));
            std::fs::write(&csv, noise(&mut rng, CSV)).unwrap();
            let _ = read_mmlu(&csv);
        }
        let docs: Vec<Vec<u32>> = (0..5).map(|i| vec![0; i * 3]).collect();
        for seqlen in 0..15 {
            let _ = sample_windows(Path::new("x"), &docs, 3, seqlen, 1);
        }
    }
}
