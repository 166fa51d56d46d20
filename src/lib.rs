//! faultline: a Kubernetes chaos engineering controller whose faults never outlive their
//! experiment.
//!
//! Module map:
//! - [`api`]: the custom resource types (the contract with users); no IO.
//! - [`selection`]: which pods an experiment may touch (pure).
//! - [`lifecycle`]: the experiment state machine (pure; the clock is an input).
//! - [`probes`]: HTTP and Prometheus checks and the steady-state hypothesis built from them.
//! - [`controller`]: reconciles ChaosExperiments: observe, decide, act, record.
//! - [`gameday`], [`schedule`]: run GameDays (stages of experiments) and ChaosSchedules (cron);
//!   [`owned_experiments`] is what both do to the experiments they own, [`owner_controller`]
//!   the controller loop they share, [`calendar`] the cron and window arithmetic (pure).
//! - [`validate`]: offline checks behind `faultline validate` (pure).
//! - [`crd_validation`]: how the real API server judges custom resources and CRDs (formats, CEL
//!   rules, their cost), shared by `validate` and the sandbox API server (pure).
//! - [`manifest`]: applying YAML manifests through the kube client.
//! - [`agent`]: the node agent: faults in pod network namespaces, journal, deadlines.
//! - [`reference`]: the generated field reference (`docs/reference.md`).
//! - [`report`]: Markdown, HTML, JSON and JUnit reports of experiments (pure).
//! - [`sandbox`]: the embedded Kubernetes API server, `faultline sandbox`, and stand-ins for
//!   probes and the node agent (`sandbox::testkit`) used by tests and benchmarks.
//! - [`demo_app`]: the small HTTP service the sandbox's real pods run.
//! - [`admin`], [`metrics`]: the controller's admin port and Prometheus metrics;
//!   [`api_requests`] counts what each component asks of the Kubernetes API.
//! - [`panics`]: keeps a panic inside the reconcile of the object that caused it.
//! - [`cli`]: the `faultline` command line.
pub mod admin;
pub mod agent;
pub mod api;
pub mod api_requests;
pub mod calendar;
pub mod cli;
pub mod controller;
pub mod crd_validation;
pub mod demo_app;
pub mod gameday;
pub mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod owned_experiments;
pub mod owner_controller;
pub mod panics;
pub mod probes;
pub mod reference;
pub mod report;
pub mod sandbox;
pub mod schedule;
pub mod selection;
pub mod unreadable;
pub mod validate;
