//! The reports rendered from hand-built experiments: JUnit that CI systems can parse with the
//! failure recorded, HTML with its SVG timeline and tables, Markdown tables, JSON with stable
//! names, and the `faultline status` table.

use chrono::{DateTime, Duration, TimeZone, Utc};
use faultline::{
    api::{
        ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus, Condition, ConditionStatus,
        GoDuration, Phase, ProbeSample, ProbeStatus, TargetRecord, TargetState, TimelineEntry,
        Verdict, packed_records::PLAIN_RECORDS_LIMIT,
    },
    report::{Format, html, json, junit, markdown, summarize, table::status_table},
};
use serde_json::json;

fn t(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 5, 1, 12, 0, 0).unwrap() + Duration::milliseconds(ms)
}

fn spec(probes: bool, dry_run: bool) -> ChaosExperimentSpec {
    let mut spec = json!({
        "duration": "5s",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
        "faults": [{"podKill": {}}],
        "dryRun": dry_run,
    });
    if probes {
        spec["steadyState"] = json!({"probes": [{
            "name": "web-healthy",
            "http": {"url": "http://127.0.0.1:8080/healthz", "expectedStatus": [200]},
            "interval": "500ms", "failureThreshold": 2
        }]});
    }
    serde_json::from_value(spec).unwrap()
}

fn entry(ms: i64, reason: &str, message: &str) -> TimelineEntry {
    TimelineEntry {
        time: t(ms),
        reason: reason.into(),
        message: message.into(),
    }
}

fn target(state: TargetState) -> TargetRecord {
    TargetRecord {
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: "uid-0".into(),
        node_name: Some("node-1".into()),
        pod_ip: Some("10.244.0.10".into()),
        fault_index: 0,
        fault: "podKill".into(),
        state,
        injected_at: Some(t(1000)),
        reverted_at: (state == TargetState::Reverted).then(|| t(3600)),
        ..Default::default()
    }
}

/// A probe checked every 500ms from 0.5s; checks at or after `fail_from` ms fail with 500.
fn probe(until: i64, fail_from: Option<i64>) -> ProbeStatus {
    let samples: Vec<ProbeSample> = (1..)
        .map(|i| i * 500)
        .take_while(|ms| *ms <= until)
        .map(|ms| {
            let ok = fail_from.is_none_or(|f| ms < f);
            ProbeSample {
                time: t(ms),
                ok,
                value: Some(if ok { "200" } else { "500" }.into()),
            }
        })
        .collect();
    let failures = samples.iter().filter(|s| !s.ok).count() as i64;
    ProbeStatus {
        name: "web-healthy".into(),
        phase: None,
        holding: failures == 0,
        passes: samples.len() as i64 - failures,
        failures,
        consecutive_failures: failures as i32,
        consecutive_successes: 0,
        last_value: samples.last().and_then(|s| s.value.clone()),
        last_error: (failures > 0).then(|| "status 500, expected 200".into()),
        last_checked_at: samples.last().map(|s| s.time),
        // The second failure crosses failureThreshold 2.
        first_violation_at: fail_from.map(|f| t(f + 500)),
        samples,
    }
}

fn experiment(
    name: &str,
    spec: ChaosExperimentSpec,
    status: ChaosExperimentStatus,
) -> ChaosExperiment {
    let mut e = ChaosExperiment::new(name, spec);
    e.metadata.namespace = Some("shop".into());
    e.status = Some(status);
    e
}

fn complete(verdict: Verdict, reason: &str, message: &str, at: i64) -> Condition {
    Condition {
        type_: "Complete".into(),
        status: ConditionStatus::True,
        reason: format!("{verdict:?}"),
        message: format!("{reason}: {message}"),
        last_transition_time: Some(t(at)),
        observed_generation: Some(1),
    }
}

