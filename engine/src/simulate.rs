//! What-if settlement: one epoch settled again under another fee split, beside what was really
//! settled. Reads the state and never changes it; the pools are divided by a batch backend
//! (CPU or GPU), so the answer is exact and the same on every backend.
//!
//! The open epoch's inferences are in the state's flat arrays (with each one's fee and model).
//! A closed epoch keeps only its aggregates, so its inferences come from the log: the caller
//! reads them (the engine does no I/O) and they are checked to be exactly that epoch's.
//! Revocations count as settlement.md says: for the open epoch those in force now, for a closed
//! one those in force when it closed.

use std::borrow::Borrow;

use crate::event::{Event, LoggedEvent};
use crate::settle::{split_fee, BatchSettler, Bps, SettleError, SettleInput, SettleOutput};
use crate::state::{Ledger, Role, PROTOCOL};

/// One (account, role) of the simulated epoch: what it would earn under the other split, and
/// what it earned (or, for the open epoch, earns so far) under the splits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatIf<'a> {
    pub account: &'a str,
    pub role: Role,
    pub amount: u64,
    pub actual: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulateError {
    #[error("epoch {0} does not exist (epochs are numbered from 1 to the open one)")]
    UnknownEpoch(u64),
    #[error("the log does not hold epoch {epoch} as the ledger does: {detail}")]
    LogMismatch { epoch: u64, detail: String },
    #[error("batch settlement backend failed: {0}")]
    Settler(#[from] SettleError),
}

/// An epoch's inferences as flat arrays: what settling it again needs.
#[derive(Default)]
struct Arrays {
    fee: Vec<u64>,
    model: Vec<u32>,
    entry_start: Vec<u32>,
    contribution: Vec<u32>,
    weight: Vec<u32>,
}

/// Borrowed form of `Arrays`, so the open epoch is settled from the state without a copy.
struct View<'a> {
    fee: &'a [u64],
    model: &'a [u32],
    entry_start: &'a [u32],
    contribution: &'a [u32],
    weight: &'a [u32],
}

impl Arrays {
    fn view(&self) -> View<'_> {
        View {
            fee: &self.fee,
            model: &self.model,
            entry_start: &self.entry_start,
            contribution: &self.contribution,
            weight: &self.weight,
        }
    }
}

impl Ledger {
    /// The lsns a closed epoch's events lie strictly between, `(opened_lsn, closed_lsn)`:
    /// the stretch of the log `simulate` needs for it. `None` for the open epoch (its
    /// inferences are in the state) and for an epoch that does not exist.
    pub fn closed_epoch_lsns(&self, epoch: u64) -> Option<(u64, u64)> {
        let row = self.epochs.get(usize::try_from(epoch.checked_sub(1)?).ok()?)?;
        row.closed.as_ref().map(|c| (row.opened_lsn, c.lsn))
    }

    /// Epoch `epoch` settled under `bps` for every one of its inferences, beside what was
    /// settled: one row per (account, role) with either amount above 0, by account id then
    /// role. For a closed epoch, `log` must hold every event between its `closed_epoch_lsns`
    /// in lsn order (other kinds are skipped); for the open epoch it is not read.
    pub fn simulate<I>(
        &self,
        epoch: u64,
        bps: Bps,
        log: I,
        settler: &dyn BatchSettler,
    ) -> Result<Vec<WhatIf<'_>>, SimulateError>
    where
        I: IntoIterator,
        I::Item: Borrow<LoggedEvent>,
    {
        let (amount, actual) = if epoch == self.open_epoch() {
            let o = &self.open;
            let view = View {
                fee: &o.inf_fee,
                model: &o.inf_model,
                entry_start: &o.inf_start,
                contribution: &o.e_contribution,
                weight: &o.e_weight,
            };
            (self.settle_under(&view, &self.revoked, bps, settler)?, o.rewards.clone())
        } else {
            let (opened, closed) =
                self.closed_epoch_lsns(epoch).ok_or(SimulateError::UnknownEpoch(epoch))?;
            let arrays = self.epoch_from_log(epoch, opened, closed, log)?;
            let revoked: Vec<u8> = (self.contribution_meta.iter())
                .map(|m| u8::from(m.revoked_lsn != 0 && m.revoked_lsn < closed))
                .collect();
            let amount = self.settle_under(&arrays.view(), &revoked, bps, settler)?;
            (amount, self.closed_credits(epoch))
        };
        let fees = self.epochs[(epoch - 1) as usize].fees;
        let simulated: u64 = amount.iter().flatten().sum();
        if simulated != fees {
            let detail = format!("the simulated credits add up to {simulated}, its fees to {fees}");
            return Err(SimulateError::LogMismatch { epoch, detail });
        }
        Ok(self.what_if_rows(&amount, &actual))
    }

