//! `tally-client`: streaming ingest into a Tally node over Arrow Flight (`DoPut` on port 5434),
//! for `tally ingest` and for programs that embed it (inference servers). It depends on no
//! other Tally crate.
//!
//! Owns: the connection and its Basic → Bearer handshake ([`IngestClient`]), one `DoPut`
//! stream that sends record batches and reads their acknowledgements concurrently with a
//! bounded number in flight ([`PutStream`]), the acknowledgement format ([`Ack`]), the split of
//! failures into refusals (bad data: never retried) and transport failures (retried)
//! ([`ClientError`]), and the pure bookkeeping that makes retries exactly-once ([`Outbox`],
//! [`Backoff`]).
//!
//! It must never decide what a batch means or validate its rows: the server is the one
//! validator, and a refusal comes back as the server worded it (with its SQLSTATE). It never
//! retries on its own either: the caller owns the retry loop, so it decides what to resend.
//!
//! Exactly-once, from the client's side: a producer names itself (`x-tally-producer`) and numbers
//! its batches with strictly increasing `seq`s; the server applies each (producer, seq) at most
//! once and answers a resent one with `duplicate: true`. So after any transport failure a client
//! reconnects and resends every batch it holds no acknowledgement for, oldest first, with the
//! same producer and the same seqs ([`Outbox::rewind`]): nothing is lost and nothing counts twice.
//!
//! ```no_run
//! # async fn example(batches: Vec<arrow_array::RecordBatch>) -> Result<(), tally_client::ClientError> {
//! use tally_client::{ConnectOptions, IngestClient, PutOptions};
//! let mut client = IngestClient::connect("127.0.0.1:5434", ConnectOptions::default()).await?;
//! let schema = batches[0].schema();
//! let mut put = client.put("inferences", schema, &PutOptions::new("my-server-1")).await?;
//! for (i, batch) in batches.iter().enumerate() {
//!     for ack in put.send(i as u64 + 1, batch).await? {
//!         println!("batch {} appended at lsns {:?}..{:?}", ack.seq, ack.first_lsn, ack.last_lsn);
//!     }
//! }
//! for ack in put.finish().await? {
//!     println!("batch {} acknowledged", ack.seq);
//! }
//! # Ok(()) }
//! ```

mod ack;
mod connect;
mod error;
#[cfg(any(test, feature = "mock-server"))]
pub mod mock;
mod outbox;
mod put;

pub use ack::{seq_metadata, Ack};
pub use connect::{ConnectOptions, IngestClient};
pub use error::{ClientError, Refusal};
pub use outbox::{Backoff, Outbox, OutboxError};
pub use put::{PutOptions, PutStream};

/// The Arrow crates this client speaks, re-exported so that callers build batches with exactly
/// the same versions.
pub use arrow_array;
pub use arrow_schema;

/// Where `tally serve` listens for streaming ingest unless told otherwise (surface.md).
pub const DEFAULT_ADDR: &str = "127.0.0.1:5434";

/// The tables that take writes (surface.md), the only names a `DoPut` descriptor may carry.
pub const WRITE_TABLES: &[&str] = &[
    "datanets",
    "contributions",
    "models",
    "inferences",
    "revocations",
    "policies",
    "settlements",
];

/// Request header naming the producer of a `DoPut` stream.
pub const PRODUCER_HEADER: &str = "x-tally-producer";
/// Request header asking the server to validate without writing.
pub const DRY_RUN_HEADER: &str = "x-tally-dry-run";

/// Longest producer id, in bytes: the id alphabet's limit (ledger.md "Identifiers").
pub const MAX_PRODUCER_BYTES: usize = 128;

/// True for a valid producer id: 1 to 128 bytes from `[A-Za-z0-9._:@/-]`, as every id.
pub fn is_valid_producer(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_PRODUCER_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_follow_the_id_alphabet() {
        assert!(is_valid_producer("ingest-host_1.example:7@a/b"));
        assert!(is_valid_producer(&"p".repeat(MAX_PRODUCER_BYTES)));
        assert!(!is_valid_producer(&"p".repeat(MAX_PRODUCER_BYTES + 1)));
        assert!(!is_valid_producer(""));
        assert!(!is_valid_producer("has space"));
        assert!(!is_valid_producer("$protocol"));
        assert!(!is_valid_producer("é"));
    }
}
