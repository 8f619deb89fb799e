//! SQL over a real embedded database holding a synthetic ledger: the tables of surface.md
//! answer with the contract's names and types, agree with each other, and refuse what the
//! ledger never allows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use std::future::pending;

use tally_query::{Access, Done, Outcome, QueryError, Request, Session, Sql, Status};
use tally_storage::{Database, Options};
use tally_workload::{Generator, Shape};

fn demo() -> (tempfile::TempDir, Sql) {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Database::open_with(dir.path(), Options { segment_bytes: 4 << 20, ..Options::default() })
            .unwrap();
    for batch in Generator::new(Shape::demo(5, 4_000)) {
        db.write(batch).unwrap();
    }
    (dir, Sql::new(Arc::new(db)).unwrap())
}

/// A column of every batch, as plain values.
fn column<A: Array + 'static, T>(
    batches: &[RecordBatch],
    name: &str,
    get: impl Fn(&A, usize) -> T,
) -> Vec<T> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap().as_any().downcast_ref::<A>().unwrap();
        out.extend((0..a.len()).map(|i| get(a, i)));
    }
    out
}

fn col_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    column(batches, name, |a: &Int64Array, i| a.value(i))
}

fn col_str(batches: &[RecordBatch], name: &str) -> Vec<String> {
    column(batches, name, |a: &StringArray, i| a.value(i).to_string())
}

#[test]
fn tables_answer_with_the_contract_and_agree_with_each_other() {
    let (_dir, sql) = demo();
    let epochs =
        sql.query_blocking("SELECT epoch, status, fees FROM epochs ORDER BY epoch").unwrap();
    assert_eq!(col_i64(&epochs, "epoch"), vec![1, 2, 3, 4]);
    assert_eq!(col_str(&epochs, "status"), vec!["closed", "closed", "closed", "open"]);
    // Conservation: per epoch, the rewards add up to the fees.
    let per_epoch = sql
        .query_blocking(
            "SELECT e.epoch, e.fees, SUM(r.amount) AS paid FROM epochs e JOIN rewards r ON r.epoch = e.epoch \
             GROUP BY e.epoch, e.fees ORDER BY e.epoch",
        )
        .unwrap();
    assert_eq!(col_i64(&per_epoch, "fees"), col_i64(&per_epoch, "paid"));
    // Balances are the rewards summed; settled is what the payouts paid.
    let totals = sql
        .query_blocking(
            "SELECT (SELECT SUM(earned) FROM balances) AS earned, (SELECT SUM(fees) FROM epochs) AS fees, \
             (SELECT SUM(settled) FROM balances) AS settled, (SELECT SUM(amount) FROM payouts) AS paid_out",
        )
        .unwrap();
    assert_eq!(col_i64(&totals, "earned"), col_i64(&totals, "fees"));
    assert_eq!(col_i64(&totals, "settled"), col_i64(&totals, "paid_out"));
    // A point lookup, the top earners, earnings per datanet.
    let top = sql
        .query_blocking("SELECT account, earned FROM balances ORDER BY earned DESC LIMIT 100")
        .unwrap();
    let earned = col_i64(&top, "earned");
    assert_eq!(earned.len(), 100);
    assert!(earned.windows(2).all(|w| w[0] >= w[1]));
    let someone = &col_str(&top, "account")[7];
    let one = sql
        .query_blocking(&format!(
            "SELECT earned, settled, pending FROM balances WHERE account = '{someone}'"
        ))
        .unwrap();
    assert_eq!(col_i64(&one, "earned"), vec![earned[7]]);
    assert_eq!(earned[7], col_i64(&one, "settled")[0] + col_i64(&one, "pending")[0]);
    let per_datanet = sql
        .query_blocking(
            "SELECT d.datanet, d.earned, SUM(c.earned) AS by_contribution FROM datanets d \
             JOIN contributions c ON c.datanet = d.datanet GROUP BY d.datanet, d.earned",
        )
        .unwrap();
    assert_eq!(col_i64(&per_datanet, "earned"), col_i64(&per_datanet, "by_contribution"));
    let roots = sql.query_blocking("SELECT payouts_root FROM settlements").unwrap();
    assert!(col_str(&roots, "payouts_root").iter().all(|r| r.len() == 64));
}

#[test]
fn column_types_follow_the_contract() {
    let (_dir, sql) = demo();
    let b = sql.query_blocking("SELECT * FROM contributions LIMIT 1").unwrap();
    let schema = b[0].schema();
    assert_eq!(schema.field_with_name("revoked").unwrap().data_type(), &DataType::Boolean);
    assert_eq!(schema.field_with_name("earned").unwrap().data_type(), &DataType::Int64);
    assert_eq!(schema.field_with_name("content_hash").unwrap().data_type(), &DataType::Utf8);
    let b = sql.query_blocking("SELECT * FROM revocations LIMIT 1").unwrap();
    assert_eq!(
        b[0].schema().field_with_name("ts").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
}

#[test]
fn what_the_ledger_never_allows_is_refused() {
    let (dir, sql) = demo();
    let file = dir.path().join("leak.csv");
    for (q, append_only) in [
        ("UPDATE balances SET earned = 0", true),
        ("DELETE FROM contributions", true),
        ("TRUNCATE TABLE rewards", true),
        ("DROP TABLE balances", true),
        ("INSERT INTO balances VALUES ('x', 1, 1, 0)", true),
    ] {
        match sql.query_blocking(q) {
            Err(QueryError::AppendOnly(what)) => {
                assert!(append_only, "{q}: {what}");
            }
            other => panic!("{q}: expected append-only refusal, got {other:?}"),
        }
    }
    let copy = format!("COPY balances TO '{}'", file.display());
    let external =
        format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}'", dir.path().display());
    for q in [copy.as_str(), external.as_str()] {
        assert!(matches!(sql.query_blocking(q), Err(QueryError::NotAllowed(_))), "{q}");
    }
    assert!(!file.exists(), "nothing may write the server's files");
    // A reader's role is checked first, wherever the write hides.
    let statements = [
        "EXPLAIN ANALYZE INSERT INTO datanets VALUES ('x', 'o')",
        "EXPLAIN (ANALYZE, VERBOSE) INSERT INTO datanets VALUES ('x', 'o')",
        "EXPLAIN INSERT INTO datanets VALUES ('x', 'o')",
        "WITH x AS (SELECT 1) INSERT INTO datanets VALUES ('x', 'o')",
        "WITH x AS (INSERT INTO datanets VALUES ('x', 'o') RETURNING datanet) SELECT * FROM x",
        "SELECT 1 UNION ALL (WITH y AS (SELECT 2) SELECT 3)",
        "COPY datanets FROM STDIN",
    ];
    for (k, q) in statements.iter().enumerate() {
        let s = Sql::parse(q).unwrap().statements.remove(0);
        let reader = Sql::check(&s, Access::Reader).map_err(|e| e.sqlstate());
        assert_eq!(reader, if k == 5 { Ok(()) } else { Err("42501") }, "{q}");
    }
    // Functions whose output can outgrow their input are bounded per call.
    for q in [
        "SELECT length(repeat('x', 2000000000))",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT length(replace(repeat('a', 20000), 'a', repeat('b', 20000)))",
        "SELECT cardinality(range(1, 1000000000000))",
        "SELECT cardinality(array_repeat(1, 500000000))",
    ] {
        assert_eq!(sqlstate(sql.query_blocking(q)), "54000", "{q}");
    }
    let fine =
        sql.query_blocking("SELECT CAST(length(repeat('ab', 1000)) AS BIGINT) AS n").unwrap();
    assert_eq!(col_i64(&fine, "n"), vec![2000]);
    let analyze = Sql::parse(statements[0]).unwrap().statements.remove(0);
    assert_eq!(Sql::check(&analyze, Access::Writer).unwrap_err().sqlstate(), "0A000");
    assert_eq!(sqlstate(sql.query_blocking(statements[0])), "0A000");
    assert!(sql.query_blocking("CREATE TABLE t (x BIGINT)").is_err());
    assert!(sql.query_blocking("SELECT * FROM no_such_table").is_err());
}