fn passed() -> ChaosExperiment {
    let message = "the hypothesis held before, during and after the faults";
    experiment(
        "kill-passes",
        spec(true, false),
        ChaosExperimentStatus {
            phase: Phase::Succeeded,
            verdict: Some(Verdict::Passed),
            reason: Some("Passed".into()),
            message: Some(message.into()),
            target_count: 1,
            targets: vec![target(TargetState::Reverted)],
            probes: vec![probe(7000, None)],
            timeline: vec![
                entry(
                    0,
                    "VerifyingSteadyState",
                    "checking the steady-state hypothesis before injecting",
                ),
                entry(900, "Injecting", "the hypothesis holds; injecting faults"),
                entry(1000, "PodKilled", "killed pod shop/web-0"),
                entry(
                    6000,
                    "DurationElapsed",
                    "the duration is over; reverting every fault",
                ),
                entry(
                    6100,
                    "FaultsReverted",
                    "every fault is reverted; checking that the system recovers",
                ),
                entry(7000, "ExperimentPassed", message),
            ],
            conditions: vec![complete(Verdict::Passed, "Passed", message, 7000)],
            started_at: Some(t(0)),
            injected_at: Some(t(1000)),
            reverted_at: Some(t(6100)),
            finished_at: Some(t(7000)),
            recovery_time: Some(GoDuration::from("900ms")),
            ..Default::default()
        },
    )
}

fn aborted() -> ChaosExperiment {
    let message = "probe web-healthy: status 500, expected 200 (2 consecutive failures, failureThreshold 2); every fault is confirmed reverted";
    experiment(
        "kill-aborts",
        spec(true, false),
        ChaosExperimentStatus {
            phase: Phase::Aborted,
            verdict: Some(Verdict::Aborted),
            reason: Some("ProbeFailed".into()),
            message: Some(message.into()),
            target_count: 1,
            targets: vec![target(TargetState::Reverted)],
            probes: vec![probe(3500, Some(3000))],
            timeline: vec![
                entry(
                    0,
                    "VerifyingSteadyState",
                    "checking the steady-state hypothesis before injecting",
                ),
                entry(900, "Injecting", "the hypothesis holds; injecting faults"),
                entry(1000, "FaultsInjected", "every fault is in"),
                entry(
                    3520,
                    "ProbeFailed",
                    "aborting: probe web-healthy: status 500, expected 200",
                ),
                entry(3600, "ExperimentAborted", message),
            ],
            conditions: vec![complete(Verdict::Aborted, "ProbeFailed", message, 3600)],
            started_at: Some(t(0)),
            injected_at: Some(t(1000)),
            reverted_at: Some(t(3600)),
            finished_at: Some(t(3600)),
            abort_started_at: Some(t(3500)),
            abort_latency: Some(GoDuration::from("100ms")),
            ..Default::default()
        },
    )
}

fn failed_before_injection() -> ChaosExperiment {
    let message = "the hypothesis did not hold before injection, so nothing was injected: status 503, expected 200";
    let mut probe = probe(1000, Some(500));
    probe.first_violation_at = Some(t(1000));
    experiment(
        "sick",
        spec(true, false),
        ChaosExperimentStatus {
            phase: Phase::Failed,
            verdict: Some(Verdict::Failed),
            reason: Some("SteadyStateNotMet".into()),
            message: Some(message.into()),
            target_count: 1,
            targets: vec![target(TargetState::Selected)],
            probes: vec![probe],
            timeline: vec![entry(1100, "ExperimentFailed", message)],
            started_at: Some(t(0)),
            finished_at: Some(t(1100)),
            ..Default::default()
        },
    )
}

fn dry_run() -> ChaosExperiment {
    let message = "dry run: targets resolved, preflight and the before-hypothesis passed; nothing was injected";
    experiment(
        "rehearsal",
        spec(true, true),
        ChaosExperimentStatus {
            phase: Phase::Succeeded,
            verdict: Some(Verdict::DryRun),
            reason: Some("DryRun".into()),
            message: Some(message.into()),
            target_count: 1,
            targets: vec![target(TargetState::Selected)],
            probes: vec![probe(500, None)],
            timeline: vec![entry(
                600,
                "WouldInject",
                "podKill of pod shop/web-0 (node node-1)",
            )],
            started_at: Some(t(0)),
            finished_at: Some(t(600)),
            ..Default::default()
        },
    )
}

fn no_probes() -> ChaosExperiment {
    experiment(
        "plain-kill",
        spec(false, false),
        ChaosExperimentStatus {
            phase: Phase::Succeeded,
            verdict: Some(Verdict::Passed),
            reason: Some("Passed".into()),
            message: Some("the hypothesis held before, during and after the faults".into()),
            target_count: 1,
            targets: vec![target(TargetState::Reverted)],
            started_at: Some(t(0)),
            injected_at: Some(t(100)),
            reverted_at: Some(t(5100)),
            finished_at: Some(t(5200)),
            ..Default::default()
        },
    )
}

