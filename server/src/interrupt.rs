//! What stops a running statement: its deadline (the statement timeout) and the client's cancel
//! request. Both reach a statement while it plans and runs, and while its rows are streamed to
//! the client; neither reaches a write once it has been handed to the ledger, so a write is
//! answered with what really happened to it (PostgreSQL likewise ignores a cancel that arrives
//! after a commit has begun).
//!
//! pgwire would race every query against a cancel itself and drop the query's future, write
//! included; the connection's cancel handle is therefore stored under our own type
//! (`CancelHandle`), which pgwire does not look for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion_postgres::pgwire;
use futures::channel::oneshot;
use pgwire::api::{ClientInfo, ConnectionHandle};
use pgwire::error::PgWireError;
use tokio::time::{Instant, Sleep};

use tally_query::QueryError;

use crate::connection::query_error;

/// The connection's cancel handle, as registered with the server's connection manager.
pub(crate) struct CancelHandle(pub Arc<ConnectionHandle>);

pub(crate) struct Interrupt {
    deadline: Pin<Box<Sleep>>,
    /// Fires when the client cancels this statement; `None` once it can no longer fire.
    cancel: Option<oneshot::Receiver<()>>,
}

impl Interrupt {
    /// Starts the clock for a statement that may run for `limit`, and makes it the one a
    /// cancel request stops.
    pub async fn start<C: ClientInfo + ?Sized>(client: &C, limit: Duration) -> Interrupt {
        let cancel = match client.session_extensions().get::<CancelHandle>() {
            Some(handle) => Some(handle.0.start_query().await),
            None => None,
        };
        let deadline = Box::pin(tokio::time::sleep_until(Instant::now() + limit));
        Interrupt { deadline, cancel }
    }

    /// Ready with the error to answer once the statement must stop.
    pub fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<PgWireError> {
        self.poll_stopped(cx).map(query_error)
    }

    /// `poll_stop`, as the SQL layer's error.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<QueryError> {
        if let Some(rx) = self.cancel.as_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.cancel = None;
                    let why = "canceling statement due to user request";
                    return Poll::Ready(QueryError::Canceled(why.into()));
                }
                // Replaced by a later statement's handle: this one can no longer be cancelled.
                Poll::Ready(Err(_)) => self.cancel = None,
                Poll::Pending => {}
            }
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(QueryError::Canceled(
                "canceling statement due to statement timeout".into(),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs `work` unless the statement is stopped first.
    pub async fn run<T>(
        &mut self,
        work: impl Future<Output = Result<T, PgWireError>>,
    ) -> Result<T, PgWireError> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = work.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            self.poll_stop(cx).map(Err)
        })
        .await
    }
}
