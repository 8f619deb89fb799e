//! Dense ids for names: the n-th distinct name of a namespace gets id n. Ids are assigned in
//! log order, so every replica and every replay gives each name the same id. Names are never
//! removed: the ledger is append-only.
//!
//! The table is open addressing with linear probing over 32-byte slots that hold the id, a
//! caller's payload and the first 16 bytes of the name, so a lookup of a short name touches one
//! cache line and nothing else. Ingest resolves eight names per inference; `prefetch` lets the
//! caller start all their cache misses before resolving any of them.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// A fixed seed keeps hashing identical across processes (ids never depend on hash values;
/// this only makes performance reproducible).
const SEED: u64 = 0x7a11_7a11_7a11_7a11;
/// Names up to this long are compared inside the slot.
const INLINE: usize = 16;
const MIN_SLOTS: usize = 64;
/// Grow at 5/8 load: linear probing stays short, and the table at most 2.6 slots per name.
const LOAD_NUM: usize = 5;
const LOAD_DEN: usize = 8;

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    /// High half of the hash with the low bit set; 0 marks an empty slot.
    tag: u32,
    id: u32,
    /// A caller's u32 that travels with the name (a contribution's datanet).
    payload: u32,
    len: u32,
    prefix: [u8; INLINE],
}

/// A name's hash, computed once and used for `touch` and `get_hashed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameHash(u64);

impl NameHash {
    #[inline]
    pub(crate) fn of(name: &str) -> NameHash {
        NameHash(FixedState::with_seed(SEED).hash_one(name))
    }

    #[inline]
    fn tag(self) -> u32 {
        (self.0 >> 32) as u32 | 1
    }
}

#[inline]
fn prefix(name: &str) -> [u8; INLINE] {
    let mut p = [0u8; INLINE];
    let n = name.len().min(INLINE);
    p[..n].copy_from_slice(&name.as_bytes()[..n]);
    p
}

#[derive(Clone)]
pub(crate) struct Interner {
    slots: Vec<Slot>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub(crate) fn new() -> Self {
        Interner { slots: vec![Slot::default(); MIN_SLOTS], names: Vec::new() }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.get_hashed(name, NameHash::of(name)).map(|(id, _)| id)
    }

    /// Starts loading the slot where `hash` starts probing, so its cache miss overlaps others.
    #[inline]
    pub(crate) fn prefetch(&self, hash: NameHash) {
        crate::prefetch::prefetch(&self.slots[hash.0 as usize & self.mask()]);
    }

    /// The id and the payload given to `push_with_payload`.
    #[inline]
    pub(crate) fn get_hashed(&self, name: &str, hash: NameHash) -> Option<(u32, u32)> {
        let (tag, len, head) = (hash.tag(), name.len() as u32, prefix(name));
        let mask = self.mask();
        let mut i = hash.0 as usize & mask;
        loop {
            let s = &self.slots[i];
            if s.tag == 0 {
                return None;
            }
            if s.tag == tag
                && s.len == len
                && s.prefix == head
                && (name.len() <= INLINE
                    || self.names[s.id as usize].as_bytes()[INLINE..] == name.as_bytes()[INLINE..])
            {
                return Some((s.id, s.payload));
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds a name that is not present yet and returns its id.
    pub(crate) fn push(&mut self, name: &str) -> u32 {
        self.push_with_payload(name, 0)
    }

    pub(crate) fn push_with_payload(&mut self, name: &str, payload: u32) -> u32 {
        debug_assert!(self.get(name).is_none(), "interning {name:?} twice");
        let id = u32::try_from(self.names.len()).expect("more than 2^32 names in one namespace");
        if (self.names.len() + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
        }
        self.names.push(name.into());
        let slot = Slot { tag: 0, id, payload, len: name.len() as u32, prefix: prefix(name) };
        Self::place(&mut self.slots, NameHash::of(name), slot);
        id
    }

    /// A table holding `names`, given in id order with their payloads (a snapshot load, see
    /// `image.rs`). It is sized once, to the size pushing them one by one would reach, so no
    /// name is hashed twice; the iterator's length must therefore be exact. `Err(id)`: the name
    /// with this id repeats an earlier one.
    pub(crate) fn from_names<'a>(
        names: impl ExactSizeIterator<Item = (&'a str, u32)>,
    ) -> Result<Self, u32> {
        let mut slots = MIN_SLOTS;
        while names.len() * LOAD_DEN > slots * LOAD_NUM {
            slots *= 2;
        }
        let mut table = Interner {
            slots: vec![Slot::default(); slots],
            names: Vec::with_capacity(names.len()),
        };
        for (name, payload) in names {
            let id =
                u32::try_from(table.names.len()).expect("more than 2^32 names in one namespace");
            let hash = NameHash::of(name);
            if table.get_hashed(name, hash).is_some() {
                return Err(id);
            }
            table.names.push(name.into());
            let slot = Slot { tag: 0, id, payload, len: name.len() as u32, prefix: prefix(name) };
            Self::place(&mut table.slots, hash, slot);
        }
        Ok(table)
    }

    fn place(slots: &mut [Slot], hash: NameHash, mut slot: Slot) {
        slot.tag = hash.tag();
        let mask = slots.len() - 1;
        let mut i = hash.0 as usize & mask;
        while slots[i].tag != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = slot;
    }

    fn grow(&mut self) {
        let doubled = vec![Slot::default(); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        for slot in old.into_iter().filter(|s| s.tag != 0) {
            let hash = NameHash::of(&self.names[slot.id as usize]);
            Self::place(&mut self.slots, hash, slot);
        }
    }

    #[inline]
    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.names.iter().map(|n| n.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_with_shared_prefixes() {
        let mut i = Interner::new();
        let names = ["a", "ab", "0123456789abcdef", "0123456789abcdefX", "0123456789abcdefY", ""];
        for (k, n) in names.iter().enumerate() {
            assert_eq!(i.push_with_payload(n, 100 + k as u32), k as u32);
        }
        for k in 0..10_000 {
            i.push(&format!("name-{k}"));
        }
        for (k, n) in names.iter().enumerate() {
            assert_eq!(i.get_hashed(n, NameHash::of(n)), Some((k as u32, 100 + k as u32)));
            assert_eq!(i.name(k as u32), *n);
        }
        for missing in ["b", "a\0", "0123456789abcdefZ", "0123456789abcde", "0123456789abcdefXX"] {
            assert_eq!(i.get(missing), None, "{missing:?}");
        }
        assert_eq!(i.get("name-9999"), Some(9_999 + names.len() as u32));
        assert_eq!(i.len(), 10_000 + names.len());
    }

    #[test]
    fn from_names_matches_pushing_and_refuses_repeats() {
        let names: Vec<String> = (0..5_000).map(|k| format!("a-rather-long-name-{k}")).collect();
        let mut pushed = Interner::new();
        for (k, n) in names.iter().enumerate() {
            pushed.push_with_payload(n, k as u32 * 3);
        }
        let loaded =
            Interner::from_names(names.iter().enumerate().map(|(k, n)| (n.as_str(), k as u32 * 3)))
                .unwrap();
        assert_eq!(loaded.slots.len(), pushed.slots.len());
        for n in &names {
            assert_eq!(
                loaded.get_hashed(n, NameHash::of(n)),
                pushed.get_hashed(n, NameHash::of(n))
            );
        }
        assert_eq!(loaded.get("a-rather-long-name-5000"), None);
        let repeated = ["x", "y", "x"].into_iter().map(|n| (n, 0));
        assert_eq!(Interner::from_names(repeated).err(), Some(2));
    }
}