fn running() -> ChaosExperiment {
    experiment(
        "still-going",
        spec(true, false),
        ChaosExperimentStatus {
            phase: Phase::Running,
            target_count: 1,
            started_at: Some(t(0)),
            injected_at: Some(t(1000)),
            ..Default::default()
        },
    )
}

fn parse(xml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("{name} missing on {}", node.tag_name().name()))
}

#[test]
fn junit_of_a_passed_run_has_one_case_per_experiment_and_probe_and_no_failure() {
    let xml = junit::render("faultline run kill.yaml", &[passed()], t(8000));
    let doc = parse(&xml);
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    assert_eq!(attr(suites[0], "name"), "faultline run kill.yaml");
    assert_eq!(attr(suites[0], "tests"), "2");
    assert_eq!(attr(suites[0], "failures"), "0");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(attr(cases[0], "name"), "kill-passes");
    assert_eq!(attr(cases[0], "classname"), "faultline.shop");
    assert_eq!(attr(cases[0], "time"), "7.000");
    assert_eq!(attr(cases[1], "name"), "probe web-healthy");
    assert_eq!(attr(cases[1], "time"), "6.500", "first to last check");
    assert!(!doc.descendants().any(|n| n.has_tag_name("failure")));
}

#[test]
fn junit_of_an_aborted_run_records_the_probe_and_the_value_that_broke_it() {
    let xml = junit::render("faultline run kill.yaml", &[aborted()], t(8000));
    let doc = parse(&xml);
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(attr(suite, "failures"), "2", "the experiment and its probe");
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    let experiment_failure = attr(failures[0], "message");
    assert!(
        experiment_failure.starts_with("probe web-healthy failed with value 500"),
        "{experiment_failure}"
    );
    assert_eq!(attr(failures[0], "type"), "Aborted:ProbeFailed");
    let probe_failure = attr(failures[1], "message");
    assert!(
        probe_failure.contains("probe web-healthy failed with value 500 at +3.5s"),
        "{probe_failure}"
    );
    assert!(
        probe_failure.contains("status 500, expected 200"),
        "{probe_failure}"
    );
    let body = failures[1].text().unwrap_or_default();
    assert!(
        body.contains("FAIL 500"),
        "the samples are in the body: {body}"
    );
}

#[test]
fn junit_of_a_whole_run_is_one_suite_counting_failures_errors_and_skips() {
    let mut never_checked = running();
    never_checked.status.as_mut().unwrap().probes.clear();
    let runs = [
        passed(),
        failed_before_injection(),
        aborted(),
        dry_run(),
        no_probes(),
        never_checked,
    ];
    let xml = Format::Junit.render("faultline run all.yaml", &runs, t(9000));
    let doc = parse(&xml);
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    // 6 experiments + 5 probes (no_probes has none).
    assert_eq!(attr(suites[0], "tests"), "11");
    // failed + its probe, aborted + its probe.
    assert_eq!(attr(suites[0], "failures"), "4");
    assert_eq!(attr(suites[0], "errors"), "1", "the unfinished experiment");
    assert_eq!(
        attr(suites[0], "skipped"),
        "1",
        "its probe was never checked"
    );
    let error = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
    assert!(attr(error, "message").contains("still in phase Running"));
    let failed = doc
        .descendants()
        .find(|n| n.has_tag_name("failure") && attr(*n, "type").starts_with("Failed"))
        .unwrap();
    assert!(attr(failed, "message").contains("probe web-healthy failed with value 500"));
}

#[test]
fn html_of_an_aborted_run_has_the_svg_timeline_the_abort_and_the_tables() {
    let page = html::render(&aborted(), t(8000));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("v-aborted"), "the verdict badge is coloured");
    let start = page.find("<svg").expect("an inline svg");
    let end = page.find("</svg>").unwrap() + "</svg>".len();
    let svg = parse(&page[start..end]);
    let classes: Vec<&str> = svg
        .descendants()
        .filter_map(|n| n.attribute("class"))
        .collect();
    for class in [
        "fault-window",
        "abort",
        "probe-lane",
        "phase",
        "event",
        "violation",
        "fail",
        "pass",
    ] {
        assert!(classes.contains(&class), "svg has no {class}: {classes:?}");
    }
    let abort = svg
        .descendants()
        .find(|n| n.attribute("class") == Some("abort"))
        .unwrap();
    let label: String = abort
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(label, "abort +3.5s, reverted in 100ms");
    // 8 samples before the failure at 3s pass, two fail.
    assert_eq!(classes.iter().filter(|c| **c == "pass").count(), 5);
    assert_eq!(classes.iter().filter(|c| **c == "fail").count(), 2);
    for table in ["probes", "targets", "events", "conditions"] {
        assert!(
            page.contains(&format!("<table class=\"{table}\">")),
            "{table}"
        );
    }
    assert!(page.contains("<td>web-healthy</td><td>http</td>"));
    assert!(
        page.contains("+3.5s (value 500)"),
        "first violation with its value"
    );
    assert!(page.contains("shop/web-0"));
    // Self-contained: nothing to fetch, nothing to run.
    for external in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!page.contains(external), "{external}");
    }
}

