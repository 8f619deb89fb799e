//! Snapshot images: a decoded ledger is the same state (digest and bytes) and keeps applying
//! exactly like the original; truncated or damaged images are errors, never panics.

use std::time::Instant;

use tally_engine::{replay, CpuSettler, Event, ImageError, Ledger, LoggedEvent, Rule};

use super::{contrib, dn, model, policy, revoke, settle, weighted, worked_example_setup_events};

/// splitmix64: a fixed, dependency-free source of test variety.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Models over datanets d0..d3: b0 (d0, d1), b1 (d2, d3), a0 (adapter of b0 adding d2), a1
/// (adapter of b1 adding nothing). Contribution i lives in datanet i % 4.
const MODELS: [(&str, &[usize]); 4] =
    [("b0", &[0, 1]), ("b1", &[2, 3]), ("a0", &[0, 1, 2]), ("a1", &[2, 3])];

/// Builds a ledger from random batches (inferences, revocations, policies, closes, new
/// contributions and accounts) and returns it with its log. Refused batches are dropped, as
/// a leader would drop them.
pub(super) struct Builder {
    pub(super) ledger: Ledger,
    log: Vec<LoggedEvent>,
    rng: Rng,
    contributions: usize,
    inferences: usize,
    ts: i64,
}

impl Builder {
    fn new(seed: u64) -> Self {
        let mut b = Builder {
            ledger: Ledger::new(),
            log: Vec::new(),
            rng: Rng(seed),
            contributions: 0,
            inferences: 0,
            ts: 1_000,
        };
        let mut setup = vec![dn("d0", "o0"), dn("d1", "o1"), dn("d2", "o0"), dn("d3", "o2")];
        for _ in 0..24 {
            setup.push(b.new_contribution());
        }
        setup.extend([
            model("b0", "o0", None, &["d0", "d1"]),
            model("b1", "u1", None, &["d2", "d3"]),
            model("a0", "o1", Some("b0"), &["d2"]),
            model("a1", "o2", Some("b1"), &[]),
        ]);
        assert!(b.apply(setup));
        b
    }

    fn new_contribution(&mut self) -> Event {
        let i = self.contributions;
        self.contributions += 1;
        contrib(&format!("c{i}"), &format!("d{}", i % 4), &format!("u{}", i % 7), i as u64)
    }

    fn inference(&mut self) -> Event {
        let (name, lineage) = MODELS[self.rng.below(MODELS.len())];
        let mut entries: Vec<(String, u32)> = Vec::new();
        for _ in 0..self.rng.below(9) {
            let c = self.rng.below(self.contributions);
            let weight = match self.rng.below(4) {
                0 => 0,
                1 => 1_000_000,
                _ => self.rng.below(1_000_001) as u32,
            };
            let id = format!("c{c}");
            if lineage.contains(&(c % 4)) && !entries.iter().any(|(e, _)| *e == id) {
                entries.push((id, weight));
            }
        }
        let fee = match self.rng.below(5) {
            0 => 0,
            1 => 1 << 40,
            _ => self.rng.below(100_000) as i64,
        };
        self.inferences += 1;
        let weights: Vec<(&str, u32)> = entries.iter().map(|(c, w)| (c.as_str(), *w)).collect();
        weighted(&format!("i{}", self.inferences), name, fee, &weights)
    }

    fn event(&mut self) -> Event {
        match self.rng.below(40) {
            0..=27 => self.inference(),
            28..=31 => revoke(&format!("c{}", self.rng.below(self.contributions))),
            32 => policy(
                self.rng.below(3000) as i64,
                self.rng.below(3000) as i64,
                self.rng.below(3000) as i64,
            ),
            33 => settle(self.ledger.open_epoch()),
            34..=36 => self.new_contribution(),
            _ => dn(&format!("dn-{}", self.rng.next() % 1000), &format!("o{}", self.rng.below(9))),
        }
    }

    /// Applies one batch; false when the ledger refused it.
    fn apply(&mut self, batch: Vec<Event>) -> bool {
        self.ts += self.rng.below(100) as i64;
        let Ok(applied) = self.ledger.apply(&batch, self.ts) else {
            return false;
        };
        for (k, event) in batch.into_iter().enumerate() {
            self.log.push(LoggedEvent { lsn: applied.first_lsn + k as u64, ts: applied.ts, event });
        }
        true
    }

    fn random_batches(&mut self, batches: usize) {
        for _ in 0..batches {
            let len = 1 + self.rng.below(6);
            let batch = (0..len).map(|_| self.event()).collect();
            self.apply(batch);
        }
    }
}

pub(super) fn random_ledger(seed: u64, batches: usize) -> Builder {
    let mut b = Builder::new(seed);
    b.random_batches(batches);
    b
}

