//! Decides whether a batch is accepted, against the state plus the batch's own earlier events
//! (ledger.md: each event sees those before it). Produces a `Plan` with every name resolved to
//! its final dense id, so applying it cannot fail. Must never change the state.

use std::borrow::Cow;

use foldhash::fast::FixedState;
use hashbrown::{HashMap, HashSet, HashTable};

use crate::error::{Refusal, Rule};
use crate::event::{Event, EventKind, Text};
use crate::fingerprint::fingerprint;
use crate::id::{is_valid_id, parse_content_hash};
use crate::intern::NameHash;
use crate::pending::{Pending, Ref};
use crate::settle::{Bps, BPS_SCALE, MAX_ENTRIES, MAX_FEE};
use crate::state::{InferenceHistory, Ledger, MAX_OPEN_ENTRIES};
use crate::weight::WEIGHT_SCALE;

/// Most events in one batch (surface.md: at least 1,000,000 rows).
pub const MAX_BATCH_EVENTS: usize = 1 << 20;
/// Longest revocation reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Inferences with up to this many entries check repeats pairwise; longer ones sort.
const PAIRWISE_REPEAT_CHECK: usize = 16;
/// How many attribution entries ahead validation asks for cache lines.
pub(crate) const LOOKAHEAD: usize = 16;

type Map<K, V> = HashMap<K, V, FixedState>;

/// One resolved event.
pub(crate) enum Op {
    Datanet {
        owner: u32,
    },
    Contribution {
        datanet: u32,
        contributor: u32,
        hash: [u8; 32],
    },
    Model {
        owner: u32,
        base: Option<u32>,
        datanets: Vec<u32>,
        lineage: Vec<u32>,
    },
    /// Its resolved contribution ids are the next `attributions.len()` of `Plan::entries`.
    Inference {
        model: u32,
        fingerprint: u64,
    },
    Revocation {
        contribution: u32,
    },
    Policy(Bps),
    Settlement,
}

pub(crate) struct Plan<'a> {
    pub ops: Vec<Op>,
    /// Accounts first named in this batch, in the order of their new ids.
    pub new_accounts: Vec<&'a str>,
    /// Resolved contribution ids of every inference entry of the batch, in order.
    pub entries: Vec<u32>,
}

/// Names created earlier in the same batch, with the ids they will get.
struct Overlay<'a> {
    names: Map<&'a str, u32>,
}

impl<'a> Overlay<'a> {
    fn new() -> Self {
        Overlay { names: Map::default() }
    }

    #[inline]
    fn get(&self, name: &str) -> Option<u32> {
        if self.names.is_empty() {
            return None;
        }
        self.names.get(name).copied()
    }
}

/// How a fingerprint hit on a past inference id is settled (see `InferenceHistory`).
#[derive(Clone, Copy)]
pub(crate) enum Confirm<'h> {
    /// No history: a hit is a duplicate.
    Conservative,
    /// The history says whether the inference at each candidate lsn has this very id.
    Exact(&'h dyn InferenceHistory),
    /// Logged events (replay): a hit is the collision the exact check found at first apply.
    Trusted,
}

pub(crate) struct Validator<'s, 'a> {
    state: &'s Ledger,
    confirm: Confirm<'s>,
    /// A transaction block's earlier writes, between the state and this batch.
    prior: Option<&'s Pending>,
    accounts: Overlay<'a>,
    new_accounts: Vec<&'a str>,
    datanets: Overlay<'a>,
    contributions: Overlay<'a>,
    /// Datanet of each contribution created in this batch, by id - state's count.
    new_contribution_datanet: Vec<u32>,
    models: Overlay<'a>,
    /// (base, lineage) of each model created in this batch.
    new_models: Vec<(Option<u32>, Vec<u32>)>,
    hashes: Map<[u8; 32], &'a str>,
    /// Inference ids of this batch, keyed by their fingerprints.
    inferences: HashTable<&'a str>,
    revoked: HashSet<u32, FixedState>,
    open_epoch: u64,
    open_entries: u64,
    total_fees: u64,
    entries: Vec<u32>,
    scratch: Vec<u32>,
    /// Name hashes of every attribution entry of the batch, fingerprints of every inference,
    /// and how far the validation has used them.
    name_hashes: Vec<NameHash>,
    fingerprints: Vec<u64>,
    hash_cursor: usize,
    fp_cursor: usize,
}

