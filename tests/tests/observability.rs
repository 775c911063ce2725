//! The alerts, dashboards and kube-state-metrics configuration under `deploy/`:
//!
//! - the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`),
//!   every alert has a firing and a quiet case, a severity, a summary, a description and a
//!   runbook link to its section of `docs/observability.md`;
//! - the PrometheusRule and the dashboards ConfigMap are what `hack/gen-observability.sh`
//!   makes of their sources;
//! - the dashboards are valid (unique panel ids, a data source everywhere, no overlapping
//!   panels), every query parses, and every query returns data against a fixture of tailor's,
//!   cAdvisor's and kube-state-metrics' series, with exact values for the savings and the
//!   approve command;
//! - the kube-state-metrics configuration names `tailor.dev/v1alpha1 VerticalAutoscaler` and
//!   only fields the CRD has.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;

const RULES: &str = "deploy/prometheus/tailor.rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/tests";
const PROMETHEUS_RULE: &str = "deploy/prometheus/prometheusrule.yaml";
const DASHBOARDS: [&str; 2] = [
    "deploy/grafana/tailor-fleet.json",
    "deploy/grafana/tailor-workload.json",
];
const CONFIGMAP: &str = "deploy/grafana/configmap.yaml";
const KSM_CONFIG: &str = "deploy/kube-state-metrics/verticalautoscaler-crs.yaml";
const CRD: &str = "deploy/crds/tailor.dev_verticalautoscalers.yaml";
const DOC: &str = "docs/observability.md";
const RUNBOOK_BASE: &str = "https://github.com/tailor-dev/tailor/blob/main/docs/observability.md#";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn promtool() -> PathBuf {
    tailor_e2e::assets::prometheus_binary("promtool").unwrap_or_else(|_| {
        panic!(
            "promtool is not on PATH: install it with hack/install-prometheus.sh \
             (Debian's prometheus package)"
        )
    })
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

// ------------------------------------------------------------------------------------- alerts

fn alert_rules() -> Vec<Yaml> {
    let rules = yaml(RULES);
    let groups = rules["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn rule_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(RULE_TESTS))
        .expect("deploy/prometheus/tests")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("{RULE_TESTS}/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in {RULE_TESTS}");
    files
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = run_promtool(&repo(), &["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let files = rule_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    run_promtool(&repo(), &args);
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in rule_test_files() {
        let tests = yaml(&file);
        for test in tests["tests"].as_sequence().expect("tests") {
            let Some(cases) = test.get("alert_rule_test").and_then(Yaml::as_sequence) else {
                continue;
            };
            for case in cases {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                let expected = case
                    .get("exp_alerts")
                    .and_then(Yaml::as_sequence)
                    .map_or(0, Vec::len);
                if expected > 0 {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    for rule in alert_rules() {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(
            firing.contains(name),
            "{name} has no test case where it fires"
        );
        assert!(
            quiet.contains(name),
            "{name} has no test case where it stays quiet"
        );
    }
}

#[test]
fn every_alert_has_severity_annotations_and_a_documented_runbook() {
    let doc = read(DOC);
    let headings: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_owned())
        .collect();
    let alerts = alert_rules();
    assert!(alerts.len() >= 8, "expected at least 8 alerts");
    let mut names = BTreeSet::new();
    for rule in alerts {
        let name = rule["alert"].as_str().expect("alert name").to_owned();
        assert!(names.insert(name.clone()), "alert {name} is defined twice");
        assert!(
            name.starts_with("Tailor"),
            "{name}: alerts are named Tailor..."
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity label is {severity:?}"
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(
                text.len() > 20,
                "{name}: annotation {key} is missing or too short"
            );
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            runbook,
            format!("{RUNBOOK_BASE}{}", name.to_lowercase()),
            "{name}: runbook_url must point at its section of {DOC}"
        );
        assert!(
            headings.contains(&name),
            "{DOC} has no `### {name}` section for the runbook link"
        );
    }
}

// ------------------------------------------------------------------------- generated files

#[test]
fn generated_wrappers_are_current() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(repo().join("hack/gen-observability.sh"))
        .arg(tmp.path())
        .output()
        .expect("run hack/gen-observability.sh");
    assert!(
        out.status.success(),
        "hack/gen-observability.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in [
        PROMETHEUS_RULE,
        CONFIGMAP,
        "deploy/helm/tailor/files/tailor.rules.yaml",
        "deploy/helm/tailor/files/dashboards/tailor-fleet.json",
        "deploy/helm/tailor/files/dashboards/tailor-workload.json",
    ] {
        let fresh = std::fs::read_to_string(tmp.path().join(rel)).expect("generated file");
        assert!(
            fresh == read(rel),
            "{rel} is stale: run hack/gen-observability.sh and commit the result"
        );
    }
}

#[test]
fn prometheus_rule_wraps_exactly_the_rule_groups() {
    let wrapped = yaml(PROMETHEUS_RULE);
    assert_eq!(wrapped["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(wrapped["kind"], "PrometheusRule");
    assert_eq!(wrapped["metadata"]["name"], "tailor");
    assert_eq!(wrapped["metadata"]["namespace"], "tailor-system");
    assert_eq!(
        wrapped["metadata"]["labels"]["app.kubernetes.io/name"],
        "tailor"
    );
    assert_eq!(wrapped["spec"], yaml(RULES), "spec differs from {RULES}");
}

#[test]
fn dashboards_configmap_holds_exactly_the_dashboards() {
    let cm = yaml(CONFIGMAP);
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "tailor-dashboards");
    assert_eq!(cm["metadata"]["namespace"], "tailor-system");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_mapping().expect("data");
    assert_eq!(data.len(), DASHBOARDS.len());
    for rel in DASHBOARDS {
        let key = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let held = data
            .get(key)
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("{CONFIGMAP} has no {key}"));
        assert!(held == read(rel), "{CONFIGMAP}: {key} differs from {rel}");
    }
}

// -------------------------------------------------------------------------------- dashboards

fn dashboard(rel: &str) -> Json {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Json::as_array) {
            out.extend(nested);
        }
    }
    out
}

/// One query of a dashboard: where it is and its text.
#[derive(Debug)]
struct Query {
    file: &'static str,
    panel: String,
    ref_id: String,
    expr: String,
}

fn queries(rel: &'static str) -> Vec<Query> {
    let d = dashboard(rel);
    let mut out = Vec::new();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                file: rel,
                panel: format!("{} {:?}", p["id"], p["title"].as_str().unwrap_or_default()),
                ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                expr: t["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_owned(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().expect("variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .unwrap_or_else(|| panic!("{rel}: variable {} is not label_values(...)", v["name"]))
            .0;
        out.push(Query {
            file: rel,
            panel: format!("variable {}", v["name"]),
            ref_id: String::new(),
            expr: inner.to_owned(),
        });
    }
    out
}

/// The values Grafana would put in place of the variables: the fleet dashboard with every
/// namespace and VerticalAutoscaler ("All"), the workload dashboard on shop/orders, app.
fn substitute(file: &str, expr: &str) -> Result<String, String> {
    let fleet = file.ends_with("tailor-fleet.json");
    let value = |name: &str| -> Option<&'static str> {
        Some(match name {
            "namespace" if fleet => ".*",
            "verticalautoscaler" if fleet => ".*",
            "namespace" => "shop",
            "verticalautoscaler" => "orders",
            "container" => "app",
            "__rate_interval" => "5m",
            "__interval" => "1m",
            "__range" => "1h",
            _ => return None,
        })
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed ${")?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            // $1 in a label_replace replacement, not a Grafana variable.
            out.push('$');
            out.push_str(name);
        } else {
            out.push_str(value(name).ok_or_else(|| format!("unknown variable ${name}"))?);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn all_queries() -> Vec<Query> {
    DASHBOARDS.iter().flat_map(|d| queries(d)).collect()
}

#[test]
fn dashboards_are_valid() {
    for rel in DASHBOARDS {
        let d = dashboard(rel);
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(uid.starts_with("tailor-"), "{rel}: uid {uid:?}");
        let schema = d["schemaVersion"].as_u64().unwrap_or_default();
        assert!((36..=41).contains(&schema), "{rel}: schemaVersion {schema}");
        assert!(
            d["id"].is_null(),
            "{rel}: id must be null so Grafana assigns one"
        );

        let vars = d["templating"]["list"].as_array().expect("templating");
        let var = |name: &str| {
            vars.iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{rel}: no variable {name}"))
        };
        assert_eq!(var("datasource")["type"], "datasource", "{rel}");
        assert_eq!(var("datasource")["query"], "prometheus", "{rel}");
        for name in ["namespace", "verticalautoscaler"] {
            let v = var(name);
            assert_eq!(v["type"], "query", "{rel}: {name}");
            assert!(
                v["query"]["query"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("label_values("),
                "{rel}: {name} is not label_values(...)"
            );
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{rel}: {name}");
        }

        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{rel}: panel {title:?} has no id"));
            assert!(ids.insert(id), "{rel}: panel id {id} is used twice");
            assert!(!title.is_empty(), "{rel}: panel {id} has no title");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().expect("x"),
                g["y"].as_u64().expect("y"),
                g["w"].as_u64().expect("w"),
                g["h"].as_u64().expect("h"),
            );
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{rel}: panel {id} gridPos {g}"
            );
            for (bx, by, bw, bh, other) in &boxes {
                let overlap = x < bx + bw && *bx < x + w && y < by + bh && *by < y + h;
                assert!(!overlap, "{rel}: panel {title:?} overlaps {other:?}");
            }
            boxes.push((x, y, w, h, title.clone()));
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"],
                json!({"type": "prometheus", "uid": "${datasource}"}),
                "{rel}: panel {title:?} must use the datasource variable"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{rel}: panel {title:?} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{rel}: a query of {title:?} has another data source"
                );
                assert!(
                    refs.insert(t["refId"].as_str().unwrap_or_default().to_owned()),
                    "{rel}: {title:?} repeats a refId"
                );
            }
            if let Some(repeat) = p.get("repeat").and_then(Json::as_str) {
                var(repeat);
            }
        }
    }
}

#[test]
fn every_dashboard_query_parses() {
    let queries = all_queries();
    assert!(queries.len() > 40, "only {} queries found", queries.len());
    let mut rules = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let expr = substitute(q.file, &q.expr)
            .unwrap_or_else(|e| panic!("{} panel {} {}: {e}", q.file, q.panel, q.ref_id));
        rules.push(json!({"record": format!("dashboard:query_{i}"), "expr": expr}));
    }
    let file = json!({"groups": [{"name": "dashboards", "rules": rules}]});
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("dashboards.yaml"),
        serde_yaml::to_string(&file).expect("yaml"),
    )
    .expect("write");
    let out = Command::new(promtool())
        .args(["check", "rules", "dashboards.yaml"])
        .current_dir(tmp.path())
        .output()
        .expect("run promtool");
    if !out.status.success() {
        let index: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("  query_{i}: {} panel {} {}", q.file, q.panel, q.ref_id))
            .collect();
        panic!(
            "dashboard queries do not parse:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            index.join("\n")
        );
    }
}

