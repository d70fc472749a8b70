//! What a node tells its operators: the Prometheus recorder, the metrics derived from
//! Raft's state (updated by [`observe`]), per-request gRPC metrics and request spans
//! ([`GrpcLayer`]), proposal counters, and the ring of recent warnings and errors that the
//! status page shows. Metric names live in `trove_types::metrics`.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use openraft::async_runtime::watch::WatchReceiver;
use serde::Serialize;
use tracing::Instrument;
use trove_storage::state::StateCounts;
use trove_types::limits::{ADMIN_STORAGE_REFRESH_MS, RECENT_ERRORS_KEPT};
use trove_types::metrics as names;

use crate::node::{NodeRef, now_ms};

/// The process-wide Prometheus recorder's handle (installed on first use). Nodes run
/// in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            // Per-peer gauges of a node that is no longer leader go away instead of
            // showing a frozen lag; live gauges are set every tick.
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(30)));
        let builder = match builder.set_buckets(names::SECONDS_BUCKETS) {
            Ok(b) => b,
            Err(e) => unreachable!("static histogram buckets are valid: {e}"),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            for (name, kind, help) in names::ALL {
                match kind {
                    names::Kind::Counter => metrics::describe_counter!(*name, *help),
                    names::Kind::Gauge => metrics::describe_gauge!(*name, *help),
                    names::Kind::Histogram => metrics::describe_histogram!(*name, *help),
                }
            }
        }
        handle
    })
}

/// A proposal in flight: counted in `proposals_pending` until finished; one dropped
/// unfinished (the submit failed) counts as failed.
pub struct PendingProposal {
    finished: bool,
}

impl PendingProposal {
    /// Counts a new proposal as pending.
    pub fn start() -> PendingProposal {
        metrics::gauge!(names::PROPOSALS_PENDING).increment(1.0);
        PendingProposal { finished: false }
    }

    /// The proposal's outcome is known.
    pub fn finish(mut self, ok: bool) {
        self.finished = true;
        metrics::gauge!(names::PROPOSALS_PENDING).decrement(1.0);
        if !ok {
            metrics::counter!(names::PROPOSALS_FAILED).increment(1);
        }
    }
}

impl Drop for PendingProposal {
    fn drop(&mut self) {
        if !self.finished {
            metrics::gauge!(names::PROPOSALS_PENDING).decrement(1.0);
            metrics::counter!(names::PROPOSALS_FAILED).increment(1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recent warnings and errors.

/// One warning or error log event, as the status page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedError {
    pub time_unix_ms: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

fn recent() -> &'static Mutex<VecDeque<LoggedError>> {
    static RECENT: OnceLock<Mutex<VecDeque<LoggedError>>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(VecDeque::with_capacity(RECENT_ERRORS_KEPT)))
}

/// The most recent warnings and errors of this process, newest first.
pub fn recent_errors() -> Vec<LoggedError> {
    recent()
        .lock()
        .map(|q| q.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// A `tracing` layer that keeps the last warnings and errors for the status page. The
/// binary adds it to its subscriber.
pub struct RecentErrorsLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentErrorsLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut text = FieldText(String::new());
        event.record(&mut text);
        let entry = LoggedError {
            time_unix_ms: now_ms(),
            level: level.to_string(),
            target: event.metadata().target().to_string(),
            message: text.0,
        };
        if let Ok(mut q) = recent().lock() {
            if q.len() == RECENT_ERRORS_KEPT {
                q.pop_front();
            }
            q.push_back(entry);
        }
    }
}

/// `message` first, then `field=value` pairs.
struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raft-derived metrics and what the status page needs beyond Raft's own metrics.

/// What [`observe`] has seen, for the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// Leader changes seen since this node started (the first leader counts).
    pub leader_changes: u64,
    /// When the last one was seen.
    pub last_leader_change_unix_ms: Option<u64>,
    /// This node's storage, refreshed every `ADMIN_STORAGE_REFRESH_MS`.
    pub storage: Option<StorageStats>,
}

/// This node's disk use and state sizes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StorageStats {
    pub data_dir: String,
    /// Bytes of the files under the data directory (hard links counted once).
    pub data_dir_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub records: u64,
    pub buckets: u64,
    pub objects: u64,
    pub uploads_in_progress: u64,
    pub chunks: u64,
    pub refreshed_unix_ms: u64,
}

