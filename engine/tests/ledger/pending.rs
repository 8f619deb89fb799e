//! A transaction block checked statement by statement (`validate_after` with a `Pending`)
//! refuses exactly what checking the whole block at once refuses: the same event, field and
//! rule, and accepts the rest. Random blocks create datanets, contributions, models and
//! adapters and refer to them in later statements, revoke, settle, repeat ids and hashes.

use proptest::prelude::*;
use tally_engine::{Event, Pending};

use super::{contrib, dn, model, policy, revoke, settle, weighted, worked_example_setup};

/// Names of a small pool, some already in the ledger (`dn-a`, `c1`…`c3`, `m-base`,
/// `m-adapter`), the rest created (or not) by the block.
const DATANETS: [&str; 3] = ["dn-a", "d1", "d2"];
const CONTRIBUTIONS: [&str; 6] = ["c1", "c2", "c3", "k1", "k2", "k3"];
const MODELS: [&str; 4] = ["m-base", "m-adapter", "n1", "n2"];

fn event() -> impl Strategy<Value = Event> {
    let name = |pool: &'static [&'static str]| (0..pool.len()).prop_map(move |k| pool[k]);
    prop_oneof![
        2 => name(&DATANETS).prop_map(|d| dn(d, "own")),
        3 => (name(&CONTRIBUTIONS), name(&DATANETS), 0..8u64)
            .prop_map(|(c, d, h)| contrib(c, d, "u", h)),
        2 => (name(&MODELS), proptest::option::of(name(&MODELS)), prop::collection::vec(name(&DATANETS), 0..3))
            .prop_map(|(m, base, dns)| model(m, "o", base, &dns)),
        6 => ((0..6u32), name(&MODELS), 0..3000i64, prop::collection::vec((name(&CONTRIBUTIONS), 0..3u32), 0..4))
            .prop_map(|(i, m, fee, entries)| {
                let entries: Vec<(&str, u32)> = entries.into_iter().map(|(c, w)| (c, w * 400_000)).collect();
                weighted(&format!("inf-{i}"), m, fee, &entries)
            }),
        1 => name(&CONTRIBUTIONS).prop_map(revoke),
        1 => (1..4u64).prop_map(settle),
        1 => (0..3000i64).prop_map(|p| policy(p, 1000, 1000)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn a_block_checked_statement_by_statement_refuses_what_the_whole_block_refuses(
        statements in prop::collection::vec(prop::collection::vec(event(), 1..4), 1..8)
    ) {
        let ledger = worked_example_setup();
        let all: Vec<Event> = statements.concat();
        let whole = ledger.validate(&all);
        let mut pending = Pending::default();
        let mut offset = 0;
        for statement in &statements {
            let each = ledger.validate_after(&mut pending, statement);
            match (&whole, each) {
                (Err(w), Err(e)) => {
                    prop_assert_eq!((offset + e.index, e.field, &e.rule), (w.index, w.field, &w.rule));
                    return Ok(());
                }
                (Err(w), Ok(())) => prop_assert!(w.index >= offset + statement.len(), "accepted {statement:?}, the whole block is refused at {}", w.index),
                (Ok(()), Err(e)) => prop_assert!(false, "refused {e}, the whole block is accepted"),
                (Ok(()), Ok(())) => {}
            }
            offset += statement.len();
        }
        prop_assert!(whole.is_ok());
    }
}
