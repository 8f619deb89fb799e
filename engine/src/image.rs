//! Snapshot images: the whole ledger state as one byte string, so that a restart loads a
//! snapshot instead of replaying the log. Owns the image format and the checks that make a
//! loaded state as safe to keep applying as a replayed one. Must never panic on any input (a
//! snapshot file may be truncated or corrupt), never trust an id, length or total it has not
//! checked, and never write a file: storage owns I/O.
//!
//! Layout, integers little-endian:
//!
//! | bytes  | holds |
//! |---|---|
//! | 0..8   | magic `TALLYIMG` |
//! | 8..12  | format version, 3 |
//! | 12..16 | zero (pads the header to 16-byte alignment) |
//! | 16..24 | length of the archive in bytes |
//! | 24..32 | xxh3-64 of the archive |
//! | 32..   | the rkyv archive of `Image`, at a 16-byte aligned offset |
//!
//! The checksum makes any damage an error, including damage that leaves a well-formed archive
//! of a different state (a flipped weight or lsn); rkyv's check makes a malformed archive an
//! error instead of undefined behaviour, whatever the checksum says.
//!
//! Encoding archives the state's big arrays (open epoch, fingerprints) straight from where
//! they are, into the one output buffer; decoding deserializes them into vectors that move
//! into the new ledger as they are: one copy each way, no allocation per element.
//!
//! The image keeps what cannot be derived and rebuilds the rest on load: the name tables, the
//! content-hash index, the `revoked` flags (from `revoked_lsn`) and the open epoch's
//! contribution → entries chains (from `e_contribution`). Rebuilt structure is right by
//! construction, so no image can plant a cycle or a foreign entry in a chain. What is stored is
//! checked: every id against its table, every shape, and the money invariants that later code
//! subtracts under or asserts (`open_epoch`), so a state that loads cannot panic later.

use rayon::prelude::*;
use rkyv::{Archive, Deserialize, Serialize};

use crate::fingerprint::FingerprintSet;
use crate::id::PROTOCOL_ACCOUNT;
use crate::intern::Interner;
use crate::settle::{divide_pool, split_fee, Bps, SettleInput, BPS_SCALE, MAX_ENTRIES, MAX_FEE};
use crate::state::{
    ClosedEpoch, ContributionMeta, ContributionRow, DatanetRow, EpochRow, Ledger, ModelRow,
    OpenEpoch, PolicyRow, RevocationRow, Role, Settling, MAX_OPEN_ENTRIES, NONE, PROTOCOL,
};
use crate::validate::MAX_REASON_BYTES;

const MAGIC: &[u8; 8] = b"TALLYIMG";
/// Bump on any change to `Image` or to what its fields mean. 2: `fingerprint_lsns`.
/// 3: the open epoch's `inf_fee` and `inf_model`.
const VERSION: u32 = 3;
/// Magic, version, zero, archive length, checksum: a multiple of the archive's alignment.
const HEADER: usize = 32;
/// The alignment rkyv lays the archive out for.
const ALIGN: usize = 16;
/// Every count and money total is shown as an i64 (and lsns must leave room for the next).
const MAX_COUNT: u64 = i64::MAX as u64;
/// Open-epoch inferences whose rewards one parallel task re-derives.
const CHECK_CHUNK: usize = 16 * 1024;

/// Why bytes are not a snapshot image this build can load. Every variant means "replay the log
/// instead"; none leaves anything behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("snapshot image too short: {len} bytes, the header alone is {HEADER}")]
    TooShort { len: usize },
    #[error("not a snapshot image: the magic is not TALLYIMG")]
    BadMagic,
    #[error("snapshot image format version {found} is not supported (this build reads {VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("snapshot image header: bytes 12..16 must be zero")]
    BadHeader,
    #[error("snapshot image archive is {found} bytes, its header says {expected}")]
    LengthMismatch { found: u64, expected: u64 },
    #[error("snapshot image checksum mismatch: stored {stored:016x}, computed {computed:016x}")]
    Checksum { stored: u64, computed: u64 },
    #[error("malformed snapshot image archive: {0}")]
    Malformed(String),
    #[error("inconsistent snapshot image: {field}: {detail}")]
    Inconsistent { field: &'static str, detail: String },
}

fn bad(field: &'static str, detail: impl Into<String>) -> ImageError {
    ImageError::Inconsistent { field, detail: detail.into() }
}