#[test]
fn the_events_table_is_the_log_with_canonical_bodies() {
    let (_dir, sql) = demo();
    let counts = sql
        .query_blocking(
            "SELECT COUNT(*) AS n, MIN(lsn) AS first, MAX(lsn) AS last, \
             SUM(CASE WHEN kind = 'inference' THEN 1 ELSE 0 END) AS inferences, \
             (SELECT SUM(inferences) FROM epochs) AS by_epochs FROM events",
        )
        .unwrap();
    let n = col_i64(&counts, "n")[0];
    assert_eq!(col_i64(&counts, "first")[0], 1);
    assert_eq!(col_i64(&counts, "last")[0], n, "lsns are dense");
    assert_eq!(col_i64(&counts, "inferences"), col_i64(&counts, "by_epochs"));
    let first = sql.query_blocking("SELECT kind, body FROM events WHERE lsn = 1").unwrap();
    assert_eq!(col_str(&first, "kind"), vec!["datanet"]);
    assert_eq!(col_str(&first, "body"), vec![r#"{"datanet":"dn-000","owner":"org-00"}"#]);
    let settlements = sql
        .query_blocking("SELECT e.lsn FROM events e JOIN settlements s ON s.lsn = e.lsn WHERE e.kind = 'settlement'")
        .unwrap();
    assert_eq!(col_i64(&settlements, "lsn").len(), 3);
}

#[test]
fn inferences_and_attributions_come_from_the_log_and_conserve_fees() {
    let (_dir, sql) = demo();
    let n = sql.query_blocking("SELECT COUNT(*) AS n FROM inferences").unwrap();
    assert_eq!(col_i64(&n, "n"), vec![4_000]);
    // Per inference, contributor rewards never exceed the fee, and per epoch they equal the
    // contributor role's rewards.
    let over = sql
        .query_blocking(
            "SELECT COUNT(*) AS n FROM inferences i JOIN (SELECT lsn, SUM(reward) AS paid FROM attributions \
             GROUP BY lsn) a ON a.lsn = i.lsn WHERE a.paid > i.fee",
        )
        .unwrap();
    assert_eq!(col_i64(&over, "n"), vec![0]);
    let per_epoch = sql
        .query_blocking(
            "SELECT a.epoch, SUM(a.reward) AS by_entries, MAX(r.paid) AS by_rewards FROM attributions a \
             JOIN (SELECT epoch, SUM(amount) AS paid FROM rewards WHERE role = 'contributor' GROUP BY epoch) r \
             ON r.epoch = a.epoch GROUP BY a.epoch ORDER BY a.epoch",
        )
        .unwrap();
    assert_eq!(col_i64(&per_epoch, "by_entries"), col_i64(&per_epoch, "by_rewards"));
    assert_eq!(col_i64(&per_epoch, "epoch").len(), 4);
    let first = sql
        .query_blocking("SELECT attributions, epoch FROM inferences ORDER BY lsn LIMIT 1")
        .unwrap();
    let list = &col_str(&first, "attributions")[0];
    assert!(
        list.split(',').all(|e| e.rsplit_once(':').is_some_and(|(_, w)| w.parse::<u32>().is_ok())),
        "{list}"
    );
}

fn sqlstate(r: Result<Vec<RecordBatch>, QueryError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.sqlstate(),
    }
}

fn count(sql: &Sql, q: &str) -> i64 {
    col_i64(&sql.query_blocking(q).unwrap(), "n")[0]
}

#[test]
fn inserts_append_events_exactly_or_refuse_the_whole_statement() {
    let (_dir, sql) = demo();
    let inferences = count(&sql, "SELECT COUNT(*) AS n FROM inferences");
    // A model, contributions and a datanet that the demo ledger has.
    let model = col_str(
        &sql.query_blocking(
            "SELECT model FROM models WHERE base_model IS NULL ORDER BY model LIMIT 1",
        )
        .unwrap(),
        "model",
    )[0]
    .clone();
    let c = col_str(
        &sql.query_blocking(&format!(
            "SELECT c.contribution FROM contributions c JOIN models m ON strpos(m.datanets, c.datanet) > 0 \
             WHERE m.model = '{model}' AND NOT c.revoked ORDER BY c.contribution LIMIT 2"
        ))
        .unwrap(),
        "contribution",
    );
    let ok = format!(
        "INSERT INTO inferences VALUES ('sql-1', '{model}', 'u1', 1000, '{}:0.9,{}:0.3'), \
         ('sql-2', '{model}', 'u1', 2000, '{}:1')",
        c[0], c[1], c[0]
    );
    let n = sql.query_blocking(&ok).unwrap();
    assert_eq!(col_i64(&n, "count"), vec![2]);
    assert_eq!(count(&sql, "SELECT COUNT(*) AS n FROM inferences"), inferences + 2);
    let weights = sql
        .query_blocking("SELECT attributions FROM inferences WHERE inference = 'sql-1'")
        .unwrap();
    assert_eq!(
        col_str(&weights, "attributions"),
        vec![format!("{}:1000000,{}:333333", c[0], c[1])]
    );
    // Lossy values, bad lists, unknown references and duplicates: each refused with its code,
    // and nothing of the statement appended.
    for (q, code) in [
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', 5, ''), ('sql-4', '{model}', 'u', 1001.9, '')"), "22023"),
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', '12x', '')"), "22023"),
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', 5, '{}:-1')", c[0]), "22023"),
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', NULL, '')"), "23502"),
        ("INSERT INTO inferences VALUES ('sql-3', 'no-such-model', 'u', 5, '')".to_string(), "23503"),
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', 5, ''), ('sql-1', '{model}', 'u', 5, '')"), "23505"),
        (format!("INSERT INTO inferences (inference, model, consumer, fee, lsn) VALUES ('sql-3', '{model}', 'u', 5, 7)"), "22023"),
        ("INSERT INTO settlements VALUES (99)".to_string(), "22023"),
        // Every digit counts: this is not 1001.
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', 1001.00000000000001, '')"), "22023"),
        (format!("INSERT INTO inferences VALUES ('sql-3', '{model}', 'u', 5, '{}')", many_entries(1025)), "22023"),
        (format!("INSERT INTO datanets VALUES ('{}', 'o')", "d".repeat(20 << 20)), "22023"),
        ("INSERT INTO epochs VALUES (1, 'open', 1, NULL, 0, 0)".to_string(), "25006"),
    ] {
        assert_eq!(sqlstate(sql.query_blocking(&q)), code, "{q}");
    }
    assert_eq!(count(&sql, "SELECT COUNT(*) AS n FROM inferences"), inferences + 2);
    assert_eq!(
        sql.query_blocking(&format!(
            "INSERT INTO inferences VALUES ('sql-7', '{model}', 'u', 1001.000, '')"
        ))
        .map(|b| col_i64(&b, "count"))
        .unwrap(),
        vec![1],
        "an exact decimal is taken"
    );
    // A list of millions of entries is refused at its 1025th, and the message stays short.
    let huge = sql
        .query_blocking(&format!(
            "INSERT INTO inferences VALUES ('sql-8', '{model}', 'u', 5, '{}')",
            many_entries(2_000_000)
        ))
        .unwrap_err();
    assert_eq!(huge.sqlstate(), "22023");
    assert!(
        huge.to_string().contains("more than 1024 entries") && huge.to_string().len() < 1000,
        "{huge}"
    );
    let long_id = sql
        .query_blocking(&format!("INSERT INTO datanets VALUES ('{}', 'o')", "d".repeat(20 << 20)))
        .unwrap_err();
    assert!(long_id.to_string().contains("(20971520 bytes)") && long_id.to_string().len() < 1000);
    match sql.query_blocking(&format!("INSERT INTO inferences VALUES ('sql-5', '{model}', 'u', 5, ''), ('sql-6', '{model}', 'u', 1001.9, '')")) {
        Err(QueryError::Refused { row, field, value, .. }) => {
            assert_eq!((row, field.as_str(), value.as_str()), (2, "fee", "1001.9"));
        }
        other => panic!("{other:?}"),
    }
    // INSERT … SELECT appends in the query's order; columns may be named in any order.
    sql.query_blocking("INSERT INTO datanets (owner, datanet) SELECT 'sql-owner', 'dn-sql-' || datanet FROM datanets ORDER BY datanet DESC").unwrap();
    let added = sql
        .query_blocking("SELECT datanet FROM datanets WHERE owner = 'sql-owner' ORDER BY lsn")
        .unwrap();
    let added = col_str(&added, "datanet");
    assert!(added.len() > 1 && added.windows(2).all(|w| w[0] > w[1]), "{added:?}");
}

fn many_entries(n: usize) -> String {
    (0..n).map(|k| format!("c{k}:1")).collect::<Vec<_>>().join(",")
}

#[test]
fn copy_and_transaction_blocks_are_atomic() {
    let (_dir, sql) = demo();
    let rt = sql.database().runtime();
    let copy = |stmt: &str| {
        let s = Sql::parse(stmt).unwrap().statements.remove(0);
        tally_query::CopyIn::from_statement(&s).unwrap().unwrap()
    };
    let datanets = count(&sql, "SELECT COUNT(*) AS n FROM datanets");
    let csv = copy("COPY datanets (datanet, owner) FROM STDIN WITH (FORMAT csv, HEADER)");
    let mut idle = Session::default();
    assert_eq!(
        rt.block_on(sql.copy_in(&mut idle, &csv, b"datanet,owner\ncp-1,o\n\"cp-2\",o\n")).unwrap(),
        2
    );
    let bad =
        rt.block_on(sql.copy_in(&mut idle, &csv, b"datanet,owner\ncp-3,o\ncp 4,o\n")).unwrap_err();
    assert_eq!(bad.sqlstate(), "22023");
    assert!(bad.to_string().contains("row 2"), "{bad}");
    assert_eq!(count(&sql, "SELECT COUNT(*) AS n FROM datanets"), datanets + 2);
    // A block: each write checked against the ledger and the block's earlier writes.
    let mut session = Session::default();
    exec(&sql, &mut session, "BEGIN").unwrap();
    let text = copy("COPY datanets FROM STDIN");
    rt.block_on(sql.copy_in(&mut session, &text, b"blk-1\to\n")).unwrap();
    let dup = rt.block_on(sql.copy_in(&mut session, &text, b"blk-2\to\nblk-1\to\n")).unwrap_err();
    assert_eq!(dup.sqlstate(), "23505");
    assert!(dup.to_string().contains("row 2"), "{dup}");
    assert_eq!(session.block_rows(), Some(1), "a refused statement leaves the block as it was");
    assert_eq!(session.status(), Status::Failed, "and fails the block");
    assert_eq!(exec(&sql, &mut session, "SELECT 1").unwrap_err().sqlstate(), "25P02");
    exec(&sql, &mut session, "ROLLBACK").unwrap();
    exec(&sql, &mut session, "BEGIN").unwrap();
    rt.block_on(sql.copy_in(&mut session, &text, b"blk-1\to\n")).unwrap();
    assert_eq!(count(&sql, "SELECT COUNT(*) AS n FROM datanets WHERE datanet = 'blk-1'"), 0);
    assert_eq!(exec(&sql, &mut session, "COMMIT").unwrap().map(|d| d.tag), Some("COMMIT"));
    assert_eq!(count(&sql, "SELECT COUNT(*) AS n FROM datanets WHERE datanet = 'blk-1'"), 1);
    assert_eq!(session.status(), Status::Idle);
}

/// Runs one statement of `session` as a writer: its completion, or `None` for rows.
fn exec(sql: &Sql, session: &mut Session, text: &str) -> Result<Option<Done>, QueryError> {
    let statement = Sql::parse(text)?.statements.remove(0);
    let run = sql.execute(session, Access::Writer, Request::new(&statement, false), pending());
    match sql.database().runtime().block_on(run)? {
        Outcome::Done(done) => Ok(Some(done)),
        _ => Ok(None),
    }
}

#[test]
fn lsn_bounds_on_the_log_tables_keep_exactly_their_rows() {
    let (_dir, sql) = demo();
    let last = count(&sql, "SELECT MAX(lsn) AS n FROM events");
    for (filter, expected) in [
        ("lsn > 100", last - 100),
        ("lsn >= 100", last - 99),
        ("100 < lsn", last - 100),
        ("lsn BETWEEN 5 AND 9", 5),
        ("lsn = 7", 1),
        ("lsn < 10", 9),
        ("lsn <= 0", 0),
        ("lsn > 100 AND lsn <= 110", 10),
        ("lsn < 3 OR lsn > 100", 2 + last - 100),
        ("lsn > -5", last),
    ] {
        let n = count(&sql, &format!("SELECT COUNT(*) AS n FROM events WHERE {filter}"));
        assert_eq!(n, expected, "{filter}");
    }
    // The log's inference tables agree with the whole-log answer under a bound.
    let cut = last / 2;
    let bounded = count(&sql, &format!("SELECT COUNT(*) AS n FROM inferences WHERE lsn > {cut}"));
    let whole = count(
        &sql,
        &format!("SELECT SUM(CASE WHEN lsn > {cut} THEN 1 ELSE 0 END) AS n FROM inferences"),
    );
    assert_eq!(bounded, whole);
    let joined = count(
        &sql,
        &format!(
            "SELECT COUNT(*) AS n FROM attributions a JOIN inferences i ON i.lsn = a.lsn \
             WHERE a.lsn > {cut} AND i.lsn < {cut}"
        ),
    );
    assert_eq!(joined, 0);
}

#[test]
fn savepoints_undo_part_of_a_block() {
    let (_dir, sql) = demo();
    let rt = sql.database().runtime();
    let copy = {
        let s = Sql::parse("COPY datanets FROM STDIN").unwrap().statements.remove(0);
        tally_query::CopyIn::from_statement(&s).unwrap().unwrap()
    };
    let mut session = Session::default();
    // Each step is a statement, or (text empty) a COPY of `data`.
    let mut step = |text: &str, data: &[u8]| {
        if text.is_empty() {
            rt.block_on(sql.copy_in(&mut session, &copy, data)).map(|_| None)
        } else {
            exec(&sql, &mut session, text)
        }
    };
    step("BEGIN", b"").unwrap();
    step("", b"sp-1\to\n").unwrap();
    step("SAVEPOINT a", b"").unwrap();
    step("", b"sp-2\to\n").unwrap();
    step("SAVEPOINT b", b"").unwrap();
    step("", b"sp-3\to\n").unwrap();
    step("ROLLBACK TO SAVEPOINT a", b"").unwrap();
    let b_gone = step("ROLLBACK TO SAVEPOINT b", b"").unwrap_err();
    assert_eq!(b_gone.sqlstate(), "3B001", "b went with a");
    // The error failed the block; ROLLBACK TO a savepoint ends that, as in PostgreSQL.
    assert_eq!(step("SELECT 1", b"").unwrap_err().sqlstate(), "25P02");
    step("ROLLBACK TO SAVEPOINT a", b"").unwrap();
    step("", b"sp-2\to\n").unwrap();
    step("RELEASE SAVEPOINT a", b"").unwrap();
    assert_eq!(step("RELEASE SAVEPOINT a", b"").unwrap_err().sqlstate(), "3B001");
    // COMMIT of a failed block rolls back.
    assert_eq!(step("COMMIT", b"").unwrap().map(|d| d.tag), Some("ROLLBACK"));
    step("BEGIN", b"").unwrap();
    step("", b"sp-1\to\n").unwrap();
    step("SAVEPOINT a", b"").unwrap();
    step("", b"sp-3\to\n").unwrap();
    step("ROLLBACK TO SAVEPOINT a", b"").unwrap();
    step("", b"sp-2\to\n").unwrap();
    assert_eq!(step("SAVEPOINT x", b"").unwrap().map(|d| d.tag), Some("SAVEPOINT"));
    assert_eq!(step("COMMIT", b"").unwrap().map(|d| d.tag), Some("COMMIT"));
    assert_eq!(session.block_rows(), None);
    let got = sql
        .query_blocking("SELECT datanet FROM datanets WHERE datanet LIKE 'sp-%' ORDER BY datanet")
        .unwrap();
    assert_eq!(col_str(&got, "datanet"), vec!["sp-1", "sp-2"]);
}

#[test]
fn the_log_tables_stream_in_chunks_with_the_same_answers() {
    let (_dir, sql) = demo();
    let small = sql.clone().with_log_chunk(997);
    for q in [
        "SELECT COUNT(*) AS n, SUM(lsn) AS s, CAST(MAX(length(body)) AS BIGINT) AS b FROM events",
        "SELECT COUNT(*) AS n, SUM(fee) AS s, SUM(epoch) AS b FROM inferences",
        "SELECT COUNT(*) AS n, SUM(reward) AS s, SUM(weight) AS b FROM attributions",
        "SELECT COUNT(*) AS n, SUM(lsn) AS s, MIN(lsn) AS b FROM events WHERE lsn BETWEEN 990 AND 3001",
    ] {
        let (a, b) = (sql.query_blocking(q).unwrap(), small.query_blocking(q).unwrap());
        for c in ["n", "s", "b"] {
            assert_eq!(col_i64(&a, c), col_i64(&b, c), "{q}: {c}");
        }
        assert!(col_i64(&a, "n")[0] > 0, "{q}");
    }
    let rows = small.query_blocking("SELECT lsn FROM events ORDER BY lsn").unwrap();
    let lsns = col_i64(&rows, "lsn");
    assert!(lsns.windows(2).all(|w| w[1] == w[0] + 1) && lsns[0] == 1, "dense, every lsn once");
}

#[test]
fn balance_lookups_by_account_agree_with_the_whole_table() {
    let (_dir, sql) = demo();
    let all = sql.query_blocking("SELECT account, earned FROM balances ORDER BY account").unwrap();
    let (accounts, earned) = (col_str(&all, "account"), col_i64(&all, "earned"));
    let (a, b) = (&accounts[3], &accounts[40]);
    let one = |q: &str| {
        let r = sql.query_blocking(q).unwrap();
        (col_str(&r, "account"), col_i64(&r, "earned"))
    };
    assert_eq!(
        one(&format!("SELECT account, earned FROM balances WHERE account = '{a}'")),
        (vec![a.clone()], vec![earned[3]])
    );
    assert_eq!(
        one(&format!("SELECT account, earned FROM balances WHERE '{a}' = account AND earned > 0")),
        (vec![a.clone()], vec![earned[3]])
    );
    assert_eq!(
        one(&format!(
            "SELECT account, earned FROM balances WHERE account = '{a}' OR account = '{b}' ORDER BY account"
        )),
        (vec![a.clone(), b.clone()], vec![earned[3], earned[40]])
    );
    assert_eq!(one("SELECT account, earned FROM balances WHERE account = 'nobody'").0.len(), 0);
    assert_eq!(
        one(&format!(
            "SELECT account, earned FROM balances WHERE account = '{a}' AND account = '{b}'"
        ))
        .0
        .len(),
        0
    );
    // Two scans of the table in one statement: one keyed, one not.
    let n = count(
        &sql,
        &format!(
            "SELECT COUNT(*) AS n FROM balances x JOIN balances y ON x.earned >= y.earned WHERE x.account = '{a}'"
        ),
    );
    let below = earned.iter().filter(|e| **e <= earned[3]).count() as i64;
    assert_eq!(n, below);
}

#[test]
fn bounded_statements_read_only_what_they_ask_for() {
    let (_dir, sql) = demo();
    // EXPLAIN shows the filters the scans were given (and so the snapshot builds from).
    let plan = |q: &str| {
        let b = sql.query_blocking(&format!("EXPLAIN {q}")).unwrap();
        col_str(&b, "plan").join("\n")
    };
    let p = plan("SELECT earned FROM balances WHERE account = 'org-00'");
    assert!(p.contains("account = Utf8(\"org-00\")") && p.contains("TableScan: balances"), "{p}");
    let p = plan("SELECT COUNT(*) FROM events WHERE lsn > 100");
    assert!(p.contains("TableScan: events") && p.contains("lsn > Int64(100)"), "{p}");
}

#[test]
fn scalar_subqueries_answer_as_in_postgresql() {
    let (_dir, sql) = demo();
    // Correlated and aggregated: one value per outer row (never silently NULL).
    let per_datanet = sql
        .query_blocking(
            "SELECT d.datanet, (SELECT count(*) FROM contributions c WHERE c.datanet = d.datanet) AS n \
             FROM datanets d ORDER BY d.datanet",
        )
        .unwrap();
    let joined = sql
        .query_blocking(
            "SELECT d.datanet, count(c.contribution) AS n FROM datanets d \
             LEFT JOIN contributions c ON c.datanet = d.datanet GROUP BY d.datanet ORDER BY d.datanet",
        )
        .unwrap();
    assert_eq!(col_i64(&per_datanet, "n"), col_i64(&joined, "n"));
    assert!(col_i64(&per_datanet, "n").iter().sum::<i64>() > 0);
    // Correlated, not aggregated: the one row's value, NULL for none, 21000 for more.
    let one = sql
        .query_blocking(
            "SELECT c.contribution, (SELECT d.owner FROM datanets d WHERE d.datanet = c.datanet) AS owner \
             FROM contributions c ORDER BY c.contribution LIMIT 3",
        )
        .unwrap();
    assert!(col_str(&one, "owner").iter().all(|o| !o.is_empty()));
    let none = sql
        .query_blocking(
            "SELECT d.datanet, (SELECT c.contributor FROM contributions c WHERE c.contribution = d.datanet) AS x \
             FROM datanets d LIMIT 2",
        )
        .unwrap();
    assert_eq!(none[0].column_by_name("x").unwrap().null_count(), none[0].num_rows());
    let many = sql.query_blocking(
        "SELECT d.datanet, (SELECT c.contributor FROM contributions c WHERE c.datanet = d.datanet) \
         FROM datanets d",
    );
    assert_eq!(sqlstate(many), "21000");
    // A condition on the outer row alone, inside the subquery (SQLAlchemy's get_columns).
    let flagged = sql
        .query_blocking(
            "SELECT c.contribution, (SELECT d.owner FROM datanets d WHERE c.revoked AND d.datanet = c.datanet) AS owner \
             FROM contributions c ORDER BY c.contribution",
        )
        .unwrap();
    let revoked = count(&sql, "SELECT count(*) AS n FROM contributions WHERE revoked");
    let owners =
        flagged.iter().map(|b| b.num_rows() - b.column_by_name("owner").unwrap().null_count());
    assert_eq!(owners.sum::<usize>() as i64, revoked);
    // A value that reads the outer row too; no row is NULL whatever the expression.
    let lifted = sql
        .query_blocking(
            "SELECT c.contribution, (SELECT d.owner || '/' || c.contributor FROM datanets d \
             WHERE d.datanet = c.datanet) AS x FROM contributions c ORDER BY c.contribution LIMIT 5",
        )
        .unwrap();
    let joined = sql
        .query_blocking(
            "SELECT c.contribution, d.owner || '/' || c.contributor AS x FROM contributions c \
             JOIN datanets d ON d.datanet = c.datanet ORDER BY c.contribution LIMIT 5",
        )
        .unwrap();
    assert_eq!(col_str(&lifted, "x"), col_str(&joined, "x"));
    let empty = sql
        .query_blocking(
            "SELECT (SELECT coalesce(d.owner, c.contributor) FROM datanets d \
             WHERE d.datanet = c.contribution) AS x FROM contributions c LIMIT 3",
        )
        .unwrap();
    assert_eq!(empty[0].column_by_name("x").unwrap().null_count(), empty[0].num_rows());
    // Uncorrelated, with a parameter-free inner query: its one value.
    let max = count(&sql, "SELECT (SELECT max(fee) FROM inferences) AS n");
    assert_eq!(max, count(&sql, "SELECT max(fee) AS n FROM inferences"));
    // Uncorrelated: no row is NULL (not an error), two rows are 21000 (not the first one).
    let nothing =
        sql.query_blocking("SELECT (SELECT fee FROM inferences WHERE inference = 'none') AS x");
    assert_eq!(nothing.unwrap()[0].column(0).null_count(), 1);
    assert_eq!(sqlstate(sql.query_blocking("SELECT (SELECT fee FROM inferences) AS x")), "21000");
}

#[test]
fn names_cast_to_oid_types_resolve_with_or_without_their_schema() {
    let (_dir, sql) = demo();
    let Ok(()) = sql.database().runtime().block_on(sql.add_postgres_catalog()) else {
        panic!("the catalog")
    };
    let oids = |q: &str| col_i64(&sql.query_blocking(q).unwrap(), "n");
    let plain = oids("SELECT CAST('array_in'::regproc AS BIGINT) AS n");
    assert_eq!(plain, oids("SELECT CAST('pg_catalog.array_in'::regproc AS BIGINT) AS n"));
    assert!(plain[0] > 0);
    let balances = oids("SELECT CAST('balances'::regclass AS BIGINT) AS n");
    assert_eq!(balances, oids("SELECT CAST('public.balances'::regclass AS BIGINT) AS n"));
}

#[test]
fn one_inference_is_read_where_it_is_not_searched_for() {
    let (_dir, sql) = demo();
    let ids = col_str(
        &sql.query_blocking("SELECT inference FROM inferences ORDER BY lsn DESC LIMIT 3").unwrap(),
        "inference",
    );
    for id in &ids {
        let q = |table: &str| format!("SELECT * FROM {table} WHERE inference = '{id}'");
        let named = sql.query_blocking(&q("attributions")).unwrap();
        let scanned = sql
            .query_blocking(&format!("SELECT * FROM attributions WHERE inference || '' = '{id}'"))
            .unwrap();
        let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert!(rows(&named) > 0);
        assert_eq!(col_str(&named, "contribution"), col_str(&scanned, "contribution"));
        assert_eq!(rows(&sql.query_blocking(&q("inferences")).unwrap()), 1);
    }
    assert_eq!(
        count(&sql, "SELECT count(*) AS n FROM attributions WHERE inference = 'never-written'"),
        0
    );
}

#[test]
fn contribution_lookups_by_id_agree_with_the_whole_table() {
    let (_dir, sql) = demo();
    let ids = col_str(
        &sql.query_blocking("SELECT contribution FROM contributions ORDER BY earned DESC LIMIT 5")
            .unwrap(),
        "contribution",
    );
    for id in ids.iter().map(String::as_str).chain(["no-such-contribution"]) {
        let cols =
            "contribution, datanet, contributor, content_hash, lsn, revoked, inferences, earned";
        let keyed = sql
            .query_blocking(&format!(
                "SELECT {cols} FROM contributions WHERE contribution = '{id}'"
            ))
            .unwrap();
        let scanned = sql
            .query_blocking(&format!(
                "SELECT {cols} FROM contributions WHERE contribution || '' = '{id}'"
            ))
            .unwrap();
        let show = |b: &[RecordBatch]| {
            datafusion::arrow::util::pretty::pretty_format_batches(b).unwrap().to_string()
        };
        assert_eq!(show(&keyed), show(&scanned), "{id}");
    }
}

/// Runs `planned` (of `statement`) with `params` bound, as a reader; its rows sorted by
/// `account` when `sort` (a plan without ORDER BY gives them in any order).
fn run_bound(
    sql: &Sql,
    statement: &datafusion::sql::sqlparser::ast::Statement,
    planned: &tally_query::Planned,
    params: Vec<datafusion::scalar::ScalarValue>,
    sort: bool,
) -> Vec<RecordBatch> {
    let rt = sql.database().runtime();
    let params =
        datafusion::common::ParamValues::List(params.into_iter().map(Into::into).collect());
    let request =
        Request { statement, plan: Some(planned.clone()), params: Some(params), heavy: false };
    let mut session = Session::default();
    let outcome = rt.block_on(sql.execute(&mut session, Access::Reader, request, pending()));
    let Ok(Outcome::Rows(rows)) = outcome else { panic!("rows") };
    let batches = rt.block_on(rows.collect()).unwrap();
    if !sort || batches.is_empty() {
        return batches;
    }
    let all = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let account = all.column_by_name("account").expect("an account column");
    let order = datafusion::arrow::compute::sort_to_indices(account, None, None).unwrap();
    vec![datafusion::arrow::compute::take_record_batch(&all, &order).unwrap()]
}

#[test]
fn a_query_planned_once_answers_each_binding_as_if_planned_afresh() {
    use datafusion::scalar::ScalarValue;
    let (_dir, sql) = demo();
    let rt = sql.database().runtime();
    let show = |b: &[RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(b).unwrap().to_string()
    };
    let prepare = |text: &str| {
        let statement = Sql::parse(text).unwrap().statements.remove(0);
        let planned = rt.block_on(sql.plan_request(&statement, false)).unwrap();
        (statement, planned)
    };
    // A LIMIT $n decides what the optimizer does (LIMIT 0 is no rows): planned, not optimized.
    let (_, planned) = prepare("SELECT account FROM balances ORDER BY account LIMIT $1");
    assert!(matches!(planned, tally_query::Planned::Logical(_)));
    let (limited, planned) = prepare(
        "SELECT account, earned FROM balances WHERE account = $1 OR earned > $2 \
         ORDER BY earned DESC, account LIMIT $3",
    );
    assert!(matches!(planned, tally_query::Planned::Logical(_)));
    let (filtered, once) =
        prepare("SELECT account, earned FROM balances WHERE account = $1 OR earned > $2");
    assert!(matches!(once, tally_query::Planned::Optimized { .. }));
    let fresh = |account: &str, earned: i64, tail: &str| {
        sql.query_blocking(&format!(
            "SELECT account, earned FROM balances WHERE account = '{account}' OR earned > {earned} {tail}"
        ))
        .unwrap()
    };
    for (account, earned) in [("org-00", 30_000i16), ("none", 1_000), ("org-01", 0)] {
        // `earned` comes as a smallint: coerced once bound.
        let params = vec![ScalarValue::from(account), ScalarValue::Int16(Some(earned))];
        let bound = run_bound(&sql, &filtered, &once, params, true);
        let expected = fresh(account, earned.into(), "ORDER BY account");
        assert_eq!(show(&bound), show(&expected), "{account} {earned}");
    }
    for (account, earned, limit) in
        [("org-00", 10_000_000i64, 5i16), ("none", 1_000, 3), ("org-01", 0, 0)]
    {
        // The limit comes as a smallint, as a client may send it: it is coerced once bound.
        let params = vec![
            ScalarValue::from(account),
            ScalarValue::Int64(Some(earned)),
            ScalarValue::Int16(Some(limit)),
        ];
        let bound = run_bound(&sql, &limited, &planned, params, false);
        let expected =
            fresh(account, earned, &format!("ORDER BY earned DESC, account LIMIT {limit}"));
        assert_eq!(show(&bound), show(&expected), "{account} {earned} {limit}");
    }
}

#[test]
fn direct_reads_answer_exactly_as_datafusion_does() {
    use datafusion::scalar::ScalarValue;
    let (_dir, sql) = demo();
    let general = sql.clone().without_direct_reads();
    let rt = sql.database().runtime();
    let show = |b: &[RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(b).unwrap().to_string()
    };
    let account = col_str(
        &sql.query_blocking("SELECT account FROM balances ORDER BY earned DESC LIMIT 1").unwrap(),
        "account",
    )
    .remove(0);
    let contribution = col_str(
        &sql.query_blocking("SELECT contribution FROM contributions WHERE earned > 0").unwrap(),
        "contribution",
    )
    .remove(0);
    let (a, c) = (&account, &contribution);
    let queries = [
        format!("SELECT earned, settled, pending FROM balances WHERE account = '{a}'"),
        format!("SELECT * FROM balances WHERE '{a}' = account AND account = '{a}'"),
        format!("SELECT b.earned AS e, b.account FROM balances b WHERE b.account = '{a}'"),
        format!("SELECT * FROM balances WHERE account = '{a}' AND account = 'someone else'"),
        "SELECT * FROM balances WHERE account = 'nobody'".into(),
        "SELECT account, earned FROM balances ORDER BY earned DESC, account LIMIT 100".into(),
        "SELECT account FROM balances ORDER BY earned DESC, account LIMIT 10 OFFSET 5".into(),
        "SELECT account FROM balances ORDER BY pending, account DESC OFFSET 3".into(),
        "SELECT datanet, earned FROM datanets ORDER BY earned DESC, datanet".into(),
        "SELECT model, base_model FROM models ORDER BY base_model NULLS FIRST, model".into(),
        "SELECT model, base_model FROM models ORDER BY base_model DESC NULLS LAST, model".into(),
        "SELECT * FROM epochs ORDER BY epoch DESC".into(),
        format!("SELECT * FROM contributions WHERE contribution = '{c}'"),
        format!("SELECT contributor AS who, earned FROM contributions WHERE contribution = '{c}'"),
        "SELECT * FROM (SELECT account, earned FROM balances ORDER BY earned, account LIMIT 9) t LIMIT 4"
            .into(),
        "SELECT count(*) FROM inferences".into(),
        "SELECT COUNT(1) AS n FROM public.events".into(),
        "SELECT count(*) AS how_many FROM events".into(),
        "SELECT count(*) FROM attributions".into(),
    ];
    for q in &queries {
        let direct = sql.query_blocking(q).unwrap();
        let expected = general.query_blocking(q).unwrap();
        assert_eq!(show(&direct), show(&expected), "{q}");
        let schemas = |b: &[RecordBatch]| b.iter().map(|b| b.schema()).collect::<Vec<_>>();
        assert_eq!(schemas(&direct), schemas(&expected), "{q}");
    }
    // Without an order, any rows are right: as many as asked for.
    let rows = |b: Vec<RecordBatch>| b.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows(sql.query_blocking("SELECT * FROM contributions LIMIT 7").unwrap()), 7);
    let q = "SELECT contribution FROM contributions LIMIT 7 OFFSET 3";
    assert_eq!(rows(sql.query_blocking(q).unwrap()), 7);
    let q = "SELECT contribution FROM contributions LIMIT 7 OFFSET 1000000000";
    assert_eq!(rows(sql.query_blocking(q).unwrap()), 0);
    // A prepared lookup binds its key at each Execute; a NULL key goes the general way.
    let text = "SELECT earned, settled, pending FROM balances WHERE account = $1";
    let statement = Sql::parse(text).unwrap().statements.remove(0);
    let planned = rt.block_on(sql.plan_request(&statement, false)).unwrap();
    assert!(matches!(planned, tally_query::Planned::Optimized { direct: Some(_), .. }));
    let unplanned = rt.block_on(general.plan_request(&statement, false)).unwrap();
    assert!(matches!(unplanned, tally_query::Planned::Optimized { direct: None, .. }));
    for key in [ScalarValue::from(a.as_str()), "nobody".into(), ScalarValue::Utf8(None)] {
        let bound = run_bound(&sql, &statement, &planned, vec![key.clone()], false);
        let expected = run_bound(&general, &statement, &unplanned, vec![key.clone()], false);
        assert_eq!(show(&bound), show(&expected), "{key:?}");
    }
}

