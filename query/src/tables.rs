//! The read tables of surface.md that come from the engine state, as Arrow record batches with
//! the contract's names and types (TEXT → Utf8, BIGINT → Int64, BOOLEAN, TIMESTAMP → microsecond
//! timestamps in UTC). Builds copies from a `&Ledger`; never holds on to the state.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use tally_engine::LoggedEvent;
use tally_engine::{json, merkle, Ledger};
use tally_storage::{Database, ScanCursor};

/// Every read table this module builds, by name.
pub const TABLES: &[&str] = &[
    "datanets",
    "contributions",
    "models",
    "revocations",
    "policies",
    "settlements",
    "rewards",
    "balances",
    "payouts",
    "epochs",
];

/// Whether `name` is any table of surface.md (state tables and the log's tables) or the
/// node's `cluster` table.
pub fn is_table(name: &str) -> bool {
    TABLES.contains(&name) || matches!(name, "events" | "inferences" | "attributions" | "cluster")
}

/// The `cluster` table: this node's view of each member of its Raft group (docs/cluster.md).
/// `lag` is how many log entries a member is behind the leader's last one, known on the
/// leader (for itself, everywhere); `reachable` is whether the leader hears from it (for the
/// leader itself: true; on a follower, only this node's own row is known).
pub fn cluster(status: &tally_storage::cluster::Status) -> Result<RecordBatch, ArrowError> {
    let role = |m: &tally_storage::cluster::Member| {
        if m.id == status.id {
            status.role.as_str()
        } else if Some(m.id) == status.leader {
            "leader"
        } else if m.voter {
            "follower"
        } else {
            "learner"
        }
    };
    let last = status.last_log_index;
    let matched = |m: &tally_storage::cluster::Member| {
        if m.id == status.id {
            last
        } else {
            m.matched
        }
    };
    let known = |m: &tally_storage::cluster::Member| m.id == status.id || m.matched.is_some();
    let rows = &status.members;
    let opt = |v: Vec<Option<u64>>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(v.into_iter().map(|x| x.map(|x| x as i64))))
    };
    batch(
        vec![
            bigint("node"),
            text("address"),
            text("role"),
            bigint("term"),
            bigint_null("last_log_index"),
            bigint_null("applied_lsn"),
            bigint_null("lag"),
            Field::new("reachable", DataType::Boolean, true),
        ],
        vec![
            ints(rows.iter().map(|m| m.id)),
            strings(rows.iter().map(|m| m.addr.as_str())),
            strings(rows.iter().map(role)),
            ints(rows.iter().map(|_| status.term)),
            opt(rows.iter().map(matched).collect()),
            opt(rows.iter().map(|m| (m.id == status.id).then_some(status.applied_lsn)).collect()),
            opt(rows
                .iter()
                .map(|m| match (last, matched(m)) {
                    (Some(l), Some(x)) if status.leader == Some(status.id) || m.id == status.id => {
                        Some(l.saturating_sub(x))
                    }
                    _ => None,
                })
                .collect()),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|m| {
                (status.leader == Some(status.id) || m.id == status.id).then(|| known(m))
            }))),
        ],
    )
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn text_null(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn bigint(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn bigint_null(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn ts(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), false)
}

fn strings<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn ints(v: impl IntoIterator<Item = u64>) -> ArrayRef {
    // Every engine total is within i64 (the ledger's fee total is kept there).
    Arc::new(Int64Array::from_iter_values(v.into_iter().map(|x| x as i64)))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// One stretch of a log scan: from the beginning of `from..=to`, or from a cursor, up to about
/// `max` events (whole batches). Returns where the next stretch starts.
#[derive(Debug, Clone, Copy)]
pub struct Stretch {
    pub from: u64,
    pub to: u64,
    pub at: Option<ScanCursor>,
    pub max: usize,
}

impl Stretch {
    /// All of `from..=to` at once.
    pub fn all(from: u64, to: u64) -> Stretch {
        Stretch { from, to, at: None, max: usize::MAX }
    }

    fn scan(
        &self,
        db: &Database,
        f: &mut dyn FnMut(LoggedEvent),
    ) -> Result<Option<ScanCursor>, crate::QueryError> {
        let Some(at) = self.at.or_else(|| db.scan_start(self.from)) else { return Ok(None) };
        // With `max` = usize::MAX the chunk is the whole stretch.
        Ok(db.scan_chunk(at, self.from, self.to, self.max, f)?)
    }
}

/// `events (lsn, ts, kind, body)`: the log itself, lsns `from..=to`, with each event's
/// canonical JSON body (surface.md).
pub fn events(db: &Database, from: u64, to: u64) -> Result<RecordBatch, crate::QueryError> {
    events_stretch(db, Stretch::all(from, to)).map(|(b, _)| b)
}

/// `events` for one stretch of a scan, and where the next one starts.
pub fn events_stretch(
    db: &Database,
    stretch: Stretch,
) -> Result<(RecordBatch, Option<ScanCursor>), crate::QueryError> {
    let (mut lsns, mut stamps, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    let mut bodies = datafusion::arrow::array::StringBuilder::new();
    let mut body = String::new();
    let next = stretch.scan(db, &mut |e| {
        lsns.push(e.lsn as i64);
        stamps.push(e.ts);
        kinds.push(e.event.kind().as_str());
        body.clear();
        json::write_body(&e.event, &mut body);
        bodies.append_value(&body);
    })?;
    let batch = batch(
        vec![bigint("lsn"), ts("ts"), text("kind"), text("body")],
        vec![
            Arc::new(Int64Array::from(lsns)),
            Arc::new(TimestampMicrosecondArray::from(stamps)),
            strings(kinds),
            Arc::new(bodies.finish()),
        ],
    )?;
    Ok((batch, next))
}

/// `inferences` and `attributions` of lsns `from..=to`, read from the log; rewards as
/// currently settled come from the engine (`Ledger::entry_rewards`). Either may be skipped.
pub fn inference_tables(
    db: &Database,
    from: u64,
    to: u64,
    want_inferences: bool,
    want_attributions: bool,
) -> Result<(Option<RecordBatch>, Option<RecordBatch>), crate::QueryError> {
    inference_stretch(db, None, Stretch::all(from, to), want_inferences, want_attributions)
        .map(|(i, a, _)| (i, a))
}

/// `inference_tables` for one stretch of a scan, and where the next one starts.
pub fn inference_stretch(
    db: &Database,
    past: Option<&tally_engine::Ledger>,
    stretch: Stretch,
    want_inferences: bool,
    want_attributions: bool,
) -> Result<InferenceStretch, crate::QueryError> {
    let mut logged = Vec::new();
    let next = stretch.scan(db, &mut |e| {
        if let tally_engine::Event::Inference(inf) = e.event {
            logged.push((e.lsn, e.ts, inf));
        }
    })?;
    crate::as_of::read(db, past, |l| {
        let epochs: Vec<i64> = logged.iter().map(|(lsn, _, _)| l.epoch_of(*lsn) as i64).collect();
        let inferences = want_inferences
            .then(|| {
                let lists: Vec<String> = logged
                    .iter()
                    .map(|(_, _, i)| {
                        let parts: Vec<String> = i
                            .attributions
                            .iter()
                            .map(|a| format!("{}:{}", a.contribution, a.weight))
                            .collect();
                        parts.join(",")
                    })
                    .collect();
                batch(
                    vec![
                        text("inference"),
                        text("model"),
                        text("consumer"),
                        bigint("fee"),
                        text("attributions"),
                        bigint("lsn"),
                        ts("ts"),
                        bigint("epoch"),
                    ],
                    vec![
                        strings(logged.iter().map(|(_, _, i)| i.inference.as_str())),
                        strings(logged.iter().map(|(_, _, i)| i.model.as_str())),
                        strings(logged.iter().map(|(_, _, i)| i.consumer.as_str())),
                        Arc::new(Int64Array::from_iter_values(
                            logged.iter().map(|(_, _, i)| i.fee),
                        )),
                        strings(lists.iter().map(String::as_str)),
                        ints(logged.iter().map(|(lsn, _, _)| *lsn)),
                        Arc::new(TimestampMicrosecondArray::from_iter_values(
                            logged.iter().map(|(_, t, _)| *t),
                        )),
                        Arc::new(Int64Array::from(epochs.clone())),
                    ],
                )
            })
            .transpose()?;
        let attributions = want_attributions
            .then(|| {
                let (mut inference, mut lsn, mut epoch, mut contribution) =
                    (vec![], vec![], vec![], vec![]);
                let (mut contributor, mut weight, mut reward) = (vec![], vec![], vec![]);
                for ((l_lsn, _, inf), e) in logged.iter().zip(&epochs) {
                    let rewards = l.entry_rewards(*l_lsn, inf).unwrap_or_default();
                    for (a, r) in inf.attributions.iter().zip(rewards) {
                        inference.push(inf.inference.as_str());
                        lsn.push(*l_lsn as i64);
                        epoch.push(*e);
                        contribution.push(a.contribution.as_str());
                        contributor.push(r.contributor);
                        weight.push(i64::from(a.weight));
                        reward.push(r.reward as i64);
                    }
                }
                batch(
                    vec![
                        text("inference"),
                        bigint("lsn"),
                        bigint("epoch"),
                        text("contribution"),
                        text("contributor"),
                        bigint("weight"),
                        bigint("reward"),
                    ],
                    vec![
                        strings(inference),
                        Arc::new(Int64Array::from(lsn)),
                        Arc::new(Int64Array::from(epoch)),
                        strings(contribution),
                        strings(contributor),
                        Arc::new(Int64Array::from(weight)),
                        Arc::new(Int64Array::from(reward)),
                    ],
                )
            })
            .transpose()?;
        Ok((inferences, attributions, next))
    })
}

/// The `inferences` and `attributions` rows of a stretch, and where the next stretch starts.
pub type InferenceStretch = (Option<RecordBatch>, Option<RecordBatch>, Option<ScanCursor>);

/// The column a table can be looked up by without copying all of it.
pub fn key_column(table: &str) -> Option<&'static str> {
    match table {
        "balances" => Some("account"),
        "contributions" => Some("contribution"),
        // Read from the log: the key narrows the stretch read to the inference's lsn.
        "inferences" | "attributions" => Some("inference"),
        _ => None,
    }
}

/// Builds the rows of `table` whose key (`key_column`) is one of `keys`; `None` for a table
/// without a key.
pub fn build_keyed(
    table: &str,
    l: &Ledger,
    keys: &std::collections::BTreeSet<String>,
) -> Option<Result<RecordBatch, ArrowError>> {
    match table {
        "balances" => {
            let rows: Vec<_> =
                keys.iter().filter_map(|k| l.balance(k)).filter(|b| b.earned > 0).collect();
            Some(balances_batch(&rows))
        }
        "contributions" => {
            let rows: Vec<_> = keys.iter().filter_map(|k| l.contribution(k)).collect();
            Some(contributions_batch(&rows))
        }
        _ => None,
    }
}

fn contributions_batch(
    rows: &[tally_engine::ContributionView<'_>],
) -> Result<RecordBatch, ArrowError> {
    let hashes: Vec<String> = rows.iter().map(|r| merkle::to_hex(&r.content_hash)).collect();
    batch(
        vec![
            text("contribution"),
            text("datanet"),
            text("contributor"),
            text("content_hash"),
            bigint("lsn"),
            Field::new("revoked", DataType::Boolean, false),
            bigint_null("revoked_lsn"),
            bigint("inferences"),
            bigint("earned"),
        ],
        vec![
            strings(rows.iter().map(|r| r.contribution)),
            strings(rows.iter().map(|r| r.datanet)),
            strings(rows.iter().map(|r| r.contributor)),
            strings(hashes.iter().map(String::as_str)),
            ints(rows.iter().map(|r| r.lsn)),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.revoked_lsn.is_some())))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.revoked_lsn.map(|v| v as i64)))),
            ints(rows.iter().map(|r| r.inferences)),
            ints(rows.iter().map(|r| r.earned)),
        ],
    )
}

