//! A deterministic SHA-256 digest of the whole state, so that two states (replicas, replay
//! versus live, CPU versus GPU) are compared cheaply. It covers every number a read table can
//! show, plus each past inference id's fingerprint and lsn, and nothing that depends on
//! allocation or hashing (capacities, probe order, chains).

use sha2::{Digest, Sha256};

use crate::state::Ledger;

struct Feed(Sha256);

impl Feed {
    fn u64(&mut self, v: u64) {
        self.0.update(v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }

    fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        for x in v {
            self.0.update(x.to_le_bytes());
        }
    }

    fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.0.update(x.to_le_bytes());
        }
    }
}

impl Ledger {
    pub fn digest(&self) -> [u8; 32] {
        let mut f = Feed(Sha256::new());
        f.u64(self.last_lsn);
        f.u64(self.last_ts as u64);
        f.u64(self.total_fees);
        f.u64(self.accounts.len() as u64);
        for a in 0..self.accounts.len() as u32 {
            f.str(self.accounts.name(a));
            f.u64(self.settled[a as usize]);
            for r in self.open.rewards[a as usize] {
                f.u64(r);
            }
        }
        f.u64(self.datanet_rows.len() as u64);
        for (id, r) in self.datanet_rows.iter().enumerate() {
            f.str(self.datanets.name(id as u32));
            for v in [r.owner as u64, r.lsn, r.contributions, r.attributions, r.earned] {
                f.u64(v);
            }
        }
        f.u64(self.contribution_rows.len() as u64);
        for (id, (r, m)) in self.contribution_rows.iter().zip(&self.contribution_meta).enumerate() {
            f.str(self.contributions.name(id as u32));
            for v in [
                r.datanet as u64,
                r.contributor as u64,
                m.lsn,
                m.revoked_lsn,
                r.inferences,
                r.earned,
            ] {
                f.u64(v);
            }
            f.0.update(m.content_hash);
            f.u64(u64::from(self.revoked[id]));
        }
        f.u64(self.model_rows.len() as u64);
        for (id, r) in self.model_rows.iter().enumerate() {
            f.str(self.models.name(id as u32));
            f.u64(r.owner as u64);
            f.u64(r.base.map_or(u64::MAX, u64::from));
            f.u32s(&r.datanets);
            f.u32s(&r.lineage);
            for v in [r.lsn, r.inferences, r.fees] {
                f.u64(v);
            }
        }
        // The past inference ids as sorted (fingerprint, lsn) pairs: the lsns are what a
        // fingerprint hit is confirmed against, so a state that would confirm differently
        // digests differently.
        let mut ids: Vec<(u64, u64)> = self.inference_ids.iter().collect();
        ids.sort_unstable();
        let ids: Vec<u64> = ids.into_iter().flat_map(|(fp, lsn)| [fp, lsn]).collect();
        f.u64s(&ids);
        for b in [self.bps.protocol, self.bps.model, self.bps.base] {
            f.u64(u64::from(b));
        }
        f.u64(self.policies.len() as u64);
        for p in &self.policies {
            for v in [p.lsn, p.bps.protocol.into(), p.bps.model.into(), p.bps.base.into()] {
                f.u64(v);
            }
        }
        f.u64(self.revocations.len() as u64);
        for r in &self.revocations {
            f.u64(r.contribution as u64);
            f.str(&r.reason);
            f.u64(r.lsn);
            f.u64(r.ts as u64);
        }
        f.u64(self.epochs.len() as u64);
        for e in &self.epochs {
            for v in [e.epoch, e.opened_lsn, e.inferences, e.fees] {
                f.u64(v);
            }
            if let Some(c) = &e.closed {
                f.u64(c.lsn);
                f.u64(c.ts as u64);
                f.0.update(c.payouts_root);
                f.u64(c.payouts.len() as u64);
                for &(a, v) in &c.payouts {
                    f.u64(a as u64);
                    f.u64(v);
                }
                f.u64(c.rewards.len() as u64);
                for &(a, role, v) in &c.rewards {
                    f.u64(a as u64);
                    f.u64(role as u64);
                    f.u64(v);
                }
            }
        }
        let o = &self.open;
        f.u64s(&o.inf_lsn);
        f.u64s(&o.inf_pool);
        f.u64s(&o.inf_fee);
        f.u32s(&o.inf_model);
        f.u32s(&o.inf_start);
        f.u32s(&o.e_contribution);
        f.u32s(&o.e_weight);
        f.u64s(&o.e_reward);
        f.0.finalize().into()
    }
}
