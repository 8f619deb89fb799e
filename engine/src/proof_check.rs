//! Checks a proof document: the JSON that `tally verify-proof` reads, the same
//! format as tests/clients/verify_proof.py (which needs no Tally code). Kinds:
//! `inclusion` (an event in the log tree), `consistency` (one log tree extends
//! another), `payout` (an account's payout under an epoch's `payouts_root`) and
//! `checkpoint` (a signed log root). An inclusion or consistency document may
//! carry a `checkpoint` object that signs its (new) root and tree size.
//!
//! This module owns the document format, the checkpoint message and the key
//! id. It must never accept a field it has not parsed strictly (sizes and
//! indices are u64 JSON integers, hashes exactly 64 lowercase hex digits) and
//! never does I/O. It has no curve arithmetic: the caller passes the Ed25519
//! verification (RFC 8032) in `Signatures`.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::log_tree::log_leaf_hash;
use crate::merkle::{leaf_data, leaf_hash, to_hex, verify_consistency, verify_inclusion, Hash};

/// First line of the signed checkpoint message; the version names the format.
pub const CHECKPOINT_HEADER: &str = "tally-checkpoint/v1";

/// Bytes of a key id: a prefix of SHA-256(public key), enough to tell keys
/// apart, never to trust one (the whole key is checked).
pub const KEY_ID_BYTES: usize = 8;

/// The text a checkpoint signs: "tally-checkpoint/v1\n" ‖ tree size ‖ "\n" ‖
/// root as lowercase hex ‖ "\n" ‖ ts in microseconds ‖ "\n", numbers in decimal.
pub fn checkpoint_message(tree_size: u64, root: &Hash, ts_micros: i64) -> String {
    format!("{CHECKPOINT_HEADER}\n{tree_size}\n{}\n{ts_micros}\n", to_hex(root))
}

/// The first `KEY_ID_BYTES` bytes of SHA-256(public key).
pub fn key_id(public_key: &[u8; 32]) -> [u8; KEY_ID_BYTES] {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; KEY_ID_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
    id
}

/// RFC 8032 Ed25519 verification of (public key, message, signature).
pub type Ed25519Verify = dyn Fn(&[u8; 32], &[u8], &[u8; 64]) -> bool;

/// How checkpoint signatures are checked.
pub struct Signatures<'a> {
    pub verify: &'a Ed25519Verify,
    /// When set, a checkpoint must be signed by this key: any key can sign
    /// *a* checkpoint, so a verifier that trusts none proves only integrity.
    pub trusted_key: Option<[u8; 32]>,
}

/// A signed statement that the log had `tree_size` leaves with `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root: Hash,
    pub ts_micros: i64,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
    pub key_id: [u8; KEY_ID_BYTES],
}

/// Parses `text` as one JSON document and checks it (see `check`).
pub fn check_text(text: &str, signatures: &Signatures) -> Result<(), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    check(&doc, signatures)
}

/// Ok when the document's proof holds; otherwise why not.
pub fn check(doc: &Value, signatures: &Signatures) -> Result<(), String> {
    let doc = doc.as_object().ok_or("the document must be a JSON object")?;
    match text(doc, "kind")? {
        "inclusion" => inclusion_doc(doc, signatures),
        "consistency" => consistency_doc(doc, signatures),
        "payout" => payout_doc(doc),
        "checkpoint" => check_checkpoint(&checkpoint(doc)?, signatures),
        other => Err(format!("unknown kind {other:?}")),
    }
}

/// The event (lsn, ts, body) is leaf `leaf_index` = lsn − 1 of the log tree
/// of `tree_size` leaves with `root` (RFC 9162 §2.1.3.2).
pub fn check_inclusion(
    lsn: u64,
    ts_micros: i64,
    body: &[u8],
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), String> {
    if lsn == 0 {
        return Err("lsn must be at least 1".into());
    }
    if leaf_index != lsn - 1 {
        return Err(format!("leaf_index {leaf_index} is not lsn - 1 = {}", lsn - 1));
    }
    let leaf = log_leaf_hash(lsn, ts_micros, body);
    if !verify_inclusion(&leaf, leaf_index, tree_size, path, root) {
        return Err(format!("the path does not lead from the event to the root of {tree_size}"));
    }
    Ok(())
}

/// The log tree of `new_size` leaves with `new_root` extends the one of
/// `old_size` leaves with `old_root` (RFC 9162 §2.1.4.2).
pub fn check_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), String> {
    if !verify_consistency(old_size, new_size, old_root, new_root, path) {
        return Err(format!("the path does not show that tree {new_size} extends tree {old_size}"));
    }
    Ok(())
}

/// (account, amount) is leaf `leaf_index` of the payout tree of `tree_size`
/// leaves with `payouts_root` (settlement.md §6, RFC 9162 §2.1.3.2).
pub fn check_payout(
    account: &str,
    amount: u64,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    payouts_root: &Hash,
) -> Result<(), String> {
    let leaf = leaf_hash(&leaf_data(account, amount));
    if !verify_inclusion(&leaf, leaf_index, tree_size, path, payouts_root) {
        return Err("the path does not lead from the payout to payouts_root".into());
    }
    Ok(())
}

