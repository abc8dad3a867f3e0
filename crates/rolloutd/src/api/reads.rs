//! Reads beside the rollouts themselves: what a token may do, and how far
//! the delivery of a rollout's events to its notifiers got.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::{authorize, authorize_read, Api, ApiError, ApiResult};

/// What the caller's token may do: the dashboard shows mutation controls
/// only to a caller that may use them.
pub async fn whoami(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    authorize_read(&api, &headers)?;
    Ok(Json(crate::openapi::WhoAmI {
        tokens: api.token.is_some(),
        can_change: authorize(&api, &headers).is_ok(),
    })
    .into_response())
}

pub async fn notifications(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&api, &headers)?;
    if api.store.rollout(&name).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("rollout `{name}` not found"),
        ));
    }
    let items = api
        .store
        .notification_cursors(&name, &crate::notify::NOTIFIED)
        .await?
        .into_iter()
        .map(|c| crate::openapi::NotificationState {
            notifier: c.notifier,
            delivered: c.delivered,
            pending: c.pending,
            attempts: c.attempts,
            next_attempt_at: (c.attempts > 0).then(|| rollout_core::Time::from_millis(c.next_at)),
            last_error: c.last_error,
        })
        .collect();
    Ok(Json(crate::openapi::NotificationList { items }).into_response())
}
