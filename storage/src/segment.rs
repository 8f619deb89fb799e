//! One segment file of the log: a 64-byte header, then records (`record.rs`) from offset 64.
//!
//! Header layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TALLYLOG` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | payload format: rkyv 0.8, little-endian, aligned, 32-bit relative pointers (`0x0002_0003`) |
//! | 16 | 8 | log index of the first record |
//! | 24 | 8 | sealed: end of data (0 while the segment is active) |
//! | 32 | 8 | sealed: log index of the last record |
//! | 40 | 4 | sealed: CRC32C of bytes 64..end of data |
//! | 44 | 16 | zero |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! Files are preallocated (`posix_fallocate`) so that appends never change the file's size or
//! block map, and `fdatasync` only has data to flush. Writes are positioned writes; the file is
//! read through a read-only shared mapping and is never written through it or shrunk.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Result, StorageError};
use crate::record::{self, Probe};

pub const HEADER_SIZE: u64 = 64;
const MAGIC: &[u8; 8] = b"TALLYLOG";
const FORMAT_VERSION: u32 = 1;
/// rkyv's format as this build writes it: bit 0 little-endian, bit 1 aligned, byte 2 the
/// relative pointer width in bytes, byte 3 the version of the batch record (1: with its
/// `Origin`). A build with other rkyv features or another record must refuse old files.
pub const PAYLOAD_FORMAT: u32 = 0x0104_0003;
/// The most slices one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;
/// A sparse index point every this many bytes of records.
const SPARSE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub data_end: u64,
    pub last_index: u64,
    pub data_crc: u32,
}

pub fn file_name(first_index: u64) -> String {
    format!("seg-{first_index:020}.log")
}

pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

fn encode_header(first_index: u64, sealed: Option<Sealed>) -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&PAYLOAD_FORMAT.to_le_bytes());
    h[16..24].copy_from_slice(&first_index.to_le_bytes());
    if let Some(s) = sealed {
        h[24..32].copy_from_slice(&s.data_end.to_le_bytes());
        h[32..40].copy_from_slice(&s.last_index.to_le_bytes());
        h[40..44].copy_from_slice(&s.data_crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_header(path: &Path, h: &[u8]) -> Result<(u64, Option<Sealed>)> {
    let bad = |reason: &str| StorageError::BadSegment { path: path.into(), reason: reason.into() };
    if h.len() < HEADER_SIZE as usize {
        return Err(bad("shorter than its header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4"));
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8"));
    if &h[0..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    if crc32c::crc32c(&h[0..60]) != u32_at(60) {
        return Err(bad("header checksum mismatch"));
    }
    if u32_at(8) != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            u32_at(8)
        )));
    }
    if u32_at(12) != PAYLOAD_FORMAT {
        return Err(bad(&format!(
            "payload format {:#x} (this build writes {PAYLOAD_FORMAT:#x})",
            u32_at(12)
        )));
    }
    let sealed = match u64_at(24) {
        0 => None,
        data_end => Some(Sealed { data_end, last_index: u64_at(32), data_crc: u32_at(40) }),
    };
    Ok((u64_at(16), sealed))
}

pub struct Segment {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub map: Mmap,
    pub first_index: u64,
    /// End of written records (offset of the next record).
    pub end: u64,
    /// Log index of the last record, if any.
    pub last_index: Option<u64>,
    pub sealed: Option<Sealed>,
    /// (log index, offset) of every record that starts a new `SPARSE_BYTES` stretch.
    pub sparse: Vec<(u64, u64)>,
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(dir, e))
}

