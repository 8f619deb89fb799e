//! End to end over the PostgreSQL wire protocol: real `tally serve` processes and real clients
//! (psql, psycopg 3, pgjdbc) running the scripts in `tests/clients/`, plus what a server
//! operator relies on: SCRAM users and roles, TLS, the connection limit, the statement
//! timeout, refusing a taken port or an open address in development mode, a clean SIGTERM.
//! The clients are installed by `.ci/run`; without them these tests fail saying what is missing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::served::{
    add_test_users, expect_all_ok, free_port, psql, psql_c, run, script, tally, text, Served,
};

#[test]
fn psql_psycopg_and_jdbc_against_a_dev_mode_server() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    // psql: \dt, \d, COPY loads, README's queries, refusals with their SQLSTATEs, exact values.
    let out = run(psql(&served.dsn()).arg("-f").arg(script("psql.sql")), "psql");
    let (stdout, stderr) = text(&out);
    let checks = std::fs::read_to_string(script("psql.checks")).unwrap();
    let missing: Vec<&str> = checks
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| match l.strip_prefix("stderr: ") {
            Some(e) => !stderr.contains(e),
            None => !stdout.contains(l),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "psql output lacks {missing:#?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // psycopg 3: parameters in text and binary, COPY, transactions, refusals.
    let mut py = Command::new("python3");
    py.arg(script("psycopg_test.py")).arg(served.port.to_string());
    expect_all_ok(py, "psycopg_test.py");
    // SQLAlchemy: connecting (type discovery through to_regtype) and the inspector's table list.
    let mut sa = Command::new("python3");
    sa.arg(script("sqlalchemy_check.py")).arg(served.port.to_string());
    expect_all_ok(sa, "sqlalchemy_check.py");
    // pgjdbc: prepared statements, metadata, a refused write.
    let mut java = Command::new("java");
    java.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(script("Jdbc.java"))
        .arg(served.port.to_string());
    expect_all_ok(java, "Jdbc.java");
    // Savepoints (what psycopg's nested transactions and SQLAlchemy send): ROLLBACK TO undoes
    // the failed part and clears the error; COMMIT appends the rest.
    let (out, err) = psql_c(
        &served.dsn(),
        &[
            "BEGIN",
            "INSERT INTO datanets VALUES ('dn-sp-a', 'o')",
            "SAVEPOINT s1",
            "INSERT INTO datanets VALUES ('dn-sp-a', 'o')",
            "SELECT 1",
            "ROLLBACK TO SAVEPOINT s1",
            "INSERT INTO datanets VALUES ('dn-sp-b', 'o')",
            "RELEASE SAVEPOINT s1",
            "COMMIT",
            "SELECT string_agg(datanet, ',' ORDER BY datanet) AS sp FROM datanets WHERE datanet LIKE 'dn-sp-%'",
        ],
    );
    assert!(err.contains("23505") && err.contains("25P02"), "{err}");
    assert!(out.contains("dn-sp-a,dn-sp-b"), "{out}{err}");
    let (status, rest) = served.terminate();
    assert!(status.success(), "SIGTERM: {status}");
    assert!(rest.iter().any(|l| l == "shutting down"), "{rest:?}");
}

#[test]
fn the_numbers_add_up_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[]);
    let mut load = Command::new("python3");
    load.arg(script("numbers_check.py")).arg(served.port.to_string()).args(["--phase", "all"]);
    expect_all_ok(load, "numbers_check.py");
    // A statement that would run for hours is stopped by the session's statement_timeout.
    let (_, err) = psql_c(
        &served.dsn(),
        &[
            "SET statement_timeout = 300",
            "SELECT count(*) FROM events a, events b, events c WHERE a.lsn + b.lsn + c.lsn < 0",
        ],
    );
    assert!(err.contains("57014"), "{err}");
    drop(served);
    // Replayed from the log by a new process: the same numbers.
    let served = Served::start(dir.path(), &[]);
    let mut check = Command::new("python3");
    check.arg(script("numbers_check.py")).arg(served.port.to_string()).args(["--phase", "check"]);
    expect_all_ok(check, "numbers_check.py --phase check");
}

