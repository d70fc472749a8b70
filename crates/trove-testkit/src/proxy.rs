//! A fault-injecting TCP proxy for the peer (Raft) links, owned by the harness; no root
//! and no kernel features needed.
//!
//! Node `j` advertises a proxy address as its peer address; the proxy forwards to the
//! node's real peer port. Every node binds its outgoing peer connections to its own
//! loopback source IP ([`source_ip`]: 127.0.0.(10+id); all of 127/8 is loopback on
//! Linux), so the proxy of `j` knows that a connection from 127.0.0.(10+i) is the link
//! i→j. Rules apply to *directed byte flows*: a rule on (i, j) affects the bytes i sends
//! to j, both in connections i opened to j (requests) and in connections j opened to i
//! (responses), so one-way loss is real one-way loss.
//!
//! - blackhole: bytes on the flow are held (not delivered, not dropped: TCP cannot lose
//!   bytes mid-stream) until the rule is lifted, like packets lost until a partition
//!   heals; senders stall on flow control and time out;
//! - delay and jitter: each read chunk is delivered `delay + U(0, jitter)` after it was
//!   read, in order (latency, not bandwidth limiting);
//! - reset: closes the current connections of a link; the nodes reconnect.
//!
//! Memory is bounded: each direction of each connection holds at most
//! [`PUMP_QUEUE_CHUNKS`] chunks of [`CHUNK_BYTES`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, TestkitError};

/// Bytes read from a socket at once.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued per direction of a connection (waiting for their delivery time).
pub const PUMP_QUEUE_CHUNKS: usize = 8;
/// How long the proxy waits to connect to a node's real peer port.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Blackholed flows re-check their rule at least this often.
const BLACKHOLE_RECHECK: Duration = Duration::from_millis(250);
/// Loopback source IPs are 127.0.0.(BASE + node id).
const SOURCE_IP_BASE: u64 = 10;

/// The loopback IP node `id` binds its outgoing peer connections to.
pub fn source_ip(id: u64) -> Result<IpAddr> {
    if id == 0 || id + SOURCE_IP_BASE > 254 {
        return Err(TestkitError::Config(format!(
            "node id {id} has no loopback source IP (ids 1..={} only)",
            254 - SOURCE_IP_BASE
        )));
    }
    Ok(IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        (id + SOURCE_IP_BASE) as u8,
    )))
}

/// The node whose source IP `ip` is, if any.
pub fn node_of(ip: IpAddr) -> Option<u64> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let last = o[3] as u64;
            (o[0] == 127 && o[1] == 0 && o[2] == 0 && last > SOURCE_IP_BASE)
                .then(|| last - SOURCE_IP_BASE)
        }
        IpAddr::V6(_) => None,
    }
}

/// Faults on one directed flow of bytes (from one node to another).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkRule {
    /// Hold every byte until the rule changes.
    pub blackhole: bool,
    /// Added latency.
    pub delay_ms: u32,
    /// Extra random latency, uniform in `[0, jitter_ms]`.
    pub jitter_ms: u32,
}

struct Conn {
    from: Option<u64>,
    to: u64,
    cancel: CancellationToken,
}

struct Inner {
    rules: RwLock<HashMap<(u64, u64), LinkRule>>,
    changed: watch::Sender<u64>,
    conns: Mutex<HashMap<u64, Conn>>,
    listeners: Mutex<HashMap<u64, CancellationToken>>,
    next_conn: AtomicU64,
    accepted: AtomicU64,
    resets: AtomicU64,
    seed: u64,
    stop: CancellationToken,
}

/// The proxies of a cluster (one listener per node) and their rules. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

/// Counters of the proxy's activity.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProxyStats {
    pub connections: u64,
    pub resets: u64,
}

