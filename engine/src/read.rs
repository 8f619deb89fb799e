//! Read access to the state, row by row, in the shape of surface.md's tables. Borrowed views
//! only: this module never changes the state and never copies the per-entry arrays.

use crate::merkle;
use crate::state::{Ledger, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanetView<'a> {
    pub datanet: &'a str,
    pub owner: &'a str,
    pub lsn: u64,
    pub contributions: u64,
    pub attributions: u64,
    pub earned: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionView<'a> {
    pub contribution: &'a str,
    pub datanet: &'a str,
    pub contributor: &'a str,
    pub content_hash: [u8; 32],
    pub lsn: u64,
    pub revoked_lsn: Option<u64>,
    pub inferences: u64,
    pub earned: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelView<'a> {
    pub model: &'a str,
    pub owner: &'a str,
    pub base_model: Option<&'a str>,
    pub datanets: Vec<&'a str>,
    pub lsn: u64,
    pub inferences: u64,
    pub fees: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyView {
    pub lsn: u64,
    pub protocol_bps: u16,
    pub model_bps: u16,
    pub base_bps: u16,
    pub contributors_bps: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationView<'a> {
    pub contribution: &'a str,
    pub reason: &'a str,
    pub lsn: u64,
    pub ts: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochView {
    pub epoch: u64,
    pub open: bool,
    pub opened_lsn: u64,
    pub closed_lsn: Option<u64>,
    pub inferences: u64,
    pub fees: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementView {
    pub epoch: u64,
    pub lsn: u64,
    pub ts: i64,
    pub total: u64,
    pub payouts_root: merkle::Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardView<'a> {
    pub epoch: u64,
    pub account: &'a str,
    pub role: Role,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceView<'a> {
    pub account: &'a str,
    pub earned: u64,
    pub settled: u64,
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutView<'a> {
    pub epoch: u64,
    pub account: &'a str,
    pub amount: u64,
}

/// One attribution entry of the open epoch, with its reward as currently settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEntryView<'a> {
    pub inference_lsn: u64,
    pub contribution: &'a str,
    pub contributor: &'a str,
    pub weight: u32,
    pub reward: u64,
}

impl Ledger {
    pub fn datanets(&self) -> impl Iterator<Item = DatanetView<'_>> {
        self.datanet_rows.iter().enumerate().map(|(id, r)| DatanetView {
            datanet: self.datanets.name(id as u32),
            owner: self.accounts.name(r.owner),
            lsn: r.lsn,
            contributions: r.contributions,
            attributions: r.attributions,
            earned: r.earned,
        })
    }

    pub fn contributions(&self) -> impl Iterator<Item = ContributionView<'_>> {
        (0..self.contribution_rows.len() as u32).map(|id| self.contribution_view(id))
    }

    pub fn contribution(&self, name: &str) -> Option<ContributionView<'_>> {
        self.contributions.get(name).map(|id| self.contribution_view(id))
    }

    fn contribution_view(&self, id: u32) -> ContributionView<'_> {
        let r = &self.contribution_rows[id as usize];
        let meta = &self.contribution_meta[id as usize];
        ContributionView {
            contribution: self.contributions.name(id),
            datanet: self.datanets.name(r.datanet),
            contributor: self.accounts.name(r.contributor),
            content_hash: meta.content_hash,
            lsn: meta.lsn,
            revoked_lsn: (meta.revoked_lsn != 0).then_some(meta.revoked_lsn),
            inferences: r.inferences,
            earned: r.earned,
        }
    }

    pub fn models(&self) -> impl Iterator<Item = ModelView<'_>> {
        self.model_rows.iter().enumerate().map(|(id, r)| ModelView {
            model: self.models.name(id as u32),
            owner: self.accounts.name(r.owner),
            base_model: r.base.map(|b| self.models.name(b)),
            datanets: r.datanets.iter().map(|&d| self.datanets.name(d)).collect(),
            lsn: r.lsn,
            inferences: r.inferences,
            fees: r.fees,
        })
    }

    pub fn policies(&self) -> impl Iterator<Item = PolicyView> + '_ {
        self.policies.iter().map(|p| PolicyView {
            lsn: p.lsn,
            protocol_bps: p.bps.protocol,
            model_bps: p.bps.model,
            base_bps: p.bps.base,
            contributors_bps: p.bps.contributors(),
        })
    }

    pub fn revocations(&self) -> impl Iterator<Item = RevocationView<'_>> {
        self.revocations.iter().map(|r| RevocationView {
            contribution: self.contributions.name(r.contribution),
            reason: &r.reason,
            lsn: r.lsn,
            ts: r.ts,
        })
    }

    pub fn epochs(&self) -> impl Iterator<Item = EpochView> + '_ {
        self.epochs.iter().map(|e| EpochView {
            epoch: e.epoch,
            open: e.closed.is_none(),
            opened_lsn: e.opened_lsn,
            closed_lsn: e.closed.as_ref().map(|c| c.lsn),
            inferences: e.inferences,
            fees: e.fees,
        })
    }

    pub fn settlements(&self) -> impl Iterator<Item = SettlementView> + '_ {
        self.epochs.iter().filter_map(|e| {
            e.closed.as_ref().map(|c| SettlementView {
                epoch: e.epoch,
                lsn: c.lsn,
                ts: c.ts,
                total: e.fees,
                payouts_root: c.payouts_root,
            })
        })
    }

    /// Rewards per (epoch, account, role), amount > 0: closed epochs first, then the open one.
    pub fn rewards(&self) -> impl Iterator<Item = RewardView<'_>> {
        let closed = self.epochs.iter().filter_map(|e| e.closed.as_ref().map(|c| (e.epoch, c)));
        let closed = closed.flat_map(move |(epoch, c)| {
            c.rewards.iter().map(move |&(a, role, amount)| RewardView {
                epoch,
                account: self.accounts.name(a),
                role,
                amount,
            })
        });
        let open_epoch = self.open_epoch();
        let open = self.open.rewards.iter().enumerate().flat_map(move |(a, roles)| {
            Role::ALL.into_iter().filter(move |&r| roles[r as usize] > 0).map(move |role| {
                RewardView {
                    epoch: open_epoch,
                    account: self.accounts.name(a as u32),
                    role,
                    amount: roles[role as usize],
                }
            })
        });
        closed.chain(open)
    }

    /// One row per account that has earned anything.
    pub fn balances(&self) -> impl Iterator<Item = BalanceView<'_>> {
        (0..self.accounts.len() as u32).filter_map(|a| self.balance_of(a)).filter(|b| b.earned > 0)
    }

    /// A point lookup; `None` for an unknown account.
    pub fn balance(&self, account: &str) -> Option<BalanceView<'_>> {
        self.accounts.get(account).and_then(|a| self.balance_of(a))
    }

    fn balance_of(&self, a: u32) -> Option<BalanceView<'_>> {
        let settled = self.settled[a as usize];
        let pending: u64 = self.open.rewards[a as usize].iter().sum();
        Some(BalanceView {
            account: self.accounts.name(a),
            earned: settled + pending,
            settled,
            pending,
        })
    }

    /// Payout sets of closed epochs, each in Merkle leaf order.
    pub fn payouts(&self) -> impl Iterator<Item = PayoutView<'_>> {
        self.epochs.iter().filter_map(|e| e.closed.as_ref().map(|c| (e.epoch, c))).flat_map(
            move |(epoch, c)| {
                c.payouts.iter().map(move |&(a, amount)| PayoutView {
                    epoch,
                    account: self.accounts.name(a),
                    amount,
                })
            },
        )
    }

    /// That `account`'s payout is in closed epoch `epoch`'s payout set: its amount, its leaf
    /// index in the set (accounts sorted bytewise), the set's size, the audit path to the
    /// epoch's `payouts_root` (settlement.md §6, RFC 9162) and that root. `None` when the epoch
    /// is not closed or paid the account nothing.
    pub fn payout_proof(&self, epoch: u64, account: &str) -> Option<PayoutProof> {
        let row = self.epochs.get(usize::try_from(epoch.checked_sub(1)?).ok()?)?;
        let closed = row.closed.as_ref()?;
        let id = self.accounts.get(account)?;
        let index = closed.payouts.iter().position(|&(a, _)| a == id)?;
        let leaves: Vec<merkle::Hash> = closed
            .payouts
            .iter()
            .map(|&(a, v)| merkle::leaf_hash(&merkle::leaf_data(self.accounts.name(a), v)))
            .collect();
        let path = merkle::inclusion_proof(&leaves, index)?;
        Some(PayoutProof {
            amount: closed.payouts[index].1,
            leaf_index: index as u64,
            tree_size: leaves.len() as u64,
            path,
            payouts_root: closed.payouts_root,
        })
    }

    /// The open epoch's entries, in log order.
    pub fn open_entries(&self) -> impl Iterator<Item = OpenEntryView<'_>> {
        let o = &self.open;
        (0..o.inferences()).flat_map(move |i| {
            o.entry_range(i).map(move |e| {
                let c = o.e_contribution[e];
                OpenEntryView {
                    inference_lsn: o.inf_lsn[i],
                    contribution: self.contributions.name(c),
                    contributor: self.accounts.name(self.contribution_rows[c as usize].contributor),
                    weight: o.e_weight[e],
                    reward: o.e_reward[e],
                }
            })
        })
    }

    /// Number of inferences accepted over the whole history.
    pub fn inference_count(&self) -> u64 {
        self.epochs.iter().map(|e| e.inferences).sum()
    }

    /// Number of attribution entries accepted over the whole history: every entry names one
    /// contribution, so the datanets' counts of the entries naming theirs add up to it.
    pub fn entry_count(&self) -> u64 {
        self.datanet_rows.iter().map(|d| d.attributions).sum()
    }

    /// The lsns where inference `id` may be, in no order: the one where it is, if it was
    /// accepted, and those of other ids sharing its 64-bit fingerprint (rare). The caller
    /// checks the id at each (a read of the log); an id never accepted usually has none.
    /// Costs one probe of the fingerprint table, whatever the ledger's size.
    pub fn inference_lsns(&self, id: &str) -> Vec<u64> {
        self.inference_ids.lsns_of(crate::fingerprint::fingerprint(id)).collect()
    }
}

/// `Ledger::payout_proof`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutProof {
    pub amount: u64,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<merkle::Hash>,
    pub payouts_root: merkle::Hash,
}
