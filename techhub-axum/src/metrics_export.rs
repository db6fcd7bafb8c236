//! The Prometheus exporter: one recorder per process, installed the first time a router is built.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their summaries. Without it they pile up between scrapes
/// (one per request), and without any scrape they would grow for as long as the process runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The exporter's handle, installing it as the global `metrics` recorder on first use. `None` if the
/// embedding app installed a recorder of its own first (it then exports the metrics itself).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                // A thread, not a task: the recorder is process-wide and outlives any one tokio runtime.
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new().name("techhub-metrics-upkeep".to_owned()).spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
                if let Err(error) = spawned {
                    tracing::warn!(error = %error, "no metrics upkeep thread; histograms are folded at scrapes only");
                }
                Some(handle)
            }
            Err(error) => {
                tracing::info!(error = %error, "a metrics recorder is already installed; /metrics is off");
                None
            }
        })
        .as_ref()
}
