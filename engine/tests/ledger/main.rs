//! Behaviour of the ledger as a user of the engine sees it: the worked example, every refusal
//! rule, atomicity, the canonical formats, and property tests against an independent model.

mod fuzz;
mod image;
mod model;
mod pending;
mod proofs;
mod props;
mod shape;

use tally_engine::{
    json, merkle, replay, Attribution, Contribution, CpuSettler, Datanet, Event, EventKind,
    Inference, InferenceHistory, Ledger, LoggedEvent, Model, Pending, Policy, Refusal,
    RefusalClass, Revocation, Role, Rule, ScoredInference, Settlement,
};

pub fn hash(n: u64) -> String {
    format!("{:064x}", n)
}

pub fn dn(id: &str, owner: &str) -> Event {
    Event::Datanet(Datanet { datanet: id.into(), owner: owner.into() })
}

pub fn contrib(id: &str, datanet: &str, contributor: &str, n: u64) -> Event {
    Event::Contribution(Contribution {
        contribution: id.into(),
        datanet: datanet.into(),
        contributor: contributor.into(),
        content_hash: hash(n).into(),
    })
}

pub fn model(id: &str, owner: &str, base: Option<&str>, datanets: &[&str]) -> Event {
    Event::Model(Model {
        model: id.into(),
        owner: owner.into(),
        base_model: base.map(Into::into),
        datanets: datanets.iter().map(|&d| d.into()).collect(),
    })
}

pub fn inf(id: &str, model: &str, fee: i64, scores: &[(&str, f64)]) -> Event {
    ScoredInference {
        inference: id.into(),
        model: model.into(),
        consumer: "consumer-1".into(),
        fee,
        scores: scores.iter().map(|&(c, s)| (c.into(), s)).collect(),
    }
    .into_event(0)
    .expect("valid scores")
}

pub fn weighted(id: &str, model: &str, fee: i64, weights: &[(&str, u32)]) -> Event {
    Event::Inference(Inference {
        inference: id.into(),
        model: model.into(),
        consumer: "consumer-1".into(),
        fee,
        attributions: weights
            .iter()
            .map(|(c, w)| Attribution { contribution: (*c).into(), weight: *w })
            .collect(),
    })
}

pub fn revoke(c: &str) -> Event {
    Event::Revocation(Revocation { contribution: c.into(), reason: "spam".into() })
}

pub fn policy(p: i64, m: i64, b: i64) -> Event {
    Event::Policy(Policy { protocol_bps: p, model_bps: m, base_bps: b })
}

pub fn settle(epoch: u64) -> Event {
    Event::Settlement(Settlement { epoch })
}

fn balance(l: &Ledger, account: &str) -> (u64, u64, u64) {
    l.balance(account).map(|b| (b.earned, b.settled, b.pending)).unwrap_or((0, 0, 0))
}

fn reward(l: &Ledger, epoch: u64, account: &str, role: Role) -> u64 {
    l.rewards()
        .filter(|r| r.epoch == epoch && r.account == account && r.role == role)
        .map(|r| r.amount)
        .sum()
}

/// settlement.md §5's setup: m-adapter (bob) adapts m-base (ann); c1..c3 owned by x, y, z.
pub fn worked_example_setup() -> Ledger {
    let mut l = Ledger::new();
    l.apply(&worked_example_setup_events(), 1_000).unwrap();
    l
}

fn assert_worked_example(l: &Ledger) {
    assert_eq!(balance(l, "$protocol").0, 100);
    assert_eq!(balance(l, "bob").0, 200);
    assert_eq!(balance(l, "ann").0, 100);
    assert_eq!(balance(l, "x").0, 451);
    assert_eq!(balance(l, "y").0, 150);
    assert_eq!(balance(l, "z").0, 0);
    assert_eq!(reward(l, 1, "bob", Role::Model), 200);
    assert_eq!(reward(l, 1, "ann", Role::BaseModel), 100);
    assert_eq!(reward(l, 1, "$protocol", Role::Protocol), 100);
    assert_eq!(reward(l, 1, "x", Role::Contributor), 451);
    let entries: Vec<_> = l.open_entries().map(|e| (e.contribution, e.weight, e.reward)).collect();
    assert_eq!(entries, vec![("c1", 1_000_000, 451), ("c2", 333_333, 150), ("c3", 333_333, 0)]);
    let total: u64 = l.rewards().map(|r| r.amount).sum();
    assert_eq!(total, 1001);
}

#[test]
fn worked_example_verbatim() {
    let mut l = worked_example_setup();
    l.apply(&[revoke("c3")], 2_000).unwrap();
    l.apply(&[inf("i1", "m-adapter", 1001, &[("c1", 0.9), ("c2", 0.3), ("c3", 0.3)])], 3_000)
        .unwrap();
    assert_worked_example(&l);
}

