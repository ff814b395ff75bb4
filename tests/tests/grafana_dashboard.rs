//! `deploy/grafana/dashboards/ioscale.json`, the Grafana dashboard Compose
//! serves on :3001: it parses, every panel is placed and queries something, every
//! query goes to the datasource `deploy/grafana/provisioning/` provisions, every
//! `ioscale_*` metric it queries is in the README's Metrics table (the documented
//! list of what a node exports), and counters are only ever graphed as rates,
//! never as their raw ever-growing totals.
//!
//! No Grafana is started (there is no image to run it from on a machine without
//! a registry); the checkers themselves are tested on bad inputs below, so a
//! passing run means something.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result, bail, ensure};
use ioscale_cluster_tests::logs::workspace_root;
use ioscale_cluster_tests::tools::{deploy_dir, with_install_timeout, yaml_docs};
use serde_json::Value;

/// Grafana's grid is 24 columns wide.
const GRID_COLUMNS: u64 = 24;

/// PromQL functions whose argument may be a raw counter series: they turn it
/// into a per-second or per-range change, which is what a graph should show.
const RATE_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];

/// Histogram series suffixes; the metric the README names is the name without them.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn dashboard() -> Result<Value> {
    let path = deploy_dir()
        .join("grafana")
        .join("dashboards")
        .join("ioscale.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Every panel, including those nested in collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// How failure messages name a panel.
fn panel_name(p: &Value) -> String {
    format!(
        "panel {} {:?}",
        p["id"],
        p["title"].as_str().unwrap_or("(untitled)")
    )
}

/// `(panel name, expr)` of every query of every panel.
fn exprs(dash: &Value) -> Vec<(String, String)> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let name = panel_name(p);
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (name.clone(), e.to_owned())))
        })
        .collect()
}

/// `(variable name, query)` of every query variable.
fn variable_queries(dash: &Value) -> Vec<(String, String)> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .or_else(|| v["definition"].as_str())
                .unwrap_or_default();
            (
                format!("variable ${}", v["name"].as_str().unwrap_or("?")),
                q.to_owned(),
            )
        })
        .collect()
}

/// The metrics of the README's "## Metrics" table, name → type. A first cell may
/// list several names, later ones shortened to what follows the subsystem
/// (`ioscale_adapter_requests_total`, `_request_timeouts_total`): a name starting
/// with `_` continues the first two words (`ioscale_adapter`) of the cell's first
/// name. Counting words from the end does not work: `_request_timeouts_total` has
/// one word more than the `requests_total` it stands beside.
fn readme_metrics(readme: &str) -> Result<BTreeMap<String, String>> {
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .context("README has no \"## Metrics\" section")?;
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("## ") {
            break;
        }
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (Some(first), Some(kind)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let mut full: Option<String> = None;
        for part in first.split(',') {
            let Some(name) = part
                .trim()
                .strip_prefix('`')
                .and_then(|p| p.strip_suffix('`'))
            else {
                continue;
            };
            let name = if let Some(tail) = name.strip_prefix('_') {
                let base = full
                    .as_deref()
                    .with_context(|| format!("{name:?} shortens nothing in {line:?}"))?;
                let words: Vec<&str> = base.splitn(3, '_').collect();
                ensure!(
                    words.len() == 3,
                    "{base:?} has no subsystem for {name:?} to continue in {line:?}"
                );
                format!("{}_{}_{tail}", words[0], words[1])
            } else {
                full = Some(name.to_owned());
                name.to_owned()
            };
            out.insert(name, kind.to_string());
        }
    }
    ensure!(
        !out.is_empty(),
        "no metric found in the README's Metrics table"
    );
    Ok(out)
}