impl Segment {
    /// Creates, preallocates and syncs a new, empty segment.
    pub fn create(dir: &Path, first_index: u64, size: u64) -> Result<Segment> {
        let path = dir.join(file_name(first_index));
        let io = |e| StorageError::io(&path, e);
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io)?;
        // SAFETY: a plain system call on a file descriptor we own; it reserves the blocks or
        // fails (ENOSPC), and touches no memory of ours.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if rc != 0 {
            let _ = std::fs::remove_file(&path);
            return Err(StorageError::io(&path, std::io::Error::from_raw_os_error(rc)));
        }
        file.write_all_at(&encode_header(first_index, None), 0).map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(dir)?;
        Self::map(path, file, first_index, None)
    }

    fn map(path: PathBuf, file: File, first_index: u64, sealed: Option<Sealed>) -> Result<Segment> {
        // SAFETY: the mapping is read-only and the file is never truncated while mapped (the
        // data directory is locked to this process, and segments are only ever deleted after
        // the mapping is dropped). Bytes may change under the mapping only beyond `end`, which
        // no reader looks at.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StorageError::io(&path, e))?;
        Ok(Segment {
            path,
            file: Arc::new(file),
            map,
            first_index,
            end: HEADER_SIZE,
            last_index: None,
            sealed,
            sparse: Vec::new(),
        })
    }

    /// Opens an existing segment and checks its header; records are not scanned.
    pub fn open(path: &Path) -> Result<Segment> {
        let io = |e| StorageError::io(path, e);
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let mut h = [0u8; HEADER_SIZE as usize];
        let n = file.read_at(&mut h, 0).map_err(io)?;
        let (first_index, sealed) = decode_header(path, &h[..n])?;
        let mut seg = Self::map(path.into(), file, first_index, sealed)?;
        if let Some(s) = sealed {
            if s.data_end > seg.map.len() as u64
                || s.data_end < HEADER_SIZE
                || s.last_index < first_index
            {
                return Err(StorageError::BadSegment {
                    path: path.into(),
                    reason: "sealed header out of range".into(),
                });
            }
            seg.end = s.data_end;
            seg.last_index = Some(s.last_index);
        }
        Ok(seg)
    }

    pub fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes that can still be appended (none once sealed).
    pub fn room(&self) -> u64 {
        if self.sealed.is_some() {
            0
        } else {
            self.capacity() - self.end
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.map[..]
    }

    /// Records a record placed at `offset` in the sparse index.
    pub fn note(&mut self, index: u64, offset: u64) {
        if self.sparse.last().is_none_or(|&(_, at)| offset >= at + SPARSE_BYTES) {
            self.sparse.push((index, offset));
        }
    }

    /// Writes `slices` (whole records, `len` bytes in all) at the end, gathered by the kernel
    /// from where they lie, so a batch's payload is never copied into a staging buffer first.
    /// Not durable until `sync`.
    pub fn write_vectored(&mut self, slices: &mut [IoSlice<'_>], len: u64) -> Result<()> {
        debug_assert!(self.sealed.is_none());
        debug_assert_eq!(slices.iter().map(|s| s.len() as u64).sum::<u64>(), len);
        assert!(self.end + len <= self.capacity(), "segment overflow");
        write_all_vectored_at(&self.file, slices, self.end)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.end += len;
        Ok(())
    }

    /// Checksums the records and writes the sealed header; after this the segment is never
    /// written again, and opening it needs no scan.
    pub fn seal(&mut self) -> Result<()> {
        let Some(last_index) = self.last_index else { return Ok(()) };
        let data_crc = crc32c::crc32c(&self.map[HEADER_SIZE as usize..self.end as usize]);
        let sealed = Sealed { data_end: self.end, last_index, data_crc };
        let io = |e| StorageError::io(&self.path, e);
        self.file.sync_data().map_err(io)?;
        self.file.write_all_at(&encode_header(self.first_index, Some(sealed)), 0).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.sealed = Some(sealed);
        Ok(())
    }

    /// Recomputes a sealed segment's checksum (`tally verify`, background checks).
    pub fn verify_sealed(&self) -> Result<()> {
        let Some(s) = self.sealed else { return Ok(()) };
        let crc = crc32c::crc32c(&self.map[HEADER_SIZE as usize..s.data_end as usize]);
        if crc != s.data_crc {
            return Err(StorageError::SealedChecksum {
                path: self.path.clone(),
                reason: format!("stored {:#010x}, computed {crc:#010x}", s.data_crc),
            });
        }
        Ok(())
    }

    /// The offset and log index of the first record of a sealed segment that fails its checks
    /// (`None`: every record is intact).
    pub fn first_damaged(&self) -> Option<(u64, u64)> {
        let end = self.sealed.expect("sealed").data_end as usize;
        let (mut at, mut expected) = (HEADER_SIZE as usize, self.first_index);
        while at < end {
            match record::probe(&self.map[..end], at) {
                Probe::Valid { header, size, .. } if header.index == expected => {
                    at += size;
                    expected += 1;
                }
                _ => return Some((at as u64, expected)),
            }
        }
        None
    }

    /// Recomputes a sealed segment's checksum over records that are all intact (salvage).
    pub fn reseal(&mut self) -> Result<()> {
        self.sealed = None;
        self.seal()
    }

    /// Cuts a sealed segment before its damaged record at `offset` (log index `index`): the
    /// bytes from there are zeroed and the header is rewritten as an active segment's, so the
    /// log continues here. For salvage only; the caller removes every later segment.
    pub fn unseal_at(&mut self, offset: u64, index: u64) -> Result<()> {
        self.zero(offset, self.end)?;
        let io = |e| StorageError::io(&self.path, e);
        self.file.write_all_at(&encode_header(self.first_index, None), 0).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        let _ = std::fs::remove_file(index_path(&self.path));
        self.sealed = None;
        self.end = offset;
        self.last_index = (index > self.first_index).then(|| index - 1);
        Ok(())
    }

    /// Overwrites the bytes at `offset` with `bytes` and syncs them (repairing a damaged
    /// record of a sealed segment: `repair.rs`).
    pub fn overwrite(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        assert!(offset >= HEADER_SIZE && offset + bytes.len() as u64 <= self.end);
        let io = |e| StorageError::io(&self.path, e);
        self.file.write_all_at(bytes, offset).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Overwrites `from..to` with zeros and syncs it.
    pub fn zero(&self, from: u64, to: u64) -> Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at).map_err(|e| StorageError::io(&self.path, e))?;
            at += n as u64;
        }
        self.file.sync_data().map_err(|e| StorageError::io(&self.path, e))
    }

    /// Walks the records of a sealed segment to rebuild its sparse index when its index file
    /// is missing or damaged.
    pub fn index_sealed(&mut self) -> Result<()> {
        let s = self.sealed.expect("sealed");
        let mut at = HEADER_SIZE as usize;
        self.sparse.clear();
        while (at as u64) < s.data_end {
            match record::probe(&self.map[..s.data_end as usize], at) {
                Probe::Valid { header, size, .. } => {
                    self.note(header.index, at as u64);
                    at += size;
                }
                _ => {
                    return Err(StorageError::SealedChecksum {
                        path: self.path.clone(),
                        reason: format!("unreadable record at offset {at}"),
                    })
                }
            }
        }
        Ok(())
    }

    /// Offset of record `index`, walking from the nearest sparse point (`None` when the segment
    /// does not hold it). A damaged record on the way is an error naming it: the walk cannot
    /// know where the records after it start.
    pub fn offset_of(&self, index: u64) -> Result<Option<u64>> {
        if index < self.first_index || self.last_index.is_none_or(|l| index > l) {
            return Ok(None);
        }
        let k = self.sparse.partition_point(|&(i, _)| i <= index);
        let (mut expected, at) =
            if k == 0 { (self.first_index, HEADER_SIZE) } else { self.sparse[k - 1] };
        let mut at = at as usize;
        loop {
            match record::probe(&self.map[..self.end as usize], at) {
                Probe::Valid { header, size, .. } if header.index == expected => {
                    if header.index == index {
                        return Ok(Some(at as u64));
                    }
                    at += size;
                    expected += 1;
                }
                _ => return Err(self.damaged(at as u64, expected)),
            }
        }
    }

    /// The error for a record of this segment that fails its checks.
    pub fn damaged(&self, offset: u64, index: u64) -> StorageError {
        StorageError::Damaged { path: self.path.clone(), offset, index }
    }
}

