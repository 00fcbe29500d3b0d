//! Prometheus metrics, served as text on the admin address (`/metrics`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginOutcome {
    ok,
    bad_token,
    no_role,
    rate_limited,
    refused,
    upstream_error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub outcome: LoginOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    client_to_server,
    server_to_client,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

pub struct Metrics {
    registry: Registry,
    pub connections_active: Gauge,
    pub connections: Counter,
    pub logins: Family<LoginLabels, Counter>,
    pub statements: Counter,
    pub bytes: Family<DirectionLabels, Counter>,
    pub request_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hoop");
        let connections_active = Gauge::default();
        let connections = Counter::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let statements = Counter::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let request_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        registry.register(
            "client_connections_active",
            "Client connections currently open",
            connections_active.clone(),
        );
        registry.register(
            "client_connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "statements",
            "Statements sent (simple queries, Execute and FunctionCall messages)",
            statements.clone(),
        );
        registry.register("relayed_bytes", "Bytes relayed by direction", bytes.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a Query or Sync to its ReadyForQuery",
            request_duration.clone(),
        );
        Metrics {
            registry,
            connections_active,
            connections,
            logins,
            statements,
            bytes,
            request_duration,
        }
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
    }

    /// A handle on one direction's byte counter (no lookup per use).
    pub fn bytes_counter(&self, direction: Direction) -> Counter {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
