//! BPE merges recovered from a SentencePiece vocabulary's scores, for GGUF files with none.
//!
//! A SentencePiece BPE model stores no merge list: it merges the adjacent pair whose result has
//! the highest score. The same ranking as a merge list is every split `left + right` of every
//! piece where both halves are pieces too, ordered by the piece's score (then longer halves
//! first). This is the rule transformers uses (`generate_merges`), so the tokenizer we write
//! agrees with the one transformers builds from the same file.

use std::collections::HashMap;

/// The merges implied by `tokens` and `scores` (same length, tokens unique), best first.
pub(crate) fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();

    // (left, right, score of the merged piece)
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(scores) {
        let start = merges.len();
        // Split at every character boundary after the first character.
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if ids.contains_key(left) && ids.contains_key(right) {
                merges.push((left, right, score));
            }
        }
        // Within one piece, the split whose halves come earlier in the vocabulary goes first.
        merges[start..].sort_by_key(|(l, r, _)| (ids[l], ids[r]));
    }

    // Best score first, then longer left half, then longer right half; the sort is stable, so
    // ties keep vocabulary order.
    let chars = |s: &str| s.chars().count();
    merges.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| chars(b.0).cmp(&chars(a.0)))
            .then_with(|| chars(b.1).cmp(&chars(a.1)))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_owned(), r.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranks_by_score_then_half_length() {
        let tokens = strings(&["a", "b", "c", "ab", "abc", "bc"]);
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores);
        let got: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // "abc" has two splits with equal score: the longer left half ("ab" + "c") first.
        assert_eq!(got, vec![("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]);
    }

    #[test]
    fn splits_on_characters_not_bytes() {
        // "▁" is three bytes in UTF-8; splitting inside it would panic or invent pieces.
        let tokens = strings(&["▁", "é", "▁é"]);
        let merges = merges_from_scores(&tokens, &[0.0, 0.0, 1.0]);
        assert_eq!(merges, vec![("▁".to_string(), "é".to_string())]);
    }
}
