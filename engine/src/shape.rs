//! The checks of a batch that need no ledger state: batch size, id alphabet and length, content
//! hash syntax, fee range, entry counts, weights, reason length, basis points. A writer runs them
//! before a batch is proposed, so that a batch the ledger must refuse for its shape alone never
//! costs log space (a 20 MB id is refused here, not written and then refused at apply).
//!
//! These are a subset of `validate.rs`'s rules, never more: a batch that fails here is refused
//! by `Ledger::validate` too (property-tested), so callers ask `validate` for the exact refusal
//! of the first offending event (which may be an earlier event refused for a stateful rule).

use crate::event::Event;
use crate::id::{is_valid_id, parse_content_hash};
use crate::settle::{BPS_SCALE, MAX_ENTRIES, MAX_FEE};
use crate::validate::{MAX_BATCH_EVENTS, MAX_REASON_BYTES};
use crate::weight::WEIGHT_SCALE;

/// Position of the first event of `events` whose shape alone gets it refused (or of the first
/// event past `MAX_BATCH_EVENTS`); `None` when every event is well formed.
pub fn first_malformed(events: &[Event]) -> Option<usize> {
    if events.len() > MAX_BATCH_EVENTS {
        return Some(MAX_BATCH_EVENTS);
    }
    events.iter().position(|e| !well_formed(e))
}

fn well_formed(event: &Event) -> bool {
    match event {
        Event::Datanet(d) => is_valid_id(&d.datanet) && is_valid_id(&d.owner),
        Event::Contribution(c) => {
            is_valid_id(&c.contribution)
                && is_valid_id(&c.datanet)
                && is_valid_id(&c.contributor)
                && parse_content_hash(&c.content_hash).is_some()
        }
        Event::Model(m) => {
            is_valid_id(&m.model)
                && is_valid_id(&m.owner)
                && m.base_model.as_deref().is_none_or(is_valid_id)
                && m.datanets.iter().all(|d| is_valid_id(d))
        }
        Event::Inference(i) => {
            is_valid_id(&i.inference)
                && is_valid_id(&i.model)
                && is_valid_id(&i.consumer)
                && (0..=MAX_FEE).contains(&i.fee)
                && i.attributions.len() <= MAX_ENTRIES
                && i.attributions
                    .iter()
                    .all(|a| a.weight <= WEIGHT_SCALE && is_valid_id(&a.contribution))
        }
        Event::Revocation(r) => is_valid_id(&r.contribution) && r.reason.len() <= MAX_REASON_BYTES,
        Event::Policy(p) => {
            let parts = [p.protocol_bps, p.model_bps, p.base_bps];
            parts.iter().all(|v| *v >= 0)
                && parts
                    .iter()
                    .try_fold(0i64, |s, v| s.checked_add(*v))
                    .is_some_and(|sum| sum <= BPS_SCALE as i64)
        }
        Event::Settlement(_) => true,
    }
}
