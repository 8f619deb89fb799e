//! The ledger's state machine: committed batches in, every read table's numbers out,
//! maintained incrementally. `validate.rs` decides whether a batch is accepted; this module
//! applies an accepted plan and must never fail halfway: everything that can refuse happens
//! before the first byte of state changes.
//!
//! Layout (see docs/architecture.md): names are interned to dense u32 ids; per-id rows live in
//! vectors indexed by id; the open epoch keeps one slot per attribution entry in flat parallel
//! arrays (struct of arrays) so batch backends can work on them directly. Closed epochs keep
//! only their aggregates.

use crate::error::{Refusal, ReplayError};
use crate::event::{Event, LoggedEvent};
use crate::fingerprint::FingerprintSet;
use crate::intern::Interner;
use crate::merkle;
use crate::settle::{divide_pool, split_fee, BatchSettler, Bps, SettleInput, SettleOutput};
use crate::validate::{Confirm, Op, Plan, Validator, LOOKAHEAD};

/// Account id of `$protocol`: interned first, in every ledger.
pub(crate) const PROTOCOL: u32 = 0;
/// End of a posting chain.
pub(crate) const NONE: u32 = u32::MAX;
/// Most attribution entries the open epoch can hold (entry offsets are u32).
pub const MAX_OPEN_ENTRIES: u64 = (u32::MAX - 1) as u64;
/// Open-epoch inferences a revocation must touch before they are re-settled together by the
/// attached batch backend rather than one by one (`Ledger::attach_batch_settler`). Measured on
/// 2 cores (docs/benchmarks.md, "Re-settlement after a revocation"): the CPU backend ties at
/// 10,000 touched inferences and wins by 1.2–1.6× from 50,000 up; below 10,000 it loses.
pub const DEFAULT_BATCH_RESETTLE_INFERENCES: usize = 32_768;

/// A batch backend for re-settling many inferences at once, and from how many on to use it.
#[derive(Clone)]
pub(crate) struct BatchResettle {
    pub settler: std::sync::Arc<dyn BatchSettler>,
    pub min_inferences: usize,
}

/// Who a credit is for (settlement.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Protocol = 0,
    Model = 1,
    BaseModel = 2,
    Contributor = 3,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Protocol, Role::Model, Role::BaseModel, Role::Contributor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Protocol => "protocol",
            Role::Model => "model",
            Role::BaseModel => "base_model",
            Role::Contributor => "contributor",
        }
    }
}

/// The exact answer behind an inference-id fingerprint hit: the ledger keeps only a 64-bit
/// fingerprint and the lsn of each past inference, so when a new id's fingerprint matches, the
/// validator asks whether the inference at that lsn has this very id. Storage answers from the
/// log (`tally_storage::history`). Passed per call (`apply_with_history`,
/// `validate_with_history`, `validate_after_with_history`), never kept in the ledger.
///
/// Without a history (`apply`, `validate`: pure engine use, tests, tools), every hit is
/// refused as a duplicate; a false refusal then has probability about n/2^64 for an inference
/// checked against n past ones. Replay (`apply_logged`) needs none: its events were accepted.
pub trait InferenceHistory {
    /// Whether the event at `lsn`, an inference this ledger accepted, has id `inference`.
    /// `Err` (why) when the history cannot tell, e.g. its log record is damaged: the event
    /// being checked is then refused (`Rule::UnconfirmedInference`), never accepted on a guess.
    fn is_inference(&self, lsn: u64, inference: &str) -> Result<bool, String>;
}

/// How inferences are settled as they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settling {
    /// Each inference's pool is divided when it is appended and re-divided on revocation.
    Incremental,
    /// Pools are divided for a whole epoch at once by a batch backend (`replay.rs`).
    Deferred,
}

#[derive(Debug, Clone)]
pub(crate) struct DatanetRow {
    pub owner: u32,
    pub lsn: u64,
    pub contributions: u64,
    pub attributions: u64,
    pub earned: u64,
}