impl<'s, 'a> Validator<'s, 'a> {
    pub(crate) fn new(state: &'s Ledger, confirm: Confirm<'s>) -> Self {
        Self::after(state, None, confirm)
    }

    /// A validator of a batch that follows `prior` (a transaction block's earlier writes).
    pub(crate) fn after(
        state: &'s Ledger,
        prior: Option<&'s Pending>,
        confirm: Confirm<'s>,
    ) -> Self {
        let (open_epoch, open_entries, total_fees) = match prior {
            Some(p) => p.counters(state),
            None => (state.open_epoch(), state.open.entries() as u64, state.total_fees),
        };
        Validator {
            state,
            confirm,
            prior,
            accounts: Overlay::new(),
            new_accounts: Vec::new(),
            datanets: Overlay::new(),
            contributions: Overlay::new(),
            new_contribution_datanet: Vec::new(),
            models: Overlay::new(),
            new_models: Vec::new(),
            hashes: Map::default(),
            inferences: HashTable::new(),
            revoked: HashSet::default(),
            open_epoch,
            open_entries,
            total_fees,
            entries: Vec::new(),
            scratch: Vec::new(),
            name_hashes: Vec::new(),
            fingerprints: Vec::new(),
            hash_cursor: 0,
            fp_cursor: 0,
        }
    }