#[test]
fn worked_example_with_revocation_after_the_inference_resettles() {
    let mut l = worked_example_setup();
    l.apply(&[inf("i1", "m-adapter", 1001, &[("c1", 0.9), ("c2", 0.3), ("c3", 0.3)])], 2_000)
        .unwrap();
    // Before the revocation: pool 601 over weights 1e6, 333333, 333333.
    assert_eq!(balance(&l, "z").0, 601 * 333_333 / 1_666_666);
    l.apply(&[revoke("c3")], 3_000).unwrap();
    assert_worked_example(&l);
    assert_eq!(l.contribution("c3").unwrap().revoked_lsn, Some(8));
    assert_eq!(l.contribution("c3").unwrap().earned, 0);
    assert_eq!(l.contribution("c1").unwrap().earned, 451);
    assert_eq!(l.datanets().next().unwrap().earned, 601);
}

#[test]
fn closing_an_epoch_freezes_rewards_and_commits_payouts() {
    let mut l = worked_example_setup();
    l.apply(&[inf("i1", "m-adapter", 1001, &[("c1", 0.9), ("c2", 0.3), ("c3", 0.3)])], 2_000)
        .unwrap();
    let applied = l.apply(&[settle(1)], 3_000).unwrap();
    // A revocation after the close does not touch epoch 1.
    l.apply(&[revoke("c3")], 4_000).unwrap();
    let c3_before = 601 * 333_333 / 1_666_666;
    assert_eq!(balance(&l, "z"), (c3_before, c3_before, 0));
    let payouts: Vec<_> = l.payouts().map(|p| (p.account.to_string(), p.amount)).collect();
    let mut expected: Vec<(String, u64)> = vec![
        ("$protocol".into(), 100),
        ("ann".into(), 100),
        ("bob".into(), 200),
        ("x".into(), 601 - 2 * c3_before),
        ("y".into(), c3_before),
        ("z".into(), c3_before),
    ];
    expected.sort();
    assert_eq!(payouts, expected);
    let leaves: Vec<(&str, u64)> = expected.iter().map(|(a, v)| (a.as_str(), *v)).collect();
    let s = l.settlements().next().unwrap();
    assert_eq!(s.payouts_root, merkle::payouts_root(&leaves));
    assert_eq!((s.epoch, s.lsn, s.total), (1, applied.first_lsn, 1001));
    let epochs: Vec<_> =
        l.epochs().map(|e| (e.epoch, e.open, e.opened_lsn, e.closed_lsn)).collect();
    assert_eq!(epochs, vec![(1, false, 0, Some(8)), (2, true, 8, None)]);
    assert_eq!(l.open_entries().count(), 0);
}

