//! `faultline abort [KIND/]NAME` and `faultline abort --all`: ask the controller to stop an
//! experiment or a game day by setting the `faultline.dev/abort` annotation to the reason. The
//! controller reverts the faults and ends it as Aborted, with the reason in its status and
//! report; a game day aborts the experiments still going and starts no further stage (nor,
//! when it has a schedule, further runs).
//!
//! The annotation is written only when it means something: one that already ended is left as
//! it is (exit 3: nothing was aborted), and one already aborting keeps its first reason (exit
//! 0: it is stopping, as asked). The write carries the resourceVersion the decision was made
//! on, so an abort that lands in between is not overwritten either.
//!
//! Exit codes: 0 abort requested (or already aborting); 3 usage, not found, already ended, or a
//! cluster error.

use std::process::ExitCode;

use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::NamespaceResourceScope,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{
    run::{Cluster, connect, explain},
    stdout::outln,
    subject::Subject,
};
use crate::api::{ABORT_ANNOTATION, ChaosExperiment, GameDay, Phase};

#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    /// The experiment (`NAME` or `fex/NAME`) or game day (`fgd/NAME`) to abort.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    name: Option<String>,
    /// Its namespace. Default: the kubeconfig's namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Abort every experiment and game day that has not finished, in every namespace.
    #[arg(long)]
    all: bool,
    /// Why (recorded in the annotation and shown in the experiment's status).
    #[arg(long, default_value = "requested with faultline abort")]
    reason: String,
}

/// What to do about one object, from what it is now (pure).
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Set the annotation; `then` says what follows when that is not obvious.
    Request { then: Option<String> },
    /// It is stopping already, for this reason.
    AlreadyAborting(String),
    /// It has ended (phase and verdict): there is nothing to abort.
    AlreadyEnded(String),
}

/// An object `faultline abort` can stop.
trait Abortable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
{
    /// `experiment` or `game day`, for messages.
    const NOUN: &'static str;
    fn decide(&self) -> Decision;
}

impl Abortable for ChaosExperiment {
    const NOUN: &'static str = "experiment";

    fn decide(&self) -> Decision {
        let status = self.status.as_ref();
        if let Some(status) = status.filter(|s| s.phase.is_terminal()) {
            let verdict = status
                .verdict
                .map_or_else(String::new, |v| format!(", verdict {v:?}"));
            return Decision::AlreadyEnded(format!("phase {:?}{verdict}", status.phase));
        }
        if let Some(reason) = self.abort_reason() {
            return Decision::AlreadyAborting(reason.to_string());
        }
        // The controller aborts on its own too (a probe failed): no annotation, phase Aborting.
        if let Some(status) = status.filter(|s| s.phase == Phase::Aborting) {
            let reason = status.reason.clone().unwrap_or_default();
            return Decision::AlreadyAborting(reason);
        }
        Decision::Request { then: None }
    }
}

impl Abortable for GameDay {
    const NOUN: &'static str = "game day";

    fn decide(&self) -> Decision {
        let status = self.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        // A finished game day with a schedule runs again at `nextStartTime`; the annotation
        // keeps that run from starting, so it still means something.
        if let Some(verdict) = status.verdict
            && status.next_start_time.is_none()
        {
            return Decision::AlreadyEnded(format!("phase {phase}, verdict {verdict:?}"));
        }
        if let Some(reason) = self.annotations().get(ABORT_ANNOTATION) {
            return Decision::AlreadyAborting(reason.clone());
        }
        let then = match (status.verdict, status.next_start_time) {
            (Some(_), Some(next)) => Some(format!(
                "its last run has ended; the next, due at {next}, will not start (nor any after it while the annotation {ABORT_ANNOTATION} stays)"
            )),
            _ => None,
        };
        Decision::Request { then }
    }
}

impl AbortArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        Ok(match runtime.block_on(self.run_async()) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(3)
            }
        })
    }

    async fn run_async(self) -> Result<ExitCode, String> {
        let Self {
            name,
            namespace,
            all,
            reason,
        } = self;
        let cluster = connect().await?;
        if all {
            abort_all(&cluster, &reason).await?;
            return Ok(ExitCode::SUCCESS);
        }
        let namespace = namespace.unwrap_or_else(|| cluster.namespace.clone());
        let name = name.unwrap_or_default();
        let ended = match Subject::parse(&name)? {
            Subject::Experiment(name) => {
                abort_one::<ChaosExperiment>(&cluster, &namespace, &name, &reason).await?
            }
            Subject::GameDay(name) => {
                abort_one::<GameDay>(&cluster, &namespace, &name, &reason).await?
            }
            Subject::Schedule(name) => return Err(schedule_refused(&namespace, &name)),
        };
        Ok(match ended {
            Some(message) => {
                eprintln!("error: {message}");
                ExitCode::from(3)
            }
            None => ExitCode::SUCCESS,
        })
    }
}

/// A schedule is suspended, not aborted: say how, and how to stop the run that is going.
fn schedule_refused(namespace: &str, name: &str) -> String {
    format!(
        "schedule {namespace}/{name} cannot be aborted: suspend it to start no more runs (kubectl patch fsched {name} -n {namespace} --type merge -p '{{\"spec\":{{\"suspend\":true}}}}') and abort a run still going by its name (`faultline status -n {namespace}` lists them)"
    )
}