/// Every row of `q`'s answer as text, in the answer's order.
fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

/// Queries whose answers must be those of the ledger at a past lsn.
const AS_OF_QUERIES: [&str; 9] = [
    "SELECT * FROM balances ORDER BY account",
    "SELECT * FROM rewards ORDER BY epoch, account, role",
    "SELECT * FROM epochs ORDER BY epoch",
    "SELECT contribution, revoked, inferences, earned FROM contributions ORDER BY contribution",
    "SELECT datanet, earned FROM datanets ORDER BY datanet",
    "SELECT count(*) AS n, sum(fee) AS fees, max(lsn) AS last FROM inferences",
    "SELECT count(*) AS n FROM inferences",
    "SELECT count(*) AS n FROM attributions",
    "SELECT inference, contribution, reward FROM attributions ORDER BY lsn, contribution",
];

#[test]
fn as_of_lsn_shows_the_ledger_as_it_stood_then() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path(),
        Options { segment_bytes: 4 << 20, snapshot_every_events: 20_000, ..Options::default() },
    )
    .unwrap();
    let sql = Sql::new(Arc::new(db)).unwrap();
    // The answers the live ledger gave at a few lsns as it grew (revocations and closes between).
    let mut then: Vec<(u64, Vec<Vec<String>>)> = Vec::new();
    let events: Vec<_> = Generator::new(Shape::demo(9, 3_000)).flatten().collect();
    for (k, batch) in events.chunks(2_000).enumerate() {
        let applied = sql.database().write(batch.to_vec()).unwrap();
        if k % 4 == 1 {
            let answers = AS_OF_QUERIES.map(|q| rows_of(&sql.query_blocking(q).unwrap())).to_vec();
            then.push((applied.last_lsn, answers));
        }
    }
    assert!(then.len() >= 3, "{} points", then.len());
    let last = sql.database().read(|l| l.last_lsn());
    let all_events = count(&sql, "SELECT count(*) AS n FROM events");
    for (lsn, answers) in &then {
        for (q, expected) in AS_OF_QUERIES.iter().zip(answers) {
            let got = sql.query_blocking(&format!("SET tally.as_of_lsn = {lsn}; {q}")).unwrap();
            assert_eq!(&rows_of(&got), expected, "at lsn {lsn}: {q}");
        }
        // `events` is the log: never shortened.
        let n = sql.query_blocking(&format!(
            "SET tally.as_of_lsn = {lsn}; SELECT count(*) AS n FROM events"
        ));
        assert_eq!(col_i64(&n.unwrap(), "n")[0], all_events);
    }
    // After RESET, the live ledger again.
    let live = rows_of(&sql.query_blocking(AS_OF_QUERIES[0]).unwrap());
    let reset =
        format!("SET tally.as_of_lsn = {}; RESET tally.as_of_lsn; {}", then[0].0, AS_OF_QUERIES[0]);
    assert_eq!(rows_of(&sql.query_blocking(&reset).unwrap()), live);

    // A past lsn is checked when set; a session reading the past does not write.
    let past_end = sql.query_blocking(&format!("SET tally.as_of_lsn = {}", last + 1));
    assert_eq!(sqlstate(past_end), "22023");
    assert_eq!(sqlstate(sql.query_blocking("SET tally.as_of_lsn = 'yesterday'")), "22023");
    let write = "SET tally.as_of_lsn = 5; INSERT INTO datanets VALUES ('dn-late', 'o')";
    assert_eq!(sqlstate(sql.query_blocking(write)), "25006");
    assert_eq!(sql.database().read(|l| l.last_lsn()), last, "nothing written");
    // Lsn 0 is the empty ledger.
    let empty = sql.query_blocking("SET tally.as_of_lsn = 0; SELECT count(*) AS n FROM balances");
    assert_eq!(col_i64(&empty.unwrap(), "n")[0], 0);
}

