//! The segmented append-only log: a directory of segment files (`segment.rs`) holding records
//! (`record.rs`) with dense, increasing log indexes. Owns appending, recovery on open,
//! truncation of an uncommitted tail, and reading records in place.
//!
//! Never: writes through a mapping, skips a damaged record, deletes a record that may be
//! committed (Raft's `purge` does not reach this module), or acknowledges anything itself —
//! durability is the flusher's (`flusher.rs`).

use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::record::{self, Header, Kind, Probe};
use crate::segment::{self, Segment, HEADER_SIZE};

/// Default size of a segment file.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record (a ledger batch is at most 256 MiB of SQL input; its record is smaller).
pub const MAX_RECORD_BYTES: usize = 512 * 1024 * 1024;

/// Zeros for the padding after a record (less than one alignment unit).
const ZEROS: [u8; record::ALIGN] = [0; record::ALIGN];

/// Records gathered for one positioned write: the slices (header, payload, padding of each)
/// and where each record starts in the segment.
#[derive(Default)]
struct Run<'a> {
    slices: Vec<IoSlice<'a>>,
    placed: Vec<(u64, u64)>,
    bytes: u64,
}

/// A record about to be appended.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub index: u64,
    pub term: u64,
    pub node: u64,
    pub kind: Kind,
    pub payload: &'a [u8],
}

/// A record read in place.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A partial or garbled last write that was cut off.
    pub torn: Option<TornTail>,
    /// Segments whose index file had to be rebuilt by reading them.
    pub reindexed: Vec<PathBuf>,
    /// An empty segment whose creation was interrupted, removed.
    pub removed_empty: Option<PathBuf>,
    /// The cut (`torn`) was at a damaged record with valid records after it (`Log::salvage`).
    pub salvaged: bool,
    /// Segments after a damaged sealed segment, removed by `Log::salvage`.
    pub removed_after_damage: Vec<PathBuf>,
    /// Sealed segments whose checksum failed while every record in them is intact (damage in
    /// padding): their checksum was recomputed by `Log::salvage`.
    pub resealed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    /// The log index the cut record would have had.
    pub index: u64,
    pub bytes: u64,
}

