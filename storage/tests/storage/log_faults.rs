//! Torn writes and bit flips on real segment files: a torn tail is cut and reported; damage
//! to a record with a valid record after it is detected and named, never skipped or applied.

use std::os::unix::fs::FileExt;
use std::path::Path;

use tally_storage::log::{Log, NewRecord};
use tally_storage::record::Kind;
use tally_storage::segment::HEADER_SIZE;
use tally_storage::StorageError;

const SEG: u64 = 256 * 1024;

/// A tiny deterministic generator (the tests must not depend on a crate's random streams).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..(40 + (i * 37) % 300)).map(|k| (k ^ i) as u8).collect()
}

/// Appends records 1..=n, each as its own synced group (as the flusher would), and returns
/// the offsets of every record in the active segment.
fn write(dir: &Path, n: u64) -> Vec<(u64, u64)> {
    let (mut log, _) = Log::open(dir, SEG).unwrap();
    for i in 1..=n {
        let p = payload(i);
        let file = log
            .append(&[NewRecord { index: i, term: 1, node: 1, kind: Kind::Batch, payload: &p }])
            .unwrap()
            .unwrap();
        file.sync_data().unwrap();
        log.durable().fetch_max(i + 1, std::sync::atomic::Ordering::AcqRel);
    }
    let seg = log.segments().last().unwrap();
    let mut offsets = Vec::new();
    let first = seg.first_index;
    for i in first..=n {
        offsets.push((i, seg.offset_of(i).unwrap().unwrap()));
    }
    offsets
}

fn active_segment(dir: &Path) -> std::path::PathBuf {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    names.pop().unwrap()
}

fn check_contents(log: &Log, upto: u64) {
    assert_eq!(log.last_index(), Some(upto));
    for i in 1..=upto {
        assert_eq!(log.read(i).unwrap().unwrap().payload, payload(i).as_slice(), "record {i}");
    }
}

#[test]
fn torn_tails_are_cut_and_reported() {
    let mut rng = Lcg(7);
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let n = 20 + rng.below(30);
        let offsets = write(dir.path(), n);
        let path = active_segment(dir.path());
        let (last, at) = *offsets.last().unwrap();
        let len = payload(last).len() as u64 + 48;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        // Leave the last record partial or garbled, as an interrupted write does.
        match round % 3 {
            0 => {
                let keep = rng.below(len);
                file.write_all_at(&vec![0u8; (len - keep) as usize], at + keep).unwrap();
            }
            1 => {
                let k = rng.below(len);
                let mut b = [0u8; 1];
                file.read_at(&mut b, at + k).unwrap();
                file.write_all_at(&[b[0] ^ 0x5a], at + k).unwrap();
            }
            _ => {
                let junk: Vec<u8> = (0..rng.below(5000) + 1).map(|_| rng.next() as u8).collect();
                file.write_all_at(&junk, at).unwrap();
            }
        }
        drop(file);
        let (log, recovery) = Log::open(dir.path(), SEG).unwrap();
        let torn = recovery.torn.expect("torn tail reported");
        assert_eq!((torn.index, torn.offset), (last, at), "round {round}");
        check_contents(&log, last - 1);
        drop(log);
        // The cut is durable: a second open finds a clean log.
        let (log, recovery) = Log::open(dir.path(), SEG).unwrap();
        assert_eq!(recovery.torn, None);
        check_contents(&log, last - 1);
    }
}

#[test]
fn a_flipped_byte_with_valid_records_after_it_is_corruption() {
    let mut rng = Lcg(11);
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let n = 10 + rng.below(30);
        let offsets = write(dir.path(), n);
        let path = active_segment(dir.path());
        let k = rng.below(offsets.len() as u64 - 1) as usize;
        let (index, at) = offsets[k];
        let len = payload(index).len() as u64 + 48;
        let pos = at + rng.below(len);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut b = [0u8; 1];
        file.read_at(&mut b, pos).unwrap();
        file.write_all_at(&[b[0] ^ (1 << rng.below(8))], pos).unwrap();
        drop(file);
        match Log::open(dir.path(), SEG) {
            Err(StorageError::Corrupt { path: p, offset, index: i, last_good }) => {
                assert_eq!(
                    (p, offset, i, last_good),
                    (path.clone(), at, index, index - 1),
                    "round {round}"
                );
                let msg = StorageError::Corrupt { path: path.clone(), offset, index: i, last_good }
                    .to_string();
                assert!(
                    msg.contains(&format!("offset {at}"))
                        && msg.contains(&format!("log index {index}"))
                );
            }
            Err(e) => panic!("round {round}: wrong error {e}"),
            Ok(_) => panic!("round {round}: a flip at {pos} (record {index}) went unnoticed"),
        }
    }
}

