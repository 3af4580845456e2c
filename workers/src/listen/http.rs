//! The one HTTP server of a process's listeners (`listen_addr`): Slack's Events API, the
//! Telegram webhook, the Matrix appservice and inbound webhooks each add their routes.

use super::ListenError;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The routes the HTTP listener modes of one process serve.
#[derive(Default)]
pub(crate) struct Routes {
    router: Option<axum::Router>,
}

impl Routes {
    /// Adds a platform's routes (with their state applied).
    pub(crate) fn add(&mut self, routes: axum::Router) {
        self.router = Some(match self.router.take() {
            Some(router) => router.merge(routes),
            None => routes,
        });
    }

    /// Serves the routes on `addr` until `stop`; returns where it listens. Requests larger
    /// than `max_body` bytes are refused (413) before any handler reads them.
    pub(crate) async fn serve(
        self,
        addr: &str,
        max_body: usize,
        stop: CancellationToken,
    ) -> Result<Option<SocketAddr>, ListenError> {
        let Some(router) = self.router else {
            return Ok(None);
        };
        let router = router.layer(axum::extract::DefaultBodyLimit::max(max_body));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ListenError::Config(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| ListenError::Config(format!("cannot listen on {addr}: {e}")))?;
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the listener HTTP server stopped");
            }
        });
        tracing::info!(addr = %bound, "listener HTTP server started");
        Ok(Some(bound))
    }
}
