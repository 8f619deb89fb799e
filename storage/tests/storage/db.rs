//! The embedded database as a user sees it: write batches, get lsns, read state, close,
//! reopen with identical state; refusals leave nothing; one process per directory.

use tally_engine::{Datanet, Event, Rule};
use tally_storage::{Database, Options, StorageError, WriteError};
use tally_workload::{Generator, Shape};

fn small() -> Options {
    Options { segment_bytes: 1 << 20, snapshot_every_events: 5_000, ..Options::default() }
}

#[test]
fn write_close_reopen_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let mut next_lsn = 1;
    for batch in Generator::new(Shape::demo(3, 12_000)) {
        let n = batch.len() as u64;
        let applied = db.write(batch).unwrap();
        assert_eq!((applied.first_lsn, applied.last_lsn), (next_lsn, next_lsn + n - 1));
        next_lsn += n;
    }
    let digest = db.read(|l| l.digest());
    assert_eq!(db.read(|l| l.inference_count()), 12_000);
    db.close().unwrap();

    // After a clean close the snapshot holds everything.
    let db = Database::open_with(dir.path(), small()).unwrap();
    assert_eq!(db.read(|l| l.digest()), digest);
    assert_eq!(db.read(|l| l.last_lsn()), next_lsn - 1);
    // And the ledger keeps going from there.
    let more = vec![Event::Datanet(Datanet { datanet: "late".into(), owner: "o".into() })];
    assert_eq!(db.write(more).unwrap().first_lsn, next_lsn);
    let digest = db.read(|l| l.digest());
    drop(db); // no close: no final snapshot; the tail is replayed from the log

    std::fs::remove_file(dir.path().join("snapshot.bin")).ok();
    let db = Database::open_with(dir.path(), small()).unwrap();
    assert_eq!(db.read(|l| l.digest()), digest, "full replay from the log alone");
}

#[test]
fn a_refused_batch_gets_no_lsn_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let dn = |id: &str| Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() });
    db.write(vec![dn("a")]).unwrap();
    let before = db.read(|l| l.digest());
    match db.write(vec![dn("b"), dn("a")]) {
        Err(WriteError::Refused(r)) => assert_eq!((r.index, r.rule), (1, Rule::DuplicateDatanet)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(db.read(|l| l.digest()), before);
    assert_eq!(db.write(vec![dn("b")]).unwrap().first_lsn, 2, "lsns stay dense");
    drop(db);
    let db = Database::open_with(dir.path(), small()).unwrap();
    assert_eq!(db.read(|l| l.last_lsn()), 2);
    assert_eq!(db.read(|l| l.datanets().count()), 2);
}

#[test]
fn one_process_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    match Database::open_with(dir.path(), small()) {
        Err(StorageError::Locked { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second open must be refused"),
    }
    drop(db);
    Database::open_with(dir.path(), small()).unwrap();
}

#[test]
fn concurrent_batches_share_fsyncs_and_each_stays_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let dn = |id: String| Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() });
    let entries_before = db.log().with_log(|l| l.last_index().unwrap());
    let results = db.runtime().block_on(async {
        let mut pending = Vec::new();
        for k in 0..300 {
            // Batch 150 repeats batch 10's datanet: it alone must be refused.
            let id = if k == 150 { "g-10".to_string() } else { format!("g-{k}") };
            pending
                .push(db.submit(vec![dn(id.clone()), dn(format!("{id}-second"))]).await.unwrap());
        }
        let mut out = Vec::new();
        for p in pending {
            out.push(db.finish(p).await);
        }
        out
    });
    let mut next = 1;
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(a) => {
                assert_ne!(k, 150);
                assert_eq!((a.first_lsn, a.last_lsn), (next, next + 1), "batch {k}");
                next += 2;
            }
            Err(WriteError::Refused(refusal)) => {
                assert_eq!(k, 150);
                assert_eq!(refusal.rule, Rule::DuplicateDatanet);
            }
            Err(e) => panic!("batch {k}: {e}"),
        }
    }
    assert_eq!(db.read(|l| l.datanets().count()), 299 * 2);
    let entries = db.log().with_log(|l| l.last_index().unwrap()) - entries_before;
    assert!(entries < 150, "300 concurrent batches took {entries} log entries: no grouping");
    drop(db);
    let report = tally_storage::verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.batches_refused, 1);
}

