//! The verifiable ledger in SQL: the log's Merkle root, inclusion and consistency proofs,
//! payout proofs, and this node's signed checkpoints (docs/proofs.md). Each is a computed
//! table (`computed.rs`); every proof row carries a `proof` column, a JSON document that
//! `tally verify-proof` and `tests/clients/verify_proof.py` check with no Tally code on the
//! other side. Reading proofs needs no role beyond reading; publishing a checkpoint writes only
//! this node's checkpoint file, once per tree size.
//!
//! Under `tally.as_of_lsn`, `ledger_root()` is the root at that lsn; the other functions name
//! their sizes and epochs explicitly.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray};
use datafusion::arrow::array::{StringBuilder, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::Expr;
use serde_json::json;
use tally_engine::merkle::{to_hex, Hash};
use tally_storage::checkpoints::Checkpoint;
use tally_storage::Database;

use crate::computed::{self, Compute, Make};
use crate::QueryError;

/// The table functions of this module, by name.
pub(crate) const FUNCTIONS: [(&str, Make); 6] = [
    ("ledger_root", ledger_root),
    ("ledger_root_at", ledger_root_at),
    ("inclusion_proof", inclusion_proof),
    ("consistency_proof", consistency_proof),
    ("payout_proof", payout_proof),
    ("publish_checkpoint", publish_checkpoint),
];

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn hashes(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))), false)
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).expect("sizes and amounts stay within i64")
}

fn ints(v: u64) -> ArrayRef {
    Arc::new(Int64Array::from(vec![i64_of(v)]))
}

fn texts(v: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![v]))
}

fn hash_list(path: &[Hash]) -> ArrayRef {
    let mut list = ListBuilder::new(StringBuilder::new());
    for hash in path {
        list.values().append_value(to_hex(hash));
    }
    list.append(true);
    Arc::new(list.finish())
}

fn hex_path(path: &[Hash]) -> Vec<String> {
    path.iter().map(to_hex).collect()
}

