//! The HTML report as a person sees it: headless Chromium (Debian's `chromium`, installed by
//! scripts/setup.sh) loads an aborted experiment's report from a file, its DOM must hold the
//! SVG timeline and the probe table, and its screenshot must show them (not a blank page).
//!
//! The page and the screenshot are kept in `target/tmp/report-chromium/` to look at.

use std::{path::Path, process::Command};

use chrono::{DateTime, Duration, TimeZone, Utc};
use faultline::{api::ChaosExperiment, report::html};
use serde_json::json;

fn t(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 5, 1, 12, 0, 0).unwrap() + Duration::milliseconds(ms)
}

/// A latency experiment on three pods whose checkout probe starts failing 14s in; it aborts.
fn aborted() -> ChaosExperiment {
    // A check every 500ms from 2.5s to 15.5s.
    let samples = |fail_from: Option<i64>, value: &dyn Fn(bool) -> &'static str| {
        (5..=31)
            .map(|i| i * 500)
            .map(|ms| {
                let ok = fail_from.is_none_or(|f| ms < f);
                json!({"time": t(ms), "ok": ok, "value": value(ok)})
            })
            .collect::<Vec<_>>()
    };
    let checkout = samples(Some(14_500), &|ok| if ok { "200" } else { "503" });
    let latency = samples(None, &|_| "0.21");
    let message = "probe checkout: status 503, expected 200 (3 consecutive failures, failureThreshold 3); every fault is confirmed reverted";
    let target = |i: usize| {
        json!({"namespace": "shop", "name": format!("checkout-{i}"), "uid": format!("u{i}"),
               "nodeName": format!("node-{}", i % 2 + 1), "podIp": format!("10.244.0.{}", 10 + i),
               "faultIndex": 0, "fault": "networkLatency", "state": "Reverted",
               "injection": format!("kill-latency-{i}"), "injectedAt": t(2000), "revertedAt": t(15_600),
               "message": "netem"})
    };
    let value = json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "checkout-latency", "namespace": "shop"},
        "spec": {
            "duration": "60s",
            "target": {"labelSelector": {"matchLabels": {"app": "checkout"}}},
            "faults": [{"networkLatency": {"latency": "300ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
            "steadyState": {"probes": [
                {"name": "checkout", "http": {"url": "http://checkout.shop:8080/healthz", "expectedStatus": [200]},
                 "interval": "500ms", "failureThreshold": 3},
                {"name": "p99-latency", "prometheus": {"url": "http://prometheus:9090",
                 "query": "histogram_quantile(0.99, rate(http_duration_seconds_bucket[1m]))",
                 "operator": "<", "value": 0.5}, "interval": "500ms", "phases": ["during"]}
            ]}
        },
        "status": {
            "phase": "Aborted", "verdict": "Aborted", "reason": "ProbeFailed", "message": message,
            "targetCount": 3, "targets": [target(0), target(1), target(2)],
            "probes": [
                {"name": "checkout", "holding": false, "passes": 24, "failures": 3,
                 "consecutiveFailures": 3, "consecutiveSuccesses": 0, "lastValue": "503",
                 "lastError": "status 503, expected 200", "firstViolationAt": t(15_500),
                 "samples": checkout},
                {"name": "p99-latency", "holding": true, "passes": 27, "failures": 0,
                 "consecutiveFailures": 0, "consecutiveSuccesses": 27, "lastValue": "0.21",
                 "samples": latency}
            ],
            "timeline": [
                {"time": t(0), "reason": "VerifyingSteadyState", "message": "checking the steady-state hypothesis before injecting"},
                {"time": t(1900), "reason": "Injecting", "message": "the hypothesis holds; injecting faults"},
                {"time": t(2000), "reason": "FaultInjectionCreated", "message": "networkLatency on 3 pods"},
                {"time": t(2400), "reason": "FaultsInjected", "message": "every fault is in"},
                {"time": t(15_520), "reason": "ProbeFailed", "message": "aborting: probe checkout: status 503, expected 200"},
                {"time": t(15_600), "reason": "ExperimentAborted", "message": message}
            ],
            "conditions": [{"type": "Complete", "status": "True", "reason": "Aborted", "message": message, "lastTransitionTime": t(15_600)}],
            "startedAt": t(0), "injectedAt": t(2000), "revertedAt": t(15_600), "finishedAt": t(15_600),
            "abortStartedAt": t(15_500), "abortLatency": "100ms"
        }
    });
    serde_json::from_value(value).unwrap()
}

fn chromium(args: &[&str]) -> std::process::Output {
    let found = Command::new("chromium").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        panic!(
            "chromium is not installed: run scripts/setup.sh (it installs Debian's chromium package)"
        );
    }
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

/// (pixels, non-white pixels, red marks, green marks) of an 8-bit PNG.
fn pixel_counts(path: &Path) -> (usize, usize, usize, usize) {
    let mut decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels = buffer[..info.buffer_size()].chunks(channels);
    let (mut total, mut ink, mut red, mut green) = (0, 0, 0, 0);
    for p in pixels {
        let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
        total += 1;
        if r < 245 || g < 245 || b < 245 {
            ink += 1;
        }
        if r > 180 && g < 80 && b < 80 {
            red += 1;
        }
        if g > 130 && r < 60 && b < 110 {
            green += 1;
        }
    }
    (total, ink, red, green)
}

#[test]
fn chromium_shows_the_aborted_report_with_its_timeline_and_tables() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-chromium");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let screenshot = dir.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    std::fs::write(&page, html::render(&aborted(), t(20_000))).unwrap();
    let url = format!("file://{}", page.display());
    // A profile of our own: parallel Chromium runs must not share one.
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());

    let dom = chromium(&[&profile_arg, "--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg class=\"timeline\""),
        "no svg timeline in the DOM:\n{dom}"
    );
    assert!(
        dom.contains("<table class=\"probes\">"),
        "no probe table in the DOM"
    );
    assert!(
        dom.contains("class=\"abort\""),
        "no abort marker in the DOM"
    );
    assert!(dom.contains("checkout-latency"));

    let shot = chromium(&[
        &profile_arg,
        &format!("--screenshot={}", screenshot.display()),
        "--window-size=1200,1600",
        "--hide-scrollbars",
        &url,
    ]);
    assert!(
        screenshot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let (total, ink, red, green) = pixel_counts(&screenshot);
    println!(
        "screenshot {}: {total} pixels, {ink} not white, {red} red, {green} green",
        screenshot.display()
    );
    assert_eq!(total, 1200 * 1600);
    assert!(
        ink * 100 > total * 3,
        "the page looks blank: {ink} of {total} pixels drawn"
    );
    // The fail marks, the abort line and the verdict badge are red; the pass marks green.
    assert!(red > 500, "{red} red pixels");
    assert!(green > 500, "{green} green pixels");
}
