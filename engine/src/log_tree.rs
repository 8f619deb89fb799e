//! The event log's Merkle tree (RFC 9162 with SHA-256): leaf `lsn - 1` is the
//! event with that lsn, hashed as SHA-256(0x00 ‖ lsn u64 BE ‖ ts µs i64 BE ‖
//! `events.body`); interior nodes and roots as in `merkle.rs`. The tree grows
//! by `push` as events are applied, O(log n) and never touching the past, and
//! answers for any size up to its own: the root, inclusion proofs (RFC 9162
//! PATH) and consistency proofs (PROOF / SUBPROOF).
//!
//! This module owns the tree's state and its snapshot encoding. It must never
//! do I/O: the leaf hashes it does not keep come from the caller through
//! `Leaves`, and it checks each block read against the block hash it keeps
//! before using it, so a wrong or damaged read gives an error, never a wrong
//! proof. It never removes a leaf: the log is append-only, and so is this.
//!
//! Memory. Every leaf hash would cost 32 B per event (3.2 GB at 10^8 events).
//! The tree keeps the root of every complete, aligned subtree of 2^k leaves
//! for k ≥ `BLOCK_LEVEL` (blocks of 256 leaves and all nodes above them:
//! 2 × 32 B / 256 = 0.25 B per event), plus the leaf hashes of the incomplete
//! last block. A node below block level is recomputed from its block's leaf
//! hashes, read back through `Leaves` one whole block at a time.
//!
//! Why that is enough. RFC 9162 splits D[lo:hi) at lo + k, k the largest power
//! of two below hi − lo. Every range its recursions (MTH, PATH, SUBPROOF) visit
//! from [0, n) starts at a multiple of the smallest power of two ≥ its length:
//! true of [0, n); the left part [lo, lo + k) is then an *aligned* power-of-two
//! subtree (a stored node when k ≥ 256, else a node inside one block), and the
//! right part starts at lo + k, a multiple of k ≥ its length. A range that
//! starts so aligned has as MTH the right fold of the aligned complete
//! subtrees given by the binary digits of its length, largest first. So a
//! proof needs stored nodes plus nodes inside two blocks at most: the block
//! of the proved leaf (or of the old tree's last leaf) and the last block of
//! the tree size asked for. The incomplete last block is never read: its
//! leaf hashes are kept.

use crate::event::Event;
use crate::merkle::{empty_root, leaf_hash_concat, node_hash, root_from_leaf_hashes, Hash};
use crate::state::Applied;

/// Height of the lowest stored nodes: blocks of 2^8 = 256 leaves. Memory is
/// 2 × 32 B / 2^level per leaf (0.25 B here); a proof reads up to two blocks
/// of 2^level events back from the log (512 here).
pub const BLOCK_LEVEL: u32 = 8;

/// Largest block level `with_block_level` takes: blocks of 65536 leaves are
/// already more than a proof should read back from the log.
pub const MAX_BLOCK_LEVEL: u32 = 16;

/// First byte of `encode`'s output.
const ENCODING_VERSION: u8 = 1;
const HASH_BYTES: usize = 32;
/// Version, block level, size (u64 little-endian), root.
const HEADER_BYTES: usize = 1 + 1 + 8 + HASH_BYTES;

/// The leaf hash of one logged event: SHA-256(0x00 ‖ lsn as u64 big-endian ‖
/// ts in microseconds as i64 big-endian ‖ the `events.body` bytes).
pub fn log_leaf_hash(lsn: u64, ts_micros: i64, body: &[u8]) -> Hash {
    leaf_hash_concat(&[&lsn.to_be_bytes(), &ts_micros.to_be_bytes(), body])
}

/// The leaf hash of `event` at `lsn` and `ts`: its `events.body` (canonical JSON) hashed
/// with them by `log_leaf_hash`.
pub fn event_leaf_hash(lsn: u64, ts_micros: i64, event: &Event, body: &mut String) -> Hash {
    body.clear();
    crate::json::write_body(event, body);
    log_leaf_hash(lsn, ts_micros, body.as_bytes())
}