    pub(crate) fn plan(self, events: &'a [Event]) -> Result<Plan<'a>, Refusal> {
        let refs: Vec<&'a Event> = events.iter().collect();
        self.plan_refs(&refs)
    }

    pub(crate) fn plan_refs(mut self, events: &[&'a Event]) -> Result<Plan<'a>, Refusal> {
        if events.len() > MAX_BATCH_EVENTS {
            let e = events[MAX_BATCH_EVENTS];
            return Err(Refusal::new(
                MAX_BATCH_EVENTS,
                e.kind(),
                "batch",
                format!("{} events", events.len()),
                Rule::BatchTooLarge { max: MAX_BATCH_EVENTS },
            ));
        }
        // Hash every name and id the hot path will look up, so that each inference can ask for
        // the cache lines of the ones after it while it works (see `inference`).
        let mut inferences = 0;
        for e in events {
            if let Event::Inference(i) = e {
                inferences += 1;
                self.fingerprints.push(fingerprint(&i.inference));
                for a in i.attributions.iter().take(MAX_ENTRIES + 1) {
                    self.name_hashes.push(NameHash::of(&a.contribution));
                }
            }
        }
        self.entries.reserve(self.name_hashes.len());
        if inferences > 1 {
            self.inferences.reserve(inferences, |&s| fingerprint(s));
        }
        let mut ops = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            ops.push(self.event(index, event)?);
        }
        Ok(Plan { ops, new_accounts: self.new_accounts, entries: self.entries })
    }

    fn event(&mut self, index: usize, event: &'a Event) -> Result<Op, Refusal> {
        let kind = event.kind();
        let refuse = |field: &'static str, value: &dyn std::fmt::Display, rule: Rule| {
            Refusal::new(index, kind, field, value, rule)
        };
        let id = |field: &'static str, value: &str| {
            if is_valid_id(value) {
                Ok(())
            } else {
                Err(refuse(field, &value, Rule::BadId))
            }
        };
        match event {
            Event::Datanet(d) => {
                id("datanet", &d.datanet)?;
                if self.datanet(&d.datanet).is_some() {
                    return Err(refuse("datanet", &d.datanet, Rule::DuplicateDatanet));
                }
                id("owner", &d.owner)?;
                let owner = self.account(&d.owner);
                let new_id = (self.state.datanets.len()
                    + self.prior.map_or(0, |p| p.datanets.len())
                    + self.datanets.names.len()) as u32;
                self.datanets.names.insert(&d.datanet, new_id);
                Ok(Op::Datanet { owner })
            }
            Event::Contribution(c) => {
                id("contribution", &c.contribution)?;
                if self.contribution(&c.contribution).is_some() {
                    return Err(refuse(
                        "contribution",
                        &c.contribution,
                        Rule::DuplicateContribution,
                    ));
                }
                id("datanet", &c.datanet)?;
                let Some(datanet) = self.datanet(&c.datanet) else {
                    return Err(refuse("datanet", &c.datanet, Rule::UnknownDatanet));
                };
                id("contributor", &c.contributor)?;
                let Some(hash) = parse_content_hash(&c.content_hash) else {
                    return Err(refuse("content_hash", &c.content_hash, Rule::BadContentHash));
                };
                if let Some(earlier) = self.content_owner(&hash) {
                    let earlier = earlier.to_string();
                    return Err(refuse(
                        "content_hash",
                        &c.content_hash,
                        Rule::DuplicateContent { earlier },
                    ));
                }
                let contributor = self.account(&c.contributor);
                let new_id = (self.state.contribution_rows.len()
                    + self.prior.map_or(0, |p| p.contributions.len())
                    + self.new_contribution_datanet.len()) as u32;
                self.contributions.names.insert(&c.contribution, new_id);
                self.new_contribution_datanet.push(datanet);
                self.hashes.insert(hash, &c.contribution);
                Ok(Op::Contribution { datanet, contributor, hash })
            }
            Event::Model(m) => {
                id("model", &m.model)?;
                if self.model(&m.model).is_some() {
                    return Err(refuse("model", &m.model, Rule::DuplicateModel));
                }
                id("owner", &m.owner)?;
                let base = match &m.base_model {
                    None => None,
                    Some(b) => {
                        id("base_model", b)?;
                        let Some(base) = self.model(b) else {
                            return Err(refuse("base_model", b, Rule::UnknownBaseModel));
                        };
                        if self.model_base(base).is_some() {
                            return Err(refuse("base_model", b, Rule::AdapterOfAdapter));
                        }
                        Some(base)
                    }
                };
                let mut datanets = Vec::with_capacity(m.datanets.len());
                // Linear in the list's length: a model may list every datanet of the ledger.
                let mut seen = HashSet::<u32, FixedState>::default();
                for (k, d) in m.datanets.iter().enumerate() {
                    id("datanets", d).map_err(|r| r.at_entry(k))?;
                    let Some(dn) = self.datanet(d) else {
                        return Err(refuse("datanets", d, Rule::UnknownDatanet).at_entry(k));
                    };
                    if !seen.insert(dn) {
                        return Err(refuse("datanets", d, Rule::RepeatedDatanet).at_entry(k));
                    }
                    datanets.push(dn);
                }
                let mut lineage = datanets.clone();
                if let Some(base) = base {
                    lineage.extend_from_slice(&self.model_lineage(base));
                }
                lineage.sort_unstable();
                lineage.dedup();
                let owner = self.account(&m.owner);
                let new_id = (self.state.model_rows.len()
                    + self.prior.map_or(0, |p| p.models.len())
                    + self.new_models.len()) as u32;
                self.models.names.insert(&m.model, new_id);
                self.new_models.push((base, lineage.clone()));
                Ok(Op::Model { owner, base, datanets, lineage })
            }
            Event::Inference(inf) => self.inference(index, inf),
            Event::Revocation(r) => {
                id("contribution", &r.contribution)?;
                let Some(c) = self.contribution(&r.contribution) else {
                    return Err(refuse("contribution", &r.contribution, Rule::UnknownContribution));
                };
                let already = self.state.revoked.get(c as usize).is_some_and(|&v| v == 1)
                    || self.prior.is_some_and(|p| {
                        p.revoked.contains(&Ref::of_id(c, self.state.contribution_rows.len()))
                    })
                    || self.revoked.contains(&c);
                if already {
                    return Err(refuse("contribution", &r.contribution, Rule::AlreadyRevoked));
                }
                if r.reason.len() > MAX_REASON_BYTES {
                    return Err(refuse(
                        "reason",
                        &format!("{} bytes", r.reason.len()),
                        Rule::ReasonTooLong,
                    ));
                }
                self.revoked.insert(c);
                Ok(Op::Revocation { contribution: c })
            }
            Event::Policy(p) => {
                for (field, v) in [
                    ("protocol_bps", p.protocol_bps),
                    ("model_bps", p.model_bps),
                    ("base_bps", p.base_bps),
                ] {
                    if v < 0 {
                        return Err(refuse(field, &v, Rule::NegativeBps));
                    }
                }
                let sum = p.protocol_bps.saturating_add(p.model_bps).saturating_add(p.base_bps);
                if sum > BPS_SCALE as i64 {
                    return Err(refuse(
                        "protocol_bps+model_bps+base_bps",
                        &sum,
                        Rule::BpsSumTooLarge,
                    ));
                }
                Ok(Op::Policy(Bps {
                    protocol: p.protocol_bps as u16,
                    model: p.model_bps as u16,
                    base: p.base_bps as u16,
                }))
            }
            Event::Settlement(s) => {
                if s.epoch != self.open_epoch {
                    return Err(refuse(
                        "epoch",
                        &s.epoch,
                        Rule::NotOpenEpoch { open: self.open_epoch },
                    ));
                }
                self.open_epoch += 1;
                self.open_entries = 0;
                Ok(Op::Settlement)
            }
        }
    }