/// What applying an attribution entry touches, in 32 bytes (two rows per cache line); the
/// rest is in `ContributionMeta`.
#[derive(Debug, Clone)]
pub(crate) struct ContributionRow {
    pub datanet: u32,
    pub contributor: u32,
    /// First entry of this contribution's chain in the open epoch (`NONE` if none).
    pub head: u32,
    pub inferences: u64,
    pub earned: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ContributionMeta {
    pub lsn: u64,
    /// 0 while not revoked (no event has lsn 0).
    pub revoked_lsn: u64,
    pub content_hash: [u8; 32],
}

#[derive(Debug, Clone)]
pub(crate) struct ModelRow {
    pub owner: u32,
    pub base: Option<u32>,
    /// As listed in the event.
    pub datanets: Box<[u32]>,
    /// Own datanets plus the base model's, sorted and without repeats.
    pub lineage: Box<[u32]>,
    pub lsn: u64,
    pub inferences: u64,
    pub fees: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct PolicyRow {
    pub lsn: u64,
    pub bps: Bps,
}

#[derive(Debug, Clone)]
pub(crate) struct RevocationRow {
    pub contribution: u32,
    pub reason: Box<str>,
    pub lsn: u64,
    pub ts: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct ClosedEpoch {
    pub lsn: u64,
    pub ts: i64,
    /// (account, amount > 0), sorted by account name bytewise: the Merkle leaves.
    pub payouts: Vec<(u32, u64)>,
    /// (account, role, amount > 0), sorted by account id then role.
    pub rewards: Vec<(u32, Role, u64)>,
    pub payouts_root: merkle::Hash,
}

#[derive(Debug, Clone)]
pub(crate) struct EpochRow {
    pub epoch: u64,
    pub opened_lsn: u64,
    pub inferences: u64,
    pub fees: u64,
    pub closed: Option<ClosedEpoch>,
}

/// The open epoch's per-inference and per-entry state, as flat arrays.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenEpoch {
    /// Per inference.
    pub inf_lsn: Vec<u64>,
    pub inf_pool: Vec<u64>,
    /// The fee and the served model: what a what-if settlement splits again (`simulate.rs`).
    pub inf_fee: Vec<u64>,
    pub inf_model: Vec<u32>,
    /// Inference i owns entries `inf_start[i]..inf_start[i + 1]`; always starts with 0.
    pub inf_start: Vec<u32>,
    /// Per entry.
    pub e_contribution: Vec<u32>,
    pub e_weight: Vec<u32>,
    pub e_reward: Vec<u64>,
    /// Next entry of the same contribution in this epoch (the contribution → entries index
    /// that revocation walks), `NONE` at the end.
    pub e_next: Vec<u32>,
    /// Per account: credits of this epoch by role.
    pub rewards: Vec<[u64; 4]>,
}

impl OpenEpoch {
    pub(crate) fn entries(&self) -> usize {
        self.e_weight.len()
    }

    pub(crate) fn inferences(&self) -> usize {
        self.inf_pool.len()
    }

    pub(crate) fn entry_range(&self, inference: usize) -> std::ops::Range<usize> {
        self.inf_start[inference] as usize..self.inf_start[inference + 1] as usize
    }

    fn inference_of_entry(&self, entry: usize) -> usize {
        self.inf_start.partition_point(|&s| s as usize <= entry) - 1
    }