/// A tmpfs of a given size, unmounted on drop (needs root, as CI runs).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }

    fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("3m") else {
        // Mounting needs root; CI runs as root, so there the test must run.
        assert!(std::env::var_os("CI").is_none(), "cannot mount a tmpfs for the disk-full test");
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return;
    };
    let data = disk.0.path().join("data");
    let options = Options {
        segment_bytes: 256 * 1024,
        snapshot_every_events: u64::MAX,
        ..Options::default()
    };
    let db = Database::open_with(&data, options.clone()).unwrap();
    let mut acked = 0u64;
    let mut last_lsn = 0;
    let full = loop {
        let batch: Vec<Event> = (0..200)
            .map(|j| {
                Event::Datanet(Datanet {
                    datanet: format!("d-{acked}-{j}").into(),
                    owner: "o".repeat(100).into(),
                })
            })
            .collect();
        match db.write(batch) {
            Ok(a) => {
                acked += 1;
                last_lsn = a.last_lsn;
            }
            Err(e) => break e,
        }
        assert!(acked < 10_000, "the disk never filled");
    };
    assert!(acked > 3);
    let msg = full.to_string();
    assert!(matches!(full, WriteError::Storage(_)) && msg.contains("disk full"), "{msg}");
    // Still full: still refused, still clearly.
    let again = db.write(vec![Event::Datanet(Datanet { datanet: "x".into(), owner: "o".into() })]);
    assert!(again.unwrap_err().to_string().contains("disk full"));
    let digest = db.read(|l| l.digest());
    drop(db);
    // With space again, every acknowledged batch is there and the ledger takes writes.
    disk.grow("64m");
    let db = Database::open_with(&data, options).unwrap();
    assert_eq!(db.read(|l| (l.last_lsn(), l.digest())), (last_lsn, digest));
    assert_eq!(db.read(|l| l.datanets().count() as u64), acked * 200);
    db.write(vec![Event::Datanet(Datanet { datanet: "after".into(), owner: "o".into() })]).unwrap();
}

#[test]
fn the_background_check_finds_damage_in_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    ledger_with_a_flip_in_a_sealed_segment(dir.path());
    let options = sealed_options();
    let db = Database::open_with(dir.path(), options).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while db.background_problem().is_none() {
        assert!(std::time::Instant::now() < deadline, "damage not found");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let problem = db.background_problem().unwrap();
    assert!(problem.contains("seg-00000000000000000000.log"), "{problem}");
}

#[test]
fn scanning_events_from_any_lsn_matches_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let dn = |id: String| Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() });
    db.runtime().block_on(async {
        let mut pending = Vec::new();
        for k in 0..40 {
            // Batch 20 repeats batch 3's first datanet: refused, so it has no lsns.
            let first = if k == 20 { "d-3-0".to_string() } else { format!("d-{k}-0") };
            let mut batch = vec![dn(first)];
            batch.extend((1..300).map(|j| dn(format!("d-{k}-{j}"))));
            pending.push(db.submit(batch).await.unwrap());
        }
        for p in pending {
            let _ = db.finish(p).await;
        }
    });
    let last = db.read(|l| l.last_lsn());
    assert_eq!(last, 39 * 300);
    let scan = |from: u64| {
        let mut out = Vec::new();
        db.scan_events(from, last, |e| out.push(e)).unwrap();
        out
    };
    let full = scan(1);
    assert_eq!(full.len() as u64, last);
    assert!(full.iter().enumerate().all(|(i, e)| e.lsn == i as u64 + 1));
    assert!(full.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert!(full
        .iter()
        .all(|e| !matches!(&e.event, Event::Datanet(d) if d.datanet.starts_with("d-20-"))));
    for from in [1, 2, 299, 300, 301, 4095, 4096, 4097, 6000, last] {
        assert_eq!(scan(from), full[from as usize - 1..].to_vec(), "from lsn {from}");
    }
    let mut window = Vec::new();
    db.scan_events(4000, 4010, |e| window.push(e.lsn)).unwrap();
    assert_eq!(window, (4000..=4010).collect::<Vec<_>>());
    // A scan cut into chunks (whole batches, at least `max` events each) resumes exactly where
    // it stopped: the chunks together are the whole scan, in order, each event once.
    for (from, to, max) in [(1, last, 1), (1, last, 450), (299, 6001, 1000), (4097, last, 7)] {
        let mut chunks = Vec::new();
        let mut at = db.scan_start(from);
        while let Some(cursor) = at {
            let mut chunk = Vec::new();
            at = db.scan_chunk(cursor, from, to, max, &mut |e| chunk.push(e)).unwrap();
            assert!(at.is_none() || chunk.len() >= max, "a chunk stops only past max");
            chunks.push(chunk);
        }
        let joined: Vec<_> = chunks.concat();
        assert_eq!(joined, full[from as usize - 1..to as usize].to_vec(), "{from}..={to} by {max}");
    }
}

/// Writes 40 batches of 50 datanets into 64 KiB segments, closes, and flips one byte in the
/// middle of the first (sealed) segment. Returns the segment's path and the flipped offset.
fn ledger_with_a_flip_in_a_sealed_segment(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let db = Database::open_with(dir, sealed_options()).unwrap();
    for k in 0..40 {
        let batch: Vec<Event> = (0..50)
            .map(|j| {
                Event::Datanet(Datanet {
                    datanet: format!("d-{k}-{j}").into(),
                    owner: "owner".into(),
                })
            })
            .collect();
        db.write(batch).unwrap();
    }
    db.close().unwrap();
    let first = dir.join("log").join(tally_storage::segment::file_name(0));
    let mut bytes = std::fs::read(&first).unwrap();
    let end = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    assert!(end > 1024, "the first segment is sealed and holds records");
    let at = (64 + end) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&first, bytes).unwrap();
    (first, at)
}

fn sealed_options() -> Options {
    Options { segment_bytes: 64 * 1024, snapshot_every_events: u64::MAX, ..Options::default() }
}

