//! `tally salvage`: the explicit, destructive way out of a log that opening or a read refuses as
//! damaged. Cuts the log at its first damaged record, in whichever segment it lies (everything
//! after it is zeroed, later segments removed), and sets aside
//! what was derived from the records it removed — the snapshot and the committed index — so the
//! state is rebuilt from the records that remain. Never runs by itself.

use std::path::{Path, PathBuf};

use crate::db::lock_dir;
use crate::error::StorageError;
use crate::log::{Log, TornTail, SEGMENT_BYTES};

#[derive(Debug, Clone)]
pub struct Salvaged {
    /// Where the log was cut, if it was.
    pub cut: Option<TornTail>,
    /// Whether the cut removed a damaged record with valid records after it (as opposed to a
    /// plain torn tail, which opening would have cut anyway).
    pub damaged: bool,
    pub last_index: Option<u64>,
    /// The snapshot set aside, if there was one.
    pub snapshot_moved: Option<PathBuf>,
    /// Whole segments after the damage, removed.
    pub removed: Vec<PathBuf>,
    /// Sealed segments whose records were all intact but whose checksum failed (damage in
    /// padding): their checksum was recomputed; nothing was lost.
    pub resealed: Vec<PathBuf>,
}

pub fn salvage(dir: &Path) -> Result<Salvaged, StorageError> {
    let _lock = lock_dir(dir)?;
    let (log, recovery) = Log::salvage(&dir.join("log"), SEGMENT_BYTES)?;
    let mut snapshot_moved = None;
    if recovery.torn.is_some() {
        let committed = dir.join("log").join("committed.json");
        match std::fs::remove_file(&committed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&committed, e)),
        }
        let snapshot = dir.join(crate::snapshot::FILE);
        if snapshot.exists() {
            let aside = snapshot.with_extension("bin.pre-salvage");
            std::fs::rename(&snapshot, &aside).map_err(|e| StorageError::io(&snapshot, e))?;
            snapshot_moved = Some(aside);
        }
        crate::segment::sync_dir(dir)?;
    }
    Ok(Salvaged {
        cut: recovery.torn,
        damaged: recovery.salvaged,
        last_index: log.last_index(),
        snapshot_moved,
        removed: recovery.removed_after_damage,
        resealed: recovery.resealed,
    })
}
