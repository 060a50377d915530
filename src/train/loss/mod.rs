//! The training objectives: a weighted sum of loss terms over one packed batch. Terms on the
//! logits (cross-entropy and its negation for gradient ascent, KL to a frozen distribution)
//! share one pass through the final norm and LM head; MSE terms read a layer's hidden state.

pub mod cross_entropy;
pub mod kl;
pub mod mse;

pub use mse::MseTarget;

/// One scored token: the logits at `(seq, pos)` should predict `token`; it adds
/// `weight * -log p(token)` to the term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub seq: usize,
    pub pos: usize,
    pub token: u32,
    pub weight: f32,
}

impl Target {
    /// Hugging Face's causal-LM loss: every position but the last of every sequence predicts
    /// the next token, averaged over all of them (`labels = input_ids`, no masking).
    pub fn next_token_mean<S: AsRef<[u32]>>(batch: &[S]) -> Vec<Target> {
        let n: usize = batch
            .iter()
            .map(|s| s.as_ref().len().saturating_sub(1))
            .sum();
        let w = 1.0 / n.max(1) as f32;
        batch
            .iter()
            .enumerate()
            .flat_map(|(seq, s)| {
                let s = s.as_ref();
                (1..s.len()).map(move |p| Target {
                    seq,
                    pos: p - 1,
                    token: s[p],
                    weight: w,
                })
            })
            .collect()
    }

    /// Targets `(seq, pos, token)` averaged with equal weights (a masked mean: only the listed
    /// positions count, as labels of -100 elsewhere would do).
    pub fn mean(list: &[(usize, usize, u32)]) -> Vec<Target> {
        let w = 1.0 / list.len().max(1) as f32;
        list.iter()
            .map(|&(seq, pos, token)| Target {
                seq,
                pos,
                token,
                weight: w,
            })
            .collect()
    }
}

/// One term of an objective.
#[derive(Clone, Debug, PartialEq)]
pub enum LossTerm {
    /// `sum_t weight_t * -log p(token_t)`.
    CrossEntropy(Vec<Target>),
    /// ROME/MEMIT's essence term: `mean over rows of KL(p_new || p_init)` at the given
    /// `(seq, pos)` rows; `init_log_probs` is `[rows, V]`.
    Kl {
        rows: Vec<(usize, usize)>,
        init_log_probs: Vec<f32>,
    },
    /// `mean((h_layer - target)^2)` over every element of the hidden state leaving `layer`
    /// at the rows whose position in their sequence is `from_pos` or later (0: every row).
    /// The forward stops at `layer` when nothing needs the logits.
    HiddenMse {
        layer: usize,
        target: MseTarget,
        from_pos: usize,
    },
}

/// `sum_i weight_i * term_i`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objective {
    pub terms: Vec<(f32, LossTerm)>,
}

impl Objective {
    /// One term with weight 1.
    pub fn single(term: LossTerm) -> Objective {
        Objective {
            terms: vec![(1.0, term)],
        }
    }

    /// Gradient ascent on the cross-entropy of `targets` (the loss is negated).
    pub fn gradient_ascent(targets: Vec<Target>) -> Objective {
        Objective {
            terms: vec![(-1.0, LossTerm::CrossEntropy(targets))],
        }
    }

    /// Adds a term.
    pub fn with(mut self, weight: f32, term: LossTerm) -> Objective {
        self.terms.push((weight, term));
        self
    }

    /// Whether any term reads the logits.
    pub(crate) fn needs_head(&self) -> bool {
        self.terms
            .iter()
            .any(|(_, t)| !matches!(t, LossTerm::HiddenMse { .. }))
    }
}
