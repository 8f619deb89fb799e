//! What a hostile or careless client sends, against a real `tally serve`: each input gets its
//! SQLSTATE, the server stays up (a new connection works afterwards), and nothing of a refused
//! statement reaches the ledger or the log (`tally verify` counts the batches in the log).
//! Also damage at rest: a flipped byte in a sealed segment is named by reads, by opening and
//! by `tally verify`, and `tally salvage` cuts the log there.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::served::{add_test_users, psql_c, run, tally, text, Served};
use crate::wire::{message, startup_packet, Wire};

/// tally_query::MAX_EXPRESSION_DEPTH (this binary does not link the SQL crates).
const MAX_EXPRESSION_DEPTH: usize = 1_000;

fn attributions(n: usize) -> String {
    (0..n).map(|k| format!("c{k}:1")).collect::<Vec<_>>().join(",")
}

/// `tally verify`'s count of ledger batches in the log, accepted and refused.
fn batches_in_log(data: &Path) -> String {
    let out = run(tally().args(["verify", "--data"]).arg(data), "tally verify");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "verify: {stdout}{stderr}");
    stdout.lines().find(|l| l.starts_with("batches:")).unwrap_or_default().to_owned()
}

#[test]
fn hostile_statements_are_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let port = served.port;
    let mut w = Wire::connect(port);
    assert!(w.query("INSERT INTO datanets VALUES ('dn-ok', 'o')").errors.is_empty());
    // A Parse naming $100000000000: refused, and the connection goes on.
    w.send(&Wire::parse_message("SELECT * FROM datanets WHERE datanet = $100000000000"));
    w.send(&Wire::sync_message());
    let r = w.read_until_ready();
    assert_eq!(r.codes(), ["54000"], "{r:?}");
    assert_eq!(w.query("SELECT 1 AS one").rows, [[Some("1".to_string())]]);
    // Expressions nested past the limit, refused before they are parsed; long but legal ones
    // are answered (the stack has room for what the limit lets through).
    let deep = format!("SELECT 1{}", "+1".repeat(300_000));
    assert_eq!(w.query(&deep).codes(), ["54001"]);
    let ors = format!(
        "SELECT count(*) FROM datanets WHERE datanet = 'a'{}",
        " OR datanet = 'a'".repeat(200_000)
    );
    assert_eq!(w.query(&ors).codes(), ["54001"]);
    let sum = format!("SELECT 1{} AS n", "+1".repeat(MAX_EXPRESSION_DEPTH - 1));
    assert_eq!(w.query(&sum).rows, [[Some(MAX_EXPRESSION_DEPTH.to_string())]]);
    let many_ors = format!(
        "SELECT count(*) AS n FROM datanets WHERE datanet = 'dn-ok'{}",
        " OR datanet = 'x'".repeat(MAX_EXPRESSION_DEPTH / 2 - 1)
    );
    assert_eq!(w.query(&many_ors).rows, [[Some("1".to_string())]]);
    let nested = format!("SELECT {}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(w.query(&nested).codes(), ["54001"]);
    // The shared engine's settings are the server's, however the name is quoted.
    for set in [
        "SET \"datafusion\".catalog.default_schema = 'nope'",
        "SET \"datafusion.runtime\".memory_limit = '1K'",
        "SET DataFusion.execution.batch_size = 1",
        "RESET datafusion.execution.batch_size",
    ] {
        assert_eq!(w.query(set).codes(), ["42501"], "{set}");
    }
    assert_eq!(w.query("SET statement_timeout = '99999999999999999s'").codes(), ["22023"]);
    // A value far larger than the statement that asks for it: refused before it is made.
    assert_eq!(w.query("SELECT length(repeat('x', 2000000000))").codes(), ["54000"]);
    // Values the ledger refuses for their shape: refused before they reach the log.
    let big_list = attributions(3_000_000);
    for insert in [
        "INSERT INTO inferences VALUES ('i1', 'm', 'u', 1001.00000000000001, '')".to_string(),
        format!("INSERT INTO inferences VALUES ('i1', 'm', 'u', 5, '{big_list}')"),
        format!("INSERT INTO inferences VALUES ('i1', 'm', 'u', 5, '{}')", attributions(1025)),
    ] {
        assert_eq!(w.query(&insert).codes(), ["22023"]);
    }
    for _ in 0..5 {
        let long = format!("INSERT INTO datanets VALUES ('{}', 'o')", "x".repeat(20 << 20));
        let r = w.query(&long);
        assert_eq!(r.codes(), ["22023"]);
        assert!(r.errors[0].1.len() < 1000, "the refused value is not echoed whole");
    }
    assert!(w.copy_in("COPY inferences FROM STDIN WITH (FORMAT csv)"));
    let data = format!("i2,m,u,5,\ni3,m,u,5,\"{big_list}\"\n");
    w.send(&message(b'd', data.as_bytes()));
    w.send(&message(b'c', &[]));
    let r = w.read_until_ready();
    assert_eq!(r.codes(), ["22023"], "{r:?}");
    assert!(r.errors[0].1.contains("row 2"), "{r:?}");
    // Later writes are unaffected.
    assert!(w.query("INSERT INTO datanets VALUES ('dn-after', 'o')").errors.is_empty());
    // A message announcing 2 GiB: the connection is closed with a FATAL error before the
    // server buffers anything of it.
    w.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff]);
    let r = w.read_until_ready();
    assert!(r.closed && r.codes() == ["54000"], "{r:?}");
    let mut w = Wire::connect(port);
    let n = w.query("SELECT count(*) FROM datanets");
    assert_eq!(n.rows, [[Some("2".to_string())]]);
    assert!(served.alive());
    drop(w);
    let (status, _) = served.terminate();
    assert!(status.success());
    // Two accepted writes, and no refused batch took log space.
    assert_eq!(batches_in_log(dir.path()), "batches: 2 accepted, 0 refused; events: 2");
}