/// The leaf hashes of a batch applied as `applied` (its events share the batch's ts), on the
/// calling thread: the expensive part of growing the tree (a canonical JSON body and a
/// SHA-256 per event), which the caller may do away from whatever it must not hold up.
pub fn batch_leaf_hashes(events: &[Event], applied: Applied) -> Vec<Hash> {
    let mut body = String::with_capacity(256);
    let leaf = |(k, event): (usize, &Event)| {
        event_leaf_hash(applied.first_lsn + k as u64, applied.ts, event, &mut body)
    };
    events.iter().enumerate().map(leaf).collect()
}

/// Where the leaf hashes the tree does not keep come from (storage reads the
/// events back from the log and hashes them with `log_leaf_hash`).
pub trait Leaves {
    /// The hashes of leaves [from, to), in order; leaf i is the event with lsn
    /// i + 1. The tree asks for whole blocks of its complete part only: `from`
    /// a multiple of `LogTree::block_leaves`, `to = from + block_leaves`.
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, String>;
}

/// Leaf hashes held in memory: tests and small tools.
impl Leaves for Vec<Hash> {
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, String> {
        let range = usize::try_from(from).ok().zip(usize::try_from(to).ok());
        match range.and_then(|(from, to)| self.get(from..to)) {
            Some(hashes) => Ok(hashes.to_vec()),
            None => Err(format!("leaves [{from}, {to}) are not among the {} held", self.len())),
        }
    }
}

/// Why a root or proof could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} is larger than the log's {tree_size} leaves")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    #[error("old tree size {old} is larger than the new tree size {new}")]
    OldAfterNew { old: u64, new: u64 },
    #[error("reading leaves [{from}, {to}): {reason}")]
    Read { from: u64, to: u64, reason: String },
    #[error("reading leaves [{from}, {to}) gave {got} hashes")]
    ReadCount { from: u64, to: u64, got: usize },
    #[error(
        "leaves [{from}, {to}) do not hash to the tree's block: the log and the tree disagree"
    )]
    ReadMismatch { from: u64, to: u64 },
}

/// Why `LogTree::decode` refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("log tree encoding of {got} bytes is shorter than its {header}-byte header", header = HEADER_BYTES)]
    Short { got: usize },
    #[error("log tree encoding version {0}, expected {v}", v = ENCODING_VERSION)]
    Version(u8),
    #[error("log tree block level {0} is above {max}", max = MAX_BLOCK_LEVEL)]
    BlockLevel(u8),
    #[error("log tree encoding of {got} bytes, expected {expected} for {size} leaves")]
    Length { size: u64, expected: u128, got: usize },
    #[error("log tree encoding's hashes do not give its recorded root")]
    Root,
}

/// The append-only Merkle tree over the log's leaf hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTree {
    block_level: u32,
    size: u64,
    /// `levels[j][i]`: the MTH of leaves [i·2^h, (i+1)·2^h), h = block_level +
    /// j; every complete aligned subtree at or above block level, in order.
    levels: Vec<Vec<Hash>>,
    /// The leaf hashes of the incomplete last block.
    tail: Vec<Hash>,
    /// The roots of the complete aligned subtrees that make up `tail`, largest
    /// first (one per set bit of its length): `root` folds them, no rehash.
    peaks: Vec<Hash>,
}

impl Default for LogTree {
    fn default() -> Self {
        Self::new()
    }
}

impl LogTree {
    /// An empty tree with blocks of 2^`BLOCK_LEVEL` leaves.
    pub fn new() -> Self {
        Self::with_block_level(BLOCK_LEVEL)
    }

