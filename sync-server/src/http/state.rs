//! What the router holds, and how each handler gets only what it uses: a handler asks for a
//! service by type (`State<Arc<dyn Storage>>`, `State<Boards>`, `State<Arc<Assistant>>`...)
//! and [`FromRef`] hands it that one. The middleware and the `Caller` extractor (HTTP's own
//! plumbing: rate limit, open mode's guard, tokens) read the state itself.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use super::health::Readiness;
use crate::assistant::Assistant;
use crate::auth::Auth;
use crate::board::registry::Boards;
use crate::limits::{HttpLimiter, Limits};
use crate::metrics::Metrics;
use crate::restore::Restorer;
use crate::storage::Storage;
use crate::ws::Sessions;

/// The services the HTTP API serves, as the application built them.
#[derive(Debug)]
pub(crate) struct Services {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) boards: Boards,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) assistant: Arc<Assistant>,
    pub(crate) restorer: Restorer,
    pub(crate) auth: Auth,
    pub(crate) metrics: Arc<Metrics>,
    /// The body limit, the HTTP rate and the allowed origins.
    pub(crate) limits: Limits,
    /// See `app::Config::open_any_host`.
    pub(crate) open_any_host: bool,
    /// Cancelled when the server starts shutting down (`/readyz` answers 503).
    pub(crate) shutdown: CancellationToken,
}

/// The router's state. Cheap to clone (axum clones it for every request).
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) store: Arc<dyn Storage>,
    pub(super) boards: Boards,
    pub(super) sessions: Arc<Sessions>,
    pub(super) assistant: Arc<Assistant>,
    pub(super) restorer: Restorer,
    pub(super) auth: Arc<Auth>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) http_limiter: Option<HttpLimiter>,
    pub(super) limits: Limits,
    pub(super) open_any_host: bool,
}

impl AppState {
    pub(super) fn new(services: Services) -> Self {
        let Services {
            store,
            boards,
            sessions,
            assistant,
            restorer,
            auth,
            metrics,
            limits,
            open_any_host,
            shutdown,
        } = services;
        Self(Arc::new(Inner {
            readiness: Arc::new(Readiness::new(store.clone(), shutdown, boards.cluster())),
            http_limiter: HttpLimiter::new(limits.http_rate, limits.http_burst),
            store,
            boards,
            sessions,
            assistant,
            restorer,
            auth: Arc::new(auth),
            metrics,
            limits,
            open_any_host,
        }))
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.0
    }
}

/// `impl FromRef<AppState> for $service`, cloning the field `$field`.
macro_rules! services {
    ($($service:ty => $field:ident),* $(,)?) => {
        $(impl FromRef<AppState> for $service {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        })*
    };
}

services! {
    Arc<dyn Storage> => store,
    Boards => boards,
    Arc<Sessions> => sessions,
    Arc<Assistant> => assistant,
    Restorer => restorer,
    Arc<Auth> => auth,
    Arc<Metrics> => metrics,
    Arc<Readiness> => readiness,
}