fn balances_batch(rows: &[tally_engine::BalanceView<'_>]) -> Result<RecordBatch, ArrowError> {
    batch(
        vec![text("account"), bigint("earned"), bigint("settled"), bigint("pending")],
        vec![
            strings(rows.iter().map(|r| r.account)),
            ints(rows.iter().map(|r| r.earned)),
            ints(rows.iter().map(|r| r.settled)),
            ints(rows.iter().map(|r| r.pending)),
        ],
    )
}

/// Builds `table` from the state, or `None` for a name this module does not own.
pub fn build(table: &str, l: &Ledger) -> Option<Result<RecordBatch, ArrowError>> {
    build_first(table, l, usize::MAX)
}

/// `build` of the table's first `limit` rows, in `build`'s order: a LIMIT without an ORDER BY
/// (a client's preview of a table) costs its rows, not the table's.
pub fn build_first(
    table: &str,
    l: &Ledger,
    limit: usize,
) -> Option<Result<RecordBatch, ArrowError>> {
    Some(match table {
        "datanets" => {
            let rows: Vec<_> = l.datanets().take(limit).collect();
            batch(
                vec![
                    text("datanet"),
                    text("owner"),
                    bigint("lsn"),
                    bigint("contributions"),
                    bigint("attributions"),
                    bigint("earned"),
                ],
                vec![
                    strings(rows.iter().map(|r| r.datanet)),
                    strings(rows.iter().map(|r| r.owner)),
                    ints(rows.iter().map(|r| r.lsn)),
                    ints(rows.iter().map(|r| r.contributions)),
                    ints(rows.iter().map(|r| r.attributions)),
                    ints(rows.iter().map(|r| r.earned)),
                ],
            )
        }
        "contributions" => contributions_batch(&l.contributions().take(limit).collect::<Vec<_>>()),
        "models" => {
            let rows: Vec<_> = l.models().take(limit).collect();
            let lists: Vec<String> = rows.iter().map(|r| r.datanets.join(",")).collect();
            batch(
                vec![
                    text("model"),
                    text("owner"),
                    text_null("base_model"),
                    text("datanets"),
                    bigint("lsn"),
                    bigint("inferences"),
                    bigint("fees"),
                ],
                vec![
                    strings(rows.iter().map(|r| r.model)),
                    strings(rows.iter().map(|r| r.owner)),
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.base_model))),
                    strings(lists.iter().map(String::as_str)),
                    ints(rows.iter().map(|r| r.lsn)),
                    ints(rows.iter().map(|r| r.inferences)),
                    ints(rows.iter().map(|r| r.fees)),
                ],
            )
        }
        "revocations" => {
            let rows: Vec<_> = l.revocations().take(limit).collect();
            batch(
                vec![text("contribution"), text("reason"), bigint("lsn"), ts("ts")],
                vec![
                    strings(rows.iter().map(|r| r.contribution)),
                    strings(rows.iter().map(|r| r.reason)),
                    ints(rows.iter().map(|r| r.lsn)),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.ts),
                    )),
                ],
            )
        }
        "policies" => {
            let rows: Vec<_> = l.policies().take(limit).collect();
            batch(
                vec![
                    bigint("protocol_bps"),
                    bigint("model_bps"),
                    bigint("base_bps"),
                    bigint("lsn"),
                    bigint("contributors_bps"),
                ],
                vec![
                    ints(rows.iter().map(|r| r.protocol_bps.into())),
                    ints(rows.iter().map(|r| r.model_bps.into())),
                    ints(rows.iter().map(|r| r.base_bps.into())),
                    ints(rows.iter().map(|r| r.lsn)),
                    ints(rows.iter().map(|r| r.contributors_bps.into())),
                ],
            )
        }
        "settlements" => {
            let rows: Vec<_> = l.settlements().take(limit).collect();
            let roots: Vec<String> = rows.iter().map(|r| merkle::to_hex(&r.payouts_root)).collect();
            batch(
                vec![
                    bigint("epoch"),
                    bigint("lsn"),
                    ts("ts"),
                    bigint("total"),
                    text("payouts_root"),
                ],
                vec![
                    ints(rows.iter().map(|r| r.epoch)),
                    ints(rows.iter().map(|r| r.lsn)),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.ts),
                    )),
                    ints(rows.iter().map(|r| r.total)),
                    strings(roots.iter().map(String::as_str)),
                ],
            )
        }
        "rewards" => {
            let rows: Vec<_> = l.rewards().take(limit).collect();
            batch(
                vec![bigint("epoch"), text("account"), text("role"), bigint("amount")],
                vec![
                    ints(rows.iter().map(|r| r.epoch)),
                    strings(rows.iter().map(|r| r.account)),
                    strings(rows.iter().map(|r| r.role.as_str())),
                    ints(rows.iter().map(|r| r.amount)),
                ],
            )
        }
        "balances" => balances_batch(&l.balances().take(limit).collect::<Vec<_>>()),
        "payouts" => {
            let rows: Vec<_> = l.payouts().take(limit).collect();
            batch(
                vec![bigint("epoch"), text("account"), bigint("amount")],
                vec![
                    ints(rows.iter().map(|r| r.epoch)),
                    strings(rows.iter().map(|r| r.account)),
                    ints(rows.iter().map(|r| r.amount)),
                ],
            )
        }
        "epochs" => {
            let rows: Vec<_> = l.epochs().take(limit).collect();
            batch(
                vec![
                    bigint("epoch"),
                    text("status"),
                    bigint("opened_lsn"),
                    bigint_null("closed_lsn"),
                    bigint("inferences"),
                    bigint("fees"),
                ],
                vec![
                    ints(rows.iter().map(|r| r.epoch)),
                    strings(rows.iter().map(|r| if r.open { "open" } else { "closed" })),
                    ints(rows.iter().map(|r| r.opened_lsn)),
                    Arc::new(Int64Array::from_iter(
                        rows.iter().map(|r| r.closed_lsn.map(|v| v as i64)),
                    )),
                    ints(rows.iter().map(|r| r.inferences)),
                    ints(rows.iter().map(|r| r.fees)),
                ],
            )
        }
        _ => return None,
    })
}
