//! What the agent must do, decided from what is (pure: no IO, the clock is an input).
//!
//! The agent converges the kernel to exactly what the live FaultInjections say. Inputs are the
//! live injections for its node (or `None` when the API server cannot be reached), its journal
//! of what it applied, which of those it has (re)applied since it started, and which target
//! pods are gone. The output is a list of actions and the next deadline to wake up for.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::admission::{Refusal, Verdict};
use super::tag::InjectionTag;
use crate::api::InjectionPhase;

/// A FaultInjection as the planner needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveInjection {
    /// `namespace/name`.
    pub key: String,
    pub tag: InjectionTag,
    pub pod_uid: String,
    pub expires_at: DateTime<Utc>,
    pub generation: Option<i64>,
    pub deleting: bool,
    /// Its experiment is reverting (labelled so by the controller): take the fault out, apply
    /// nothing; the agent's revert receipt for the node confirms it, not a status write here.
    pub ending: bool,
    pub has_finalizer: bool,
    pub phase: InjectionPhase,
    pub observed_generation: Option<i64>,
    /// Whether the agent may put (or keep) this fault on its target ([`super::admission`]).
    pub consent: Verdict,
}

/// A journal entry as the planner needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub tag: InjectionTag,
    pub pod_uid: String,
    pub expires_at: DateTime<Utc>,
    pub generation: Option<i64>,
    /// Applied (or re-applied after a restart) by this agent process.
    pub confirmed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevertReason {
    /// `expiresAt` passed: the agent's own deadline, whatever the API server says.
    Expired,
    /// The FaultInjection is being deleted (the controller reverts).
    Deleted,
    /// No live FaultInjection backs it any more (deleted while the agent was away).
    NoLongerDesired,
    /// Its experiment is reverting (Recovering or Aborting): every fault of it on the node goes
    /// in one pass, confirmed by one receipt.
    Ending,
    /// The target pod is gone; its namespace took the pod-side rules with it.
    TargetGone,
    /// The agent may no longer keep it: consent withdrawn (the namespace's opt-in label
    /// removed, the pod labelled protected), chaos paused, or no experiment behind it.
    Withdrawn(Refusal),
}

