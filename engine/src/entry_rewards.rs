//! The reward of each entry of a logged inference, as currently settled (surface.md's
//! `attributions.reward`): for the open epoch under the revocations in force now, for a closed
//! epoch as they were when it closed. Recomputed from the state's rows (policy in force at the
//! inference's lsn, the model's base, revocation lsns, epoch bounds), so closed epochs need no
//! per-entry state. Reads only.

use crate::event::Inference;
use crate::settle::{divide_pool, split_fee, Bps};
use crate::state::Ledger;

/// One entry's settled reward, with the contributor it is credited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReward<'a> {
    pub contributor: &'a str,
    pub reward: u64,
}

impl Ledger {
    /// The epoch an event at `lsn` belongs to.
    pub fn epoch_of(&self, lsn: u64) -> u64 {
        let k = self.epochs.partition_point(|e| e.opened_lsn < lsn);
        self.epochs[k.saturating_sub(1)].epoch
    }

    /// Rewards of the entries of `inf`, accepted at `lsn`. `None` if the inference does not
    /// belong to this ledger (an unknown model or contribution).
    pub fn entry_rewards(&self, lsn: u64, inf: &Inference) -> Option<Vec<EntryReward<'_>>> {
        let epoch =
            &self.epochs[self.epochs.partition_point(|e| e.opened_lsn < lsn).checked_sub(1)?];
        let cutoff = epoch.closed.as_ref().map_or(u64::MAX, |c| c.lsn);
        let bps = self.policies.iter().rev().find(|p| p.lsn < lsn).map_or(Bps::DEFAULT, |p| p.bps);
        let model = &self.model_rows[self.models.get(&inf.model)? as usize];
        let fee = u64::try_from(inf.fee).ok()?;
        let pool = split_fee(fee, bps, model.base.is_some()).pool;
        let mut ids = Vec::with_capacity(inf.attributions.len());
        for a in &inf.attributions {
            ids.push(self.contributions.get(&a.contribution)?);
        }
        let weights: Vec<u32> = inf.attributions.iter().map(|a| a.weight).collect();
        let mut rewards = vec![0u64; weights.len()];
        divide_pool(
            pool,
            &weights,
            |j| {
                let revoked = self.contribution_meta[ids[j] as usize].revoked_lsn;
                revoked == 0 || revoked > cutoff
            },
            &mut rewards,
        );
        Some(
            ids.iter()
                .zip(rewards)
                .map(|(&c, reward)| EntryReward {
                    contributor: self.accounts.name(self.contribution_rows[c as usize].contributor),
                    reward,
                })
                .collect(),
        )
    }
}