/// Shared between [`observe`] and the admin port.
pub type ObservedRef = Arc<Mutex<Observed>>;

/// Keeps the Raft-derived gauges current (on every Raft change and every 500 ms) and
/// refreshes the storage figures, until `stop`.
pub async fn observe(
    node: NodeRef,
    observed: ObservedRef,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let handle = prometheus();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut raft_changes = node.raft.metrics();
    let mut last_leader: Option<u64> = None;
    let mut last_storage: Option<Instant> = None;
    let mut last_upkeep = Instant::now();
    // Chunk-health counters are exported from the start (as 0), so that an alert on
    // their increase has a series to watch before the first problem.
    for name in [
        names::CHUNKS_REPAIRED,
        names::CHUNKS_UNREPAIRABLE,
        names::SCRUB_CORRUPT_FOUND,
        names::SCRUB_MISSING_FOUND,
        names::SCRUB_CHUNKS_CHECKED,
        names::SCRUB_BYTES_CHECKED,
        names::SCRUB_PASSES,
    ] {
        metrics::counter!(name).increment(0);
    }
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = raft_changes.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let m = node.metrics();
        let committed = m.local_committed.map(|l| l.index).unwrap_or(0);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let is_leader = m.current_leader == Some(node.id);
        metrics::gauge!(names::HAS_LEADER).set(bool_f(m.current_leader.is_some()));
        metrics::gauge!(names::IS_LEADER).set(bool_f(is_leader));
        metrics::gauge!(names::TERM).set(m.current_term as f64);
        metrics::gauge!(names::PROPOSALS_COMMITTED).set(committed as f64);
        metrics::gauge!(names::PROPOSALS_APPLIED).set(applied as f64);
        metrics::gauge!(names::APPLY_LAG).set(committed.saturating_sub(applied) as f64);
        metrics::gauge!(names::READY).set(bool_f(crate::admin::readiness(&node).is_ok()));
        let scrub = node.chunk_health.stats();
        metrics::gauge!(names::SCRUB_PASS_PROGRESS).set(scrub.progress());
        if scrub.last_pass_finished_unix > 0 {
            metrics::gauge!(names::SCRUB_LAST_PASS_FINISHED)
                .set(scrub.last_pass_finished_unix as f64);
        }
        if let (true, Some(repl)) = (is_leader, m.replication.as_ref()) {
            for (peer, matched) in repl.iter().filter(|(p, _)| **p != node.id) {
                let lag = committed.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                metrics::gauge!(names::REPLICATION_LAG, "peer" => peer.to_string()).set(lag as f64);
            }
        }
        if let Some(leader) = m.current_leader
            && last_leader != Some(leader)
        {
            last_leader = Some(leader);
            metrics::counter!(names::LEADER_CHANGES).increment(1);
            if let Ok(mut o) = observed.lock() {
                o.leader_changes += 1;
                o.last_leader_change_unix_ms = Some(now_ms());
            }
        }
        if last_storage
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(ADMIN_STORAGE_REFRESH_MS))
        {
            last_storage = Some(Instant::now());
            let n = node.clone();
            match tokio::task::spawn_blocking(move || storage_stats(&n)).await {
                Ok(Ok(s)) => {
                    metrics::gauge!(names::DATA_DIR_BYTES).set(s.data_dir_bytes as f64);
                    metrics::gauge!(names::DISK_FREE_BYTES).set(s.disk_free_bytes as f64);
                    metrics::gauge!(names::RECORDS).set(s.records as f64);
                    metrics::gauge!(names::OBJECTS).set(s.objects as f64);
                    metrics::gauge!(names::BUCKETS).set(s.buckets as f64);
                    metrics::gauge!(names::CHUNKS).set(s.chunks as f64);
                    if let Ok(mut o) = observed.lock() {
                        o.storage = Some(s);
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "storage figures unavailable"),
                Err(e) => tracing::debug!(error = %e, "storage walk failed"),
            }
        }
        // Without the exporter's own HTTP listener, its housekeeping (histogram
        // draining, idle gauges) runs here.
        if last_upkeep.elapsed() >= Duration::from_secs(5) {
            last_upkeep = Instant::now();
            handle.run_upkeep();
        }
    }
}

