//! Streaming ingest end to end: plain pyarrow.flight against a real `tally serve` (exactly once
//! across a killed connection, a refused batch, roles and authentication).

use std::process::Command;

use crate::served::{add_test_users, expect_all_ok, psql_c, run, script, tally, text, Served};

#[test]
fn pyarrow_flight_ingest_counts_every_fee_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let mut py = Command::new("python3");
    py.arg(script("flight_ingest.py"))
        .arg(served.ingest_port.to_string())
        .arg(served.port.to_string());
    expect_all_ok(py, "flight_ingest.py");
    // The server runs without transparent huge pages (tools/src/main.rs), where the kernel
    // says (its status has the line since Linux 5.0).
    let status = std::fs::read_to_string(format!("/proc/{}/status", served.child.id()));
    if let Some(thp) = status
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("THP_enabled:")).map(str::to_owned))
    {
        assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
    }
}

#[test]
fn pyarrow_flight_ingest_authenticates_and_refuses_readers() {
    let dir = tempfile::tempdir().unwrap();
    add_test_users(dir.path());
    let served = Served::start(dir.path(), &[]);
    let mut py = Command::new("python3");
    py.arg(script("flight_ingest.py"))
        .arg(served.ingest_port.to_string())
        .arg(served.port.to_string())
        .args(["ruser:rpass", "wuser:wpass"]);
    expect_all_ok(py, "flight_ingest.py (users)");
}

/// `tally ingest` with a server of `served`, as `user` (password in TALLY_PASSWORD).
fn ingest(served: &Served, args: &[&str], password: Option<&str>) -> (i32, String, String) {
    let mut cmd = tally();
    cmd.args(["ingest", "--quiet", "--server", &format!("127.0.0.1:{}", served.ingest_port)]);
    cmd.args(args);
    match password {
        Some(p) => cmd.env("TALLY_PASSWORD", p),
        None => cmd.env_remove("TALLY_PASSWORD"),
    };
    let out = run(cmd.env_remove("PGPASSWORD"), "tally ingest");
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn count(served: &Served, query: &str) -> i64 {
    let (out, err) = psql_c(&served.dsn(), &["\\pset tuples_only on", query]);
    out.trim().parse().unwrap_or_else(|_| panic!("{query}: {out} {err}"))
}

#[test]
fn tally_ingest_loads_csv_and_json_lines_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let datanets = write("datanets.csv", "owner,datanet\no1,ti-dn\n");
    let hash = |k: u32| format!("{k:064x}");
    let contributions = write(
        "contributions.jsonl",
        &(0..4)
            .map(|k| {
                format!(
                    "{{\"contribution\": \"ti-c{k}\", \"datanet\": \"ti-dn\", \"contributor\": \"a{k}\", \"content_hash\": \"{}\"}}\n",
                    hash(k + 1)
                )
            })
            .collect::<String>(),
    );
    let models = write(
        "models.jsonl",
        "{\"model\": \"ti-m\", \"owner\": \"o1\", \"datanets\": [\"ti-dn\"]}\n",
    );
    let rows: String = (0..25)
        .map(|i| {
            format!("ti-{i},ti-m,u{i},{},\"ti-c{}:0.5,ti-c{}:1\"\n", 100 + i, i % 4, (i + 1) % 4)
        })
        .collect();
    let inferences =
        write("inferences.csv", &format!("inference,model,consumer,fee,attributions\n{rows}"));
    let args = ["--batch-rows", "10", "--producer", "ti-run"];
    let mut all: Vec<&str> = args.to_vec();
    all.extend([&datanets, &contributions, &models, &inferences].map(String::as_str));
    let (code, stdout, stderr) = ingest(&served, &all, None);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(count(&served, "SELECT COUNT(*) FROM inferences WHERE model = 'ti-m'"), 25);
    assert_eq!(
        count(&served, "SELECT SUM(fee) FROM inferences WHERE model = 'ti-m'"),
        (100..125).sum::<i64>()
    );
    // The same run again (same producer, same batches): every batch a duplicate.
    let (code, stdout, stderr) = ingest(&served, &all, None);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("duplicate"), "{stdout}");
    assert_eq!(count(&served, "SELECT COUNT(*) FROM inferences WHERE model = 'ti-m'"), 25);

    // A line the server refuses (unknown model, line 14): the batches before it stay, nothing
    // of its batch (lines 12-21) or after it is appended, and the error names file and line.
    let bad: String = (0..25)
        .map(|i| {
            let model = if i == 12 { "nope" } else { "ti-m" };
            format!("tb-{i},{model},u,{},ti-c0:1\n", 7 + i)
        })
        .collect();
    let bad = write("bad.csv", &format!("inference,model,consumer,fee,attributions\n{bad}"));
    let (code, stdout, stderr) =
        ingest(&served, &["--table", "inferences", "--batch-rows", "10", &bad], None);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("bad.csv:14") && stderr.contains("23503"), "{stderr}");
    assert_eq!(count(&served, "SELECT COUNT(*) FROM inferences WHERE inference LIKE 'tb-%'"), 10);
    // A line that cannot be read (a fee that is not whole) stops the run before its batch.
    let unreadable = write("inferences.2.jsonl", "{\"inference\": \"tu-1\", \"model\": \"ti-m\", \"consumer\": \"u\", \"fee\": 1001.9, \"attributions\": \"ti-c0:1\"}\n");
    let (code, _, stderr) = ingest(&served, &[&unreadable], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("inferences.2.jsonl:1"), "{stderr}");
    assert_eq!(count(&served, "SELECT COUNT(*) FROM inferences WHERE inference = 'tu-1'"), 0);
}

#[test]
fn tally_ingest_authenticates_and_a_reader_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    add_test_users(dir.path());
    let served = Served::start(dir.path(), &[]);
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("datanets.csv");
    std::fs::write(&path, "datanet,owner\nta-1,o\n").unwrap();
    let file = path.display().to_string();
    let (code, _, stderr) = ingest(&served, &["--user", "ruser", &file], Some("rpass"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("42501"), "{stderr}");
    let (code, _, stderr) = ingest(&served, &["--user", "wuser", &file], Some("wrong"));
    assert_eq!(code, 2, "{stderr}");
    let (code, stdout, stderr) = ingest(&served, &["--user", "wuser", &file], Some("wpass"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let dsn = format!("host=127.0.0.1 port={} user=wuser password=wpass dbname=tally", served.port);
    let (out, _) = psql_c(&dsn, &["\\pset tuples_only on", "SELECT COUNT(*) FROM datanets"]);
    assert_eq!(out.trim(), "1");
}
