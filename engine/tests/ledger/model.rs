//! An independent, deliberately plain model of ledger.md and settlement.md: strings and maps,
//! no interning, no incremental updates. Every epoch's rewards are recomputed from scratch
//! from the accepted events, straight from the spec's formulas (in u128, to be sure nothing
//! wraps), and compared with the engine.

// Written the way the spec reads, not the way clippy would shorten it.
#![allow(clippy::manual_checked_ops)]

use std::collections::{BTreeMap, HashMap};

use tally_engine::{Event, Role};

#[derive(Clone)]
struct Inf {
    epoch: u64,
    fee: u128,
    bps: (u128, u128, u128),
    model_owner: String,
    base_owner: Option<String>,
    entries: Vec<(String, u128)>,
}

#[derive(Default)]
pub struct Oracle {
    contributor: HashMap<String, String>,
    datanet_of: HashMap<String, String>,
    model_owner: HashMap<String, String>,
    model_base: HashMap<String, Option<String>>,
    revoked_at: HashMap<String, u64>,
    bps: Option<(u128, u128, u128)>,
    inferences: Vec<Inf>,
    /// Closed epochs: epoch -> lsn of the settlement.
    closed: BTreeMap<u64, u64>,
    lsn: u64,
}

/// (epoch, account, role) -> amount.
pub type Rewards = BTreeMap<(u64, String, &'static str), u128>;

impl Oracle {
    pub fn open_epoch(&self) -> u64 {
        self.closed.len() as u64 + 1
    }

    /// Records an event the engine accepted.
    pub fn accept(&mut self, event: &Event) {
        self.lsn += 1;
        match event {
            Event::Datanet(_) => {}
            Event::Contribution(c) => {
                self.contributor.insert(c.contribution.to_string(), c.contributor.to_string());
                self.datanet_of.insert(c.contribution.to_string(), c.datanet.to_string());
            }
            Event::Model(m) => {
                self.model_owner.insert(m.model.to_string(), m.owner.to_string());
                self.model_base
                    .insert(m.model.to_string(), m.base_model.as_ref().map(|b| b.to_string()));
            }
            Event::Inference(i) => {
                let base = self.model_base[i.model.as_str()].clone();
                self.inferences.push(Inf {
                    epoch: self.open_epoch(),
                    fee: i.fee as u128,
                    bps: self.bps.unwrap_or((1000, 2000, 1000)),
                    model_owner: self.model_owner[i.model.as_str()].clone(),
                    base_owner: base.map(|b| self.model_owner[&b].clone()),
                    entries: i
                        .attributions
                        .iter()
                        .map(|a| (a.contribution.to_string(), a.weight as u128))
                        .collect(),
                });
            }
            Event::Revocation(r) => {
                self.revoked_at.insert(r.contribution.to_string(), self.lsn);
            }
            Event::Policy(p) => {
                self.bps = Some((p.protocol_bps as u128, p.model_bps as u128, p.base_bps as u128));
            }
            Event::Settlement(s) => {
                self.closed.insert(s.epoch, self.lsn);
            }
        }
    }

    /// Rewards of every inference, each checked for conservation, keyed by epoch/account/role.
    pub fn rewards(&self) -> Rewards {
        let mut out = Rewards::new();
        let mut add = |epoch: u64, account: &str, role: Role, v: u128| {
            if v > 0 {
                *out.entry((epoch, account.to_string(), role.as_str())).or_default() += v;
            }
        };
        for inf in &self.inferences {
            let cutoff = self.closed.get(&inf.epoch).copied().unwrap_or(u64::MAX);
            let f = inf.fee;
            let (p, m, b) = inf.bps;
            let protocol = f * p / 10000;
            let (model_part, base_part) = match inf.base_owner {
                Some(_) => (f * m / 10000, f * b / 10000),
                None => (f * (m + b) / 10000, 0),
            };
            let pool = f - protocol - model_part - base_part;
            add(inf.epoch, "$protocol", Role::Protocol, protocol);
            add(inf.epoch, &inf.model_owner, Role::Model, model_part);
            if let Some(base) = &inf.base_owner {
                add(inf.epoch, base, Role::BaseModel, base_part);
            }
            let valid: Vec<bool> = inf
                .entries
                .iter()
                .map(|(c, w)| *w > 0 && self.revoked_at.get(c).is_none_or(|&at| at > cutoff))
                .collect();
            let total: u128 =
                inf.entries.iter().zip(&valid).filter(|(_, v)| **v).map(|(e, _)| e.1).sum();
            let mut paid = protocol + model_part + base_part;
            if total == 0 {
                add(inf.epoch, "$protocol", Role::Protocol, pool);
                paid += pool;
            } else {
                let mut best: Option<usize> = None;
                let mut shares = vec![0u128; inf.entries.len()];
                for (i, (_, w)) in inf.entries.iter().enumerate() {
                    if valid[i] {
                        shares[i] = pool * w / total;
                        if best.is_none() || *w > inf.entries[best.unwrap()].1 {
                            best = Some(i);
                        }
                    }
                }
                let dust = pool - shares.iter().sum::<u128>();
                shares[best.unwrap()] += dust;
                for (i, (c, _)) in inf.entries.iter().enumerate() {
                    add(inf.epoch, &self.contributor[c], Role::Contributor, shares[i]);
                    paid += shares[i];
                }
            }
            assert_eq!(paid, f, "oracle: inference does not conserve its fee");
        }
        out
    }

    /// Contributor earnings per contribution and per datanet, over all epochs.
    pub fn earned(&self) -> (BTreeMap<String, u128>, BTreeMap<String, u128>) {
        let mut by_contribution = BTreeMap::new();
        let mut by_datanet = BTreeMap::new();
        for inf in &self.inferences {
            let cutoff = self.closed.get(&inf.epoch).copied().unwrap_or(u64::MAX);
            let f = inf.fee;
            let (p, m, b) = inf.bps;
            let fixed = f * p / 10000
                + match inf.base_owner {
                    Some(_) => f * m / 10000 + f * b / 10000,
                    None => f * (m + b) / 10000,
                };
            let pool = f - fixed;
            let valid =
                |c: &str, w: u128| w > 0 && self.revoked_at.get(c).is_none_or(|&at| at > cutoff);
            let total: u128 = inf.entries.iter().filter(|(c, w)| valid(c, *w)).map(|e| e.1).sum();
            if total == 0 {
                continue;
            }
            let mut shares: Vec<u128> = inf
                .entries
                .iter()
                .map(|(c, w)| if valid(c, *w) { pool * w / total } else { 0 })
                .collect();
            let best = (0..inf.entries.len())
                .filter(|&i| valid(&inf.entries[i].0, inf.entries[i].1))
                .fold(None::<usize>, |b, i| match b {
                    Some(b) if inf.entries[b].1 >= inf.entries[i].1 => Some(b),
                    _ => Some(i),
                })
                .unwrap();
            shares[best] += pool - shares.iter().sum::<u128>();
            for (i, (c, _)) in inf.entries.iter().enumerate() {
                *by_contribution.entry(c.clone()).or_insert(0) += shares[i];
                *by_datanet.entry(self.datanet_of[c].clone()).or_insert(0) += shares[i];
            }
        }
        (by_contribution, by_datanet)
    }

    pub fn closed_epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.closed.keys().copied()
    }
}
