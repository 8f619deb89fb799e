//! Property tests over random event sequences with revocations, policy changes, adapters,
//! epoch closes and refused batches: (a) per-inference and per-epoch conservation, checked
//! against an independent model, (b) replay == incremental (equal digests), (c) a refused
//! batch leaves the digest unchanged.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_engine::{replay, CpuSettler, Event, Ledger, LoggedEvent, Role};

use super::model::Oracle;
use super::{contrib, dn, inf, model, policy, revoke, settle};

const CONTRIBUTIONS: usize = 12;
const SCORES: [f64; 7] = [0.0, 0.3, 0.9, 1.0, 0.5, 1e-7, 0.3];

/// Datanets d0..d2; c{i} lives in d{i % 3} and belongs to one of four contributors (so that
/// accounts earn from several contributions); b0 (base of d0, d1), b1 (base of d2), a0 (adapter
/// of b0 adding d2), a1 (adapter of b1 adding nothing). Owners overlap with contributors.
fn universe() -> Vec<Event> {
    let mut events = vec![dn("d0", "o1"), dn("d1", "o2"), dn("d2", "o1")];
    for i in 0..CONTRIBUTIONS {
        events.push(contrib(
            &format!("c{i}"),
            &format!("d{}", i % 3),
            &format!("u{}", i % 4),
            i as u64,
        ));
    }
    events.extend([
        model("b0", "o1", None, &["d0", "d1"]),
        model("b1", "u0", None, &["d2"]),
        model("a0", "o2", Some("b0"), &["d2"]),
        model("a1", "u1", Some("b1"), &[]),
    ]);
    events
}

const MODELS: [(&str, &[usize]); 4] =
    [("b0", &[0, 1]), ("b1", &[2]), ("a0", &[0, 1, 2]), ("a1", &[2])];

#[derive(Debug, Clone)]
enum Step {
    Inference {
        model: usize,
        fee: i64,
        entries: Vec<(usize, usize)>,
        stray: bool,
    },
    Revoke(usize),
    Policy(i64, i64, i64),
    Settle,
    /// Something the ledger must refuse, which refuses its whole batch.
    Bad(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..4usize, prop_oneof![0..2_000i64, Just(1i64 << 40), 0..(1i64 << 40)],
              prop::collection::vec((0..CONTRIBUTIONS, 0..SCORES.len()), 0..8), prop::bool::weighted(0.05))
            .prop_map(|(model, fee, entries, stray)| Step::Inference { model, fee, entries, stray }),
        1 => (0..CONTRIBUTIONS).prop_map(Step::Revoke),
        1 => (0..4000i64, 0..4000i64, 0..2001i64).prop_map(|(p, m, b)| Step::Policy(p, m, b)),
        1 => Just(Step::Settle),
        1 => (0..4u8).prop_map(Step::Bad),
    ]
}

/// Turns steps into events. Valid steps are made valid against what the engine holds (lineage,
/// no repeats); revoking twice and `stray` entries are left for the engine to refuse.
struct Script {
    next_inference: u64,
    open_epoch: u64,
}

impl Script {
    fn event(&mut self, s: &Step) -> Event {
        match s {
            Step::Inference { model: m, fee, entries, stray } => {
                let (name, lineage) = MODELS[*m];
                let mut seen = Vec::new();
                let mut scores = Vec::new();
                for &(c, score) in entries {
                    let inside = lineage.contains(&(c % 3));
                    if seen.contains(&c) || (!inside && !stray) {
                        continue;
                    }
                    seen.push(c);
                    scores.push((format!("c{c}"), SCORES[score]));
                }
                self.next_inference += 1;
                let scores: Vec<(&str, f64)> =
                    scores.iter().map(|(c, s)| (c.as_str(), *s)).collect();
                inf(&format!("i{}", self.next_inference), name, *fee, &scores)
            }
            Step::Revoke(c) => revoke(&format!("c{c}")),
            Step::Policy(p, m, b) => policy(*p, *m, *b),
            Step::Settle => {
                self.open_epoch += 1;
                settle(self.open_epoch - 1)
            }
            Step::Bad(k) => match k {
                0 => inf("i1", "b0", 1, &[]),
                1 => inf("fresh", "nope", 1, &[]),
                2 => settle(self.open_epoch + 5),
                _ => contrib("dup-content", "d0", "u9", 3),
            },
        }
    }
}

