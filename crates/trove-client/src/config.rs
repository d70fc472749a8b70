//! Client configuration and endpoint address normalization.

use std::time::Duration;

use trove_types::TroveError;

/// Default per-attempt deadline of a unary request (and idle timeout of a stream).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed to establish a TCP/HTTP2 connection to one node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default total time spent retrying retryable errors of one logical request.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Interval of HTTP/2 keepalive pings; a dead node is noticed within interval + timeout.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long an HTTP/2 keepalive ping may stay unanswered before the connection is dropped.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most endpoints a client keeps: configured ones plus leaders learned from hints. Bounds
/// the set if a server sends nonsense hints.
pub(crate) const MAX_ENDPOINTS: usize = 64;

/// How a [`crate::Client`] connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Node client addresses, `host:port` or `http://host:port`. At least one.
    pub endpoints: Vec<String>,
    /// Deadline of each attempt of a unary request; for streams, the longest wait for
    /// the next message.
    pub request_timeout: Duration,
    /// Deadline for connecting to one node.
    pub connect_timeout: Duration,
    /// Total time spent retrying retryable errors of one logical request, counted from
    /// its start or, for an upload, from the last failed attempt that got data through
    /// (a long upload that meets a leader change is sent again in full).
    pub retry_budget: Duration,
    /// Identity of this client in request ids (1..=64 bytes); a random UUID by default.
    pub client_id: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry_budget: DEFAULT_RETRY_BUDGET,
            client_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl ClientConfig {
    /// A configuration with default timeouts for the given endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }
}

/// Normalizes an endpoint to `host:port` (the form servers use in leader hints), so that
/// `http://a:1`, `a:1` and `a:1/` all name the same node.
pub fn normalize_endpoint(raw: &str) -> Result<String, TroveError> {
    let s = raw.trim();
    let bad = |why: &str| {
        Err(TroveError::invalid(format!(
            "invalid endpoint {raw:?}: {why} (expected host:port or http://host:port)"
        )))
    };
    if s.starts_with("https://") {
        return bad("TLS is not supported yet");
    }
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.trim_end_matches('/');
    if s.is_empty() {
        return bad("empty");
    }
    if s.contains('/') || s.contains("://") || s.chars().any(char::is_whitespace) {
        return bad("unexpected characters");
    }
    // The port is whatever follows the last ':' (IPv6 hosts are bracketed).
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("missing port");
    };
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return bad("bad host");
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("bad port");
    }
    Ok(s.to_string())
}

/// Normalizes and deduplicates a list of endpoints, keeping their order.
pub(crate) fn normalize_endpoints(raw: &[String]) -> Result<Vec<String>, TroveError> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let e = normalize_endpoint(r)?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.is_empty() {
        return Err(TroveError::invalid("no endpoints given"));
    }
    if out.len() > MAX_ENDPOINTS {
        return Err(TroveError::invalid(format!(
            "{} endpoints given; at most {MAX_ENDPOINTS} are supported",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_endpoints() {
        let ok = [
            ("127.0.0.1:7001", "127.0.0.1:7001"),
            ("http://127.0.0.1:7001", "127.0.0.1:7001"),
            ("http://node-1.trove:7001/", "node-1.trove:7001"),
            ("  localhost:1  ", "localhost:1"),
            ("[::1]:7001", "[::1]:7001"),
            ("http://[::1]:7001", "[::1]:7001"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_endpoint(input).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            ":7001",
            "https://a:1",
            "ftp://a:1",
            "a:1/path",
            "::1:7001",
            "a b:1",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dedups_and_rejects_empty_lists() {
        let list = vec!["a:1".to_string(), "http://a:1".into(), "b:2".into()];
        assert_eq!(
            normalize_endpoints(&list),
            Ok(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert!(normalize_endpoints(&[]).is_err());
    }
}
