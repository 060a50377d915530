//! Knowledge editing: in-memory methods that change a few tensors of a loaded model so it
//! answers edit requests with their new targets.
//!
//! ROME (Meng et al. 2022) and MEMIT (Meng et al. 2023) as their reference code implements
//! them (`kmeng01/rome`, `kmeng01/memit`, EasyEdit's Llama settings; algorithms.md §6–7): keys
//! are `down_proj` inputs at the subject's last token, values are optimised with Adam through
//! the hand-written backward pass (`train`), and the weight update is a closed form against the
//! key covariance `C = E[k kᵀ]` of a text corpus. FT and LoRA fine-tune `down_proj` weights or
//! low-rank adapters on the requests' targets.
//!
//! One concern per file: `prompts` (token bookkeeping), `templates` (the model-generated
//! context prefixes), `key` (activations at the subject), `value` (the optimised value
//! vector), `covariance` (the cached second moment), `rome`, `memit`, `driver` (checkpoint
//! in, checkpoint out, provenance); `targets` (requests to fine-tuning batches), `ft`, `lora`.

pub mod covariance;
pub mod driver;
pub mod ft;
pub mod key;
pub mod lora;
pub mod memit;
pub mod prompts;
pub mod rome;
pub mod targets;
pub mod templates;
pub mod value;

#[cfg(test)]
pub(crate) mod tests;