/// For each byte of `expr`, whether it lies inside a quoted string (label
/// values, regexes), which may hold parentheses or names that are not PromQL.
fn in_string_mask(expr: &str) -> Vec<bool> {
    let mut mask = Vec::with_capacity(expr.len());
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &b in expr.as_bytes() {
        match quote {
            Some(q) => {
                mask.push(true);
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                let opens = matches!(b, b'"' | b'\'' | b'`');
                mask.push(opens);
                if opens {
                    quote = Some(b);
                }
            }
        }
    }
    mask
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// `(byte offset, series name)` of every `ioscale_*` series an expression selects.
fn series_in(expr: &str) -> Vec<(usize, String)> {
    let bytes = expr.as_bytes();
    let mask = in_string_mask(expr);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_name = !mask[i]
            && expr[i..].starts_with("ioscale_")
            && (i == 0 || !is_ident_byte(bytes[i - 1]));
        if starts_name {
            let end = (i..bytes.len())
                .find(|&j| !is_ident_byte(bytes[j]))
                .unwrap_or(bytes.len());
            out.push((i, expr[i..end].to_owned()));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The metric a series belongs to: the name without a histogram suffix when
/// that names a histogram of `metrics`.
fn metric_of<'a>(series: &'a str, metrics: &BTreeMap<String, String>) -> &'a str {
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = series.strip_suffix(suffix)
            && metrics.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    series
}

/// Whether a series only ever grows: a counter (`_total`) or a histogram's
/// bucket, sum or count.
fn is_cumulative(series: &str, metrics: &BTreeMap<String, String>) -> bool {
    series.ends_with("_total") || metric_of(series, metrics) != series
}

/// The cumulative series of `expr` that are not the direct argument of a rate
/// function (`sum(ioscale_x_total)`, `ioscale_x_total / 2`).
fn raw_counters(expr: &str, metrics: &BTreeMap<String, String>) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mask = in_string_mask(expr);
    let mut raw = Vec::new();
    for (at, series) in series_in(expr) {
        if !is_cumulative(&series, metrics) {
            continue;
        }
        // The innermost parenthesis still open at the series: the call it is an argument of.
        let mut depth = 0usize;
        let mut open = None;
        for j in (0..at).rev() {
            if mask[j] {
                continue;
            }
            match bytes[j] {
                b')' => depth += 1,
                b'(' if depth == 0 => {
                    open = Some(j);
                    break;
                }
                b'(' => depth -= 1,
                _ => {}
            }
        }
        let function = open.map(|j| {
            let before = expr[..j].trim_end();
            let start = before
                .bytes()
                .rposition(|b| !is_ident_byte(b))
                .map_or(0, |k| k + 1);
            &before[start..]
        });
        if !function.is_some_and(|f| RATE_FUNCTIONS.contains(&f)) {
            raw.push(series);
        }
    }
    raw
}

/// The datasource uid `deploy/grafana/provisioning/datasources/` gives its Prometheus.
async fn provisioned_prometheus_uid() -> Result<String> {
    let dir = deploy_dir()
        .join("grafana")
        .join("provisioning")
        .join("datasources");
    let mut uids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for doc in yaml_docs(&text).await? {
            for ds in doc["datasources"].as_array().into_iter().flatten() {
                if ds["type"] == "prometheus" {
                    let uid = ds["uid"]
                        .as_str()
                        .with_context(|| format!("{}: a datasource without uid", path.display()))?;
                    uids.push(uid.to_owned());
                }
            }
        }
    }
    ensure!(
        uids.len() == 1,
        "{} must provision exactly one Prometheus datasource, found uids {uids:?}",
        dir.display()
    );
    Ok(uids.remove(0))
}

#[test]
fn dashboard_has_its_identity_time_range_and_node_selector() -> Result<()> {
    let dash = dashboard()?;
    ensure!(dash["uid"] == "ioscale-cluster", "uid: {}", dash["uid"]);
    ensure!(
        dash["title"] == "ioscale cluster",
        "title: {}",
        dash["title"]
    );
    ensure!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {} predates the timeseries and datasource-by-uid model used here",
        dash["schemaVersion"]
    );
    ensure!(
        dash["time"]["from"] == "now-15m" && dash["time"]["to"] == "now",
        "time range: {}",
        dash["time"]
    );
    ensure!(dash["refresh"] == "10s", "refresh: {}", dash["refresh"]);
    let vars = variable_queries(&dash);
    let node = vars
        .iter()
        .find(|(name, _)| name == "variable $node")
        .context("the dashboard has no $node query variable")?;
    ensure!(
        node.1.starts_with("label_values(") && node.1.contains("instance"),
        "$node must list the nodes' instance label: {:?}",
        node.1
    );
    Ok(())
}