pub struct Log {
    dir: PathBuf,
    segments: Vec<Segment>,
    segment_bytes: u64,
    /// Index the next appended record must have (None: empty log, any index may start it).
    next: Option<u64>,
    /// Every record with an index below this is on disk (fsynced). Shared with the flusher.
    durable: Arc<AtomicU64>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from an interrupted write.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Log, Recovery)> {
        Self::open_mode(dir, segment_bytes, false)
    }

    /// Opens a log that `open` or a read refused as damaged, cutting it at its first damaged
    /// record, in a sealed segment (whose later records are zeroed and later segments removed)
    /// or in the last one. Explicit and destructive: for `tally salvage` only.
    pub fn salvage(dir: &Path, segment_bytes: u64) -> Result<(Log, Recovery)> {
        Self::open_mode(dir, segment_bytes, true)
    }

    fn open_mode(dir: &Path, segment_bytes: u64, salvage: bool) -> Result<(Log, Recovery)> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| StorageError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                segment::parse_file_name(&name).map(|first| (first, e.path()))
            })
            .collect();
        names.sort();
        let mut recovery = Recovery::default();
        if salvage {
            cut_at_sealed_damage(dir, &mut names, &mut recovery)?;
        }
        let mut segments: Vec<Segment> = Vec::new();
        let count = names.len();
        for (k, (first, path)) in names.into_iter().enumerate() {
            let last = k + 1 == count;
            let mut seg = match Segment::open(&path) {
                Ok(seg) => seg,
                Err(e) if last && is_zero_file_head(&path) => {
                    // Creation was interrupted before its header reached the disk: it never
                    // held a record.
                    let _ = e;
                    std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                    segment::sync_dir(dir)?;
                    recovery.removed_empty = Some(path);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if seg.first_index != first {
                return Err(StorageError::BadSegment {
                    path,
                    reason: "name and header disagree on the first index".into(),
                });
            }
            if seg.sealed.is_some() {
                match segment::read_index(&seg.path) {
                    Some(sparse) => seg.sparse = sparse,
                    None => {
                        seg.index_sealed()?;
                        segment::write_index(&seg)?;
                        recovery.reindexed.push(seg.path.clone());
                    }
                }
            } else {
                scan_active(&mut seg, last, salvage, &mut recovery)?;
            }
            // Segments never overlap; a gap is where Raft installed a snapshot past the log's
            // end (`start_at`).
            if let Some(prev) = segments.last() {
                let expected = prev.last_index.map_or(prev.first_index, |l| l + 1);
                if seg.first_index < expected {
                    return Err(StorageError::BadSegment {
                        path: seg.path.clone(),
                        reason: format!(
                            "starts at log index {}, expected {expected}",
                            seg.first_index
                        ),
                    });
                }
            }
            segments.push(seg);
        }
        // An unsealed segment before the last one (a seal interrupted by a crash) is sealed now.
        let n = segments.len();
        for seg in segments.iter_mut().take(n.saturating_sub(1)) {
            if seg.sealed.is_none() {
                seg.seal()?;
                segment::write_index(seg)?;
            }
        }
        let next = segments.last().map(|s| s.last_index.map_or(s.first_index, |l| l + 1));
        let durable = Arc::new(AtomicU64::new(next.unwrap_or(0)));
        Ok((Log { dir: dir.into(), segments, segment_bytes, next, durable }, recovery))
    }

    /// Shared counter: every index below it is durable.
    pub fn durable(&self) -> Arc<AtomicU64> {
        self.durable.clone()
    }

    pub fn first_index(&self) -> Option<u64> {
        self.segments.iter().find(|s| s.last_index.is_some()).map(|s| s.first_index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.last_index)
    }

    /// The segment at `path`, to repair it (`repair.rs`).
    pub(crate) fn segment_mut(&mut self, path: &Path) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.path == path)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Writes records (not yet durable) and returns the file that must be synced to make them
    /// durable. Records are never split across segments; a full segment is sealed first.
    pub fn append(&mut self, records: &[NewRecord<'_>]) -> Result<Option<Arc<File>>> {
        let window = self.durable.load(Ordering::Acquire);
        let mut headers = Vec::with_capacity(records.len());
        let first = self.next.or_else(|| records.first().map(|r| r.index));
        for (n, r) in records.iter().enumerate() {
            // Checked before anything is written: a refused append writes nothing.
            let expected = first.unwrap_or(r.index) + n as u64;
            if r.index != expected {
                return Err(StorageError::OutOfOrder { expected, got: r.index });
            }
            let size = record::align(record::HEADER + r.payload.len());
            if size > MAX_RECORD_BYTES {
                return Err(StorageError::RecordTooLarge { bytes: size, max: MAX_RECORD_BYTES });
            }
            let header =
                Header { index: r.index, term: r.term, node: r.node, window, kind: r.kind };
            headers.push(record::header_bytes(&header, r.payload));
        }
        let mut run = Run::default();
        for (r, header) in records.iter().zip(&headers) {
            let size = record::align(record::HEADER + r.payload.len()) as u64;
            let room = self.segments.last().map_or(0, |s| s.room()).saturating_sub(run.bytes);
            if self.segments.is_empty() || size > room {
                self.write_run(&mut run)?;
                self.roll(r.index, size)?;
            }
            let seg = self.segments.last().expect("active segment");
            run.placed.push((r.index, seg.end + run.bytes));
            run.slices.push(IoSlice::new(header));
            run.slices.push(IoSlice::new(r.payload));
            let pad = record::padding(r.payload.len());
            if pad > 0 {
                run.slices.push(IoSlice::new(&ZEROS[..pad]));
            }
            run.bytes += size;
            self.next = Some(r.index + 1);
        }
        self.write_run(&mut run)?;
        Ok(self.segments.last().map(|s| s.file.clone()))
    }

    /// Writes the records gathered in `run` at the end of the active segment and notes where
    /// each one lies.
    fn write_run(&mut self, run: &mut Run<'_>) -> Result<()> {
        if run.slices.is_empty() {
            return Ok(());
        }
        let seg = self.segments.last_mut().expect("active segment");
        seg.write_vectored(&mut run.slices, run.bytes)?;
        for &(index, offset) in &run.placed {
            seg.note(index, offset);
            seg.last_index = Some(index);
        }
        run.slices.clear();
        run.placed.clear();
        run.bytes = 0;
        Ok(())
    }

    /// Seals the active segment and starts a new one whose first record is `first_index`.
    fn roll(&mut self, first_index: u64, record_size: u64) -> Result<()> {
        if let Some(active) = self.segments.last_mut() {
            if active.last_index.is_none() {
                // An empty active segment (fresh log or after truncation to its start) is
                // reused only if it starts at the right index and the record fits.
                if active.first_index == first_index
                    && record_size <= active.capacity() - active.end
                {
                    return Ok(());
                }
                let path = active.path.clone();
                self.segments.pop();
                std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            } else if active.sealed.is_none() {
                // Sealed already when an earlier roll could not create its successor (disk
                // full): it stays sealed, and this roll tries again.
                active.seal()?;
                segment::write_index(active)?;
            }
        }
        let size = self.segment_bytes.max(HEADER_SIZE + record_size).next_multiple_of(4096);
        self.segments.push(Segment::create(&self.dir, first_index, size)?);
        Ok(())
    }

    /// Makes the active segment able to take `bytes` more: if it cannot, seals it and creates
    /// the next one now (large enough for `bytes`), so that the appends to come create no file.
    pub fn ensure_room(&mut self, bytes: u64) -> Result<()> {
        let (Some(next), Some(active)) = (self.next, self.segments.last()) else { return Ok(()) };
        if active.room() >= bytes {
            return Ok(());
        }
        self.roll(next, bytes)
    }

    /// Continues the log at `index`, beyond its end (Raft installed a snapshot past it): the
    /// active segment is sealed and a new one starts at `index`.
    pub fn start_at(&mut self, index: u64) -> Result<()> {
        if self.next.is_some_and(|n| index < n) {
            return Err(StorageError::OutOfOrder { expected: self.next.unwrap_or(0), got: index });
        }
        self.roll(index, 0)?;
        self.next = Some(index);
        Ok(())
    }

    /// Removes every record with index >= `from` (an uncommitted tail that conflicts with the
    /// leader's log). The removed bytes are zeroed and synced before returning, so that a
    /// crash cannot bring them back behind newer records.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        while let Some(seg) = self.segments.last() {
            if seg.first_index < from || (seg.first_index == from && self.segments.len() == 1) {
                break;
            }
            let seg = self.segments.pop().expect("checked");
            let path = seg.path.clone();
            drop(seg);
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            let _ = std::fs::remove_file(segment::index_path(&path));
            segment::sync_dir(&self.dir)?;
        }
        if let Some(seg) = self.segments.last_mut() {
            let cut = if seg.last_index.is_some_and(|l| l >= from) {
                seg.offset_of(from)?.expect("index in segment")
            } else {
                seg.end
            };
            if cut < seg.end {
                if seg.sealed.is_some() {
                    return Err(StorageError::Invalid(format!(
                        "refusing to truncate sealed segment {} (log index {from})",
                        seg.path.display()
                    )));
                }
                seg.zero(cut, seg.end)?;
                seg.end = cut;
                seg.last_index = (from > seg.first_index).then(|| from - 1);
                seg.sparse.retain(|&(i, _)| i < from);
            }
            self.next = Some(seg.last_index.map_or(seg.first_index, |l| l + 1));
        } else {
            self.next = None;
        }
        let next = self.next.unwrap_or(0);
        self.durable.fetch_min(next, Ordering::AcqRel);
        Ok(())
    }

    /// The record at `index`, read in place (`None` when the log does not hold it).
    pub fn read(&self, index: u64) -> Result<Option<RecordRef<'_>>> {
        let k = self.segments.partition_point(|s| s.first_index <= index);
        let Some(seg) = k.checked_sub(1).and_then(|k| self.segments.get(k)) else {
            return Ok(None);
        };
        let Some(at) = seg.offset_of(index)? else { return Ok(None) };
        let at = at as usize;
        match record::probe(&seg.data()[..seg.end as usize], at) {
            Probe::Valid { header, len, .. } => {
                Ok(Some(RecordRef { header, payload: record::payload(seg.data(), at, len) }))
            }
            _ => Err(seg.damaged(at as u64, index)),
        }
    }

    /// Records from `from` (inclusive) to the end, in order. A record that fails its checks
    /// ends the walk with an error naming it: nothing after damage is ever skipped to.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<RecordRef<'_>>> + '_ {
        let start = self.segments.partition_point(|s| s.first_index <= from).saturating_sub(1);
        let mut failed = false;
        self.segments[start..]
            .iter()
            .flat_map(move |seg| SegmentRecords::new(seg, from))
            .take_while(move |r| !std::mem::replace(&mut failed, r.is_err()))
    }
    /// Checks the checksums of every sealed segment (the active one is checked record by
    /// record on every open). Returns the number of segments checked.
    pub fn verify_sealed(&self) -> Result<usize> {
        let mut n = 0;
        for seg in self.segments.iter().filter(|s| s.sealed.is_some()) {
            seg.verify_sealed()?;
            n += 1;
        }
        Ok(n)
    }

    /// Bytes of records on disk (headers and padding included).
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.end - HEADER_SIZE).sum()
    }
}

