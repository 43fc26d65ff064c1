//! Metrics that model code defines (Triton's `pb_utils.MetricFamily`), rendered after the server's own on
//! `/metrics`.
//!
//! Model code controls every name, label and count here, so each is checked and bounded: Prometheus names,
//! no family named like the server's own (`nv_`, `rampart_`), at most [`MAX_FAMILIES`] families,
//! [`MAX_METRICS`] label sets per family, [`MAX_LABELS`] labels per metric, [`MAX_BUCKETS`] histogram
//! buckets, and texts of bounded length. Metrics live as long as the server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use rampart_types::{Error, MetricKind, MetricOp, Result};

pub const MAX_FAMILIES: usize = 256;
pub const MAX_METRICS: usize = 1024;
pub const MAX_LABELS: usize = 16;
pub const MAX_BUCKETS: usize = 64;
const MAX_TEXT: usize = 1024;

type Labels = Vec<(String, String)>;

#[derive(Default)]
pub(crate) struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

struct Family {
    description: String,
    kind: MetricKind,
    metrics: BTreeMap<Labels, Metric>,
}

enum Metric {
    Value(f64),
    Histogram { bounds: Vec<f64>, counts: Vec<u64>, sum: f64, count: u64 },
}

fn bad(msg: String) -> Error {
    Error::invalid_arg(msg)
}

fn check_name(name: &str, what: &str, first_colon: bool) -> Result<()> {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (first_colon && c == ':');
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || c == '_' || (first_colon && c == ':');
    let mut chars = name.chars();
    let valid = name.len() <= 200
        && chars.next().is_some_and(ok_first)
        && chars.all(ok_rest)
        && !name.starts_with("__");
    if !valid {
        return Err(bad(format!(
            "metric {what} '{}' is not a valid Prometheus name",
            name.escape_debug()
        )));
    }
    Ok(())
}

impl Registry {
    /// Applies one operation of model code; answers the metric's value.
    pub(crate) fn apply(&self, op: MetricOp) -> Result<f64> {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            MetricOp::Family { name, description, kind } => {
                check_name(&name, "family name", true)?;
                if name.starts_with("nv_") || name.starts_with("rampart_") {
                    return Err(bad(format!(
                        "metric family '{name}': names starting with nv_ or rampart_ are the server's"
                    )));
                }
                if description.len() > MAX_TEXT {
                    return Err(bad(format!(
                        "metric family '{name}': description over {MAX_TEXT} bytes"
                    )));
                }
                if let Some(f) = families.get(&name) {
                    if f.kind != kind {
                        return Err(bad(format!(
                            "metric family '{name}' exists already with another kind"
                        )));
                    }
                    return Ok(0.0);
                }
                if families.len() >= MAX_FAMILIES {
                    return Err(bad(format!(
                        "model code may define at most {MAX_FAMILIES} metric families"
                    )));
                }
                families.insert(name, Family { description, kind, metrics: BTreeMap::new() });
                Ok(0.0)
            }
            MetricOp::Metric { family, labels, buckets } => {
                let f = find(&mut families, &family)?;
                let labels = check_labels(&family, labels)?;
                if f.metrics.contains_key(&labels) {
                    return Ok(0.0);
                }
                if f.metrics.len() >= MAX_METRICS {
                    return Err(bad(format!(
                        "metric family '{family}' has {MAX_METRICS} metrics already"
                    )));
                }
                let metric = match f.kind {
                    MetricKind::Histogram => {
                        let sorted = buckets.windows(2).all(|w| w[0] < w[1]);
                        // No bucket is allowed, as in Triton: the histogram counts only `+Inf`.
                        if buckets.len() > MAX_BUCKETS
                            || !sorted
                            || buckets.iter().any(|b| !b.is_finite())
                        {
                            return Err(bad(format!(
                                "metric family '{family}': a histogram needs at most {MAX_BUCKETS} increasing finite buckets"
                            )));
                        }
                        let counts = vec![0; buckets.len()];
                        Metric::Histogram { bounds: buckets, counts, sum: 0.0, count: 0 }
                    }
                    _ => Metric::Value(0.0),
                };
                f.metrics.insert(labels, metric);
                Ok(0.0)
            }
            MetricOp::Increment { family, labels, by } => {
                let (kind, m) = metric(&mut families, &family, labels)?;
                match (kind, m) {
                    (MetricKind::Counter, _) if by < 0.0 || !by.is_finite() => Err(bad(format!(
                        "metric family '{family}': a counter increases by a finite value ≥ 0"
                    ))),
                    (MetricKind::Histogram, _) => {
                        Err(bad(format!("metric family '{family}' is a histogram: use observe")))
                    }
                    (_, Metric::Value(v)) => {
                        *v += by;
                        Ok(*v)
                    }
                    (_, Metric::Histogram { .. }) => {
                        unreachable!("a histogram family holds histograms")
                    }
                }
            }
            MetricOp::Set { family, labels, value } => {
                match metric(&mut families, &family, labels)? {
                    (MetricKind::Gauge, Metric::Value(v)) => {
                        *v = value;
                        Ok(value)
                    }
                    _ => Err(bad(format!("metric family '{family}': only a gauge can be set"))),
                }
            }
            MetricOp::Observe { family, labels, value } => {
                match metric(&mut families, &family, labels)? {
                    (_, Metric::Histogram { bounds, counts, sum, count }) => {
                        for (b, c) in bounds.iter().zip(counts.iter_mut()) {
                            if value <= *b {
                                *c += 1;
                            }
                        }
                        *sum += value;
                        *count += 1;
                        Ok(*sum)
                    }
                    _ => {
                        Err(bad(format!("metric family '{family}': only a histogram can observe")))
                    }
                }
            }
            MetricOp::Value { family, labels } => match metric(&mut families, &family, labels)? {
                (_, Metric::Value(v)) => Ok(*v),
                (_, Metric::Histogram { sum, .. }) => Ok(*sum),
            },
        }
    }

    /// The families in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for (name, f) in families.iter().filter(|(_, f)| !f.metrics.is_empty()) {
            let kind = match f.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            let help = f.description.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, m) in &f.metrics {
                let text = |extra: Option<(&str, String)>| {
                    let mut parts: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                    if let Some((k, v)) = extra {
                        parts.push(format!("{k}=\"{v}\""));
                    }
                    if parts.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", parts.join(","))
                    }
                };
                match m {
                    Metric::Value(v) => {
                        let _ = writeln!(out, "{name}{} {v}", text(None));
                    }
                    Metric::Histogram { bounds, counts, sum, count } => {
                        for (b, c) in bounds.iter().zip(counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                text(Some(("le", b.to_string())))
                            );
                        }
                        let inf = text(Some(("le", "+Inf".into())));
                        let _ = writeln!(out, "{name}_bucket{inf} {count}");
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {sum}\n{name}_count{} {count}",
                            text(None),
                            text(None)
                        );
                    }
                }
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn find<'a>(families: &'a mut BTreeMap<String, Family>, name: &str) -> Result<&'a mut Family> {
    families
        .get_mut(name)
        .ok_or_else(|| Error::not_found(format!("no metric family '{}'", name.escape_debug())))
}

