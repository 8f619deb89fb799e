//! The batch-settlement backend as an operator and an analyst meet it: `--settler` at startup
//! and in `tally verify` (a machine without a usable GPU says so, clearly), time travel (`SET
//! tally.as_of_lsn`) and what-if settlement (`simulate_settlement`) through psql.

use std::process::Stdio;

use crate::served::{psql_c, tally, text, Served};

/// psql's unaligned, tuples-only answer to one query.
fn value(served: &Served, commands: &[&str]) -> String {
    let mut c = std::process::Command::new("psql");
    c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", &served.dsn()]);
    for command in commands {
        c.args(["-c", command]);
    }
    let out = c.output().expect("psql");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{commands:?}: {stderr}");
    stdout.trim().to_owned()
}

#[test]
fn time_travel_and_what_ifs_over_psql_and_the_settler_choice() {
    let dir = tempfile::tempdir().unwrap();
    let no_gpu = tally_gpu::GpuSettler::open().err();
    if let Some(why) = &no_gpu {
        // Asked for a GPU that is not there: the node does not start, and says why.
        let out = tally()
            .args(["serve", "--settler", "gpu", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("gpu"))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "served without a GPU ({why})");
        assert!(stderr.contains("--settler gpu: no GPU can be used on this machine"), "{stderr}");
    }
    let served = Served::start(dir.path(), &["--demo", "--demo-inferences", "4000"]);

    // Time travel: the balances as they were at an earlier lsn, through a fresh session and
    // again (a kept past state); the live ones after RESET; writes refused meanwhile.
    let last: u64 = value(&served, &["SELECT max(lsn) FROM events"]).parse().unwrap();
    let middle = "SELECT lsn FROM inferences ORDER BY lsn LIMIT 1 OFFSET 2000";
    let at: u64 = value(&served, &[middle]).parse().unwrap();
    let q = "SELECT count(*) || ':' || sum(earned) FROM balances";
    let live = value(&served, &[q]);
    let then = value(&served, &[&format!("SET tally.as_of_lsn = {at}"), q]);
    assert_ne!(then, live, "half the ledger earns less");
    assert_eq!(value(&served, &[&format!("SET tally.as_of_lsn = {at}"), q]), then);
    let shown = value(&served, &[&format!("SET tally.as_of_lsn = {at}"), "SHOW tally.as_of_lsn"]);
    assert_eq!(shown, at.to_string());
    let inferences = value(
        &served,
        &[
            &format!("SET tally.as_of_lsn = {at}"),
            "SELECT count(*) || ':' || max(lsn) FROM inferences",
        ],
    );
    assert_eq!(inferences, format!("2001:{at}"));
    let reset = [&format!("SET tally.as_of_lsn = {at}") as &str, "RESET tally.as_of_lsn", q];
    assert_eq!(value(&served, &reset), live);
    let now = [&format!("SET tally.as_of_lsn = {at}") as &str, "SET tally.as_of_lsn = 'now'"];
    assert_eq!(value(&served, &[now[0], now[1], "SHOW tally.as_of_lsn"]), "now");
    assert_eq!(value(&served, &[now[0], now[1], q]), live);
    let (_, err) = psql_c(
        &served.dsn(),
        &[
            &format!("SET tally.as_of_lsn = {at}"),
            "INSERT INTO datanets VALUES ('dn-then', 'o')",
            &format!("SET tally.as_of_lsn = {}", last + 1),
        ],
    );
    assert!(err.contains("25006") && err.contains("22023"), "{err}");

    // What-if: the open epoch under another split pays out its fees exactly; the split in
    // force changes nothing for an epoch that ran under it.
    let open = value(&served, &["SELECT epoch || ':' || fees FROM epochs WHERE status = 'open'"]);
    let (epoch, fees) = open.split_once(':').unwrap();
    let paid = value(
        &served,
        &[&format!("SELECT sum(amount) FROM simulate_settlement({epoch}, 0, 0, 0)")],
    );
    assert_eq!(paid, fees);
    let (_, err) = psql_c(&served.dsn(), &["SELECT * FROM simulate_settlement(1, 9000, 2000, 0)"]);
    assert!(err.contains("22023") && err.contains("add up to at most 10000"), "{err}");
    drop(served);

    // `tally verify` with each backend: the CPU verifies; a missing GPU is named.
    let out =
        tally().args(["verify", "--settler", "cpu", "--data"]).arg(dir.path()).output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success() && stdout.contains("settled by cpu"), "{stdout}");
    if no_gpu.is_some() {
        let out = tally()
            .args(["verify", "--settler", "gpu", "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--settler gpu: no GPU can be used on this machine"), "{stderr}");
    }
}
