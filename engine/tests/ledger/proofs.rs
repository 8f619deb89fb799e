//! The log tree and RFC 9162 verification against a model written from the RFC's recursive
//! definitions (MTH, PATH, SUBPROOF), published vectors, adversarial proofs (immudb's GHSA-672p:
//! test the verifier, not only the prover), the snapshot encoding under damage, and proof
//! documents checked by both the engine and tests/clients/verify_proof.py.

use std::cell::Cell;
use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tally_engine::log_tree::{log_leaf_hash, DecodeError, Leaves, LogTree, ProofError};
use tally_engine::merkle::{self, empty_root, to_hex, verify_consistency, verify_inclusion, Hash};
use tally_engine::proof_check::{self, check_text, checkpoint_message, key_id, Signatures};
use tally_engine::{json, Event, Revocation};

use super::{contrib, dn, inf, model, settle};

// ---- An independent model, written from RFC 9162 §2.1 as it reads.

fn naive_node(left: &Hash, right: &Hash) -> Hash {
    let mut input = vec![0x01];
    input.extend_from_slice(left);
    input.extend_from_slice(right);
    Sha256::digest(&input).into()
}

/// "the largest power of two smaller than n"
fn naive_k(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn naive_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Sha256::digest(b"").into(),
        1 => d[0],
        n => {
            let k = naive_k(n as u64) as usize;
            naive_node(&naive_mth(&d[..k]), &naive_mth(&d[k..]))
        }
    }
}

/// PATH(m, D[n]).
fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = naive_k(d.len() as u64) as usize;
    let (mut path, other) = if m < k {
        (naive_path(m, &d[..k]), naive_mth(&d[k..]))
    } else {
        (naive_path(m - k, &d[k..]), naive_mth(&d[..k]))
    };
    path.push(other);
    path
}

/// SUBPROOF(m, D[n], b).
fn naive_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![naive_mth(d)] };
    }
    let k = naive_k(n as u64) as usize;
    let (mut proof, other) = if m <= k {
        (naive_subproof(m, &d[..k], b), naive_mth(&d[k..]))
    } else {
        (naive_subproof(m - k, &d[k..], false), naive_mth(&d[..k]))
    };
    proof.push(other);
    proof
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true); m = 0 has no RFC proof: empty by our decision.
fn naive_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
    if m == 0 {
        return Vec::new();
    }
    naive_subproof(m, d, true)
}

/// What a verifier sees of PATH(m, D[n]): for each element, whether it sits on the left.
fn path_shape(m: u64, n: u64) -> Vec<bool> {
    if n <= 1 {
        return Vec::new();
    }
    let k = naive_k(n);
    let (mut shape, left) =
        if m < k { (path_shape(m, k), false) } else { (path_shape(m - k, n - k), true) };
    shape.push(left);
    shape
}

/// What a verifier sees of PROOF(m, D[n]) for 0 < m < n: whether the old root's seed is in the
/// proof ('S'), then each element as a left ('L') or right ('R') sibling.
fn proof_shape(m: u64, n: u64) -> Option<Vec<u8>> {
    fn sub(m: u64, n: u64, b: bool) -> Vec<u8> {
        if m == n {
            return if b { Vec::new() } else { vec![b'S'] };
        }
        let k = naive_k(n);
        let (mut shape, side) =
            if m <= k { (sub(m, k, b), b'R') } else { (sub(m - k, n - k, false), b'L') };
        shape.push(side);
        shape
    }
    (0 < m && m < n).then(|| sub(m, n, true))
}

// ---- Fixtures

/// Leaf hashes of `n` events whose bodies depend on `seed`.
fn leaves(n: u64, seed: u64) -> Vec<Hash> {
    (1..=n)
        .map(|lsn| log_leaf_hash(lsn, seed as i64, format!("{{\"n\":{}}}", lsn ^ seed).as_bytes()))
        .collect()
}

fn build(block_level: u32, leaves: &[Hash]) -> LogTree {
    let mut tree = LogTree::with_block_level(block_level);
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree
}

/// A leaf source that counts its reads and asserts they are whole blocks.
struct Reads<'a> {
    leaves: &'a Vec<Hash>,
    block: u64,
    calls: Cell<u32>,
}

impl<'a> Reads<'a> {
    fn new(leaves: &'a Vec<Hash>, tree: &LogTree) -> Self {
        Reads { leaves, block: tree.block_leaves(), calls: Cell::new(0) }
    }

    fn take(&self) -> u32 {
        self.calls.replace(0)
    }
}

impl Leaves for Reads<'_> {
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, String> {
        assert!(from.is_multiple_of(self.block) && to == from + self.block, "read [{from}, {to})");
        self.calls.set(self.calls.get() + 1);
        self.leaves.leaves(from, to)
    }
}

/// Checks every root, inclusion proof and consistency proof of `tree` (built from `all`) at the
/// given sizes against the model, verifies each, and bounds the block reads.
fn assert_matches_model(
    tree: &LogTree,
    all: &Vec<Hash>,
    inclusions: &[(u64, u64)],
    consistencies: &[(u64, u64)],
) {
    let reads = Reads::new(all, tree);
    let ctx = format!("block level {}, {} leaves", tree.block_leaves().ilog2(), tree.size());
    for &(index, size) in inclusions {
        let d = &all[..size as usize];
        let root = naive_mth(d);
        assert_eq!(tree.root_at(size, &reads).unwrap(), root, "root_at {size}, {ctx}");
        assert!(reads.take() <= 1, "root_at {size} read more than one block, {ctx}");
        let proof = tree.inclusion_proof(index, size, &reads).unwrap();
        assert!(reads.take() <= 2, "inclusion ({index}, {size}) read more than two blocks, {ctx}");
        assert_eq!(proof, naive_path(index as usize, d), "inclusion ({index}, {size}), {ctx}");
        assert_eq!(Some(&proof), merkle::inclusion_proof(d, index as usize).as_ref());
        assert!(
            verify_inclusion(&all[index as usize], index, size, &proof, &root),
            "verify ({index}, {size}), {ctx}"
        );
    }
    for &(old, new) in consistencies {
        let proof = tree.consistency_proof(old, new, &reads).unwrap();
        assert!(reads.take() <= 2, "consistency ({old}, {new}) read more than two blocks, {ctx}");
        assert_eq!(
            proof,
            naive_proof(old as usize, &all[..new as usize]),
            "consistency ({old}, {new}), {ctx}"
        );
        let (old_root, new_root) =
            (naive_mth(&all[..old as usize]), naive_mth(&all[..new as usize]));
        assert!(
            verify_consistency(old, new, &old_root, &new_root, &proof),
            "verify ({old}, {new}), {ctx}"
        );
    }
}