#[test]
fn results_stream_in_bounded_memory_and_stop_on_timeout_or_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let port = served.port;
    let mut w = Wire::connect(port);
    let series = "SELECT value FROM generate_series(1, 3000000000)";
    // A portal read 1,000 rows at a time (psycopg's server-side cursors, JDBC's fetch size).
    w.send(&Wire::parse_message(series));
    w.send(&Wire::bind_message("p"));
    w.send(&Wire::execute_message("p", 1000));
    w.send(&Wire::flush_message());
    let (_, _) = (w.read_message(), w.read_message()); // ParseComplete, BindComplete
    assert_eq!(w.read_portal_chunk(), (1000, true));
    w.send(&Wire::execute_message("p", 1000));
    w.send(&Wire::flush_message());
    assert_eq!(w.read_portal_chunk(), (1000, true));
    w.send(&Wire::sync_message());
    assert!(w.read_until_ready().errors.is_empty());
    // Three billion rows: they start to arrive at once and the server's memory stays flat.
    let before = served.rss_bytes();
    w.send(&message(b'Q', format!("{series}\0").as_bytes()));
    let mut rows = 0u64;
    while rows < 1_000_000 {
        let (kind, _) = w.read_message().expect("rows");
        rows += u64::from(kind == b'D');
    }
    let during = served.rss_bytes();
    assert!(during < before + (256 << 20), "memory grew from {before} to {during} bytes");
    // A cancel request stops it mid-result.
    w.cancel(port);
    let r = w.read_until_ready();
    assert_eq!(r.codes(), ["57014"], "{:?}", r.errors);
    // So does the statement timeout, while rows stream and while a query computes.
    assert!(w.query("SET statement_timeout = 1000").errors.is_empty());
    let started = Instant::now();
    let r = w.query(series);
    assert!(!r.rows.is_empty() && r.codes() == ["57014"], "{:?}", r.errors);
    assert!(started.elapsed() < Duration::from_secs(30));
    let r = w.query("SELECT count(*) FROM generate_series(1, 300000000000)");
    assert_eq!(r.codes(), ["57014"]);
    assert_eq!(w.query("SELECT 2 AS two").rows, [[Some("2".to_string())]]);
}

#[test]
fn silent_and_idle_connections_lose_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &["--max-connections", "3", "--startup-timeout", "1", "--idle-session-timeout", "3"],
    );
    let port = served.port;
    let mut silent: Vec<TcpStream> =
        (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap_or(0), 0, "a silent connection was closed");
    }
    // Their slots are free again.
    let mut w = Wire::connect(port);
    assert!(w.query("SELECT 1").errors.is_empty());
    // An idle connection is closed with FATAL 57P05 (server limit 3 s, session asks 300 ms).
    assert!(w.query("SET idle_session_timeout = 300").errors.is_empty());
    std::thread::sleep(Duration::from_millis(800));
    let r = w.read_until_ready();
    assert!(r.closed && r.codes() == ["57P05"], "{r:?}");
    let mut idle = Wire::connect(port);
    std::thread::sleep(Duration::from_millis(3500));
    let r = idle.read_until_ready();
    assert!(r.closed && r.codes() == ["57P05"], "{r:?}");
    assert!(Wire::connect(port).query("SELECT 1").errors.is_empty());
}

/// The server's first SCRAM message to a client claiming `user`: its salt.
fn scram_salt(port: u16, user: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&startup_packet(user)).unwrap();
    let mut w = Wire { stream: s, key: (0, 0) };
    let (kind, _) = w.read_message().unwrap();
    assert_eq!(kind, b'R', "the server asks for SASL");
    let first = b"n,,n=,r=abcdefghijklmnop";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    w.send(&message(b'p', &body));
    let (_, body) = w.read_message().unwrap();
    let server_first = String::from_utf8_lossy(&body[4..]).into_owned();
    server_first.split(',').find_map(|f| f.strip_prefix("s=")).unwrap().to_owned()
}

