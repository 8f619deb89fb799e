//! Signed checkpoints: this node's Ed25519 signature over a (tree size, root) of the log's
//! Merkle tree and the time it signed, so that anyone holding the node's public key can check
//! that a root was published by it. One is published at every epoch close and on demand.
//!
//! The key is the node's own (`node.key` in the data directory: PKCS#8, created on first use,
//! readable by its owner only) and never leaves the process; checkpoints are node-local (every
//! node computes the same roots, each signs them with its own key). They are kept in the file
//! `checkpoints`, one line each, appended and fsynced when published; a torn last line (a
//! crash mid-append) is dropped on open. At most one checkpoint per tree size, so the file
//! grows only as the ledger does, whoever asks.
//!
//! The signed message (`tally_engine::proof_check::checkpoint_message`, which
//! `tests/clients/verify_proof.py` and `tally verify-proof` rebuild too):
//! `"tally-checkpoint/v1\n{tree_size}\n{root as 64 lowercase hex}\n{ts_micros}\n"`; the key id
//! is the first 8 bytes of SHA-256(public key), as hex.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ring::signature::{Ed25519KeyPair, KeyPair};
use tally_engine::merkle::{to_hex, Hash};
use tally_engine::proof_check;

use crate::error::StorageError;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "node.key";
/// The checkpoints' file in the data directory.
pub const FILE: &str = "checkpoints";
/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root: Hash,
    /// When it was signed, in microseconds since the Unix epoch.
    pub ts: i64,
    pub signature: [u8; 64],
    pub public_key: [u8; 32],
    pub key_id: String,
}

/// The bytes a checkpoint's signature covers (`tally_engine::proof_check`, which verifiers
/// use too).
pub fn message(tree_size: u64, root: &Hash, ts: i64) -> String {
    proof_check::checkpoint_message(tree_size, root, ts)
}

/// The first 8 bytes of SHA-256(public key), as hex.
pub fn key_id(public_key: &[u8; 32]) -> String {
    proof_check::key_id(public_key).iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 8032 Ed25519 verification, for `proof_check::Signatures`.
pub fn ed25519_verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key);
    key.verify(message, signature).is_ok()
}

/// Whether `checkpoint`'s signature is its key's over its message.
pub fn verify(checkpoint: &Checkpoint) -> bool {
    let message = message(checkpoint.tree_size, &checkpoint.root, checkpoint.ts);
    ed25519_verify(&checkpoint.public_key, message.as_bytes(), &checkpoint.signature)
        && checkpoint.key_id == key_id(&checkpoint.public_key)
}

/// This node's key and the checkpoints it has published.
pub struct Checkpoints {
    key: Ed25519KeyPair,
    public_key: [u8; 32],
    path: PathBuf,
    kept: Mutex<Vec<Checkpoint>>,
}

impl Checkpoints {
    /// Loads (or, the first time, creates) the node's key in `dir`, and its checkpoints.
    pub fn open(dir: &Path) -> Result<Checkpoints, StorageError> {
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let public_key: [u8; 32] =
            key.public_key().as_ref().try_into().expect("an Ed25519 public key is 32 bytes");
        let path = dir.join(FILE);
        let kept = read_file(&path, &public_key)?;
        Ok(Checkpoints { key, public_key, path, kept: Mutex::new(kept) })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The checkpoint of `tree_size`: the one published before, or a new one signed now.
    pub fn publish(&self, tree_size: u64, root: Hash) -> Result<Checkpoint, StorageError> {
        let mut kept = self.kept.lock().expect("the checkpoints are never poisoned");
        if let Some(c) = kept.iter().find(|c| c.tree_size == tree_size) {
            return Ok(c.clone());
        }
        let ts = now_micros();
        let signature = self.key.sign(message(tree_size, &root, ts).as_bytes());
        let checkpoint = Checkpoint {
            tree_size,
            root,
            ts,
            signature: signature.as_ref().try_into().expect("an Ed25519 signature is 64 bytes"),
            public_key: self.public_key,
            key_id: key_id(&self.public_key),
        };
        append_line(&self.path, &line_of(&checkpoint))?;
        kept.push(checkpoint.clone());
        Ok(checkpoint)
    }

    /// Every checkpoint published, oldest first.
    pub fn all(&self) -> Vec<Checkpoint> {
        self.kept.lock().expect("the checkpoints are never poisoned").clone()
    }
}

/// A data directory's checkpoints, opened (and the node's key created) on first use.
pub struct NodeCheckpoints {
    dir: PathBuf,
    opened: OnceLock<Checkpoints>,
}

impl NodeCheckpoints {
    pub fn new(dir: &Path) -> NodeCheckpoints {
        NodeCheckpoints { dir: dir.to_path_buf(), opened: OnceLock::new() }
    }

