//! Prometheus metrics: the registry and every metric this node exports. The HTTP middleware
//! that records requests is `routes::middleware::track`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::PoolStatus;

/// Every metric this node exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route pattern and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by method and route pattern.
    pub http_latency: HistogramVec,
    /// Database pool connections by state (`max`, `open`, `idle`, `waiting`).
    pub db_pool: IntGaugeVec,
    /// WebSocket sessions connected now.
    pub ws_sessions: IntGauge,
    /// Chat rooms with at least one local session.
    pub ws_rooms: IntGauge,
    /// Client frames received, by `type`.
    pub ws_frames_in: IntCounterVec,
    /// Frames sent to clients, by `type`.
    pub ws_frames_out: IntCounterVec,
    /// Bytes of text frames queued for clients.
    pub ws_bytes_out: IntCounter,
    /// Sessions closed by the server, by reason (`slow_consumer`, `rate_limited`, `expired`, …).
    pub ws_disconnects: IntCounterVec,
    /// Bytes waiting in all sessions' outbound queues.
    pub ws_queue_bytes: IntGauge,
    /// Requests and sockets refused at the edge, by limit (`rest`, `ws_connect`,
    /// `ws_sessions_per_user`, `body_timeout`).
    pub edge_refusals: IntCounterVec,
    /// AI replies being generated now.
    pub ai_generations: IntGauge,
    /// AI replies ended, by outcome (`stop`, `length`, `cancelled`, `error`, `failed`).
    pub ai_generations_total: IntCounterVec,
    /// AI reply tokens streamed.
    pub ai_tokens: IntCounter,
    /// Time from a generation's start to its first token (prompt build plus the provider).
    pub ai_first_token: Histogram,
    /// Where a reply's start-up time goes, by stage: `admit` (membership and limits),
    /// `prompt_stored` (the user's message committed), `history` (the actor started and read the
    /// chat's history), `provider` (from the request to the provider to its first token).
    pub ai_start_seconds: HistogramVec,
    /// Messages stored per write batch (the message writer's group commits).
    pub message_batch_posts: Histogram,
}

impl Metrics {
    /// Registers every metric with a fresh registry, labelled with this node's id.
    pub fn new(node_id: &str) -> anyhow::Result<Metrics> {
        let registry = Registry::new_custom(
            Some("echo".into()),
            Some([("node".to_string(), node_id.to_string())].into()),
        )?;
        let r = Registrar(&registry);
        let http_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        let first_token_buckets =
            vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Ok(Metrics {
            http_requests: r.counter_vec(
                "http_requests_total",
                "HTTP requests by route and status",
                &["method", "route", "status"],
            )?,
            http_latency: r.register(HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(http_buckets),
                &["method", "route"],
            )?)?,
            db_pool: r.register(IntGaugeVec::new(
                Opts::new("db_pool_connections", "Database pool connections by state"),
                &["state"],
            )?)?,
            ws_sessions: r.gauge("ws_sessions", "WebSocket sessions connected")?,
            ws_rooms: r.gauge("ws_rooms", "Chat rooms with local sessions")?,
            ws_frames_in: r.counter_vec(
                "ws_frames_in_total",
                "Client frames received by type",
                &["type"],
            )?,
            ws_frames_out: r.counter_vec(
                "ws_frames_out_total",
                "Frames sent to clients by type",
                &["type"],
            )?,
            ws_bytes_out: r.register(IntCounter::new(
                "ws_bytes_out_total",
                "Bytes queued for clients",
            )?)?,
            ws_disconnects: r.counter_vec(
                "ws_disconnects_total",
                "Sessions closed by the server by reason",
                &["reason"],
            )?,
            ws_queue_bytes: r.gauge(
                "ws_outbound_queue_bytes",
                "Bytes waiting in outbound queues",
            )?,
            edge_refusals: r.counter_vec(
                "edge_refusals_total",
                "Requests and sockets refused by a per-client limit",
                &["limit"],
            )?,
            ai_generations: r.gauge("ai_generations", "AI replies being generated")?,
            ai_generations_total: r.counter_vec(
                "ai_generations_total",
                "AI replies ended by outcome",
                &["outcome"],
            )?,
            ai_tokens: r.register(IntCounter::new(
                "ai_tokens_total",
                "AI reply tokens streamed",
            )?)?,
            ai_first_token: r.register(Histogram::with_opts(
                HistogramOpts::new(
                    "ai_time_to_first_token_seconds",
                    "Time from a generation's start to its first token",
                )
                .buckets(first_token_buckets),
            )?)?,
            ai_start_seconds: r.register(HistogramVec::new(
                HistogramOpts::new(
                    "ai_start_seconds",
                    "Time of each stage of an AI reply's start, by stage",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["stage"],
            )?)?,
            message_batch_posts: r.register(Histogram::with_opts(
                HistogramOpts::new(
                    "message_batch_posts",
                    "Messages stored per write batch (one transaction each)",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                ]),
            )?)?,
            registry,
        })
    }

    /// Counts one refusal by the edge limit `limit`.
    pub fn rate_limited(&self, limit: &str) {
        self.edge_refusals.with_label_values(&[limit]).inc();
    }

    /// Copies the pool's occupancy into the gauges (called at scrape time).
    pub fn observe_pool(&self, s: PoolStatus) {
        self.db_pool
            .with_label_values(&["max"])
            .set(s.max_size as i64);
        self.db_pool.with_label_values(&["open"]).set(s.size as i64);
        self.db_pool
            .with_label_values(&["idle"])
            .set(s.available as i64);
        self.db_pool
            .with_label_values(&["waiting"])
            .set(s.waiting as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Creates metrics registered in one registry.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    /// Registers `metric` and hands it back.
    fn register<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: M,
    ) -> anyhow::Result<M> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn gauge(&self, name: &str, help: &str) -> anyhow::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }

    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}
