//! Reading a `/metrics` endpoint as an operator's tools would: one HTTP GET
//! (the classic text format, what `curl` gets) and the value of a series.
//! Used by the demo's "what an operator sees" and by the tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: ringside\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .context("sending the request")?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .context("no answer within 10 s")?
        .context("reading the answer")?;
    let (head, body) = raw.split_once("\r\n\r\n").context("not an HTTP answer")?;
    let status = (head.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((status, body.to_string()))
}

/// The value of series `name` whose labels include every pair of `labels`,
/// summed over the series that match (other labels, such as `region`, may
/// vary); `None` when none does.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = (set.split(','))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|l| pairs.contains(l)) {
            if let Ok(v) = value.parse::<f64>() {
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
    }
    total
}

/// The `q` quantile (0..1) of histogram `name` (`_bucket` series, summed
/// over the series matching `labels`), as Prometheus' `histogram_quantile`
/// estimates it: linear within the bucket it falls in. `None` without
/// observations.
pub fn quantile(text: &str, name: &str, labels: &[(&str, &str)], q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut bounds: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&bucket)) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        if bounds.iter().any(|(b, _)| *b == le) {
            continue;
        }
        let mut with_le = labels.to_vec();
        let le_text = line.split("le=\"").nth(1)?.split('"').next()?;
        with_le.push(("le", le_text));
        bounds.push((le, sample(text, &bucket, &with_le)?));
    }
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in bounds {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below) / (count - below).max(f64::MIN_POSITIVE);
            return Some(lower + (le - lower) * within);
        }
        (lower, below) = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE ack_seconds histogram
ack_seconds_bucket{region=\"a\",le=\"0.001\",class=\"gift\"} 1
ack_seconds_bucket{region=\"a\",le=\"0.002\",class=\"gift\"} 3
ack_seconds_bucket{region=\"a\",le=\"+Inf\",class=\"gift\"} 4
ack_seconds_bucket{region=\"b\",le=\"0.001\",class=\"gift\"} 1
ack_seconds_bucket{region=\"b\",le=\"0.002\",class=\"gift\"} 1
ack_seconds_bucket{region=\"b\",le=\"+Inf\",class=\"gift\"} 2
gifts_total{window=\"pk\"} 5
";

    #[test]
    fn samples_sum_over_other_labels_and_quantiles_interpolate() {
        assert_eq!(sample(TEXT, "gifts_total", &[("window", "pk")]), Some(5.0));
        assert_eq!(sample(TEXT, "gifts_total", &[("window", "none")]), None);
        let gift = [("class", "gift")];
        assert_eq!(
            sample(TEXT, "ack_seconds_bucket", &[("le", "+Inf")]),
            Some(6.0)
        );
        // 6 observations: 2 ≤ 1 ms, 4 ≤ 2 ms, 6 in all. The median (rank 3)
        // is halfway through the 1–2 ms bucket.
        let p50 = quantile(TEXT, "ack_seconds", &gift, 0.5).expect("p50");
        assert!((p50 - 0.0015).abs() < 1e-9, "{p50}");
        // The top falls in +Inf: the last finite bound, as Prometheus says.
        assert_eq!(quantile(TEXT, "ack_seconds", &gift, 0.99), Some(0.002));
    }
}
