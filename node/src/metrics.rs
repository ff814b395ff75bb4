//! The node's Prometheus metrics (connections, events, API, refused publishes) beside the
//! adapter's.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Node-level metrics. Labels: namespace (from the served set), transport, reason, route, status.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Sockets connected now, by namespace and transport at connect time.
    pub connections: IntGaugeVec,
    /// Connections accepted, by namespace.
    pub connects: IntCounterVec,
    /// Disconnections, by namespace and reason.
    pub disconnects: IntCounterVec,
    /// Events received from clients, by namespace.
    pub events: IntCounterVec,
    /// Server API requests, by route and status code.
    pub api_requests: IntCounterVec,
    /// Server-to-server events handled, by namespace.
    pub server_events: IntCounterVec,
    /// `/pubsub` publishes refused, by reason (see [`crate::pubsub::Refusal`]).
    pub publishes_refused: IntCounterVec,
}

impl NodeMetrics {
    /// Creates and registers the metrics.
    ///
    /// # Errors
    /// On a duplicate registration.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            connections: IntGaugeVec::new(
                Opts::new("ioscale_connections_active", "Sockets connected now"),
                &["namespace", "transport"],
            )?,
            connects: IntCounterVec::new(
                Opts::new("ioscale_connections_total", "Connections accepted"),
                &["namespace"],
            )?,
            disconnects: IntCounterVec::new(
                Opts::new("ioscale_disconnections_total", "Disconnections by reason"),
                &["namespace", "reason"],
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "ioscale_events_received_total",
                    "Events received from clients",
                ),
                &["namespace"],
            )?,
            api_requests: IntCounterVec::new(
                Opts::new("ioscale_api_requests_total", "Server API requests"),
                &["route", "status"],
            )?,
            server_events: IntCounterVec::new(
                Opts::new(
                    "ioscale_server_events_received_total",
                    "Server-to-server events handled",
                ),
                &["namespace"],
            )?,
            publishes_refused: IntCounterVec::new(
                Opts::new(
                    "ioscale_pubsub_publishes_refused_total",
                    "Publishes on /pubsub refused with ok: false, by reason",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.connects.clone()))?;
        registry.register(Box::new(m.disconnects.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.api_requests.clone()))?;
        registry.register(Box::new(m.server_events.clone()))?;
        registry.register(Box::new(m.publishes_refused.clone()))?;
        Ok(m)
    }
}