#[test]
fn simulate_settlement_settles_an_epoch_again_beside_what_was_settled() {
    let (_dir, sql) = demo();
    let epochs =
        sql.query_blocking("SELECT epoch, status, fees FROM epochs ORDER BY epoch").unwrap();
    let (numbers, fees) = (col_i64(&epochs, "epoch"), col_i64(&epochs, "fees"));
    assert!(numbers.len() >= 2, "the demo has closed epochs and an open one");
    for (&epoch, &fees) in numbers.iter().zip(&fees) {
        // Under any split the epoch's fees are all paid out, to the unit.
        let q = format!(
            "SELECT sum(amount) AS paid, sum(actual) AS settled, count(*) AS n \
             FROM simulate_settlement({epoch}, 500, 1500, 500)"
        );
        let b = sql.query_blocking(&q).unwrap();
        assert_eq!((col_i64(&b, "paid")[0], col_i64(&b, "settled")[0]), (fees, fees), "{q}");
        // Everything to the protocol: one row for $protocol holds all of it.
        let q = format!(
            "SELECT account, role, amount, diff FROM simulate_settlement({epoch}, 10000, 0, 0) \
             WHERE amount > 0"
        );
        let b = sql.query_blocking(&q).unwrap();
        assert_eq!(col_str(&b, "account"), ["$protocol"], "{q}");
        assert_eq!(col_i64(&b, "amount"), [fees]);
    }
    // Under the split in force all epoch long, nothing changes. The demo's policy change comes
    // after epoch 1 opens, so epoch 1 ran under the default split throughout? Find an epoch
    // with no policy event inside it and the split in force at its start.
    let policies = sql
        .query_blocking("SELECT lsn, protocol_bps, model_bps, base_bps FROM policies ORDER BY lsn")
        .unwrap();
    let p_lsn = col_i64(&policies, "lsn");
    let e = sql.query_blocking("SELECT epoch, opened_lsn, coalesce(closed_lsn, 9223372036854775807) AS closed FROM epochs ORDER BY epoch").unwrap();
    let (opened, closed) = (col_i64(&e, "opened_lsn"), col_i64(&e, "closed"));
    let mut checked = 0;
    for (k, &epoch) in numbers.iter().enumerate() {
        if p_lsn.iter().any(|&p| p > opened[k] && p < closed[k]) {
            continue;
        }
        let in_force = p_lsn.iter().rposition(|&p| p < opened[k]);
        let bps = in_force.map_or((1000, 2000, 1000), |i| {
            let get = |c: &str| col_i64(&policies, c)[i];
            (get("protocol_bps"), get("model_bps"), get("base_bps"))
        });
        let q = format!(
            "SELECT count(*) AS n, sum(abs(diff)) AS moved FROM simulate_settlement({epoch}, {}, {}, {})",
            bps.0, bps.1, bps.2
        );
        let b = sql.query_blocking(&q).unwrap();
        assert!(col_i64(&b, "n")[0] > 0);
        assert_eq!(col_i64(&b, "moved")[0], 0, "{q}");
        checked += 1;
    }
    assert!(checked > 0, "an epoch ran under one split");
    // Arguments are checked; nothing is written.
    let last = sql.database().read(|l| l.last_lsn());
    for bad in [
        "simulate_settlement(99, 1000, 2000, 1000)",
        "simulate_settlement(0, 1000, 2000, 1000)",
        "simulate_settlement(1, 6000, 6000, 0)",
        "simulate_settlement(1, -1, 2000, 1000)",
        "simulate_settlement(1, 1000, 2000)",
        "simulate_settlement(1, 'x', 2000, 1000)",
    ] {
        let r = sql.query_blocking(&format!("SELECT * FROM {bad}"));
        assert_eq!(sqlstate(r), "22023", "{bad}");
    }
    assert_eq!(sql.database().read(|l| l.last_lsn()), last);
}

