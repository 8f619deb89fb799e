//! Dense ids for names: the n-th distinct name of a namespace gets id n. Ids are assigned in
//! log order, so every replica and every replay gives each name the same id. Names are never
//! removed: the ledger is append-only.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// A fixed seed keeps hashing identical across processes (not needed for correctness, since
/// ids never depend on hash values, but it makes performance reproducible).
const SEED: u64 = 0x7a11_7a11_7a11_7a11;

#[derive(Clone)]
pub(crate) struct Interner {
    table: HashTable<u32>,
    names: Vec<Box<str>>,
}

#[inline]
fn hash(name: &str) -> u64 {
    FixedState::with_seed(SEED).hash_one(name)
}

impl Interner {
    pub(crate) fn new() -> Self {
        Interner {
            table: HashTable::new(),
            names: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        let names = &self.names;
        self.table
            .find(hash(name), |&id| &*names[id as usize] == name)
            .copied()
    }

    /// Adds a name that is not present yet and returns its id.
    pub(crate) fn push(&mut self, name: &str) -> u32 {
        debug_assert!(self.get(name).is_none(), "interning {name:?} twice");
        let id = u32::try_from(self.names.len()).expect("more than 2^32 names in one namespace");
        self.names.push(name.into());
        let names = &self.names;
        self.table
            .insert_unique(hash(name), id, |&i| hash(&names[i as usize]));
        id
    }

    #[inline]
    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.names.iter().map(|n| n.len()).sum::<usize>()
    }
}
