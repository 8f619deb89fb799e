//! kill -9 of a writer process at random moments, many rounds: after each restart every
//! acknowledged batch is there exactly once, no batch is half there, and at the end the live
//! state equals a full replay of the log (`verify`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_storage::{Database, Options};

const ROUNDS: u64 = 14;
const INFERENCES_PER_BATCH: u64 = 50;

fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Batches present: datanets named tb-K, always a prefix 0..n.
fn present(db: &Database) -> (u64, u64, u64) {
    db.read(|l| {
        let mut ks: Vec<u64> = l
            .datanets()
            .filter_map(|d| d.datanet.strip_prefix("tb-").map(|k| k.parse().unwrap()))
            .collect();
        ks.sort_unstable();
        assert!(
            ks.iter().enumerate().all(|(i, &k)| i as u64 == k),
            "batches are not a prefix: {ks:?}"
        );
        (ks.len() as u64, l.inference_count(), l.last_lsn())
    })
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x5eed_u64;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut acked_total = 0;
    for round in 0..ROUNDS {
        let mut child = tally()
            .args(["torture", "--data"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<u64> =
                    line.split_whitespace().skip(1).map(|p| p.parse().unwrap()).collect();
                if tx.send((parts[0], parts[1], parts[2])).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement (the database is open), then kill at a random
        // moment: while batches are being written, fsynced, applied or snapshotted.
        let first = rx.recv_timeout(Duration::from_secs(60)).expect("writer acknowledged nothing");
        let deadline = Instant::now() + Duration::from_millis(20 + rand(400));
        let mut acks = vec![first];
        while Instant::now() < deadline {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(5)) {
                acks.push(a);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acks.extend(rx.try_iter());
        acked_total += acks.len();

        let db = Database::open_with(
            dir.path(),
            Options { segment_bytes: 1 << 20, snapshot_every_events: 2_000, ..Options::default() },
        )
        .unwrap();
        let (batches, inferences, last_lsn) = present(&db);
        let max_acked = acks.iter().map(|a| a.0).max().unwrap();
        assert!(
            batches > max_acked,
            "round {round}: batch {max_acked} was acknowledged but is missing"
        );
        // No batch is half there: the inference count is exactly that of whole batches.
        assert_eq!(inferences, (batches - 1) * INFERENCES_PER_BATCH, "round {round}");
        for (k, _, last) in &acks {
            assert!(*last <= last_lsn, "round {round}: batch {k} acknowledged up to lsn {last}");
        }
        // Acknowledged lsns are what the ledger holds: lsn ranges of consecutive batches abut.
        let mut sorted = acks.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            if w[1].0 == w[0].0 + 1 {
                assert_eq!(
                    w[1].1,
                    w[0].2 + 1,
                    "round {round}: lsns of batches {} and {}",
                    w[0].0,
                    w[1].0
                );
            }
        }
        drop(db);
    }
    assert!(acked_total > ROUNDS as usize * 2, "too few acknowledgements to mean anything");
    let report = tally_storage::verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "verify found problems: {:?}", report.problems);
    assert_eq!(report.live_digest, report.batch_replay_digest);
}

#[test]
fn verify_and_demo_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = tally()
        .args(["demo", "--inferences", "3000", "--seed", "9", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3000 inferences"));
    let out = tally().args(["verify", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: the ledger verifies"));
    // A second demo into the same directory is refused, clearly.
    let out = tally().args(["demo", "--inferences", "10", "--data"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    // A flipped byte in a sealed segment makes verify fail with a non-zero exit.
    let seg = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4096] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let out = tally().args(["verify", "--data"]).arg(&data).output().unwrap();
    assert!(!out.status.success(), "verify must fail on a damaged log");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt log") && err.contains("tally salvage"), "{err}");
    // Salvage cuts at the damage, explicitly; the rest verifies.
    let out = tally().args(["salvage", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("salvaged: cut"));
    let out = tally().args(["verify", "--data"]).arg(&data).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
