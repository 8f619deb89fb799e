//! A query's rows on their way to the client: DataFusion's record batches are encoded to data
//! rows as the client reads them, never collected first, so a result of billions of rows costs
//! the server one batch of memory at a time (the socket's backpressure paces the query). The
//! statement's `Interrupt` travels with the stream: a timeout or a cancel stops it mid-result.
//! Errors keep their SQLSTATE (`QueryError::sqlstate`), also when they arise mid-stream.
//! `COPY … TO STDOUT` streams the same way, one CopyData per row.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use tally_query::{CopyOut, QueryError, Rows};

use crate::connection::query_error;
use crate::interrupt::Interrupt;

/// Starts `rows` and answers with its rows as a stream, its columns named as the query layer
/// names them for `statement` (PostgreSQL's names).
pub(crate) async fn respond(
    statement: &Statement,
    rows: Rows,
    format: &Format,
    options: Arc<FormatOptions>,
    mut interrupt: Interrupt,
) -> PgWireResult<Response> {
    let schema = tally_query::result_schema(statement, &rows.schema());
    let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
    let batches = interrupt.run(async { rows.stream().await.map_err(query_error) }).await?;
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

/// Streams a `COPY … TO STDOUT` to the client as PostgreSQL does: CopyOutResponse, the header
/// line and then one CopyData per row, CopyDone; answers with the `COPY n` tag to complete it.
/// An error mid-way (a damaged record, the statement's time limit) is answered as an error,
/// which ends the copy on the client's side.
pub(crate) async fn copy_out<C>(
    client: &mut C,
    copy: CopyOut,
    mut interrupt: Interrupt,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let CopyOut { frame, encoder } = copy;
    let batches = interrupt.run(async { frame.stream().await.map_err(query_error) }).await?;
    let columns = encoder.columns();
    let start = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
    client.send(PgWireBackendMessage::CopyOutResponse(start)).await?;
    if let Some(header) = encoder.header() {
        client.feed(PgWireBackendMessage::CopyData(CopyData::new(header.into()))).await?;
    }
    let mut guarded = Guarded { batches, interrupt, done: false };
    let (mut rows, mut ends) = (0usize, Vec::new());
    while let Some(batch) = guarded.next().await {
        let lines = encoder.encode(&batch?, &mut ends).map_err(query_error)?;
        let lines = bytes::Bytes::from(lines);
        let mut at = 0;
        for end in &ends {
            let line = lines.slice(at..*end);
            client.feed(PgWireBackendMessage::CopyData(CopyData::new(line))).await?;
            at = *end;
        }
        rows += ends.len();
        client.flush().await?;
    }
    client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(rows)))
}

/// One row of one text column: what SHOW answers for a setting.
pub(crate) fn one_text(name: &str, value: &str) -> PgWireResult<Response> {
    use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_owned(),
        None,
        None,
        pgwire::api::Type::VARCHAR,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter([Ok(row)]))))
}