#[test]
fn html_and_markdown_summaries_show_the_same_rows_with_the_same_times() {
    let experiment = aborted();
    let page = html::render(&experiment, t(8000));
    let text = markdown::render(&experiment);
    let html_rows: Vec<(&str, &str)> = page
        .split("<dt>")
        .skip(1)
        .map(|rest| {
            let (key, rest) = rest.split_once("</dt><dd>").unwrap();
            (key, &rest[..rest.find("</dd>").unwrap()])
        })
        .collect();
    let markdown_rows: Vec<(&str, &str)> = text
        .lines()
        .skip_while(|line| *line != "| --- | --- |")
        .skip(1)
        .take_while(|line| line.starts_with("| "))
        .map(|line| {
            let (key, value) = line[2..line.len() - 2].split_once(" | ").unwrap();
            (key, value)
        })
        .collect();
    let keys = |rows: &[(&str, &str)]| rows.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(&html_rows), keys(&markdown_rows));
    for row in [
        "Started",
        "Faults injected",
        "Faults reverted",
        "Abort started",
    ] {
        let value =
            |rows: &[(&str, &str)]| rows.iter().find(|(k, _)| *k == row).unwrap().1.to_string();
        assert_ne!(value(&html_rows), "-", "{row} has a time in {html_rows:?}");
        assert_eq!(value(&html_rows), value(&markdown_rows), "{row}");
    }
}

// A failover left no checks from +2s to +4.5s: the timeline shows a labelled band over the
// probe lanes (its tooltip says why), and the summary says when and why.
#[test]
fn html_shows_a_gap_in_the_probe_checks_on_the_timeline() {
    let mut e = passed();
    let status = e.status.as_mut().unwrap();
    status.probe_gaps = vec![faultline::api::ProbeGap {
        from: t(2000),
        to: Some(t(4500)),
        reason: "ControllerChanged".into(),
    }];
    status.probes[0]
        .samples
        .retain(|s| s.time <= t(2000) || s.time >= t(4500));
    let page = html::render(&e, t(8000));
    let start = page.find("<svg").unwrap();
    let end = page.find("</svg>").unwrap() + "</svg>".len();
    let svg = parse(&page[start..end]);
    let gap = svg
        .descendants()
        .find(|n| n.attribute("class") == Some("probe-gap"))
        .expect("a gap band");
    let texts: Vec<&str> = gap
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(texts[0], "no checks 2.5s");
    assert!(
        texts[1].starts_with("gap in the probe checks: +2.0s to +4.5s (2.5s without checks): the controller that ran the probes stopped (failover or restart)"),
        "{texts:?}"
    );
    assert!(
        page.contains("no probe checks</text>"),
        "the legend explains it"
    );
    assert!(page.contains(
        "<dt>Gap in the probe checks</dt><dd>+2.0s to +4.5s (2.5s without checks): the controller that ran the probes stopped (failover or restart)</dd>"
    ));
    // Without a gap there is no band and no legend entry.
    let plain = html::render(&passed(), t(8000));
    assert!(!plain.contains("probe-gap") && !plain.contains("no probe checks"));
}

