//! Monitoring end to end (issue 15 §5): a real Prometheus server (Debian's
//! `prometheus`, installed by scripts/setup.sh) scrapes a running daemon fed by a
//! pylsl outlet streaming a real recording, with the shipped alert rules
//! (`monitoring/prometheus/labramd-rules.yml`) loaded. Checked through
//! Prometheus's HTTP API, as a lab's dashboard and alerting would see it: every
//! shipped rule evaluates without error, every query of the shipped Grafana
//! dashboard (`monitoring/grafana/labramd.json`) finds its series, the latency
//! histogram's p99 is a finite positive number, predictions and `process_*` series
//! arrive, and when the producer stops the stream-lost alert fires.
//!
//! Only the stream-lost rule's `for:` is shortened (30 s -> 2 s) in the test's copy
//! of the rules, so the whole test takes ~10 s rather than ~40.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// eegmat's 19 scalp channels, in the order the test model takes them.
const EEGMAT_19: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];

/// Percent-encodes a query parameter (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus as HTTP/1.0, so the body comes whole (no chunked
/// encoding) and the connection closes after it; the body parsed as JSON.
fn api(port: u16, path: &str) -> Result<Value, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("no HTTP body in {text:?}"))?;
    serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
}

/// An instant query's result vector (`data.result`), or why there is none.
fn query(port: u16, q: &str) -> Result<Vec<Value>, String> {
    let v = api(port, &format!("/api/v1/query?query={}", encode(q)))?;
    if v["status"] != "success" {
        return Err(format!("query {q}: {v}"));
    }
    v["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("query {q}: no result vector in {v}"))
}

/// The first sample's value of an instant query (Prometheus sends it as a string,
/// `"NaN"` included).
fn scalar(port: u16, q: &str) -> Option<f64> {
    query(port, q).ok()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// Polls `f` every 500 ms until it gives `Some`, for at most `secs`; panics with
/// `what` and the logs of `procs` otherwise.
fn wait_until<T>(secs: f64, what: &str, procs: &[&Proc], mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t.elapsed().as_secs_f64() > secs {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} log:\n{}", p.name, p.log_text()))
                .collect();
            panic!(
                "timed out after {secs} s waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The shipped rules with LabramdStreamLost's `for:` set to `for_s`, everything
/// else as shipped; panics if the rule is not there (renamed without the test).
fn rules_with_short_stream_lost(for_s: u32) -> String {
    let path = repo().join("monitoring/prometheus/labramd-rules.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut found = false;
    for group in doc["groups"].as_sequence_mut().expect("groups: a list") {
        for rule in group["rules"].as_sequence_mut().expect("rules: a list") {
            if rule["alert"].as_str() == Some("LabramdStreamLost") {
                rule["for"] = serde_norway::Value::from(format!("{for_s}s"));
                found = true;
            }
        }
    }
    assert!(found, "no LabramdStreamLost rule in {}", path.display());
    serde_norway::to_string(&doc).expect("rules back to YAML")
}

/// Every `(panel title, expr)` of `monitoring/grafana/labramd.json`; panics if a panel
/// or target does not take its data source from `${DS_PROMETHEUS}` (a fixed uid would
/// not exist in the Grafana it is imported into).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo().join("monitoring/grafana/labramd.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let d: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels: a list") {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {title:?}"
            );
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: no expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// Starts Prometheus on a free loopback port scraping `127.0.0.1:<target>` as job
/// `labramd` every second, evaluating `rules` every second; storage in `dir`.
fn start_prometheus(dir: &Path, target: u16, rules: &str) -> (Proc, u16) {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} not found: run scripts/setup.sh (it installs Debian's prometheus package, \
         which this test and the promtool check in scripts/test.sh need)"
    );
    let rules_file = dir.join("rules.yml");
    std::fs::write(&rules_file, rules).expect("write rules");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: labramd\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n",
            rules_file.display()
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    let prom = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
    (prom, port)
}

#[test]
fn prometheus_scrapes_the_daemon_and_fires_stream_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let model = golden_model(d, &EEGMAT_19, 4, 0.5);
    let metrics_port = free_port();
    let pid = std::process::id();
    let in_name = format!("labramd-prom-{pid}");
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "input:\n  name: {in_name}\n  resolve_timeout_s: 60\n  unit: auto\n  stall_timeout_s: 1.5\n\
             model:\n  path: {}\n  device: cpu\n  threads: 1\n\
             window: {{patches: 4, hop_s: 0.5}}\n\
             output: {{name: labramd-prom-pred-{pid}, markers: true}}\n\
             metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n",
            model.display()
        ),
    )
    .expect("write config");
    let (prom, prom_port) = start_prometheus(d, metrics_port, &rules_with_short_stream_lost(2));
    let mut daemon_cmd = Command::new(env!("CARGO_BIN_EXE_labramd"));
    daemon_cmd.args(["run", "--config"]).arg(&config);
    let daemon = Proc::spawn("labramd", daemon_cmd, d.join("labramd.log"));
    let edf: PathBuf = shared().join("data/eegmat/Subject00_1.edf");
    let edf = edf.to_str().expect("utf-8 path");
    let mut outlet = Proc::spawn(
        "outlet",
        lsl_peer(&[
            "outlet",
            "--edf",
            edf,
            "--name",
            &in_name,
            "--start-s",
            "10",
            "--seconds",
            "60",
            "--out",
            d.join("outlet.json").to_str().expect("utf-8 path"),
        ]),
        d.join("outlet.log"),
    );
    let procs = [&prom, &daemon, &outlet];

    wait_until(30.0, "Prometheus to be ready", &procs, || {
        http_get(prom_port, "/-/ready").ok().filter(|r| r.0 == 200)
    });
    // Scraped and connected: `up` 1 and the stream connected, as Prometheus sees them.
    wait_until(
        60.0,
        "up == 1 and labramd_stream_connected == 1",
        &procs,
        || {
            let up = scalar(prom_port, "up{job=\"labramd\"}")?;
            let connected = scalar(prom_port, "labramd_stream_connected")?;
            (up == 1.0 && connected == 1.0).then_some(())
        },
    );

    // The latency p99 through the histogram, as the dashboard and the alert compute it.
    let p99_query = "histogram_quantile(0.99, rate(labramd_e2e_latency_seconds_bucket[30s]))";
    let p99 = wait_until(40.0, "a finite p99 latency", &procs, || {
        scalar(prom_port, p99_query).filter(|v| v.is_finite())
    });
    assert!(
        p99 > 0.0 && p99 <= 2.5,
        "p99 latency {p99} s (the histogram's last finite bucket is 2.5 s: a quantile never exceeds it)"
    );

    // Predictions per class and the process series reach Prometheus too.
    let predicted = query(prom_port, "labramd_predictions_total").expect("predictions query");
    let classes: Vec<&str> = predicted
        .iter()
        .filter_map(|s| s["metric"]["class"].as_str())
        .collect();
    assert_eq!(
        {
            let mut c = classes.clone();
            c.sort_unstable();
            c
        },
        ["class0", "class1"],
        "one labramd_predictions_total series per class of the model: {predicted:?}"
    );
    let total = scalar(prom_port, "sum(labramd_predictions_total)").unwrap_or(0.0);
    let published = scalar(prom_port, "labramd_windows_published_total").unwrap_or(-1.0);
    // Both counters advance together, one after the other: a scrape between the
    // two increments (or while the registry gathers) may see them one apart.
    assert!(
        total > 0.0 && (total - published).abs() <= 1.0,
        "sum of predictions per class {total} vs windows published {published}"
    );
    let rss = scalar(prom_port, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6, "process_resident_memory_bytes {rss}");
    assert!(
        scalar(prom_port, "process_cpu_seconds_total").is_some_and(|c| c > 0.0),
        "process_cpu_seconds_total missing or 0"
    );

    // Every query of the shipped Grafana dashboard is valid PromQL and finds its
    // series in this Prometheus (Grafana's variables filled in as Grafana would), and
    // every panel takes its data source from the dashboard's ${DS_PROMETHEUS} variable.
    let dashboard = dashboard_queries();
    assert!(
        dashboard.len() >= 10,
        "{} dashboard queries",
        dashboard.len()
    );
    for (title, expr) in &dashboard {
        let q = expr
            .replace("$__rate_interval", "5s")
            .replace("$instance", ".*");
        match query(prom_port, &q) {
            Ok(r) => assert!(
                !r.is_empty(),
                "dashboard panel {title:?}: no series for {q}"
            ),
            Err(e) => panic!("dashboard panel {title:?}: {e}"),
        }
    }

    // Every shipped rule is loaded and evaluates without error (promtool only checks
    // the syntax), and nothing fires while the stream flows.
    let rules = api(prom_port, "/api/v1/rules").expect("rules API");
    let loaded: Vec<(String, String)> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("?").to_string(),
                format!("{} {}", r["health"], r["lastError"]),
            )
        })
        .collect();
    for name in [
        "LabramdDown",
        "LabramdStreamLost",
        "LabramdWindowsDropped",
        "LabramdLatencyHigh",
        "LabramdCudaFallback",
        "LabramdInputRateOff",
    ] {
        let (_, health) = loaded
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("rule {name} not loaded: {loaded:?}"));
        assert!(health.starts_with("\"ok\""), "rule {name}: {health}");
    }
    let alerts = api(prom_port, "/api/v1/alerts").expect("alerts API");
    let active: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert!(
        !active
            .iter()
            .any(|a| a["labels"]["alertname"] == "LabramdStreamLost"),
        "stream-lost alert active while the stream flows: {active:?}"
    );

    // The producer stops: the stream-lost alert must fire (stall timeout 1.5 s,
    // `for: 2s` here, evaluation every second).
    let stopped = Instant::now();
    let _ = outlet.child.kill();
    let _ = outlet.child.wait();
    let procs = [&prom, &daemon];
    wait_until(30.0, "LabramdStreamLost firing", &procs, || {
        let alerts = api(prom_port, "/api/v1/alerts").ok()?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["labels"]["alertname"] == "LabramdStreamLost" && a["state"] == "firing")
            .then_some(())
    });
    let fired_after = stopped.elapsed().as_secs_f64();
    eprintln!("p99 latency {p99:.4} s; LabramdStreamLost firing {fired_after:.1} s after the producer stopped");
    // Not before the stall timeout and the `for:` have passed: a rule that fired at
    // once would not be checking the gauge's history.
    assert!(
        fired_after > 1.5,
        "stream-lost fired {fired_after:.1} s after the producer stopped"
    );
    assert_eq!(
        scalar(prom_port, "up{job=\"labramd\"}"),
        Some(1.0),
        "the daemon must stay up (re-resolving) while its stream is lost"
    );
}
