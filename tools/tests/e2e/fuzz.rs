//! Fuzz target on stable Rust (proptest-driven): streams of PostgreSQL frontend messages into a
//! connection of a real `tally serve`: well-formed and malformed Parse, Bind, Execute, Describe,
//! Close, COPY and query messages in any order, with counts and lengths that lie. After every
//! stream the server must still be running, and at the end it must still answer.
//! `TALLY_FUZZ_CASES` sets the number of streams (tests/fuzz.sh runs it long).

use std::cell::RefCell;
use std::io::Read;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::served::Served;
use crate::wire::{message, Wire};

#[derive(Debug, Clone)]
enum Msg {
    Query(String),
    Parse(String, Vec<i32>),
    Bind { portal: String, formats: Vec<i16>, params: Vec<Option<Vec<u8>>>, count_lie: i16 },
    Execute(String, i32),
    Describe(u8, String),
    Close(u8, String),
    CopyData(Vec<u8>),
    Raw(u8, Vec<u8>),
    Sync,
    Flush,
    CopyDone,
}

fn sql() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "SELECT 1", "SELECT $1", "SELECT $2 + $1", "SELECT $70000", "INSERT INTO datanets VALUES ($1, $2)",
            "INSERT INTO datanets VALUES ('fz', 'o')", "COPY datanets FROM STDIN", "COPY inferences FROM STDIN CSV",
            "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "ROLLBACK TO SAVEPOINT a", "SELECT * FROM events",
            "SET statement_timeout = 5", "SET idle_session_timeout = '1h'", "SHOW statement_timeout",
            "SELECT value FROM generate_series(1, 100000)", "", ";", "SELECT 1; SELECT 2",
            "EXPLAIN SELECT * FROM balances", "SELECT * FROM pg_catalog.pg_type", "DISCARD ALL",
            "SELECT count(*) FROM attributions", "SELECT 'é' || $1", "select ((((((1))))))",
        ]).prop_map(String::from),
        1 => "[ -~]{0,40}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "p", "s1", "nope"]).prop_map(String::from)
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        3 => sql().prop_map(Msg::Query),
        3 => (sql(), prop::collection::vec(prop::sample::select(vec![0, 16, 20, 23, 25, 1700, -1, 99999]), 0..3))
            .prop_map(|(q, t)| Msg::Parse(q, t)),
        3 => (name(), prop::collection::vec(prop::sample::select(vec![0i16, 1, 2, -1]), 0..3),
              prop::collection::vec(proptest::option::of(prop::collection::vec(any::<u8>(), 0..12)), 0..3),
              prop::sample::select(vec![0i16, 1, -1, 30000]))
            .prop_map(|(portal, formats, params, count_lie)| Msg::Bind { portal, formats, params, count_lie }),
        3 => (name(), prop::sample::select(vec![0, 1, 5, -1, i32::MAX])).prop_map(|(p, n)| Msg::Execute(p, n)),
        1 => (prop::sample::select(vec![b'S', b'P', b'X']), name()).prop_map(|(k, n)| Msg::Describe(k, n)),
        1 => (prop::sample::select(vec![b'S', b'P', b'X']), name()).prop_map(|(k, n)| Msg::Close(k, n)),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Msg::CopyData),
        1 => (prop::sample::select(vec![b'Q', b'P', b'B', b'E', b'D', b'C', b'p', b'F', b'f', b'?', 0]),
              prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, b)| Msg::Raw(k, b)),
        2 => Just(Msg::Sync),
        1 => Just(Msg::Flush),
        1 => Just(Msg::CopyDone),
    ]
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn encode(m: &Msg) -> Vec<u8> {
    let mut b = Vec::new();
    let kind = match m {
        Msg::Query(q) => {
            cstr(&mut b, q);
            b'Q'
        }
        Msg::Parse(q, types) => {
            cstr(&mut b, "");
            cstr(&mut b, q);
            b.extend_from_slice(&(types.len() as i16).to_be_bytes());
            types.iter().for_each(|t| b.extend_from_slice(&t.to_be_bytes()));
            b'P'
        }
        Msg::Bind { portal, formats, params, count_lie } => {
            cstr(&mut b, portal);
            cstr(&mut b, "");
            b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
            formats.iter().for_each(|f| b.extend_from_slice(&f.to_be_bytes()));
            let count = if *count_lie == 0 { params.len() as i16 } else { *count_lie };
            b.extend_from_slice(&count.to_be_bytes());
            for p in params {
                match p {
                    None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v);
                    }
                }
            }
            b.extend_from_slice(&0i16.to_be_bytes());
            b'B'
        }
        Msg::Execute(portal, max_rows) => {
            cstr(&mut b, portal);
            b.extend_from_slice(&max_rows.to_be_bytes());
            b'E'
        }
        Msg::Describe(k, n) | Msg::Close(k, n) => {
            b.push(*k);
            cstr(&mut b, n);
            if matches!(m, Msg::Describe(..)) {
                b'D'
            } else {
                b'C'
            }
        }
        Msg::CopyData(d) => {
            b.extend_from_slice(d);
            b'd'
        }
        Msg::Raw(k, body) => {
            b.extend_from_slice(body);
            *k
        }
        Msg::Sync => b'S',
        Msg::Flush => b'H',
        Msg::CopyDone => b'c',
    };
    message(kind, &b)
}

/// One connection: the messages, a Sync, and whatever the server answers within a moment.
fn session(port: u16, messages: &[Msg]) {
    let mut w = Wire::connect(port);
    let mut bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
    bytes.extend(message(b'S', &[]));
    // The server may close the connection half way (a fatal error): writing can then fail.
    let _ = std::io::Write::write_all(&mut w.stream, &bytes);
    w.stream.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    let mut sink = [0u8; 1 << 16];
    while matches!(w.stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[test]
fn fuzz_wire_messages() {
    let dir = tempfile::tempdir().unwrap();
    let served = RefCell::new(Served::start(dir.path(), &["--statement-timeout", "2"]));
    let port = served.borrow().port;
    let cases = std::env::var("TALLY_FUZZ_CASES").ok().and_then(|v| v.parse().ok());
    let config =
        Config { cases: cases.unwrap_or(48), failure_persistence: None, ..Default::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&prop::collection::vec(msg(), 1..10), |messages| {
            session(port, &messages);
            prop_assert!(served.borrow_mut().alive(), "the server died on {messages:?}");
            Ok(())
        })
        .unwrap();
    let r = Wire::connect(port).query("SELECT 41 + 1 AS n");
    assert_eq!(r.rows, [[Some("42".to_string())]]);
}
