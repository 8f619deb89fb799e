//! The events of ledger.md, as they are stored in the log (rkyv) and shown in `events.body`
//! (canonical JSON, see `json.rs`). Events carry weights, never scores: scores are turned into
//! weights when a caller builds an event (`ScoredInference`). Nothing here checks the state.

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Refusal, Rule};
use crate::weight::weights_from_scores;

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
    pub datanet: String,
    pub owner: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub contribution: String,
    pub datanet: String,
    pub contributor: String,
    pub content_hash: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub model: String,
    pub owner: String,
    pub base_model: Option<String>,
    pub datanets: Vec<String>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub contribution: String,
    pub weight: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    pub inference: String,
    pub model: String,
    pub consumer: String,
    pub fee: i64,
    pub attributions: Vec<Attribution>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub contribution: String,
    pub reason: String,
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
    pub inference: String,
    pub model: String,
    pub consumer: String,
    pub fee: i64,
    pub scores: Vec<(String, f64)>,
}

impl ScoredInference {
    /// Converts scores to weights (settlement.md §1). `index` is the event's position in its
    /// batch, used only to name it in a refusal.
    pub fn into_event(self, index: usize) -> Result<Event, Refusal> {
        let scores: Vec<f64> = self.scores.iter().map(|(_, s)| *s).collect();
        let mut weights = Vec::with_capacity(scores.len());
        if let Err(bad) = weights_from_scores(&scores, &mut weights) {
            let value = format!("{}:{}", self.scores[bad].0, scores[bad]);
            return Err(Refusal::new(
                index,
                EventKind::Inference,
                "attributions",
                value,
                Rule::BadScore,
            )
            .at_entry(bad));
        }
        let attributions = self
            .scores
            .into_iter()
            .zip(weights)
            .map(|((contribution, _), weight)| Attribution { contribution, weight })
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
