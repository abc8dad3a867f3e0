//! `GET /api/v1/rollouts/{name}/runs` and `/runs/{run}`: run reports, the
//! current run's computed live from its status (`rollout_core::report`).

use super::*;

/// Every run's report of a rollout, newest first.
async fn reports(api: &Api, name: &str) -> Result<Vec<rollout_core::report::RunReport>, ApiError> {
    let Some(r) = api.store.rollout(name).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("rollout `{name}` not found"),
        ));
    };
    let Some(st) = &r.status else {
        return Ok(Vec::new());
    };
    let templates = api.store.templates().await?;
    let kept = api.store.runs(name).await?;
    // A report searches each 5xx interval over up to a day of intervals:
    // milliseconds of CPU, kept off the runtime that serves and reconciles.
    let st = st.clone();
    tokio::task::spawn_blocking(move || rollout_core::report::all(&st, &kept, &templates))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the report could not be computed: {e}"),
            )
        })
}

pub(super) async fn list(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&api, &headers)?;
    let items = reports(&api, &name).await?;
    Ok(Json(crate::openapi::RunList { items }).into_response())
}

pub(super) async fn one(
    State(api): State<Arc<Api>>,
    Path((name, run)): Path<(String, u32)>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&api, &headers)?;
    reports(&api, &name)
        .await?
        .into_iter()
        .find(|r| r.run == run)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "rollout `{name}` has no run {run} (the store keeps the last {})",
                    api.store.run_history()
                ),
            )
        })
}
