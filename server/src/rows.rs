//! A query's rows on their way to the client: DataFusion's record batches are encoded to data
//! rows as the client reads them, never collected first, so a result of billions of rows costs
//! the server one batch of memory at a time (the socket's backpressure paces the query). The
//! statement's `Interrupt` travels with the stream: a timeout or a cancel stops it mid-result.
//! Errors keep their SQLSTATE (`QueryError::sqlstate`), also when they arise mid-stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::{Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::error::PgWireResult;
use pgwire::types::format::FormatOptions;
use tally_query::QueryError;

use crate::connection::query_error;
use crate::interrupt::Interrupt;

/// Starts `df` and answers with its rows as a stream.
pub(crate) async fn respond(
    df: DataFrame,
    format: &Format,
    options: Arc<FormatOptions>,
    mut interrupt: Interrupt,
) -> PgWireResult<Response> {
    let fields =
        Arc::new(arrow_schema_to_pg_fields(df.schema().as_arrow(), format, Some(options))?);
    let batches = interrupt
        .run(async { df.execute_stream().await.map_err(|e| query_error(QueryError::from(e))) })
        .await?;
    let guarded = Guarded { batches, interrupt, done: false };
    let encode_fields = fields.clone();
    let rows = guarded
        .map(move |batch| -> Box<dyn Iterator<Item = _> + Send + Sync> {
            match batch {
                Ok(b) => encode_recordbatch(encode_fields.clone(), b),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
        .flat_map(futures::stream::iter);
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

/// Record batches until the query ends, fails, or is interrupted.
struct Guarded {
    batches: SendableRecordBatchStream,
    interrupt: Interrupt,
    done: bool,
}

impl Stream for Guarded {
    type Item = PgWireResult<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(e) = this.interrupt.poll_stop(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(e)));
        }
        match this.batches.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(query_error(QueryError::from(e)))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