fn ensure(
    ok: bool,
    field: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<(), ImageError> {
    if ok {
        Ok(())
    } else {
        Err(bad(field, detail()))
    }
}

/// One namespace's names in id order, as one text and the end offset of each name: no
/// allocation per name in the archive, and one UTF-8 check for all of them.
#[derive(Archive, Serialize, Deserialize)]
struct Names {
    text: String,
    ends: Vec<u64>,
}

#[derive(Archive, Serialize, Deserialize)]
struct DatanetImage {
    owner: u32,
    lsn: u64,
    contributions: u64,
    attributions: u64,
    earned: u64,
}

/// `ContributionRow` and `ContributionMeta` together, without the chain head (rebuilt).
#[derive(Archive, Serialize, Deserialize)]
struct ContributionImage {
    datanet: u32,
    contributor: u32,
    inferences: u64,
    earned: u64,
    lsn: u64,
    revoked_lsn: u64,
    content_hash: [u8; 32],
}

#[derive(Archive, Serialize, Deserialize)]
struct ModelImage {
    owner: u32,
    base: Option<u32>,
    datanets: Vec<u32>,
    lineage: Vec<u32>,
    lsn: u64,
    inferences: u64,
    fees: u64,
}

#[derive(Archive, Serialize, Deserialize)]
struct PolicyImage {
    lsn: u64,
    /// protocol, model, base.
    bps: [u16; 3],
}

#[derive(Archive, Serialize, Deserialize)]
struct RevocationImage {
    contribution: u32,
    reason: String,
    lsn: u64,
    ts: i64,
}

#[derive(Archive, Serialize, Deserialize)]
struct ClosedImage {
    lsn: u64,
    ts: i64,
    /// (account, amount), in Merkle leaf order.
    payouts: Vec<(u32, u64)>,
    /// (account, role as `Role as u8`, amount).
    rewards: Vec<(u32, u8, u64)>,
    payouts_root: [u8; 32],
}

#[derive(Archive, Serialize, Deserialize)]
struct EpochImage {
    epoch: u64,
    opened_lsn: u64,
    inferences: u64,
    fees: u64,
    closed: Option<ClosedImage>,
}

/// The open epoch's flat arrays, without `e_next` (rebuilt). Generic over how the big arrays
/// are held (see `Image`).
#[derive(Archive, Serialize, Deserialize)]
struct OpenImage<U64s, U32s, Roles> {
    inf_lsn: U64s,
    inf_pool: U64s,
    inf_fee: U64s,
    inf_model: U32s,
    inf_start: U32s,
    e_contribution: U32s,
    e_weight: U32s,
    e_reward: U64s,
    /// Per account: credits of this epoch by role.
    rewards: Roles,
}

/// The state as archived. The big arrays are type parameters: encoding borrows them from the
/// ledger (`Slice`), decoding gets vectors that move into the new ledger as they are. Both
/// instances archive to the same bytes: rkyv's archived structs are `repr(C)`, and `Slice<T>`
/// archives as `Vec<T>` does.
#[derive(Archive, Serialize, Deserialize)]
struct Image<U64s, U32s, Roles> {
    last_lsn: u64,
    last_ts: i64,
    total_fees: u64,
    /// The split in force: protocol, model, base.
    bps: [u16; 3],
    accounts: Names,
    settled: U64s,
    datanets: Names,
    datanet_rows: Vec<DatanetImage>,
    contributions: Names,
    contribution_rows: Vec<ContributionImage>,
    models: Names,
    model_rows: Vec<ModelImage>,
    /// The fingerprint table as it is, so loading it is a copy rather than a rehash.
    fingerprint_slots: U64s,
    /// Per slot, the lsn of the inference whose fingerprint is there (0 when empty).
    fingerprint_lsns: U64s,
    fingerprint_len: u64,
    policies: Vec<PolicyImage>,
    revocations: Vec<RevocationImage>,
    epochs: Vec<EpochImage>,
    open: OpenImage<U64s, U32s, Roles>,
}

/// What encoding writes.
type ImageOut<'a> = Image<Slice<'a, u64>, Slice<'a, u32>, Slice<'a, [u64; 4]>>;
/// What decoding reads.
type ImageIn = Image<Vec<u64>, Vec<u32>, Vec<[u64; 4]>>;

/// A borrowed slice that archives exactly as a `Vec` of its items (the same two calls as
/// rkyv's own `Vec` impl), so encoding reads the state's big arrays in place, uncloned.
struct Slice<'a, T>(&'a [T]);

impl<T: Archive> Archive for Slice<'_, T> {
    type Archived = rkyv::vec::ArchivedVec<T::Archived>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<T, S> Serialize<S> for Slice<'_, T>
where
    T: Serialize<S>,
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::<T::Archived>::serialize_from_slice(self.0, serializer)
    }
}

impl Ledger {
    /// The complete state as a snapshot image (layout above). Deterministic: equal states give
    /// equal bytes. Panics on a ledger in deferred mode, which only replay holds internally.
    pub fn encode_image(&self) -> Vec<u8> {
        assert_eq!(self.settling, Settling::Incremental, "a deferred ledger has no image");
        let image = ImageOut::of(self);
        let mut out = Vec::with_capacity(HEADER + image.size_hint());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; HEADER - 12]);
        // Straight after the header: rkyv pads by position in `out`, and the header's length is
        // a multiple of the archive's alignment, so the archive is laid out as if on its own.
        let mut out = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&image, out)
            .expect("serializing into memory does not fail");
        let archive = &out[HEADER..];
        let (len, sum) = (archive.len() as u64, xxhash_rust::xxh3::xxh3_64(archive));
        out[16..24].copy_from_slice(&len.to_le_bytes());
        out[24..32].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Rebuilds a ledger from `encode_image` bytes, which may sit at any alignment. Never
    /// panics: anything wrong with the bytes is an `ImageError`.
    pub fn decode_image(bytes: &[u8]) -> Result<Ledger, ImageError> {
        let archive = archive_of(bytes)?;
        let image = if (archive.as_ptr() as usize).is_multiple_of(ALIGN) {
            from_archive(archive)?
        } else {
            // rkyv reads its archive in place, so it must sit where it was laid out for.
            let mut aligned = rkyv::util::AlignedVec::<ALIGN>::with_capacity(archive.len());
            aligned.extend_from_slice(archive);
            from_archive(&aligned)?
        };
        image.into_ledger()
    }
}

