//! `GET /metrics`: the Prometheus text exposition, rendered from the store
//! at scrape time (`crate::metrics`).

use super::*;

/// Every rollout's state and its current run's effects, then this
/// process's counters.
pub(super) async fn metrics(State(api): State<Arc<Api>>) -> ApiResult {
    let rollouts = api.store.rollouts().await?;
    let templates = api.store.templates().await?;
    // The runs' reports that changed since the last scrape are computed
    // here: CPU work, kept off the runtime that serves and reconciles.
    let metrics = api.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.render(&rollouts, &templates))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the metrics could not be rendered: {e}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