    /// An empty tree with blocks of 2^`block_level` leaves (0: every node kept,
    /// no reads). Roots and proofs do not depend on it; memory and reads do.
    ///
    /// # Panics
    ///
    /// If `block_level > MAX_BLOCK_LEVEL`: a programming error, never input.
    pub fn with_block_level(block_level: u32) -> Self {
        assert!(block_level <= MAX_BLOCK_LEVEL, "block level {block_level} > {MAX_BLOCK_LEVEL}");
        LogTree {
            block_level,
            size: 0,
            levels: Vec::new(),
            tail: Vec::with_capacity(1 << block_level),
            peaks: Vec::with_capacity(block_level as usize),
        }
    }

    /// Number of leaves: the log's last lsn.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Leaves per block: what one `Leaves::leaves` call returns.
    pub fn block_leaves(&self) -> u64 {
        1 << self.block_level
    }

    /// Appends the next leaf (index `size()`). One SHA-256 per node it
    /// completes (one per push on average), no allocation in the steady state.
    pub fn push(&mut self, leaf: Hash) {
        let index = self.size;
        self.size += 1;
        let mut node = leaf;
        let mut height = 0;
        // Each trailing 1 bit of the index below block level completes a
        // subtree inside the block whose left half is the last peak.
        while height < self.block_level && (index >> height) & 1 == 1 {
            let left = self.peaks.pop().expect("a trailing 1 bit means a pending left peak");
            node = node_hash(&left, &node);
            height += 1;
        }
        if height < self.block_level {
            self.tail.push(leaf);
            self.peaks.push(node);
        } else {
            self.tail.clear();
            self.push_block(node);
        }
    }

    /// Pushes the leaves of a batch applied as `applied` (its lsns follow the tree's size).
    /// Returns the (size, root) right after each settlement event in it: where an epoch
    /// closed.
    pub fn push_batch(&mut self, events: &[Event], applied: Applied) -> Vec<(u64, Hash)> {
        assert_eq!(self.size + 1, applied.first_lsn, "a batch's leaves follow the tree's");
        self.push_leaves(events, &batch_leaf_hashes(events, applied))
    }

    /// `push_batch` with the leaves hashed already (`batch_leaf_hashes`).
    pub fn push_leaves(&mut self, events: &[Event], leaves: &[Hash]) -> Vec<(u64, Hash)> {
        assert_eq!(events.len(), leaves.len(), "one leaf per event");
        let mut closes = Vec::new();
        for (event, leaf) in events.iter().zip(leaves) {
            self.push(*leaf);
            if matches!(event, Event::Settlement(_)) {
                closes.push((self.size, self.root()));
            }
        }
        closes
    }

    /// Stores a completed block and every node above it that it completes.
    fn push_block(&mut self, block: Hash) {
        let mut node = block;
        let mut j = 0;
        loop {
            if j == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[j];
            level.push(node);
            let n = level.len();
            if n % 2 == 1 {
                return;
            }
            node = node_hash(&level[n - 2], &level[n - 1]);
            j += 1;
        }
    }

    /// MTH of the whole tree (SHA-256("") when empty), from kept nodes only.
    pub fn root(&self) -> Hash {
        let mut pieces = Vec::with_capacity(u64::BITS as usize);
        for height in (self.block_level..u64::BITS).rev() {
            let count = self.size >> height;
            if count & 1 == 1 {
                let level = (height - self.block_level) as usize;
                pieces.push(self.levels[level][(count - 1) as usize]);
            }
        }
        pieces.extend_from_slice(&self.peaks);
        fold_right(&pieces)
    }

