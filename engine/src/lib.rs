//! Tally's engine: the ledger's events, their validation, the exact settlement math and the
//! state machine that turns a log into balances. Pure: no I/O, no network, no storage, no
//! CUDA. Every other crate leans on this one; see docs/architecture.md for the data layout.

mod audit;
mod digest;
mod entry_rewards;
mod error;
mod event;
mod fingerprint;
pub mod id;
mod image;
mod intern;
pub mod json;
pub mod log_tree;
pub mod merkle;
mod pending;
mod prefetch;
pub mod proof_check;
mod read;
mod replay;
pub mod settle;
mod shape;
mod simulate;
mod state;
mod validate;
pub mod weight;

pub use entry_rewards::EntryReward;
pub use error::{Refusal, RefusalClass, ReplayError, Rule};
pub use event::{
    ArchivedEvent, Attribution, Batch, Contribution, Datanet, Event, EventKind, Inference,
    LoggedEvent, Model, Policy, Revocation, ScoredInference, Settlement, Text,
};
pub use image::ImageError;
pub use pending::Pending;
pub use read::{
    BalanceView, ContributionView, DatanetView, EpochView, ModelView, OpenEntryView, PayoutProof,
    PayoutView, PolicyView, RevocationView, RewardView, SettlementView,
};
pub use replay::{replay, replay_onto};
pub use settle::{BatchSettler, CpuSettler, SettleError, SettleInput, SettleOutput};
pub use shape::first_malformed;
pub use simulate::{SimulateError, WhatIf};
pub use state::{
    Applied, InferenceHistory, Ledger, MemoryReport, Role, DEFAULT_BATCH_RESETTLE_INFERENCES,
    MAX_OPEN_ENTRIES,
};
pub use validate::{MAX_BATCH_EVENTS, MAX_REASON_BYTES};