/// Every query honours the node selector, or choosing nodes would leave some
/// panels showing the whole cluster.
#[test]
fn every_query_is_filtered_by_the_node_selector() -> Result<()> {
    let dash = dashboard()?;
    for (panel, expr) in exprs(&dash) {
        for (at, series) in series_in(&expr) {
            let selector = &expr[at + series.len()..];
            ensure!(
                selector.starts_with('{')
                    && selector[..selector.find('}').unwrap_or(0)].contains("instance=~\"$node\""),
                "{panel}: {series} is not filtered by instance=~\"$node\" in {expr:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_panel_has_a_unique_id_a_place_and_a_query() -> Result<()> {
    let dash = dashboard()?;
    let all = panels(&dash);
    ensure!(!all.is_empty(), "the dashboard has no panels");
    let mut ids = BTreeSet::new();
    let mut places: Vec<(String, [u64; 4])> = Vec::new();
    for p in &all {
        let name = panel_name(p);
        let id = p["id"]
            .as_u64()
            .with_context(|| format!("{name} has no numeric id"))?;
        ensure!(ids.insert(id), "{name}: id {id} is used by another panel");
        let pos = &p["gridPos"];
        let mut xywh = [0u64; 4];
        for (slot, key) in xywh.iter_mut().zip(["x", "y", "w", "h"]) {
            *slot = pos[key]
                .as_u64()
                .with_context(|| format!("{name}: gridPos.{key} missing in {pos}"))?;
        }
        let [x, _, w, h] = xywh;
        ensure!(
            w > 0 && h > 0 && x + w <= GRID_COLUMNS,
            "{name}: gridPos {pos} is empty or wider than the grid"
        );
        if let Some((other, _)) = places.iter().find(|(_, o)| {
            xywh[0] < o[0] + o[2]
                && o[0] < xywh[0] + xywh[2]
                && xywh[1] < o[1] + o[3]
                && o[1] < xywh[1] + xywh[3]
        }) {
            bail!("{name} overlaps {other}");
        }
        places.push((name.clone(), xywh));

        let targets = p["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .with_context(|| format!("{name} has no query"))?;
        let mut refs = BTreeSet::new();
        for t in targets {
            ensure!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{name}: a target without a PromQL expr: {t}"
            );
            ensure!(
                refs.insert(t["refId"].as_str().unwrap_or_default()),
                "{name}: refId {} repeats (Grafana would drop one query)",
                t["refId"]
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_query_uses_the_provisioned_prometheus_datasource() -> Result<()> {
    with_install_timeout(async {
        let uid = provisioned_prometheus_uid().await?;
        let dash = dashboard()?;
        let check = |what: &str, ds: &Value| -> Result<()> {
            ensure!(
                ds["uid"] == uid.as_str() && ds["type"] == "prometheus",
                "{what}: datasource {ds}, want the provisioned Prometheus (uid {uid:?})"
            );
            Ok(())
        };
        for p in panels(&dash) {
            let name = panel_name(p);
            check(&name, &p["datasource"])?;
            for t in p["targets"].as_array().into_iter().flatten() {
                check(
                    &format!("{name}, query {}", t["refId"].as_str().unwrap_or("?")),
                    &t["datasource"],
                )?;
            }
        }
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                check(&format!("variable ${}", v["name"]), &v["datasource"])?;
            }
        }
        Ok(())
    })
    .await
}

#[test]
fn every_metric_queried_is_in_the_readme_metrics_table() -> Result<()> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    let metrics = readme_metrics(&readme)?;
    let dash = dashboard()?;
    let mut used = BTreeSet::new();
    for (whose, expr) in exprs(&dash).into_iter().chain(variable_queries(&dash)) {
        for (_, series) in series_in(&expr) {
            let metric = metric_of(&series, &metrics);
            ensure!(
                metrics.contains_key(metric),
                "{whose} queries {series}, which is not in README.md's Metrics table \
                 (the node does not export it, or the table is out of date)"
            );
            used.insert(metric.to_owned());
        }
    }
    ensure!(!used.is_empty(), "no ioscale_* metric found in any query");
    Ok(())
}

#[test]
fn counters_are_only_graphed_as_rates() -> Result<()> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    let metrics = readme_metrics(&readme)?;
    let dash = dashboard()?;
    for (panel, expr) in exprs(&dash) {
        let raw = raw_counters(&expr, &metrics);
        ensure!(
            raw.is_empty(),
            "{panel} graphs the raw counter(s) {raw:?} (an ever-growing total that resets \
             on restart) instead of rate() or increase() of them: {expr:?}"
        );
    }
    Ok(())
}

/// The README parser expands the table's shortened names, on the real table:
/// a change of its shape must not silently shrink the list the dashboard is
/// checked against.
#[test]
fn readme_table_parser_expands_shortened_names() -> Result<()> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    let metrics = readme_metrics(&readme)?;
    for (name, kind) in [
        ("ioscale_connections_active", "gauge"),
        ("ioscale_adapter_messages_out_total", "counter"),
        ("ioscale_adapter_messages_in_total", "counter"),
        ("ioscale_adapter_bytes_in_total", "counter"),
        ("ioscale_adapter_request_timeouts_total", "counter"),
        ("ioscale_adapter_broadcast_latency_seconds", "histogram"),
    ] {
        ensure!(
            metrics.get(name).map(String::as_str) == Some(kind),
            "{name} should be a {kind} of the README table, parsed {metrics:?}"
        );
    }
    ensure!(
        !metrics.contains_key("_messages_in_total"),
        "a shortened name was kept unexpanded: {metrics:?}"
    );

    let table = "# x\n\n## Metrics\n\n| metric | type | labels |\n|---|---|---|\n\
                 | `ioscale_a_b_out_total`, `_c_in_total` | counter | `kind` |\n\
                 | `ioscale_a_requests_total`, `_request_timeouts_total` | counter | |\n\n## Next\n\
                 | `ioscale_after_total` | counter | |\n";
    let parsed = readme_metrics(table)?;
    let names: Vec<&str> = parsed.keys().map(String::as_str).collect();
    ensure!(
        names
            == [
                "ioscale_a_b_out_total",
                "ioscale_a_c_in_total",
                "ioscale_a_request_timeouts_total",
                "ioscale_a_requests_total",
            ],
        "parsed {names:?}"
    );
    Ok(())
}

/// The checkers above must be able to fail: raw counters, undocumented series
/// and unfiltered selectors in made-up queries are caught.
#[test]
fn checkers_reject_raw_counters_and_unknown_metrics() -> Result<()> {
    let metrics: BTreeMap<String, String> = [
        ("ioscale_x_total", "counter"),
        ("ioscale_lat_seconds", "histogram"),
        ("ioscale_depth", "gauge"),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t.to_owned()))
    .collect();

    for (expr, want) in [
        ("sum(ioscale_x_total)", vec!["ioscale_x_total"]),
        ("ioscale_x_total", vec!["ioscale_x_total"]),
        (
            "sum by (a) (ioscale_x_total{a=\"rate(\"})",
            vec!["ioscale_x_total"],
        ),
        (
            "histogram_quantile(0.9, sum by (le) (ioscale_lat_seconds_bucket))",
            vec!["ioscale_lat_seconds_bucket"],
        ),
        (
            "rate(ioscale_x_total[1m]) / ioscale_lat_seconds_count",
            vec!["ioscale_lat_seconds_count"],
        ),
        ("sum(rate(ioscale_x_total{a=~\"(b)\"}[1m]))", vec![]),
        (
            "sum(increase(ioscale_x_total[$__range])) or vector(0)",
            vec![],
        ),
        (
            "histogram_quantile(0.5, sum by (le) (rate(ioscale_lat_seconds_bucket[1m])))",
            vec![],
        ),
        ("max(ioscale_depth)", vec![]),
    ] {
        let got = raw_counters(expr, &metrics);
        ensure!(
            got == want,
            "raw counters of {expr:?}: {got:?}, want {want:?}"
        );
    }

    let series: Vec<String> = series_in("rate(ioscale_y_total{l=\"ioscale_no\"}[1m]) + xioscale_z")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    ensure!(series == ["ioscale_y_total"], "series found: {series:?}");
    ensure!(
        metric_of("ioscale_lat_seconds_bucket", &metrics) == "ioscale_lat_seconds"
            && !metrics.contains_key(metric_of("ioscale_y_total", &metrics)),
        "histogram series map to their metric, unknown names stay unknown"
    );
    Ok(())
}