fn all_pairs(n: u64, strict: bool) -> Vec<(u64, u64)> {
    (0..=n).flat_map(|b| (0..=b).filter(move |&a| !strict || a < b).map(move |a| (a, b))).collect()
}

#[test]
fn every_root_and_proof_of_small_trees_matches_the_model_at_every_block_level() {
    let all = leaves(40, 1);
    for level in 0..=3 {
        // One tree of 40: every size below its own, so blocks are read back.
        let tree = build(level, &all);
        assert_matches_model(&tree, &all, &all_pairs(40, true), &all_pairs(40, false));
        // Trees of every size, proofs at their own size: the incomplete block is kept.
        for n in 0..=40u64 {
            let tree = build(level, &all[..n as usize]);
            assert_eq!(tree.root(), naive_mth(&all[..n as usize]));
            let inclusions: Vec<_> = (0..n).map(|i| (i, n)).collect();
            let consistencies: Vec<_> = (0..=n).map(|m| (m, n)).collect();
            assert_matches_model(&tree, &all, &inclusions, &consistencies);
        }
    }
}

#[test]
fn roots_at_every_size_and_after_every_push_match_the_model() {
    let all = leaves(1100, 2);
    let naive: Vec<Hash> = (0..=all.len()).map(|n| naive_mth(&all[..n])).collect();
    let mut tree = LogTree::new();
    assert_eq!(tree.root(), naive[0]);
    for (n, leaf) in all.iter().enumerate() {
        tree.push(*leaf);
        assert_eq!(tree.root(), naive[n + 1], "root after push {}", n + 1);
    }
    let reads = Reads::new(&all, &tree);
    for (size, expected) in naive.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64, &reads).unwrap(), *expected, "root_at {size}");
        assert!(reads.take() <= 1);
    }
}

/// Sizes where the tree's shape changes: around blocks and powers of two.
fn interesting_size(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=max,
        (1..=max / 256, -2i64..=2).prop_map(|(k, d)| (k as i64 * 256 + d) as u64),
        (0..=max.ilog2(), -1i64..=1).prop_map(|(p, d)| ((1i64 << p) + d).max(0) as u64),
    ]
    .prop_map(move |n| n.min(max))
}

/// Sizes up to n worth proving at: block edges, powers of two, n itself and a random one.
fn sizes_below(n: u64, random: u64) -> Vec<u64> {
    let mut sizes = vec![n, n.saturating_sub(1), n / 2, random % (n + 1), 1];
    sizes.extend((1..=n / 256).flat_map(|k| [k * 256 - 1, k * 256, k * 256 + 1]));
    sizes.extend((0..=n.max(1).ilog2()).map(|p| 1 << p));
    sizes.retain(|&s| s <= n);
    sizes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..Default::default() })]
    #[test]
    fn proofs_match_the_model_on_random_trees(
        n in interesting_size(3000),
        seed in any::<u64>(),
        picks in prop::collection::vec((any::<u64>(), any::<u64>()), 6),
    ) {
        let all = leaves(n, seed);
        let tree = build(8, &all);
        let (mut inclusions, mut consistencies) = (Vec::new(), Vec::new());
        for (a, b) in picks {
            let sizes = sizes_below(n, a);
            let size = sizes[(b % sizes.len() as u64) as usize];
            if size > 0 {
                inclusions.push((b % size, size));
                inclusions.push((a % size, size));
            }
            let old = sizes[(a % sizes.len() as u64) as usize];
            consistencies.push((old.min(size), old.max(size)));
            consistencies.push((b % (size + 1), size));
        }
        assert_matches_model(&tree, &all, &inclusions, &consistencies);
    }
}

// ---- Published vectors: github.com/transparency-dev/merkle, proof/verify_test.go (commit
// 02194e9afb6c1d95b5381350007963aa70fff472), values only; leaf numbers there are 1-based.