/// The records of one segment from a given index on.
struct SegmentRecords<'a> {
    seg: &'a Segment,
    /// Offset and log index of the next record; `None` once done.
    at: Option<(usize, u64)>,
    /// An error to yield first (the start could not be found).
    error: Option<StorageError>,
}

impl<'a> SegmentRecords<'a> {
    fn new(seg: &'a Segment, from: u64) -> SegmentRecords<'a> {
        if seg.first_index >= from {
            let at = Some((HEADER_SIZE as usize, seg.first_index));
            return SegmentRecords { seg, at, error: None };
        }
        match seg.offset_of(from) {
            Ok(at) => SegmentRecords { seg, at: at.map(|o| (o as usize, from)), error: None },
            Err(e) => SegmentRecords { seg, at: None, error: Some(e) },
        }
    }
}

impl<'a> Iterator for SegmentRecords<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let (pos, expected) = self.at?;
        let seg = self.seg;
        if pos as u64 >= seg.end {
            self.at = None;
            return None;
        }
        match record::probe(&seg.data()[..seg.end as usize], pos) {
            Probe::Valid { header, len, size } if header.index == expected => {
                self.at = Some((pos + size, expected + 1));
                Some(Ok(RecordRef { header, payload: record::payload(seg.data(), pos, len) }))
            }
            _ => {
                self.at = None;
                Some(Err(seg.damaged(pos as u64, expected)))
            }
        }
    }
}

