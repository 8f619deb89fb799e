//! `first_malformed` (the checks a writer makes before proposing a batch) never refuses a batch
//! the ledger would accept: whenever it names an event, `validate` refuses the batch at that
//! event or an earlier one. Random events mix valid and invalid ids, hashes, fees, weights,
//! reasons and basis points.

use proptest::prelude::*;
use tally_engine::{
    first_malformed, Attribution, Contribution, Datanet, Event, Inference, Model, Policy,
    Revocation, Settlement,
};

use super::worked_example_setup;

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("dn-a"), Just("c1"), Just("c2"), Just("m-base"), Just("m-adapter"), Just("x"), Just("new-1")]
            .prop_map(String::from),
        1 => prop_oneof![Just(""), Just("a b"), Just("$protocol"), Just("é")].prop_map(String::from),
        1 => (128usize..131).prop_map(|n| "y".repeat(n)),
    ]
}

fn hash() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..4).prop_map(|n| format!("{n:064x}")),
        1 => Just("ABC".to_string()),
        1 => Just("g".repeat(64)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (id(), id()).prop_map(|(datanet, owner)| Event::Datanet(Datanet {
            datanet: datanet.into(),
            owner: owner.into()
        })),
        (id(), id(), id(), hash()).prop_map(
            |(contribution, datanet, contributor, content_hash)| {
                Event::Contribution(Contribution {
                    contribution: contribution.into(),
                    datanet: datanet.into(),
                    contributor: contributor.into(),
                    content_hash: content_hash.into(),
                })
            }
        ),
        (id(), id(), proptest::option::of(id()), prop::collection::vec(id(), 0..4)).prop_map(
            |(model, owner, base_model, datanets)| {
                let base_model = base_model.map(Into::into);
                let datanets = datanets.into_iter().map(Into::into).collect();
                Event::Model(Model {
                    model: model.into(),
                    owner: owner.into(),
                    base_model,
                    datanets,
                })
            }
        ),
        (
            id(),
            id(),
            id(),
            prop_oneof![0..2_000i64, Just(-1i64), Just((1i64 << 40) + 1), Just(1i64 << 40)],
            prop::collection::vec((id(), prop_oneof![0..=1_000_000u32, Just(1_000_001u32)]), 0..4),
        )
            .prop_map(|(inference, model, consumer, fee, entries)| {
                let attributions = entries
                    .into_iter()
                    .map(|(contribution, weight)| Attribution {
                        contribution: contribution.into(),
                        weight,
                    })
                    .collect();
                Event::Inference(Inference {
                    inference: inference.into(),
                    model: model.into(),
                    consumer: consumer.into(),
                    fee,
                    attributions,
                })
            }),
        (id(), prop_oneof![Just(10usize), Just(1024), Just(1025)]).prop_map(|(contribution, n)| {
            Event::Revocation(Revocation {
                contribution: contribution.into(),
                reason: "r".repeat(n).into(),
            })
        }),
        (-1..6000i64, -1..6000i64, prop_oneof![0..4000i64, Just(i64::MAX)]).prop_map(
            |(protocol_bps, model_bps, base_bps)| {
                Event::Policy(Policy { protocol_bps, model_bps, base_bps })
            }
        ),
        (0..3u64).prop_map(|epoch| Event::Settlement(Settlement { epoch })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn a_malformed_event_is_always_refused_by_validation(
        events in prop::collection::vec(event(), 1..6)
    ) {
        let ledger = worked_example_setup();
        if let Some(i) = first_malformed(&events) {
            let refusal = ledger.validate(&events).expect_err("validate accepts what the shape check refuses");
            prop_assert!(refusal.index <= i, "refused at {} after the malformed event {i}", refusal.index);
        }
    }
}

#[test]
fn too_many_entries_and_long_ids_are_malformed() {
    let many = Event::Inference(Inference {
        inference: "i".into(),
        model: "m".into(),
        consumer: "c".into(),
        fee: 1,
        attributions: (0..1025)
            .map(|k| Attribution { contribution: format!("c{k}").into(), weight: 1 })
            .collect(),
    });
    assert_eq!(first_malformed(&[many]), Some(0));
    let long = Event::Datanet(Datanet { datanet: "d".repeat(20 << 20).into(), owner: "o".into() });
    let ok = Event::Datanet(Datanet { datanet: "d".into(), owner: "o".into() });
    assert_eq!(first_malformed(&[ok.clone(), long]), Some(1));
    assert_eq!(first_malformed(&[ok]), None);
}
