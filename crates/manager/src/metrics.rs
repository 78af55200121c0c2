//! Prometheus metrics of plugind: one process-wide [`Metrics`] registry that every crate
//! recording something reaches through the manager (api and volumes already depend on it, so
//! no new dependency edge), rendered in the Prometheus text format by
//! [`crate::Manager::render_metrics`] for the daemon's `--metrics-addr` server.
//!
//! Counters and histograms are recorded where things happen (API requests, volume-driver
//! calls, enables, installs, restarts, health probes); gauges that describe state (plugins by
//! state and health, blob store size) are computed at scrape time from the manager, so they
//! can never drift from what `docker plugin ls` shows.
//!
//! Label values are bounded: API routes are the route templates (`/plugins/:name/enable`),
//! never raw paths; volume-driver methods are the protocol's fixed method names; plugin
//! labels are plugin names, bounded by the plugins installed.

use std::{
    sync::{atomic::AtomicU64, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// `{route, status}` of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// The route template, e.g. `/plugins/:name/enable`; `other` for unknown paths.
    pub route: String,
    /// The HTTP status code answered.
    pub status: u16,
}

/// `{route}` of an API request's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template.
    pub route: String,
}

/// `{plugin, method}` of a volume-driver call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverCallLabels {
    /// The driver plugin's name.
    pub plugin: String,
    /// The protocol method, e.g. `VolumeDriver.Mount`.
    pub method: String,
}

/// `{plugin}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin's name.
    pub plugin: String,
}

/// `{state}` of the plugins-by-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `running`, `stopped`, `failed`, `disabled`...
    pub state: String,
}

/// `{status}` of health gauges and probe counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `healthy`, `unhealthy`, `starting` (gauge) or `success`, `failure` (probes).
    pub status: String,
}