/// Salvage's first pass: finds the first sealed segment whose checksum fails. If one of its
/// records is damaged, the segment is cut there (and unsealed, so that opening treats it as the
/// active segment) and every later segment is removed; if its records are all intact (the
/// damage is in padding), its checksum is recomputed.
fn cut_at_sealed_damage(
    dir: &Path,
    names: &mut Vec<(u64, PathBuf)>,
    recovery: &mut Recovery,
) -> Result<()> {
    for k in 0..names.len() {
        let mut seg = Segment::open(&names[k].1)?;
        if seg.sealed.is_none() || seg.verify_sealed().is_ok() {
            continue;
        }
        let Some((offset, index)) = seg.first_damaged() else {
            seg.reseal()?;
            recovery.resealed.push(seg.path.clone());
            continue;
        };
        let bytes = seg.end - offset;
        seg.unseal_at(offset, index)?;
        recovery.torn = Some(TornTail { path: seg.path.clone(), offset, index, bytes });
        recovery.salvaged = true;
        for (_, later) in names.drain(k + 1..) {
            std::fs::remove_file(&later).map_err(|e| StorageError::io(&later, e))?;
            let _ = std::fs::remove_file(segment::index_path(&later));
            recovery.removed_after_damage.push(later);
        }
        segment::sync_dir(dir)?;
        return Ok(());
    }
    Ok(())
}

fn is_zero_file_head(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.iter().take(HEADER_SIZE as usize).all(|&x| x == 0))
        .unwrap_or(false)
}

/// Reads the records of an unsealed segment, checking each, and decides what a bad record
/// means: the torn tail of an interrupted write (cut it) or damage to a durable record (stop).
fn scan_active(
    seg: &mut Segment,
    last: bool,
    salvage: bool,
    recovery: &mut Recovery,
) -> Result<()> {
    let data_len = seg.capacity() as usize;
    let mut at = HEADER_SIZE as usize;
    let mut expected = seg.first_index;
    loop {
        match record::probe(&seg.data()[..data_len], at) {
            Probe::Valid { header, size, .. } if header.index == expected => {
                seg.note(header.index, at as u64);
                seg.last_index = Some(header.index);
                expected += 1;
                at += size;
            }
            Probe::End if rest_is_zero(seg.data(), at) => break,
            _ => {
                // A bad record (or a record out of sequence, or garbage after a zero word).
                // Any valid record after it that was written once this one was durable
                // proves damage to a durable record; otherwise this is the unsynced tail.
                let later = (at + record::ALIGN..data_len).step_by(record::ALIGN).find_map(|p| {
                    match record::probe(&seg.data()[..data_len], p) {
                        Probe::Valid { header, .. } if header.window > expected => Some(header),
                        _ => None,
                    }
                });
                if !last || (later.is_some() && !salvage) {
                    return Err(StorageError::Corrupt {
                        path: seg.path.clone(),
                        offset: at as u64,
                        index: expected,
                        last_good: expected.saturating_sub(1),
                    });
                }
                let dirty_end = last_nonzero(seg.data(), at).max(at) as u64;
                let dirty_end =
                    (dirty_end + 1).next_multiple_of(record::ALIGN as u64).min(data_len as u64);
                seg.zero(at as u64, dirty_end)?;
                recovery.salvaged = later.is_some();
                recovery.torn = Some(TornTail {
                    path: seg.path.clone(),
                    offset: at as u64,
                    index: expected,
                    bytes: dirty_end - at as u64,
                });
                break;
            }
        }
    }
    seg.end = at as u64;
    Ok(())
}

fn rest_is_zero(data: &[u8], from: usize) -> bool {
    data[from.min(data.len())..].iter().all(|&b| b == 0)
}

fn last_nonzero(data: &[u8], from: usize) -> usize {
    data[from..].iter().rposition(|&b| b != 0).map_or(from, |p| from + p)
}
