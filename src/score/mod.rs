//! Composability from provenance (DESIGN.md, `../shared/reference/composability.md` §1 and §4):
//! read two lineages of the same two interventions applied in opposite orders, check that they
//! really are that, match the criteria evaluated on both final checkpoints, and compute the
//! order-free error and the order sensitivity; per-step deltas of one lineage; and the report
//! of a whole sweep with its figures.

pub mod compare;
pub mod criteria;
pub mod lineage;
pub mod metrics;
pub mod report;
pub mod single;
pub mod svg;

pub use compare::{score, Score};
pub use criteria::ForgetRule;
pub use lineage::Lineage;
pub use single::{steps, Steps};
