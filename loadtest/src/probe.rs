//! What the servers say about themselves: counters read from ioscale nodes' Prometheus
//! `/metrics` (plain text, no auth), and Redis's `INFO stats` spoken over RESP directly (a
//! dozen lines, where a Redis client crate would be a heavy dependency for one command).

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Bound on one scrape or one Redis exchange.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest Redis reply accepted (an `INFO` section is a few KB).
const MAX_BULK: usize = 16 << 20;

/// The counters of one ioscale node that the `rooms` scenario reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCounters {
    /// `ioscale_adapter_messages_in_total{kind="broadcast"}`.
    pub broadcasts_in: f64,
    /// `ioscale_adapter_broadcasts_untargeted_total`, when the build has it.
    pub untargeted: Option<f64>,
    /// `ioscale_adapter_room_channels`, when the build has it.
    pub room_channels: Option<f64>,
}

/// The sum of the samples of `name` (with label `k="v"` when given) in Prometheus text;
/// `None` when there is no such sample.
pub fn sample_sum(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            // `name` must be the whole name, not a prefix of a longer one.
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if let Some(w) = &want
            && !labels.split(',').any(|l| l.trim() == w)
        {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// The counters of a node's `/metrics` text.
///
/// # Errors
/// When the text has no `ioscale_adapter_` metric at all (not an ioscale node's `/metrics`).
pub fn node_counters(text: &str) -> Result<NodeCounters> {
    ensure!(
        text.lines().any(|l| l.starts_with("ioscale_adapter_")),
        "no ioscale_adapter_ metric: not an ioscale node's /metrics"
    );
    Ok(NodeCounters {
        // A counter vector shows a label set only once it was used: absent means none yet.
        broadcasts_in: sample_sum(
            text,
            "ioscale_adapter_messages_in_total",
            Some(("kind", "broadcast")),
        )
        .unwrap_or(0.0),
        untargeted: sample_sum(text, "ioscale_adapter_broadcasts_untargeted_total", None),
        room_channels: sample_sum(text, "ioscale_adapter_room_channels", None),
    })
}

/// Reads the counters of the node whose `/metrics` is at `url`.
///
/// # Errors
/// Unreachable, not a success, or not an ioscale node's metrics.
pub async fn scrape_node(http: &reqwest::Client, url: &str) -> Result<NodeCounters> {
    let text = http
        .get(url)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    node_counters(&text).with_context(|| url.to_owned())
}

/// Where a `redis://[user:password@]host[:port][/db]` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// `host:port`.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Parses a `redis://` URL (no TLS; the password as written, not percent-decoded).
///
/// # Errors
/// Another scheme, or no host.
pub fn parse_redis_url(url: &str) -> Result<RedisAddr> {
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("{url}: only redis:// URLs are supported"))?;
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    ensure!(!host.is_empty(), "{url}: no host");
    // `host:port` or `[v6]:port`; a bare `[v6]` or host gets the default port.
    let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.ends_with(']'))
    });
    let addr = if has_port {
        host.to_owned()
    } else {
        format!("{host}:6379")
    };
    let (user, password) = match auth.and_then(|a| a.split_once(':')) {
        Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
        None => (None, None),
    };
    Ok(RedisAddr {
        addr,
        user,
        password,
    })
}

/// A RESP reply: simple string, bulk string (nil as `None`) or integer, as text.
async fn command(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<Option<String>> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    (&mut *conn).take(64 * 1024).read_line(&mut line).await?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, body) = line.split_at_checked(1).unwrap_or(("", ""));
    match kind {
        "+" | ":" => Ok(Some(body.to_owned())),
        "-" => bail!("redis answered: {body}"),
        "$" => {
            let len: i64 = body
                .parse()
                .with_context(|| format!("bad bulk length {body:?}"))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(None);
            };
            ensure!(len <= MAX_BULK, "redis reply of {len} bytes is too long");
            let mut buf = vec![0; len + 2];
            conn.read_exact(&mut buf).await?;
            buf.truncate(len);
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
        _ => bail!("unexpected redis reply {line:?}"),
    }
}