impl Proxy {
    /// A proxy with no listeners; `seed` seeds the jitter.
    pub fn new(seed: u64) -> Proxy {
        let (changed, _) = watch::channel(0);
        Proxy {
            inner: Arc::new(Inner {
                rules: RwLock::new(HashMap::new()),
                changed,
                conns: Mutex::new(HashMap::new()),
                listeners: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                accepted: AtomicU64::new(0),
                resets: AtomicU64::new(0),
                seed,
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Starts the proxy of node `to` on a fresh loopback port, forwarding to `upstream`
    /// (the node's real peer address). Returns the address to advertise.
    pub async fn add_node(&self, to: u64, upstream: SocketAddr) -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| TestkitError::io(format!("bind the proxy of node {to}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestkitError::io("proxy address", e))?;
        let stop = self.inner.stop.child_token();
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to, stop.clone());
        tokio::spawn(accept_loop(
            self.inner.clone(),
            listener,
            to,
            upstream,
            stop,
        ));
        Ok(addr)
    }

    /// Stops the proxy of node `to` (a removed node) and closes its connections.
    pub fn remove_node(&self, to: u64) {
        if let Some(t) = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&to)
        {
            t.cancel();
        }
        self.close_where(|c| c.to == to || c.from == Some(to));
    }

    /// Sets the rule of the flow `from` → `to`.
    pub fn set_rule(&self, from: u64, to: u64, rule: LinkRule) {
        {
            let mut rules = self.inner.rules.write().unwrap_or_else(|p| p.into_inner());
            if rule == LinkRule::default() {
                rules.remove(&(from, to));
            } else {
                rules.insert((from, to), rule);
            }
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// The rule of the flow `from` → `to`.
    pub fn rule(&self, from: u64, to: u64) -> LinkRule {
        self.inner.rule(Some(from), Some(to))
    }

    /// Changes the rules of both flows between `node` and each of `others`.
    pub fn update_links(&self, node: u64, others: &[u64], f: impl Fn(&mut LinkRule)) {
        for &o in others.iter().filter(|&&o| o != node) {
            for (a, b) in [(node, o), (o, node)] {
                let mut r = self.rule(a, b);
                f(&mut r);
                self.set_rule(a, b, r);
            }
        }
    }

    /// Removes every rule.
    pub fn heal_all(&self) {
        self.inner
            .rules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Closes every current connection from or to `node`; returns how many.
    pub fn reset_node(&self, node: u64) -> usize {
        let n = self.close_where(|c| c.to == node || c.from == Some(node));
        self.inner.resets.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Activity counters.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.inner.accepted.load(Ordering::Relaxed),
            resets: self.inner.resets.load(Ordering::Relaxed),
        }
    }

    /// Stops every listener and closes every connection.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    fn close_where(&self, pred: impl Fn(&Conn) -> bool) -> usize {
        let conns = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for c in conns.values().filter(|c| pred(c)) {
            c.cancel.cancel();
            n += 1;
        }
        n
    }
}

impl Inner {
    fn rule(&self, from: Option<u64>, to: Option<u64>) -> LinkRule {
        match (from, to) {
            (Some(f), Some(t)) => self
                .rules
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(f, t))
                .copied()
                .unwrap_or_default(),
            _ => LinkRule::default(),
        }
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    to: u64,
    upstream: SocketAddr,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((inbound, peer)) => {
                let from = node_of(peer.ip());
                tokio::spawn(serve(
                    inner.clone(),
                    inbound,
                    from,
                    to,
                    upstream,
                    stop.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, node = to, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve(
    inner: Arc<Inner>,
    inbound: TcpStream,
    from: Option<u64>,
    to: u64,
    upstream: SocketAddr,
    stop: CancellationToken,
) {
    // A node that is down refuses: the caller sees its connection closed at once.
    let up =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            _ => return,
        };
    let _ = inbound.set_nodelay(true);
    let _ = up.set_nodelay(true);
    inner.accepted.fetch_add(1, Ordering::Relaxed);
    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let cancel = stop.child_token();
    inner
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id,
            Conn {
                from,
                to,
                cancel: cancel.clone(),
            },
        );
    let (ir, iw) = inbound.into_split();
    let (ur, uw) = up.into_split();
    let seed = inner.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    tokio::join!(
        pump(&inner, ir, uw, (from, Some(to)), seed, &cancel),
        pump(&inner, ur, iw, (Some(to), from), seed ^ 1, &cancel),
    );
    inner
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// Copies one direction of a connection, applying the rule of the flow `src → dst`.
/// When either direction ends, the whole connection is closed.
async fn pump(
    inner: &Inner,
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    (src, dst): (Option<u64>, Option<u64>),
    seed: u64,
    cancel: &CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(PUMP_QUEUE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = tokio::select! {
                r = r.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = cancel.cancelled() => break,
            };
            let item = (Instant::now(), Bytes::copy_from_slice(&buf[..n]));
            tokio::select! {
                r = tx.send(item) => if r.is_err() { break },
                _ = cancel.cancelled() => break,
            }
        }
    };
    let writer = async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut changed = inner.changed.subscribe();
        let mut last_due = Instant::now();
        'chunks: loop {
            let (read_at, data) = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = cancel.cancelled() => break,
            };
            loop {
                let rule = inner.rule(src, dst);
                if rule.blackhole {
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = tokio::time::sleep(BLACKHOLE_RECHECK) => {}
                        _ = cancel.cancelled() => break 'chunks,
                    }
                    continue;
                }
                let extra = if rule.jitter_ms > 0 {
                    rng.random_range(0..=rule.jitter_ms)
                } else {
                    0
                };
                let delay = Duration::from_millis(u64::from(rule.delay_ms + extra));
                let due = (read_at + delay).max(last_due);
                if due > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = cancel.cancelled() => break 'chunks,
                    }
                    // A partition may have started while the chunk was in flight.
                    if inner.rule(src, dst).blackhole {
                        continue;
                    }
                }
                last_due = due;
                break;
            }
            if w.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_map_back_to_nodes() {
        for id in [1, 2, 9, 200] {
            let ip = source_ip(id).unwrap();
            assert_eq!(node_of(ip), Some(id));
        }
        assert!(source_ip(0).is_err());
        assert!(source_ip(245).is_err());
        assert_eq!(node_of("127.0.0.1".parse().unwrap()), None);
        assert_eq!(node_of("10.0.0.12".parse().unwrap()), None);
    }

    /// An echo server, and a client bound to node `from`'s source IP through the proxy
    /// of node 2.
    async fn setup() -> (Proxy, SocketAddr) {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = echo.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::new(7);
        let addr = proxy.add_node(2, echo_addr).await.unwrap();
        (proxy, addr)
    }

    async fn connect_as(from: u64, addr: SocketAddr) -> TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source_ip(from).unwrap(), 0))
            .unwrap();
        sock.connect(addr).await.unwrap()
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> bool {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(within, s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn forwards_blackholes_one_way_delays_and_resets() {
        let (proxy, addr) = setup().await;
        let mut s = connect_as(1, addr).await;
        assert!(roundtrip(&mut s, Duration::from_secs(5)).await);

        // One-way: the responses 2 -> 1 are held; the request still arrives.
        proxy.set_rule(
            2,
            1,
            LinkRule {
                blackhole: true,
                ..Default::default()
            },
        );
        assert!(!roundtrip(&mut s, Duration::from_millis(300)).await);
        // Healing delivers what was held (TCP semantics: late, not lost).
        proxy.heal_all();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");

        // Another node's link is unaffected by rules on 1 <-> 2.
        proxy.update_links(1, &[2], |r| r.blackhole = true);
        let mut other = connect_as(3, addr).await;
        assert!(roundtrip(&mut other, Duration::from_secs(5)).await);
        assert!(!roundtrip(&mut s, Duration::from_millis(300)).await);
        proxy.heal_all();
        s.read_exact(&mut buf).await.unwrap();

        // Delay is latency.
        proxy.set_rule(
            1,
            2,
            LinkRule {
                delay_ms: 200,
                ..Default::default()
            },
        );
        let started = std::time::Instant::now();
        assert!(roundtrip(&mut s, Duration::from_secs(5)).await);
        assert!(started.elapsed() >= Duration::from_millis(200));
        proxy.heal_all();

        // Reset closes the connection.
        assert_eq!(proxy.reset_node(1), 1);
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
        assert_eq!(proxy.stats().resets, 1);
        proxy.shutdown();
    }
}