fn bool_f(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn storage_stats(node: &NodeRef) -> Result<StorageStats, String> {
    let dir = &node.config.data_dir;
    let counts: StateCounts = node.store().counts().map_err(|e| e.to_string())?;
    let vfs = nix::sys::statvfs::statvfs(dir).map_err(|e| e.to_string())?;
    let frsize = vfs.fragment_size() as u64;
    Ok(StorageStats {
        data_dir: dir.display().to_string(),
        data_dir_bytes: dir_bytes(dir),
        disk_free_bytes: (vfs.blocks_available() as u64).saturating_mul(frsize),
        disk_total_bytes: (vfs.blocks() as u64).saturating_mul(frsize),
        records: counts.records,
        buckets: counts.buckets,
        objects: counts.objects,
        uploads_in_progress: counts.uploads,
        chunks: counts.chunks,
        refreshed_unix_ms: now_ms(),
    })
}

/// Bytes of the regular files under `dir`, each inode once (snapshots hard-link chunks).
/// Files vanishing during the walk are skipped.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// gRPC requests: metrics by method and code, and a span per request.

/// Header a client may set to name its request in the server's logs; one is made up
/// otherwise. It is echoed in the response headers.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps the client port's services: a `request` span (node id, request id, method)
/// around each call, and `grpc_server_handled_total` / `grpc_server_handling_seconds`
/// when the call ends (streams: when the last message and the status are sent).
#[derive(Clone)]
pub struct GrpcLayer {
    node_id: u64,
}

impl GrpcLayer {
    /// A layer for node `node_id`. Installs the recorder first: the per-method metric
    /// handles are made once, and one made before the recorder would record nothing.
    pub fn new(node_id: u64) -> Self {
        prometheus();
        GrpcLayer { node_id }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            node_id: self.node_id,
        }
    }
}

/// The service [`GrpcLayer`] makes.
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    node_id: u64,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = http::Response<Metered<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = MethodMetrics::of(req.uri().path());
        let request_id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .map_or_else(made_up_request_id, str::to_string);
        let span = tracing::info_span!(
            "request",
            node = self.node_id,
            request_id = %request_id,
            method = %method.path,
        );
        let started = Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let resp = fut.await?;
                let (mut parts, body) = resp.into_parts();
                if let Some(v) = request_id_value(&request_id) {
                    parts.headers.insert(REQUEST_ID_HEADER, v);
                }
                let mut call = Some(CallEnd {
                    method,
                    started,
                    span: tracing::Span::current(),
                });
                // A trailers-only response (most errors) has its status in the headers.
                if let Some(code) = parts.headers.get("grpc-status")
                    && let Some(c) = call.take()
                {
                    c.record(code.as_bytes());
                }
                Ok(http::Response::from_parts(
                    parts,
                    Metered {
                        inner: Box::pin(body),
                        call,
                    },
                ))
            }
            .instrument(span),
        )
    }
}

/// Most distinct request paths whose metric handles are kept (a client can send any
/// path; the ones past this are registered on each call instead, as before the cache).
const METHOD_METRICS_KEPT: usize = 256;

/// One gRPC method's labels and metric handles. Registering a labelled metric hashes and
/// looks up its labels (and allocates them) on every call, a few percent of a node's CPU
/// under small requests; the handles are made once per method instead. A handle stays
/// the recorder's own: only gauges are dropped when idle (see [`prometheus`]), never
/// counters or histograms.
struct MethodMetrics {
    /// `service/method`, for the request span.
    path: String,
    service: String,
    method: String,
    seconds: metrics::Histogram,
    handled_ok: metrics::Counter,
}

impl MethodMetrics {
    /// The method of a request path (`/service/method`), its handles made on first use.
    fn of(path: &str) -> Arc<MethodMetrics> {
        type Cache = std::sync::RwLock<std::collections::HashMap<String, Arc<MethodMetrics>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let path = path.trim_start_matches('/');
        if let Some(m) = cache.read().unwrap_or_else(|p| p.into_inner()).get(path) {
            return Arc::clone(m);
        }
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let m = Arc::new(MethodMetrics {
            path: path.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            seconds: metrics::histogram!(names::GRPC_HANDLING_SECONDS,
                "grpc_service" => service.to_string(),
                "grpc_method" => method.to_string()),
            handled_ok: metrics::counter!(names::GRPC_HANDLED,
                "grpc_service" => service.to_string(),
                "grpc_method" => method.to_string(),
                "grpc_code" => "OK"),
        });
        let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() < METHOD_METRICS_KEPT {
            cache.insert(path.to_string(), Arc::clone(&m));
        }
        m
    }
}

