//! The events of ledger.md, as they are stored in the log (rkyv) and shown in `events.body`
//! (canonical JSON, see `json.rs`). Events carry weights, never scores: scores are turned into
//! weights when a caller builds an event (`ScoredInference`). Nothing here checks the state.

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Refusal, Rule};
use crate::weight::{max_score, weight_of};

/// The text of an event's ids and other strings: kept inline up to 24 bytes, so the ids of
/// an inference cost no allocation of their own (ids are usually short; each entry has one,
/// and an event is built, logged, applied and hashed on different threads).
/// Archived exactly as rkyv archives a `String`: the log's bytes do not depend on it.
pub type Text = compact_str::CompactString;

/// The kinds of event, named as in ledger.md and in `events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Datanet,
    Contribution,
    Model,
    Inference,
    Revocation,
    Policy,
    Settlement,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Datanet => "datanet",
            EventKind::Contribution => "contribution",
            EventKind::Model => "model",
            EventKind::Inference => "inference",
            EventKind::Revocation => "revocation",
            EventKind::Policy => "policy",
            EventKind::Settlement => "settlement",
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Datanet {
    pub datanet: Text,
    pub owner: Text,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub contribution: Text,
    pub datanet: Text,
    pub contributor: Text,
    pub content_hash: Text,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub model: Text,
    pub owner: Text,
    pub base_model: Option<Text>,
    pub datanets: Vec<Text>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub contribution: Text,
    pub weight: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    pub inference: Text,
    pub model: Text,
    pub consumer: Text,
    pub fee: i64,
    pub attributions: Vec<Attribution>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub contribution: Text,
    pub reason: Text,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub protocol_bps: i64,
    pub model_bps: i64,
    pub base_bps: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub epoch: u64,
}

/// One ledger event. The log stores exactly this (rkyv-archived).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Datanet(Datanet),
    Contribution(Contribution),
    Model(Model),
    Inference(Inference),
    Revocation(Revocation),
    Policy(Policy),
    Settlement(Settlement),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Datanet(_) => EventKind::Datanet,
            Event::Contribution(_) => EventKind::Contribution,
            Event::Model(_) => EventKind::Model,
            Event::Inference(_) => EventKind::Inference,
            Event::Revocation(_) => EventKind::Revocation,
            Event::Policy(_) => EventKind::Policy,
            Event::Settlement(_) => EventKind::Settlement,
        }
    }
}

/// An inference as a caller sends it: with scores. `into_event` fixes the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredInference {
    pub inference: Text,
    pub model: Text,
    pub consumer: Text,
    pub fee: i64,
    pub scores: Vec<(Text, f64)>,
}

impl ScoredInference {
    /// Converts scores to weights (settlement.md §1). `index` is the event's position in its
    /// batch, used only to name it in a refusal.
    pub fn into_event(self, index: usize) -> Result<Event, Refusal> {
        let max = match max_score(self.scores.iter().map(|(_, s)| *s)) {
            Ok(max) => max,
            Err(bad) => {
                let (id, score) = &self.scores[bad];
                let value = format!("{id}:{score}");
                return Err(Refusal::new(
                    index,
                    EventKind::Inference,
                    "attributions",
                    value,
                    Rule::BadScore,
                )
                .at_entry(bad));
            }
        };
        let attributions = self
            .scores
            .into_iter()
            .map(|(contribution, s)| Attribution { contribution, weight: weight_of(s, max) })
            .collect();
        Ok(Event::Inference(Inference {
            inference: self.inference,
            model: self.model,
            consumer: self.consumer,
            fee: self.fee,
            attributions,
        }))
    }
}

/// Events written together: appended all or none (ledger.md "Events").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    events: Vec<Event>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Adds an inference given with scores; a bad score refuses it here, naming its position.
    pub fn push_scored(&mut self, inference: ScoredInference) -> Result<(), Refusal> {
        let event = inference.into_event(self.events.len())?;
        self.events.push(event);
        Ok(())
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

impl From<Vec<Event>> for Batch {
    fn from(events: Vec<Event>) -> Self {
        Batch { events }
    }
}

/// An accepted event with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub lsn: u64,
    pub ts: i64,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inference as the log held it when its strings were `String`s.
    #[derive(Archive, Serialize)]
    struct StringAttribution {
        contribution: String,
        weight: u32,
    }

    #[derive(Archive, Serialize)]
    struct StringInference {
        inference: String,
        model: String,
        consumer: String,
        fee: i64,
        attributions: Vec<StringAttribution>,
    }

    #[test]
    fn text_fields_archive_to_the_bytes_string_fields_did() {
        // Short ids (inline in `Text`) and a long one (on the heap), so both of its forms count.
        let long = "c-".repeat(40);
        let ids = ["c-0000001", long.as_str(), "x"];
        let text = Inference {
            inference: "inf-0000000001".into(),
            model: "adapter-07".into(),
            consumer: "consumer-with-a-rather-long-id-0001".into(),
            fee: 12_345,
            attributions: ids
                .iter()
                .map(|&c| Attribution { contribution: c.into(), weight: 500_000 })
                .collect(),
        };
        let string = StringInference {
            inference: text.inference.to_string(),
            model: text.model.to_string(),
            consumer: text.consumer.to_string(),
            fee: text.fee,
            attributions: ids
                .iter()
                .map(|&c| StringAttribution { contribution: c.to_string(), weight: 500_000 })
                .collect(),
        };
        let a = rkyv::to_bytes::<rkyv::rancor::Error>(&text).unwrap();
        let b = rkyv::to_bytes::<rkyv::rancor::Error>(&string).unwrap();
        assert_eq!(a.as_slice(), b.as_slice());
        let back: Inference = rkyv::from_bytes::<Inference, rkyv::rancor::Error>(&a).unwrap();
        assert_eq!(back, text);
    }
}