impl RevertReason {
    pub fn describe(&self) -> &'static str {
        match self {
            RevertReason::Expired => "reverted by the agent at expiresAt",
            RevertReason::Deleted => "reverted: the injection was deleted",
            RevertReason::NoLongerDesired => "reverted: no live FaultInjection backs it",
            RevertReason::Ending => "reverted: the experiment is reverting its faults",
            RevertReason::TargetGone => {
                "the target pod is gone (a replacement pod is not followed); its rules went with it"
            }
            RevertReason::Withdrawn(refusal) => refusal.withdrawn(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Remove the fault with this tag from the kernel.
    Revert {
        tag: InjectionTag,
        reason: RevertReason,
    },
    /// Add the agent's finalizer so the injection cannot vanish before its revert.
    AddFinalizer { key: String },
    /// Apply (or re-apply: desired state) the injection.
    Apply { key: String },
    /// Nothing is applied and nothing will be: record why (expired before it was applied, or
    /// its target is gone).
    ReportNotApplied { key: String, reason: RevertReason },
    /// Nothing is left in the kernel for this deleted injection: let it go.
    RemoveFinalizer { key: String },
    /// The agent will not act on this injection: record why (status and a Warning Event).
    /// Nothing of it is in the kernel.
    Refuse { key: String, refusal: Refusal },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest future `expiresAt` the agent must wake up for.
    pub next_deadline: Option<DateTime<Utc>>,
}

/// Decides the actions. `live` is `None` when the API server is unreachable: then only
/// deadlines act (the agent never needs the API server to revert).
pub fn plan(
    now: DateTime<Utc>,
    live: Option<&[LiveInjection]>,
    applied: &[Applied],
    gone_pods: &BTreeSet<String>,
) -> Plan {
    let mut actions = Vec::new();
    let mut reverting: BTreeSet<&InjectionTag> = BTreeSet::new();
    let live_by_tag: Option<BTreeMap<&InjectionTag, &LiveInjection>> =
        live.map(|l| l.iter().map(|i| (&i.tag, i)).collect());

    for entry in applied {
        let reason = if entry.expires_at <= now {
            Some(RevertReason::Expired)
        } else if gone_pods.contains(&entry.pod_uid) {
            Some(RevertReason::TargetGone)
        } else {
            match live_by_tag.as_ref().map(|m| m.get(&entry.tag)) {
                Some(None) => Some(RevertReason::NoLongerDesired),
                Some(Some(injection)) if injection.deleting => Some(RevertReason::Deleted),
                Some(Some(injection)) if injection.ending => Some(RevertReason::Ending),
                Some(Some(injection)) => match injection.consent {
                    Verdict::Refused(refusal) => Some(RevertReason::Withdrawn(refusal)),
                    Verdict::Allowed | Verdict::Unknown => None,
                },
                _ => None,
            }
        };
        if let Some(reason) = reason {
            reverting.insert(&entry.tag);
            actions.push(Action::Revert {
                tag: entry.tag.clone(),
                reason,
            });
        }
    }

    let applied_by_tag: BTreeMap<&InjectionTag, &Applied> =
        applied.iter().map(|a| (&a.tag, a)).collect();
    for injection in live.unwrap_or_default() {
        let entry = applied_by_tag.get(&injection.tag);
        if injection.deleting {
            // Its revert (if any) is in the list above; the runner releases the finalizer after
            // a successful revert. With nothing applied there is nothing to wait for.
            if entry.is_none() && injection.has_finalizer {
                actions.push(Action::RemoveFinalizer {
                    key: injection.key.clone(),
                });
            }
            continue;
        }
        if injection.ending {
            // Its revert (if any) is in the list above; nothing of it goes in again, and
            // nothing is written for it: the node's receipt speaks for it.
            continue;
        }
        let settled = matches!(
            injection.phase,
            InjectionPhase::Reverted | InjectionPhase::Failed
        ) && injection.observed_generation == injection.generation;
        if entry.is_none() && injection.expires_at <= now {
            if !settled {
                actions.push(Action::ReportNotApplied {
                    key: injection.key.clone(),
                    reason: RevertReason::Expired,
                });
            }
            continue;
        }
        if entry.is_none() && gone_pods.contains(&injection.pod_uid) {
            if !settled {
                actions.push(Action::ReportNotApplied {
                    key: injection.key.clone(),
                    reason: RevertReason::TargetGone,
                });
            }
            continue;
        }
        if reverting.contains(&injection.tag) {
            continue;
        }
        match injection.consent {
            Verdict::Refused(refusal) => {
                // Nothing of it is applied (an applied one is being reverted, above): say
                // why once per generation, and hold no finalizer for it.
                if entry.is_none() && !settled {
                    actions.push(Action::Refuse {
                        key: injection.key.clone(),
                        refusal,
                    });
                }
                continue;
            }
            // Not known yet whether it may be applied: neither apply nor revert.
            Verdict::Unknown if entry.is_none() => continue,
            Verdict::Unknown | Verdict::Allowed => {}
        }
        let needs_apply = match entry {
            None => !settled,
            Some(_) if injection.consent == Verdict::Unknown => false,
            Some(entry) => !entry.confirmed || entry.generation != injection.generation,
        };
        // The finalizer guards what is (or is about to be) in the kernel; a settled
        // injection with nothing applied needs none.
        if !injection.has_finalizer && (needs_apply || entry.is_some()) {
            actions.push(Action::AddFinalizer {
                key: injection.key.clone(),
            });
        }
        if needs_apply {
            actions.push(Action::Apply {
                key: injection.key.clone(),
            });
        }
    }

    let next_deadline = applied
        .iter()
        .filter(|a| !reverting.contains(&a.tag))
        .map(|a| a.expires_at)
        .chain(
            live.unwrap_or_default()
                .iter()
                .filter(|i| !i.deleting && !i.ending)
                .map(|i| i.expires_at),
        )
        .filter(|t| *t > now)
        .min();
    Plan {
        actions,
        next_deadline,
    }
}

#[cfg(test)]
#[path = "converge_tests.rs"]
mod tests;