#[test]
fn html_escapes_what_probes_report() {
    let mut e = aborted();
    e.status.as_mut().unwrap().probes[0].last_error =
        Some("<script>alert(1)</script> & more".into());
    let page = html::render(&e, t(8000));
    assert!(!page.contains("<script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    let xml = junit::render("s", &[e], t(8000));
    parse(&xml);
}

#[test]
fn markdown_escapes_raw_html_and_control_characters_from_probes() {
    // A status written by something other than faultline's probes (which escape control
    // characters themselves) still renders inert: no tag, no terminal escape.
    let hostile = "<img src=x onerror=alert(1)> \u{1b}[2J\u{1b}[31m\u{7}\0\u{8}|";
    let mut e = aborted();
    let status = e.status.as_mut().unwrap();
    status.probes[0].last_error = Some(hostile.into());
    status.probes[0].last_value = Some(hostile.into());
    status.message = Some(format!("aborting: {hostile}"));
    status.timeline.push(entry(4000, "ProbeFailed", hostile));
    let text = markdown::render(&e);
    assert!(!text.contains("<img"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(
        text.contains(r"&lt;img src=x onerror=alert(1)&gt; \u{1b}[2J\u{1b}[31m\u{7}\u{0}\u{8}\|"),
        "{text}"
    );
    assert!(text.contains("> aborting: &lt;img"), "{text}");
}

#[test]
fn reports_show_probe_urls_without_their_secrets() {
    let mut e = aborted();
    let probe = &mut e.spec.steady_state.as_mut().unwrap().probes[0];
    let http = probe.http.as_mut().unwrap();
    http.url = "http://admin:s3cretPassw0rd@127.0.0.1:18001/healthz?token=TOPSECRETTOKEN".into();
    http.headers
        .insert("Authorization".into(), "Bearer TOPSECRETBEARER".into());
    for format in [Format::Markdown, Format::Html, Format::Junit, Format::Json] {
        let text = format.render("run", std::slice::from_ref(&e), t(8000));
        for secret in ["s3cretPassw0rd", "TOPSECRETTOKEN", "TOPSECRETBEARER"] {
            assert!(!text.contains(secret), "{format:?} shows {secret}");
        }
    }
    // The HTML probe table names the check, by its redacted URL.
    let html = html::render(&e, t(8000));
    assert!(
        html.contains("http://admin:xxxxx@127.0.0.1:18001/healthz?token=xxxxx"),
        "{html}"
    );
}

#[test]
fn html_of_several_experiments_is_one_page_with_an_overview() {
    let page = html::render_all("faultline run all.yaml", &[passed(), aborted()], t(8000));
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("<table class=\"overview\">"));
    assert!(
        page.contains("href=\"#shop-kill-aborts\"") && page.contains("id=\"shop-kill-aborts\"")
    );
}

#[test]
fn markdown_has_the_summary_probe_target_and_event_tables() {
    let text = markdown::render(&aborted());
    assert!(
        text.starts_with("# shop/kill-aborts: **Aborted**"),
        "{text}"
    );
    assert!(text.contains("| Abort latency | 100ms |"));
    assert!(text.contains("| Failure | probe web-healthy failed with value 500:"));
    assert!(text.contains(
        "| Probe | Kind | Phases | Passes | Failures | Last value | Last error | First violation |"
    ));
    assert!(text.contains(
        "| **web-healthy** ✗ | http | before, during, after | 5 | 2 | 500 | status 500, expected 200 | +3.5s (value 500) |"
    ), "{text}");
    assert!(text.contains(
        "| shop/web-0 | node-1 | podKill | Reverted | 12:00:01.000 | 12:00:03.600 | - |"
    ));
    assert!(text.contains("| 4 | 12:00:03.520 | +3.5s | ProbeFailed | aborting: probe web-healthy: status 500, expected 200 |"));
}

#[test]
fn dry_runs_and_experiments_without_probes_render_plainly() {
    let text = markdown::render(&dry_run());
    assert!(
        text.contains("**DryRun**") && text.contains("| Dry run | yes: nothing was injected |")
    );
    assert!(text.contains("WouldInject"));
    let page = html::render(&dry_run(), t(1000));
    assert!(page.contains("v-dryrun"));
    assert!(
        !page.contains("class=\"fault-window\""),
        "nothing was injected"
    );

    let text = markdown::render(&no_probes());
    assert!(text.contains("No probes: the experiment had no steady-state hypothesis."));
    assert!(text.contains("No events recorded."));
    let page = html::render(&no_probes(), t(6000));
    assert!(!page.contains("probe-lane"));
    assert!(page.contains("class=\"fault-window\""));
    let xml = junit::render("s", &[no_probes(), dry_run()], t(6000));
    let doc = parse(&xml);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .count(),
        3
    );
    assert!(!doc.descendants().any(|n| n.has_tag_name("failure")));
}

#[test]
fn an_experiment_without_status_still_renders() {
    let mut e = running();
    e.status = None;
    assert!(html::render(&e, t(0)).contains("No timeline yet"));
    assert!(markdown::render(&e).contains("Pending (no verdict yet)"));
    let s = summarize(&e);
    assert_eq!((s.phase, s.verdict), (Phase::Pending, None));
}

#[test]
fn json_carries_status_and_summary_under_stable_names() {
    let value = json::report(&aborted());
    assert_eq!(value["kind"], "ExperimentReport");
    assert_eq!(value["name"], "kill-aborts");
    assert_eq!(value["status"]["phase"], "Aborted");
    let summary = &value["summary"];
    assert_eq!(summary["verdict"], "Aborted");
    assert_eq!(summary["abortLatency"], "100ms");
    assert_eq!(summary["faultWindow"], "2.6s");
    assert_eq!(summary["targetsInjected"], 1);
    assert_eq!(summary["probes"][0]["violationValue"], "500");
    assert_eq!(summary["probes"][0]["kind"], "http");
    assert_eq!(
        summary["probes"][0]["firstViolationAt"],
        "2025-05-01T12:00:03.500Z"
    );
    assert!(summary["failure"].as_str().unwrap().contains("web-healthy"));
    let list: serde_json::Value =
        serde_json::from_str(&Format::Json.render("run", &[passed()], t(0))).unwrap();
    assert_eq!(list["kind"], "ExperimentReportList");
    assert_eq!(list["items"][0]["summary"]["recoveryTime"], "900ms");
}

#[test]
fn json_lists_every_target_record_also_where_status_packs_them() {
    let mut e = aborted();
    let status = e.status.as_mut().unwrap();
    let many = PLAIN_RECORDS_LIMIT + 1;
    status.targets = (0..many)
        .map(|i| TargetRecord {
            name: format!("web-{i}"),
            ..target(TargetState::Reverted)
        })
        .collect();
    // As the API server stores it: packed.
    let stored = serde_json::to_value(status.clone()).unwrap();
    assert_eq!(stored["targets"], json!([]));
    let value = json::report(&e);
    let listed = value["status"]["targets"].as_array().unwrap();
    assert_eq!(listed.len(), many);
    assert_eq!(listed[many - 1]["name"], format!("web-{}", many - 1));
    assert!(value["status"].get("targetRecords").is_none(), "{value}");
}

#[test]
fn the_status_table_lists_running_experiments_first() {
    let mut finished = passed();
    finished.metadata.creation_timestamp = None;
    let table = status_table(&[finished, running()], t(3000));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[0].contains("ELAPSED/REMAINING"));
    assert!(lines[1].starts_with("still-going"), "{table}");
    assert!(
        lines[1].contains("Running") && lines[1].contains("3s / 3s left"),
        "{table}"
    );
    assert!(lines[2].starts_with("kill-passes") && lines[2].contains("Passed"));
    assert!(lines[2].trim_end().ends_with("7s"), "{table}");
}

#[test]
fn a_fault_that_packets_bypassed_is_reported_as_only_partly_in_place() {
    let mut e = passed();
    let status = e.status.as_mut().unwrap();
    status.targets[0].fault = "networkLatency".into();
    status.targets[0].message = Some("nfqueue".into());
    status.targets[0].bypassed_packets = Some(134_464);
    status.targets[0].matched_packets = Some(200_000);
    let words = "the fault was only partly in place: 134464 of 200000 packets (67.2%) bypassed it";
    let summary = summarize(&e);
    assert_eq!(summary.partly_applied.len(), 1);
    assert!(
        summary.partly_applied[0].starts_with(&format!("pod shop/web-0: {words}")),
        "{:?}",
        summary.partly_applied
    );
    let md = markdown::render(&e);
    assert!(
        md.contains(&format!("> **Warning:** pod shop/web-0: {words}")),
        "{md}"
    );
    assert!(md.contains(&format!("| nfqueue; {words}")), "{md}");
    let page = html::render(&e, t(10_000));
    assert!(page.contains(words), "{page}");
    // A fault that held entirely says nothing of the kind.
    assert!(!markdown::render(&passed()).contains("partly in place"));
}

#[test]
fn targets_that_left_mid_run_are_counted_in_the_summary() {
    let mut e = aborted();
    let status = e.status.as_mut().unwrap();
    status.targets[0].state = TargetState::Gone;
    status.targets[0].message = Some("pod shop/web-0 was deleted; its fault went with it".into());
    assert_eq!(summarize(&e).targets_left, 1);
    let md = markdown::render(&e);
    assert!(md.contains("1 left mid-run"), "{md}");
    assert!(md.contains("| Gone |"), "{md}");
    assert!(!markdown::render(&passed()).contains("left mid-run"));
}