    /// Per account, the credits by role that `bps` gives the inferences of `e`, with pools
    /// divided by `settler` under `revoked`.
    fn settle_under(
        &self,
        e: &View<'_>,
        revoked: &[u8],
        bps: Bps,
        settler: &dyn BatchSettler,
    ) -> Result<Vec<[u64; 4]>, SettleError> {
        let mut credits = vec![[0u64; 4]; self.accounts.len()];
        let mut pool = Vec::with_capacity(e.fee.len());
        for (&fee, &model) in e.fee.iter().zip(e.model) {
            let row = &self.model_rows[model as usize];
            let base_owner = row.base.map(|b| self.model_rows[b as usize].owner);
            let split = split_fee(fee, bps, base_owner.is_some());
            credits[PROTOCOL as usize][Role::Protocol as usize] += split.protocol;
            credits[row.owner as usize][Role::Model as usize] += split.model;
            if let Some(base_owner) = base_owner {
                credits[base_owner as usize][Role::BaseModel as usize] += split.base;
            }
            pool.push(split.pool);
        }
        let contributor: Vec<u32> = self.contribution_rows.iter().map(|r| r.contributor).collect();
        let mut reward = vec![0u64; e.weight.len()];
        let mut unassigned = vec![0u64; pool.len()];
        let mut by_contribution = vec![0u64; contributor.len()];
        let mut by_account = vec![0u64; credits.len()];
        let input = SettleInput {
            entry_start: e.entry_start,
            pool: &pool,
            contribution: e.contribution,
            weight: e.weight,
            revoked,
            contributor: &contributor,
            accounts: credits.len(),
        };
        let out = SettleOutput {
            reward: &mut reward,
            unassigned: &mut unassigned,
            contribution_total: &mut by_contribution,
            account_total: &mut by_account,
        };
        settler.settle(&input, out)?;
        credits[PROTOCOL as usize][Role::Protocol as usize] += unassigned.iter().sum::<u64>();
        for (credit, &earned) in credits.iter_mut().zip(&by_account) {
            credit[Role::Contributor as usize] += earned;
        }
        Ok(credits)
    }

    /// A closed epoch's inferences, read back from its stretch of the log and resolved to the
    /// state's ids; refused unless they are exactly the inferences the epoch counts.
    fn epoch_from_log<I>(
        &self,
        epoch: u64,
        opened: u64,
        closed: u64,
        log: I,
    ) -> Result<Arrays, SimulateError>
    where
        I: IntoIterator,
        I::Item: Borrow<LoggedEvent>,
    {
        let mismatch = |detail: String| SimulateError::LogMismatch { epoch, detail };
        let mut arrays = Arrays { entry_start: vec![0], ..Arrays::default() };
        for logged in log {
            let logged = logged.borrow();
            let Event::Inference(inf) = &logged.event else { continue };
            if logged.lsn <= opened || logged.lsn >= closed {
                return Err(mismatch(format!("lsn {} is outside it", logged.lsn)));
            }
            let model = self.models.get(&inf.model);
            let model = model.ok_or_else(|| mismatch(format!("unknown model {}", inf.model)))?;
            arrays.model.push(model);
            arrays.fee.push(u64::try_from(inf.fee).map_err(|_| mismatch("a negative fee".into()))?);
            for a in &inf.attributions {
                let c = self.contributions.get(&a.contribution);
                let c = c.ok_or_else(|| mismatch(format!("unknown {}", a.contribution)))?;
                arrays.contribution.push(c);
                arrays.weight.push(a.weight);
            }
            arrays.entry_start.push(arrays.contribution.len() as u32);
        }
        let counted = self.epochs[(epoch - 1) as usize].inferences;
        if arrays.fee.len() as u64 != counted {
            let found = arrays.fee.len();
            return Err(mismatch(format!("{found} inferences read, the epoch counts {counted}")));
        }
        Ok(arrays)
    }

    /// A closed epoch's rewards as per-account credits by role.
    fn closed_credits(&self, epoch: u64) -> Vec<[u64; 4]> {
        let mut credits = vec![[0u64; 4]; self.accounts.len()];
        let closed = self.epochs[(epoch - 1) as usize].closed.as_ref().expect("a closed epoch");
        for &(account, role, amount) in &closed.rewards {
            credits[account as usize][role as usize] = amount;
        }
        credits
    }

    fn what_if_rows(&self, amount: &[[u64; 4]], actual: &[[u64; 4]]) -> Vec<WhatIf<'_>> {
        let mut rows = Vec::new();
        for (a, (simulated, settled)) in amount.iter().zip(actual).enumerate() {
            for role in Role::ALL {
                let (amount, actual) = (simulated[role as usize], settled[role as usize]);
                if amount > 0 || actual > 0 {
                    let account = self.accounts.name(a as u32);
                    rows.push(WhatIf { account, role, amount, actual });
                }
            }
        }
        rows
    }
}
