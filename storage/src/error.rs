//! The storage crate's one error type. Every variant says what happened and where (file,
//! offset, log index) and, where there is one, what the operator can do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "data directory {path} is in use by another process (lock held on {path}/LOCK); stop it first"
    )]
    Locked { path: PathBuf },
    #[error("{path}: not a Tally log segment or an unsupported format ({reason})")]
    BadSegment { path: PathBuf, reason: String },
    #[error(
        "corrupt log: {path} at offset {offset} (log index {index}) fails its checksum and is not \
         the torn tail of an interrupted write; refusing to open. Restore the data directory \
         from a copy, or run `tally salvage --data DIR` to keep the log up to the last good \
         record (index {last_good}), after taking a copy of the directory"
    )]
    Corrupt { path: PathBuf, offset: u64, index: u64, last_good: u64 },
    /// A record a read reached fails its checksum (damage at rest). Nothing past it is
    /// answered: a short result would be a wrong one.
    #[error(
        "damaged log record: {path} at offset {offset} (log index {index}) fails its checksum, \
         so the ledger cannot be read past it. Restore the data directory from a copy, or run \
         `tally salvage --data DIR` to cut the log before it (log index {index} and everything \
         after it are lost; copy the directory first)"
    )]
    Damaged { path: PathBuf, offset: u64, index: u64 },
    /// A damaged record that could not be repaired from a peer (`repair.rs`).
    #[error(
        "cannot repair log index {index} in {path}: {why}. Restore the data directory from a \
         copy, or run `tally salvage --data DIR` (log index {index} and everything after it are \
         lost; copy the directory first)"
    )]
    Unrepaired { path: PathBuf, index: u64, why: String },
    #[error("sealed segment {path} fails its checksum ({reason})")]
    SealedChecksum { path: PathBuf, reason: String },
    #[error(
        "the log stopped accepting writes after an fsync failure on {path}: {reason}. The data \
         on disk is intact up to the last acknowledged write; restart the process to recover"
    )]
    Poisoned { path: PathBuf, reason: String },
    #[error("disk full while writing {path}: nothing was written; free space and retry")]
    DiskFull { path: PathBuf },
    #[error("record of {bytes} bytes exceeds the limit of {max} bytes: split the batch")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("append out of order: expected log index {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("{0}")]
    Proof(#[from] tally_engine::log_tree::ProofError),
    #[error("lsn {lsn} is past the ledger's last lsn {last}")]
    PastLastLsn { lsn: u64, last: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StorageError::DiskFull { path };
        }
        StorageError::Io { path, source }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
