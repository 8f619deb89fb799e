//! The verifiable ledger end to end: proofs read from a running server over psql are checked by
//! `tests/clients/verify_proof.py` (Python's standard library, no Tally code) and by `tally
//! verify-proof`; tampered proofs and a foreign key are refused by both.

use std::path::Path;
use std::process::Command;

use crate::served::{script, tally, text, Served};

/// psql's unaligned, tuples-only answer to one query.
fn value(served: &Served, query: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", &served.dsn(), "-c", query])
        .output()
        .expect("psql");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{query}: {stderr}");
    stdout.trim().to_owned()
}

/// Both verifiers' verdicts on the document in `path`: (python, tally), each "valid" or
/// "invalid: …", with the exit code checked against it.
fn verdicts(path: &Path, key: &str) -> (String, String) {
    let py = Command::new("python3").arg(script("verify_proof.py")).arg(path).output().unwrap();
    let ours = tally().args(["verify-proof", "--key", key]).arg(path).output().unwrap();
    let verdict = |out: &std::process::Output| {
        let (stdout, stderr) = text(out);
        let line = stdout.lines().last().unwrap_or_default().to_owned();
        let valid = line == "valid";
        assert_eq!(out.status.code(), Some(if valid { 0 } else { 1 }), "{stdout}{stderr}");
        line
    };
    (verdict(&py), verdict(&ours))
}

#[test]
fn proofs_from_a_server_check_out_with_python_alone_and_forgeries_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--demo", "--demo-inferences", "3000"]);
    let key = value(&served, "SELECT public_key FROM checkpoints LIMIT 1");
    let size: u64 = value(&served, "SELECT tree_size FROM ledger_root()").parse().unwrap();
    let closed_at: u64 = value(&served, "SELECT min(tree_size) FROM checkpoints").parse().unwrap();
    let (account, amount) = {
        let row = value(&served, "SELECT account || ' ' || amount FROM payouts WHERE epoch = 2 ORDER BY amount DESC LIMIT 1");
        let (a, v) = row.split_once(' ').unwrap();
        (a.to_owned(), v.parse::<u64>().unwrap())
    };
    let docs = [
        format!("SELECT proof FROM inclusion_proof(5, {size})"),
        // At an epoch close: the document carries the node's signed checkpoint.
        format!("SELECT proof FROM inclusion_proof({closed_at}, {closed_at})"),
        format!("SELECT proof FROM consistency_proof(100, {size})"),
        format!("SELECT proof FROM consistency_proof({closed_at}, {size})"),
        format!("SELECT proof FROM payout_proof(2, '{account}')"),
        "SELECT proof FROM checkpoints ORDER BY tree_size LIMIT 1".to_string(),
    ];
    let files = tempfile::tempdir().unwrap();
    for (k, query) in docs.iter().enumerate() {
        let doc = value(&served, query);
        let path = files.path().join(format!("{k}.json"));
        std::fs::write(&path, &doc).unwrap();
        let (py, ours) = verdicts(&path, &key);
        assert_eq!((py.as_str(), ours.as_str()), ("valid", "valid"), "{query}: {doc}");
        // Forgeries: another amount, a flipped path element, another size, another root.
        let mut json: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let forged = forgeries(&mut json, amount);
        assert!(!forged.is_empty(), "{query}");
        for (what, bad) in forged {
            std::fs::write(&path, bad.to_string()).unwrap();
            let (py, ours) = verdicts(&path, &key);
            assert!(
                py.starts_with("invalid") && ours.starts_with("invalid"),
                "{query}: {what}: {py} / {ours}: {bad}"
            );
        }
    }
    // A checkpoint signed by another key than the one the verifier trusts.
    let path = files.path().join("checkpoint.json");
    std::fs::write(&path, value(&served, "SELECT proof FROM checkpoints LIMIT 1")).unwrap();
    let other = "ab".repeat(32);
    let out = tally().args(["verify-proof", "--key", &other]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
}

/// Documents that must not verify, made from a valid one, each with what was changed.
fn forgeries(doc: &mut serde_json::Value, amount: u64) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut change = |what: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut bad = doc.clone();
        f(&mut bad);
        if bad != *doc {
            out.push((what.to_owned(), bad));
        }
    };
    change("amount", &|d| {
        if d["kind"] == "payout" {
            d["amount"] = (amount + 1).into();
        }
    });
    change("path", &|d| {
        if let Some(first) = d.get_mut("path").and_then(|p| p.get_mut(0)) {
            let h = first.as_str().unwrap();
            let flipped = if h.starts_with('0') { "1" } else { "0" };
            *first = format!("{flipped}{}", &h[1..]).into();
        }
    });
    // A proof binds its tree size only through the root of that size (RFC 9162 paths have the
    // same shape for some neighbouring sizes): another size is a forgery when a signed
    // checkpoint names the size.
    change("size", &|d| {
        if d["checkpoint"].is_null() && d["kind"] != "checkpoint" {
            return;
        }
        for size in ["tree_size", "new_size"] {
            if let Some(n) = d[size].as_u64() {
                d[size] = (n + 1).into();
            }
        }
    });
    change("body", &|d| {
        if let Some(body) = d["body"].as_str() {
            d["body"] = body.replacen('1', "2", 1).into();
        }
    });
    change("root", &|d| {
        for root in ["root", "new_root", "payouts_root"] {
            if d[root].is_string() {
                d[root] = "00".repeat(32).into();
            }
        }
    });
    out
}