fn round_trip(l: &Ledger) -> Ledger {
    let bytes = l.encode_image();
    let back = Ledger::decode_image(&bytes).expect("an image decodes");
    assert_eq!(back.digest(), l.digest());
    assert_eq!(back.encode_image(), bytes, "equal states give equal images");
    back
}

#[test]
fn random_ledgers_round_trip() {
    for seed in 0..12 {
        let b = random_ledger(seed, 60 + 20 * seed as usize);
        let l = &b.ledger;
        // The sequences reach every part of the state.
        assert!(l.open_epoch() > 3 && l.open_entries().count() > 0, "seed {seed}");
        assert!(l.revocations().count() > 5 && l.policies().count() > 0, "seed {seed}");
        let back = round_trip(l);
        // What the digest does not cover directly but the read tables show.
        assert_eq!(back.balances().collect::<Vec<_>>(), l.balances().collect::<Vec<_>>());
        assert_eq!(back.open_entries().collect::<Vec<_>>(), l.open_entries().collect::<Vec<_>>());
        assert_eq!(back.revocations().collect::<Vec<_>>(), l.revocations().collect::<Vec<_>>());
        assert_eq!(back.policies().collect::<Vec<_>>(), l.policies().collect::<Vec<_>>());
        assert_eq!(back.settlements().collect::<Vec<_>>(), l.settlements().collect::<Vec<_>>());
        assert_eq!(back.memory().inference_ids, l.memory().inference_ids);
        for c in 0..b.contributions {
            let name = format!("c{c}");
            assert_eq!(back.contribution(&name), l.contribution(&name));
        }
    }
}

#[test]
fn a_decoded_ledger_keeps_applying_identically() {
    for seed in 100..108 {
        let mut b = random_ledger(seed, 80);
        let mut back = round_trip(&b.ledger);
        // The same further batches, accepted or refused alike. Revocations re-settle through
        // the rebuilt chains; repeated content and inference ids hit the rebuilt index and the
        // loaded fingerprints.
        for step in 0..150 {
            let batch: Vec<Event> = match step % 10 {
                0 => vec![contrib("c-dup", "d0", "thief", 3)],
                1 => vec![weighted("i1", "b0", 5, &[])],
                _ => {
                    let len = 1 + b.rng.below(6);
                    (0..len).map(|_| b.event()).collect()
                }
            };
            let ts = 1_000_000 + step;
            assert_eq!(back.apply(&batch, ts), b.ledger.apply(&batch, ts), "step {step}");
            assert_eq!(back.digest(), b.ledger.digest(), "step {step}");
        }
        assert_eq!(back.encode_image(), b.ledger.encode_image());
    }
}

#[test]
fn revoking_after_a_round_trip_resettles_open_entries() {
    let mut l = Ledger::new();
    l.apply(&worked_example_setup_events(), 1_000).unwrap();
    let batch = [
        weighted("i1", "m-adapter", 1001, &[("c1", 1_000_000), ("c2", 333_333), ("c3", 333_333)]),
        weighted("i2", "m-base", 700, &[("c3", 5)]),
    ];
    l.apply(&batch, 2_000).unwrap();
    let mut back = round_trip(&l);
    for ledger in [&mut l, &mut back] {
        ledger.apply(&[revoke("c3")], 3_000).unwrap();
    }
    assert_eq!(back.digest(), l.digest());
    assert_eq!(back.balance("x").unwrap().earned, 451);
    assert_eq!(back.balance("z").unwrap().earned, 0);
    let refused = back.apply(&[contrib("c9", "dn-a", "w", 2)], 4_000).unwrap_err();
    assert_eq!(refused.rule, Rule::DuplicateContent { earlier: "c2".into() });
    let refused = back.apply(&[weighted("i2", "m-base", 1, &[])], 4_000).unwrap_err();
    assert_eq!(refused.rule, Rule::DuplicateInference);
}

#[test]
fn empty_and_replayed_ledgers_round_trip() {
    round_trip(&Ledger::new());
    let mut only_closed = Ledger::new();
    only_closed.apply(&[settle(1), settle(2)], 5).unwrap();
    round_trip(&only_closed);
    let b = random_ledger(7, 150);
    let replayed = replay(b.log.iter(), &CpuSettler).unwrap();
    assert_eq!(replayed.encode_image(), b.ledger.encode_image());
    round_trip(&replayed);
}

#[test]
fn images_decode_at_any_alignment() {
    let bytes = random_ledger(3, 50).ledger.encode_image();
    let digest = Ledger::decode_image(&bytes).unwrap().digest();
    for shift in 1..17 {
        let mut moved = vec![0u8; shift];
        moved.extend_from_slice(&bytes);
        assert_eq!(Ledger::decode_image(&moved[shift..]).unwrap().digest(), digest);
    }
}