#[test]
fn empty_epoch_root_is_sha256_of_nothing() {
    let mut l = Ledger::new();
    l.apply(&[settle(1)], 1).unwrap();
    assert_eq!(
        merkle::to_hex(&l.settlements().next().unwrap().payouts_root),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn policy_applies_to_later_inferences_also_when_resettled() {
    let mut l = worked_example_setup();
    l.apply(&[inf("i1", "m-base", 10_000, &[("c1", 1.0), ("c2", 1.0)])], 2).unwrap();
    l.apply(&[policy(0, 0, 0)], 3).unwrap();
    l.apply(&[inf("i2", "m-base", 10_000, &[("c1", 1.0), ("c2", 1.0)])], 4).unwrap();
    // i1: protocol 1000, model 3000, pool 6000 (3000 each); i2: pool 10000 (5000 each).
    assert_eq!(balance(&l, "$protocol").0, 1000);
    assert_eq!(balance(&l, "ann").0, 3000);
    assert_eq!(balance(&l, "x").0, 8000);
    l.apply(&[revoke("c2")], 5).unwrap();
    // Re-settling keeps each inference's own split: x gets both pools whole.
    assert_eq!(balance(&l, "x").0, 16_000);
    assert_eq!(balance(&l, "y").0, 0);
    assert_eq!(balance(&l, "$protocol").0, 1000);
    let p: Vec<_> = l.policies().map(|p| (p.lsn, p.contributors_bps)).collect();
    assert_eq!(p, vec![(8, 10_000)]);
}

#[test]
fn empty_pool_and_zero_weights_go_to_protocol_and_come_back_on_nothing() {
    let mut l = worked_example_setup();
    l.apply(&[inf("i1", "m-base", 1000, &[("c1", 0.0)])], 2).unwrap();
    l.apply(&[inf("i2", "m-base", 1000, &[])], 3).unwrap();
    l.apply(&[inf("i3", "m-base", 1000, &[("c3", 1.0)])], 4).unwrap();
    assert_eq!(reward(&l, 1, "$protocol", Role::Protocol), 100 * 3 + 600 * 2);
    l.apply(&[revoke("c3")], 5).unwrap();
    assert_eq!(reward(&l, 1, "$protocol", Role::Protocol), 300 + 600 * 3);
    assert_eq!(balance(&l, "z").0, 0);
    // A zero fee pays nobody.
    l.apply(&[inf("i4", "m-base", 0, &[("c1", 1.0)])], 6).unwrap();
    assert_eq!(l.rewards().map(|r| r.amount).sum::<u64>(), 3000);
}

#[test]
fn a_batch_sees_its_own_earlier_events() {
    let mut l = Ledger::new();
    let applied = l
        .apply(
            &[
                dn("d", "o"),
                contrib("c", "d", "x", 1),
                model("m", "o", None, &["d"]),
                inf("i", "m", 100, &[("c", 1.0)]),
                revoke("c"),
                inf("j", "m", 100, &[("c", 1.0)]),
                settle(1),
                inf("k", "m", 100, &[("c", 1.0)]),
            ],
            5,
        )
        .unwrap();
    assert_eq!((applied.first_lsn, applied.last_lsn, applied.ts), (1, 8, 5));
    assert_eq!(balance(&l, "x").0, 0, "revoked in the open epoch: both pools to $protocol");
    let epochs: Vec<_> = l.epochs().map(|e| (e.epoch, e.inferences, e.fees)).collect();
    assert_eq!(epochs, vec![(1, 2, 200), (2, 1, 100)]);
}

#[test]
fn timestamps_never_decrease() {
    let mut l = worked_example_setup();
    assert_eq!(l.apply(&[policy(1, 1, 1)], 500).unwrap().ts, 1_000);
    assert_eq!(l.apply(&[policy(1, 1, 1)], 2_000).unwrap().ts, 2_000);
    assert_eq!(l.last_ts(), 2_000);
}

// ---- refusals: one test per rule, each checking index, field, rule and that nothing changed.

fn refused(l: &mut Ledger, batch: &[Event]) -> Refusal {
    let before = l.digest();
    let lsn = l.last_lsn();
    let r = l.apply(batch, 99_999).expect_err("batch must be refused");
    assert_eq!(l.digest(), before, "a refused batch changed the state");
    assert_eq!(l.last_lsn(), lsn);
    r
}

fn check(r: &Refusal, index: usize, kind: EventKind, field: &str, value: &str, rule: Rule) {
    assert_eq!(
        (r.index, r.kind, r.field, r.value.as_str(), &r.rule),
        (index, kind, field, value, &rule)
    );
    let msg = r.to_string();
    assert!(msg.contains(field) && msg.contains(&format!("event {index}")), "{msg}");
}

#[test]
fn refuses_bad_ids_everywhere() {
    let mut l = worked_example_setup();
    let long = "x".repeat(129);
    let cases: Vec<(Event, &str, &str)> = vec![
        (dn("bad id", "o"), "datanet", "bad id"),
        (dn("ok", "$protocol"), "owner", "$protocol"),
        (contrib("c$", "dn-a", "x", 9), "contribution", "c$"),
        (contrib("c9", "dn-a", "", 9), "contributor", ""),
        (model("m,1", "o", None, &[]), "model", "m,1"),
        (model("m9", "o", Some("é"), &[]), "base_model", "é"),
        (inf(&long, "m-base", 1, &[]), "inference", &long),
        (revoke("a b"), "contribution", "a b"),
    ];
    for (event, field, value) in cases {
        let kind = event.kind();
        let r = refused(&mut l, &[policy(1, 1, 1), event]);
        check(&r, 1, kind, field, value, Rule::BadId);
        assert_eq!(r.rule.class(), RefusalClass::InvalidValue);
    }
    let mut bad_consumer = inf("i9", "m-base", 1, &[]);
    if let Event::Inference(i) = &mut bad_consumer {
        i.consumer = "a\"b".into();
    }
    check(
        &refused(&mut l, &[bad_consumer]),
        0,
        EventKind::Inference,
        "consumer",
        "a\"b",
        Rule::BadId,
    );
    let r = refused(&mut l, &[inf("i9", "m-base", 1, &[("no pe", 1.0)])]);
    check(&r, 0, EventKind::Inference, "attributions", "no pe", Rule::BadId);
    assert_eq!(r.entry, Some(0));
}

#[test]
fn refuses_duplicates() {
    let mut l = worked_example_setup();
    l.apply(&[inf("i1", "m-base", 5, &[])], 2).unwrap();
    let r = refused(&mut l, &[dn("dn-a", "o")]);
    check(&r, 0, EventKind::Datanet, "datanet", "dn-a", Rule::DuplicateDatanet);
    assert_eq!(r.rule.class(), RefusalClass::Duplicate);
    let r = refused(&mut l, &[contrib("c1", "dn-a", "x", 77)]);
    check(&r, 0, EventKind::Contribution, "contribution", "c1", Rule::DuplicateContribution);
    let r = refused(&mut l, &[model("m-base", "o", None, &[])]);
    check(&r, 0, EventKind::Model, "model", "m-base", Rule::DuplicateModel);
    let r = refused(&mut l, &[inf("i1", "m-base", 5, &[])]);
    check(&r, 0, EventKind::Inference, "inference", "i1", Rule::DuplicateInference);
    let r = refused(&mut l, &[inf("i2", "m-base", 5, &[]), inf("i2", "m-base", 5, &[])]);
    check(&r, 1, EventKind::Inference, "inference", "i2", Rule::DuplicateInference);
    // Within one batch too, for datanets.
    let r = refused(&mut l, &[dn("n", "o"), dn("n", "o")]);
    check(&r, 1, EventKind::Datanet, "datanet", "n", Rule::DuplicateDatanet);
}

#[test]
fn refuses_content_contributed_before_even_if_revoked() {
    let mut l = worked_example_setup();
    l.apply(&[revoke("c2")], 2).unwrap();
    let r = refused(&mut l, &[contrib("c9", "dn-a", "thief", 2)]);
    check(
        &r,
        0,
        EventKind::Contribution,
        "content_hash",
        &hash(2),
        Rule::DuplicateContent { earlier: "c2".into() },
    );
    assert!(r.to_string().contains("\"c2\""));
    let r = refused(&mut l, &[contrib("c8", "dn-a", "a", 50), contrib("c9", "dn-a", "b", 50)]);
    check(
        &r,
        1,
        EventKind::Contribution,
        "content_hash",
        &hash(50),
        Rule::DuplicateContent { earlier: "c8".into() },
    );
}

#[test]
fn refuses_bad_content_hash() {
    let mut l = worked_example_setup();
    let mut e = contrib("c9", "dn-a", "x", 1);
    if let Event::Contribution(c) = &mut e {
        c.content_hash = "AB".repeat(32).into();
    }
    let r = refused(&mut l, &[e]);
    check(&r, 0, EventKind::Contribution, "content_hash", &"AB".repeat(32), Rule::BadContentHash);
}

#[test]
fn refuses_unknown_references() {
    let mut l = worked_example_setup();
    let r = refused(&mut l, &[contrib("c9", "nope", "x", 9)]);
    check(&r, 0, EventKind::Contribution, "datanet", "nope", Rule::UnknownDatanet);
    assert_eq!(r.rule.class(), RefusalClass::UnknownReference);
    let r = refused(&mut l, &[model("m9", "o", Some("nope"), &[])]);
    check(&r, 0, EventKind::Model, "base_model", "nope", Rule::UnknownBaseModel);
    let r = refused(&mut l, &[model("m9", "o", None, &["dn-a", "nope"])]);
    check(&r, 0, EventKind::Model, "datanets", "nope", Rule::UnknownDatanet);
    assert_eq!(r.entry, Some(1));
    let r = refused(&mut l, &[inf("i9", "nope", 1, &[])]);
    check(&r, 0, EventKind::Inference, "model", "nope", Rule::UnknownModel);
    let r = refused(&mut l, &[inf("i9", "m-base", 1, &[("c1", 1.0), ("nope", 1.0)])]);
    check(&r, 0, EventKind::Inference, "attributions", "nope", Rule::UnknownContribution);
    assert_eq!(r.entry, Some(1));
    let r = refused(&mut l, &[revoke("nope")]);
    check(&r, 0, EventKind::Revocation, "contribution", "nope", Rule::UnknownContribution);
}

#[test]
fn refuses_adapters_of_adapters_and_repeated_datanets() {
    let mut l = worked_example_setup();
    let r = refused(&mut l, &[model("m9", "o", Some("m-adapter"), &[])]);
    check(&r, 0, EventKind::Model, "base_model", "m-adapter", Rule::AdapterOfAdapter);
    let r = refused(&mut l, &[model("m9", "o", None, &["dn-a", "dn-a"])]);
    check(&r, 0, EventKind::Model, "datanets", "dn-a", Rule::RepeatedDatanet);
}

#[test]
fn refuses_fees_outside_range() {
    let mut l = worked_example_setup();
    let r = refused(&mut l, &[inf("i9", "m-base", -1, &[])]);
    check(&r, 0, EventKind::Inference, "fee", "-1", Rule::FeeOutOfRange);
    let r = refused(&mut l, &[inf("i9", "m-base", (1 << 40) + 1, &[])]);
    check(&r, 0, EventKind::Inference, "fee", "1099511627777", Rule::FeeOutOfRange);
    l.apply(&[inf("i9", "m-base", 1 << 40, &[("c1", 1.0)])], 2).unwrap();
}

#[test]
fn refuses_too_many_and_repeated_entries() {
    let mut l = worked_example_setup();
    let many: Vec<(&str, u32)> = (0..1025).map(|_| ("c1", 1)).collect();
    let r = refused(&mut l, &[weighted("i9", "m-base", 1, &many)]);
    check(&r, 0, EventKind::Inference, "attributions", "1025 entries", Rule::TooManyEntries);
    let r = refused(&mut l, &[inf("i9", "m-base", 1, &[("c1", 1.0), ("c2", 1.0), ("c1", 0.5)])]);
    check(&r, 0, EventKind::Inference, "attributions", "c1", Rule::RepeatedContribution);
    assert_eq!(r.entry, Some(2));
}

#[test]
fn refuses_bad_scores_and_weights() {
    let e = ScoredInference {
        inference: "i".into(),
        model: "m".into(),
        consumer: "u".into(),
        fee: 1,
        scores: vec![("c1".into(), 1.0), ("c2".into(), f64::NAN)],
    };
    let r = e.into_event(4).unwrap_err();
    assert_eq!((r.index, r.entry, &r.rule), (4, Some(1), &Rule::BadScore));
    for bad in [f64::INFINITY, -1.0, f64::NEG_INFINITY] {
        let mut b = tally_engine::Batch::new();
        let e = ScoredInference {
            inference: "i".into(),
            model: "m".into(),
            consumer: "u".into(),
            fee: 1,
            scores: vec![("c1".into(), bad)],
        };
        assert_eq!(b.push_scored(e).unwrap_err().rule, Rule::BadScore);
        assert!(b.is_empty());
    }
    let mut l = worked_example_setup();
    let r = refused(&mut l, &[weighted("i9", "m-base", 1, &[("c1", 1_000_001)])]);
    check(&r, 0, EventKind::Inference, "attributions", "c1:1000001", Rule::BadWeight);
}

#[test]
fn refuses_attribution_outside_lineage() {
    let mut l = worked_example_setup();
    l.apply(
        &[
            dn("dn-b", "o"),
            dn("dn-c", "o"),
            contrib("cb", "dn-b", "x", 10),
            contrib("cc", "dn-c", "x", 11),
            model("m-b", "o", None, &["dn-b"]),
            model("m-ad", "o", Some("m-b"), &["dn-c"]),
        ],
        2,
    )
    .unwrap();
    let r = refused(&mut l, &[inf("i9", "m-base", 1, &[("cb", 1.0)])]);
    check(&r, 0, EventKind::Inference, "attributions", "cb", Rule::OutsideLineage);
    assert_eq!(r.rule.class(), RefusalClass::Lineage);
    // The adapter's lineage is its own datanets plus its base model's.
    l.apply(&[inf("i9", "m-ad", 100, &[("cb", 1.0), ("cc", 1.0)])], 3).unwrap();
    let r = refused(&mut l, &[inf("i10", "m-ad", 100, &[("cb", 1.0), ("c1", 1.0)])]);
    check(&r, 0, EventKind::Inference, "attributions", "c1", Rule::OutsideLineage);
    // The base model does not inherit the adapter's datanets.
    let r = refused(&mut l, &[inf("i10", "m-b", 100, &[("cc", 1.0)])]);
    check(&r, 0, EventKind::Inference, "attributions", "cc", Rule::OutsideLineage);
}

#[test]
fn refuses_revoking_twice() {
    let mut l = worked_example_setup();
    l.apply(&[revoke("c1")], 2).unwrap();
    let r = refused(&mut l, &[revoke("c1")]);
    check(&r, 0, EventKind::Revocation, "contribution", "c1", Rule::AlreadyRevoked);
    assert_eq!(r.rule.class(), RefusalClass::Duplicate);
    let r = refused(&mut l, &[revoke("c2"), revoke("c2")]);
    check(&r, 1, EventKind::Revocation, "contribution", "c2", Rule::AlreadyRevoked);
    let long = Event::Revocation(Revocation {
        contribution: "c2".into(),
        reason: "r".repeat(1025).into(),
    });
    let r = refused(&mut l, &[long]);
    check(&r, 0, EventKind::Revocation, "reason", "1025 bytes", Rule::ReasonTooLong);
}

#[test]
fn refuses_bad_policies() {
    let mut l = Ledger::new();
    let r = refused(&mut l, &[policy(1, -1, 1)]);
    check(&r, 0, EventKind::Policy, "model_bps", "-1", Rule::NegativeBps);
    let r = refused(&mut l, &[policy(5000, 5000, 1)]);
    check(
        &r,
        0,
        EventKind::Policy,
        "protocol_bps+model_bps+base_bps",
        "10001",
        Rule::BpsSumTooLarge,
    );
    let r = refused(&mut l, &[policy(i64::MAX, i64::MAX, 1)]);
    assert_eq!(r.rule, Rule::BpsSumTooLarge);
    l.apply(&[policy(10_000, 0, 0)], 1).unwrap();
}

#[test]
fn refuses_settling_any_epoch_but_the_open_one() {
    let mut l = Ledger::new();
    let r = refused(&mut l, &[settle(2)]);
    check(&r, 0, EventKind::Settlement, "epoch", "2", Rule::NotOpenEpoch { open: 1 });
    let r = refused(&mut l, &[settle(1), settle(1)]);
    check(&r, 1, EventKind::Settlement, "epoch", "1", Rule::NotOpenEpoch { open: 2 });
    l.apply(&[settle(1), settle(2)], 1).unwrap();
    assert_eq!(l.open_epoch(), 3);
}

#[test]
fn refuses_a_fee_that_would_overflow_the_ledger_total() {
    // Every money total is a part of the ledger's fee total, which must stay within i64:
    // fill it to exactly i64::MAX with 2^23 inferences, then one more unit is refused.
    let mut l = worked_example_setup();
    let max = 1i64 << 40;
    for b in 0..8 {
        let batch: Vec<Event> = (0..1i64 << 20)
            .map(|k| {
                let last = b == 7 && k == (1 << 20) - 1;
                weighted(&format!("i{b}-{k}"), "m-base", if last { max - 1 } else { max }, &[])
            })
            .collect();
        l.apply(&batch, 2).unwrap();
    }
    assert_eq!(l.epochs().map(|e| e.fees).sum::<u64>(), i64::MAX as u64);
    let r = refused(&mut l, &[weighted("one-more", "m-base", 1, &[])]);
    check(&r, 0, EventKind::Inference, "fee", "1", Rule::TotalOverflow);
    assert_eq!(r.rule.class(), RefusalClass::Overflow);
    l.apply(&[weighted("free", "m-base", 0, &[])], 3).unwrap();
    assert_eq!(balance(&l, "$protocol").0 + balance(&l, "ann").0, i64::MAX as u64);
}

#[test]
fn refuses_oversized_batches() {
    let mut l = Ledger::new();
    let batch = vec![policy(1, 1, 1); tally_engine::MAX_BATCH_EVENTS + 1];
    let r = refused(&mut l, &batch);
    assert_eq!(r.rule, Rule::BatchTooLarge { max: tally_engine::MAX_BATCH_EVENTS });
}

#[test]
fn refusal_leaves_no_trace_of_earlier_events_in_the_batch() {
    let mut l = worked_example_setup();
    let r = refused(
        &mut l,
        &[
            dn("new-dn", "newcomer"),
            contrib("c-new", "new-dn", "newcomer", 500),
            inf("i-ok", "m-base", 100, &[("c1", 1.0)]),
            revoke("c2"),
            settle(1),
            inf("i-bad", "m-base", 100, &[("c-new", 1.0)]),
        ],
    );
    assert_eq!((r.index, &r.rule), (5, &Rule::OutsideLineage));
    assert!(l.balance("newcomer").is_none());
    assert!(l.contribution("c-new").is_none());
    assert_eq!(l.contribution("c2").unwrap().revoked_lsn, None);
    assert_eq!(l.open_epoch(), 1);
    // The same names are still free to use.
    l.apply(&[dn("new-dn", "newcomer"), inf("i-ok", "m-base", 100, &[("c1", 1.0)])], 5).unwrap();
}

/// Two distinct inference ids with the same 64-bit fingerprint (xxh3-64 0x0fa3b7dd4c49eb60,
/// found by a rho search; `fingerprint.rs` checks that they collide).
pub const COLLIDING: [&str; 2] = ["inf-e9fa0fdf976e989a", "inf-8f45f239c99c15f3"];

/// A history that knows the inference id at each lsn it was told about, and cannot read any
/// other (as a damaged log record would).
#[derive(Default)]
struct Ids(std::collections::HashMap<u64, String>);

impl Ids {
    /// The last event applied to `l` is inference `id`.
    fn applied(&mut self, l: &Ledger, id: &str) {
        self.0.insert(l.last_lsn(), id.into());
    }
}

impl InferenceHistory for Ids {
    fn is_inference(&self, lsn: u64, inference: &str) -> Result<bool, String> {
        let id = self.0.get(&lsn).ok_or_else(|| format!("no record of lsn {lsn}"))?;
        Ok(id == inference)
    }
}

#[test]
fn a_fingerprint_collision_is_accepted_only_when_the_history_tells_the_ids_apart() {
    let [a, b] = COLLIDING;
    let mut l = worked_example_setup();
    let mut ids = Ids::default();
    l.apply(&[inf(a, "m-base", 5, &[])], 2).unwrap();
    ids.applied(&l, a);
    // Without a history a hit is refused as a duplicate: the conservative answer.
    assert_eq!(l.validate(&[inf(b, "m-base", 5, &[])]).unwrap_err().rule, Rule::DuplicateInference);
    let r = refused(&mut l, &[inf(b, "m-base", 5, &[])]);
    assert_eq!((r.rule.class(), r.value.as_str()), (RefusalClass::Duplicate, b));
    // The history reads `a` at the candidate lsn: `b` is another id, accepted.
    l.validate_with_history(&[inf(b, "m-base", 5, &[])], &ids).unwrap();
    l.apply_with_history(&[inf(b, "m-base", 6, &[])], 3, &ids).unwrap();
    ids.applied(&l, b);
    // True duplicates of either are refused, whichever candidate lsn holds them.
    for id in [a, b] {
        let r = l.apply_with_history(&[inf(id, "m-base", 7, &[])], 4, &ids).unwrap_err();
        assert_eq!((r.rule, r.value.as_str()), (Rule::DuplicateInference, id));
    }
    // A history that cannot read a candidate refuses rather than guess.
    let r = l.apply_with_history(&[inf(b, "m-base", 7, &[])], 4, &Ids::default()).unwrap_err();
    let lsn = l.last_lsn() - 1;
    assert!(matches!(&r.rule, Rule::UnconfirmedInference { lsn: at, .. } if *at == lsn), "{r}");
    assert_eq!(r.rule.class(), RefusalClass::Duplicate);
    // A transaction block sees the same exact check.
    let mut pending = Pending::default();
    let r = l.validate_after_with_history(&mut pending, &[inf(a, "m-base", 1, &[])], &ids);
    assert_eq!(r.unwrap_err().rule, Rule::DuplicateInference);
    assert!(l.validate_after(&mut pending, &[inf(b, "m-base", 1, &[])]).is_err());
}

#[test]
fn an_accepted_collision_survives_replay_and_images() {
    let [a, b] = COLLIDING;
    let mut ids = Ids::default();
    let mut l = Ledger::new();
    let mut log = Vec::new();
    let batches = [
        worked_example_setup_events(),
        vec![inf(a, "m-base", 5, &[])],
        vec![inf(b, "m-base", 6, &[])],
    ];
    for (k, batch) in batches.into_iter().enumerate() {
        let applied = l.apply_with_history(&batch, k as i64, &ids).unwrap();
        if let Some(Event::Inference(i)) = batch.last() {
            ids.applied(&l, &i.inference);
        }
        for (j, event) in batch.into_iter().enumerate() {
            log.push(LoggedEvent { lsn: applied.first_lsn + j as u64, ts: applied.ts, event });
        }
    }
    // Replayed events were accepted once: the collision replays, event by event or in batch.
    let replayed = replay(log.iter(), &CpuSettler).unwrap();
    let mut stepped = Ledger::new();
    for e in &log {
        stepped.apply_logged(std::slice::from_ref(e)).unwrap();
    }
    let back = Ledger::decode_image(&l.encode_image()).unwrap();
    for state in [replayed, stepped, back] {
        assert_eq!(state.digest(), l.digest());
        for id in [a, b] {
            let r = state.validate_with_history(&[inf(id, "m-base", 1, &[])], &ids);
            assert_eq!(r.unwrap_err().rule, Rule::DuplicateInference);
        }
    }
}

// ---- formats

#[test]
fn canonical_json_bodies_are_pinned() {
    let cases = [
        (dn("dn-a", "ann"), r#"{"datanet":"dn-a","owner":"ann"}"#.to_string()),
        (
            contrib("c1", "dn-a", "x", 1),
            format!(r#"{{"contribution":"c1","datanet":"dn-a","contributor":"x","content_hash":"{}"}}"#, hash(1)),
        ),
        (
            model("m-base", "ann", None, &["dn-a", "dn-b"]),
            r#"{"model":"m-base","owner":"ann","base_model":null,"datanets":["dn-a","dn-b"]}"#.into(),
        ),
        (
            model("m-adapter", "bob", Some("m-base"), &[]),
            r#"{"model":"m-adapter","owner":"bob","base_model":"m-base","datanets":[]}"#.into(),
        ),
        (
            inf("i1", "m-adapter", 1001, &[("c1", 0.9), ("c2", 0.3), ("c:3", 0.3)]),
            r#"{"inference":"i1","model":"m-adapter","consumer":"consumer-1","fee":1001,"attributions":[["c1",1000000],["c2",333333],["c:3",333333]]}"#.into(),
        ),
        (
            Event::Revocation(Revocation { contribution: "c3".into(), reason: "stolen \"data\"\\\n\u{1}é".into() }),
            r#"{"contribution":"c3","reason":"stolen \"data\"\\\n\u0001é"}"#.into(),
        ),
        (policy(1000, 2000, 1000), r#"{"protocol_bps":1000,"model_bps":2000,"base_bps":1000}"#.into()),
        (settle(7), r#"{"epoch":7}"#.into()),
    ];
    for (event, expected) in cases {
        let body = json::body(&event);
        assert_eq!(body, expected);
        // It is plain JSON that any parser reads back.
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(parsed.is_object());
    }
    // Strings are escaped exactly as serde_json escapes them.
    for s in
        ["plain", "q\"uote", "back\\slash", "\u{0}\u{1f}\t\n\r\u{8}\u{c}", "é ü 日本", "\u{7f}"]
    {
        let event = Event::Revocation(Revocation { contribution: "c".into(), reason: s.into() });
        let expected =
            format!(r#"{{"contribution":"c","reason":{}}}"#, serde_json::to_string(s).unwrap());
        assert_eq!(json::body(&event), expected);
    }
}

#[test]
fn events_round_trip_through_rkyv() {
    let events = vec![
        dn("dn-a", "ann"),
        contrib("c1", "dn-a", "x", 1),
        model("m", "ann", Some("b"), &["dn-a"]),
        inf("i1", "m", 1001, &[("c1", 0.9), ("c2", 0.3)]),
        revoke("c1"),
        policy(1, 2, 3),
        settle(1),
    ];
    for e in events {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&e).unwrap();
        let archived =
            rkyv::access::<tally_engine::ArchivedEvent, rkyv::rancor::Error>(&bytes).unwrap();
        let back: Event = rkyv::deserialize::<Event, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, e);
    }
}

pub fn worked_example_setup_events() -> Vec<Event> {
    vec![
        dn("dn-a", "ann"),
        contrib("c1", "dn-a", "x", 1),
        contrib("c2", "dn-a", "y", 2),
        contrib("c3", "dn-a", "z", 3),
        model("m-base", "ann", None, &["dn-a"]),
        model("m-adapter", "bob", Some("m-base"), &[]),
    ]
}

#[test]
fn replay_equals_live_state() {
    let mut l = worked_example_setup();
    let mut log: Vec<LoggedEvent> = worked_example_setup_events()
        .into_iter()
        .enumerate()
        .map(|(k, event)| LoggedEvent { lsn: k as u64 + 1, ts: 1_000, event })
        .collect();
    let batches = vec![
        vec![inf("i1", "m-adapter", 1001, &[("c1", 0.9), ("c2", 0.3), ("c3", 0.3)])],
        vec![revoke("c3"), settle(1)],
        vec![inf("i2", "m-base", 77, &[("c2", 0.3)]), policy(0, 1, 2)],
        vec![inf("i3", "m-adapter", 1 << 40, &[("c1", 0.1), ("c2", 0.1)]), revoke("c1")],
    ];
    for batch in batches {
        let applied = l.apply(&batch, 5_000).unwrap();
        for (k, event) in batch.into_iter().enumerate() {
            log.push(LoggedEvent { lsn: applied.first_lsn + k as u64, ts: applied.ts, event });
        }
    }
    let rebuilt = replay(log.clone(), &CpuSettler).unwrap();
    assert_eq!(rebuilt.digest(), l.digest());
    // A gap is an error, never silently accepted.
    let mut gap = log.clone();
    gap.remove(3);
    assert!(matches!(replay(gap, &CpuSettler), Err(tally_engine::ReplayError::Gap { .. })));
    // So is an event the ledger would have refused.
    let mut bad = log;
    bad[6].event = inf("i1", "m-adapter", 5, &[]);
    bad.truncate(8);
    bad[7].event = inf("i1", "m-adapter", 5, &[]);
    assert!(matches!(
        replay(bad, &CpuSettler),
        Err(tally_engine::ReplayError::Refused { lsn: 8, .. })
    ));
}