    /// The hot path: most events are inferences.
    fn inference(&mut self, index: usize, inf: &'a crate::event::Inference) -> Result<Op, Refusal> {
        let refuse = |field: &'static str, value: &dyn std::fmt::Display, rule: Rule| {
            Refusal::new(index, EventKind::Inference, field, value, rule)
        };
        if !is_valid_id(&inf.inference) {
            return Err(refuse("inference", &inf.inference, Rule::BadId));
        }
        let (fp, hashes) = self.next_hashes(inf.attributions.len());
        if self.state.inference_ids.contains(fp) {
            if let Some(rule) = self.past_inference(fp, &inf.inference) {
                return Err(refuse("inference", &inf.inference, rule));
            }
        }
        if self.prior.is_some_and(|p| p.inferences.contains(inf.inference.as_str())) {
            return Err(refuse("inference", &inf.inference, Rule::DuplicateInference));
        }
        if self.inferences.find(fp, |&s| s == inf.inference).is_some() {
            return Err(refuse("inference", &inf.inference, Rule::DuplicateInference));
        }
        let Some(model) = self.model(&inf.model) else {
            let rule = if is_valid_id(&inf.model) { Rule::UnknownModel } else { Rule::BadId };
            return Err(refuse("model", &inf.model, rule));
        };
        if !is_valid_id(&inf.consumer) {
            return Err(refuse("consumer", &inf.consumer, Rule::BadId));
        }
        if !(0..=MAX_FEE).contains(&inf.fee) {
            return Err(refuse("fee", &inf.fee, Rule::FeeOutOfRange));
        }
        let total_fees = self.total_fees + inf.fee as u64;
        if total_fees > i64::MAX as u64 {
            return Err(refuse("fee", &inf.fee, Rule::TotalOverflow));
        }
        let k = inf.attributions.len();
        if k > MAX_ENTRIES {
            return Err(refuse("attributions", &format!("{k} entries"), Rule::TooManyEntries));
        }
        if self.open_entries + k as u64 > MAX_OPEN_ENTRIES {
            return Err(refuse("attributions", &format!("{k} entries"), Rule::EpochFull));
        }
        let lineage = self.model_lineage(model);
        let start = self.entries.len();
        for (j, a) in inf.attributions.iter().enumerate() {
            let at = |r: Refusal| r.at_entry(j);
            if a.weight > WEIGHT_SCALE {
                let value = format!("{}:{}", a.contribution, a.weight);
                return Err(at(refuse("attributions", &value, Rule::BadWeight)));
            }
            let Some((c, datanet)) =
                self.contribution_and_datanet(&a.contribution, self.name_hashes[hashes + j])
            else {
                let rule = if is_valid_id(&a.contribution) {
                    Rule::UnknownContribution
                } else {
                    Rule::BadId
                };
                return Err(at(refuse("attributions", &a.contribution, rule)));
            };
            let inside = if lineage.len() <= 8 {
                lineage.contains(&datanet)
            } else {
                lineage.binary_search(&datanet).is_ok()
            };
            if !inside {
                return Err(at(refuse("attributions", &a.contribution, Rule::OutsideLineage)));
            }
            self.entries.push(c);
        }
        if let Some(j) = self.first_repeat(start) {
            let c = &inf.attributions[j].contribution;
            return Err(refuse("attributions", c, Rule::RepeatedContribution).at_entry(j));
        }
        self.inferences.insert_unique(fp, &inf.inference, |&s| fingerprint(s));
        self.total_fees = total_fees;
        self.open_entries += k as u64;
        Ok(Op::Inference { model, fingerprint: fp })
    }

    /// Settles a fingerprint hit on past inferences: the rule that refuses `id`, or `None` when
    /// every candidate is another id. Off the hot path: only duplicates and collisions come
    /// here, and each candidate costs the history one log read.
    #[cold]
    fn past_inference(&self, fp: u64, id: &str) -> Option<Rule> {
        let history = match self.confirm {
            Confirm::Conservative => return Some(Rule::DuplicateInference),
            Confirm::Trusted => return None,
            Confirm::Exact(history) => history,
        };
        for lsn in self.state.inference_ids.lsns_of(fp) {
            match history.is_inference(lsn, id) {
                Ok(false) => {}
                Ok(true) => return Some(Rule::DuplicateInference),
                Err(reason) => return Some(Rule::UnconfirmedInference { lsn, reason }),
            }
        }
        None
    }

    /// This inference's fingerprint and the position of its first name hash; asks for the
    /// table lines of the next `LOOKAHEAD` entries and the next inference's fingerprint slot, so
    /// their cache misses overlap with this inference's work.
    #[inline]
    fn next_hashes(&mut self, k: usize) -> (u64, usize) {
        let fp = self.fingerprints[self.fp_cursor];
        let hashes = self.hash_cursor;
        self.fp_cursor += 1;
        self.hash_cursor += k.min(MAX_ENTRIES + 1);
        if let Some(&next) = self.fingerprints.get(self.fp_cursor) {
            self.state.inference_ids.prefetch(next);
        }
        let ahead = self.name_hashes.len().min(self.hash_cursor + LOOKAHEAD);
        for &h in &self.name_hashes[self.hash_cursor.min(ahead)..ahead] {
            self.state.contributions.prefetch(h);
        }
        (fp, hashes)
    }

    /// Position (within the inference) of the first entry whose contribution appeared before.
    fn first_repeat(&mut self, start: usize) -> Option<usize> {
        let ids = &self.entries[start..];
        if ids.len() <= PAIRWISE_REPEAT_CHECK {
            return (1..ids.len()).find(|&j| ids[..j].contains(&ids[j]));
        }
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend_from_slice(ids);
        scratch.sort_unstable();
        if scratch.windows(2).all(|w| w[0] != w[1]) {
            return None;
        }
        let mut seen = HashSet::<u32, FixedState>::default();
        ids.iter().position(|c| !seen.insert(*c))
    }

    fn account(&mut self, name: &'a str) -> u32 {
        if let Some(a) = self.state.accounts.get(name).or_else(|| self.accounts.get(name)) {
            return a;
        }
        let a = (self.state.accounts.len() + self.new_accounts.len()) as u32;
        self.accounts.names.insert(name, a);
        self.new_accounts.push(name);
        a
    }

    fn datanet(&self, name: &str) -> Option<u32> {
        self.state
            .datanets
            .get(name)
            .or_else(|| self.prior_id(|p| &p.datanets, name, self.state.datanets.len()))
            .or_else(|| self.datanets.get(name))
    }

    /// The id, in this validation's numbering, of a name the prior block created.
    #[inline]
    fn prior_id(
        &self,
        names: impl Fn(&Pending) -> &HashMap<Text, u32, FixedState>,
        name: &str,
        ledger_rows: usize,
    ) -> Option<u32> {
        let p = self.prior?;
        names(p).get(name).map(|&k| (ledger_rows + k as usize) as u32)
    }

    fn prior_count(&self, names: impl Fn(&Pending) -> usize) -> usize {
        self.prior.map_or(0, names)
    }

    #[inline]
    fn contribution(&self, name: &str) -> Option<u32> {
        let rows = self.state.contribution_rows.len();
        self.state
            .contributions
            .get(name)
            .or_else(|| self.prior_id(|p| &p.contributions, name, rows))
            .or_else(|| self.contributions.get(name))
    }

    /// The hot lookup: the datanet comes from the interner's slot, not from the row.
    #[inline]
    fn contribution_and_datanet(&self, name: &str, hash: NameHash) -> Option<(u32, u32)> {
        if let Some(found) = self.state.contributions.get_hashed(name, hash) {
            return Some(found);
        }
        let rows = self.state.contribution_rows.len();
        if let Some(c) = self.prior_id(|p| &p.contributions, name, rows) {
            let p = self.prior.expect("found in it");
            let datanet = p.contribution_datanets[c as usize - rows].id(self.state.datanets.len());
            return Some((c, datanet));
        }
        let c = self.contributions.get(name)?;
        let before = rows + self.prior_count(|p| p.contributions.len());
        Some((c, self.new_contribution_datanet[c as usize - before]))
    }

    fn content_owner(&self, hash: &[u8; 32]) -> Option<&str> {
        match self.state.content.get(hash) {
            Some(&c) => Some(self.state.contributions.name(c)),
            None => self
                .prior
                .and_then(|p| p.hashes.get(hash).map(Text::as_str))
                .or_else(|| self.hashes.get(hash).copied()),
        }
    }

    fn model(&self, name: &str) -> Option<u32> {
        let rows = self.state.model_rows.len();
        self.state
            .models
            .get(name)
            .or_else(|| self.prior_id(|p| &p.models, name, rows))
            .or_else(|| self.models.get(name))
    }

    /// Where model `m` was created: in the ledger, in the prior block (its position there),
    /// or in this batch (its position among the batch's models).
    fn model_origin(&self, m: u32) -> Origin {
        let rows = self.state.model_rows.len();
        let prior = self.prior_count(|p| p.models.len());
        match (m as usize).checked_sub(rows) {
            None => Origin::Ledger(m as usize),
            Some(k) if k < prior => Origin::Prior(k),
            Some(k) => Origin::Batch(k - prior),
        }
    }

    fn model_base(&self, m: u32) -> Option<u32> {
        match self.model_origin(m) {
            Origin::Ledger(row) => self.state.model_rows[row].base,
            Origin::Prior(k) => {
                let p = self.prior.expect("a prior model");
                p.model_rows[k].base.map(|b| b.id(self.state.model_rows.len()))
            }
            Origin::Batch(k) => self.new_models[k].0,
        }
    }

    /// Borrowed from the state (the common case) or copied from a model of the prior block or
    /// of this batch, so that it does not hold a borrow of the validator.
    fn model_lineage(&self, m: u32) -> Cow<'s, [u32]> {
        let state: &'s Ledger = self.state;
        match self.model_origin(m) {
            Origin::Ledger(row) => Cow::Borrowed(&state.model_rows[row].lineage),
            Origin::Prior(k) => {
                let p = self.prior.expect("a prior model");
                let rows = state.datanets.len();
                Cow::Owned(p.model_rows[k].lineage.iter().map(|d| d.id(rows)).collect())
            }
            Origin::Batch(k) => Cow::Owned(self.new_models[k].1.clone()),
        }
    }
}