    /// MTH of the first `size` leaves; reads at most one block.
    pub fn root_at(&self, size: u64, leaves: &dyn Leaves) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == self.size {
            return Ok(self.root());
        }
        self.range_hash(0, size, &mut Blocks::new(leaves))
    }

    /// RFC 9162 §2.1.3.1 PATH(index, D[size]): the audit path of leaf `index`
    /// in the tree of the first `size` leaves, siblings from the leaf up.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        leaves: &dyn Leaves,
    ) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut blocks = Blocks::new(leaves);
        let mut proof = Vec::new();
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            let mid = lo + k;
            if index < mid {
                proof.push(self.range_hash(mid, hi, &mut blocks)?);
                hi = mid;
            } else {
                proof.push(self.subtree(lo, k.ilog2(), &mut blocks)?);
                lo = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// RFC 9162 §2.1.4.1 PROOF(old, D[new]) = SUBPROOF(old, D[new], true): the
    /// nodes that show the first `new` leaves extend the first `old`. The RFC
    /// defines it for 0 < old < new; empty when old == new (as SUBPROOF(m,
    /// D\[m\], true) = {}) or old == 0 (see `merkle::verify_consistency`).
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
        leaves: &dyn Leaves,
    ) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        if old > new {
            return Err(ProofError::OldAfterNew { old, new });
        }
        if old == 0 || old == new {
            return Ok(Vec::new());
        }
        let mut blocks = Blocks::new(leaves);
        // Walk SUBPROOF down from the root: each level's hash comes after the
        // subproof below it, so collect top-down and reverse at the end.
        // `known` is the RFC's b: the old tree is still a left-edge subtree.
        let mut proof = Vec::new();
        let (mut lo, mut hi, mut known) = (0, new, true);
        while old < hi {
            let k = split_point(hi - lo);
            let mid = lo + k;
            if old <= mid {
                proof.push(self.range_hash(mid, hi, &mut blocks)?);
                hi = mid;
            } else {
                proof.push(self.subtree(lo, k.ilog2(), &mut blocks)?);
                lo = mid;
                known = false;
            }
        }
        // Now hi == old: SUBPROOF(m, D[m], false) = {MTH(D[m])}.
        if !known {
            proof.push(self.range_hash(lo, hi, &mut blocks)?);
        }
        proof.reverse();
        Ok(proof)
    }

    /// Snapshot bytes (version 1): version u8 ‖ block level u8 ‖ size u64 LE ‖
    /// root ‖ the size / 2^level block hashes ‖ the size mod 2^level tail leaf
    /// hashes. The nodes above blocks are derived again by `decode`.
    pub fn encode(&self) -> Vec<u8> {
        let blocks = self.levels.first().map_or(&[][..], Vec::as_slice);
        let hashes = blocks.len() + self.tail.len();
        let mut out = Vec::with_capacity(HEADER_BYTES + HASH_BYTES * hashes);
        out.push(ENCODING_VERSION);
        // At most MAX_BLOCK_LEVEL (16): fits a byte.
        out.push(self.block_level as u8);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.root());
        for hash in blocks.iter().chain(&self.tail) {
            out.extend_from_slice(hash);
        }
        out
    }

    /// The tree `encode` wrote. Never panics: the length must match the size
    /// exactly, and the nodes derived again from the blocks and the tail must
    /// give the recorded root (O(size / 2^level + 2^level) hashes, no leaf
    /// rehash), which catches damage anywhere in the hashes.
    pub fn decode(bytes: &[u8]) -> Result<LogTree, DecodeError> {
        let mut reader = Reader(bytes);
        let short = DecodeError::Short { got: bytes.len() };
        let (Some([version]), Some([level]), Some(size), Some(root)) = (
            reader.take::<1>(),
            reader.take::<1>(),
            reader.take::<8>(),
            reader.take::<HASH_BYTES>(),
        ) else {
            return Err(short);
        };
        if version != ENCODING_VERSION {
            return Err(DecodeError::Version(version));
        }
        if u32::from(level) > MAX_BLOCK_LEVEL {
            return Err(DecodeError::BlockLevel(level));
        }
        let size = u64::from_le_bytes(size);
        let block_level = u32::from(level);
        let (blocks, tail) = (size >> block_level, size & ((1 << block_level) - 1));
        let expected =
            (HEADER_BYTES as u128) + (HASH_BYTES as u128) * (u128::from(blocks) + u128::from(tail));
        let wrong_length = DecodeError::Length { size, expected, got: bytes.len() };
        if expected != bytes.len() as u128 {
            return Err(wrong_length);
        }
        let (hashes, _) = reader.0.as_chunks::<HASH_BYTES>();
        let split = usize::try_from(blocks).ok().and_then(|b| hashes.split_at_checked(b));
        let Some((block_hashes, tail_hashes)) = split else {
            return Err(wrong_length);
        };
        let mut tree = LogTree::with_block_level(block_level);
        if !block_hashes.is_empty() {
            tree.levels.push(Vec::with_capacity(block_hashes.len()));
        }
        for block in block_hashes {
            tree.push_block(*block);
        }
        tree.size = blocks << block_level;
        for leaf in tail_hashes {
            tree.push(*leaf);
        }
        if tree.root() != root {
            return Err(DecodeError::Root);
        }
        Ok(tree)
    }

    /// Bytes held on the heap (kept nodes, tail, peaks), for memory reports.
    pub fn heap_bytes(&self) -> usize {
        let hashes: usize = self.levels.iter().map(Vec::capacity).sum::<usize>()
            + self.tail.capacity()
            + self.peaks.capacity();
        hashes * HASH_BYTES + self.levels.capacity() * std::mem::size_of::<Vec<Hash>>()
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size {
            return Err(ProofError::SizeBeyondTree { size, tree_size: self.size });
        }
        Ok(())
    }

    /// MTH(D[lo:hi]) for a range that starts aligned (see the header): the
    /// right fold of its aligned complete subtrees, largest first.
    fn range_hash(&self, lo: u64, hi: u64, blocks: &mut Blocks) -> Result<Hash, ProofError> {
        let mut pieces = Vec::with_capacity(u64::BITS as usize);
        let (mut start, mut rest) = (lo, hi - lo);
        while rest > 0 {
            let height = rest.ilog2();
            pieces.push(self.subtree(start, height, blocks)?);
            start += 1 << height;
            rest -= 1 << height;
        }
        Ok(fold_right(&pieces))
    }

    /// MTH of the complete aligned subtree [start, start + 2^height), which
    /// lies inside the tree: kept when at or above block level, else
    /// recomputed from its block's leaves.
    fn subtree(&self, start: u64, height: u32, blocks: &mut Blocks) -> Result<Hash, ProofError> {
        let width = 1u64 << height;
        debug_assert!(
            start.is_multiple_of(width) && start + width <= self.size,
            "unaligned subtree"
        );
        if height >= self.block_level {
            let level = (height - self.block_level) as usize;
            return Ok(self.levels[level][(start >> height) as usize]);
        }
        let block = start >> self.block_level;
        let leaves = blocks.get(self, block)?;
        let from = (start - (block << self.block_level)) as usize;
        Ok(root_from_leaf_hashes(&leaves[from..from + width as usize]))
    }
}

