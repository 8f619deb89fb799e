//! Exactly-once ingest: a producer's numbered batch is applied once, whatever is resent, and
//! the producer table survives close, reopen, snapshots and a full replay of the log.

use tally_engine::{Datanet, Event};
use tally_storage::{Database, Landed, Options, Origin, WriteError};

fn datanet(id: &str) -> Vec<Event> {
    vec![Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() })]
}

fn origin(seq: u64) -> Option<Origin> {
    Some(Origin { producer: "ingest-1".into(), seq })
}

fn send(db: &Database, seq: u64, id: &str) -> Result<Landed, WriteError> {
    db.runtime().block_on(async {
        let pending = db.submit_from(origin(seq), datanet(id)).await?;
        db.finish_from(pending).await
    })
}

#[test]
fn a_resent_batch_is_applied_once_and_answered_with_its_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    let Landed::Applied(first) = send(&db, 1, "a").unwrap() else { panic!("applied") };
    assert_eq!(send(&db, 1, "a").unwrap(), Landed::Duplicate(Some(first)));
    // Same number, other content: still the batch already applied (numbers name batches).
    assert_eq!(send(&db, 1, "zzz").unwrap(), Landed::Duplicate(Some(first)));
    assert_eq!(db.read(|l| l.last_lsn()), 1);

    // Both copies in flight at once: the fast check passes both, the state machine keeps one.
    let (a, b) = db.runtime().block_on(async {
        let a = db.submit_from(origin(2), datanet("b")).await.unwrap();
        let b = db.submit_from(origin(2), datanet("b")).await.unwrap();
        (db.finish_from(a).await.unwrap(), db.finish_from(b).await.unwrap())
    });
    let Landed::Applied(second) = a else { panic!("the first copy applies: {a:?}") };
    assert_eq!(b, Landed::Duplicate(Some(second)));
    assert_eq!(db.read(|l| l.datanets().count()), 2);
    assert_eq!(db.producer_seq("ingest-1"), Some(2));
    db.close().unwrap();

    // From the snapshot, then from the log alone: the table is the same.
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    assert_eq!(send(&db, 2, "b").unwrap(), Landed::Duplicate(Some(second)));
    drop(db);
    std::fs::remove_file(dir.path().join("snapshot.bin")).unwrap();
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    assert_eq!(send(&db, 1, "a").unwrap(), Landed::Duplicate(Some(first)));
    assert!(matches!(send(&db, 3, "c").unwrap(), Landed::Applied(a) if a.first_lsn == 3));
    drop(db);
    let report = tally_storage::verify::verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_refused_batch_keeps_its_number_free_and_bad_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    send(&db, 1, "a").unwrap();
    assert!(matches!(send(&db, 2, "a"), Err(WriteError::Refused(_))), "a repeated datanet");
    // Nothing is applied ahead of the refused batch: the next number is still 2.
    let ahead = send(&db, 3, "c");
    assert!(matches!(ahead, Err(WriteError::OutOfOrder { expected: 2 })), "{ahead:?}");
    let (a, b) = db.runtime().block_on(async {
        // Both in flight: 2 is refused at apply, so 3 must not pass it.
        let a = db.submit_from(origin(2), datanet("a")).await.unwrap();
        let b = db.submit_from(origin(3), datanet("c")).await.unwrap();
        (db.finish_from(a).await, db.finish_from(b).await)
    });
    assert!(matches!(a, Err(WriteError::Refused(_))), "{a:?}");
    assert!(matches!(b, Err(WriteError::OutOfOrder { expected: 2 })), "{b:?}");
    assert!(matches!(send(&db, 2, "b").unwrap(), Landed::Applied(_)), "2 was never applied");
    assert!(matches!(send(&db, 3, "c").unwrap(), Landed::Applied(_)));
    let bad = |o: Origin| db.runtime().block_on(db.submit_from(Some(o), datanet("x"))).err();
    let by = |p: &str, seq| Origin { producer: p.into(), seq };
    assert!(matches!(bad(by("", 1)), Some(WriteError::BadOrigin(_))));
    assert!(matches!(bad(by("has space", 1)), Some(WriteError::BadOrigin(_))));
    assert!(matches!(bad(by(&"p".repeat(129), 1)), Some(WriteError::BadOrigin(_))));
    assert!(matches!(bad(by("p", 0)), Some(WriteError::BadOrigin(_))));
    assert_eq!(db.read(|l| l.last_lsn()), 3);
}
