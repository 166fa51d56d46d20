//! Holding an experiment while chaos is paused cluster-wide, and starting it on resume.
//! (client required)

use chrono::{DateTime, Utc};

use super::{Context, Result};
use crate::{
    api::{ChaosExperiment, ChaosExperimentStatus, ConditionStatus, Phase},
    controller::{events::Fact, pause_switch, status},
    lifecycle::record::set_condition,
};

/// The `Paused` condition's message while an experiment waits for chaos to resume.
const HELD: &str = "chaos is paused cluster-wide (faultline pause): the experiment waits and starts on `faultline resume` (its targets are chosen then)";

/// Chaos is paused and the experiment has not injected: back to Pending, with no targets (they
/// are chosen afresh on resume), and the `Paused` condition says why.
pub(super) async fn hold(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Result<()> {
    let newly = !pause_switch::held(status);
    status.phase = Phase::Pending;
    status.seed = None;
    status.target_count = 0;
    status.targets.clear();
    status.reason = Some("ChaosPaused".into());
    status.message = Some(HELD.into());
    set_condition(
        &mut status.conditions,
        "Paused",
        ConditionStatus::True,
        "ChaosPaused",
        HELD,
        generation,
        now,
    );
    if newly {
        status::note(
            ctx,
            experiment,
            status,
            Fact::normal("ExperimentHeld", "Hold", HELD),
        )
        .await;
    }
    status::write(ctx, experiment, status).await
}

/// Chaos resumed: the held experiment starts.
pub(super) fn resume(
    status: &mut ChaosExperimentStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Fact {
    let message = "chaos resumed (faultline resume): the experiment starts";
    set_condition(
        &mut status.conditions,
        "Paused",
        ConditionStatus::False,
        "ChaosResumed",
        message,
        generation,
        now,
    );
    status.reason = None;
    status.message = None;
    Fact::normal("ExperimentResumed", "Resume", message)
}