    fn reset(&mut self) {
        for v in [&mut self.inf_lsn, &mut self.inf_pool, &mut self.inf_fee, &mut self.e_reward] {
            v.clear();
        }
        for v in
            [&mut self.e_contribution, &mut self.e_weight, &mut self.e_next, &mut self.inf_model]
        {
            v.clear();
        }
        self.inf_start.clear();
        self.inf_start.push(0);
        self.rewards.fill([0; 4]);
    }
}

/// The inferences a revocation touches, gathered as one batch for a backend, with what their
/// entries earn now (per contribution) and what of their pools falls to `$protocol` now.
struct Touched {
    entry_start: Vec<u32>,
    contribution: Vec<u32>,
    weight: Vec<u32>,
    pool: Vec<u64>,
    old_by_contribution: Vec<u64>,
    old_unassigned: u64,
}

impl Touched {
    fn gather(open: &OpenEpoch, inferences: &[u32], contributions: usize) -> Touched {
        let mut t = Touched {
            entry_start: Vec::with_capacity(inferences.len() + 1),
            contribution: Vec::new(),
            weight: Vec::new(),
            pool: Vec::with_capacity(inferences.len()),
            old_by_contribution: vec![0; contributions],
            old_unassigned: 0,
        };
        t.entry_start.push(0);
        for &i in inferences {
            let range = open.entry_range(i as usize);
            let mut given = 0;
            for e in range.clone() {
                t.old_by_contribution[open.e_contribution[e] as usize] += open.e_reward[e];
                given += open.e_reward[e];
            }
            t.old_unassigned += open.inf_pool[i as usize] - given;
            t.contribution.extend_from_slice(&open.e_contribution[range.clone()]);
            t.weight.extend_from_slice(&open.e_weight[range]);
            t.entry_start.push(t.weight.len() as u32);
            t.pool.push(open.inf_pool[i as usize]);
        }
        t
    }
}

/// Grows `v` for `additional` more items by at least 1/16 of its length, so that the slack
/// in the big per-entry arrays stays near 6% instead of doubling's up to 100%.
fn reserve_gently<T>(v: &mut Vec<T>, total: usize) {
    if v.capacity() < total {
        v.reserve_exact((total - v.len()).max(v.len() / 16));
    }
}

/// The ledger state. Cheap to compare with `digest()`.
#[derive(Clone)]
pub struct Ledger {
    pub(crate) last_lsn: u64,
    pub(crate) last_ts: i64,
    /// Sum of all fees ever accepted; every other money total is a part of it, so keeping it
    /// within i64 keeps all of them within i64 (see docs/architecture.md).
    pub(crate) total_fees: u64,
    pub(crate) accounts: Interner,
    /// Per account: the sum of its payouts from closed epochs.
    pub(crate) settled: Vec<u64>,
    pub(crate) datanets: Interner,
    pub(crate) datanet_rows: Vec<DatanetRow>,
    pub(crate) contributions: Interner,
    pub(crate) contribution_rows: Vec<ContributionRow>,
    pub(crate) contribution_meta: Vec<ContributionMeta>,
    /// Per contribution, 1 when revoked: the array batch backends read.
    pub(crate) revoked: Vec<u8>,
    pub(crate) content: hashbrown::HashMap<[u8; 32], u32, foldhash::fast::FixedState>,
    pub(crate) models: Interner,
    pub(crate) model_rows: Vec<ModelRow>,
    /// Every inference id ever accepted, as (fingerprint, lsn).
    pub(crate) inference_ids: FingerprintSet,
    pub(crate) bps: Bps,
    pub(crate) policies: Vec<PolicyRow>,
    pub(crate) revocations: Vec<RevocationRow>,
    /// Every epoch; the last one is open.
    pub(crate) epochs: Vec<EpochRow>,
    pub(crate) open: OpenEpoch,
    pub(crate) settling: Settling,
    /// Scratch for re-settlement, to keep allocation off the revocation path.
    pub(crate) scratch: Vec<u64>,
    /// Where a revocation that touches many inferences re-settles them (none: one by one).
    /// Not part of the state: never in an image or the digest.
    pub(crate) batch: Option<BatchResettle>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("last_lsn", &self.last_lsn)
            .field("open_epoch", &self.open_epoch())
            .field("open_entries", &self.open.entries())
            .finish_non_exhaustive()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

/// Where an accepted batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub ts: i64,
}

impl Ledger {
    pub fn new() -> Self {
        let mut accounts = Interner::new();
        accounts.push(crate::id::PROTOCOL_ACCOUNT);
        let mut open = OpenEpoch::default();
        open.inf_start.push(0);
        open.rewards.push([0; 4]);
        Ledger {
            last_lsn: 0,
            last_ts: 0,
            total_fees: 0,
            accounts,
            settled: vec![0],
            datanets: Interner::new(),
            datanet_rows: Vec::new(),
            contributions: Interner::new(),
            contribution_rows: Vec::new(),
            contribution_meta: Vec::new(),
            revoked: Vec::new(),
            content: Default::default(),
            models: Interner::new(),
            model_rows: Vec::new(),
            inference_ids: FingerprintSet::new(),
            bps: Bps::DEFAULT,
            policies: Vec::new(),
            revocations: Vec::new(),
            epochs: vec![EpochRow {
                epoch: 1,
                opened_lsn: 0,
                inferences: 0,
                fees: 0,
                closed: None,
            }],
            open,
            settling: Settling::Incremental,
            scratch: Vec::new(),
            batch: None,
        }
    }

    /// Re-settles the inferences of a revocation that touches at least `min_inferences` of
    /// them through `settler` at once (a GPU, or the CPU's cores) instead of one by one. The
    /// numbers are the same either way; only the time differs. A backend that fails is
    /// passed over for the one-by-one path, so applying never fails.
    pub fn attach_batch_settler(
        &mut self,
        settler: std::sync::Arc<dyn BatchSettler>,
        min_inferences: usize,
    ) {
        self.batch = Some(BatchResettle { settler, min_inferences });
    }

