//! Small files written whole and atomically (vote, committed and purged log ids, index files):
//! write a temporary file, fsync it, rename it over the old one, fsync the directory. A reader
//! sees the old content or the new, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::segment::sync_dir;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |e| StorageError::io(path, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a file written by `write_atomic`; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}
