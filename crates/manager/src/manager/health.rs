//! Health checks of running plugins. A plugin is healthy when its socket accepts and its HTTP
//! server answers `POST /Plugin.Activate` within the probe's deadline: the one call every
//! plugin protocol has, idempotent, and answered by the plugin's own server (so a hung,
//! deadlocked or stopped process fails it). Any HTTP answer counts, an error status or a 404
//! included (a plugin that does not implement the handshake still proves it serves); a refused
//! or cut connection, a broken answer and the deadline are failures.
//!
//! One monitor task per running task (plugin id + pid): it sleeps a jittered interval, probes,
//! records the result (shown under `PluginD.Health` in inspect), publishes `health_status:
//! <status>` plugin events on changes (Docker's container event), and after `retries`
//! failures in a row stops the task and hands it to the normal restart path (backoff,
//! `restart` event). The monitor is sequential, so probes never pile up; it ends when the task
//! is stopped (its cancel sender lives in the plugin's live state), on a new task, and at
//! shutdown. Per-plugin overrides are plugind's own `set` keys ([`HEALTH_INTERVAL`],
//! [`HEALTH_TIMEOUT`], [`HEALTH_RETRIES`]), read at every round.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use plugind_store::{PluginRecord, RunState};
use plugind_types::PluginId;
use tokio::sync::watch;

use super::{exit_record, lock, Manager};
use crate::{
    client::{PluginCallError, PluginClient},
    error::ManagerError,
    metrics::Metrics,
};

/// `docker plugin set NAME plugind.health.interval=10s`: time between probes (`0` disables).
pub const HEALTH_INTERVAL: &str = "plugind.health.interval";
/// `plugind.health.timeout=5s`: deadline of one probe.
pub const HEALTH_TIMEOUT: &str = "plugind.health.timeout";
/// `plugind.health.retries=3`: failures in a row that make the plugin unhealthy.
pub const HEALTH_RETRIES: &str = "plugind.health.retries";
/// The prefix of plugind's own `set` keys (`plugind.<group>.<key>`, see `is_option`).
pub const OPTION_PREFIX: &str = "plugind.";

/// A `set` argument is plugind's own when its key is `plugind.<group>.<key>`: Docker reads the
/// last `.` as the field separator, so `plugind.value=x` stays Docker's (the `value` of a
/// setting named `plugind`), and only a setting named `plugind.<group>` (a name with a dot,
/// which no plugin config declares in practice) would be shadowed.
pub(super) fn is_option(arg: &str) -> bool {
    let key = arg.split('=').next().unwrap_or_default();
    key.strip_prefix(OPTION_PREFIX)
        .is_some_and(|rest| rest.contains('.'))
}

/// Probes kept for inspect (Docker keeps the last 5 health check results).
const KEPT_PROBES: usize = 5;

/// How often and how strictly plugins are probed (daemon defaults; per-plugin overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between probes; zero disables health checks.
    pub interval: Duration,
    /// Deadline of one probe (connect and answer).
    pub timeout: Duration,
    /// Failures in a row after which the plugin is unhealthy and restarted.
    pub retries: u32,
}

impl HealthPolicy {
    /// Docker's container health check defaults for interval and retries (30 s, 3); a probe
    /// deadline of 10 s (a plugin's cheapest call has no business taking longer).
    pub const DEFAULT: HealthPolicy = HealthPolicy {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        retries: 3,
    };