/// Where a name was created (see `Validator::model_origin`).
enum Origin {
    Ledger(usize),
    Prior(usize),
    Batch(usize),
}

impl Ledger {
    /// Checks a batch that follows a transaction block's earlier writes (`pending`) against
    /// the current state, without changing the state; when it is accepted, adds it to
    /// `pending`. Refusal indexes count from the batch's first event. Without a history, an
    /// inference whose id's fingerprint was seen before is refused (see `InferenceHistory`).
    pub fn validate_after(&self, pending: &mut Pending, events: &[Event]) -> Result<(), Refusal> {
        self.validate_pending(pending, events, Confirm::Conservative)
    }

    /// As `validate_after`, settling fingerprint hits exactly through `history`.
    pub fn validate_after_with_history(
        &self,
        pending: &mut Pending,
        events: &[Event],
        history: &dyn InferenceHistory,
    ) -> Result<(), Refusal> {
        self.validate_pending(pending, events, Confirm::Exact(history))
    }

    fn validate_pending(
        &self,
        pending: &mut Pending,
        events: &[Event],
        confirm: Confirm<'_>,
    ) -> Result<(), Refusal> {
        let plan = Validator::after(self, Some(pending), confirm).plan(events)?;
        pending.absorb(self, events, &plan);
        Ok(())
    }
}