    /// The backend `attach_batch_settler` attached, and its threshold.
    pub fn batch_settler(&self) -> Option<(std::sync::Arc<dyn BatchSettler>, usize)> {
        self.batch.as_ref().map(|b| (b.settler.clone(), b.min_inferences))
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    pub fn open_epoch(&self) -> u64 {
        self.epochs.last().expect("an epoch is always open").epoch
    }

    /// Checks a batch against the current state without changing it. Without a history, an
    /// inference whose id's fingerprint was seen before is refused (see `InferenceHistory`).
    pub fn validate(&self, events: &[Event]) -> Result<(), Refusal> {
        Validator::new(self, Confirm::Conservative).plan(events).map(|_| ())
    }

    /// As `validate`, settling fingerprint hits exactly through `history`.
    pub fn validate_with_history(
        &self,
        events: &[Event],
        history: &dyn InferenceHistory,
    ) -> Result<(), Refusal> {
        Validator::new(self, Confirm::Exact(history)).plan(events).map(|_| ())
    }

    /// Appends a committed batch: validates all of it, then applies all of it, giving its
    /// events the next lsns. `ts` is the leader's stamp; a stamp behind the last one takes the
    /// last one's. On a refusal nothing changes. Without a history, an inference whose id's
    /// fingerprint was seen before is refused (see `InferenceHistory`).
    pub fn apply(&mut self, events: &[Event], ts: i64) -> Result<Applied, Refusal> {
        self.apply_confirmed(events, ts, Confirm::Conservative)
    }

    /// As `apply`, settling fingerprint hits exactly through `history`.
    pub fn apply_with_history(
        &mut self,
        events: &[Event],
        ts: i64,
        history: &dyn InferenceHistory,
    ) -> Result<Applied, Refusal> {
        self.apply_confirmed(events, ts, Confirm::Exact(history))
    }

    fn apply_confirmed(
        &mut self,
        events: &[Event],
        ts: i64,
        confirm: Confirm<'_>,
    ) -> Result<Applied, Refusal> {
        let plan = Validator::new(self, confirm).plan(events)?;
        let first_lsn = self.last_lsn + 1;
        self.apply_plan(events, plan, |_| ts);
        Ok(Applied { first_lsn, last_lsn: self.last_lsn, ts: self.last_ts })
    }

    /// Applies logged events that were accepted before (replay, followers): their lsns must
    /// continue this state's exactly. Every rule is checked again except that an inference id
    /// whose fingerprint was seen before is taken as the collision it was found to be when
    /// the event was first accepted (repeats inside one call are still found exactly).
    pub fn apply_logged(&mut self, events: &[LoggedEvent]) -> Result<(), ReplayError> {
        let refs: Vec<&LoggedEvent> = events.iter().collect();
        self.apply_logged_refs(&refs)
    }

    pub(crate) fn apply_logged_refs(&mut self, events: &[&LoggedEvent]) -> Result<(), ReplayError> {
        for (k, e) in events.iter().enumerate() {
            let expected = self.last_lsn + 1 + k as u64;
            if e.lsn != expected {
                return Err(ReplayError::Gap { expected, found: e.lsn });
            }
        }
        let owned: Vec<&Event> = events.iter().map(|e| &e.event).collect();
        let plan = Validator::new(self, Confirm::Trusted).plan_refs(&owned).map_err(|refusal| {
            ReplayError::Refused { lsn: self.last_lsn + 1 + refusal.index as u64, refusal }
        })?;
        self.apply_plan_refs(&owned, plan, |i| events[i].ts);
        Ok(())
    }

    fn apply_plan(&mut self, events: &[Event], plan: Plan<'_>, ts_of: impl Fn(usize) -> i64) {
        let refs: Vec<&Event> = events.iter().collect();
        self.apply_plan_refs(&refs, plan, ts_of);
    }

    fn apply_plan_refs(&mut self, events: &[&Event], plan: Plan<'_>, ts_of: impl Fn(usize) -> i64) {
        assert_eq!(events.len(), plan.ops.len());
        for name in &plan.new_accounts {
            self.accounts.push(name);
            self.settled.push(0);
            self.open.rewards.push([0; 4]);
        }
        let open_entries = self.open.entries() + plan.entries.len();
        for v in [&mut self.open.e_contribution, &mut self.open.e_weight, &mut self.open.e_next] {
            reserve_gently(v, open_entries);
        }
        reserve_gently(&mut self.open.e_reward, open_entries);
        let mut entries = plan.entries.as_slice();
        for (i, (event, op)) in events.iter().zip(plan.ops).enumerate() {
            self.last_lsn += 1;
            self.last_ts = self.last_ts.max(ts_of(i));
            let lsn = self.last_lsn;
            match (event, op) {
                (Event::Datanet(d), Op::Datanet { owner }) => {
                    self.datanets.push(&d.datanet);
                    self.datanet_rows.push(DatanetRow {
                        owner,
                        lsn,
                        contributions: 0,
                        attributions: 0,
                        earned: 0,
                    });
                }
                (Event::Contribution(c), Op::Contribution { datanet, contributor, hash }) => {
                    let id = self.contributions.push_with_payload(&c.contribution, datanet);
                    self.contribution_rows.push(ContributionRow {
                        datanet,
                        contributor,
                        head: NONE,
                        inferences: 0,
                        earned: 0,
                    });
                    self.contribution_meta.push(ContributionMeta {
                        lsn,
                        revoked_lsn: 0,
                        content_hash: hash,
                    });
                    self.revoked.push(0);
                    self.content.insert(hash, id);
                    self.datanet_rows[datanet as usize].contributions += 1;
                }
                (Event::Model(m), Op::Model { owner, base, datanets, lineage }) => {
                    self.models.push(&m.model);
                    self.model_rows.push(ModelRow {
                        owner,
                        base,
                        datanets: datanets.into(),
                        lineage: lineage.into(),
                        lsn,
                        inferences: 0,
                        fees: 0,
                    });
                }
                (Event::Inference(inf), Op::Inference { model, fingerprint }) => {
                    let (resolved, rest) = entries.split_at(inf.attributions.len());
                    entries = rest;
                    // Rows of the next entries, for the same reason as in validation. A
                    // contribution created later in this batch has no row yet: skip it.
                    for &c in &rest[..rest.len().min(LOOKAHEAD)] {
                        if let Some(row) = self.contribution_rows.get(c as usize) {
                            crate::prefetch::prefetch(row);
                        }
                    }
                    self.apply_inference(lsn, inf, model, resolved);
                    self.inference_ids.insert(fingerprint, lsn);
                }
                (Event::Revocation(r), Op::Revocation { contribution }) => {
                    self.apply_revocation(lsn, self.last_ts, r, contribution);
                }
                (Event::Policy(_), Op::Policy(bps)) => {
                    self.bps = bps;
                    self.policies.push(PolicyRow { lsn, bps });
                }
                (Event::Settlement(_), Op::Settlement) => self.close_epoch(lsn, self.last_ts),
                _ => unreachable!("plan does not match its events"),
            }
        }
        debug_assert!(entries.is_empty());
    }

    #[inline]
    fn credit(&mut self, account: u32, role: Role, amount: u64) {
        self.open.rewards[account as usize][role as usize] += amount;
    }

    fn apply_inference(
        &mut self,
        lsn: u64,
        inf: &crate::event::Inference,
        model: u32,
        resolved: &[u32],
    ) {
        let fee = u64::try_from(inf.fee).expect("validated fee");
        let row = &self.model_rows[model as usize];
        let owner = row.owner;
        let base_owner = row.base.map(|b| self.model_rows[b as usize].owner);
        let split = split_fee(fee, self.bps, base_owner.is_some());
        self.credit(PROTOCOL, Role::Protocol, split.protocol);
        self.credit(owner, Role::Model, split.model);
        if let Some(base_owner) = base_owner {
            self.credit(base_owner, Role::BaseModel, split.base);
        }
        let row = &mut self.model_rows[model as usize];
        row.inferences += 1;
        row.fees += fee;
        let epoch = self.epochs.last_mut().expect("open epoch");
        epoch.inferences += 1;
        epoch.fees += fee;
        self.total_fees += fee;

        let open = &mut self.open;
        let start = open.entries();
        for (a, &c) in inf.attributions.iter().zip(resolved) {
            let entry = open.e_weight.len() as u32;
            open.e_contribution.push(c);
            open.e_weight.push(a.weight);
            open.e_reward.push(0);
            let crow = &mut self.contribution_rows[c as usize];
            open.e_next.push(crow.head);
            crow.head = entry;
            crow.inferences += 1;
            self.datanet_rows[crow.datanet as usize].attributions += 1;
        }
        let end = open.entries();
        open.inf_lsn.push(lsn);
        open.inf_pool.push(split.pool);
        open.inf_fee.push(fee);
        open.inf_model.push(model);
        open.inf_start.push(end as u32);
        if self.settling == Settling::Incremental {
            let revoked = &self.revoked;
            let contribution = &open.e_contribution[start..end];
            let unassigned = divide_pool(
                split.pool,
                &open.e_weight[start..end],
                |j| revoked[contribution[j] as usize] == 0,
                &mut open.e_reward[start..end],
            );
            self.credit(PROTOCOL, Role::Protocol, unassigned);
            for e in start..end {
                let reward = self.open.e_reward[e];
                if reward > 0 {
                    self.credit_contribution(self.open.e_contribution[e], reward);
                }
            }
        }
    }

    #[inline]
    fn credit_contribution(&mut self, contribution: u32, amount: u64) {
        let row = &mut self.contribution_rows[contribution as usize];
        row.earned += amount;
        let (contributor, datanet) = (row.contributor, row.datanet);
        self.datanet_rows[datanet as usize].earned += amount;
        self.credit(contributor, Role::Contributor, amount);
    }

    fn debit_contribution(&mut self, contribution: u32, amount: u64) {
        let row = &mut self.contribution_rows[contribution as usize];
        row.earned -= amount;
        let (contributor, datanet) = (row.contributor, row.datanet);
        self.datanet_rows[datanet as usize].earned -= amount;
        self.open.rewards[contributor as usize][Role::Contributor as usize] -= amount;
    }

    fn apply_revocation(&mut self, lsn: u64, ts: i64, r: &crate::event::Revocation, c: u32) {
        debug_assert_eq!(self.revoked[c as usize], 0);
        self.revoked[c as usize] = 1;
        self.contribution_meta[c as usize].revoked_lsn = lsn;
        self.revocations.push(RevocationRow {
            contribution: c,
            reason: r.reason.as_str().into(),
            lsn,
            ts,
        });
        if self.settling == Settling::Deferred {
            return;
        }
        let mut touched = Vec::new();
        let mut entry = self.contribution_rows[c as usize].head;
        while entry != NONE {
            touched.push(self.open.inference_of_entry(entry as usize) as u32);
            entry = self.open.e_next[entry as usize];
        }
        let batch = self.batch.clone().filter(|b| touched.len() >= b.min_inferences);
        if let Some(batch) = batch {
            if self.resettle_batch(&touched, batch.settler.as_ref()).is_ok() {
                return;
            }
        }
        for inference in touched {
            self.resettle(inference as usize);
        }
    }

    /// `resettle` for many inferences at once: their entries are gathered into one batch for
    /// `settler`, and what moves is applied per contribution (the backend's totals of the new
    /// rewards against the old ones), not entry by entry: one update of a contribution's,
    /// datanet's and account's rows however many of its entries changed. Changes nothing when
    /// the backend fails.
    fn resettle_batch(
        &mut self,
        inferences: &[u32],
        settler: &dyn BatchSettler,
    ) -> Result<(), crate::settle::SettleError> {
        let touched = Touched::gather(&self.open, inferences, self.contribution_rows.len());
        let contributor: Vec<u32> = self.contribution_rows.iter().map(|r| r.contributor).collect();
        let mut reward = vec![0u64; touched.weight.len()];
        let mut unassigned = vec![0u64; touched.pool.len()];
        let (mut by_c, mut by_a) = (vec![0u64; contributor.len()], vec![0u64; self.accounts.len()]);
        let input = SettleInput {
            entry_start: &touched.entry_start,
            pool: &touched.pool,
            contribution: &touched.contribution,
            weight: &touched.weight,
            revoked: &self.revoked,
            contributor: &contributor,
            accounts: by_a.len(),
        };
        let out = SettleOutput {
            reward: &mut reward,
            unassigned: &mut unassigned,
            contribution_total: &mut by_c,
            account_total: &mut by_a,
        };
        settler.settle(&input, out)?;
        for (k, &i) in inferences.iter().enumerate() {
            let new = &reward[touched.entry_start[k] as usize..touched.entry_start[k + 1] as usize];
            let range = self.open.entry_range(i as usize);
            self.open.e_reward[range].copy_from_slice(new);
        }
        for (c, (&old, &new)) in touched.old_by_contribution.iter().zip(&by_c).enumerate() {
            if old != new {
                self.debit_contribution(c as u32, old);
                self.credit_contribution(c as u32, new);
            }
        }
        let new_unassigned: u64 = unassigned.iter().sum();
        let protocol = &mut self.open.rewards[PROTOCOL as usize][Role::Protocol as usize];
        *protocol = *protocol - touched.old_unassigned + new_unassigned;
        Ok(())
    }

    /// Replaces inference `inference`'s entry rewards with `new` (and the part of its pool
    /// that falls to `$protocol` with `new_unassigned`), moving the differences.
    fn move_rewards(&mut self, inference: usize, new: &[u64], new_unassigned: u64) {
        let range = self.open.entry_range(inference);
        let pool = self.open.inf_pool[inference];
        let old_unassigned = pool - self.open.e_reward[range.clone()].iter().sum::<u64>();
        for (e, &after) in range.zip(new) {
            let before = self.open.e_reward[e];
            if before != after {
                let c = self.open.e_contribution[e];
                self.debit_contribution(c, before);
                self.credit_contribution(c, after);
                self.open.e_reward[e] = after;
            }
        }
        let protocol = &mut self.open.rewards[PROTOCOL as usize][Role::Protocol as usize];
        *protocol = *protocol - old_unassigned + new_unassigned;
    }

    /// Takes back every credit the open epoch's pools gave and leaves the state in deferred
    /// mode, as replay holds it: the pools are divided again, all at once, by
    /// `settle_deferred`. Fees and the fixed parts of each split stay credited.
    pub(crate) fn defer(&mut self) {
        if self.settling == Settling::Deferred {
            return;
        }
        let given: u64 = self.open.e_reward.iter().sum();
        let pools: u64 = self.open.inf_pool.iter().sum();
        for e in 0..self.open.entries() {
            let reward = std::mem::take(&mut self.open.e_reward[e]);
            if reward > 0 {
                self.debit_contribution(self.open.e_contribution[e], reward);
            }
        }
        self.open.rewards[PROTOCOL as usize][Role::Protocol as usize] -= pools - given;
        self.settling = Settling::Deferred;
    }

    /// Re-divides one open-epoch inference's pool under the current revocations and moves the
    /// differences between accounts. Fees and the fixed parts never change.
    fn resettle(&mut self, inference: usize) {
        let range = self.open.entry_range(inference);
        let mut new = std::mem::take(&mut self.scratch);
        new.clear();
        new.resize(range.len(), 0);
        let revoked = &self.revoked;
        let contribution = &self.open.e_contribution[range.clone()];
        let unassigned = divide_pool(
            self.open.inf_pool[inference],
            &self.open.e_weight[range],
            |j| revoked[contribution[j] as usize] == 0,
            &mut new,
        );
        self.move_rewards(inference, &new, unassigned);
        self.scratch = new;
    }

    /// Closes the open epoch at `lsn`: freezes its rewards, computes payouts and their Merkle
    /// root (settlement.md §6), moves them to `settled`, and opens the next epoch.
    fn close_epoch(&mut self, lsn: u64, ts: i64) {
        assert_eq!(self.settling, Settling::Incremental, "deferred pools must be settled first");
        let mut payouts = Vec::new();
        let mut rewards = Vec::new();
        for (account, roles) in self.open.rewards.iter().enumerate() {
            let account = account as u32;
            let total: u64 = roles.iter().sum();
            if total > 0 {
                payouts.push((account, total));
            }
            for role in Role::ALL {
                if roles[role as usize] > 0 {
                    rewards.push((account, role, roles[role as usize]));
                }
            }
        }
        let accounts = &self.accounts;
        payouts.sort_unstable_by(|a, b| {
            accounts.name(a.0).as_bytes().cmp(accounts.name(b.0).as_bytes())
        });
        let leaves: Vec<(&str, u64)> =
            payouts.iter().map(|&(a, v)| (accounts.name(a), v)).collect();
        let payouts_root = merkle::payouts_root(&leaves);
        let paid: u64 = payouts.iter().map(|p| p.1).sum();
        for &(account, amount) in &payouts {
            self.settled[account as usize] += amount;
        }
        let epoch = self.epochs.last_mut().expect("open epoch");
        // Conservation (ledger.md invariant 1), checked on every close.
        assert_eq!(paid, epoch.fees, "epoch {} payouts differ from its fees", epoch.epoch);
        epoch.closed = Some(ClosedEpoch { lsn, ts, payouts, rewards, payouts_root });
        let next = epoch.epoch + 1;
        self.epochs.push(EpochRow {
            epoch: next,
            opened_lsn: lsn,
            inferences: 0,
            fees: 0,
            closed: None,
        });
        self.open.reset();
        for row in &mut self.contribution_rows {
            row.head = NONE;
        }
    }

    /// Divides every pool of the open epoch with a batch backend, under the revocations in
    /// force now, and credits the results. Only for a state in deferred mode (replay); leaves it
    /// in incremental mode, so the caller can close the epoch or keep appending.
    pub(crate) fn settle_deferred(
        &mut self,
        settler: &dyn BatchSettler,
    ) -> Result<(), ReplayError> {
        assert_eq!(self.settling, Settling::Deferred);
        let contributor: Vec<u32> = self.contribution_rows.iter().map(|r| r.contributor).collect();
        let mut unassigned = vec![0u64; self.open.inferences()];
        let mut by_contribution = vec![0u64; contributor.len()];
        let mut by_account = vec![0u64; self.accounts.len()];
        let open = &mut self.open;
        let input = SettleInput {
            entry_start: &open.inf_start,
            pool: &open.inf_pool,
            contribution: &open.e_contribution,
            weight: &open.e_weight,
            revoked: &self.revoked,
            contributor: &contributor,
            accounts: by_account.len(),
        };
        let out = SettleOutput {
            reward: &mut open.e_reward,
            unassigned: &mut unassigned,
            contribution_total: &mut by_contribution,
            account_total: &mut by_account,
        };
        settler
            .settle(&input, out)
            .map_err(|e| ReplayError::Settler(format!("{}: {e}", settler.name())))?;
        let to_protocol: u64 = unassigned.iter().sum();
        self.credit(PROTOCOL, Role::Protocol, to_protocol);
        for (c, &earned) in by_contribution.iter().enumerate() {
            if earned > 0 {
                let row = &mut self.contribution_rows[c];
                row.earned += earned;
                self.datanet_rows[row.datanet as usize].earned += earned;
            }
        }
        for (account, &earned) in by_account.iter().enumerate() {
            self.open.rewards[account][Role::Contributor as usize] += earned;
        }
        self.settling = Settling::Incremental;
        Ok(())
    }

    /// Bytes held per open-epoch attribution entry and elsewhere; `capacity`-based, so it is
    /// what the allocator really gave out.
    pub fn memory(&self) -> MemoryReport {
        let o = &self.open;
        let entry_bytes = o.e_contribution.capacity() * 4
            + o.e_weight.capacity() * 4
            + o.e_reward.capacity() * 8
            + o.e_next.capacity() * 4;
        let inference_bytes = (o.inf_lsn.capacity() + o.inf_pool.capacity() + o.inf_fee.capacity())
            * 8
            + (o.inf_start.capacity() + o.inf_model.capacity()) * 4;
        MemoryReport {
            open_entries: o.entries(),
            open_inferences: o.inferences(),
            open_entry_array_bytes: entry_bytes,
            open_inference_array_bytes: inference_bytes,
            inference_ids: self.inference_ids.len(),
            inference_id_bytes: self.inference_ids.heap_bytes(),
            name_bytes: self.accounts.heap_bytes()
                + self.datanets.heap_bytes()
                + self.contributions.heap_bytes()
                + self.models.heap_bytes(),
        }
    }
}

/// What `Ledger::memory` measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    pub open_entries: usize,
    pub open_inferences: usize,
    pub open_entry_array_bytes: usize,
    pub open_inference_array_bytes: usize,
    pub inference_ids: usize,
    pub inference_id_bytes: usize,
    pub name_bytes: usize,
}

impl MemoryReport {
    /// Engine array bytes (per-entry plus per-inference arrays of the open epoch) per entry.
    pub fn bytes_per_open_entry(&self) -> f64 {
        (self.open_entry_array_bytes + self.open_inference_array_bytes) as f64
            / self.open_entries.max(1) as f64
    }

    /// Bytes of the (fingerprint, lsn) table per past inference: 21.3 to 32 by its load.
    pub fn bytes_per_inference_id(&self) -> f64 {
        self.inference_id_bytes as f64 / self.inference_ids.max(1) as f64
    }
}
