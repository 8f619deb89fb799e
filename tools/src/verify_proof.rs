//! `tally verify-proof [FILE|-] [--key HEX]`: checks one proof document (the `proof` column of
//! `inclusion_proof`, `consistency_proof`, `payout_proof`, `checkpoints`; the format is
//! docs/proofs.md's) and says `valid` or `invalid: why`. The check is the engine's
//! (`proof_check`), with Ed25519 from ring; it reads no data directory and talks to no server,
//! so it is as independent of the node as the proof itself.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use tally_engine::proof_check::{check_text, Signatures};

/// `tally verify-proof`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// The proof document (JSON); `-` or none: standard input.
    pub file: Option<PathBuf>,
    /// The node's public key (64 hex digits) a checkpoint must be signed by. Without it, a
    /// checkpoint's signature is checked against the key it carries: that proves the document
    /// is intact, not who signed it.
    #[arg(long)]
    pub key: Option<String>,
}

/// Exit codes: 0 valid, 1 invalid, 2 the document or key could not be read.
pub fn run(args: Args) -> super::Result<ExitCode> {
    let text = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
    };
    let trusted_key = match &args.key {
        None => None,
        Some(hex) => Some(public_key(hex).ok_or("--key is 64 hex digits (an Ed25519 public key)")?),
    };
    let verify = |key: &[u8; 32], message: &[u8], signature: &[u8; 64]| {
        tally_storage::checkpoints::ed25519_verify(key, message, signature)
    };
    match check_text(&text, &Signatures { verify: &verify, trusted_key }) {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("invalid: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

fn read_stdin() -> super::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text)
}

fn public_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}