const TD_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of the trees of 1..=8 of those leaves.
const TD_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// consistencyProofs: (size1, size2, proof).
const TD_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// inclusionProofs: (leaf, 1-based, size, proof).
const TD_INCLUSION: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn h(s: &str) -> Hash {
    from_hex(s).try_into().unwrap()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

#[test]
fn published_vectors_through_the_log_tree_at_every_block_level() {
    let all: Vec<Hash> = TD_LEAVES.iter().map(|l| merkle::leaf_hash(&from_hex(l))).collect();
    let root = |size: u64| h(TD_ROOTS[size as usize - 1]);
    for level in 0..=3 {
        let tree = build(level, &all);
        assert_eq!(tree.root(), root(8));
        let reads = Reads::new(&all, &tree);
        for (size1, size2, proof) in TD_CONSISTENCY {
            let expected = hashes(proof);
            assert_eq!(
                tree.consistency_proof(size1, size2, &reads).unwrap(),
                expected,
                "({size1}, {size2})"
            );
            assert!(verify_consistency(size1, size2, &root(size1), &root(size2), &expected));
            assert_consistency_mutations_rejected(
                size1,
                size2,
                &root(size1),
                &root(size2),
                &expected,
                true,
            );
        }
        for (leaf, size, proof) in TD_INCLUSION {
            let expected = hashes(proof);
            assert_eq!(
                tree.inclusion_proof(leaf - 1, size, &reads).unwrap(),
                expected,
                "({leaf}, {size})"
            );
            assert!(verify_inclusion(
                &all[leaf as usize - 1],
                leaf - 1,
                size,
                &expected,
                &root(size)
            ));
        }
    }
}

#[test]
fn consistency_edge_cases_follow_the_documented_decisions() {
    let all = leaves(20, 3);
    let tree = build(2, &all);
    let (empty, some) = (empty_root(), naive_mth(&all));
    // old == 0: an empty proof; every tree extends the empty one, whose root must be MTH({}).
    assert_eq!(tree.consistency_proof(0, 20, &all).unwrap(), Vec::<Hash>::new());
    assert!(verify_consistency(0, 20, &empty, &some, &[]));
    assert!(verify_consistency(0, 0, &empty, &empty, &[]));
    assert!(!verify_consistency(0, 20, &some, &some, &[]));
    assert!(!verify_consistency(0, 20, &empty, &some, &[some]));
    assert!(!verify_consistency(0, 20, &empty, &some, &[empty]));
    // old == new: an empty proof and equal roots.
    assert_eq!(tree.consistency_proof(7, 7, &all).unwrap(), Vec::<Hash>::new());
    assert!(verify_consistency(20, 20, &some, &some, &[]));
    assert!(!verify_consistency(20, 20, &some, &empty, &[]));
    assert!(!verify_consistency(20, 20, &some, &some, &[some]));
    // Sizes in the wrong order, or beyond the tree.
    assert_eq!(tree.consistency_proof(8, 7, &all), Err(ProofError::OldAfterNew { old: 8, new: 7 }));
    assert!(!verify_consistency(8, 7, &some, &some, &[]));
    assert_eq!(
        tree.consistency_proof(1, 21, &all),
        Err(ProofError::SizeBeyondTree { size: 21, tree_size: 20 })
    );
    assert_eq!(
        tree.inclusion_proof(5, 5, &all),
        Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        tree.inclusion_proof(0, 0, &all),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        tree.inclusion_proof(0, 21, &all),
        Err(ProofError::SizeBeyondTree { size: 21, tree_size: 20 })
    );
    assert_eq!(
        tree.root_at(u64::MAX, &all),
        Err(ProofError::SizeBeyondTree { size: u64::MAX, tree_size: 20 })
    );
    // A non-empty proof between different sizes never comes out empty; the RFC's step 1.
    assert!(!verify_consistency(3, 20, &naive_mth(&all[..3]), &some, &[]));
    assert!(!verify_consistency(4, 20, &naive_mth(&all[..4]), &some, &[]));
}

#[test]
fn a_proof_checks_under_another_size_only_with_the_same_shape_and_never_against_its_root() {
    let all = leaves(4, 4);
    let tree = build(0, &all);
    let root = |n: usize| naive_mth(&all[..n]);
    // Consistency (1, 3) and (1, 4): both two right siblings.
    let proof = tree.consistency_proof(1, 3, &all).unwrap();
    assert_eq!(proof_shape(1, 3), proof_shape(1, 4));
    assert!(verify_consistency(1, 4, &root(1), &root(3), &proof));
    assert!(!verify_consistency(1, 4, &root(1), &root(4), &proof));
    // Inclusion of leaf 0 in 3 and in 4 (merkle.rs says the same).
    let proof = tree.inclusion_proof(0, 3, &all).unwrap();
    assert!(verify_inclusion(&all[0], 0, 4, &proof, &root(3)));
    assert!(!verify_inclusion(&all[0], 0, 4, &proof, &root(4)));
}

// ---- Adversarial proofs: every alteration of a valid proof is rejected.

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Truncated, shortened, duplicated, swapped, reversed, extended and bit-flipped copies of
/// `proof` (each different from it), named.
fn mutations(proof: &[Hash], extras: &[Hash], every_bit: bool) -> Vec<(String, Vec<Hash>)> {
    let mut out = Vec::new();
    let mut add = |name: String, p: Vec<Hash>| {
        if p != proof {
            out.push((name, p));
        }
    };
    let n = proof.len();
    for len in 0..n {
        add(format!("truncated to {len}"), proof[..len].to_vec());
    }
    for k in 0..n {
        let mut p = proof.to_vec();
        p.remove(k);
        add(format!("without [{k}]"), p);
        let mut p = proof.to_vec();
        p.insert(k, proof[k]);
        add(format!("[{k}] duplicated"), p);
        for j in k + 1..n {
            let mut p = proof.to_vec();
            p.swap(k, j);
            add(format!("[{k}] and [{j}] swapped"), p);
        }
    }
    add("reversed".into(), proof.iter().rev().copied().collect());
    for (e, extra) in extras.iter().enumerate() {
        add(format!("extra {e} appended"), [proof, &[*extra]].concat());
        add(format!("extra {e} prepended"), [&[*extra], proof].concat());
    }
    let bits: Vec<usize> = if every_bit { (0..256).collect() } else { vec![0, 7, 100, 255] };
    for k in 0..n {
        for &bit in &bits {
            let mut p = proof.to_vec();
            p[k] = flip(&p[k], bit);
            add(format!("[{k}] bit {bit}"), p);
        }
    }
    out
}

/// The root of every prefix of `all`, by size (from `LogTree::root`, checked against the
/// model above).
fn roots_by_size(all: &[Hash]) -> Vec<Hash> {
    let mut tree = LogTree::with_block_level(0);
    let mut roots = vec![tree.root()];
    for leaf in all {
        tree.push(*leaf);
        roots.push(tree.root());
    }
    roots
}

fn assert_inclusion_mutations_rejected(
    all: &[Hash],
    roots: &[Hash],
    index: u64,
    size: u64,
    proof: &[Hash],
    every_bit: bool,
) {
    let ctx = format!("leaf {index} of {size}");
    let leaf = all[index as usize];
    let root = roots[size as usize];
    assert!(verify_inclusion(&leaf, index, size, proof, &root), "{ctx}");
    let extras = [
        root,
        leaf,
        [0; 32],
        proof.first().copied().unwrap_or(root),
        merkle::node_hash(&leaf, &root),
    ];
    for (name, bad) in mutations(proof, &extras, every_bit) {
        assert!(!verify_inclusion(&leaf, index, size, &bad, &root), "{name}, {ctx}");
    }
    // Another leaf, a flipped leaf, another index.
    for bit in [0, 255] {
        assert!(
            !verify_inclusion(&flip(&leaf, bit), index, size, proof, &root),
            "leaf bit {bit}, {ctx}"
        );
    }
    for other in (0..size + 2).filter(|&j| j != index).chain([u64::MAX]) {
        assert!(!verify_inclusion(&leaf, other, size, proof, &root), "index {other}, {ctx}");
        if other < size {
            assert!(
                !verify_inclusion(&all[other as usize], index, size, proof, &root),
                "leaf {other}, {ctx}"
            );
        }
    }
    // Another size: accepted with this root only where the shape is the same (RFC 9162);
    // against the root of that size, never.
    let shape = path_shape(index, size);
    let candidates = (1..=2 * size + 1).chain([size / 2, u64::MAX, 0]);
    for other in candidates.filter(|&s| s != size) {
        let same = index < other && other < u64::MAX && path_shape(index, other) == shape;
        assert_eq!(
            verify_inclusion(&leaf, index, other, proof, &root),
            same,
            "size {other}, {ctx}"
        );
        if let Some(other_root) = roots.get(other as usize).filter(|_| other > 0) {
            assert!(
                !verify_inclusion(&leaf, index, other, proof, other_root),
                "root of {other}, {ctx}"
            );
        }
    }
    // The root of a different tree of the same size.
    let foreign = naive_mth(&leaves(size, 0xf0f0));
    assert!(!verify_inclusion(&leaf, index, size, proof, &foreign), "foreign root, {ctx}");
}

fn assert_consistency_mutations_rejected(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
    every_bit: bool,
) {
    let ctx = format!("consistency ({old}, {new})");
    assert!(verify_consistency(old, new, old_root, new_root, proof), "{ctx}");
    let extras = [*old_root, *new_root, [0; 32], proof.first().copied().unwrap_or(*old_root)];
    for (name, bad) in mutations(proof, &extras, every_bit) {
        assert!(!verify_consistency(old, new, old_root, new_root, &bad), "{name}, {ctx}");
    }
    for bit in [0, 255] {
        assert!(
            !verify_consistency(old, new, &flip(old_root, bit), new_root, proof),
            "old root bit {bit}, {ctx}"
        );
        assert!(
            !verify_consistency(old, new, old_root, &flip(new_root, bit), proof),
            "new root bit {bit}, {ctx}"
        );
    }
    if old_root != new_root {
        assert!(!verify_consistency(old, new, new_root, old_root, proof), "roots swapped, {ctx}");
    }
    // Other sizes: accepted with these roots only where the proof has the same shape.
    let shape = proof_shape(old, new);
    let near = |s: u64| [s.saturating_sub(1), s + 1, s * 2, s / 2, s ^ 2, 0, u64::MAX];
    let mut pairs: Vec<(u64, u64)> = near(old).iter().map(|&o| (o, new)).collect();
    pairs.extend(near(new).iter().map(|&n| (old, n)));
    pairs.extend([(new, old), (old + 1, new + 1), (old.saturating_sub(1), new.saturating_sub(1))]);
    if new <= 12 {
        pairs.extend(all_pairs(2 * new + 1, false));
        pairs.extend(all_pairs(2 * new + 1, false).into_iter().map(|(a, b)| (b, a)));
    }
    for (o, n) in pairs.into_iter().filter(|&p| p != (old, new)) {
        // An empty proof says only "equal sizes and roots" or "from the empty tree".
        let same = if proof.is_empty() {
            o <= n
                && if o == 0 { *old_root == empty_root() } else { o == n && old_root == new_root }
        } else {
            n < u64::MAX && proof_shape(o, n) == shape
        };
        assert_eq!(
            verify_consistency(o, n, old_root, new_root, proof),
            same,
            "sizes ({o}, {n}), {ctx}"
        );
    }
}

#[test]
fn every_altered_inclusion_proof_is_rejected() {
    for (level, n) in [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 5),
        (2, 8),
        (3, 13),
        (8, 255),
        (8, 256),
        (8, 257),
        (8, 600),
        (8, 1025),
    ] {
        let all = leaves(n, n);
        let (tree, roots) = (build(level, &all), roots_by_size(&all));
        let picks = [0, 1, n / 2, n.saturating_sub(2), n - 1, 255, 256, 511];
        for (k, index) in picks.into_iter().filter(|&i| i < n).enumerate() {
            for size in [n, index + 1, (index + 1).max(n / 2 + 1)] {
                let proof = tree.inclusion_proof(index, size, &all).unwrap();
                assert_inclusion_mutations_rejected(&all, &roots, index, size, &proof, k < 2);
            }
        }
    }
}