fn check_against_oracle(l: &Ledger, oracle: &Oracle) {
    let expected = oracle.rewards();
    let actual: BTreeMap<(u64, String, &'static str), u128> = l
        .rewards()
        .map(|r| ((r.epoch, r.account.to_string(), r.role.as_str()), r.amount as u128))
        .collect();
    assert_eq!(actual, expected, "rewards differ from the model");
    // Per-epoch conservation: rewards add up to the epoch's fees.
    for e in l.epochs() {
        let paid: u128 = actual.iter().filter(|(k, _)| k.0 == e.epoch).map(|(_, v)| *v).sum();
        assert_eq!(paid, e.fees as u128, "epoch {} does not conserve", e.epoch);
    }
    // Payouts of closed epochs and balances follow from the rewards.
    for epoch in oracle.closed_epochs() {
        let mut per_account: BTreeMap<String, u128> = BTreeMap::new();
        for ((e, a, _), v) in &expected {
            if *e == epoch {
                *per_account.entry(a.clone()).or_default() += v;
            }
        }
        let payouts: BTreeMap<String, u128> = l
            .payouts()
            .filter(|p| p.epoch == epoch)
            .map(|p| (p.account.to_string(), p.amount as u128))
            .collect();
        assert_eq!(payouts, per_account);
    }
    let open = l.open_epoch();
    for b in l.balances() {
        let of = |closed: bool| -> u128 {
            expected
                .iter()
                .filter(|((e, a, _), _)| a == b.account && ((*e != open) == closed))
                .map(|(_, v)| v)
                .sum()
        };
        assert_eq!(
            (b.settled as u128, b.pending as u128),
            (of(true), of(false)),
            "balance of {}",
            b.account
        );
    }
    let (by_contribution, by_datanet) = oracle.earned();
    for c in l.contributions() {
        assert_eq!(c.earned as u128, by_contribution.get(c.contribution).copied().unwrap_or(0));
    }
    for d in l.datanets() {
        assert_eq!(d.earned as u128, by_datanet.get(d.datanet).copied().unwrap_or(0));
    }
    // Per-inference conservation in the open epoch, as the engine holds it: contributor
    // rewards of an inference never exceed what its entries could get, and the model checked
    // every inference's full split above.
    let mut by_inference: BTreeMap<u64, u64> = BTreeMap::new();
    for e in l.open_entries() {
        *by_inference.entry(e.inference_lsn).or_default() += e.reward;
    }
    let contributor_open: u64 = l
        .rewards()
        .filter(|r| r.epoch == open && r.role == Role::Contributor)
        .map(|r| r.amount)
        .sum();
    assert_eq!(by_inference.values().sum::<u64>(), contributor_open);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn random_ledgers_conserve_replay_and_refuse_atomically(
        batches in prop::collection::vec(prop::collection::vec(step(), 1..6), 1..24)
    ) {
        let mut l = Ledger::new();
        let mut oracle = Oracle::default();
        let mut log: Vec<LoggedEvent> = Vec::new();
        let mut script = Script { next_inference: 0, open_epoch: 1 };
        let mut ts = 1_000i64;
        let setup = l.apply(&universe(), ts).unwrap();
        for (k, event) in universe().into_iter().enumerate() {
            oracle.accept(&event);
            log.push(LoggedEvent { lsn: setup.first_lsn + k as u64, ts, event });
        }
        for steps in &batches {
            let batch: Vec<Event> = steps.iter().map(|s| script.event(s)).collect();
            ts += 7;
            let before = l.digest();
            match l.apply(&batch, ts) {
                Ok(applied) => {
                    for (k, event) in batch.into_iter().enumerate() {
                        oracle.accept(&event);
                        log.push(LoggedEvent { lsn: applied.first_lsn + k as u64, ts: applied.ts, event });
                    }
                }
                Err(_) => {
                    prop_assert_eq!(l.digest(), before, "refused batch changed the state");
                    // Settlement numbering in the script must follow what was accepted.
                    script.open_epoch = l.open_epoch();
                }
            }
            prop_assert_eq!(l.open_epoch(), oracle.open_epoch());
        }
        check_against_oracle(&l, &oracle);
        l.audit().unwrap();
        check_entry_rewards(&l, &log);
        let rebuilt = replay(log.clone(), &CpuSettler).unwrap();
        prop_assert_eq!(rebuilt.digest(), l.digest(), "replay differs from the live state");
        // Replaying with event-by-event incremental settlement gives the same state too.
        let mut step_by_step = Ledger::new();
        for e in &log {
            step_by_step.apply_logged(std::slice::from_ref(e)).unwrap();
        }
        prop_assert_eq!(step_by_step.digest(), l.digest());
    }
}

/// Recomputed per-entry rewards agree with the open epoch's stored ones, and with the
/// contributor rewards of every epoch.
fn check_entry_rewards(l: &Ledger, log: &[LoggedEvent]) {
    let mut per_epoch: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let mut open = Vec::new();
    for e in log {
        if let tally_engine::Event::Inference(inf) = &e.event {
            let epoch = l.epoch_of(e.lsn);
            let rewards = l.entry_rewards(e.lsn, inf).expect("known inference");
            for r in &rewards {
                *per_epoch.entry((epoch, r.contributor.to_string())).or_default() += r.reward;
            }
            if epoch == l.open_epoch() {
                open.extend(rewards.into_iter().map(|r| r.reward));
            }
        }
    }
    let stored: Vec<u64> = l.open_entries().map(|e| e.reward).collect();
    assert_eq!(open, stored, "recomputed open-epoch rewards differ from the stored ones");
    let rewarded: BTreeMap<(u64, String), u64> = l
        .rewards()
        .filter(|r| r.role == Role::Contributor)
        .map(|r| ((r.epoch, r.account.to_string()), r.amount))
        .collect();
    per_epoch.retain(|_, v| *v > 0);
    assert_eq!(per_epoch, rewarded, "recomputed contributor rewards differ from the rewards table");
}

/// Applies `batches` of steps to a fresh ledger (after the universe), returning it and the log
/// of what it accepted. With `batch_settler`, every revocation re-settles through the batch
/// path (from one touched inference on).
fn build(batches: &[Vec<Step>], batch_settler: bool) -> (Ledger, Vec<LoggedEvent>) {
    let mut l = Ledger::new();
    if batch_settler {
        l.attach_batch_settler(std::sync::Arc::new(CpuSettler), 1);
    }
    let mut log: Vec<LoggedEvent> = Vec::new();
    let mut script = Script { next_inference: 0, open_epoch: 1 };
    let mut append = |l: &mut Ledger, batch: Vec<Event>, ts: i64| {
        if let Ok(applied) = l.apply(&batch, ts) {
            for (k, event) in batch.into_iter().enumerate() {
                log.push(LoggedEvent { lsn: applied.first_lsn + k as u64, ts: applied.ts, event });
            }
        }
    };
    append(&mut l, universe(), 1_000);
    for (k, steps) in batches.iter().enumerate() {
        let batch: Vec<Event> = steps.iter().map(|s| script.event(s)).collect();
        append(&mut l, batch, 1_007 + 7 * k as i64);
        script.open_epoch = l.open_epoch();
    }
    (l, log)
}

/// Epoch `epoch`'s rewards when every inference of it runs under `bps`, computed by applying a
/// rewritten log: the same events, but the policy events inside the epoch dropped and `bps`
/// set just before it. Returns (account, role) → amount.
fn rewards_under(
    log: &[LoggedEvent],
    (opened, closed): (u64, Option<u64>),
    epoch: u64,
    bps: (i64, i64, i64),
) -> BTreeMap<(String, &'static str), u64> {
    let mut l = Ledger::new();
    for e in log.iter().filter(|e| e.lsn <= opened) {
        l.apply(std::slice::from_ref(&e.event), e.ts).unwrap();
    }
    l.apply(&[policy(bps.0, bps.1, bps.2)], 0).unwrap();
    let inside = |e: &&LoggedEvent| e.lsn > opened && closed.is_none_or(|c| e.lsn <= c);
    for e in log.iter().filter(inside) {
        if !matches!(e.event, Event::Policy(_)) {
            l.apply(std::slice::from_ref(&e.event), e.ts).unwrap();
        }
    }
    l.rewards()
        .filter(|r| r.epoch == epoch)
        .map(|r| ((r.account.to_string(), r.role.as_str()), r.amount))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// The batch re-settlement path, replay from a state in the middle of the log, and what-if
    /// settlement agree with the incremental ledger.
    #[test]
    fn batch_resettlement_midpoint_replay_and_what_ifs_agree(
        batches in prop::collection::vec(prop::collection::vec(step(), 1..6), 1..24),
        cut in 0.0..1.0f64,
        (p, m) in (0..5000i64, 0..5000i64),
        b in 0..=10_000i64,
    ) {
        let (l, log) = build(&batches, false);
        let (batched, _) = build(&batches, true);
        prop_assert_eq!(batched.digest(), l.digest(), "batch re-settlement differs");

        // The state at a cut, built event by event (incremental, revocations re-settled), then
        // continued by replay.
        let k = (log.len() as f64 * cut) as usize;
        let mut at_cut = Ledger::new();
        at_cut.apply_logged(&log[..k]).unwrap();
        let continued = tally_engine::replay_onto(at_cut, &log[k..], &CpuSettler).unwrap();
        prop_assert_eq!(continued.digest(), l.digest(), "replay from lsn {} differs", k);

        let b = b.min(10_000 - p - m);
        for e in l.epochs() {
            let bps = tally_engine::settle::Bps::new(p, m, b).unwrap();
            let events = log.iter().filter(|x| x.lsn > e.opened_lsn && e.closed_lsn.is_none_or(|c| x.lsn < c));
            let rows = l.simulate(e.epoch, bps, events, &CpuSettler).unwrap();
            let simulated: BTreeMap<(String, &'static str), u64> = rows
                .iter()
                .filter(|r| r.amount > 0)
                .map(|r| ((r.account.to_string(), r.role.as_str()), r.amount))
                .collect();
            let expected = rewards_under(&log, (e.opened_lsn, e.closed_lsn), e.epoch, (p, m, b));
            prop_assert_eq!(&simulated, &expected, "epoch {} under {:?}", e.epoch, (p, m, b));
            let actual: BTreeMap<(String, &'static str), u64> = l
                .rewards()
                .filter(|r| r.epoch == e.epoch)
                .map(|r| ((r.account.to_string(), r.role.as_str()), r.amount))
                .collect();
            let shown: BTreeMap<(String, &'static str), u64> = rows
                .iter()
                .filter(|r| r.actual > 0)
                .map(|r| ((r.account.to_string(), r.role.as_str()), r.actual))
                .collect();
            prop_assert_eq!(shown, actual, "epoch {}'s actual rewards", e.epoch);
        }
    }
}
