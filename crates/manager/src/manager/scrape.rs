//! What a metrics scrape reads from the manager: the gauges that describe state (plugins by
//! state and health, blob store size) are set from the store, the live state and the blob
//! store at scrape time, then the whole registry is encoded.

use plugind_store::RunState;

use super::{lock, Manager};
use crate::metrics::{Metrics, StateLabels, StatusLabels};

impl Manager {
    /// The Prometheus text of [`Metrics::global`], with the state gauges read now. The blob
    /// store walk runs on the blocking pool.
    pub async fn render_metrics(&self) -> String {
        let m = Metrics::global();
        let mut by_state = std::collections::BTreeMap::<&str, i64>::new();
        for s in ["running", "stopped", "failed", "disabled"] {
            by_state.insert(s, 0);
        }
        let mut by_health = std::collections::BTreeMap::<&str, i64>::new();
        for s in ["starting", "healthy", "unhealthy"] {
            by_health.insert(s, 0);
        }
        let records = self.inner.store.list();
        {
            let live = lock(&self.inner.live);
            for r in &records {
                let state = match (&r.state.observed.state, r.desired_enabled()) {
                    (RunState::Running { .. }, _) => "running",
                    (RunState::Failed { .. }, _) => "failed",
                    (RunState::Stopped, true) => "stopped",
                    (RunState::Stopped, false) => "disabled",
                };
                *by_state.entry(state).or_default() += 1;
                if let Some(h) = live.get(r.id()).and_then(|l| l.health.as_ref()) {
                    *by_health.entry(h.report.status.as_str()).or_default() += 1;
                }
            }
        }
        for (state, n) in by_state {
            m.plugins
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n);
        }
        for (status, n) in by_health {
            m.plugins_health
                .get_or_create(&StatusLabels {
                    status: status.to_owned(),
                })
                .set(n);
        }
        let blobs = self
            .blocking(|m| {
                let (mut n, mut bytes) = (0i64, 0u64);
                if let Ok(walk) = m.inner.blobs.walk() {
                    for info in walk.flatten() {
                        n += 1;
                        bytes += info.size;
                    }
                }
                (n, bytes)
            })
            .await;
        if let Ok((n, bytes)) = blobs {
            m.blobstore_blobs.set(n);
            m.blobstore_bytes.set(bytes);
        }
        m.encode()
    }
}
