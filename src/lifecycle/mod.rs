//! The experiment lifecycle as a pure function: given what the controller observed (and the
//! clock, as an input), what should happen next.
//!
//! ```text
//! Pending -> Verifying(before) -> Injecting -> Running -> Recovering -> Verifying(after) -> Succeeded | Failed
//!                                    |            |
//!                                    +--> Aborting --> Aborted
//! ```
//!
//! Guarantees:
//! - nothing is injected unless the targets are recorded and the before-hypothesis holds;
//! - once anything may be injected (Injecting and later), every path to a terminal phase goes
//!   through a revert that the world confirms (`faults_reverted`), so a fault never outlives
//!   its experiment;
//! - a deletion or an abort request is obeyed from every phase; a cluster-wide pause stops
//!   what may have faults in and holds (in Pending) what has not injected yet;
//! - an experiment in which no fault went in never passes: it is Inconclusive.
//!
//! This module never talks to the cluster; `decide` is tested with plain tables.

mod decide;
pub mod record;
pub mod status_size;

pub use decide::{
    ABORTING_SHOWN_AFTER, AbortCause, Decision, HypothesisView, Observed, ProbedPhases,
    ProgressView, abort_begun, aborting_shown_at, decide, unconfirmed_sentence,
};