/// Two hours of series for two VerticalAutoscalers in namespace shop: orders (pods orders-a and
/// orders-b, containers app and sidecar) and cart (pod cart-a), as tailor (two replicas of each
/// component, scraped with honor_labels), the kubelet's cAdvisor and kube-state-metrics (with
/// deploy/kube-state-metrics/verticalautoscaler-crs.yaml) export them.
const FIXTURE: &[(&str, &str)] = &[
    // The recommender; the standby repeats the leader's series in part.
    (
        r#"tailor_pod_info{namespace="shop", pod="orders-a", verticalautoscaler="orders", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_pod_info{namespace="shop", pod="orders-a", verticalautoscaler="orders", job="tailor-recommender", instance="r2"}"#,
        "1x180",
    ),
    (
        r#"tailor_pod_info{namespace="shop", pod="orders-b", verticalautoscaler="orders", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_pod_info{namespace="shop", pod="cart-a", verticalautoscaler="cart", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_workload_pods{namespace="shop", verticalautoscaler="orders", job="tailor-recommender", instance="r1"}"#,
        "2x180",
    ),
    (
        r#"tailor_workload_pods{namespace="shop", verticalautoscaler="orders", job="tailor-recommender", instance="r2"}"#,
        "2x180",
    ),
    (
        r#"tailor_workload_pods{namespace="shop", verticalautoscaler="cart", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_workload_requests_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", job="tailor-recommender", instance="r1"}"#,
        "2x180",
    ),
    (
        r#"tailor_workload_requests_cpu_cores{namespace="shop", verticalautoscaler="orders", container="sidecar", job="tailor-recommender", instance="r1"}"#,
        "0.1x180",
    ),
    (
        r#"tailor_workload_requests_cpu_cores{namespace="shop", verticalautoscaler="cart", container="app", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_workload_requests_memory_bytes{namespace="shop", verticalautoscaler="orders", container="app", job="tailor-recommender", instance="r1"}"#,
        "4294967296x180",
    ),
    (
        r#"tailor_workload_requests_memory_bytes{namespace="shop", verticalautoscaler="orders", container="sidecar", job="tailor-recommender", instance="r1"}"#,
        "134217728x180",
    ),
    (
        r#"tailor_workload_requests_memory_bytes{namespace="shop", verticalautoscaler="cart", container="app", job="tailor-recommender", instance="r1"}"#,
        "1073741824x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", bound="target", job="tailor-recommender", instance="r1"}"#,
        "0.5x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", bound="target", job="tailor-recommender", instance="r2"}"#,
        "0.5x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", bound="lower", job="tailor-recommender", instance="r1"}"#,
        "0.3x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", bound="upper", job="tailor-recommender", instance="r1"}"#,
        "0.9x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="orders", container="app", bound="uncapped", job="tailor-recommender", instance="r1"}"#,
        "0.5x180",
    ),
    (
        r#"tailor_recommendation_cpu_cores{namespace="shop", verticalautoscaler="cart", container="app", bound="target", job="tailor-recommender", instance="r1"}"#,
        "1.5x180",
    ),
    (
        r#"tailor_recommendation_memory_bytes{namespace="shop", verticalautoscaler="orders", container="app", bound="target", job="tailor-recommender", instance="r1"}"#,
        "1610612736x180",
    ),
    (
        r#"tailor_recommendation_memory_bytes{namespace="shop", verticalautoscaler="orders", container="app", bound="lower", job="tailor-recommender", instance="r1"}"#,
        "1073741824x180",
    ),
    (
        r#"tailor_recommendation_memory_bytes{namespace="shop", verticalautoscaler="orders", container="app", bound="upper", job="tailor-recommender", instance="r1"}"#,
        "2147483648x180",
    ),
    (
        r#"tailor_recommendation_memory_bytes{namespace="shop", verticalautoscaler="orders", container="app", bound="floor", job="tailor-recommender", instance="r1"}"#,
        "1073741824x180",
    ),
    (
        r#"tailor_recommendation_memory_bytes{namespace="shop", verticalautoscaler="cart", container="app", bound="target", job="tailor-recommender", instance="r1"}"#,
        "1073741824x180",
    ),
    (
        r#"tailor_recommendation_memory_floor_reason{namespace="shop", verticalautoscaler="orders", container="app", reason="Peak", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_recommendation_memory_floor_reason{namespace="shop", verticalautoscaler="cart", container="app", reason="OOM", job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_recommender_reconciles_total{outcome="recommended", job="tailor-recommender", instance="r1"}"#,
        "0+1x180",
    ),
    (
        r#"tailor_recommender_reconciles_total{outcome="history_unavailable", job="tailor-recommender", instance="r1"}"#,
        "0+0.1x180",
    ),
    (
        r#"tailor_recommender_last_pass_timestamp_seconds{job="tailor-recommender", instance="r1"}"#,
        "0+60x180",
    ),
    (
        r#"tailor_recommender_last_pass_timestamp_seconds{job="tailor-recommender", instance="r2"}"#,
        "0x180",
    ),
    (
        r#"tailor_recommender_last_pass_duration_seconds{job="tailor-recommender", instance="r1"}"#,
        "2.5x180",
    ),
    (
        r#"tailor_recommender_leader{job="tailor-recommender", instance="r1"}"#,
        "1x180",
    ),
    (
        r#"tailor_recommender_leader{job="tailor-recommender", instance="r2"}"#,
        "0x180",
    ),
    // The updater.
    (
        r#"tailor_updater_leader{job="tailor-updater", instance="u1"}"#,
        "1x180",
    ),
    (
        r#"tailor_updater_resizes_total{outcome="applied", resource="cpu", job="tailor-updater", instance="u1"}"#,
        "0+1x180",
    ),
    (
        r#"tailor_updater_resizes_waiting{reason="restart_budget", job="tailor-updater", instance="u1"}"#,
        "1x180",
    ),
    (
        r#"tailor_updater_pending_approvals{namespace="shop", verticalautoscaler="orders", job="tailor-updater", instance="u1"}"#,
        "1x180",
    ),
    (
        r#"tailor_updater_pending_approval_since_timestamp_seconds{namespace="shop", verticalautoscaler="orders", container="app", id="3f9a1c07d2", from="4Gi", to="1536Mi", job="tailor-updater", instance="u1"}"#,
        "600x180",
    ),
    (
        r#"tailor_updater_pending_approval_since_timestamp_seconds{namespace="shop", verticalautoscaler="orders", container="app", id="3f9a1c07d2", from="4Gi", to="1536Mi", job="tailor-updater", instance="u2"}"#,
        "600x180",
    ),
    (
        r#"tailor_updater_resize_started_timestamp_seconds{namespace="shop", verticalautoscaler="orders", pod="orders-b", state="deferred", job="tailor-updater", instance="u1"}"#,
        "3600x180",
    ),
    (
        r#"tailor_updater_resize_started_timestamp_seconds{namespace="shop", verticalautoscaler="cart", pod="cart-a", state="infeasible", job="tailor-updater", instance="u1"}"#,
        "1800x180",
    ),
    (
        r#"tailor_updater_oom_kills_after_resize_total{namespace="shop", verticalautoscaler="orders", container="app", job="tailor-updater", instance="u1"}"#,
        "_x60 1x120",
    ),
    // The live memory guard: two raises of orders' app container, scans every 15 s.
    (
        r#"tailor_updater_memory_guard_raises_total{namespace="shop", verticalautoscaler="orders", container="app", job="tailor-updater", instance="u1"}"#,
        "_x30 1x60 2x90",
    ),
    (
        r#"tailor_updater_memory_guard_scans_total{outcome="ok", job="tailor-updater", instance="u1"}"#,
        "0+4x180",
    ),
    (
        r#"tailor_updater_memory_guard_scans_total{outcome="error", job="tailor-updater", instance="u1"}"#,
        "0x180",
    ),
    (
        r#"tailor_updater_resizes_total{outcome="issued", resource="cpu", job="tailor-updater", instance="u1"}"#,
        "0+60x180",
    ),
    (
        r#"tailor_updater_resizes_total{outcome="issued", resource="memory", job="tailor-updater", instance="u1"}"#,
        "0+30x180",
    ),
    // The admission webhook, served by both updater replicas. Each answers 600 size requests a
    // minute: 360 sized, 240 not managed; half within 0.8 ms, 99% within 1.6 ms, all within
    // 3.2 ms. The standby has not read the self-managed certificate yet (0); it expires 30 days
    // after 02:00.
    (
        r#"tailor_admission_requests_total{webhook="size", outcome="sized", job="tailor-updater", instance="u1"}"#,
        "0+360x180",
    ),
    (
        r#"tailor_admission_requests_total{webhook="size", outcome="not_managed", job="tailor-updater", instance="u1"}"#,
        "0+240x180",
    ),
    (
        r#"tailor_admission_requests_total{webhook="size", outcome="sized", job="tailor-updater", instance="u2"}"#,
        "0+360x180",
    ),
    (
        r#"tailor_admission_requests_total{webhook="size", outcome="not_managed", job="tailor-updater", instance="u2"}"#,
        "0+240x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0004", job="tailor-updater", instance="u1"}"#,
        "0x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0008", job="tailor-updater", instance="u1"}"#,
        "0+300x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0016", job="tailor-updater", instance="u1"}"#,
        "0+594x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0032", job="tailor-updater", instance="u1"}"#,
        "0+600x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="+Inf", job="tailor-updater", instance="u1"}"#,
        "0+600x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0004", job="tailor-updater", instance="u2"}"#,
        "0x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0008", job="tailor-updater", instance="u2"}"#,
        "0+300x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0016", job="tailor-updater", instance="u2"}"#,
        "0+594x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="0.0032", job="tailor-updater", instance="u2"}"#,
        "0+600x180",
    ),
    (
        r#"tailor_admission_duration_seconds_bucket{webhook="size", le="+Inf", job="tailor-updater", instance="u2"}"#,
        "0+600x180",
    ),
    (
        r#"tailor_admission_certificate_expiry_timestamp_seconds{job="tailor-updater", instance="u1"}"#,
        "2599200x180",
    ),
    (
        r#"tailor_admission_certificate_expiry_timestamp_seconds{job="tailor-updater", instance="u2"}"#,
        "0x180",
    ),
    // cAdvisor: containers, the pod cgroup (container="") and a pod no VerticalAutoscaler matches.
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="orders-a", container="app", image="orders:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+30x180",
    ),
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="orders-a", container="sidecar", image="proxy:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+1.2x180",
    ),
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="orders-a", container="", image="", node="n1", job="kubelet", instance="n1"}"#,
        "0+40x180",
    ),
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="orders-b", container="app", image="orders:1", node="n2", job="kubelet", instance="n2"}"#,
        "0+18x180",
    ),
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="cart-a", container="app", image="cart:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+60x180",
    ),
    (
        r#"container_cpu_usage_seconds_total{namespace="shop", pod="other-a", container="app", image="other:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+6x180",
    ),
    (
        r#"container_memory_working_set_bytes{namespace="shop", pod="orders-a", container="app", image="orders:1", node="n1", job="kubelet", instance="n1"}"#,
        "1288490188x180",
    ),
    (
        r#"container_memory_working_set_bytes{namespace="shop", pod="orders-b", container="app", image="orders:1", node="n2", job="kubelet", instance="n2"}"#,
        "858993459x180",
    ),
    (
        r#"container_memory_working_set_bytes{namespace="shop", pod="orders-a", container="sidecar", image="proxy:1", node="n1", job="kubelet", instance="n1"}"#,
        "52428800x180",
    ),
    (
        r#"container_memory_working_set_bytes{namespace="shop", pod="cart-a", container="app", image="cart:1", node="n1", job="kubelet", instance="n1"}"#,
        "805306368x180",
    ),
    (
        r#"container_cpu_cfs_periods_total{namespace="shop", pod="orders-a", container="app", image="orders:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+600x180",
    ),
    (
        r#"container_cpu_cfs_throttled_periods_total{namespace="shop", pod="orders-a", container="app", image="orders:1", node="n1", job="kubelet", instance="n1"}"#,
        "0+60x180",
    ),
    // kube-state-metrics: orders-b's CPU request was resized from 2 to 1 at 01:30; orders-a's
    // app was OOM-killed and restarted at 01:30.
    (
        r#"kube_pod_container_resource_requests{namespace="shop", pod="orders-a", uid="u-a", container="app", node="n1", resource="cpu", unit="core", job="kube-state-metrics", instance="ksm"}"#,
        "2x180",
    ),
    (
        r#"kube_pod_container_resource_requests{namespace="shop", pod="orders-b", uid="u-b", container="app", node="n2", resource="cpu", unit="core", job="kube-state-metrics", instance="ksm"}"#,
        "2x90 1x89",
    ),
    (
        r#"kube_pod_container_resource_requests{namespace="shop", pod="orders-a", uid="u-a", container="app", node="n1", resource="memory", unit="byte", job="kube-state-metrics", instance="ksm"}"#,
        "4294967296x180",
    ),
    (
        r#"kube_pod_container_resource_requests{namespace="shop", pod="orders-b", uid="u-b", container="app", node="n2", resource="memory", unit="byte", job="kube-state-metrics", instance="ksm"}"#,
        "4294967296x180",
    ),
    (
        r#"kube_pod_container_resource_limits{namespace="shop", pod="orders-a", uid="u-a", container="app", node="n1", resource="memory", unit="byte", job="kube-state-metrics", instance="ksm"}"#,
        "8589934592x180",
    ),
    (
        r#"kube_pod_container_status_restarts_total{namespace="shop", pod="orders-a", uid="u-a", container="app", job="kube-state-metrics", instance="ksm"}"#,
        "0x90 1x89",
    ),
    (
        r#"kube_pod_container_status_last_terminated_reason{namespace="shop", pod="orders-a", uid="u-a", container="app", reason="OOMKilled", job="kube-state-metrics", instance="ksm"}"#,
        "_x90 1x89",
    ),
    (
        r#"kube_tailor_verticalautoscaler_spec_update_mode{namespace="shop", verticalautoscaler="orders", update_mode="InPlace", customresource_group="tailor.dev", customresource_kind="VerticalAutoscaler", customresource_version="v1alpha1", job="kube-state-metrics", instance="ksm"}"#,
        "1x180",
    ),
    (
        r#"kube_tailor_verticalautoscaler_spec_update_mode{namespace="shop", verticalautoscaler="orders", update_mode="Off", customresource_group="tailor.dev", customresource_kind="VerticalAutoscaler", customresource_version="v1alpha1", job="kube-state-metrics", instance="ksm"}"#,
        "0x180",
    ),
    (
        r#"kube_tailor_verticalautoscaler_status_condition{namespace="shop", verticalautoscaler="orders", type="RecommendationProvided", reason="Recommended", customresource_group="tailor.dev", customresource_kind="VerticalAutoscaler", customresource_version="v1alpha1", job="kube-state-metrics", instance="ksm"}"#,
        "1x180",
    ),
    (
        r#"kube_tailor_verticalautoscaler_status_condition{namespace="shop", verticalautoscaler="orders", type="AwaitingApproval", reason="MemoryDecrease", customresource_group="tailor.dev", customresource_kind="VerticalAutoscaler", customresource_version="v1alpha1", job="kube-state-metrics", instance="ksm"}"#,
        "1x180",
    ),
];

