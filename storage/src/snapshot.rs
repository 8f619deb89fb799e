//! The snapshot file: the engine state at a log id, written whole and atomically, so that a
//! restart loads it and Raft re-applies only the entries after it. A snapshot never replaces
//! the log: every event stays in the segments.
//!
//! Layout: magic `TALLYSNP`, format version (u32), meta length (u32), Raft snapshot meta (JSON),
//! the lsn index (`lsn.rs`), the producer table (`producers.rs`), the log's Merkle tree
//! (length as u64, then `LogTree::encode`), image length (u64), zero padding to a 16-byte
//! boundary, the engine image (`Ledger::encode_image`), and a CRC32C of everything before it.

use std::path::Path;

use openraft::{BasicNode, SnapshotMeta};
use tally_engine::log_tree::LogTree;
use tally_engine::Ledger;

use crate::error::StorageError;
use crate::lsn::LsnIndex;
use crate::producers::Producers;
use crate::raft::{NodeId, SmState};

pub const FILE: &str = "snapshot.bin";

/// openraft's description of a snapshot.
pub type Meta = SnapshotMeta<NodeId, BasicNode>;
const MAGIC: &[u8; 8] = b"TALLYSNP";
/// 2: with the producer table. 3: with the log's Merkle tree.
const VERSION: u32 = 3;

/// A parsed snapshot file, borrowing the engine image from the file's bytes.
pub struct SnapshotFile<'a> {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub lsns: LsnIndex,
    pub producers: Producers,
    pub tree: LogTree,
    image: &'a [u8],
}

fn bad(reason: impl std::fmt::Display) -> StorageError {
    StorageError::Invalid(format!("snapshot: {reason}"))
}

impl<'a> SnapshotFile<'a> {
    pub fn encode(
        meta: &SnapshotMeta<NodeId, BasicNode>,
        lsns: &LsnIndex,
        producers: &Producers,
        tree: &LogTree,
        ledger: &Ledger,
    ) -> Vec<u8> {
        let meta_json = serde_json::to_vec(meta).expect("snapshot meta serialises");
        let image = ledger.encode_image();
        let mut out = Vec::with_capacity(image.len() + meta_json.len() + 1024);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta_json);
        lsns.encode(&mut out);
        producers.encode(&mut out);
        let tree = tree.encode();
        out.extend_from_slice(&(tree.len() as u64).to_le_bytes());
        out.extend_from_slice(&tree);
        out.extend_from_slice(&(image.len() as u64).to_le_bytes());
        out.resize(out.len().next_multiple_of(16), 0);
        out.extend_from_slice(&image);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<SnapshotFile<'a>, StorageError> {
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(bad("not a Tally snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4"));
        if version != VERSION {
            return Err(bad(format!("format version {version}, this build reads {VERSION}")));
        }
        let meta_len = u32::from_le_bytes(body[12..16].try_into().expect("4")) as usize;
        let meta_end = 16usize
            .checked_add(meta_len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("truncated"))?;
        let meta = serde_json::from_slice(&body[16..meta_end]).map_err(bad)?;
        let (lsns, used) =
            LsnIndex::decode(&body[meta_end..]).ok_or_else(|| bad("bad lsn index"))?;
        let at = meta_end + used;
        let (producers, used) =
            Producers::decode(&body[at..]).ok_or_else(|| bad("bad producer table"))?;
        let at = at + used;
        let (tree, at) = decode_tree(body, at)?;
        let len = body.get(at..at + 8).ok_or_else(|| bad("truncated"))?;
        let image_len = u64::from_le_bytes(len.try_into().expect("8")) as usize;
        let start = (at + 8).next_multiple_of(16);
        let image = body
            .get(start..start.saturating_add(image_len))
            .ok_or_else(|| bad("truncated image"))?;
        Ok(SnapshotFile { meta, lsns, producers, tree, image })
    }

    pub fn into_state(self) -> Result<SmState, StorageError> {
        let ledger = Ledger::decode_image(self.image).map_err(bad)?;
        // Leaf i is lsn i + 1: a tree of another size belongs to another state.
        if self.tree.size() != ledger.last_lsn() {
            let (size, lsn) = (self.tree.size(), ledger.last_lsn());
            return Err(bad(format!("its log tree has {size} leaves, its ledger {lsn} events")));
        }
        Ok(SmState {
            ledger,
            last_applied: self.meta.last_log_id,
            membership: self.meta.last_membership.clone(),
            lsns: self.lsns,
            producers: self.producers,
            tree: crate::tree::StateTree::Inline(self.tree),
        })
    }
}

/// The tree at `at` (its length, then its encoding) and where what follows starts.
fn decode_tree(body: &[u8], at: usize) -> Result<(LogTree, usize), StorageError> {
    let len = body.get(at..at + 8).ok_or_else(|| bad("truncated"))?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().expect("8")))
        .map_err(|_| bad("tree length"))?;
    let start = at + 8;
    let bytes = body.get(start..start.saturating_add(len)).ok_or_else(|| bad("truncated tree"))?;
    let tree = LogTree::decode(bytes).map_err(bad)?;
    Ok((tree, start + len))
}

/// Loads the snapshot file at `path`, if there is one, reading it through a mapping (a
/// snapshot can be hundreds of megabytes; the image is decoded straight from the page cache).
pub fn load(path: &Path) -> Result<Option<(Meta, SmState)>, StorageError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    // SAFETY: read-only mapping of a file that is only ever replaced by rename (never written
    // in place) while this process holds the data directory's lock.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| StorageError::io(path, e))?;
    let parsed = SnapshotFile::decode(&map)?;
    let meta = parsed.meta.clone();
    Ok(Some((meta, parsed.into_state()?)))
}
