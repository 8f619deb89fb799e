//! Synthetic ledgers for `tally demo`, benchmarks and tests. Deterministic: a seed gives the
//! same events forever (the random generator is defined here, not borrowed from a crate whose
//! streams may change between versions). Produces only valid events; never touches I/O.
//!
//! Shape (`Shape::demo`): tens of datanets; thousands of contributors whose contribution counts
//! follow a Zipf law; base models and adapters with lineage; inferences whose models and
//! attributed contributions are Zipf-skewed and always inside the model's lineage; a policy
//! change; revocations inside open epochs; several closed epochs and one open.

mod rng;

use tally_engine::{
    Contribution, Datanet, Event, Model, Policy, Revocation, ScoredInference, Settlement, Text,
};

pub use rng::{Rng, Zipf};

/// The knobs of a synthetic ledger.
#[derive(Debug, Clone)]
pub struct Shape {
    pub seed: u64,
    pub inferences: u64,
    pub datanets: usize,
    pub contributors: usize,
    /// Most contributions of one contributor (counts are Zipf over 1..=this).
    pub max_contributions_per_contributor: usize,
    pub base_models: usize,
    pub adapters: usize,
    pub consumers: usize,
    /// Attribution entries per inference: exactly this many when `fixed_entries`, else uniform
    /// in 1..=2*this-1 (same mean).
    pub entries: usize,
    pub fixed_entries: bool,
    /// Closed epochs; the last epoch stays open.
    pub closed_epochs: u64,
    pub revocations: u64,
    /// Inferences per batch.
    pub batch: usize,
}

impl Shape {
    pub const DEFAULT_SEED: u64 = 20_261_125;

    /// The `tally demo` ledger.
    pub fn demo(seed: u64, inferences: u64) -> Shape {
        Shape {
            seed,
            inferences,
            datanets: 40,
            contributors: 5_000,
            max_contributions_per_contributor: 200,
            base_models: 12,
            adapters: 36,
            consumers: 300,
            entries: 8,
            fixed_entries: false,
            closed_epochs: 3,
            revocations: 40,
            batch: 8192,
        }
    }

    /// The benchmark ledger: exactly 8 entries per inference.
    pub fn bench(seed: u64, inferences: u64) -> Shape {
        Shape { fixed_entries: true, ..Shape::demo(seed, inferences) }
    }
}

struct ModelInfo {
    name: Text,
    /// Contributions in the lineage, most popular first.
    pool: Vec<u32>,
    zipf: Zipf,
}

/// Generates a ledger batch by batch. The first batch holds the universe (datanets,
/// contributions, models); later batches hold inferences, with the policy change, revocations
/// and settlements at fixed fractions of the inference stream.
pub struct Generator {
    shape: Shape,
    rng: Rng,
    models: Vec<ModelInfo>,
    model_zipf: Zipf,
    contribution_names: Vec<Text>,
    universe: Option<Vec<Event>>,
    emitted: u64,
    epoch: u64,
    revoked: Vec<bool>,
    revocations_done: u64,
    policy_done: bool,
}

