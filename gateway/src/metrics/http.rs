//! The HTTP edge's metrics: requests by route and status class, their duration, error
//! answers by kind, requests in flight and the gateway's own overhead.

use super::{Collectors, SECONDS, counter, histogram, single};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge};
use std::time::Duration;

pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    in_flight: IntGauge,
    overhead: Histogram,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let metrics = Self {
            requests: counter(
                "obb_http_requests_total",
                "HTTP requests answered.",
                &["route", "class"],
            ),
            duration: histogram(
                "obb_http_request_duration_seconds",
                "HTTP request duration, waits included.",
                SECONDS,
                &["route"],
            ),
            errors: counter(
                "obb_http_errors_total",
                "Error answers, by kind.",
                &["kind"],
            ),
            in_flight: IntGauge::new(
                "obb_http_requests_in_flight",
                "Requests being handled now, long-polls included.",
            )
            .unwrap_or_else(|e| unreachable!("well-formed: {e}")),
            overhead: single(
                "obb_gateway_overhead_seconds",
                "Time the gateway spent on a request, long-poll waits excluded.",
                SECONDS,
            ),
        };
        for route in crate::http::ROUTE_NAMES {
            for class in ["2xx", "4xx", "5xx"] {
                metrics.requests.with_label_values(&[route, class]);
            }
            metrics.duration.with_label_values(&[route]);
        }
        for kind in crate::http::ERROR_LABELS {
            metrics.errors.with_label_values(&[kind]);
        }
        metrics
    }

    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.overhead.clone()),
        ]
    }

    pub fn record_request(
        &self,
        route: &str,
        status: u16,
        error_kind: Option<&str>,
        elapsed: Duration,
        waited: Duration,
    ) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[route, class]).inc();
        self.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        self.overhead
            .observe(elapsed.saturating_sub(waited).as_secs_f64());
        if let Some(kind) = error_kind {
            self.errors.with_label_values(&[kind]).inc();
        }
    }

    pub fn request_started(&self) -> InFlightRequest {
        self.in_flight.inc();
        InFlightRequest(self.in_flight.clone())
    }
}

/// A request in flight; it stops counting when dropped, on every path out of a handler.
pub struct InFlightRequest(IntGauge);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}
