//! The ledger's invariants (ledger.md "Invariants"), checked on demand by `tally verify`:
//! every total follows from the rewards, every closed epoch's payouts add up to its fees and
//! hash to its root, and the state is internally consistent. Reads only; never repairs.

use crate::merkle;
use crate::state::Ledger;

impl Ledger {
    /// Checks every invariant; the error names the first one that fails.
    pub fn audit(&self) -> Result<(), String> {
        // The image decoder checks the state's internal consistency (ids in range, each open
        // entry's reward equal to the pool division, epoch and fee totals, balances), so a
        // round trip through it is the consistency check.
        let image = self.encode_image();
        let back = Ledger::decode_image(&image).map_err(|e| format!("inconsistent state: {e}"))?;
        if back.digest() != self.digest() {
            return Err("the state does not survive an image round trip".into());
        }
        let mut settled = vec![0u64; self.accounts.len()];
        for e in &self.epochs {
            let Some(c) = &e.closed else { continue };
            let paid: u64 = c.payouts.iter().map(|p| p.1).sum();
            let rewarded: u64 = c.rewards.iter().map(|r| r.2).sum();
            if paid != e.fees || rewarded != e.fees {
                return Err(format!(
                    "epoch {}: fees {} but payouts {paid} and rewards {rewarded}",
                    e.epoch, e.fees
                ));
            }
            let leaves: Vec<(&str, u64)> =
                c.payouts.iter().map(|&(a, v)| (self.accounts.name(a), v)).collect();
            if leaves.windows(2).any(|w| w[0].0.as_bytes() >= w[1].0.as_bytes()) {
                return Err(format!("epoch {}: payouts are not sorted by account", e.epoch));
            }
            if merkle::payouts_root(&leaves) != c.payouts_root {
                return Err(format!("epoch {}: payouts_root does not match its payouts", e.epoch));
            }
            for &(a, v) in &c.payouts {
                settled[a as usize] += v;
            }
        }
        if settled != self.settled {
            return Err("settled balances differ from the sum of closed-epoch payouts".into());
        }
        let open = self.epochs.last().expect("open epoch");
        let credited: u64 = self.open.rewards.iter().flatten().sum();
        if credited != open.fees {
            return Err(format!(
                "open epoch {}: fees {} but credits {credited}",
                open.epoch, open.fees
            ));
        }
        Ok(())
    }
}
