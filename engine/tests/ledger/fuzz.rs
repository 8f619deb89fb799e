//! Fuzz target on stable Rust (proptest-driven): the snapshot image decoder with damaged
//! archives whose header and checksum were fixed up, so that the damage reaches the decoder's
//! own checks rather than stopping at the checksum. Whatever decodes must be a state that
//! later code can use without panicking. `TALLY_FUZZ_CASES` sets the cases (tests/fuzz.sh).

use std::sync::OnceLock;

use proptest::prelude::*;
use tally_engine::Ledger;

use super::image::random_ledger;
use super::{inf, settle};

fn fuzz(default: u32) -> ProptestConfig {
    let cases = std::env::var("TALLY_FUZZ_CASES").ok().and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: cases.unwrap_or(default),
        failure_persistence: None,
        ..Default::default()
    }
}

/// An image of a ledger with every kind of row, made once.
fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_ledger(17, 60).ledger.encode_image())
}

/// Rewrites the header's length and xxh3 so that `bytes` passes the header checks.
fn fix_header(bytes: &mut [u8]) {
    let archive_len = (bytes.len() - 32) as u64;
    bytes[16..24].copy_from_slice(&archive_len.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[32..]);
    bytes[24..32].copy_from_slice(&sum.to_le_bytes());
}

proptest! {
    #![proptest_config(fuzz(300))]
    #[test]
    fn fuzz_image_decoder(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = image().to_vec();
        for (at, value) in flips {
            let at = 32 + at.index(bytes.len() - 32);
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(32 + cut.index(bytes.len() - 32));
        }
        fix_header(&mut bytes);
        if let Ok(mut ledger) = Ledger::decode_image(&bytes) {
            // Whatever loads can be read, audited and appended to.
            let _ = ledger.audit();
            let _ = ledger.digest();
            let _ = ledger.rewards().count() + ledger.balances().count();
            let epoch = ledger.open_epoch();
            let _ = ledger.apply(&[inf("fuzz-1", "b0", 1000, &[]), settle(epoch)], i64::MAX);
        }
    }
}
