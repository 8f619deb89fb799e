//! Inference ids are unique for good, and a 64-bit fingerprint collision never refuses a
//! legitimate inference: the state machine settles each fingerprint hit by reading the earlier
//! inference back from the log (`history.rs`), live, after a snapshot and after a replay.

use tally_engine::{Datanet, Event, Inference, Model, Rule};
use tally_storage::history::LogHistory;
use tally_storage::{Database, Options, WriteError};

/// Two distinct inference ids with the same xxh3-64 fingerprint (0x0fa3b7dd4c49eb60; the
/// engine's `fingerprint.rs` checks that they collide).
const COLLIDING: [&str; 2] = ["inf-e9fa0fdf976e989a", "inf-8f45f239c99c15f3"];
/// Inferences written before the collision: more than one `lsn::BLOCK`, in several batches.
const FILLER_BATCHES: usize = 5;
const FILLER_PER_BATCH: usize = 1000;

fn options() -> Options {
    Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() }
}

fn inference(id: &str) -> Event {
    Event::Inference(Inference {
        inference: id.into(),
        model: "m".into(),
        consumer: "c".into(),
        fee: 10,
        attributions: Vec::new(),
    })
}

fn setup() -> Vec<Event> {
    vec![
        Event::Datanet(Datanet { datanet: "dn".into(), owner: "o".into() }),
        Event::Model(Model {
            model: "m".into(),
            owner: "o".into(),
            base_model: None,
            datanets: vec!["dn".into()],
        }),
    ]
}

fn refused_rule(db: &Database, events: Vec<Event>) -> Rule {
    match db.write(events) {
        Err(WriteError::Refused(r)) => r.rule,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Both colliding ids are in the ledger; a third write of either is a duplicate.
fn assert_both_are_duplicates(db: &Database) {
    for id in COLLIDING {
        assert_eq!(refused_rule(db, vec![inference(id)]), Rule::DuplicateInference, "{id}");
        let checked = db.read_checked(|l, h| l.validate_with_history(&[inference(id)], h));
        assert_eq!(checked.unwrap_err().rule, Rule::DuplicateInference);
    }
}

/// Reads the id at every `step`th lsn through the history and compares it with a scan.
fn assert_history_reads_the_log(db: &Database, step: usize) {
    let last = db.read(|l| l.last_lsn());
    let mut scanned = Vec::new();
    db.scan_events(1, last, |e| scanned.push(e)).unwrap();
    let state = db.shared().state.read().unwrap();
    let history = LogHistory::new(&state.lsns, db.log());
    for e in scanned.iter().step_by(step) {
        match &e.event {
            Event::Inference(i) => assert_eq!(history.inference_at(e.lsn).unwrap(), i.inference),
            _ => assert!(history.inference_at(e.lsn).is_err(), "lsn {} is not an inference", e.lsn),
        }
    }
    assert!(history.inference_at(last + 1).is_err());
}

#[test]
fn a_collision_is_accepted_and_a_duplicate_refused_live_after_a_snapshot_and_on_replay() {
    let [a, b] = COLLIDING;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    db.write(setup()).unwrap();
    for k in 0..FILLER_BATCHES {
        db.write((0..FILLER_PER_BATCH).map(|j| inference(&format!("f-{k}-{j}"))).collect())
            .unwrap();
        // A refused batch between accepted ones takes no lsns.
        assert_eq!(refused_rule(&db, vec![inference("f-0-1")]), Rule::DuplicateInference);
    }
    let batch: Vec<Event> = (0..20).map(|j| inference(&format!("g-{j}"))).collect();
    db.write([&batch[..10], &[inference(a)], &batch[10..]].concat()).unwrap();
    // Without the log, `b` would look like a duplicate of `a`.
    let plain = db.read(|l| l.validate(&[inference(b)]));
    assert_eq!(plain.unwrap_err().rule, Rule::DuplicateInference);
    db.read_checked(|l, h| l.validate_with_history(&[inference(b)], h)).unwrap();
    let applied = db.write(vec![inference(b)]).unwrap();
    assert_both_are_duplicates(&db);
    assert_history_reads_the_log(&db, 7);
    let digest = db.read(|l| l.digest());
    db.close().unwrap();

    // From the snapshot: the lsns beside the fingerprints came back with it.
    let db = Database::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.read(|l| l.digest()), digest);
    assert_both_are_duplicates(&db);
    db.write(vec![inference("after-snapshot")]).unwrap();
    let digest = db.read(|l| l.digest());
    drop(db);

    // From the log alone: the replay settles the same hits the same way.
    std::fs::remove_file(dir.path().join("snapshot.bin")).unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.read(|l| l.digest()), digest, "full replay from the log");
    assert_eq!(db.read(|l| l.inference_count()), (FILLER_BATCHES * FILLER_PER_BATCH + 23) as u64);
    assert_both_are_duplicates(&db);
    assert_history_reads_the_log(&db, 97);
    let state = db.shared().state.read().unwrap();
    let history = LogHistory::new(&state.lsns, db.log());
    assert_eq!(history.inference_at(applied.first_lsn).unwrap(), b);
    drop(state);
    db.close().unwrap();
    let report = tally_storage::verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn a_hit_on_a_damaged_record_is_refused_never_accepted_on_a_guess() {
    let [a, b] = COLLIDING;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    db.write([setup(), vec![inference(a)]].concat()).unwrap();
    // Enough after it that `a`'s segment is sealed.
    for k in 0..20 {
        db.write((0..100).map(|j| inference(&format!("f-{k}-{j}"))).collect()).unwrap();
    }
    db.close().unwrap();
    let first = dir.path().join("log").join(tally_storage::segment::file_name(0));
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.windows(a.len()).position(|w| w == a.as_bytes()).expect("a's record");
    bytes[at + a.len() - 1] ^= 0x01;
    std::fs::write(&first, bytes).unwrap();

    // The snapshot spares opening the damaged record; the hit on `a` must read it.
    let db = Database::open_with(dir.path(), options()).unwrap();
    match refused_rule(&db, vec![inference(b)]) {
        Rule::UnconfirmedInference { lsn: 3, reason } => {
            assert!(reason.contains("damaged log record"), "{reason}")
        }
        other => panic!("expected an unconfirmed inference, got {other:?}"),
    }
    let checked = db.read_checked(|l, h| l.validate_with_history(&[inference(b)], h));
    assert!(matches!(checked.unwrap_err().rule, Rule::UnconfirmedInference { .. }));
    // Ids whose fingerprints hit nothing are not affected.
    db.write(vec![inference("unrelated")]).unwrap();
}