fn row(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, QueryError> {
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn no_arguments(exprs: &[Expr], usage: &str) -> Result<(), QueryError> {
    computed::literals::<0>(exprs, usage).map(drop)
}

fn root_schema() -> SchemaRef {
    schema(vec![int("tree_size"), text("root")])
}

/// `ledger_root()`: the tree's size and root now (or at the session's `tally.as_of_lsn`).
fn ledger_root(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    no_arguments(exprs, "ledger_root()")?;
    let compute: Compute = Arc::new(|db, past| {
        let (size, root) = match past {
            None => db.ledger_root()?,
            Some(l) => (l.last_lsn(), db.ledger_root_at(l.last_lsn())?),
        };
        row(&root_schema(), vec![ints(size), texts(&to_hex(&root))])
    });
    Ok((root_schema(), compute))
}

/// `ledger_root_at(tree_size)`: the root of the tree of the first `tree_size` events.
fn ledger_root_at(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    const USAGE: &str = "ledger_root_at(tree_size)";
    let [size] = computed::literals(exprs, USAGE)?;
    let size = computed::count(&size, USAGE)?;
    let compute: Compute = Arc::new(move |db, _| {
        let root = db.ledger_root_at(size)?;
        row(&root_schema(), vec![ints(size), texts(&to_hex(&root))])
    });
    Ok((root_schema(), compute))
}

/// `inclusion_proof(lsn, tree_size)`: the event of `lsn` and its audit path.
fn inclusion_proof(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    const USAGE: &str = "inclusion_proof(lsn, tree_size)";
    let [lsn, size] = computed::literals(exprs, USAGE)?;
    let (lsn, size) = (computed::count(&lsn, USAGE)?, computed::count(&size, USAGE)?);
    let schema = schema(vec![
        int("lsn"),
        int("ts_micros"),
        text("body"),
        int("leaf_index"),
        int("tree_size"),
        text("leaf_hash"),
        hashes("path"),
        text("root"),
        text("proof"),
    ]);
    let out = schema.clone();
    let compute: Compute = Arc::new(move |db, _| {
        let p = db.inclusion_proof(lsn, size)?;
        let mut doc = json!({
            "kind": "inclusion", "lsn": p.lsn, "ts_micros": p.ts, "body": p.body,
            "leaf_index": p.lsn - 1, "tree_size": p.tree_size, "path": hex_path(&p.path),
            "root": to_hex(&p.root),
        });
        if let Some(c) = checkpoint_at(db, p.tree_size)? {
            doc["checkpoint"] = checkpoint_json(&c);
        }
        row(
            &out,
            vec![
                ints(p.lsn),
                Arc::new(Int64Array::from(vec![p.ts])),
                texts(&p.body),
                ints(p.lsn - 1),
                ints(p.tree_size),
                texts(&to_hex(&p.leaf_hash)),
                hash_list(&p.path),
                texts(&to_hex(&p.root)),
                texts(&doc.to_string()),
            ],
        )
    });
    Ok((schema, compute))
}

/// `consistency_proof(old_size, new_size)`: that the older tree is a prefix of the newer.
fn consistency_proof(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    const USAGE: &str = "consistency_proof(old_size, new_size)";
    let [old, new] = computed::literals(exprs, USAGE)?;
    let (old, new) = (computed::count(&old, USAGE)?, computed::count(&new, USAGE)?);
    let schema = schema(vec![
        int("old_size"),
        int("new_size"),
        text("old_root"),
        text("new_root"),
        hashes("path"),
        text("proof"),
    ]);
    let out = schema.clone();
    let compute: Compute = Arc::new(move |db, _| {
        let p = db.consistency_proof(old, new)?;
        let mut doc = json!({
            "kind": "consistency", "old_size": p.old_size, "new_size": p.new_size,
            "old_root": to_hex(&p.old_root), "new_root": to_hex(&p.new_root),
            "path": hex_path(&p.path),
        });
        if let Some(c) = checkpoint_at(db, p.new_size)? {
            doc["checkpoint"] = checkpoint_json(&c);
        }
        row(
            &out,
            vec![
                ints(p.old_size),
                ints(p.new_size),
                texts(&to_hex(&p.old_root)),
                texts(&to_hex(&p.new_root)),
                hash_list(&p.path),
                texts(&doc.to_string()),
            ],
        )
    });
    Ok((schema, compute))
}

/// `payout_proof(epoch, account)`: the account's payout in a closed epoch's payout set.
fn payout_proof(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    const USAGE: &str = "payout_proof(epoch, account)";
    let [epoch, account] = computed::literals(exprs, USAGE)?;
    let (epoch, account) = (computed::count(&epoch, USAGE)?, computed::text(&account, USAGE)?);
    let schema = schema(vec![
        int("epoch"),
        text("account"),
        int("amount"),
        int("leaf_index"),
        int("tree_size"),
        hashes("path"),
        text("payouts_root"),
        text("proof"),
    ]);
    let out = schema.clone();
    let compute: Compute = Arc::new(move |db, past| {
        let proof = crate::as_of::read(db, past, |l| l.payout_proof(epoch, &account));
        let p = proof.ok_or_else(|| {
            QueryError::InvalidParameter(format!(
                "{USAGE}: epoch {epoch} is not closed, or paid {account:?} nothing"
            ))
        })?;
        let doc = json!({
            "kind": "payout", "account": account, "amount": p.amount,
            "leaf_index": p.leaf_index, "tree_size": p.tree_size, "path": hex_path(&p.path),
            "payouts_root": to_hex(&p.payouts_root),
        });
        row(
            &out,
            vec![
                ints(epoch),
                texts(&account),
                ints(p.amount),
                ints(p.leaf_index),
                ints(p.tree_size),
                hash_list(&p.path),
                texts(&to_hex(&p.payouts_root)),
                texts(&doc.to_string()),
            ],
        )
    });
    Ok((schema, compute))
}

/// The columns of a checkpoint row (the `checkpoints` table and `publish_checkpoint()`).
pub(crate) fn checkpoint_schema() -> SchemaRef {
    schema(vec![
        int("tree_size"),
        text("root"),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        text("signature"),
        text("key_id"),
        text("public_key"),
        text("proof"),
    ])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn checkpoint_json(c: &Checkpoint) -> serde_json::Value {
    json!({
        "kind": "checkpoint", "tree_size": c.tree_size, "root": to_hex(&c.root),
        "ts_micros": c.ts, "public_key": hex(&c.public_key), "signature": hex(&c.signature),
        "key_id": c.key_id,
    })
}

fn checkpoint_at(db: &Database, size: u64) -> Result<Option<Checkpoint>, QueryError> {
    Ok(db.checkpoints()?.into_iter().find(|c| c.tree_size == size))
}

/// Checkpoints as rows, oldest first.
pub(crate) fn checkpoint_rows(list: &[Checkpoint]) -> Result<RecordBatch, QueryError> {
    let column = |f: &dyn Fn(&Checkpoint) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(list.iter().map(f)))
    };
    let sizes = list.iter().map(|c| i64_of(c.tree_size));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(sizes)),
        column(&|c| to_hex(&c.root)),
        Arc::new(TimestampMicrosecondArray::from_iter_values(list.iter().map(|c| c.ts))),
        column(&|c| hex(&c.signature)),
        column(&|c| c.key_id.clone()),
        column(&|c| hex(&c.public_key)),
        column(&|c| checkpoint_json(c).to_string()),
    ];
    row(&checkpoint_schema(), columns)
}

/// `publish_checkpoint()`: this node's signed checkpoint of the tree as it is now.
fn publish_checkpoint(exprs: &[Expr]) -> Result<(SchemaRef, Compute), QueryError> {
    no_arguments(exprs, "publish_checkpoint()")?;
    let compute: Compute = Arc::new(|db, _| checkpoint_rows(&[db.publish_checkpoint()?]));
    Ok((checkpoint_schema(), compute))
}

/// The `checkpoints` table: every checkpoint this node has published.
pub(crate) fn checkpoints_table() -> Compute {
    Arc::new(|db, _| checkpoint_rows(&db.checkpoints()?))
}