#[test]
fn sealed_segments_carry_checksums_and_rolling_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), 8192).unwrap();
    for i in 1..=200u64 {
        let p = payload(i);
        log.append(&[NewRecord { index: i, term: 1, node: 1, kind: Kind::Batch, payload: &p }])
            .unwrap();
    }
    assert!(log.segments().len() > 5);
    assert!(log.verify_sealed().unwrap() >= 5);
    drop(log);
    let (log, recovery) = Log::open(dir.path(), 8192).unwrap();
    assert!(recovery.reindexed.is_empty(), "index files were written at seal time");
    check_contents(&log, 200);
    let sealed = log.segments()[1].path.clone();
    drop(log);
    // Damage inside a sealed segment is found by verification, not at open.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&sealed).unwrap();
    file.write_all_at(&[0xff], HEADER_SIZE + 60).unwrap();
    drop(file);
    let (log, _) = Log::open(dir.path(), 8192).unwrap();
    assert!(matches!(log.verify_sealed(), Err(StorageError::SealedChecksum { .. })));
    // Reads that reach it name the damaged record and go no further.
    let first = log.segments()[1].first_index;
    let read: Vec<_> = log.iter_from(1).collect();
    let (good, bad) = read.split_at(read.len() - 1);
    assert_eq!(good.len() as u64, first - 1, "every record before the damage");
    match &bad[0] {
        Err(StorageError::Damaged { path, offset, index }) => {
            assert_eq!((path, *offset, *index), (&sealed, HEADER_SIZE, first))
        }
        other => panic!("{:?}", other.as_ref().map(|r| r.header)),
    }
    assert!(log.read(first + 1).is_err(), "a read past the damage cannot find its record");
    assert!(log.read(first - 1).unwrap().is_some());
}

#[test]
fn truncation_is_durable_and_new_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 30);
    let (mut log, _) = Log::open(dir.path(), SEG).unwrap();
    log.truncate(21).unwrap();
    assert_eq!(log.last_index(), Some(20));
    let p = b"after the cut".to_vec();
    log.append(&[NewRecord { index: 21, term: 2, node: 1, kind: Kind::Blank, payload: &p }])
        .unwrap();
    drop(log);
    let (log, recovery) = Log::open(dir.path(), SEG).unwrap();
    assert_eq!(recovery.torn, None);
    assert_eq!(log.last_index(), Some(21));
    assert_eq!(log.read(21).unwrap().unwrap().payload, p.as_slice());
    assert_eq!(log.read(21).unwrap().unwrap().header.term, 2);
    assert!(log.read(22).unwrap().is_none());
}

#[test]
fn appends_out_of_order_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), SEG).unwrap();
    log.append(&[NewRecord { index: 5, term: 1, node: 1, kind: Kind::Blank, payload: &[] }])
        .unwrap();
    let err =
        log.append(&[NewRecord { index: 7, term: 1, node: 1, kind: Kind::Blank, payload: &[] }]);
    assert!(matches!(err, Err(StorageError::OutOfOrder { expected: 6, got: 7 })));
}

#[test]
fn one_append_of_many_records_is_gathered_whole_across_rolls() {
    // Payload lengths 0..=47 give every padding. In 1 MiB segments an append of 700 records is
    // more slices than one pwritev takes (1,024); in 8 KiB segments appends roll inside.
    let payloads: Vec<Vec<u8>> =
        (1..=1200u64).map(|i| (0..i % 48).map(|k| (k as u8) ^ (i as u8)).collect()).collect();
    let records: Vec<NewRecord> = payloads
        .iter()
        .enumerate()
        .map(|(n, p)| NewRecord {
            index: n as u64 + 1,
            term: 3,
            node: 2,
            kind: Kind::Batch,
            payload: p,
        })
        .collect();
    for segment in [1 << 20, 8192] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), segment).unwrap();
        log.append(&records[..700]).unwrap();
        log.append(&records[700..]).unwrap();
        drop(log);
        let (log, recovery) = Log::open(dir.path(), segment).unwrap();
        assert_eq!(recovery.torn, None);
        assert_eq!(log.segments().len() > 1, segment == 8192, "rolls only in small segments");
        for (n, p) in payloads.iter().enumerate() {
            let r = log.read(n as u64 + 1).unwrap().unwrap();
            assert_eq!((r.payload, r.header.term, r.header.node), (p.as_slice(), 3, 2));
        }
        assert!(log.read(1201).unwrap().is_none());
    }
}

#[test]
fn an_append_with_a_gap_inside_writes_none_of_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), SEG).unwrap();
    let p = b"payload".to_vec();
    let at = |index| NewRecord { index, term: 1, node: 1, kind: Kind::Batch, payload: &p };
    log.append(&[at(1)]).unwrap();
    let err = log.append(&[at(2), at(3), at(5)]);
    assert!(matches!(err, Err(StorageError::OutOfOrder { expected: 4, got: 5 })));
    assert_eq!(log.last_index(), Some(1));
    log.append(&[at(2)]).unwrap();
    drop(log);
    let (log, recovery) = Log::open(dir.path(), SEG).unwrap();
    assert_eq!((recovery.torn, log.last_index()), (None, Some(2)));
}