/// The blocks one root or proof has read, each checked against its kept hash.
struct Blocks<'a> {
    leaves: &'a dyn Leaves,
    read: Vec<(u64, Vec<Hash>)>,
}

impl<'a> Blocks<'a> {
    fn new(leaves: &'a dyn Leaves) -> Self {
        Blocks { leaves, read: Vec::new() }
    }

    /// The leaf hashes of `block`: the tail, an earlier read, or a new one.
    fn get<'s>(&'s mut self, tree: &'s LogTree, block: u64) -> Result<&'s [Hash], ProofError> {
        if block == tree.size >> tree.block_level {
            return Ok(&tree.tail);
        }
        if let Some(i) = self.read.iter().position(|(b, _)| *b == block) {
            return Ok(&self.read[i].1);
        }
        let from = block << tree.block_level;
        let to = from + tree.block_leaves();
        let hashes =
            self.leaves.leaves(from, to).map_err(|reason| ProofError::Read { from, to, reason })?;
        if hashes.len() as u64 != to - from {
            return Err(ProofError::ReadCount { from, to, got: hashes.len() });
        }
        if root_from_leaf_hashes(&hashes) != tree.levels[0][block as usize] {
            return Err(ProofError::ReadMismatch { from, to });
        }
        self.read.push((block, hashes));
        Ok(&self.read[self.read.len() - 1].1)
    }
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Largest power of two strictly below `n` (n ≥ 2): RFC 9162's split.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (n - 1).ilog2()
}

