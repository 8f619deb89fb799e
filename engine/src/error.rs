//! Why the ledger refuses a batch: one `Refusal` naming the event, field and value, and the
//! rule it broke. Must never carry partial state: a refusal means nothing was applied.

use std::fmt;

use crate::event::EventKind;

/// A refused batch. `index` is the position of the first offending event in the batch,
/// `entry` the position inside a list field (attributions, datanets) when one is at fault.
/// Serialisable so a refusal can travel back from the node that applied the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct Refusal {
    pub index: usize,
    pub kind: EventKind,
    pub field: &'static str,
    pub entry: Option<usize>,
    pub value: String,
    pub rule: Rule,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} ({}): {}", self.index, self.kind.as_str(), self.field)?;
        if let Some(entry) = self.entry {
            write!(f, "[{entry}]")?;
        }
        write!(f, " = {:?}: {}", self.value, self.rule)
    }
}

/// Every field name a refusal can carry, so that a deserialised refusal keeps a `&'static str`.
const FIELDS: &[&str] = &[
    "datanet",
    "owner",
    "contribution",
    "contributor",
    "content_hash",
    "model",
    "base_model",
    "datanets",
    "inference",
    "consumer",
    "fee",
    "attributions",
    "reason",
    "protocol_bps",
    "model_bps",
    "base_bps",
    "protocol_bps+model_bps+base_bps",
    "epoch",
    "batch",
];

#[derive(serde::Deserialize)]
struct RefusalWire {
    index: usize,
    kind: EventKind,
    field: String,
    entry: Option<usize>,
    value: String,
    rule: Rule,
}

impl<'de> serde::Deserialize<'de> for Refusal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Refusal, D::Error> {
        RefusalWire::deserialize(d).map(Refusal::from)
    }
}

impl From<RefusalWire> for Refusal {
    fn from(w: RefusalWire) -> Refusal {
        let field = FIELDS.iter().find(|f| **f == w.field).copied().unwrap_or("unknown field");
        Refusal {
            index: w.index,
            kind: w.kind,
            field,
            entry: w.entry,
            value: w.value,
            rule: w.rule,
        }
    }
}

impl Refusal {
    pub(crate) fn new(
        index: usize,
        kind: EventKind,
        field: &'static str,
        value: impl fmt::Display,
        rule: Rule,
    ) -> Self {
        Refusal { index, kind, field, entry: None, value: value.to_string(), rule }
    }

    pub(crate) fn at_entry(mut self, entry: usize) -> Self {
        self.entry = Some(entry);
        self
    }
}

/// Every rule of ledger.md that can refuse an event, one variant each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Rule {
    #[error("ids are 1 to 128 bytes from [A-Za-z0-9._:@/-]")]
    BadId,
    #[error("this datanet id already exists")]
    DuplicateDatanet,
    #[error("this contribution id already exists")]
    DuplicateContribution,
    #[error("this model id already exists")]
    DuplicateModel,
    #[error("this inference id was already used (inference ids are unique over the whole ledger)")]
    DuplicateInference,
    /// A past inference (at `lsn`) has an id with the same 64-bit fingerprint, and the record
    /// that would tell the two apart cannot be read: refused rather than accepted on a guess.
    #[error(
        "this inference id may already be used: the inference at lsn {lsn} has the same \
         fingerprint and its log record cannot be read ({reason})"
    )]
    UnconfirmedInference { lsn: u64, reason: String },
    #[error("this content was already contributed as contribution {earlier:?}")]
    DuplicateContent { earlier: String },
    #[error("this contribution is already revoked")]
    AlreadyRevoked,
    #[error("no datanet with this id")]
    UnknownDatanet,
    #[error("no model with this id")]
    UnknownModel,
    #[error("no base model with this id")]
    UnknownBaseModel,
    #[error("no contribution with this id")]
    UnknownContribution,
    #[error("content_hash must be 64 lowercase hex characters")]
    BadContentHash,
    #[error("the base model is itself an adapter (adapters of adapters are not allowed)")]
    AdapterOfAdapter,
    #[error("this datanet is listed twice")]
    RepeatedDatanet,
    #[error("fee must be from 0 to 2^40 (1099511627776)")]
    FeeOutOfRange,
    #[error("an inference has at most 1024 attribution entries")]
    TooManyEntries,
    #[error("this contribution appears twice in the inference")]
    RepeatedContribution,
    #[error("a score must be a finite, non-negative number")]
    BadScore,
    #[error("a weight is at most 1000000")]
    BadWeight,
    #[error("the contribution's datanet is outside the model's lineage")]
    OutsideLineage,
    #[error("basis points must not be negative")]
    NegativeBps,
    #[error("protocol_bps + model_bps + base_bps must not exceed 10000")]
    BpsSumTooLarge,
    #[error("only the open epoch ({open}) can be settled")]
    NotOpenEpoch { open: u64 },
    #[error("the ledger's 64-bit fee total would overflow")]
    TotalOverflow,
    #[error("a reason is at most 1024 bytes")]
    ReasonTooLong,
    #[error("a batch holds at most {max} events: split it")]
    BatchTooLarge { max: usize },
    #[error("the open epoch holds its maximum of attribution entries: settle it first")]
    EpochFull,
}

/// The families of refusal that surface.md maps to SQLSTATEs; the SQL layer owns the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// 23505
    Duplicate,
    /// 23503
    UnknownReference,
    /// 23514
    Lineage,
    /// 22003
    Overflow,
    /// 22023
    InvalidValue,
}

impl Rule {
    pub fn class(&self) -> RefusalClass {
        use Rule::*;
        match self {
            DuplicateDatanet
            | DuplicateContribution
            | DuplicateModel
            | DuplicateInference
            | UnconfirmedInference { .. }
            | DuplicateContent { .. }
            | AlreadyRevoked => RefusalClass::Duplicate,
            UnknownDatanet | UnknownModel | UnknownBaseModel | UnknownContribution => {
                RefusalClass::UnknownReference
            }
            OutsideLineage => RefusalClass::Lineage,
            TotalOverflow => RefusalClass::Overflow,
            BadId
            | BadContentHash
            | AdapterOfAdapter
            | RepeatedDatanet
            | FeeOutOfRange
            | TooManyEntries
            | RepeatedContribution
            | BadScore
            | BadWeight
            | NegativeBps
            | BpsSumTooLarge
            | NotOpenEpoch { .. }
            | ReasonTooLong
            | BatchTooLarge { .. }
            | EpochFull => RefusalClass::InvalidValue,
        }
    }
}

/// A log that cannot be replayed: the events are not a sequence the ledger could have accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("log is not dense: expected lsn {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("event at lsn {lsn} would have been refused: {refusal}")]
    Refused { lsn: u64, refusal: Refusal },
    #[error("batch settlement backend failed: {0}")]
    Settler(String),
}