fn refused(bytes: &[u8]) -> ImageError {
    match Ledger::decode_image(bytes) {
        Ok(_) => panic!("damaged image accepted"),
        Err(e) => e,
    }
}

#[test]
fn truncated_and_extended_images_are_refused() {
    let bytes = random_ledger(5, 40).ledger.encode_image();
    for len in 0..bytes.len() {
        let err = refused(&bytes[..len]);
        if len < 32 {
            assert_eq!(err, ImageError::TooShort { len });
        } else {
            assert!(matches!(err, ImageError::LengthMismatch { .. }), "{err}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(Ledger::decode_image(&longer), Err(ImageError::LengthMismatch { .. })));
}

#[test]
fn damaged_headers_are_refused() {
    let bytes = random_ledger(6, 40).ledger.encode_image();
    assert_eq!(&bytes[..12], b"TALLYIMG\x03\x00\x00\x00");
    for at in 0..32 {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            let err = refused(&damaged);
            let expected = match at {
                0..8 => matches!(err, ImageError::BadMagic),
                8..12 => matches!(err, ImageError::UnsupportedVersion { .. }),
                12..16 => matches!(err, ImageError::BadHeader),
                16..24 => matches!(err, ImageError::LengthMismatch { .. }),
                _ => matches!(err, ImageError::Checksum { .. }),
            };
            assert!(expected, "byte {at} bit {bit}: {err}");
        }
    }
}

#[test]
fn random_damage_is_refused_without_panicking() {
    let b = random_ledger(8, 120);
    let bytes = b.ledger.encode_image();
    let mut rng = Rng(42);
    for round in 0..400 {
        let mut damaged = bytes.clone();
        // One byte in most rounds, several in the rest.
        for _ in 0..1 + (round % 4) * rng.below(8) {
            let at = rng.below(damaged.len());
            damaged[at] ^= 1 + rng.below(255) as u8;
        }
        if damaged == bytes {
            continue;
        }
        assert!(Ledger::decode_image(&damaged).is_err(), "round {round}");
    }
    assert!(Ledger::decode_image(&[]).is_err());
    assert!(Ledger::decode_image(&vec![0xff; 4096]).is_err());
}

/// Encode and decode times for a ledger with `TALLY_IMAGE_ENTRIES` open entries (default 1M).
/// Run with `cargo test -p tally-engine --release --test ledger -- --ignored image_speed
/// --nocapture`.
#[test]
#[ignore]
fn image_speed() {
    let entries: usize =
        std::env::var("TALLY_IMAGE_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let contributions = 100_000;
    let mut l = Ledger::new();
    let mut setup = vec![dn("d", "o")];
    setup.extend((0..contributions).map(|c| contrib(&format!("c{c}"), "d", "u", c as u64)));
    setup.push(model("m", "o", None, &["d"]));
    l.apply(&setup, 1).unwrap();
    let mut rng = Rng(1);
    let (mut made, mut inference) = (0, 0);
    while made < entries {
        let batch: Vec<Event> = (0..65_536.min((entries - made) / 8).max(1))
            .map(|_| {
                inference += 1;
                let mut names: Vec<String> = Vec::new();
                while names.len() < 8 {
                    let c = format!("c{}", rng.below(contributions));
                    if !names.contains(&c) {
                        names.push(c);
                    }
                }
                let weights: Vec<(&str, u32)> =
                    names.iter().map(|c| (c.as_str(), 1 + rng.below(1_000_000) as u32)).collect();
                weighted(&format!("inf-{inference}"), "m", 10_000, &weights)
            })
            .collect();
        made += 8 * batch.len();
        l.apply(&batch, 2).unwrap();
    }
    l.apply(&[revoke("c1"), revoke("c2")], 3).unwrap();
    let memory = l.memory();
    // Best of three: the first touch of fresh memory is what a cold process pays once.
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let t = Instant::now();
    let bytes = l.encode_image();
    let cold_encode = t.elapsed();
    let t = Instant::now();
    let back = Ledger::decode_image(&bytes).unwrap();
    let cold_decode = t.elapsed();
    assert_eq!(back.digest(), l.digest());
    drop(back);
    let mut unaligned = vec![0u8; 1];
    unaligned.extend_from_slice(&bytes);
    let encode = best(&|| drop(l.encode_image()));
    let decode = best(&|| drop(Ledger::decode_image(&bytes).unwrap()));
    let decode_unaligned = best(&|| drop(Ledger::decode_image(&unaligned[1..]).unwrap()));
    println!(
        "{} open entries, {} inferences, {} contributions: image {:.1} MB; encode {:?}, \
         decode {:?} (unaligned input {:?}); first in the process: encode {:?}, decode {:?}",
        memory.open_entries,
        memory.open_inferences,
        contributions,
        bytes.len() as f64 / 1e6,
        encode,
        decode,
        decode_unaligned,
        cold_encode,
        cold_decode,
    );
}