fn check_labels(family: &str, mut labels: Labels) -> Result<Labels> {
    if labels.len() > MAX_LABELS {
        return Err(bad(format!("metric family '{family}': at most {MAX_LABELS} labels")));
    }
    for (k, v) in &labels {
        check_name(k, "label", false)?;
        if v.len() > MAX_TEXT {
            return Err(bad(format!(
                "metric family '{family}': label '{k}' is over {MAX_TEXT} bytes"
            )));
        }
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    Ok(labels)
}

fn metric<'a>(
    families: &'a mut BTreeMap<String, Family>,
    family: &str,
    labels: Labels,
) -> Result<(MetricKind, &'a mut Metric)> {
    let labels = check_labels(family, labels)?;
    let f = find(families, family)?;
    let kind = f.kind;
    let m = f.metrics.get_mut(&labels).ok_or_else(|| {
        Error::not_found(format!("metric family '{family}' has no metric with these labels"))
    })?;
    Ok((kind, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: &str, v: &str) -> Labels {
        vec![(k.into(), v.into())]
    }

    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        let r = Registry::default();
        let fam = |name: &str, kind| MetricOp::Family {
            name: name.into(),
            description: "d".into(),
            kind,
        };
        r.apply(fam("requests_total", MetricKind::Counter)).unwrap();
        r.apply(fam("queue_depth", MetricKind::Gauge)).unwrap();
        r.apply(fam("latency", MetricKind::Histogram)).unwrap();
        let metric = |f: &str, buckets: Vec<f64>| MetricOp::Metric {
            family: f.into(),
            labels: l("m", "a\"b"),
            buckets,
        };
        r.apply(metric("requests_total", vec![])).unwrap();
        r.apply(metric("queue_depth", vec![])).unwrap();
        r.apply(metric("latency", vec![1.0, 2.0])).unwrap();
        let by = |f: &str, by| MetricOp::Increment { family: f.into(), labels: l("m", "a\"b"), by };
        assert_eq!(r.apply(by("requests_total", 2.0)).unwrap(), 2.0);
        assert!(r.apply(by("requests_total", -1.0)).is_err(), "a counter never decreases");
        let set =
            MetricOp::Set { family: "queue_depth".into(), labels: l("m", "a\"b"), value: 5.0 };
        assert_eq!(r.apply(set).unwrap(), 5.0);
        let obs =
            MetricOp::Observe { family: "latency".into(), labels: l("m", "a\"b"), value: 1.5 };
        r.apply(obs).unwrap();
        let mut out = String::new();
        r.render(&mut out);
        assert!(
            out.contains("# TYPE requests_total counter\nrequests_total{m=\"a\\\"b\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("queue_depth{m=\"a\\\"b\"} 5\n"), "{out}");
        assert!(out.contains("latency_bucket{m=\"a\\\"b\",le=\"1\"} 0\n"), "{out}");
        assert!(out.contains("latency_bucket{m=\"a\\\"b\",le=\"2\"} 1\n"), "{out}");
        assert!(out.contains("latency_count{m=\"a\\\"b\"} 1\n"), "{out}");
    }

    #[test]
    fn names_kinds_and_counts_are_checked() {
        let r = Registry::default();
        let fam = |name: &str| MetricOp::Family {
            name: name.into(),
            description: String::new(),
            kind: MetricKind::Gauge,
        };
        for name in ["nv_inference_count", "rampart_x", "1abc", "a b", ""] {
            assert!(r.apply(fam(name)).is_err(), "{name}");
        }
        r.apply(fam("g")).unwrap();
        let counter = MetricOp::Family {
            name: "g".into(),
            description: String::new(),
            kind: MetricKind::Counter,
        };
        assert!(r.apply(counter).is_err(), "another kind under the same name");
        for i in 0..MAX_FAMILIES - 1 {
            r.apply(fam(&format!("g{i}"))).unwrap();
        }
        assert!(r.apply(fam("one_too_many")).is_err());
        let bad_label =
            MetricOp::Metric { family: "g".into(), labels: l("__x", "v"), buckets: vec![] };
        assert!(r.apply(bad_label).is_err());
    }
}