/// The key id matches the key, the key is trusted (when one is), and the
/// signature over `checkpoint_message` verifies.
pub fn check_checkpoint(checkpoint: &Checkpoint, signatures: &Signatures) -> Result<(), String> {
    let Checkpoint { tree_size, root, ts_micros, public_key, signature, key_id: id } = checkpoint;
    if key_id(public_key) != *id {
        return Err("key_id is not the first 8 bytes of SHA-256(public_key)".into());
    }
    if let Some(trusted) = signatures.trusted_key {
        if trusted != *public_key {
            return Err(format!("signed by key {}, not by the trusted key", hex(public_key)));
        }
    }
    let message = checkpoint_message(*tree_size, root, *ts_micros);
    if !(signatures.verify)(public_key, message.as_bytes(), signature) {
        return Err("the checkpoint's Ed25519 signature does not verify".into());
    }
    Ok(())
}

fn inclusion_doc(doc: &Map<String, Value>, signatures: &Signatures) -> Result<(), String> {
    let (lsn, ts_micros) = (uint(doc, "lsn")?, int(doc, "ts_micros")?);
    let body = text(doc, "body")?;
    let (leaf_index, tree_size) = (uint(doc, "leaf_index")?, uint(doc, "tree_size")?);
    let path = path(doc)?;
    let root = committed_root(doc, "root", tree_size, signatures)?;
    check_inclusion(lsn, ts_micros, body.as_bytes(), leaf_index, tree_size, &path, &root)
}

fn consistency_doc(doc: &Map<String, Value>, signatures: &Signatures) -> Result<(), String> {
    let (old_size, new_size) = (uint(doc, "old_size")?, uint(doc, "new_size")?);
    let old_root = hash(doc, "old_root")?;
    let path = path(doc)?;
    let new_root = committed_root(doc, "new_root", new_size, signatures)?;
    check_consistency(old_size, new_size, &old_root, &new_root, &path)
}

fn payout_doc(doc: &Map<String, Value>) -> Result<(), String> {
    if field(doc, "checkpoint").is_some() {
        return Err("a checkpoint signs the log root, not a payouts_root".into());
    }
    let (account, amount) = (text(doc, "account")?, uint(doc, "amount")?);
    let (leaf_index, tree_size) = (uint(doc, "leaf_index")?, uint(doc, "tree_size")?);
    let (path, payouts_root) = (path(doc)?, hash(doc, "payouts_root")?);
    check_payout(account, amount, leaf_index, tree_size, &path, &payouts_root)
}

/// The root a proof is checked against: the document's `name` field, or its
/// checkpoint's root once the checkpoint verifies and is for `tree_size`;
/// with both, they must agree.
fn committed_root(
    doc: &Map<String, Value>,
    name: &str,
    tree_size: u64,
    signatures: &Signatures,
) -> Result<Hash, String> {
    let stated = field(doc, name).map(|_| hash(doc, name)).transpose()?;
    let Some(signed) = field(doc, "checkpoint") else {
        return stated.ok_or_else(|| format!("no {name} and no checkpoint"));
    };
    let signed = checkpoint(signed.as_object().ok_or("checkpoint must be a JSON object")?)?;
    check_checkpoint(&signed, signatures)?;
    if signed.tree_size != tree_size {
        let size = signed.tree_size;
        return Err(format!("the checkpoint is for tree size {size}, the proof for {tree_size}"));
    }
    match stated {
        Some(root) if root != signed.root => Err(format!("{name} is not the checkpoint's root")),
        _ => Ok(signed.root),
    }
}

fn checkpoint(doc: &Map<String, Value>) -> Result<Checkpoint, String> {
    Ok(Checkpoint {
        tree_size: uint(doc, "tree_size")?,
        root: hash(doc, "root")?,
        ts_micros: int(doc, "ts_micros")?,
        public_key: bytes(doc, "public_key")?,
        signature: bytes(doc, "signature")?,
        key_id: bytes(doc, "key_id")?,
    })
}

/// A present, non-null field.
fn field<'a>(doc: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    doc.get(name).filter(|value| !value.is_null())
}

fn required<'a>(doc: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    field(doc, name).ok_or_else(|| format!("{name} is missing"))
}

fn uint(doc: &Map<String, Value>, name: &str) -> Result<u64, String> {
    let value = required(doc, name)?;
    value.as_u64().ok_or_else(|| format!("{name} must be an integer in 0..2^64"))
}

fn int(doc: &Map<String, Value>, name: &str) -> Result<i64, String> {
    let value = required(doc, name)?;
    value.as_i64().ok_or_else(|| format!("{name} must be an integer in -2^63..2^63"))
}

fn text<'a>(doc: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    let value = required(doc, name)?;
    value.as_str().ok_or_else(|| format!("{name} must be a string"))
}

fn hash(doc: &Map<String, Value>, name: &str) -> Result<Hash, String> {
    bytes(doc, name)
}

fn bytes<const N: usize>(doc: &Map<String, Value>, name: &str) -> Result<[u8; N], String> {
    from_hex(text(doc, name)?)
        .ok_or_else(|| format!("{name} must be {} lowercase hex digits", 2 * N))
}

fn path(doc: &Map<String, Value>) -> Result<Vec<Hash>, String> {
    let items = required(doc, "path")?.as_array().ok_or("path must be an array")?;
    let parse = |item: &Value| item.as_str().and_then(from_hex::<32>);
    items
        .iter()
        .map(|item| {
            parse(item)
                .ok_or_else(|| "path: each element must be 64 lowercase hex digits".to_string())
        })
        .collect()
}

/// Exactly 2N lowercase hex digits.
fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