/// Aborts `namespace/name` if that means something, and prints what happened. `Ok(Some(_))`
/// says it had already ended (nothing was written).
async fn abort_one<K: Abortable>(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Result<Option<String>, String> {
    let api: Api<K> = Api::namespaced(cluster.client.clone(), namespace);
    let noun = K::NOUN;
    let what = format!("aborting {noun} {namespace}/{name}");
    // A conflict means someone wrote it since we read it (perhaps another abort): look again.
    for _ in 0..5 {
        let object = api
            .get_opt(name)
            .await
            .map_err(|e| explain(&e, cluster, &what))?
            .ok_or_else(|| not_found::<K>(namespace, name))?;
        match object.decide() {
            Decision::AlreadyEnded(state) => {
                return Ok(Some(format!(
                    "{noun} {namespace}/{name} has already ended ({state}): there is nothing to abort"
                )));
            }
            Decision::AlreadyAborting(first) => {
                outln!(
                    "{noun} {namespace}/{name} is already aborting (reason: {}); its faults are being reverted",
                    if first.is_empty() {
                        "none given"
                    } else {
                        &first
                    }
                );
                return Ok(None);
            }
            Decision::Request { then } => {
                let patch = json!({ "metadata": {
                    "resourceVersion": object.resource_version(),
                    "annotations": { ABORT_ANNOTATION: reason },
                }});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        let prefix = if noun == "game day" { "gameday " } else { "" };
                        outln!("abort requested: {prefix}{namespace}/{name}");
                        if let Some(then) = then {
                            outln!("  {then}");
                        }
                        return Ok(None);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        return Err(not_found::<K>(namespace, name));
                    }
                    Err(error) => return Err(explain(&error, cluster, &what)),
                }
            }
        }
    }
    Err(format!(
        "{what}: it kept changing while we wrote the abort; run the command again"
    ))
}

fn not_found<K: Abortable>(namespace: &str, name: &str) -> String {
    let list = if K::NOUN == "game day" {
        format!("kubectl get fgd -n {namespace}")
    } else {
        format!("faultline status -n {namespace}")
    };
    format!(
        "{} {namespace}/{name} not found ({list} lists them; -A for every namespace)",
        K::NOUN
    )
}

/// Aborts every experiment and game day that has not ended, in every namespace: an emergency
/// stop also keeps game days from starting their next stage.
async fn abort_all(cluster: &Cluster, reason: &str) -> Result<(), String> {
    let experiments: Vec<ChaosExperiment> = list_going(cluster, "experiments").await?;
    let gamedays: Vec<GameDay> = list_going(cluster, "game days").await?;
    for experiment in &experiments {
        let namespace = experiment.namespace().unwrap_or_default();
        abort_one::<ChaosExperiment>(cluster, &namespace, &experiment.name_any(), reason).await?;
    }
    for gameday in &gamedays {
        let namespace = gameday.namespace().unwrap_or_default();
        abort_one::<GameDay>(cluster, &namespace, &gameday.name_any(), reason).await?;
    }
    if experiments.is_empty() && gamedays.is_empty() {
        outln!("no running experiment to abort");
    }
    Ok(())
}

/// Those of `K` in every namespace that have not ended.
async fn list_going<K: Abortable>(cluster: &Cluster, what: &str) -> Result<Vec<K>, String> {
    let api: Api<K> = Api::all(cluster.client.clone());
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(&e, cluster, &format!("listing {what} in every namespace")))?
        .items;
    Ok(items
        .into_iter()
        .filter(|object| !matches!(object.decide(), Decision::AlreadyEnded(_)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChaosExperimentStatus, GameDayStatus, Verdict};

    fn experiment(phase: Option<Phase>, abort: Option<&str>) -> ChaosExperiment {
        let mut experiment: ChaosExperiment = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"duration": "1m", "faults": [{"podKill": {}}]},
        }))
        .unwrap();
        experiment.status = phase.map(|phase| ChaosExperimentStatus {
            phase,
            verdict: phase.is_terminal().then_some(Verdict::Passed),
            ..Default::default()
        });
        if let Some(reason) = abort {
            experiment
                .annotations_mut()
                .insert(ABORT_ANNOTATION.into(), reason.into());
        }
        experiment
    }

    #[test]
    fn an_experiment_still_going_is_aborted_once_and_an_ended_one_not_at_all() {
        assert_eq!(
            experiment(None, None).decide(),
            Decision::Request { then: None }
        );
        assert_eq!(
            experiment(Some(Phase::Running), None).decide(),
            Decision::Request { then: None }
        );
        // The first reason stays.
        assert_eq!(
            experiment(Some(Phase::Running), Some("pager")).decide(),
            Decision::AlreadyAborting("pager".into())
        );
        assert_eq!(
            experiment(Some(Phase::Succeeded), None).decide(),
            Decision::AlreadyEnded("phase Succeeded, verdict Passed".into())
        );
        // Ended after an abort: ended wins, there is nothing left to stop.
        assert!(matches!(
            experiment(Some(Phase::Aborted), Some("pager")).decide(),
            Decision::AlreadyEnded(_)
        ));
    }

    #[test]
    fn a_game_day_that_will_run_again_can_be_aborted_after_its_last_run_ended() {
        let day = |status: GameDayStatus| {
            let mut day: GameDay = serde_json::from_value(json!({
                "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
                "metadata": {"name": "drill", "namespace": "default"},
                "spec": {"stages": [{"name": "kill", "experiments": [
                    {"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]}]},
            }))
            .unwrap();
            day.status = Some(status);
            day
        };
        let ended = GameDayStatus {
            phase: Some("Succeeded".into()),
            verdict: Some(Verdict::Passed),
            ..Default::default()
        };
        assert!(matches!(
            day(ended.clone()).decide(),
            Decision::AlreadyEnded(_)
        ));
        let scheduled = GameDayStatus {
            next_start_time: Some(chrono::Utc::now()),
            ..ended
        };
        assert!(matches!(
            day(scheduled).decide(),
            Decision::Request { then: Some(_) }
        ));
        assert_eq!(
            day(GameDayStatus::default()).decide(),
            Decision::Request { then: None }
        );
    }
}
