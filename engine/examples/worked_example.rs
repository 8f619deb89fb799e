//! settlement.md §5, run through the engine: prints every account's balance and the epoch's
//! payouts root. `cargo run --release -p tally-engine --example worked_example`

use tally_engine::{
    merkle, Contribution, Datanet, Event, Ledger, Model, Revocation, ScoredInference, Settlement,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ledger = Ledger::new();
    let contribution = |id: &str, who: &str, n: u8| {
        Event::Contribution(Contribution {
            contribution: id.into(),
            datanet: "dn-a".into(),
            contributor: who.into(),
            content_hash: format!("{n:064x}").into(),
        })
    };
    ledger.apply(
        &[
            Event::Datanet(Datanet { datanet: "dn-a".into(), owner: "ann".into() }),
            contribution("c1", "x", 1),
            contribution("c2", "y", 2),
            contribution("c3", "z", 3),
            Event::Model(Model {
                model: "m-base".into(),
                owner: "ann".into(),
                base_model: None,
                datanets: vec!["dn-a".into()],
            }),
            Event::Model(Model {
                model: "m-adapter".into(),
                owner: "bob".into(),
                base_model: Some("m-base".into()),
                datanets: vec![],
            }),
        ],
        1,
    )?;
    let inference = ScoredInference {
        inference: "i1".into(),
        model: "m-adapter".into(),
        consumer: "carol".into(),
        fee: 1001,
        scores: vec![("c1".into(), 0.9), ("c2".into(), 0.3), ("c3".into(), 0.3)],
    };
    ledger.apply(&[inference.into_event(0)?], 2)?;
    let revocation = Revocation { contribution: "c3".into(), reason: "takedown".into() };
    ledger.apply(&[Event::Revocation(revocation)], 3)?;
    println!("{:<10} {:>7} {:>8} {:>8}", "account", "earned", "settled", "pending");
    for b in ledger.balances() {
        println!("{:<10} {:>7} {:>8} {:>8}", b.account, b.earned, b.settled, b.pending);
    }
    ledger.apply(&[Event::Settlement(Settlement { epoch: 1 })], 4)?;
    for s in ledger.settlements() {
        println!(
            "epoch {} closed: total {}, payouts_root {}",
            s.epoch,
            s.total,
            merkle::to_hex(&s.payouts_root)
        );
    }
    println!("state digest {}", merkle::to_hex(&ledger.digest()));
    Ok(())
}