    /// This policy with the record's `plugind.health.*` options applied (values were checked
    /// when set; an unreadable one keeps the default).
    pub fn for_record(&self, record: &PluginRecord) -> HealthPolicy {
        let mut p = *self;
        let o = &record.state.options;
        if let Some(d) = o.get(HEALTH_INTERVAL).and_then(|v| parse_duration(v).ok()) {
            p.interval = d;
        }
        if let Some(d) = o.get(HEALTH_TIMEOUT).and_then(|v| parse_duration(v).ok()) {
            p.timeout = d;
        }
        if let Some(n) = o.get(HEALTH_RETRIES).and_then(|v| v.parse().ok()) {
            p.retries = n;
        }
        p
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A Go-style duration (`1m30s`, `500ms`, `10s`) or plain seconds (`10`, `2.5`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..n]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[u..];
        total += Duration::try_from_secs_f64(value * unit).map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// Checks one `plugind.<key>=<value>` argument of `set`: `(key, value)` when valid.
pub(super) fn parse_option(arg: &str) -> std::result::Result<(String, String), ManagerError> {
    let invalid = |reason: String| ManagerError::InvalidOption {
        arg: arg.to_owned(),
        reason,
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| invalid("a value is required: <key>=<value>".to_owned()))?;
    match key {
        HEALTH_INTERVAL | HEALTH_TIMEOUT => {
            let d = parse_duration(value).map_err(invalid)?;
            if key == HEALTH_TIMEOUT && d.is_zero() {
                return Err(invalid("the probe timeout must be more than 0".to_owned()));
            }
        }
        HEALTH_RETRIES => {
            let n: u32 = value
                .parse()
                .map_err(|_| invalid("not a whole number".to_owned()))?;
            if n == 0 {
                return Err(invalid("retries must be at least 1".to_owned()));
            }
        }
        _ => {
            return Err(invalid(format!(
            "unknown plugind option; known: {HEALTH_INTERVAL}, {HEALTH_TIMEOUT}, {HEALTH_RETRIES}"
        )))
        }
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A plugin's health, as Docker names a container's (`State.Health.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// No probe has answered yet since the task started.
    Starting,
    /// The last probe succeeded.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// `starting`, `healthy`, `unhealthy` (Docker's strings).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// When the probe began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Whether the plugin answered in time.
    pub ok: bool,
    /// What it answered, or why it failed.
    pub output: String,
}

/// A running plugin's health, as inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The current status.
    pub status: HealthStatus,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: VecDeque<ProbeResult>,
}

/// The health monitor of a running task, in the plugin's live state.
#[derive(Debug)]
pub(super) struct HealthState {
    pub(super) report: HealthReport,
    /// Dropped when the task stops: the monitor waiting on it ends at once.
    _cancel: watch::Sender<()>,
}

impl Manager {
    /// Starts the health monitor of the task `pid` of plugin `id` (after a start or a
    /// re-attach). Replaces any earlier monitor of the plugin.
    pub(super) fn spawn_health_monitor(&self, id: &PluginId, pid: u32) {
        let (cancel, mut cancelled) = watch::channel(());
        {
            let mut live = lock(&self.inner.live);
            let l = live.entry(id.clone()).or_default();
            l.health = Some(HealthState {
                report: HealthReport {
                    status: HealthStatus::Starting,
                    failing_streak: 0,
                    log: VecDeque::new(),
                },
                _cancel: cancel,
            });
        }
        let this = self.clone();
        let id = id.clone();
        let mut stop = self.inner.stop_events.subscribe();
        self.spawn_background(async move {
            let mut first = true;
            loop {
                // The record is read again after the sleep, not held across it: a fleet's
                // monitors would otherwise keep a copy of every plugin's record.
                let Some(policy) = this
                    .inner
                    .store
                    .get(&id)
                    .map(|record| lock(&this.inner.health).for_record(&record))
                else {
                    return;
                };
                let delay = if policy.interval.is_zero() {
                    // Disabled for now; look again later in case a `set` turns it on.
                    HealthPolicy::DEFAULT.interval
                } else if first {
                    // Spread the first probes of plugins started together (a restore of
                    // 1,000 plugins) over a whole interval.
                    policy.interval.mul_f64(rand::random::<f64>().max(0.05))
                } else {
                    // ±10 % so that the probes stay spread.
                    policy.interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
                };
                first = false;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // A policy changed: sleep again with the new interval.
                    () = this.inner.health_changed.notified() => continue,
                    _ = cancelled.changed() => return,
                    () = super::supervise::stopped(&mut stop) => return,
                }
                if !this.runs_task(&id, pid) {
                    return;
                }
                if policy.interval.is_zero() {
                    continue;
                }
                let Some(record) = this.inner.store.get(&id) else {
                    return;
                };
                // Boxed: a task's future is as large as its largest await, and a fleet's
                // monitors spend their lives asleep, not probing.
                let result = Box::pin(this.probe(&record, policy.timeout)).await;
                if !this.record_probe(&id, pid, &record, result, policy.retries) {
                    continue;
                }
                // Unhealthy: restart through the normal path.
                Box::pin(this.restart_unhealthy(&id, pid)).await;
                return;
            }
        });
    }

    /// The plugin's task `pid` is the one tracked, and nobody is stopping it.
    fn runs_task(&self, id: &PluginId, pid: u32) -> bool {
        lock(&self.inner.live).get(id).is_some_and(|l| {
            !l.stopping
                && l.stop_error.is_none()
                && l.running.as_ref().is_some_and(|r| r.pid == pid)
        })
    }

    /// One probe: `Plugin.Activate` within `timeout`.
    async fn probe(&self, record: &PluginRecord, timeout: Duration) -> ProbeResult {
        let start = SystemTime::now();
        let outcome = match self.socket_path(record) {
            Err(e) => Err(e.to_string()),
            Ok(socket) => {
                let answer = PluginClient::new(record.name(), &socket)
                    .with_max_answer_bytes(self.inner.config.max_plugin_answer_bytes)
                    .call("Plugin.Activate", None, timeout)
                    .await;
                match answer {
                    Ok(_) => Ok("Plugin.Activate answered".to_owned()),
                    Err(
                        e @ (PluginCallError::NotImplemented { .. }
                        | PluginCallError::Remote { .. }),
                    ) => Ok(format!("answered with an error: {e}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let (ok, output) = match outcome {
            Ok(o) => (true, o),
            Err(e) => (false, e),
        };
        ProbeResult {
            start,
            end: SystemTime::now(),
            ok,
            output,
        }
    }

    /// Records a probe of task `pid`; publishes `health_status` on a change of status. True
    /// when the plugin just became unhealthy.
    fn record_probe(
        &self,
        id: &PluginId,
        pid: u32,
        record: &PluginRecord,
        result: ProbeResult,
        retries: u32,
    ) -> bool {
        let status = if result.ok { "success" } else { "failure" };
        Metrics::global()
            .health_probes
            .get_or_create(&crate::metrics::StatusLabels {
                status: status.to_owned(),
            })
            .inc();
        if !result.ok {
            tracing::debug!(plugin = %id, output = %result.output, "health probe failed");
        }
        let changed = {
            let mut live = lock(&self.inner.live);
            let Some(l) = live.get_mut(id) else {
                return false;
            };
            if l.running.as_ref().is_none_or(|r| r.pid != pid) {
                return false;
            }
            let Some(h) = l.health.as_mut() else {
                return false;
            };
            let r = &mut h.report;
            let before = r.status;
            if result.ok {
                r.failing_streak = 0;
                r.status = HealthStatus::Healthy;
            } else {
                r.failing_streak = r.failing_streak.saturating_add(1);
                if r.failing_streak >= retries.max(1) {
                    r.status = HealthStatus::Unhealthy;
                }
            }
            r.log.push_back(result);
            while r.log.len() > KEPT_PROBES {
                r.log.pop_front();
            }
            (before != r.status).then_some(r.status)
        };
        match changed {
            Some(status) => {
                if status == HealthStatus::Unhealthy {
                    tracing::warn!(plugin = %id, "plugin is unhealthy");
                }
                self.publish(&format!("health_status: {}", status.as_str()), record);
                status == HealthStatus::Unhealthy
            }
            None => false,
        }
    }

    /// Stops an unhealthy task and schedules its restart with the plugin's backoff, as if it
    /// had exited (a hung process does not exit by itself: the stop's SIGKILL ends it).
    async fn restart_unhealthy(&self, id: &PluginId, pid: u32) {
        let guard = self.plugin_lock(id);
        let _held = guard.lock().await;
        if !self.runs_task(id, pid)
            || self
                .inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let Some(record) = self.inner.store.get(id) else {
            return;
        };
        if !record.desired_enabled() {
            return;
        }
        let ran_for = lock(&self.inner.live)
            .get(id)
            .and_then(|l| l.running.as_ref().map(|r| r.started.elapsed()))
            .unwrap_or_default();
        tracing::warn!(plugin = %id, "restarting unhealthy plugin");
        // A failed stop marks the plugin failed and keeps the task tracked; the restart below
        // retries the stop before it starts anything.
        if let Ok(exit) = self.stop_task(id).await {
            let _ = self
                .update(id, move |r| {
                    r.state.observed.state = RunState::Stopped;
                    if let Some(exit) = exit {
                        r.state.observed.last_exit = Some(exit_record(&exit));
                    }
                })
                .await;
        }
        self.schedule_restart(id.clone(), ran_for, "failed its health checks".to_owned());
    }

    /// Replaces the daemon's health policy (SIGHUP); monitors use it from their next round.
    pub fn set_health_policy(&self, policy: HealthPolicy) {
        *lock(&self.inner.health) = policy;
        self.inner.health_changed.notify_waiters();
    }

    /// The health of a running plugin (`None` when it does not run).
    pub(super) fn health_of(&self, id: &PluginId) -> Option<HealthReport> {
        lock(&self.inner.live)
            .get(id)
            .and_then(|l| l.health.as_ref().map(|h| h.report.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_and_seconds_forms() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn only_plugind_group_keys_are_options() {
        assert!(is_option("plugind.health.interval=5s"));
        assert!(is_option("plugind.nope.x=1"));
        // Docker's syntax for the `value` field of a setting named `plugind`.
        assert!(!is_option("plugind.value=1"));
        assert!(!is_option("plugind=1"));
        assert!(!is_option("DEBUG=plugind.health.interval"));
    }

    #[test]
    fn options_are_checked_and_override_the_daemon_policy() {
        assert!(parse_option("plugind.health.interval=5s").is_ok());
        assert!(parse_option("plugind.health.timeout=0").is_err());
        assert!(parse_option("plugind.health.retries=0").is_err());
        assert!(parse_option("plugind.health.retries=x").is_err());
        assert!(parse_option("plugind.health.interval").is_err());
        assert!(parse_option("plugind.nope=1").is_err());

        let config = plugind_types::config::PluginConfig::from_json(
            br#"{"Entrypoint":["/x"],"Interface":{"Socket":"a.sock","Types":["docker.volumedriver/1.0"]}}"#,
        )
        .unwrap();
        let mut record = PluginRecord::new(
            PluginId::from_bytes([1; 32]),
            "a:latest".into(),
            config,
            String::new(),
            SystemTime::now(),
        );
        record
            .state
            .options
            .insert(HEALTH_INTERVAL.into(), "1s".into());
        record
            .state
            .options
            .insert(HEALTH_RETRIES.into(), "7".into());
        let p = HealthPolicy::DEFAULT.for_record(&record);
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.retries, 7);
        assert_eq!(p.timeout, HealthPolicy::DEFAULT.timeout);
    }
}