/// The root over aligned complete subtrees listed largest first:
/// node(p0, node(p1, … node(pk−1, pk))); SHA-256("") for none.
fn fold_right(pieces: &[Hash]) -> Hash {
    let Some((last, rest)) = pieces.split_last() else {
        return empty_root();
    };
    rest.iter().rev().fold(*last, |acc, left| node_hash(left, &acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, to_hex};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn tree(block_level: u32, leaves: &[Hash]) -> LogTree {
        let mut tree = LogTree::with_block_level(block_level);
        for leaf in leaves {
            tree.push(*leaf);
        }
        tree
    }

    #[test]
    fn log_leaf_hash_layout() {
        // Computed separately with Python's hashlib:
        // sha256(b"\0" + (1).to_bytes(8, "big") + (-2).to_bytes(8, "big", signed=True) + b'{"epoch":1}')
        assert_eq!(
            to_hex(&log_leaf_hash(1, -2, br#"{"epoch":1}"#)),
            "889a5faacd2f693a7228bd4a51e3fa13ab248b67b7fc5956c1345c7681f374c2"
        );
        let mut data = 7u64.to_be_bytes().to_vec();
        data.extend_from_slice(&1_700_000_000_000_000i64.to_be_bytes());
        data.extend_from_slice(b"{}");
        assert_eq!(log_leaf_hash(7, 1_700_000_000_000_000, b"{}"), leaf_hash(&data));
    }

    #[test]
    fn root_after_every_push_matches_merkle_for_every_block_level() {
        let all = leaves(70);
        for level in 0..=4 {
            let mut t = LogTree::with_block_level(level);
            assert_eq!(t.root(), empty_root());
            for n in 1..=all.len() {
                t.push(all[n - 1]);
                assert_eq!(t.root(), root_from_leaf_hashes(&all[..n]), "level {level} n {n}");
                assert!(t.peaks.len() <= level as usize && t.tail.len() < 1 << level);
            }
        }
    }

    #[test]
    fn keeps_no_leaf_below_block_level_outside_the_tail() {
        let t = tree(BLOCK_LEVEL, &leaves(1000));
        assert_eq!(t.tail.len(), 1000 % 256);
        assert_eq!(t.levels.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(t.levels[0][1], root_from_leaf_hashes(&leaves(1000)[256..512]));
    }

    #[test]
    fn encoding_layout_is_pinned() {
        let all = leaves(5);
        let t = tree(2, &all);
        let bytes = t.encode();
        assert_eq!(bytes[..2], [1, 2]);
        assert_eq!(bytes[2..10], 5u64.to_le_bytes());
        assert_eq!(bytes[10..42], root_from_leaf_hashes(&all));
        assert_eq!(bytes[42..74], root_from_leaf_hashes(&all[..4]));
        assert_eq!(bytes[74..], all[4]);
        assert_eq!(LogTree::decode(&bytes), Ok(t));
    }

    #[test]
    fn decode_refuses_what_it_cannot_trust() {
        let t = tree(2, &leaves(9));
        let bytes = t.encode();
        assert_eq!(LogTree::decode(&bytes[..41]), Err(DecodeError::Short { got: 41 }));
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert_eq!(LogTree::decode(&bad), Err(DecodeError::Version(2)));
        bad = bytes.clone();
        bad[1] = 17;
        assert_eq!(LogTree::decode(&bad), Err(DecodeError::BlockLevel(17)));
        bad = bytes.clone();
        bad[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(LogTree::decode(&bad), Err(DecodeError::Length { .. })));
        bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(LogTree::decode(&bad), Err(DecodeError::Root));
    }
}
