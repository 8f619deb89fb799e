//! The log's Merkle tree as a node keeps it: its roots are RFC 9162's over every event's leaf
//! (lsn, ts, `events.body`), at every size, across a restart from a snapshot and a replay of
//! the log; its proofs verify; a checkpoint is signed at every epoch close.

use tally_engine::log_tree::log_leaf_hash;
use tally_engine::merkle::{root_from_leaf_hashes, verify_consistency, verify_inclusion, Hash};
use tally_engine::{json, Event};
use tally_storage::{checkpoints, Database, Options, StorageError};
use tally_workload::{Generator, Shape};

fn options() -> Options {
    Options { segment_bytes: 1 << 20, snapshot_every_events: 7_000, ..Options::default() }
}

/// Every event's leaf hash, from the log as the `events` table shows it.
fn leaves(db: &Database) -> Vec<Hash> {
    let mut out = Vec::new();
    let last = db.read(|l| l.last_lsn());
    db.scan_events(1, last, |e| {
        out.push(log_leaf_hash(e.lsn, e.ts, json::body(&e.event).as_bytes()));
    })
    .unwrap();
    out
}

#[test]
fn the_log_tree_roots_proofs_and_checkpoints_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    let mut settlements = Vec::new();
    for batch in Generator::new(Shape::demo(11, 3_000)) {
        let at: Vec<usize> =
            (0..batch.len()).filter(|&k| matches!(batch[k], Event::Settlement(_))).collect();
        let applied = db.write(batch).unwrap();
        settlements.extend(at.into_iter().map(|k| applied.first_lsn + k as u64));
    }
    let all = leaves(&db);
    let n = all.len() as u64;
    assert_eq!(db.ledger_root().unwrap(), (n, root_from_leaf_hashes(&all)));
    let sizes = [0, 1, 2, 255, 256, 257, 1_000, 4_096, n / 2, n - 1, n];
    for &size in &sizes {
        let root = root_from_leaf_hashes(&all[..size as usize]);
        assert_eq!(db.ledger_root_at(size).unwrap(), root, "size {size}");
    }
    // Inclusion: the proof's leaf is recomputed from what it carries, and verifies.
    for (lsn, size) in [(1, 1), (1, n), (300, 4_096), (n / 2, n), (n, n), (257, 257)] {
        let p = db.inclusion_proof(lsn, size).unwrap();
        assert_eq!(p.leaf_hash, log_leaf_hash(lsn, p.ts, p.body.as_bytes()));
        assert_eq!(p.leaf_hash, all[lsn as usize - 1]);
        assert!(verify_inclusion(&p.leaf_hash, lsn - 1, size, &p.path, &p.root), "{lsn}/{size}");
    }
    // Consistency between any two sizes.
    for (old, new) in [(1, n), (255, 257), (256, 4_096), (1_000, n - 1), (n / 2, n), (n, n)] {
        let p = db.consistency_proof(old, new).unwrap();
        assert!(verify_consistency(old, new, &p.old_root, &p.new_root, &p.path), "{old}->{new}");
    }
    // Sizes past the log are refused by name.
    assert!(matches!(db.inclusion_proof(n + 1, n + 1), Err(StorageError::Proof(_))));
    assert!(matches!(db.consistency_proof(5, n + 1), Err(StorageError::Proof(_))));
    assert!(matches!(db.inclusion_proof(0, n), Err(StorageError::Proof(_))));

    // A checkpoint at each epoch close, signed by this node's key; more on demand.
    assert!(!settlements.is_empty());
    let closes: Vec<u64> = db.checkpoints().unwrap().iter().map(|c| c.tree_size).collect();
    assert_eq!(closes, settlements);
    for c in db.checkpoints().unwrap() {
        assert!(checkpoints::verify(&c));
        assert_eq!(c.root, root_from_leaf_hashes(&all[..c.tree_size as usize]));
    }
    let now = db.publish_checkpoint().unwrap();
    assert_eq!((now.tree_size, now.root), (n, db.ledger_root().unwrap().1));
    assert_eq!(db.publish_checkpoint().unwrap(), now, "one per tree size");

    // After a restart from the snapshot (written at close) and after a replay of the log tail
    // (no final snapshot), the same tree; no checkpoint is signed twice.
    let root = db.ledger_root().unwrap();
    db.close().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.ledger_root().unwrap(), root);
    let more =
        vec![Event::Datanet(tally_engine::Datanet { datanet: "late".into(), owner: "o".into() })];
    db.write(more).unwrap();
    let root = db.ledger_root().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.ledger_root().unwrap(), root, "the tail replayed from the log");
    assert_eq!(db.checkpoints().unwrap().len(), settlements.len() + 1);
    std::fs::remove_file(dir.path().join("snapshot.bin")).unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.ledger_root().unwrap(), root, "the whole log replayed");
    assert_eq!(db.checkpoints().unwrap().len(), settlements.len() + 1);
}