/// Every metric plugind exports. Cheap to record into (atomics); see [`Metrics::global`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// API requests by route template and status.
    pub api_requests: Family<ApiRequestLabels, Counter>,
    /// API request durations by route template (until the response head).
    pub api_request_seconds: Family<RouteLabels, Histogram>,
    /// Volume-driver call durations by plugin and method.
    pub driver_call_seconds: Family<DriverCallLabels, Histogram>,
    /// Failed volume-driver calls (unreachable, timeout, `Err` answers) by plugin and method.
    pub driver_call_errors: Family<DriverCallLabels, Counter>,
    /// Successful enables, from the request to the plugin's socket answering.
    pub enable_seconds: Histogram,
    /// Successful installs (`docker plugin install`/pull), from resolve to the record written.
    pub install_seconds: Histogram,
    /// Restarts after an unexpected exit or a failed health check, by plugin.
    pub restarts: Family<PluginLabels, Counter>,
    /// Health probes by result (`success`, `failure`).
    pub health_probes: Family<StatusLabels, Counter>,
    /// Plugins by observed state (computed at scrape).
    pub plugins: Family<StateLabels, Gauge>,
    /// Running plugins by health status (computed at scrape).
    pub plugins_health: Family<StatusLabels, Gauge>,
    /// Bytes of committed blobs in the blob store (computed at scrape).
    pub blobstore_bytes: Gauge<u64, AtomicU64>,
    /// Committed blobs in the blob store (computed at scrape).
    pub blobstore_blobs: Gauge,
}

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~65 s: a plugin call answers in milliseconds, an enable in tens of ms to the
    // start deadline, an install in seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// A fresh registry with every metric registered (tests; the daemon uses
    /// [`Metrics::global`]).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plugind");
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Engine API requests by route template and status code",
            api_requests.clone(),
        );
        let api_request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "api_request_duration_seconds",
            "Engine API request duration until the response head, by route template",
            api_request_seconds.clone(),
        );
        let driver_call_seconds = Family::<DriverCallLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> _,
        );
        registry.register(
            "volume_driver_call_duration_seconds",
            "Volume-driver call duration by plugin and method",
            driver_call_seconds.clone(),
        );
        let driver_call_errors = Family::<DriverCallLabels, Counter>::default();
        registry.register(
            "volume_driver_call_errors",
            "Failed volume-driver calls by plugin and method",
            driver_call_errors.clone(),
        );
        let enable_seconds = seconds_histogram();
        registry.register(
            "plugin_enable_duration_seconds",
            "Successful plugin enables, until the plugin's socket accepts",
            enable_seconds.clone(),
        );
        let install_seconds = seconds_histogram();
        registry.register(
            "plugin_install_duration_seconds",
            "Successful plugin installs from a registry",
            install_seconds.clone(),
        );
        let restarts = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_restarts",
            "Plugin restarts after an unexpected exit or failing health checks",
            restarts.clone(),
        );
        let health_probes = Family::<StatusLabels, Counter>::default();
        registry.register(
            "health_probes",
            "Plugin health probes by result",
            health_probes.clone(),
        );
        let plugins = Family::<StateLabels, Gauge>::default();
        registry.register("plugins", "Plugins by observed state", plugins.clone());
        let plugins_health = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "plugins_health",
            "Running plugins by health status",
            plugins_health.clone(),
        );
        let blobstore_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "blobstore_bytes",
            "Bytes of committed blobs in the blob store",
            blobstore_bytes.clone(),
        );
        let blobstore_blobs = Gauge::default();
        registry.register(
            "blobstore_blobs",
            "Committed blobs in the blob store",
            blobstore_blobs.clone(),
        );
        Metrics {
            registry,
            api_requests,
            api_request_seconds,
            driver_call_seconds,
            driver_call_errors,
            enable_seconds,
            install_seconds,
            restarts,
            health_probes,
            plugins,
            plugins_health,
            blobstore_bytes,
            blobstore_blobs,
        }
    }

    /// The process-wide registry: one plugind process serves one set of metrics, and the
    /// recorders (API server, volume service, manager) reach it without being handed it.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::new)
    }

    /// Records one answered API request.
    pub fn record_api_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.api_requests
            .get_or_create(&ApiRequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.api_request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one volume-driver call. A method outside the volume-driver protocol (a
    /// consumer of a published socket may send anything) is recorded as `other`.
    pub fn record_driver_call(&self, plugin: &str, method: &str, elapsed: Duration, ok: bool) {
        let method = if DRIVER_METHODS.contains(&method) {
            method
        } else {
            "other"
        };
        let labels = DriverCallLabels {
            plugin: plugin.to_owned(),
            method: method.to_owned(),
        };
        self.driver_call_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.driver_call_errors.get_or_create(&labels).inc();
        }
    }

    /// The registry in the Prometheus text format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The volume-driver protocol's methods: the only `method` label values besides `other`.
const DRIVER_METHODS: &[&str] = &[
    "VolumeDriver.Create",
    "VolumeDriver.Remove",
    "VolumeDriver.Mount",
    "VolumeDriver.Unmount",
    "VolumeDriver.Path",
    "VolumeDriver.Get",
    "VolumeDriver.List",
    "VolumeDriver.Capabilities",
];

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_recorded_values_with_bounded_labels() {
        let m = Metrics::new();
        m.record_api_request("/plugins/:name/enable", 200, Duration::from_millis(3));
        m.record_driver_call("vol:latest", "VolumeDriver.Mount", Duration::ZERO, false);
        m.record_driver_call("vol:latest", "VolumeDriver.Evil/1", Duration::ZERO, false);
        m.record_driver_call("vol:latest", "VolumeDriver.Evil/2", Duration::ZERO, false);
        let text = m.encode();
        assert!(
            text.contains(
                "plugind_api_requests_total{route=\"/plugins/:name/enable\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("plugind_volume_driver_call_errors_total{plugin=\"vol:latest\",method=\"VolumeDriver.Mount\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "plugind_volume_driver_call_errors_total{plugin=\"vol:latest\",method=\"other\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("Evil"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