/// The sparse index of a sealed segment, kept beside it (`seg-N.idx`) so that opening the log
/// reads no records of sealed segments: magic `TALLYIDX`, count (u64), then (index, offset)
/// pairs (u64 each), then a CRC32C of everything before it.
pub fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

pub fn write_index(segment: &Segment) -> Result<()> {
    let mut b = Vec::with_capacity(20 + segment.sparse.len() * 16);
    b.extend_from_slice(b"TALLYIDX");
    b.extend_from_slice(&(segment.sparse.len() as u64).to_le_bytes());
    for &(i, o) in &segment.sparse {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    crate::meta::write_atomic(&index_path(&segment.path), &b)
}

pub fn read_index(segment: &Path) -> Option<Vec<(u64, u64)>> {
    let b = std::fs::read(index_path(segment)).ok()?;
    if b.len() < 20 || &b[..8] != b"TALLYIDX" {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let n = u64::from_le_bytes(body[8..16].try_into().ok()?) as usize;
    if body.len() != 16 + n.checked_mul(16)? {
        return None;
    }
    let pairs = body[16..].chunks_exact(16);
    Some(
        pairs
            .map(|p| {
                (
                    u64::from_le_bytes(p[..8].try_into().unwrap()),
                    u64::from_le_bytes(p[8..].try_into().unwrap()),
                )
            })
            .collect(),
    )
}

/// `pwritev` of all of `slices` at `offset`, resumed after a short write or an interrupt.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    let mut at = offset;
    while !slices.is_empty() {
        let count = slices.len().min(MAX_IOVECS);
        let position = libc::off_t::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
        // SAFETY: on Unix `IoSlice` is guaranteed ABI-compatible with `struct iovec`, and the
        // `count` slices it points at are borrowed for the whole call.
        let written = unsafe {
            libc::pwritev(file.as_raw_fd(), slices.as_ptr().cast(), count as libc::c_int, position)
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        at += written as u64;
        IoSlice::advance_slices(&mut slices, written as usize);
    }
    Ok(())
}
