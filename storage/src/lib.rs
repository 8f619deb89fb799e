//! Tally's storage: the durable, segmented log (the ledger's single source of truth), its
//! group-commit flusher, the Raft log/vote/snapshot storage over it, and the embedded database.
//! Depends on the engine only; no SQL, no network.

pub mod checkpoints;
pub mod cluster;
pub mod db;
pub mod error;
pub mod flusher;
pub mod history;
pub mod log;
pub mod lsn;
mod meta;
mod past;
pub mod payload;
pub mod producers;
pub mod raft;
pub mod record;
pub mod repair;
pub mod salvage;
pub mod segment;
pub mod snapshot;
pub mod tree;
pub mod verify;

pub use error::StorageError;

pub use db::{Database, Landed, Opened, Options, PendingWrite, ScanCursor, WriteError};
pub use payload::Origin;
pub use tree::{ConsistencyProof, InclusionProof};

fn merkle_hex(h: &[u8; 32]) -> String {
    tally_engine::merkle::to_hex(h)
}