#[test]
fn proofs_roots_and_checkpoints_answer_in_sql() {
    use tally_engine::merkle::{self, verify_consistency, verify_inclusion};
    let (_dir, sql) = demo();
    let db = sql.database().clone();
    let (size, root) = db.ledger_root().unwrap();
    let b = sql.query_blocking("SELECT tree_size, root FROM ledger_root()").unwrap();
    assert_eq!(
        (col_i64(&b, "tree_size")[0] as u64, col_str(&b, "root")[0].clone()),
        (size, merkle::to_hex(&root))
    );
    let half = size / 2;
    let b = sql.query_blocking(&format!("SELECT root FROM ledger_root_at({half})")).unwrap();
    assert_eq!(col_str(&b, "root")[0], merkle::to_hex(&db.ledger_root_at(half).unwrap()));
    // Under time travel the root is the one at that lsn.
    let b = sql
        .query_blocking(&format!(
            "SET tally.as_of_lsn = {half}; SELECT tree_size, root FROM ledger_root()"
        ))
        .unwrap();
    assert_eq!(col_i64(&b, "tree_size")[0] as u64, half);
    assert_eq!(col_str(&b, "root")[0], merkle::to_hex(&db.ledger_root_at(half).unwrap()));

    let hash = |s: &str| -> merkle::Hash {
        let v: Vec<u8> =
            (0..64).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    };
    let path_of = |doc: &serde_json::Value| -> Vec<merkle::Hash> {
        doc["path"].as_array().unwrap().iter().map(|h| hash(h.as_str().unwrap())).collect()
    };
    // An inclusion proof's JSON document verifies from its own fields.
    let q = format!("SELECT leaf_hash, proof FROM inclusion_proof(7, {half})");
    let b = sql.query_blocking(&q).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&col_str(&b, "proof")[0]).unwrap();
    let leaf = tally_engine::log_tree::log_leaf_hash(
        7,
        doc["ts_micros"].as_i64().unwrap(),
        doc["body"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(merkle::to_hex(&leaf), col_str(&b, "leaf_hash")[0]);
    assert!(verify_inclusion(&leaf, 6, half, &path_of(&doc), &hash(doc["root"].as_str().unwrap())));
    let q = format!("SELECT proof FROM consistency_proof({half}, {size})");
    let doc: serde_json::Value =
        serde_json::from_str(&col_str(&sql.query_blocking(&q).unwrap(), "proof")[0]).unwrap();
    let (old, new) =
        (hash(doc["old_root"].as_str().unwrap()), hash(doc["new_root"].as_str().unwrap()));
    assert!(verify_consistency(half, size, &old, &new, &path_of(&doc)));
    assert_eq!(new, root);
    // A payout proof: the account's leaf is in epoch 1's payout set.
    let b = sql
        .query_blocking(
            "SELECT account, amount FROM payouts WHERE epoch = 1 ORDER BY account LIMIT 1 OFFSET 3",
        )
        .unwrap();
    let (account, amount) = (col_str(&b, "account")[0].clone(), col_i64(&b, "amount")[0]);
    let q = format!("SELECT proof FROM payout_proof(1, '{account}')");
    let doc: serde_json::Value =
        serde_json::from_str(&col_str(&sql.query_blocking(&q).unwrap(), "proof")[0]).unwrap();
    assert_eq!(doc["amount"].as_i64().unwrap(), amount);
    let leaf = merkle::leaf_hash(&merkle::leaf_data(&account, amount as u64));
    let settled =
        sql.query_blocking("SELECT payouts_root FROM settlements WHERE epoch = 1").unwrap();
    let payouts_root = hash(&col_str(&settled, "payouts_root")[0]);
    let (index, n) = (doc["leaf_index"].as_u64().unwrap(), doc["tree_size"].as_u64().unwrap());
    assert!(verify_inclusion(&leaf, index, n, &path_of(&doc), &payouts_root));
    // Checkpoints: one per epoch close, then one on demand (once per tree size).
    let closed = count(&sql, "SELECT count(*) AS n FROM epochs WHERE status = 'closed'");
    assert_eq!(count(&sql, "SELECT count(*) AS n FROM checkpoints"), closed);
    let published =
        sql.query_blocking("SELECT tree_size, key_id FROM publish_checkpoint()").unwrap();
    assert_eq!(col_i64(&published, "tree_size")[0] as u64, size);
    sql.query_blocking("SELECT * FROM publish_checkpoint()").unwrap();
    assert_eq!(count(&sql, "SELECT count(*) AS n FROM checkpoints"), closed + 1);
    // Arguments and sizes a client gets wrong are named (22023); nothing is written.
    for bad in [
        "inclusion_proof(0, 5)".to_string(),
        format!("inclusion_proof(10, {})", size + 1),
        "inclusion_proof(10, 5)".into(),
        "consistency_proof(5, 2)".into(),
        "ledger_root_at(-1)".into(),
        "inclusion_proof('a', 1)".into(),
        "payout_proof(99, 'x')".into(),
        "payout_proof(1, 5)".into(),
        "ledger_root(1)".into(),
    ] {
        assert_eq!(sqlstate(sql.query_blocking(&format!("SELECT * FROM {bad}"))), "22023", "{bad}");
    }
}