/// Exact results for some panels at 02:00 on [`FIXTURE`]: (file, panel title, refId, wrapper
/// around the query (`{}`), labels, value).
const EXACT: &[(&str, &str, &str, &str, &str, f64)] = &[
    // orders: (2 - 0.5) x 2 pods; cart: (1 - 1.5) x 1; the sidecar has no recommendation.
    (
        "tailor-fleet.json",
        "CPU freed if applied",
        "A",
        "{}",
        "{}",
        2.5,
    ),
    // orders: (4Gi - 1.5Gi) x 2 pods; cart: 1Gi - 1Gi.
    (
        "tailor-fleet.json",
        "Memory freed if applied",
        "A",
        "{}",
        "{}",
        5_368_709_120.0,
    ),
    ("tailor-fleet.json", "Workloads", "A", "{}", "{}", 2.0),
    ("tailor-fleet.json", "Pods", "A", "{}", "{}", 3.0),
    (
        "tailor-fleet.json",
        "Memory decreases awaiting approval",
        "A",
        "count by (approve_command, from, to) ({})",
        r#"{approve_command="kubectl -n shop annotate verticalautoscaler orders tailor.dev/approve-memory-decrease=3f9a1c07d2 --overwrite", from="4Gi", to="1536Mi"}"#,
        1.0,
    ),
    (
        "tailor-workload.json",
        "Memory decreases awaiting approval",
        "A",
        "{}",
        r#"{approve_command="kubectl -n shop annotate verticalautoscaler orders tailor.dev/approve-memory-decrease=3f9a1c07d2 --overwrite", namespace="shop", verticalautoscaler="orders", container="app", id="3f9a1c07d2", from="4Gi", to="1536Mi"}"#,
        6600.0,
    ),
    (
        "tailor-fleet.json",
        "Unfinished resizes",
        "A",
        "{}",
        "{}",
        2.0,
    ),
    ("tailor-workload.json", "Pods", "A", "{}", "{}", 2.0),
    (
        "tailor-workload.json",
        "Unfinished resizes",
        "A",
        "{}",
        "{}",
        1.0,
    ),
    // orders-a 0.5 cores, orders-b 0.3 cores: the busiest and the mean.
    (
        "tailor-workload.json",
        "CPU of $container: usage vs recommendation",
        "A",
        "{}",
        "{}",
        0.5,
    ),
    (
        "tailor-workload.json",
        "CPU of $container: usage vs recommendation",
        "B",
        "{}",
        "{}",
        0.4,
    ),
    (
        "tailor-workload.json",
        "OOM kills and restarts",
        "A",
        "max_over_time(({})[1h:1m])",
        r#"{container="app"}"#,
        1.0,
    ),
    // Both replicas' sized pods, 12 a second; resizes issued (not applied), per resource: CPU
    // 1 a second, memory 0.5.
    (
        "tailor-fleet.json",
        "Pods sized at creation vs resized live",
        "A",
        "{}",
        "{}",
        12.0,
    ),
    (
        "tailor-fleet.json",
        "Pods sized at creation vs resized live",
        "B",
        "max({})",
        "{}",
        1.0,
    ),
    (
        "tailor-fleet.json",
        "Pods sized at creation vs resized live",
        "B",
        "min({})",
        "{}",
        0.5,
    ),
    // One series per webhook and outcome, over both replicas.
    (
        "tailor-fleet.json",
        "Admission outcomes",
        "A",
        "count({})",
        "{}",
        2.0,
    ),
    // Over both replicas: half the answers within 0.8 ms, 99% within 1.6 ms.
    (
        "tailor-fleet.json",
        "Webhook answer time",
        "A",
        "{}",
        r#"{webhook="size"}"#,
        0.0008,
    ),
    (
        "tailor-fleet.json",
        "Webhook answer time",
        "B",
        "{}",
        r#"{webhook="size"}"#,
        0.0016,
    ),
    // 30 days; the standby's 0 is left out.
    (
        "tailor-fleet.json",
        "Webhook certificate expires in",
        "A",
        "{}",
        "{}",
        2_592_000.0,
    ),
    (
        "tailor-workload.json",
        "Resizes seen (request changes)",
        "A",
        "sum_over_time(({})[1h:5m]) > 0",
        r#"{container="app", resource="cpu"}"#,
        1.0,
    ),
];