impl Generator {
    pub fn new(shape: Shape) -> Generator {
        assert!(shape.datanets > 0 && shape.base_models > 0 && shape.contributors > 0);
        assert!(shape.entries > 0 && shape.batch > 0);
        let mut rng = Rng::new(shape.seed);
        let mut universe = Vec::new();
        let orgs = 10;
        for d in 0..shape.datanets {
            universe.push(Event::Datanet(Datanet {
                datanet: datanet_name(d),
                owner: format!("org-{:02}", d % orgs).into(),
            }));
        }
        // Contributions: Zipf counts per contributor, datanets Zipf-skewed too.
        let count_zipf = Zipf::new(shape.max_contributions_per_contributor, 1.1);
        let datanet_zipf = Zipf::new(shape.datanets, 0.8);
        let mut contribution_names = Vec::new();
        let mut by_datanet: Vec<Vec<u32>> = vec![Vec::new(); shape.datanets];
        for u in 0..shape.contributors {
            let count = count_zipf.sample(&mut rng) + 1;
            for _ in 0..count {
                let id = contribution_names.len() as u32;
                let d = datanet_zipf.sample(&mut rng);
                let name: Text = format!("c-{id:07}").into();
                universe.push(Event::Contribution(Contribution {
                    contribution: name.clone(),
                    datanet: datanet_name(d),
                    contributor: format!("user-{u:05}").into(),
                    content_hash: content_hash(shape.seed, id).into(),
                }));
                contribution_names.push(name);
                by_datanet[d].push(id);
            }
        }
        // Base models cover 2-5 datanets; adapters add 0-2 of their own.
        let mut models = Vec::new();
        let mut lineages: Vec<Vec<usize>> = Vec::new();
        for b in 0..shape.base_models {
            let mut own = Vec::new();
            for _ in 0..2 + rng.below(4) {
                let d = datanet_zipf.sample(&mut rng);
                if !own.contains(&d) {
                    own.push(d);
                }
            }
            let name: Text = format!("base-{b:02}").into();
            universe.push(Event::Model(Model {
                model: name.clone(),
                owner: format!("org-{:02}", b % orgs).into(),
                base_model: None,
                datanets: own.iter().map(|&d| datanet_name(d)).collect(),
            }));
            lineages.push(own);
            models.push(name);
        }
        for a in 0..shape.adapters {
            let base = rng.below(shape.base_models as u64) as usize;
            let mut own = Vec::new();
            for _ in 0..rng.below(3) {
                let d = rng.below(shape.datanets as u64) as usize;
                if !own.contains(&d) && !lineages[base].contains(&d) {
                    own.push(d);
                }
            }
            let name: Text = format!("adapter-{a:02}").into();
            universe.push(Event::Model(Model {
                model: name.clone(),
                owner: format!("dev-{:03}", a).into(),
                base_model: Some(models[base].clone()),
                datanets: own.iter().map(|&d| datanet_name(d)).collect(),
            }));
            let mut lineage = own;
            lineage.extend_from_slice(&lineages[base]);
            lineages.push(lineage);
            models.push(name);
        }
        let models: Vec<ModelInfo> = models
            .into_iter()
            .zip(lineages)
            .map(|(name, lineage)| {
                let mut pool: Vec<u32> =
                    lineage.iter().flat_map(|&d| by_datanet[d].iter().copied()).collect();
                // A fixed, seed-dependent popularity order.
                rng.shuffle(&mut pool);
                let zipf = Zipf::new(pool.len().max(1), 1.05);
                ModelInfo { name, pool, zipf }
            })
            .collect();
        let model_zipf = Zipf::new(models.len(), 1.0);
        let revoked = vec![false; contribution_names.len()];
        Generator {
            shape,
            rng,
            models,
            model_zipf,
            contribution_names,
            universe: Some(universe),
            emitted: 0,
            epoch: 1,
            revoked,
            revocations_done: 0,
            policy_done: false,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Contribution names in id order (the i-th contribution event's id).
    pub fn contribution_names(&self) -> &[Text] {
        &self.contribution_names
    }

    /// Events in the first batch (datanets, contributions, models).
    pub fn universe_len(&self) -> usize {
        self.universe.as_ref().map_or(0, Vec::len)
    }

    fn inference(&mut self) -> Event {
        let n = self.emitted;
        let m = &self.models[self.model_zipf.sample(&mut self.rng)];
        let k = if self.shape.fixed_entries {
            self.shape.entries
        } else {
            1 + self.rng.below(2 * self.shape.entries as u64 - 1) as usize
        };
        let k = k.min(m.pool.len());
        let mut chosen: Vec<u32> = Vec::with_capacity(k);
        while chosen.len() < k {
            let c = m.pool[m.zipf.sample(&mut self.rng)];
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        let scores = chosen
            .iter()
            .map(|&c| {
                let score = (1 + self.rng.below(1_000_000)) as f64 / 1_000_000.0;
                (self.contribution_names[c as usize].clone(), score)
            })
            .collect();
        // Fees are log-uniform between 1,000 and about 1,000,000 units.
        let fee = 1_000i64 << self.rng.below(10);
        let fee = fee + self.rng.below(fee as u64) as i64;
        ScoredInference {
            inference: format!("inf-{n:010}").into(),
            model: m.name.clone(),
            consumer: format!("app-{:03}", self.rng.below(self.shape.consumers as u64)).into(),
            fee,
            scores,
        }
        .into_event(0)
        .expect("generated scores are valid")
    }

    /// Revokes a popular-ish contribution that is not revoked yet.
    fn revocation(&mut self) -> Option<Event> {
        for _ in 0..64 {
            let m = &self.models[self.model_zipf.sample(&mut self.rng)];
            let c = m.pool[m.zipf.sample(&mut self.rng) % m.pool.len().min(200)] as usize;
            if !self.revoked[c] {
                self.revoked[c] = true;
                let reason = ["spam", "stolen data", "takedown request"][c % 3];
                return Some(Event::Revocation(Revocation {
                    contribution: self.contribution_names[c].clone(),
                    reason: reason.into(),
                }));
            }
        }
        None
    }
}

impl Iterator for Generator {
    type Item = Vec<Event>;

    fn next(&mut self) -> Option<Vec<Event>> {
        if let Some(universe) = self.universe.take() {
            return Some(universe);
        }
        let total = self.shape.inferences;
        if self.emitted >= total {
            return None;
        }
        let epochs = self.shape.closed_epochs + 1;
        let mut batch = Vec::with_capacity(self.shape.batch + 2);
        let end = (self.emitted + self.shape.batch as u64).min(total);
        while self.emitted < end {
            batch.push(self.inference());
            self.emitted += 1;
            let n = self.emitted;
            // The policy changes 40% of the way in.
            if !self.policy_done && n * 5 >= total * 2 {
                self.policy_done = true;
                batch.push(Event::Policy(Policy {
                    protocol_bps: 500,
                    model_bps: 2500,
                    base_bps: 1500,
                }));
            }
            // Revocations are spread evenly, so most land in an epoch that has inferences
            // naming them, and some in the last, open epoch.
            let due = n * (self.shape.revocations + 1) / total.max(1);
            if self.revocations_done < self.shape.revocations.min(due) {
                self.revocations_done += 1;
                batch.extend(self.revocation());
            }
            if self.epoch <= self.shape.closed_epochs && n >= total * self.epoch / epochs {
                batch.push(Event::Settlement(Settlement { epoch: self.epoch }));
                self.epoch += 1;
            }
        }
        Some(batch)
    }
}

fn datanet_name(d: usize) -> Text {
    format!("dn-{d:03}").into()
}

/// A unique 64-hex content hash: the contribution id mixed with the seed, with the id itself in
/// the low bits so that two contributions never share content.
fn content_hash(seed: u64, id: u32) -> String {
    let mut r = Rng::new(seed ^ (u64::from(id) << 20));
    format!("{:016x}{:016x}{:016x}{:016x}", r.next_u64(), r.next_u64(), r.next_u64(), u64::from(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_engine::{Ledger, Role};

    #[test]
    fn demo_ledger_is_valid_skewed_and_complete() {
        let mut ledger = Ledger::new();
        let mut events = 0;
        for (ts, batch) in Generator::new(Shape::demo(Shape::DEFAULT_SEED, 20_000)).enumerate() {
            events += batch.len();
            ledger.apply(&batch, ts as i64).expect("generated batches are valid");
        }
        assert_eq!(ledger.last_lsn() as usize, events);
        assert_eq!(ledger.inference_count(), 20_000);
        let epochs: Vec<_> = ledger.epochs().collect();
        assert_eq!(epochs.len(), 4);
        assert!(epochs[..3].iter().all(|e| !e.open && e.inferences > 0) && epochs[3].open);
        assert_eq!(ledger.revocations().count(), 40);
        assert_eq!(ledger.policies().count(), 1);
        assert!(ledger.models().any(|m| m.base_model.is_some() && m.inferences > 0));
        // Some revocation re-settled inferences of the open epoch.
        let open = ledger.open_epoch();
        let revoked_in_open = ledger.revocations().filter(|r| r.lsn > epochs[3].opened_lsn).count();
        assert!(revoked_in_open > 0, "no revocation in the open epoch");
        assert!(ledger.open_entries().any(|e| e.reward == 0));
        // Skew: the most attributed contribution is named far more than the median one.
        let mut counts: Vec<u64> = ledger.contributions().map(|c| c.inferences).collect();
        counts.sort_unstable();
        assert!(counts[counts.len() - 1] > 50 * counts[counts.len() / 2].max(1));
        assert!(ledger.rewards().any(|r| r.epoch == open && r.role == Role::BaseModel));
    }

    #[test]
    fn same_seed_same_ledger() {
        let digest = |seed| {
            let mut ledger = Ledger::new();
            for batch in Generator::new(Shape::demo(seed, 3_000)) {
                ledger.apply(&batch, 1).unwrap();
            }
            ledger.digest()
        };
        assert_eq!(digest(1), digest(1));
        assert_ne!(digest(1), digest(2));
    }
}
