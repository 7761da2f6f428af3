//! The HTTP API (issue #7): authenticated ingest and reads, email tracking
//! and one-click unsubscribe, metrics, health and the OpenAPI document.
//!
//! The daemon builds an [`ApiState`] and calls [`serve`] on a bound
//! listener; it waits on [`ApiState::wake`] to rescore and plan as soon as
//! the API accepted events, instead of waiting for the next scheduled pass.

pub mod auth;
mod db;
pub mod error;
pub mod ingest;
pub mod openapi;
mod ops;
mod oversized;
mod planning;
mod reads;
mod tasks;
mod templates;
mod timing;
pub mod tracking;
pub mod ui;

pub use db::Db;
pub use error::ApiError;

use crate::core::clock::Clock;
use crate::core::metrics::Metrics;
use crate::core::shutdown::Shutdown;
use crate::pipeline::config::Config;
use crate::ports::store::{StoreError, StoreHandle};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct ApiState {
    config: watch::Receiver<Arc<Config>>,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Notified (one permit) whenever events or records were written.
    pub wake: Arc<Notify>,
    db: Db,
}

impl ApiState {
    /// Serves the process's store (the API keeps it for its lifetime; a
    /// reload does not move it).
    pub fn new(
        store: StoreHandle,
        config: watch::Receiver<Arc<Config>>,
        clock: Clock,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        let db = Db::new(store);
        Ok(Self {
            config,
            clock,
            metrics,
            wake,
            db,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Tells the daemon new data is there to rescore and plan.
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }
}

/// The routes, split by authentication: (bearer token, open).
fn parts() -> (OpenApiRouter<ApiState>, OpenApiRouter<ApiState>) {
    let protected = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(ingest::post_events))
        .routes(routes!(ingest::post_contacts))
        .routes(routes!(ingest::post_companies))
        .routes(routes!(ingest::post_deals))
        .routes(routes!(reads::get_contact, reads::delete_contact))
        .routes(routes!(reads::get_outbox))
        .routes(routes!(planning::post_broadcasts))
        .routes(routes!(planning::get_plan))
        .routes(routes!(tasks::get_tasks))
        .routes(routes!(tasks::post_outcome))
        .routes(routes!(templates::get_preview))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json));
    let open = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(tracking::open))
        .routes(routes!(tracking::click))
        .routes(routes!(tracking::unsubscribe, tracking::unsubscribe_page));
    (protected, open)
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, open) = parts();
    let (_, mut doc) = protected.split_for_parts();
    doc.merge(open.split_for_parts().1);
    doc
}

/// The application: every route with its authentication and body limit.
pub fn router(state: ApiState) -> Router {
    let (protected, open) = parts();
    let limit = state.config().api.body_limit_kb as usize * 1024;
    let protected: Router<ApiState> = Router::from(protected).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), auth::require_token),
    );
    let api = protected
        .merge(Router::from(open))
        .fallback(ops::not_found)
        .layer(axum::middleware::map_response(error::json_errors));
    // The dashboard answers in HTML: it stays out of the JSON error layer.
    let app = if state.config().api.ui.enabled {
        api.merge(ui::router(state.clone()))
    } else {
        api
    };
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        timing::record,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        oversized::refuse_oversized,
    ))
    .layer(DefaultBodyLimit::max(limit))
    .with_state(state)
}

/// Serves the API on `listener` until `shutdown` fires, then lets requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    if let Ok(at) = listener.local_addr() {
        tracing::info!(%at, "API listening");
    }
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}
