//! A query's answer on its way to a front end: a DataFusion frame still to run (streamed as
//! the client reads it) or rows already read (a direct read, `direct.rs`). Front ends see one
//! type and stream both the same way.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::DataFrame;

use crate::QueryError;

/// The rows a query answers.
pub struct Rows(Source);

enum Source {
    Frame(DataFrame),
    Read(RecordBatch),
}

impl Rows {
    pub(crate) fn frame(df: DataFrame) -> Rows {
        Rows(Source::Frame(df))
    }

    pub(crate) fn read(batch: RecordBatch) -> Rows {
        Rows(Source::Read(batch))
    }

    /// The answer's columns, as planned (before PostgreSQL's names: `result_schema`).
    pub fn schema(&self) -> SchemaRef {
        match &self.0 {
            Source::Frame(df) => std::sync::Arc::new(df.schema().as_arrow().clone()),
            Source::Read(batch) => batch.schema(),
        }
    }

    /// Starts the query (if it is still to run): its batches, as the reader takes them.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, QueryError> {
        match self.0 {
            Source::Frame(df) => Ok(df.execute_stream().await?),
            Source::Read(batch) => {
                let schema = batch.schema();
                Ok(Box::pin(MemoryStream::try_new(nonempty(batch), schema, None)?))
            }
        }
    }

    /// Every batch of the answer.
    pub async fn collect(self) -> Result<Vec<RecordBatch>, QueryError> {
        match self.0 {
            Source::Frame(df) => {
                df.collect().await.map_err(|e| QueryError::from(e).unwrap_external())
            }
            Source::Read(batch) => Ok(nonempty(batch)),
        }
    }
}

/// No batch for no rows, as DataFusion answers.
fn nonempty(batch: RecordBatch) -> Vec<RecordBatch> {
    if batch.num_rows() == 0 {
        Vec::new()
    } else {
        vec![batch]
    }
}
