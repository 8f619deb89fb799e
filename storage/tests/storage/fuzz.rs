//! Fuzz targets on stable Rust (proptest-driven) for everything storage reads back from disk:
//! record framing at any offset of any bytes, entry payloads and batch archives, segment files
//! with damage anywhere (opening and reading them), and snapshot files whose checksum was fixed
//! up so that damage reaches the parsers inside. None may panic. `TALLY_FUZZ_CASES` sets the
//! cases (tests/fuzz.sh runs them long).

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use proptest::prelude::*;
use rkyv::util::AlignedVec;
use tally_engine::{Datanet, Event};
use tally_storage::log::{Log, NewRecord};
use tally_storage::payload::{self, Proposal};
use tally_storage::record::{self, Kind, Probe};
use tally_storage::snapshot::SnapshotFile;
use tally_storage::{Database, Options};

fn fuzz(default: u32) -> ProptestConfig {
    let cases = std::env::var("TALLY_FUZZ_CASES").ok().and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: cases.unwrap_or(default),
        failure_persistence: None,
        ..Default::default()
    }
}

/// Small segments, so that the log has sealed segments with index files.
const SEGMENT: u64 = 16 * 1024;

fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

fn batch(n: usize) -> Vec<Event> {
    (0..n)
        .map(|k| Event::Datanet(Datanet { datanet: format!("dn-{k}").into(), owner: "o".into() }))
        .collect()
}

/// An entry payload of three grouped batches.
fn proposal() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let parts: Vec<_> =
            (1..4).map(|n| payload::encode_batch(n as i64, None, batch(n))).collect();
        Proposal::group(&parts).as_bytes().to_vec()
    })
}

/// A snapshot file of a small ledger.
fn snapshot() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), Options::default()).unwrap();
        for k in 0..3 {
            let events = vec![Event::Datanet(Datanet {
                datanet: format!("s{k}").into(),
                owner: "o".into(),
            })];
            db.write(events).unwrap();
        }
        db.close().unwrap();
        std::fs::read(dir.path().join("snapshot.bin")).unwrap()
    })
}

fn damage(bytes: &mut [u8], flips: &[(prop::sample::Index, u8)], from: usize) {
    for (at, value) in flips {
        let at = from + at.index(bytes.len() - from);
        bytes[at] = *value;
    }
}

proptest! {
    #![proptest_config(fuzz(500))]

    #[test]
    fn fuzz_record_framing(data in prop::collection::vec(any::<u8>(), 0..512), at in 0usize..64) {
        let at = at * record::ALIGN;
        if let Probe::Valid { len, size, .. } = record::probe(&data, at) {
            prop_assert!(at + len <= data.len() && size >= len);
            let _ = record::payload(&data, at, len);
        }
    }

    #[test]
    fn fuzz_entry_payloads_and_batches(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        random in proptest::option::of(prop::collection::vec(any::<u8>(), 0..256)),
    ) {
        let mut bytes = random.unwrap_or_else(|| proposal().to_vec());
        if !bytes.is_empty() {
            damage(&mut bytes, &flips, 0);
        }
        let bytes = aligned(&bytes);
        if let Ok(parts) = payload::parts(&bytes) {
            for part in parts {
                let _ = payload::decode(&aligned(part));
            }
        }
    }

    #[test]
    fn fuzz_snapshot_file(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = snapshot().to_vec();
        let body = bytes.len() - 4;
        let mut head = bytes[..body].to_vec();
        damage(&mut head, &flips, 8);
        let crc = crc32c::crc32c(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        bytes = head;
        if let Ok(file) = SnapshotFile::decode(&bytes) {
            if let Ok(state) = file.into_state() {
                let _ = state.ledger.audit();
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz(40))]

    /// A segment with damage anywhere (records, padding, header, index file) opens or is
    /// refused, and every record of a log that opens can be read or is refused by name.
    #[test]
    fn fuzz_segment_files(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        in_index in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Log::open(dir.path(), SEGMENT).unwrap();
            for i in 1..=60u64 {
                let p = vec![i as u8; 100 + (i as usize * 37) % 900];
                log.append(&[NewRecord { index: i, term: 1, node: 1, kind: Kind::Batch, payload: &p }]).unwrap();
            }
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let want = if in_index { "idx" } else { "log" };
        let target = files.iter().find(|p| p.extension().is_some_and(|e| e == want)).unwrap_or(&files[0]);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(target).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // Most of a preallocated segment is zeros past its records: aim at the written part.
        let written = if in_index { len } else { len.min(SEGMENT as usize) };
        for (at, value) in &flips {
            file.write_all_at(&[*value], at.index(written) as u64).unwrap();
        }
        drop(file);
        for salvage in [false, true] {
            let opened = if salvage { Log::salvage(dir.path(), SEGMENT) } else { Log::open(dir.path(), SEGMENT) };
            if let Ok((log, _)) = opened {
                for r in log.iter_from(0) {
                    if r.is_err() { break; }
                }
                for i in 0..=61 {
                    let _ = log.read(i);
                }
                let _ = log.verify_sealed();
            }
        }
    }
}