#[test]
fn damage_in_a_sealed_segment_is_named_by_reads_by_opening_and_cut_by_salvage() {
    let dir = tempfile::tempdir().unwrap();
    let (first, flipped) = ledger_with_a_flip_in_a_sealed_segment(dir.path());
    // With the snapshot, the ledger opens; a read that reaches the damage fails, naming it,
    // and never returns a short answer.
    let db = Database::open_with(dir.path(), sealed_options()).unwrap();
    let last = db.read(|l| l.last_lsn());
    assert_eq!(last, 2000);
    let mut seen = 0u64;
    let err = db.scan_events(1, last, |_| seen += 1).unwrap_err();
    let (offset, index) = match &err {
        StorageError::Damaged { path, offset, index } => {
            assert_eq!(path, &first);
            (*offset, *index)
        }
        other => panic!("expected damage, got {other}"),
    };
    assert!(offset as usize <= flipped && flipped - (offset as usize) < 64 * 1024, "{err}");
    assert!(seen < last, "the scan stopped at the damage");
    let message = err.to_string();
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    assert!(message.contains(&format!("log index {index}")) && message.contains("salvage"));
    drop(db);
    // Without it, opening must replay through the damage: it refuses, naming the record.
    std::fs::remove_file(dir.path().join("snapshot.bin")).unwrap();
    match Database::open_with(dir.path(), sealed_options()) {
        Err(StorageError::Corrupt { path, offset: o, index: i, .. }) => {
            assert_eq!((path, o, i), (first.clone(), offset, index))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a ledger with a hole in its log"),
    }
    // Salvage finds it, cuts the log there and removes the segments after it.
    let salvaged = tally_storage::salvage::salvage(dir.path()).unwrap();
    let cut = salvaged.cut.expect("salvage cut the log");
    assert!(salvaged.damaged && !salvaged.removed.is_empty());
    assert_eq!((cut.path, cut.offset, cut.index), (first, offset, index));
    assert_eq!(salvaged.last_index, Some(index - 1));
    let report = tally_storage::verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let db = Database::open_with(dir.path(), sealed_options()).unwrap();
    let kept = db.read(|l| l.last_lsn());
    assert!(kept > 0 && kept < last, "kept {kept} of {last}");
    let mut n = 0u64;
    db.scan_events(1, kept, |_| n += 1).unwrap();
    assert_eq!(n, kept);
}

#[test]
fn a_batch_refused_for_its_shape_costs_no_log_space() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let dn = |id: String| Event::Datanet(Datanet { datanet: id.into(), owner: "o".into() });
    db.write(vec![dn("a".into())]).unwrap();
    let bytes = db.log().with_log(|l| l.data_bytes());
    for _ in 0..5 {
        match db.write(vec![dn("ok".into()), dn("x".repeat(20 << 20))]) {
            Err(WriteError::Refused(r)) => assert_eq!((r.index, r.rule), (1, Rule::BadId)),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // The first offending event is still the one validation names, stateful rules included.
    match db.write(vec![dn("a".into()), dn("x".repeat(200))]) {
        Err(WriteError::Refused(r)) => assert_eq!((r.index, r.rule), (0, Rule::DuplicateDatanet)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(db.log().with_log(|l| l.data_bytes()), bytes, "refused batches were logged");
    assert_eq!(db.write(vec![dn("b".into())]).unwrap().first_lsn, 2);
}

#[test]
fn the_ledger_at_a_past_lsn_is_the_state_the_live_ledger_had_then() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 5,000 events: past states before and after a snapshot are rebuilt.
    let db = Database::open_with(dir.path(), small()).unwrap();
    let mut seen = vec![(0, tally_engine::Ledger::new().digest())];
    for batch in Generator::new(Shape::demo(5, 9_000)) {
        let applied = db.write(batch).unwrap();
        seen.push((applied.last_lsn, db.read(|l| l.digest())));
    }
    let last = db.read(|l| l.last_lsn());
    assert!(dir.path().join("snapshot.bin").exists(), "a periodic snapshot was taken");
    // The demo shape revokes inside open epochs and closes epochs: a past state's pools are
    // divided again under the revocations it had.
    assert!(db.read(|l| l.revocations().count() > 0 && l.epochs().count() > 1));
    let step = (seen.len() / 12).max(1);
    // With the periodic snapshot somewhere behind the end (states after it continue from
    // it, mid-epoch), then with one at the very end (states before it replay the log).
    for snapshot_at_end in [false, true] {
        if snapshot_at_end {
            db.snapshot().unwrap();
        }
        for &(lsn, digest) in seen.iter().step_by(step).chain(seen.last()) {
            let past = db.ledger_at(lsn).unwrap();
            assert_eq!(past.last_lsn(), lsn);
            assert_eq!(past.digest(), digest, "the ledger at lsn {lsn}");
        }
    }
    match db.ledger_at(last + 1) {
        Err(StorageError::PastLastLsn { lsn, last: l }) => assert_eq!((lsn, l), (last + 1, last)),
        other => panic!("expected PastLastLsn, got {:?}", other.map(|l| l.last_lsn())),
    }
}
