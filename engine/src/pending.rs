//! What a transaction block's earlier statements add to the ledger, kept (owned) between
//! statements, so that each new statement is validated against the ledger plus the block in
//! time linear in the statement alone (re-validating the whole block at every statement is
//! quadratic in the block). Only what validation needs is kept: the names the block creates,
//! what they resolve to, and the counters a batch moves (open epoch, its entries, the fee
//! total). Accounts are not kept: creating one never refuses anything.
//!
//! Names the block creates are numbered by their position here; references to the ledger's
//! own rows keep the ledger's ids, which never change, so a `Pending` stays meaningful while
//! other writers append. It never changes the ledger, and is checked again whole at COMMIT.

use foldhash::fast::FixedState;
use hashbrown::{HashMap, HashSet};

use crate::event::{Event, Text};
use crate::state::Ledger;
use crate::validate::{Op, Plan};

type Map<K, V> = HashMap<K, V, FixedState>;

/// A row of the ledger (its id) or one created by the block (its position in `Pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ref {
    Ledger(u32),
    Block(u32),
}

impl Ref {
    /// The reference for `id`, an id as a validation numbers them: the ledger's rows first
    /// (`ledger_rows` of them), then the block's.
    pub(crate) fn of_id(id: u32, ledger_rows: usize) -> Ref {
        match (id as usize).checked_sub(ledger_rows) {
            None => Ref::Ledger(id),
            Some(block) => Ref::Block(block as u32),
        }
    }

    /// This reference as a validation against a ledger of `ledger_rows` rows numbers it.
    pub(crate) fn id(self, ledger_rows: usize) -> u32 {
        match self {
            Ref::Ledger(id) => id,
            Ref::Block(k) => (ledger_rows + k as usize) as u32,
        }
    }
}

/// A model the block created: its base model and its lineage (ledger datanets first, each
/// part sorted, so that the ids it resolves to are sorted).
#[derive(Debug, Clone)]
pub(crate) struct PendingModel {
    pub base: Option<Ref>,
    pub lineage: Vec<Ref>,
}

/// The earlier writes of a transaction block (see the module header).
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub(crate) datanets: Map<Text, u32>,
    pub(crate) contributions: Map<Text, u32>,
    /// The datanet of each contribution the block created, by position.
    pub(crate) contribution_datanets: Vec<Ref>,
    pub(crate) models: Map<Text, u32>,
    pub(crate) model_rows: Vec<PendingModel>,
    /// Content hashes the block contributed, and the contribution that did.
    pub(crate) hashes: Map<[u8; 32], Text>,
    pub(crate) inferences: HashSet<Text, FixedState>,
    pub(crate) revoked: HashSet<Ref, FixedState>,
    /// Epochs the block closes.
    pub(crate) settlements: u64,
    /// Attribution entries the block adds to the epoch open at its end.
    pub(crate) entries: u64,
    pub(crate) fees: u64,
    /// Events of the block so far.
    pub(crate) events: u64,
}

impl Pending {
    /// The open epoch, its entry count and the fee total after the block, on `state`.
    pub(crate) fn counters(&self, state: &Ledger) -> (u64, u64, u64) {
        let open_epoch = state.open_epoch() + self.settlements;
        let entries = if self.settlements > 0 {
            self.entries
        } else {
            state.open.entries() as u64 + self.entries
        };
        (open_epoch, entries, state.total_fees.saturating_add(self.fees))
    }

    /// Adds a statement that validated after this block (`plan` is its validation).
    pub(crate) fn absorb(&mut self, state: &Ledger, events: &[Event], plan: &Plan<'_>) {
        let (datanet_rows, contribution_rows, model_rows) =
            (state.datanets.len(), state.contribution_rows.len(), state.model_rows.len());
        for (event, op) in events.iter().zip(&plan.ops) {
            match (event, op) {
                (Event::Datanet(d), Op::Datanet { .. }) => {
                    let k = self.datanets.len() as u32;
                    self.datanets.insert(d.datanet.clone(), k);
                }
                (Event::Contribution(c), Op::Contribution { datanet, hash, .. }) => {
                    let k = self.contributions.len() as u32;
                    self.contributions.insert(c.contribution.clone(), k);
                    self.contribution_datanets.push(Ref::of_id(*datanet, datanet_rows));
                    self.hashes.insert(*hash, c.contribution.clone());
                }
                (Event::Model(m), Op::Model { base, lineage, .. }) => {
                    let k = self.models.len() as u32;
                    self.models.insert(m.model.clone(), k);
                    let base = base.map(|b| Ref::of_id(b, model_rows));
                    let lineage = lineage.iter().map(|d| Ref::of_id(*d, datanet_rows)).collect();
                    self.model_rows.push(PendingModel { base, lineage });
                }
                (Event::Inference(i), Op::Inference { .. }) => {
                    self.inferences.insert(i.inference.clone());
                    self.fees += i.fee as u64;
                    self.entries += i.attributions.len() as u64;
                }
                (Event::Revocation(_), Op::Revocation { contribution }) => {
                    self.revoked.insert(Ref::of_id(*contribution, contribution_rows));
                }
                (Event::Settlement(_), Op::Settlement) => {
                    self.settlements += 1;
                    self.entries = 0;
                }
                _ => {}
            }
        }
        self.events += events.len() as u64;
    }
}