#[test]
fn every_altered_consistency_proof_is_rejected() {
    for (level, n) in
        [(0, 2), (0, 3), (1, 7), (2, 8), (2, 12), (8, 256), (8, 257), (8, 700), (8, 1030)]
    {
        let all = leaves(n, n + 100);
        let tree = build(level, &all);
        let olds = [1, 2, 3, n / 2, n - 1, 255, 256, 257, 512];
        for (k, old) in olds.into_iter().filter(|&o| o > 0 && o < n).enumerate() {
            for new in [n, (old + 1).max(n.saturating_sub(3)), old + 1] {
                let proof = tree.consistency_proof(old, new, &all).unwrap();
                let (old_root, new_root) =
                    (naive_mth(&all[..old as usize]), naive_mth(&all[..new as usize]));
                assert_consistency_mutations_rejected(
                    old,
                    new,
                    &old_root,
                    &new_root,
                    &proof,
                    k < 2,
                );
                // Against the real roots of any other pair of sizes of this tree: never.
                for (o, m) in
                    [(old - 1, new), (old + 1, new), (old, new - 1), (old.max(1) - 1, new - 1)]
                {
                    if (o, m) != (old, new) && o <= m && m <= n {
                        let roots = (naive_mth(&all[..o as usize]), naive_mth(&all[..m as usize]));
                        assert!(
                            !verify_consistency(o, m, &roots.0, &roots.1, &proof),
                            "roots of ({o}, {m})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn against_the_roots_of_every_other_pair_of_sizes_a_consistency_proof_fails() {
    let all = leaves(24, 5);
    let tree = build(2, &all);
    let roots: Vec<Hash> = (0..=24).map(|n| naive_mth(&all[..n])).collect();
    for (old, new) in all_pairs(24, true).into_iter().filter(|&(o, _)| o > 0) {
        let proof = tree.consistency_proof(old, new, &all).unwrap();
        for (o, n) in all_pairs(24, false).into_iter().filter(|&p| p != (old, new)) {
            let accepted = verify_consistency(o, n, &roots[o as usize], &roots[n as usize], &proof);
            assert!(!accepted, "proof ({old}, {new}) accepted for ({o}, {n})");
        }
    }
}

// ---- Reads through `Leaves` are checked.

struct Broken(Vec<Hash>, &'static str);

impl Leaves for Broken {
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>, String> {
        let mut got = self.0.leaves(from, to)?;
        match self.1 {
            "fail" => return Err("disk on fire".into()),
            "short" => {
                got.pop();
            }
            "tampered" => got[3] = flip(&got[3], 9),
            "reordered" => got.swap(0, 1),
            _ => {}
        }
        Ok(got)
    }
}

#[test]
fn a_wrong_read_gives_an_error_never_a_wrong_proof() {
    let all = leaves(700, 6);
    let tree = LogTree::new();
    let tree = {
        let mut t = tree;
        all.iter().for_each(|l| t.push(*l));
        t
    };
    for how in ["fail", "short", "tampered", "reordered"] {
        let source = Broken(all.clone(), how);
        let inclusion = tree.inclusion_proof(10, 700, &source);
        let consistency = tree.consistency_proof(300, 600, &source);
        let root = tree.root_at(300, &source);
        for result in [inclusion.map(|_| ()), consistency.map(|_| ()), root.map(|_| ())] {
            let expected = match how {
                "fail" => matches!(result, Err(ProofError::Read { .. })),
                "short" => matches!(result, Err(ProofError::ReadCount { got: 255, .. })),
                _ => matches!(result, Err(ProofError::ReadMismatch { .. })),
            };
            assert!(expected, "{how}: {result:?}");
        }
    }
    // What lies in the kept tail or in stored nodes needs no read at all.
    let none = Broken(Vec::new(), "fail");
    assert!(tree.inclusion_proof(650, 700, &none).is_ok());
    assert!(tree.consistency_proof(512, 700, &none).is_ok());
    assert!(tree.root_at(512, &none).is_ok());
    assert_eq!(tree.root_at(700, &none), Ok(tree.root()));
}

// ---- Memory and the snapshot encoding.

#[test]
fn a_large_tree_keeps_a_quarter_byte_per_leaf() {
    let n = 100_000u64;
    let mut tree = LogTree::new();
    for lsn in 1..=n {
        tree.push(log_leaf_hash(lsn, 0, b"{}"));
    }
    assert!(tree.heap_bytes() <= n as usize, "{} bytes for {n} leaves", tree.heap_bytes());
    assert_eq!(tree.encode().len(), 42 + 32 * (n / 256 + n % 256) as usize);
}

#[test]
fn encoding_round_trips_and_the_decoded_tree_goes_on_growing() {
    for level in [0, 1, 3, 8] {
        for n in [0u64, 1, 2, 7, 8, 9, 255, 256, 257, 1000] {
            let all = leaves(n + 40, n);
            let tree = build(level, &all[..n as usize]);
            let back = LogTree::decode(&tree.encode()).unwrap();
            assert_eq!(back, tree, "level {level}, {n} leaves");
            let (mut grown, mut direct) = (back, build(level, &all));
            all[n as usize..].iter().for_each(|l| grown.push(*l));
            assert_eq!(grown.root(), direct.root());
            if n > 0 {
                let (a, b) = (
                    grown.inclusion_proof(n - 1, n + 40, &all),
                    direct.inclusion_proof(n - 1, n + 40, &all),
                );
                assert_eq!(a, b);
            }
            direct.push([7; 32]);
            grown.push([7; 32]);
            assert_eq!(grown, direct);
        }
    }
}

#[test]
fn no_truncation_or_bit_flip_of_an_encoding_decodes_to_another_tree() {
    for (level, n) in [(0, 5), (2, 11), (8, 3), (8, 300)] {
        let tree = build(level, &leaves(n, 7));
        let bytes = tree.encode();
        for len in 0..bytes.len() {
            assert!(LogTree::decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(LogTree::decode(&longer), Err(DecodeError::Length { .. })));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            // The block level is layout only: a flip there may decode to the same leaves.
            if let Ok(other) = LogTree::decode(&bad) {
                assert_eq!((other.size(), other.root()), (tree.size(), tree.root()), "bit {bit}");
                assert_eq!(bit / 8, 1, "bit {bit} outside the block level decoded");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..Default::default() })]
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = LogTree::decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_hashes_under_a_valid_header_never_panics(
        level in 0u8..=16, size in 0u64..600, seed in any::<u8>(),
    ) {
        let count = (size >> level) + (size & ((1 << level) - 1));
        let mut bytes = vec![1, level];
        bytes.extend_from_slice(&size.to_le_bytes());
        for i in 0..=count {
            bytes.extend_from_slice(&Sha256::digest([seed, i as u8, (i >> 8) as u8]));
        }
        prop_assert!(matches!(LogTree::decode(&bytes), Err(DecodeError::Root)));
    }
}

// ---- Proof documents: proof_check.rs and tests/clients/verify_proof.py.

/// RFC 8032 §7.1 TEST 1's public key; its secret key is public too, so these checkpoints are
/// test vectors, never trusted.
const TEST_1_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const CHECKPOINT_TS: i64 = 1_700_000_000_123_456;
const EVENTS_TS: i64 = 1_700_000_000_000_000;
/// TEST 1's signatures over the checkpoints of `three_events` at sizes 1, 2 and 3 (Ed25519
/// signing is deterministic: any implementation given that secret key makes exactly these).
const SIGNATURES: [&str; 3] = [
    "274de52b0eca7d5e52dfe70672310cdb8de02635a4293ab00e0d90b7180c902cf82d498b3630a02a7cb8f6794a5d39ccab6df2af05963ae013ea412cc0f93802",
    "af5225ce1da91ff521dd0f137aea6e3d5b0b400df749865c7353415623af058ac67f892afed983f73b60c599f4757226310dc8407b850968af2093d72855fc02",
    "f09ea2929ad8b491e95f15a1e3292714acc702f37cbc9e349e48026c09744a47e54493a1afafdc4266d9888d2aa0e4bc2408c7995d509b00f22611103cc9e606",
];
/// The root of `three_events`, pinned in verify_proof.py's self-test too.
const THREE_EVENTS_ROOT: &str = "3769e24986869c8d2ac8542520dcaac6da42b2a9ae728b0dd43fa0aabc982e30";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/clients/verify_proof.py");

/// A log: (lsn, ts, body) in lsn order.
type Log = Vec<(u64, i64, String)>;

fn three_events() -> Log {
    let revocation =
        Event::Revocation(Revocation { contribution: "c".into(), reason: "é".into() });
    let events = [dn("d", "o"), settle(1), revocation];
    events.iter().enumerate().map(|(i, e)| (i as u64 + 1, EVENTS_TS, json::body(e))).collect()
}

/// 600 events of every kind, with escapes and non-ASCII text in their bodies.
fn many_events() -> Log {
    (1..=600u64)
        .map(|lsn| {
            let event = match lsn % 5 {
                0 => dn(&format!("dn-{lsn}"), "ann \"the\" owner"),
                1 => contrib(&format!("c{lsn}"), "dn-a", "Zoë\n", lsn),
                2 => model(&format!("m{lsn}"), "bob", Some("m-base"), &["dn-a", "日本"]),
                3 => inf(&format!("i{lsn}"), "m-base", lsn as i64, &[("c1", 0.5), ("c2", 0.25)]),
                _ => settle(lsn),
            };
            (lsn, 1_000 * lsn as i64 - 7, json::body(&event))
        })
        .collect()
}

fn log_tree(log: &Log) -> (LogTree, Vec<Hash>) {
    let leaves: Vec<Hash> =
        log.iter().map(|(lsn, ts, body)| log_leaf_hash(*lsn, *ts, body.as_bytes())).collect();
    (build(8, &leaves), leaves)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_list(hashes: &[Hash]) -> Value {
    hashes.iter().map(to_hex).collect()
}

/// The checkpoint of `three_events` at `size`, signed by TEST 1.
fn checkpoint(size: u64) -> Value {
    let (tree, leaves) = log_tree(&three_events());
    let public: [u8; 32] = from_hex(TEST_1_PUBLIC).try_into().unwrap();
    json!({
        "tree_size": size, "root": to_hex(&tree.root_at(size, &leaves).unwrap()),
        "ts_micros": CHECKPOINT_TS, "public_key": TEST_1_PUBLIC,
        "signature": SIGNATURES[size as usize - 1], "key_id": hex(&key_id(&public)),
    })
}

/// Accepts exactly TEST 1's signatures over `three_events`' checkpoints: the engine has no
/// Ed25519, and these were checked by verify_proof.py's RFC 8032 code.
fn pinned_ed25519(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let (tree, leaves) = log_tree(&three_events());
    (1..=3u64).any(|size| {
        let root = tree.root_at(size, &leaves).unwrap();
        public[..] == from_hex(TEST_1_PUBLIC)[..]
            && message == checkpoint_message(size, &root, CHECKPOINT_TS).as_bytes()
            && signature[..] == from_hex(SIGNATURES[size as usize - 1])[..]
    })
}

const SIGNATURES_CHECK: Signatures = Signatures { verify: &pinned_ed25519, trusted_key: None };

fn inclusion_doc(log: &Log, lsn: u64, size: u64) -> Value {
    let (tree, leaves) = log_tree(log);
    let (_, ts, body) = &log[lsn as usize - 1];
    json!({
        "kind": "inclusion", "lsn": lsn, "ts_micros": ts, "body": body, "leaf_index": lsn - 1,
        "tree_size": size, "path": hex_list(&tree.inclusion_proof(lsn - 1, size, &leaves).unwrap()),
        "root": to_hex(&tree.root_at(size, &leaves).unwrap()),
    })
}

fn consistency_doc(log: &Log, old: u64, new: u64) -> Value {
    let (tree, leaves) = log_tree(log);
    json!({
        "kind": "consistency", "old_size": old, "new_size": new,
        "old_root": to_hex(&tree.root_at(old, &leaves).unwrap()),
        "new_root": to_hex(&tree.root_at(new, &leaves).unwrap()),
        "path": hex_list(&tree.consistency_proof(old, new, &leaves).unwrap()),
    })
}

fn payouts() -> Vec<(String, u64)> {
    let mut payouts: Vec<(String, u64)> = (0..20u64)
        .map(|i| {
            (
                format!("{}-{i}", ["$protocol", "Zoë", "ann", "日本"][i as usize % 4]),
                i * 1_000_003 + 1,
            )
        })
        .collect();
    payouts.sort();
    payouts
}

fn payout_doc(index: usize) -> Value {
    let payouts = payouts();
    let pairs: Vec<(&str, u64)> = payouts.iter().map(|(a, v)| (a.as_str(), *v)).collect();
    let leaves: Vec<Hash> =
        pairs.iter().map(|(a, v)| merkle::leaf_hash(&merkle::leaf_data(a, *v))).collect();
    json!({
        "kind": "payout", "account": pairs[index].0, "amount": pairs[index].1, "leaf_index": index,
        "tree_size": pairs.len(), "path": hex_list(&merkle::inclusion_proof(&leaves, index).unwrap()),
        "payouts_root": to_hex(&merkle::payouts_root(&pairs)),
    })
}

/// With `checkpoint` replacing (or, with `keep`, joining) the document's root.
fn signed(mut doc: Value, root_field: &str, size: u64, keep: bool) -> Value {
    let map = doc.as_object_mut().unwrap();
    if !keep {
        map.remove(root_field);
    }
    map.insert("checkpoint".into(), checkpoint(size));
    doc
}

/// Valid documents of every kind and form.
fn valid_documents() -> Vec<Value> {
    let (three, many) = (three_events(), many_events());
    let mut docs = Vec::new();
    for (lsn, size) in [
        (1, 600),
        (2, 600),
        (256, 600),
        (257, 600),
        (300, 513),
        (599, 600),
        (600, 600),
        (1, 1),
        (256, 256),
    ] {
        docs.push(inclusion_doc(&many, lsn, size));
    }
    for (old, new) in
        [(1, 600), (256, 600), (300, 513), (599, 600), (0, 600), (600, 600), (255, 257)]
    {
        docs.push(consistency_doc(&many, old, new));
    }
    docs.extend([0, 7, 19].map(payout_doc));
    for size in 1..=3 {
        let mut doc = checkpoint(size);
        doc["kind"] = "checkpoint".into();
        docs.push(doc);
        docs.push(signed(inclusion_doc(&three, size, size), "root", size, false));
        docs.push(signed(consistency_doc(&three, 1, size), "new_root", size, size == 2));
    }
    docs.push(signed(inclusion_doc(&three, 1, 3), "root", 3, true));
    docs
}

/// (document text, whether it must be valid: None where only agreement is asked).
type Case = (String, Option<bool>);

/// Each valid document, then many altered copies of it.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for doc in valid_documents() {
        let text = doc.to_string();
        cases.push((text.clone(), Some(true)));
        cases.extend(value_mutations(&doc).into_iter().map(|(d, e)| (d.to_string(), e)));
        cases.extend(text_mutations(&doc, &text));
        cases.extend(taller(&doc).into_iter().map(|d| (d.to_string(), Some(false))));
        if let Some(signature) = doc.get("signature").and_then(Value::as_str) {
            let mut malleated = doc.clone();
            malleated["signature"] = json!(add_group_order(signature));
            cases.push((malleated.to_string(), Some(false)));
        }
    }
    cases.extend(
        ["[]", "\"x\"", "1", "{", "", "{\"kind\":\"inclusion\"}", "{\"kind\":7}", "null"]
            .map(|t| (t.to_string(), Some(false))),
    );
    cases
}

const OPTIONAL: [&str; 3] = ["root", "new_root", "checkpoint"];

fn value_mutations(doc: &Value) -> Vec<(Value, Option<bool>)> {
    let map = doc.as_object().unwrap();
    let mut out = Vec::new();
    let mut with = |name: &str, value: Option<Value>, expected: Option<bool>| {
        let mut changed = map.clone();
        match value {
            Some(value) => changed.insert(name.to_string(), value),
            None => changed.remove(name),
        };
        out.push((Value::Object(changed), expected));
    };
    // From the empty tree, new_root is not constrained (see merkle::verify_consistency).
    let from_empty = map.get("old_size") == Some(&json!(0));
    for (name, value) in map {
        if name == "new_root" && from_empty {
            with(name, Some(json!(THREE_EVENTS_ROOT)), Some(true));
            continue;
        }
        let must = if OPTIONAL.contains(&name.as_str()) { None } else { Some(false) };
        with(name, None, must);
        with(name, Some(Value::Null), must);
        match value {
            Value::Number(n) => {
                let n = n.as_i64().unwrap_or(i64::MAX);
                for other in [n + 1, n - 1, n + 2, n / 2, n * 2] {
                    with(name, Some(other.into()), None);
                }
                with(name, Some(json!(n.to_string())), Some(false));
                with(name, Some(json!(1.5)), Some(false));
                with(name, Some(json!(true)), Some(false));
            }
            Value::String(s) if name == "kind" => {
                with(name, Some(json!(s.to_uppercase())), Some(false))
            }
            Value::String(s) => {
                with(name, Some(json!(format!("{s}x"))), Some(false));
                with(name, Some(json!(&s[..s.len().saturating_sub(1)])), Some(false));
                with(
                    name,
                    Some(json!(s.to_uppercase())),
                    if s.to_uppercase() == *s { Some(true) } else { Some(false) },
                );
                let mut chars: Vec<char> = s.chars().collect();
                if let Some(c) = chars.first_mut() {
                    *c = if *c == '0' { '1' } else { '0' };
                }
                with(
                    name,
                    Some(json!(chars.into_iter().collect::<String>())),
                    if s.starts_with('0') || s.starts_with('1') { None } else { Some(false) },
                );
                with(name, Some(json!(7)), Some(false));
            }
            Value::Array(items) => {
                for k in 0..items.len() {
                    let mut fewer = items.clone();
                    fewer.remove(k);
                    with(name, Some(Value::Array(fewer)), Some(false));
                    let mut more = items.clone();
                    more.insert(k, items[k].clone());
                    with(name, Some(Value::Array(more)), Some(false));
                    let mut flipped = items.clone();
                    let digit =
                        if flipped[k].as_str().unwrap().starts_with('0') { "1" } else { "0" };
                    flipped[k] = json!(format!("{digit}{}", &flipped[k].as_str().unwrap()[1..]));
                    with(name, Some(Value::Array(flipped)), Some(false));
                    let mut upper = items.clone();
                    upper[k] = json!(upper[k].as_str().unwrap().to_uppercase());
                    with(name, Some(Value::Array(upper)), Some(false));
                }
                if items.len() > 1 {
                    with(
                        name,
                        Some(Value::Array(items.iter().rev().cloned().collect())),
                        Some(false),
                    );
                }
                let mut longer = items.clone();
                longer.push(json!(THREE_EVENTS_ROOT));
                with(name, Some(Value::Array(longer)), Some(false));
                with(
                    name,
                    Some(json!(items.iter().map(|i| i.as_str().unwrap()).collect::<String>())),
                    Some(false),
                );
                with(name, Some(json!([1])), Some(false));
            }
            Value::Object(_) => {
                with(name, Some(json!("checkpoint")), Some(false));
                for size in 1..=3 {
                    let mut other = checkpoint(size);
                    other["ts_micros"] = json!(CHECKPOINT_TS + 1);
                    with(name, Some(other), Some(false));
                }
                let mut malleated = value.clone();
                malleated["signature"] =
                    json!(add_group_order(value["signature"].as_str().unwrap()));
                with(name, Some(malleated), Some(false));
                for field in ["signature", "key_id", "public_key", "root"] {
                    let mut other = value.clone();
                    let text = other[field].as_str().unwrap().to_string();
                    other[field] = json!(format!(
                        "{}{}",
                        if text.starts_with('f') { "e" } else { "f" },
                        &text[1..]
                    ));
                    with(name, Some(other), Some(false));
                }
            }
            _ => {}
        }
    }
    with("note", Some(json!("an extra field is ignored")), Some(true));
    with("kind", Some(json!("receipt")), Some(false));
    out
}

/// The signature with L (the group order) added to its S half: it satisfies the verification
/// equation, and RFC 8032 §5.1.7 rejects it (S must be below L) so signatures stay unique.
fn add_group_order(signature: &str) -> String {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10,
    ];
    let mut bytes = from_hex(signature);
    let mut carry = 0u16;
    for (byte, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L overflows 256 bits");
    hex(&bytes)
}

/// A proof one element longer, against the root that element would fold into: only the
/// verifier's tree-height check (RFC 9162's `sn`) stops it.
fn taller(doc: &Value) -> Vec<Value> {
    let field = ["root", "new_root", "payouts_root"].into_iter().find(|f| doc.get(*f).is_some());
    let (Some(field), Some(_)) = (field, doc.get("path")) else {
        return Vec::new();
    };
    let root = h(doc[field].as_str().unwrap());
    let extra = merkle::leaf_hash(b"extra");
    [merkle::node_hash(&extra, &root), merkle::node_hash(&root, &extra)]
        .iter()
        .map(|taller_root| {
            let mut changed = doc.clone();
            changed["path"].as_array_mut().unwrap().push(json!(to_hex(&extra)));
            changed[field] = json!(to_hex(taller_root));
            changed
        })
        .collect()
}

/// Alterations only JSON text can carry: number forms, escapes, duplicate keys, constants.
fn text_mutations(doc: &Value, text: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for (name, value) in doc.as_object().unwrap() {
        if !value.is_number() {
            continue;
        }
        let placeholder = |token: &str| {
            let mut changed = doc.clone();
            changed[name] = json!("@@");
            changed.to_string().replace("\"@@\"", token)
        };
        let n = value.to_string();
        for token in
            ["18446744073709551616", "-9223372036854775809", "1e0", "1.0", "-1", "NaN", "Infinity"]
        {
            out.push((placeholder(token), Some(false)));
        }
        for token in
            ["18446744073709551615", "9223372036854775807", "-9223372036854775808", "-0", "0"]
        {
            out.push((placeholder(token), None));
        }
        out.push((placeholder(&format!("{n} ")), Some(true)));
        // The first of two equal keys is overridden by the second in both parsers.
        out.push((text.replacen('{', &format!("{{\"{name}\":12345,"), 1), Some(true)));
    }
    if text.contains('é') {
        out.push((text.replace('é', "\\u00e9"), Some(true)));
        out.push((text.replace('é', "e\\u0301"), Some(false)));
    }
    out.push((text.replacen('{', "{\"note\":\"\\ud800\",", 1), Some(false)));
    out.push((text.replacen('{', "{\"note\":NaN,", 1), Some(false)));
    out.push((text.replacen('{', "{\"note\":\"\\u00e9\",", 1), Some(true)));
    out.push((format!(" {text} "), Some(true)));
    out
}

#[test]
fn three_events_give_the_pinned_root_and_their_documents_check() {
    let (tree, _) = log_tree(&three_events());
    assert_eq!(to_hex(&tree.root()), THREE_EVENTS_ROOT);
    assert_eq!(three_events()[2].2, r#"{"contribution":"c","reason":"é"}"#);
    for doc in valid_documents() {
        assert_eq!(proof_check::check(&doc, &SIGNATURES_CHECK), Ok(()), "{doc}");
    }
    // A trusted key other than the signer's refuses every checkpoint.
    let other = Signatures { verify: &pinned_ed25519, trusted_key: Some([7; 32]) };
    let mut doc = checkpoint(3);
    doc["kind"] = "checkpoint".into();
    assert!(proof_check::check(&doc, &other).unwrap_err().contains("trusted key"));
    let trusted: [u8; 32] = from_hex(TEST_1_PUBLIC).try_into().unwrap();
    let same = Signatures { verify: &pinned_ed25519, trusted_key: Some(trusted) };
    assert_eq!(proof_check::check(&doc, &same), Ok(()));
}

#[test]
fn every_altered_document_is_refused_by_the_engine() {
    for (text, expected) in cases() {
        if let Some(expected) = expected {
            let verdict = check_text(&text, &SIGNATURES_CHECK);
            assert_eq!(verdict.is_ok(), expected, "{text}: {verdict:?}");
        }
    }
}

/// Runs verify_proof.py --jsonl over `texts`; None when there is no python3 to run.
fn python_verdicts(texts: &[&str]) -> Option<Vec<String>> {
    let mut child = match Command::new("python3")
        .arg(SCRIPT)
        .arg("--jsonl")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: cannot run python3 ({e})");
            return None;
        }
    };
    let input = texts.join("\n") + "\n";
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "verify_proof.py failed");
    Some(String::from_utf8(output.stdout).unwrap().lines().map(String::from).collect())
}

#[test]
fn the_engine_and_the_python_verifier_agree_on_every_document() {
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
    assert!(texts.iter().all(|t| !t.contains('\n')));
    let Some(verdicts) = python_verdicts(&texts) else { return };
    assert_eq!(verdicts.len(), cases.len());
    let mut valid = 0;
    for ((text, _), python) in cases.iter().zip(&verdicts) {
        let engine = check_text(text, &SIGNATURES_CHECK);
        assert_eq!(
            engine.is_ok(),
            python == "valid",
            "{text}\nengine: {engine:?}\npython: {python}"
        );
        assert!(python == "valid" || python.starts_with("invalid: "), "{python}");
        valid += usize::from(engine.is_ok());
    }
    assert!(valid > 50 && cases.len() - valid > 1000, "{valid} valid of {}", cases.len());
}