/// A request id for a request that came without one: 16 hex digits, unique within the
/// process (a counter) and unlikely to repeat across processes (a random start). No
/// system call per request, unlike a random UUID.
fn made_up_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU64::new(rand::random()));
    format!("{:016x}", next.fetch_add(1, Ordering::Relaxed))
}

/// The `x-request-id` response header for `id`, marked never-indexed: ids differ from
/// one request to the next, so entering each in the connection's HPACK table (as HTTP/2
/// does with header values by default) only evicts useful entries, and every later
/// response then compares its id against all the ids still in the table.
fn request_id_value(id: &str) -> Option<http::HeaderValue> {
    let mut v = http::HeaderValue::from_str(id).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// A call whose end is still to be recorded.
struct CallEnd {
    method: Arc<MethodMetrics>,
    started: Instant,
    /// The request's span, for the closing log line.
    span: tracing::Span,
}

impl CallEnd {
    fn record(self, grpc_status: &[u8]) {
        let code = code_name(tonic::Code::from_bytes(grpc_status));
        let elapsed = self.started.elapsed();
        self.span.in_scope(|| {
            tracing::debug!(
                grpc_code = code,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        });
        let m = &self.method;
        if code == "OK" {
            m.handled_ok.increment(1);
        } else {
            metrics::counter!(names::GRPC_HANDLED,
                "grpc_service" => m.service.clone(),
                "grpc_method" => m.method.clone(),
                "grpc_code" => code)
            .increment(1);
        }
        m.seconds.record(elapsed.as_secs_f64());
    }
}

/// gRPC's canonical code names, as grpc-go's Prometheus middleware prints them.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A response body that records its call's end when the trailers (with `grpc-status`)
/// go out; dropped before that, the call counts as cancelled.
pub struct Metered<B> {
    inner: Pin<Box<B>>,
    call: Option<CallEnd>,
}

impl<B: http_body::Body> http_body::Body for Metered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = trailers.get("grpc-status")
            && let Some(c) = self.call.take()
        {
            c.record(code.as_bytes());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        if let Some(c) = self.call.take() {
            c.record(b"1"); // CANCELLED: the client went away before the status.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_request_ids_differ_and_are_never_indexed() {
        let a = made_up_request_id();
        let b = made_up_request_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        let v = request_id_value(&a).expect("hex digits are a valid header value");
        assert_eq!(v.to_str().unwrap(), a);
        assert!(v.is_sensitive(), "the id must not enter the HPACK table");
        assert!(request_id_value("bad\nid").is_none());
    }

    fn series(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn method_metrics_are_made_once_and_count_every_call() {
        let _layer = GrpcLayer::new(1); // installs the recorder first, as a server does
        let a = MethodMetrics::of("/test.Svc/Call");
        assert!(Arc::ptr_eq(&a, &MethodMetrics::of("/test.Svc/Call")));
        assert_eq!(
            (a.service.as_str(), a.method.as_str()),
            ("test.Svc", "Call")
        );
        assert_eq!(a.path, "test.Svc/Call");
        let end = |code: &[u8]| {
            CallEnd {
                method: MethodMetrics::of("/test.Svc/Call"),
                started: Instant::now(),
                span: tracing::Span::none(),
            }
            .record(code)
        };
        end(b"0");
        end(b"0");
        end(b"5");
        let text = prometheus().render();
        let handled = |code: &str| {
            series(
                &text,
                &format!(
                    "{}{{grpc_service=\"test.Svc\",grpc_method=\"Call\",grpc_code=\"{code}\"}}",
                    names::GRPC_HANDLED
                ),
            )
        };
        assert_eq!(handled("OK"), Some(2.0), "{text}");
        assert_eq!(handled("NotFound"), Some(1.0), "{text}");
        let count = format!(
            "{}_count{{grpc_service=\"test.Svc\",grpc_method=\"Call\"}}",
            names::GRPC_HANDLING_SECONDS
        );
        assert_eq!(series(&text, &count), Some(3.0), "{text}");
    }
}