    pub fn get(&self) -> Result<&Checkpoints, StorageError> {
        if let Some(c) = self.opened.get() {
            return Ok(c);
        }
        let opened = Checkpoints::open(&self.dir)?;
        Ok(self.opened.get_or_init(|| opened))
    }

    /// Signs a checkpoint at each epoch close, (tree size, root). A failure (a full disk) is
    /// logged, never fails applying: the close is in the log either way, and a checkpoint can
    /// be published on demand later.
    pub fn publish_closes(&self, closes: &[(u64, Hash)]) {
        for &(size, root) in closes {
            if let Err(e) = self.get().and_then(|c| c.publish(size, root)) {
                tracing::warn!("no checkpoint at the epoch close at lsn {size}: {e}");
            }
        }
    }
}

fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn load_or_create_key(path: &Path) -> Result<Ed25519KeyPair, StorageError> {
    let io = |e| StorageError::io(path, e);
    let pkcs8 = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path)?,
        Err(e) => return Err(io(e)),
    };
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
        StorageError::Invalid(format!("{} is not an Ed25519 key ({e})", path.display()))
    })
}

/// Writes a new key, readable by its owner only, in place atomically (never half a key).
fn create_key(path: &Path) -> Result<Vec<u8>, StorageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| StorageError::Invalid("no randomness for a new node key".into()))?;
    let tmp = path.with_extension("tmp");
    let io = |e| StorageError::io(path, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(pkcs8.as_ref()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    crate::segment::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(pkcs8.as_ref().to_vec())
}

/// `tree_size root ts signature` (hex), the key being the node's.
fn line_of(c: &Checkpoint) -> String {
    let signature: String = c.signature.iter().map(|b| format!("{b:02x}")).collect();
    format!("{} {} {} {}\n", c.tree_size, to_hex(&c.root), c.ts, signature)
}

fn append_line(path: &Path, line: &str) -> Result<(), StorageError> {
    let io = |e| StorageError::io(path, e);
    let mut f = OpenOptions::new().append(true).create(true).open(path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// The checkpoints in `path`: each line parsed and its signature checked against this node's
/// key. A last line without its newline is a torn append and is dropped; any other bad line
/// is an error that names it.
fn read_file(path: &Path, public_key: &[u8; 32]) -> Result<Vec<Checkpoint>, StorageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut kept = Vec::new();
    for (n, line) in complete.lines().enumerate() {
        let bad = || {
            StorageError::Invalid(format!(
                "{} line {}: not a checkpoint signed by this node's key",
                path.display(),
                n + 1
            ))
        };
        let checkpoint = parse_line(line, public_key).ok_or_else(bad)?;
        if !verify(&checkpoint) {
            return Err(bad());
        }
        kept.push(checkpoint);
    }
    Ok(kept)
}

fn parse_line(line: &str, public_key: &[u8; 32]) -> Option<Checkpoint> {
    let mut parts = line.split(' ');
    let tree_size = parts.next()?.parse().ok()?;
    let root = from_hex::<32>(parts.next()?)?;
    let ts = parts.next()?.parse().ok()?;
    let signature = from_hex::<64>(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    let key_id = key_id(public_key);
    Some(Checkpoint { tree_size, root, ts, signature, public_key: *public_key, key_id })
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_signed_kept_once_per_size_and_survive_a_torn_append() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        let first = c.publish(10, [7; 32]).unwrap();
        assert!(verify(&first));
        assert_eq!(c.publish(10, [7; 32]).unwrap(), first, "one per tree size");
        let second = c.publish(20, [8; 32]).unwrap();
        let mut forged = second.clone();
        forged.root[0] ^= 1;
        assert!(!verify(&forged));
        drop(c);
        // A crash mid-append leaves a line without its newline: dropped on open.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(b"30 abc").unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(c.all(), vec![first.clone(), second]);
        assert_eq!(c.public_key(), first.public_key, "the key is kept");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077, 0);
        // A line signed by another key, or damaged, is refused by name.
        drop(c);
        std::fs::write(dir.path().join(FILE), line_of(&forged)).unwrap();
        let err = Checkpoints::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