#[test]
fn every_dashboard_query_returns_data_on_the_fixture() {
    let series: Vec<Json> = FIXTURE
        .iter()
        .map(|(s, v)| json!({"series": s, "values": v}))
        .collect();
    let mut cases = Vec::new();
    let queries = all_queries();
    for q in &queries {
        let expr = substitute(q.file, &q.expr).expect("substitute");
        cases.push(json!({
            "expr": format!(
                "# {} panel {} {}\n(count({expr}) > bool 0) or vector(0)",
                q.file, q.panel, q.ref_id
            ),
            "eval_time": "2h",
            "exp_samples": [{"labels": "{}", "value": 1}],
        }));
    }
    for (file, title, ref_id, wrap, labels, value) in EXACT {
        let q = queries
            .iter()
            .find(|q| {
                q.file.ends_with(file)
                    && q.panel.ends_with(&format!("{title:?}"))
                    && q.ref_id == *ref_id
            })
            .unwrap_or_else(|| panic!("{file} has no panel {title:?} with query {ref_id}"));
        let expr = wrap.replace("{}", &substitute(q.file, &q.expr).expect("substitute"));
        cases.push(json!({
            "expr": format!("# {file} {title:?} {ref_id}\n{expr}"),
            "eval_time": "2h",
            "exp_samples": [{"labels": labels, "value": value}],
        }));
    }
    let file = json!({
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("dashboards_test.yaml"),
        serde_yaml::to_string(&file).expect("yaml"),
    )
    .expect("write");
    run_promtool(tmp.path(), &["test", "rules", "dashboards_test.yaml"]);
}

// ----------------------------------------------------------------------- kube-state-metrics

/// The schema of the stored version of the CRD.
fn crd_schema() -> Yaml {
    let crd = yaml(CRD);
    let versions = crd["spec"]["versions"].as_sequence().expect("versions");
    let v = versions
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("v1alpha1 in the CRD");
    v["schema"]["openAPIV3Schema"].clone()
}

/// The schema at `path` below `node`; an array on the way stands for each of its items, as in
/// kube-state-metrics. `metadata` is not in a CRD's schema: its standard fields are accepted.
fn resolve(node: &Yaml, path: &[String]) -> Result<Yaml, String> {
    let mut node = node.clone();
    for (i, seg) in path.iter().enumerate() {
        if node["type"] == "array" {
            node = node["items"].clone();
        }
        if node
            .get("x-kubernetes-preserve-unknown-fields")
            .is_some_and(|v| v == &Yaml::Bool(true))
            && node.get("properties").is_none()
        {
            return Ok(Yaml::Null);
        }
        if seg == "metadata" && i == 0 {
            let field = path.get(1).map(String::as_str);
            return match field {
                None | Some("name" | "namespace" | "generation" | "labels" | "annotations") => {
                    Ok(Yaml::Null)
                }
                Some(other) => Err(format!("metadata.{other} is not a standard field")),
            };
        }
        node = node["properties"]
            .get(seg.as_str())
            .cloned()
            .ok_or_else(|| format!("no field {:?} at {:?}", seg, &path[..i]))?;
    }
    Ok(node)
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a path segment is a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ksm_metric_names() -> Vec<String> {
    let cfg = yaml(KSM_CONFIG);
    let res = &cfg["spec"]["resources"][0];
    let prefix = res["metricNamePrefix"].as_str().expect("metricNamePrefix");
    res["metrics"]
        .as_sequence()
        .expect("metrics")
        .iter()
        .map(|m| format!("{prefix}_{}", m["name"].as_str().expect("name")))
        .collect()
}

#[test]
fn ksm_config_names_the_verticalautoscaler() {
    use kube::Resource as _;
    use tailor_crds::v1alpha1::VerticalAutoscaler;

    let cfg = yaml(KSM_CONFIG);
    assert_eq!(cfg["kind"], "CustomResourceStateMetrics");
    let resources = cfg["spec"]["resources"].as_sequence().expect("resources");
    assert_eq!(resources.len(), 1, "one resource: VerticalAutoscaler");
    let gvk = &resources[0]["groupVersionKind"];
    assert_eq!(gvk["group"], VerticalAutoscaler::group(&()).as_ref());
    assert_eq!(gvk["version"], VerticalAutoscaler::version(&()).as_ref());
    assert_eq!(gvk["kind"], VerticalAutoscaler::kind(&()).as_ref());
    assert_eq!(gvk["group"], tailor_crds::v1alpha1::GROUP);
}

#[test]
fn ksm_config_reads_only_fields_the_crd_has() {
    let schema = crd_schema();
    let cfg = yaml(KSM_CONFIG);
    let res = &cfg["spec"]["resources"][0];
    for (label, path) in res["labelsFromPath"].as_mapping().expect("labelsFromPath") {
        resolve(&schema, &strings(path)).unwrap_or_else(|e| panic!("label {label:?}: {e}"));
    }
    let mut names = BTreeSet::new();
    for m in res["metrics"].as_sequence().expect("metrics") {
        let name = m["name"].as_str().expect("metric name");
        assert!(
            names.insert(name.to_owned()),
            "metric {name} appears twice (kube-state-metrics would write two families)"
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "metric name {name:?}"
        );
        let each = &m["each"];
        let kind = each["type"].as_str().expect("type");
        let body = match kind {
            "Gauge" => &each["gauge"],
            "Info" => &each["info"],
            "StateSet" => &each["stateSet"],
            other => panic!("{name}: unknown type {other}"),
        };
        let base_path = strings(&body["path"]);
        let base = resolve(&schema, &base_path).unwrap_or_else(|e| panic!("{name}: path: {e}"));
        let element = if base["type"] == "array" {
            base["items"].clone()
        } else {
            base.clone()
        };
        if let Some(labels) = body.get("labelsFromPath").and_then(Yaml::as_mapping) {
            for (label, path) in labels {
                resolve(&element, &strings(path))
                    .unwrap_or_else(|e| panic!("{name}: label {label:?}: {e}"));
            }
        }
        if let Some(from) = body.get("valueFrom") {
            resolve(&element, &strings(from)).unwrap_or_else(|e| panic!("{name}: valueFrom: {e}"));
        }
        if kind == "StateSet" {
            let list: BTreeSet<String> = strings(&body["list"]).into_iter().collect();
            let allowed: BTreeSet<String> = strings(&base["enum"]).into_iter().collect();
            assert_eq!(list, allowed, "{name}: list differs from the CRD's enum");
        }
    }
}

#[test]
fn dashboards_use_only_ksm_metrics_the_config_defines() {
    let defined: BTreeSet<String> = ksm_metric_names().into_iter().collect();
    let prefix = "kube_tailor_verticalautoscaler_";
    let mut used = BTreeMap::new();
    for q in all_queries() {
        let mut rest = q.expr.as_str();
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_owned(), q.panel.clone());
            rest = &tail[end..];
        }
    }
    assert!(
        !used.is_empty(),
        "the dashboards use the kube-state-metrics config"
    );
    for (metric, panel) in used {
        assert!(
            defined.contains(&metric),
            "panel {panel} uses {metric}, which {KSM_CONFIG} does not define"
        );
    }
}