#[test]
fn users_roles_tls_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    add_test_users(dir.path());
    let users = std::fs::read_to_string(dir.path().join("users")).unwrap();
    assert!(!users.contains("wpass") && users.contains("SCRAM-SHA-256$4096:"), "{users}");
    // TLS with a throwaway self-signed certificate.
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl",
    );
    assert!(made.status.success(), "{}", text(&made).1);
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(dir.path().join("users"), data.join("users")).unwrap();
    let served = Served::start(
        &data,
        &["--tls-cert", &cert_s, "--tls-key", &key_s, "--max-connections", "3"],
    );
    let dev = tempfile::tempdir().unwrap();
    let dev_served = Served::start(dev.path(), &[]);
    // psycopg: SCRAM for a writer and a reader, a wrong password, a reader refused a write.
    let mut py = Command::new("python3");
    py.arg(script("psycopg_test.py"))
        .arg(dev_served.port.to_string())
        .env("TALLY_AUTH_PORT", served.port.to_string());
    expect_all_ok(py, "psycopg_test.py with authentication");
    let dsn = |user: &str, password: &str, ssl: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=tally sslmode={ssl}",
            served.port
        )
    };
    let (out, err) = psql_c(
        &dsn("ruser", "rpass", "require"),
        &["SELECT ssl FROM pg_stat_ssl LIMIT 0", "SELECT 'over tls' AS t"],
    );
    assert!(out.contains("over tls"), "{out}{err}");
    let (_, err) =
        psql_c(&dsn("ruser", "rpass", "disable"), &["INSERT INTO datanets VALUES ('dn-r', 'r')"]);
    assert!(err.contains("42501"), "{err}");
    // Nothing a session sends reaches the server's files or the shared engine settings.
    let (_, err) = psql_c(
        &dsn("wuser", "wpass", "disable"),
        &[
            "SELECT * FROM '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/tally-leak.csv'",
            "COPY datanets FROM '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
        ],
    );
    assert_eq!(err.matches("42501").count(), 3, "{err}");
    assert!(err.contains("42P01") && !Path::new("/tmp/tally-leak.csv").exists(), "{err}");
    let (_, err) = psql_c(&dsn("nobody", "x", "prefer"), &["SELECT 1"]);
    assert!(err.contains("password authentication failed"), "{err}");
    // The connection limit: three held, the fourth refused as PostgreSQL does.
    let held: Vec<_> = (0..3).map(|_| held_connection(served.port)).collect();
    let (_, err) = psql_c(&dsn("wuser", "wpass", "disable"), &["SELECT 1"]);
    assert!(err.contains("too many clients"), "{err}");
    drop(held);
    // A second server cannot take a port in use, and development mode stays on loopback.
    let other = tempfile::tempdir().unwrap();
    let taken = run(
        tally()
            .args(["serve", "--data"])
            .arg(other.path())
            .args(["--listen", &format!("127.0.0.1:{}", served.port)]),
        "tally serve",
    );
    assert!(
        !taken.status.success() && text(&taken).1.contains("already in use"),
        "{:?}",
        text(&taken)
    );
    let open = run(
        tally().args(["serve", "--data"]).arg(other.path()).args(["--listen", "0.0.0.0:0"]),
        "tally serve",
    );
    assert!(
        !open.status.success() && text(&open).1.contains("development mode"),
        "{:?}",
        text(&open)
    );
    // One process per data directory.
    let locked = run(
        tally()
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())]),
        "tally serve",
    );
    assert!(!locked.status.success(), "{:?}", text(&locked));
}

/// A connection the server holds a slot for: it waits for a startup message and says nothing.
/// One it refused (the slot of the previous client may not be given back yet: the server sees
/// that client's end a moment after the client exits) is dropped and tried again.
fn held_connection(port: u16) -> std::net::TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut socket, &mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return socket;
            }
            _ => {
                assert!(std::time::Instant::now() < deadline, "the server refuses every connection")
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
