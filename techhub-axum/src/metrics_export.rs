//! The Prometheus exporter: one recorder per process, installed the first time a router is built.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The exporter's handle, installing it as the global `metrics` recorder on first use. `None` if the
/// embedding app installed a recorder of its own first (it then exports the metrics itself).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::info!(error = %error, "a metrics recorder is already installed; /metrics is off");
                None
            }
        })
        .as_ref()
}