#[test]
fn roles_are_checked_first_and_users_files_are_never_ignored() {
    let dir = tempfile::tempdir().unwrap();
    add_test_users(dir.path());
    let served = Served::start(dir.path(), &[]);
    let dsn = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=tally sslmode=disable",
            served.port
        )
    };
    let (_, err) = psql_c(
        &dsn("ruser", "rpass"),
        &[
            "EXPLAIN ANALYZE INSERT INTO datanets VALUES ('x', 'o')",
            "WITH x AS (SELECT 1) INSERT INTO datanets VALUES ('x', 'o')",
            "SET \"datafusion\".catalog.default_schema = 'nope'",
        ],
    );
    assert_eq!(err.matches("42501").count(), 3, "{err}");
    let (out, err) = psql_c(
        &dsn("wuser", "wpass"),
        &["SET \"datafusion\".runtime.memory_limit = '1K'", "SELECT count(*) AS n FROM datanets"],
    );
    assert!(err.contains("42501") && out.contains(" 0"), "{out}{err}");
    // Unknown users get a salt of their own, the same each time: names cannot be probed.
    let a = scram_salt(served.port, "nobody-a");
    assert_eq!(a, scram_salt(served.port, "nobody-a"));
    assert_ne!(a, scram_salt(served.port, "nobody-b"));
    // A users file that is named but missing, or empty, stops the server from starting.
    let other = tempfile::tempdir().unwrap();
    let empty = other.path().join("users");
    std::fs::write(&empty, "# no users yet\n").unwrap();
    for users in [other.path().join("missing"), empty] {
        let out = run(
            tally().args(["serve", "--data"]).arg(other.path()).arg("--users").arg(&users),
            "tally serve",
        );
        let (_, stderr) = text(&out);
        assert!(!out.status.success() && stderr.contains(&users.display().to_string()), "{stderr}");
    }
}

#[test]
fn damage_at_rest_is_named_and_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let out =
        run(tally().args(["demo", "--inferences", "300000", "--data"]).arg(data), "tally demo");
    assert!(out.status.success(), "{:?}", text(&out));
    let segment = data.join("log").join("seg-00000000000000000000.log");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&segment).unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_at(&file, &mut b, 30_000_000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[b[0] ^ 0x20], 30_000_000).unwrap();
    drop(file);
    // With the snapshot the server starts; a read that reaches the damage fails naming it.
    let served = Served::start(data, &[]);
    let mut w = Wire::connect(served.port);
    // (`max(ts)` reads every event; a whole table's `count(*)` comes from the state's counters.)
    let r = w.query("SELECT max(ts) FROM events");
    assert_eq!(r.codes(), ["XX001"], "{r:?}");
    let message = &r.errors[0].1;
    assert!(
        message.contains(&segment.display().to_string())
            && message.contains("offset")
            && message.contains("log index"),
        "{message}"
    );
    assert!(r.rows.is_empty(), "never a short answer");
    assert!(w.query("SELECT count(*) FROM balances").errors.is_empty(), "the rest still answers");
    drop(w);
    drop(served);
    // Without it, opening replays through the damage: serve and verify stop, naming it.
    std::fs::remove_file(data.join("snapshot.bin")).unwrap();
    for command in ["serve", "verify"] {
        let out = run(tally().args([command, "--data"]).arg(data), command);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{command}: {stdout}{stderr}");
        assert!(
            stderr.contains(&segment.display().to_string())
                && stderr.contains("log index")
                && stderr.contains("tally salvage"),
            "{command}: {stderr}"
        );
    }
    let out = run(tally().args(["salvage", "--data"]).arg(data), "tally salvage");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stdout.contains("salvaged: cut"), "{stdout}{stderr}");
    let out = run(tally().args(["verify", "--data"]).arg(data), "tally verify");
    assert!(out.status.success(), "{:?}", text(&out));
    let served = Served::start(data, &[]);
    let r = Wire::connect(served.port).query("SELECT max(ts) FROM events");
    assert!(r.errors.is_empty() && !r.rows.is_empty(), "{r:?}");
}

#[test]
fn statements_heavy_to_plan_never_hold_up_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    // Planning time grows with the square of the depth; these take a while each.
    let heavy = format!("SELECT 1{} AS n\0", "+1".repeat(599));
    let mut planning: Vec<Wire> = (0..3).map(|_| Wire::connect(served.port)).collect();
    for w in &mut planning {
        w.send(&message(b'Q', heavy.as_bytes()));
    }
    std::thread::sleep(Duration::from_millis(200));
    // Another connection is answered while all of them are still planning.
    let mut w = Wire::connect(served.port);
    assert_eq!(w.query("SELECT 7 AS n").rows, [[Some("7".to_string())]]);
    for p in &planning {
        p.stream.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let pending =
            matches!(p.stream.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(pending, "a heavy statement finished before a simple one on another connection");
        p.stream.set_nonblocking(false).unwrap();
    }
    for mut p in planning {
        let r = p.read_until_ready();
        assert_eq!(r.rows, [[Some("600".to_string())]]);
    }
}