/// Checks the header and returns the archive it vouches for.
fn archive_of(bytes: &[u8]) -> Result<&[u8], ImageError> {
    if bytes.len() < HEADER {
        return Err(ImageError::TooShort { len: bytes.len() });
    }
    let (header, archive) = bytes.split_at(HEADER);
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if &header[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    if word(8) != VERSION {
        return Err(ImageError::UnsupportedVersion { found: word(8) });
    }
    if word(12) != 0 {
        return Err(ImageError::BadHeader);
    }
    let (expected, found) = (long(16), archive.len() as u64);
    if found != expected {
        return Err(ImageError::LengthMismatch { found, expected });
    }
    let (stored, computed) = (long(24), xxhash_rust::xxh3::xxh3_64(archive));
    if stored != computed {
        return Err(ImageError::Checksum { stored, computed });
    }
    Ok(archive)
}

fn from_archive(archive: &[u8]) -> Result<ImageIn, ImageError> {
    rkyv::from_bytes::<ImageIn, rkyv::rancor::Error>(archive)
        .map_err(|e| ImageError::Malformed(e.to_string()))
}

fn bps_image(b: Bps) -> [u16; 3] {
    [b.protocol, b.model, b.base]
}

fn bps_of(b: [u16; 3], field: &'static str) -> Result<Bps, ImageError> {
    let sum: u64 = b.iter().map(|&v| u64::from(v)).sum();
    // `split_fee` and `Bps::contributors` subtract under this.
    ensure(sum <= BPS_SCALE, field, || format!("basis points {b:?} add up to more than 10000"))?;
    Ok(Bps { protocol: b[0], model: b[1], base: b[2] })
}

impl Names {
    fn of(table: &Interner) -> Names {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(table.len());
        for id in 0..table.len() as u32 {
            text.push_str(table.name(id));
            ends.push(text.len() as u64);
        }
        Names { text, ends }
    }

    /// The names in id order.
    fn split(&self, field: &'static str) -> Result<Vec<&str>, ImageError> {
        ensure(self.ends.len() < NONE as usize, field, || format!("{} names", self.ends.len()))?;
        let mut names = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for (id, &end) in self.ends.iter().enumerate() {
            // `get` also refuses a cut inside a character.
            let name = usize::try_from(end)
                .ok()
                .and_then(|end| self.text.get(start..end))
                .ok_or_else(|| bad(field, format!("name {id} ends at byte {end}")))?;
            start += name.len();
            names.push(name);
        }
        ensure(start == self.text.len(), field, || {
            format!("names end at byte {start}, the text has {}", self.text.len())
        })?;
        Ok(names)
    }
}

/// The name table of `names`, with `payload(id)` for each.
fn table(
    names: &[&str],
    payload: impl Fn(usize) -> u32,
    field: &'static str,
) -> Result<Interner, ImageError> {
    Interner::from_names(names.iter().enumerate().map(|(id, &name)| (name, payload(id))))
        .map_err(|id| bad(field, format!("{:?} (id {id}) is named twice", names[id as usize])))
}

impl<'a> ImageOut<'a> {
    /// About the archive's size (a little over), so that the output is allocated once.
    fn size_hint(&self) -> usize {
        let o = &self.open;
        let names = [&self.accounts, &self.datanets, &self.contributions, &self.models]
            .iter()
            .map(|n| n.text.len() + 8 * n.ends.len())
            .sum::<usize>();
        let models: usize =
            self.model_rows.iter().map(|m| 64 + 4 * (m.datanets.len() + m.lineage.len())).sum();
        let revocations: usize = self.revocations.iter().map(|r| 40 + r.reason.len()).sum();
        let closed: usize = (self.epochs.iter().filter_map(|e| e.closed.as_ref()))
            .map(|c| 96 + 16 * (c.payouts.len() + c.rewards.len()))
            .sum();
        4096 + names
            + models
            + revocations
            + 48 * (self.epochs.len() + self.policies.len())
            + closed
            + 8 * (self.settled.0.len() + 2 * self.fingerprint_slots.0.len())
            + 32 * o.rewards.0.len()
            + 48 * self.datanet_rows.len()
            + 80 * self.contribution_rows.len()
            + 8 * (o.inf_lsn.0.len() + 2 * o.inf_pool.0.len() + o.e_reward.0.len())
            + 4 * (2 * o.inf_start.0.len() + o.e_contribution.0.len() + o.e_weight.0.len())
    }

    fn of(l: &'a Ledger) -> Self {
        let o = &l.open;
        Image {
            last_lsn: l.last_lsn,
            last_ts: l.last_ts,
            total_fees: l.total_fees,
            bps: bps_image(l.bps),
            accounts: Names::of(&l.accounts),
            settled: Slice(&l.settled),
            datanets: Names::of(&l.datanets),
            datanet_rows: l
                .datanet_rows
                .iter()
                .map(|r| DatanetImage {
                    owner: r.owner,
                    lsn: r.lsn,
                    contributions: r.contributions,
                    attributions: r.attributions,
                    earned: r.earned,
                })
                .collect(),
            contributions: Names::of(&l.contributions),
            contribution_rows: l
                .contribution_rows
                .iter()
                .zip(&l.contribution_meta)
                .map(|(r, m)| ContributionImage {
                    datanet: r.datanet,
                    contributor: r.contributor,
                    inferences: r.inferences,
                    earned: r.earned,
                    lsn: m.lsn,
                    revoked_lsn: m.revoked_lsn,
                    content_hash: m.content_hash,
                })
                .collect(),
            models: Names::of(&l.models),
            model_rows: l
                .model_rows
                .iter()
                .map(|r| ModelImage {
                    owner: r.owner,
                    base: r.base,
                    datanets: r.datanets.to_vec(),
                    lineage: r.lineage.to_vec(),
                    lsn: r.lsn,
                    inferences: r.inferences,
                    fees: r.fees,
                })
                .collect(),
            fingerprint_slots: Slice(l.inference_ids.slots().0),
            fingerprint_lsns: Slice(l.inference_ids.slots().1),
            fingerprint_len: l.inference_ids.len() as u64,
            policies: l
                .policies
                .iter()
                .map(|p| PolicyImage { lsn: p.lsn, bps: bps_image(p.bps) })
                .collect(),
            revocations: l
                .revocations
                .iter()
                .map(|r| RevocationImage {
                    contribution: r.contribution,
                    reason: r.reason.to_string(),
                    lsn: r.lsn,
                    ts: r.ts,
                })
                .collect(),
            epochs: l
                .epochs
                .iter()
                .map(|e| EpochImage {
                    epoch: e.epoch,
                    opened_lsn: e.opened_lsn,
                    inferences: e.inferences,
                    fees: e.fees,
                    closed: e.closed.as_ref().map(|c| ClosedImage {
                        lsn: c.lsn,
                        ts: c.ts,
                        payouts: c.payouts.clone(),
                        rewards: c.rewards.iter().map(|&(a, r, v)| (a, r as u8, v)).collect(),
                        payouts_root: c.payouts_root,
                    }),
                })
                .collect(),
            open: OpenImage {
                inf_lsn: Slice(&o.inf_lsn),
                inf_pool: Slice(&o.inf_pool),
                inf_fee: Slice(&o.inf_fee),
                inf_model: Slice(&o.inf_model),
                inf_start: Slice(&o.inf_start),
                e_contribution: Slice(&o.e_contribution),
                e_weight: Slice(&o.e_weight),
                e_reward: Slice(&o.e_reward),
                rewards: Slice(&o.rewards),
            },
        }
    }
}

impl ImageIn {
    /// Checks everything later code relies on and builds the state. Checks come in the order
    /// of the tables, each only against tables already checked.
    fn into_ledger(self) -> Result<Ledger, ImageError> {
        let ImageIn {
            last_lsn,
            last_ts,
            total_fees,
            bps,
            accounts,
            settled,
            datanets,
            datanet_rows,
            contributions,
            contribution_rows,
            models,
            model_rows,
            fingerprint_slots,
            fingerprint_lsns,
            fingerprint_len,
            policies,
            revocations,
            epochs,
            open,
        } = self;
        ensure(last_lsn < MAX_COUNT, "last_lsn", || last_lsn.to_string())?;
        // Every money total is a part of this one (docs/architecture.md, "Overflow").
        ensure(total_fees <= MAX_COUNT, "total_fees", || total_fees.to_string())?;
        let money = |v: u64| v <= total_fees;
        let bps = bps_of(bps, "bps")?;

        let account_names = accounts.split("accounts")?;
        ensure(account_names.first() == Some(&PROTOCOL_ACCOUNT), "accounts", || {
            format!("account {PROTOCOL} must be {PROTOCOL_ACCOUNT}")
        })?;
        let n_accounts = account_names.len();
        let accounts = table(&account_names, |_| 0, "accounts")?;
        let account = |a: u32| (a as usize) < n_accounts;
        ensure(settled.len() == n_accounts, "settled", || {
            format!("{} balances for {n_accounts} accounts", settled.len())
        })?;
        ensure(open.rewards.len() == n_accounts, "open.rewards", || {
            format!("{} rows for {n_accounts} accounts", open.rewards.len())
        })?;
        // Settled and open credits are all fees ever paid, split: this bounds each of them,
        // and every later addition to them, by the fee total.
        let held = settled.iter().map(|&v| u128::from(v)).sum::<u128>()
            + open.rewards.iter().flatten().map(|&v| u128::from(v)).sum::<u128>();
        ensure(held == u128::from(total_fees), "settled", || {
            format!("balances add up to {held}, fees to {total_fees}")
        })?;

        let datanet_names = datanets.split("datanets")?;
        let n_datanets = datanet_names.len();
        ensure(datanet_rows.len() == n_datanets, "datanet_rows", || {
            format!("{} rows for {n_datanets} datanets", datanet_rows.len())
        })?;
        let datanets = table(&datanet_names, |_| 0, "datanets")?;
        let mut d_rows = Vec::with_capacity(n_datanets);
        for (id, r) in datanet_rows.into_iter().enumerate() {
            ensure(
                account(r.owner)
                    && money(r.earned)
                    && r.contributions <= MAX_COUNT
                    && r.attributions <= MAX_COUNT,
                "datanet_rows",
                || format!("datanet {id} has an unknown owner or a total out of range"),
            )?;
            d_rows.push(DatanetRow {
                owner: r.owner,
                lsn: r.lsn,
                contributions: r.contributions,
                attributions: r.attributions,
                earned: r.earned,
            });
        }

        let contribution_names = contributions.split("contributions")?;
        let n_contributions = contribution_names.len();
        ensure(contribution_rows.len() == n_contributions, "contribution_rows", || {
            format!("{} rows for {n_contributions} contributions", contribution_rows.len())
        })?;
        let mut c_rows = Vec::with_capacity(n_contributions);
        let mut meta = Vec::with_capacity(n_contributions);
        let mut revoked = Vec::with_capacity(n_contributions);
        let mut content: hashbrown::HashMap<[u8; 32], u32, foldhash::fast::FixedState> =
            hashbrown::HashMap::with_capacity_and_hasher(n_contributions, Default::default());
        for (id, r) in contribution_rows.into_iter().enumerate() {
            ensure(
                (r.datanet as usize) < n_datanets
                    && account(r.contributor)
                    && money(r.earned)
                    && r.inferences <= MAX_COUNT
                    && r.revoked_lsn <= last_lsn,
                "contribution_rows",
                || format!("contribution {id} has an unknown id or a value out of range"),
            )?;
            if let Some(earlier) = content.insert(r.content_hash, id as u32) {
                return Err(bad("contribution_rows", format!("{id} repeats {earlier}'s content")));
            }
            c_rows.push(ContributionRow {
                datanet: r.datanet,
                contributor: r.contributor,
                head: NONE,
                inferences: r.inferences,
                earned: r.earned,
            });
            meta.push(ContributionMeta {
                lsn: r.lsn,
                revoked_lsn: r.revoked_lsn,
                content_hash: r.content_hash,
            });
            revoked.push(u8::from(r.revoked_lsn != 0));
        }
        // The validator reads a contribution's datanet from its name's payload.
        let contributions = table(&contribution_names, |id| c_rows[id].datanet, "contributions")?;

        let model_names = models.split("models")?;
        ensure(model_rows.len() == model_names.len(), "model_rows", || {
            format!("{} rows for {} models", model_rows.len(), model_names.len())
        })?;
        let models = table(&model_names, |_| 0, "models")?;
        let mut m_rows: Vec<ModelRow> = Vec::with_capacity(model_rows.len());
        for (id, r) in model_rows.into_iter().enumerate() {
            // A base is an earlier model that is not itself an adapter.
            let base_ok =
                r.base.is_none_or(|b| m_rows.get(b as usize).is_some_and(|b| b.base.is_none()));
            let datanet = |&d: &u32| (d as usize) < n_datanets;
            ensure(
                account(r.owner)
                    && base_ok
                    && r.datanets.iter().all(datanet)
                    && r.lineage.iter().all(datanet)
                    && r.lineage.windows(2).all(|w| w[0] < w[1])
                    && money(r.fees)
                    && r.inferences <= MAX_COUNT,
                "model_rows",
                || format!("model {id} has an unknown id, an unsorted lineage or a bad total"),
            )?;
            m_rows.push(ModelRow {
                owner: r.owner,
                base: r.base,
                datanets: r.datanets.into(),
                lineage: r.lineage.into(),
                lsn: r.lsn,
                inferences: r.inferences,
                fees: r.fees,
            });
        }

        let fingerprint_len = usize::try_from(fingerprint_len).unwrap_or(usize::MAX);
        let inference_ids = FingerprintSet::from_slots(
            fingerprint_slots,
            fingerprint_lsns,
            fingerprint_len,
            last_lsn,
        )
        .map_err(|detail| bad("inference_ids", detail))?;

        let mut p_rows = Vec::with_capacity(policies.len());
        let mut after = 0;
        for p in policies {
            ensure(p.lsn > after && p.lsn <= last_lsn, "policies", || {
                format!("lsn {} out of order", p.lsn)
            })?;
            after = p.lsn;
            p_rows.push(PolicyRow { lsn: p.lsn, bps: bps_of(p.bps, "policies")? });
        }
        ensure(bps == p_rows.last().map_or(Bps::DEFAULT, |p| p.bps), "bps", || {
            format!("{bps:?} is not the last policy's split")
        })?;

        let mut r_rows = Vec::with_capacity(revocations.len());
        let mut after = 0;
        for r in revocations {
            // Increasing lsns, each the revoked_lsn of its contribution: one row per revoked
            // contribution once the counts agree.
            let matches = meta.get(r.contribution as usize).is_some_and(|m| m.revoked_lsn == r.lsn);
            ensure(
                matches && r.lsn > after && r.reason.len() <= MAX_REASON_BYTES,
                "revocations",
                || format!("revocation at lsn {} of contribution {}", r.lsn, r.contribution),
            )?;
            after = r.lsn;
            r_rows.push(RevocationRow {
                contribution: r.contribution,
                reason: r.reason.into(),
                lsn: r.lsn,
                ts: r.ts,
            });
        }
        let n_revoked = revoked.iter().filter(|&&v| v == 1).count();
        ensure(r_rows.len() == n_revoked, "revocations", || {
            format!("{} rows for {n_revoked} revoked contributions", r_rows.len())
        })?;

        let epochs = epochs_of(epochs, n_accounts, last_lsn, total_fees)?;
        let epoch = epochs.last().expect("checked: an epoch is open");
        check_fees(&open, epoch, &m_rows, &p_rows)?;
        let open = open_epoch(open, epoch, last_lsn, &revoked, &mut c_rows, &d_rows)?;

        Ok(Ledger {
            last_lsn,
            last_ts,
            total_fees,
            accounts,
            settled,
            datanets,
            datanet_rows: d_rows,
            contributions,
            contribution_rows: c_rows,
            contribution_meta: meta,
            revoked,
            content,
            models,
            model_rows: m_rows,
            inference_ids,
            bps,
            policies: p_rows,
            revocations: r_rows,
            epochs,
            open,
            settling: Settling::Incremental,
            scratch: Vec::new(),
            batch: None,
        })
    }
}

/// Epochs 1, 2, ..., all closed but the last, each opened where the one before closed, each
/// closed epoch's payouts and rewards adding up to its fees.
fn epochs_of(
    images: Vec<EpochImage>,
    n_accounts: usize,
    last_lsn: u64,
    total_fees: u64,
) -> Result<Vec<EpochRow>, ImageError> {
    ensure(!images.is_empty(), "epochs", || "no epoch".into())?;
    let last = images.len() - 1;
    let (mut opened, mut fees, mut inferences) = (0, 0u128, 0u128);
    let mut rows = Vec::with_capacity(images.len());
    for (k, e) in images.into_iter().enumerate() {
        let epoch = k as u64 + 1;
        ensure(e.epoch == epoch && e.opened_lsn == opened, "epochs", || {
            format!(
                "epoch {} opened at lsn {} in place of epoch {epoch} at {opened}",
                e.epoch, e.opened_lsn
            )
        })?;
        fees += u128::from(e.fees);
        inferences += u128::from(e.inferences);
        let closed = match (e.closed, k == last) {
            (None, true) => None,
            (None, false) => return Err(bad("epochs", format!("epoch {epoch} is not closed"))),
            (Some(_), true) => {
                return Err(bad("epochs", format!("epoch {epoch}, the last, is closed")))
            }
            (Some(c), false) => {
                ensure(c.lsn > opened && c.lsn <= last_lsn, "epochs", || {
                    format!("epoch {epoch} closed at lsn {}", c.lsn)
                })?;
                let paid: u128 = c.payouts.iter().map(|p| u128::from(p.1)).sum();
                let credited: u128 = c.rewards.iter().map(|r| u128::from(r.2)).sum();
                let accounts_ok = c.payouts.iter().all(|p| (p.0 as usize) < n_accounts)
                    && c.rewards.iter().all(|r| (r.0 as usize) < n_accounts);
                ensure(
                    accounts_ok && paid == u128::from(e.fees) && credited == paid,
                    "epochs",
                    || format!("epoch {epoch}'s payouts or rewards do not add up to its fees"),
                )?;
                let mut rewards = Vec::with_capacity(c.rewards.len());
                for (a, role, v) in c.rewards {
                    let role = Role::ALL.get(usize::from(role)).copied().ok_or_else(|| {
                        bad("epochs", format!("epoch {epoch} has a reward with role {role}"))
                    })?;
                    rewards.push((a, role, v));
                }
                opened = c.lsn;
                Some(ClosedEpoch {
                    lsn: c.lsn,
                    ts: c.ts,
                    payouts: c.payouts,
                    rewards,
                    payouts_root: c.payouts_root,
                })
            }
        };
        rows.push(EpochRow {
            epoch,
            opened_lsn: e.opened_lsn,
            inferences: e.inferences,
            fees: e.fees,
            closed,
        });
    }
    ensure(fees == u128::from(total_fees), "epochs", || {
        format!("epoch fees add up to {fees}, the fee total is {total_fees}")
    })?;
    ensure(inferences <= u128::from(MAX_COUNT), "epochs", || format!("{inferences} inferences"))?;
    Ok(rows)
}

/// Checks each open-epoch inference's fee and model: a known model, a fee within bounds, the
/// pool that splitting that fee under the policy in force at its lsn leaves, and fees that add
/// up to the epoch's. A what-if settlement splits these fees again, so they must be the ones
/// the pools came from.
fn check_fees(
    o: &OpenImage<Vec<u64>, Vec<u32>, Vec<[u64; 4]>>,
    epoch: &EpochRow,
    models: &[ModelRow],
    policies: &[PolicyRow],
) -> Result<(), ImageError> {
    let n = o.inf_pool.len();
    ensure(o.inf_fee.len() == n && o.inf_model.len() == n && o.inf_lsn.len() == n, "open", || {
        "per-inference arrays differ in length".into()
    })?;
    let mut fees: u128 = 0;
    for i in 0..n {
        let (fee, lsn) = (o.inf_fee[i], o.inf_lsn[i]);
        let model = models.get(o.inf_model[i] as usize);
        let in_force = policies.partition_point(|p| p.lsn < lsn);
        let bps = in_force.checked_sub(1).map_or(Bps::DEFAULT, |p| policies[p].bps);
        let pool_ok = model.is_some_and(|m| {
            fee <= MAX_FEE as u64 && split_fee(fee, bps, m.base.is_some()).pool == o.inf_pool[i]
        });
        ensure(pool_ok, "open.inf_fee", || {
            format!("inference {i}: its fee, model and pool do not agree")
        })?;
        fees += u128::from(fee);
    }
    ensure(fees == u128::from(epoch.fees), "open.inf_fee", || {
        format!("fees add up to {fees}, the epoch counts {}", epoch.fees)
    })
}

/// Checks the open epoch's arrays and rebuilds its chains. Beyond shapes and ids, it checks
/// what applying relies on to never underflow or fail an assertion: each entry's reward is
/// what `divide_pool` gives now (re-settlement subtracts the old rewards from the pool), the
/// totals a revocation debits hold at least this epoch's part, and the epoch's credits add up
/// to its fees (closing asserts that).
fn open_epoch(
    o: OpenImage<Vec<u64>, Vec<u32>, Vec<[u64; 4]>>,
    epoch: &EpochRow,
    last_lsn: u64,
    revoked: &[u8],
    c_rows: &mut [ContributionRow],
    d_rows: &[DatanetRow],
) -> Result<OpenEpoch, ImageError> {
    let (n, m) = (o.inf_pool.len(), o.e_weight.len());
    ensure(
        o.inf_lsn.len() == n && o.e_contribution.len() == m && o.e_reward.len() == m,
        "open",
        || "per-inference or per-entry arrays differ in length".into(),
    )?;
    ensure(m as u64 <= MAX_OPEN_ENTRIES, "open", || format!("{m} entries"))?;
    let contributor: Vec<u32> = c_rows.iter().map(|r| r.contributor).collect();
    let input = SettleInput {
        entry_start: &o.inf_start,
        pool: &o.inf_pool,
        contribution: &o.e_contribution,
        weight: &o.e_weight,
        revoked,
        contributor: &contributor,
        // One credit row per account.
        accounts: o.rewards.len(),
    };
    // Starts, spans, contribution ids, weights and pools: what settlement indexes by.
    input.check().map_err(|e| bad("open", e.0))?;
    ensure(n as u64 == epoch.inferences, "open", || {
        format!("{n} inferences, the epoch counts {}", epoch.inferences)
    })?;
    let lsns_ok = o.inf_lsn.first().is_none_or(|&l| l > epoch.opened_lsn)
        && o.inf_lsn.windows(2).all(|w| w[0] < w[1])
        && o.inf_lsn.last().is_none_or(|&l| l <= last_lsn);
    ensure(lsns_ok, "open.inf_lsn", || "lsns out of order or outside the epoch".into())?;
    let fees = u128::from(epoch.fees);
    // A pool is part of its fee; this also keeps every sum of rewards below within u64.
    let pools: u128 = o.inf_pool.iter().map(|&p| u128::from(p)).sum();
    ensure(pools <= fees, "open.inf_pool", || format!("pools add up to {pools}, fees to {fees}"))?;
    let credited: u128 = o.rewards.iter().flatten().map(|&v| u128::from(v)).sum();
    ensure(credited == fees, "open.rewards", || {
        format!("credits add up to {credited}, the epoch's fees to {fees}")
    })?;
    let unassigned = check_rewards(&input, &o.e_reward).map_err(|i| {
        bad("open.e_reward", format!("inference {i}'s rewards are not its pool divided"))
    })?;
    let protocol = o.rewards[PROTOCOL as usize][Role::Protocol as usize];
    ensure(u128::from(protocol) >= unassigned, "open.rewards", || {
        format!("$protocol holds {protocol}, less than the {unassigned} of unassigned pools")
    })?;

    // The chains, exactly as appending builds them: each entry points to its contribution's
    // previous entry, the head to the last. Dense side arrays, not the 32-byte rows, keep
    // this random walk in cache.
    let mut e_next = Vec::with_capacity(m);
    let mut heads = vec![NONE; c_rows.len()];
    let mut open_earned = vec![0u64; c_rows.len()];
    for (e, (&c, &reward)) in o.e_contribution.iter().zip(&o.e_reward).enumerate() {
        e_next.push(std::mem::replace(&mut heads[c as usize], e as u32));
        open_earned[c as usize] += reward;
    }
    for (row, head) in c_rows.iter_mut().zip(heads) {
        row.head = head;
    }
    let mut datanet_open = vec![0u64; d_rows.len()];
    let mut contributor_open = vec![0u64; o.rewards.len()];
    for (c, (row, &earned)) in c_rows.iter().zip(&open_earned).enumerate() {
        ensure(row.earned >= earned, "contribution_rows", || {
            format!("contribution {c} earned {}, less than its {earned} this epoch", row.earned)
        })?;
        datanet_open[row.datanet as usize] += earned;
        contributor_open[row.contributor as usize] += earned;
    }
    for (d, (row, &earned)) in d_rows.iter().zip(&datanet_open).enumerate() {
        ensure(row.earned >= earned, "datanet_rows", || {
            format!("datanet {d} earned {}, less than its {earned} this epoch", row.earned)
        })?;
    }
    for (a, (roles, &earned)) in o.rewards.iter().zip(&contributor_open).enumerate() {
        let credited = roles[Role::Contributor as usize];
        ensure(credited == earned, "open.rewards", || {
            format!("account {a} has {credited} as contributor, its entries earned {earned}")
        })?;
    }

    Ok(OpenEpoch {
        inf_lsn: o.inf_lsn,
        inf_pool: o.inf_pool,
        inf_fee: o.inf_fee,
        inf_model: o.inf_model,
        inf_start: o.inf_start,
        e_contribution: o.e_contribution,
        e_weight: o.e_weight,
        e_reward: o.e_reward,
        e_next,
        rewards: o.rewards,
    })
}

/// Divides every pool again, in parallel, and compares with `reward`: `Ok` is the total that
/// fell to `$protocol`, `Err` the first inference whose rewards differ. `input` is checked.
fn check_rewards(input: &SettleInput<'_>, reward: &[u64]) -> Result<u128, usize> {
    let n = input.inferences();
    let chunks: Vec<Result<u128, usize>> = (0..n.div_ceil(CHECK_CHUNK))
        .into_par_iter()
        .map(|k| {
            let mut scratch = [0u64; MAX_ENTRIES];
            let mut unassigned = 0u128;
            for i in k * CHECK_CHUNK..((k + 1) * CHECK_CHUNK).min(n) {
                let (s, e) = (input.entry_start[i] as usize, input.entry_start[i + 1] as usize);
                let contribution = &input.contribution[s..e];
                let out = &mut scratch[..e - s];
                let u = divide_pool(
                    input.pool[i],
                    &input.weight[s..e],
                    |j| input.revoked[contribution[j] as usize] == 0,
                    out,
                );
                if *out != reward[s..e] {
                    return Err(i);
                }
                unassigned += u128::from(u);
            }
            Ok(unassigned)
        })
        .collect();
    chunks.into_iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Attribution, Contribution, Datanet, Event, Inference, Model, Policy, Revocation, Settlement,
    };

    fn contribution(c: usize) -> Event {
        Event::Contribution(Contribution {
            contribution: format!("c{c}").into(),
            datanet: format!("d{}", c % 2).into(),
            contributor: format!("u{}", c % 3).into(),
            content_hash: format!("{c:064x}").into(),
        })
    }

    fn inference(id: &str, model: &str, fee: i64, entries: &[(usize, u32)]) -> Event {
        Event::Inference(Inference {
            inference: id.into(),
            model: model.into(),
            consumer: "k".into(),
            fee,
            attributions: entries
                .iter()
                .map(|&(c, weight)| Attribution { contribution: format!("c{c}").into(), weight })
                .collect(),
        })
    }

    fn revoke(c: usize) -> Event {
        Event::Revocation(Revocation { contribution: format!("c{c}").into(), reason: "r".into() })
    }

    /// Two datanets, eight contributions, a base model and an adapter, one closed epoch, and an
    /// open one with revoked and zero-weight entries.
    fn ledger() -> Ledger {
        let mut l = Ledger::new();
        let mut setup: Vec<Event> = ["d0", "d1"]
            .iter()
            .map(|d| Event::Datanet(Datanet { datanet: (*d).into(), owner: "o".into() }))
            .collect();
        setup.extend((0..8).map(contribution));
        setup.push(Event::Model(Model {
            model: "b".into(),
            owner: "o".into(),
            base_model: None,
            datanets: vec!["d0".into(), "d1".into()],
        }));
        setup.push(Event::Model(Model {
            model: "a".into(),
            owner: "p".into(),
            base_model: Some("b".into()),
            datanets: vec![],
        }));
        l.apply(&setup, 1).unwrap();
        l.apply(&[inference("i0", "a", 1001, &[(0, 9), (1, 3), (2, 3)]), revoke(2)], 2).unwrap();
        let close = Event::Settlement(Settlement { epoch: 1 });
        let policy = Event::Policy(Policy { protocol_bps: 500, model_bps: 500, base_bps: 500 });
        l.apply(&[close, policy], 3).unwrap();
        let batch: Vec<Event> = (0..12)
            .map(|i| {
                let entries = [(i % 8, 5 + i as u32), ((i + 3) % 8, 0), ((i + 5) % 8, 7)];
                inference(&format!("j{i}"), if i % 2 == 0 { "a" } else { "b" }, 977, &entries)
            })
            .collect();
        l.apply(&batch, 4).unwrap();
        l.apply(&[revoke(4)], 5).unwrap();
        l
    }

    fn reseal(bytes: &mut [u8]) {
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[HEADER..]);
        bytes[24..32].copy_from_slice(&sum.to_le_bytes());
    }

    fn image_in(l: &Ledger) -> ImageIn {
        from_archive(archive_of(&l.encode_image()).unwrap()).unwrap()
    }

    /// An image made from a (possibly tampered) `ImageIn`, sealed like `encode_image` does.
    fn encode_in(image: &ImageIn) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(image).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(archive.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&archive).to_le_bytes());
        bytes.extend_from_slice(&archive);
        bytes
    }

    #[test]
    fn borrowed_and_owned_images_archive_alike() {
        let l = ledger();
        let bytes = l.encode_image();
        let out = rkyv::to_bytes::<rkyv::rancor::Error>(&ImageOut::of(&l)).unwrap();
        assert_eq!(&bytes[HEADER..], out.as_slice(), "writing after the header moves nothing");
        assert!(ImageOut::of(&l).size_hint() >= out.len());
        assert_eq!(encode_in(&image_in(&l)), bytes);
        assert_eq!(Ledger::decode_image(&bytes).unwrap().digest(), l.digest());
    }

    #[test]
    #[should_panic(expected = "a deferred ledger has no image")]
    fn a_deferred_ledger_has_no_image() {
        let mut l = Ledger::new();
        l.settling = Settling::Deferred;
        l.encode_image();
    }

    /// Keeps using a state that loaded: whatever damage got past the checks must not make a
    /// later batch, close, read or round trip panic.
    fn exercise(mut l: Ledger) {
        let open = l.open_epoch();
        let batches = [
            vec![revoke(3)],
            vec![inference("x1", "a", 1 << 40, &[(0, 1), (4, 2), (6, 1_000_000)])],
            vec![revoke(5), revoke(6), revoke(7)],
            vec![contribution(9), inference("x2", "b", 5, &[(1, 1), (9, 1)])],
            vec![Event::Settlement(Settlement { epoch: open })],
            vec![inference("x3", "b", 77, &[(0, 1), (1, 2)]), revoke(0)],
        ];
        for batch in &batches {
            let _ = l.apply(batch, 99);
        }
        let _ = l.digest();
        let _ = (l.balances().count(), l.open_entries().count(), l.rewards().count());
        let _ = (l.payouts().count(), l.revocations().count(), l.models().count());
        let _ = (l.contributions().count(), l.datanets().count(), l.policies().count());
        let bytes = l.encode_image();
        assert_eq!(Ledger::decode_image(&bytes).unwrap().digest(), l.digest());
    }

    #[test]
    fn damage_behind_a_valid_checksum_is_an_error_or_a_sound_state() {
        let bytes = ledger().encode_image();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut loaded, mut malformed, mut inconsistent) = (0, 0, 0);
        for round in 0..3000 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + round % 3 {
                let at = HEADER + (rng() as usize) % (bytes.len() - HEADER);
                damaged[at] ^= 1 + (rng() % 255) as u8;
            }
            reseal(&mut damaged);
            match Ledger::decode_image(&damaged) {
                Ok(l) => {
                    loaded += 1;
                    exercise(l);
                }
                Err(ImageError::Malformed(_)) => malformed += 1,
                Err(ImageError::Inconsistent { .. }) => inconsistent += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        // Both outcomes happen: damage to a count or lsn loads, damage to structure does not.
        let counts = format!("{loaded} loaded, {malformed} malformed, {inconsistent} inconsistent");
        assert!(loaded > 20 && malformed > 20 && inconsistent > 20, "{counts}");
        exercise(Ledger::decode_image(&bytes).unwrap());
    }

    #[test]
    fn inconsistent_images_name_what_is_wrong() {
        type Tamper = fn(&mut ImageIn);
        let cases: Vec<(&str, Tamper)> = vec![
            ("last_lsn", |i| i.last_lsn = u64::MAX),
            ("settled", |i| i.total_fees += 1),
            ("bps", |i| i.bps = [9000, 1000, 1000]),
            ("bps", |i| i.bps = [1000, 2000, 1000]),
            ("accounts", |i| i.accounts.text.replace_range(0..1, "#")),
            ("accounts", |i| *i.accounts.ends.last_mut().unwrap() += 1),
            ("accounts", |i| i.accounts.ends[0] = 1_000_000),
            ("settled", |i| {
                i.settled.pop();
            }),
            ("open.rewards", |i| {
                i.open.rewards.pop();
            }),
            ("models", |i| (i.models.text, i.models.ends) = ("bb".into(), vec![1, 2])),
            ("datanet_rows", |i| i.datanet_rows[0].owner = 1_000),
            ("contribution_rows", |i| i.contribution_rows[0].datanet = 2),
            ("contribution_rows", |i| i.contribution_rows[3].contributor = u32::MAX),
            ("contribution_rows", |i| {
                i.contribution_rows[1].content_hash = i.contribution_rows[0].content_hash
            }),
            ("contribution_rows", |i| i.contribution_rows[0].revoked_lsn = u64::MAX),
            ("model_rows", |i| i.model_rows[1].base = Some(1)),
            ("model_rows", |i| i.model_rows[1].base = Some(7)),
            ("model_rows", |i| i.model_rows[0].lineage = vec![1, 0]),
            ("model_rows", |i| i.model_rows[0].datanets.push(2)),
            ("inference_ids", |i| i.fingerprint_len += 1),
            ("inference_ids", |i| i.fingerprint_slots.truncate(512)),
            ("inference_ids", |i| i.fingerprint_slots.iter_mut().for_each(|s| *s |= 1)),
            ("inference_ids", |i| {
                let used = i.fingerprint_slots.iter().position(|&fp| fp != 0).unwrap();
                i.fingerprint_lsns[used] = i.last_lsn + 1;
            }),
            ("inference_ids", |i| {
                i.fingerprint_lsns.pop();
            }),
            ("policies", |i| i.policies[0].lsn = 0),
            ("revocations", |i| {
                i.revocations.pop();
            }),
            ("revocations", |i| i.revocations[0].contribution = 3),
            ("epochs", |i| i.epochs.clear()),
            ("epochs", |i| i.epochs[0].closed = None),
            ("epochs", |i| i.epochs[1].epoch = 7),
            ("epochs", |i| i.epochs[0].closed.as_mut().unwrap().payouts[0].0 = 99),
            ("epochs", |i| i.epochs[0].closed.as_mut().unwrap().rewards[0].1 = 4),
            ("open", |i| i.open.e_contribution[0] = 8),
            ("open", |i| i.open.e_weight[1] = 2_000_000),
            ("open", |i| i.open.inf_start.swap(1, 2)),
            ("open", |i| {
                i.open.e_reward.pop();
            }),
            ("open", |i| {
                i.open.inf_lsn.pop();
            }),
            ("open", |i| i.epochs[1].inferences += 1),
            ("open.inf_lsn", |i| i.open.inf_lsn.swap(0, 1)),
            ("open.inf_fee", |i| i.open.inf_pool[0] = 1 << 39),
            ("open.inf_fee", |i| i.open.inf_fee[0] += 1),
            ("open.inf_fee", |i| i.open.inf_model[0] = 99),
            ("open", |i| {
                i.open.inf_fee.pop();
            }),
            ("open.e_reward", |i| i.open.e_reward.swap(0, 2)),
            ("open.rewards", |i| {
                let c = Role::Contributor as usize;
                let a = i.open.rewards.iter().position(|r| r[c] > 0).unwrap();
                i.open.rewards[a][c] -= 1;
                i.open.rewards[a][Role::Model as usize] += 1;
            }),
            ("contribution_rows", |i| {
                let c = i.open.e_contribution[0] as usize;
                i.contribution_rows[c].earned = 0;
            }),
        ];
        let l = ledger();
        for (k, (field, tamper)) in cases.into_iter().enumerate() {
            let mut image = image_in(&l);
            tamper(&mut image);
            match Ledger::decode_image(&encode_in(&image)) {
                Err(ImageError::Inconsistent { field: f, .. }) if f == field => {}
                Err(e) => panic!("case {k}: expected {field}, got {e}"),
                Ok(_) => panic!("case {k}: expected {field}, but it loaded"),
            }
        }
    }
}