/// `INFO <section>` of the Redis at `url`.
///
/// # Errors
/// Unreachable, refused authentication, or a reply that is not RESP.
pub async fn redis_info(url: &str, section: &str) -> Result<String> {
    let a = parse_redis_url(url)?;
    let exchange = async {
        let stream = TcpStream::connect(&a.addr).await?;
        let mut conn = BufReader::new(stream);
        if let Some(pw) = &a.password {
            match &a.user {
                Some(u) => command(&mut conn, &["AUTH", u, pw]).await?,
                None => command(&mut conn, &["AUTH", pw]).await?,
            };
        }
        command(&mut conn, &["INFO", section])
            .await?
            .context("INFO answered nil")
    };
    let r = match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("no answer within {PROBE_TIMEOUT:?}")),
    };
    r.with_context(|| format!("INFO {section} on {}", a.addr))
}

/// The integer field `name` of an `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// `total_net_output_bytes` of the Redis at `url`: everything it has written to its clients.
///
/// # Errors
/// As for [`redis_info`], or no such field.
pub async fn redis_output_bytes(url: &str) -> Result<u64> {
    let info = redis_info(url, "stats").await?;
    info_field(&info, "total_net_output_bytes")
        .with_context(|| format!("{url}: INFO stats has no total_net_output_bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP ioscale_adapter_messages_in_total Messages received from other nodes, by kind
# TYPE ioscale_adapter_messages_in_total counter
ioscale_adapter_messages_in_total{kind=\"broadcast\"} 120
ioscale_adapter_messages_in_total{kind=\"heartbeat\"} 7
ioscale_adapter_messages_in_total_extra{kind=\"broadcast\"} 1000
# TYPE ioscale_adapter_room_channels gauge
ioscale_adapter_room_channels 42
";

    #[test]
    fn prometheus_samples_are_summed_by_name_and_label() {
        let c = node_counters(METRICS).unwrap();
        assert_eq!(c.broadcasts_in, 120.0);
        assert_eq!(c.room_channels, Some(42.0));
        assert_eq!(c.untargeted, None, "absent on this build");
        let two =
            "a_total{kind=\"broadcast\",x=\"1\"} 2\na_total{x=\"2\", kind=\"broadcast\"} 3e0\n";
        assert_eq!(
            sample_sum(two, "a_total", Some(("kind", "broadcast"))),
            Some(5.0)
        );
        assert_eq!(sample_sum(two, "a_total", Some(("kind", "ack"))), None);
        assert!(node_counters("# nothing\nprocess_cpu 1\n").is_err());
        let fresh = "ioscale_adapter_nodes_alive 1\n";
        assert_eq!(node_counters(fresh).unwrap().broadcasts_in, 0.0);
    }

    #[test]
    fn redis_urls_and_info_fields() {
        let a = parse_redis_url("redis://127.0.0.1:7001").unwrap();
        assert_eq!((a.addr.as_str(), a.password), ("127.0.0.1:7001", None));
        let a = parse_redis_url("redis://:s3cret@redis/0").unwrap();
        assert_eq!(a.addr, "redis:6379");
        assert_eq!((a.user, a.password.as_deref()), (None, Some("s3cret")));
        let a = parse_redis_url("redis://bob:pw@[::1]:6380").unwrap();
        assert_eq!(
            (a.addr.as_str(), a.user.as_deref()),
            ("[::1]:6380", Some("bob"))
        );
        assert_eq!(parse_redis_url("redis://[::1]").unwrap().addr, "[::1]:6379");
        assert!(parse_redis_url("rediss://x").is_err());
        assert!(parse_redis_url("redis://").is_err());
        let info = "# Stats\r\ntotal_net_input_bytes:10\r\ntotal_net_output_bytes:12345\r\n";
        assert_eq!(info_field(info, "total_net_output_bytes"), Some(12345));
        assert_eq!(info_field(info, "total_net"), None);
    }

    #[tokio::test]
    async fn resp_bulk_replies_are_read() -> Result<()> {
        // A fake Redis: answers one INFO with a bulk string.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("redis://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await?;
            let body = "# Stats\r\ntotal_net_output_bytes:777\r\n";
            s.write_all(format!("${}\r\n{body}\r\n", body.len()).as_bytes())
                .await?;
            anyhow::Ok(())
        });
        let bytes = tokio::time::timeout(PROBE_TIMEOUT, redis_output_bytes(&url)).await??;
        assert_eq!(bytes, 777);
        tokio::time::timeout(PROBE_TIMEOUT, server).await???;
        Ok(())
    }
}
