//! Payout commitments (settlement.md §6): the RFC 9162 (Certificate
//! Transparency 2.0) Merkle tree hash, with SHA-256, over an epoch's payouts,
//! plus inclusion proofs (audit paths) so a single account can check its
//! payout against a published `payouts_root` without seeing the others.
//! The RFC 9162 hashing and the two verification algorithms (inclusion,
//! §2.1.3.2, and consistency, §2.1.4.2) live here for the log tree too
//! (`log_tree.rs`), which builds its proofs incrementally.
//!
//! This module owns the leaf encoding, the tree hash and the proofs. It must
//! never do I/O, and it must never reorder, deduplicate or filter leaves
//! itself: the root commits to the exact sequence the caller passes, so the
//! caller (which owns the payout set) passes it already sorted by account and
//! limited to amounts > 0. `payouts_root` only asserts the ordering, because a
//! silently re-sorted set would hide a caller bug behind a valid-looking root.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// Domain-separation prefixes from RFC 9162 §2.1.1; they stop an interior node
/// from being passed off as a leaf (second-preimage attacks on the tree).
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Leaf data of one payout: the account's UTF-8 bytes, 0x00, then the amount as
/// 8 bytes big-endian. The amount has a fixed width at the end, so the encoding
/// stays unambiguous even for an account name that contains a NUL.
pub fn leaf_data(account: &str, amount: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(account.len() + 1 + 8);
    data.extend_from_slice(account.as_bytes());
    data.push(0x00);
    data.extend_from_slice(&amount.to_be_bytes());
    data
}

/// SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    leaf_hash_concat(&[data])
}

/// SHA-256(0x00 || parts[0] || parts[1] || ...): a leaf whose data is the
/// concatenation of `parts`, hashed without copying them together.
pub fn leaf_hash_concat(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new().chain_update([LEAF_PREFIX]);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// MTH of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([NODE_PREFIX])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Root over leaf hashes (MTH of RFC 9162 §2.1.1), iterative or recursive, O(n) hashing, no O(n^2).
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    root_from_iter(leaves.iter().copied())
}

/// Root of a payout set. Panics (assert!) if accounts are not strictly increasing bytewise — callers guarantee it.
///
/// # Panics
///
/// On an out-of-order or duplicate account: that is a caller bug, and
/// committing to it would publish a root nobody can reproduce from the spec.
pub fn payouts_root(payouts: &[(&str, u64)]) -> Hash {
    for pair in payouts.windows(2) {
        let (prev, next) = (pair[0].0, pair[1].0);
        assert!(
            prev.as_bytes() < next.as_bytes(),
            "payouts_root: accounts must be strictly increasing bytewise, got {prev:?} then {next:?}"
        );
    }
    root_from_iter(payouts.iter().map(|&(account, amount)| leaf_hash(&leaf_data(account, amount))))
}

/// RFC 9162 §2.1.3.1 inclusion proof (audit path) for leaf `index` of `leaves` (leaf hashes). None when index >= len.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    // Descend from the root towards the leaf, taking the MTH of the subtree
    // we leave behind at each split. Those subtrees are disjoint, so the whole
    // proof costs fewer than n hashes.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0, leaves.len());
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            proof.push(root_from_leaf_hashes(&leaves[mid..hi]));
            hi = mid;
        } else {
            proof.push(root_from_leaf_hashes(&leaves[lo..mid]));
            lo = mid;
        }
    }
    // The audit path lists siblings from the leaf upwards.
    proof.reverse();
    Some(proof)
}

/// RFC 9162 §2.1.3.2 verification algorithm: true when `proof` proves `leaf` at `index` in a tree of `size` leaves with `root`.
///
/// Follows the RFC's steps one to one, including step 4a (fail when `sn`
/// reaches 0 with proof left over) and step 5 (`sn` must end at 0, so a
/// truncated proof fails even if it happens to reach a plausible hash).
///
/// The proof binds the leaf's position only through the shape of its path, so
/// a proof can also verify under a different `size` whose path to `index` has
/// the same shape (e.g. leaf 0 of 3 and of 4). The signed or published size
/// must be checked by the caller, as in RFC 9162.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    // `pos` and `last` are the RFC's `fn` and `sn`: the node's position and
    // the last position at the current level.
    let mut pos = index;
    let mut last = size - 1;
    let mut acc = *leaf;
    for sibling in proof {
        if last == 0 {
            // More proof than tree height: reject rather than ignore the rest.
            return false;
        }
        if pos & 1 == 1 || pos == last {
            acc = node_hash(sibling, &acc);
            // A rightmost node without a right sibling is promoted unchanged
            // (the split is at a power of two), so skip the levels where that
            // happens before consuming the next proof element.
            while pos & 1 == 0 && pos != 0 {
                pos >>= 1;
                last >>= 1;
            }
        } else {
            acc = node_hash(&acc, sibling);
        }
        pos >>= 1;
        last >>= 1;
    }
    last == 0 && acc == *root
}

/// RFC 9162 §2.1.4.2 verification algorithm: true when `proof` shows that the
/// tree of `new_size` leaves with `new_root` extends the tree of `old_size`
/// leaves with `old_root` (its first `old_size` leaves are the same).
///
/// The proof length is fixed by the two sizes: a missing element leaves `last`
/// above 0 at the end, an extra one meets `last == 0` inside the loop; both
/// fail. The RFC defines PROOF(m, D\[n\]) for 0 < m < n only, and its
/// algorithm fails every empty proof (step 1) and computes `old_size - 1`
/// (step 3); the two other cases are decided as Sigsum's verifier does:
/// - `old_size == new_size`: an empty proof (what SUBPROOF(m, D\[m\], true) =
///   {} gives) and equal roots (transparency-dev agrees);
/// - `old_size == 0`: every tree extends the empty one, so an empty proof and
///   `old_root` = MTH({}) = SHA-256(""); nothing constrains `new_root`
///   (transparency-dev refuses this case instead).
///
/// As with `verify_inclusion`, the verifier sees the sizes only through the
/// shape of the proof, so a proof can also verify under other sizes whose
/// proofs have the same shape (e.g. (1, 3) and (1, 4): both are two right
/// siblings); it never verifies against the root of a tree of another size,
/// because that root commits to other leaves.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    // Step 1: a proof between different sizes is never empty.
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // Step 2: an old tree of 2^k leaves is itself a node of the new tree, so
    // the proof leaves its hash out and the verifier starts from `old_root`.
    let (seed, rest) = if old_size.is_power_of_two() { (old_root, proof) } else { (first, rest) };
    // Steps 3 and 4: `pos` and `last` are the RFC's `fn` and `sn`; skip the
    // levels where the old tree's last node is a right child.
    let mut pos = old_size - 1;
    let mut last = new_size - 1;
    while pos & 1 == 1 {
        pos >>= 1;
        last >>= 1;
    }
    // Steps 5 and 6: `old_acc` and `new_acc` are the RFC's `fr` and `sr`.
    let (mut old_acc, mut new_acc) = (*seed, *seed);
    for sibling in rest {
        if last == 0 {
            return false;
        }
        if pos & 1 == 1 || pos == last {
            old_acc = node_hash(sibling, &old_acc);
            new_acc = node_hash(sibling, &new_acc);
            while pos & 1 == 0 && pos != 0 {
                pos >>= 1;
                last >>= 1;
            }
        } else {
            // A right sibling exists only in the new tree.
            new_acc = node_hash(&new_acc, sibling);
        }
        pos >>= 1;
        last >>= 1;
    }
    // Step 7.
    last == 0 && old_acc == *old_root && new_acc == *new_root
}

/// Lowercase hex, the form in which roots are shown and compared.
pub fn to_hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(hash.len() * 2);
    for byte in hash {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Largest power of two strictly less than `n` (n >= 2): where RFC 9162 splits
/// a tree of n leaves.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (n - 1).ilog2()
}

/// MTH in one left-to-right pass with O(log n) memory, so `payouts_root` never
/// has to collect every leaf hash. The stack holds the roots of the complete
/// (power-of-two) subtrees seen so far, largest first; these are exactly the
/// left halves of RFC 9162's splits, so folding them right to left at the end
/// gives the same root as the recursive definition.
fn root_from_iter(leaves: impl Iterator<Item = Hash>) -> Hash {
    let mut stack: Vec<Hash> = Vec::new();
    for (i, leaf) in leaves.enumerate() {
        let mut node = leaf;
        // Leaf i completes one subtree for each trailing 1 bit of i.
        for _ in 0..i.trailing_ones() {
            let left = stack
                .pop()
                .expect("a trailing 1 bit of the leaf index means a pending left subtree");
            node = node_hash(&left, &node);
        }
        stack.push(node);
    }
    let mut pending = stack.into_iter().rev();
    let Some(mut root) = pending.next() else {
        return empty_root();
    };
    for left in pending {
        root = node_hash(&left, &root);
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("valid hex"))
            .collect()
    }

    fn hash_from_hex(s: &str) -> Hash {
        from_hex(s).try_into().expect("32-byte hash")
    }

    // Published RFC 6962 vectors (same hashing as RFC 9162), values only, from
    // github.com/transparency-dev/merkle:
    //   testonly/constants.go (commit 582a6ad190b6848f1d26f8bf08ddef29955d9db1):
    //     LeafInputs, NodeHashes, RootHashes;
    //   proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa70fff472):
    //     inclusionProofs (their leaf numbers are 1-based; ours are 0-based).
    const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// NodeHashes: level 0 is the leaf hashes; level L entry j is the root of
    /// the complete subtree over leaves [j * 2^L, (j + 1) * 2^L).
    const NODE_HASHES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    /// RootHashes, indexed by tree size 0..=8 over a prefix of LEAF_INPUTS.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// inclusionProofs: (0-based leaf index, tree size, audit path).
    const INCLUSION_PROOFS: [(usize, usize, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    fn vector_leaf_hashes() -> Vec<Hash> {
        LEAF_INPUTS.iter().map(|input| leaf_hash(&from_hex(input))).collect()
    }

    #[test]
    fn published_leaf_and_subtree_hashes() {
        let leaves = vector_leaf_hashes();
        for (level, hashes) in NODE_HASHES.iter().enumerate() {
            let width = 1 << level;
            for (j, expected) in hashes.iter().enumerate() {
                let subtree = &leaves[j * width..(j + 1) * width];
                assert_eq!(
                    to_hex(&root_from_leaf_hashes(subtree)),
                    *expected,
                    "level {level} node {j}"
                );
            }
        }
    }

    #[test]
    fn published_roots_for_every_size_up_to_8() {
        let leaves = vector_leaf_hashes();
        for (size, expected) in ROOTS.iter().enumerate() {
            assert_eq!(
                to_hex(&root_from_leaf_hashes(&leaves[..size])),
                *expected,
                "tree size {size}"
            );
        }
    }

    #[test]
    fn published_inclusion_proofs() {
        let leaves = vector_leaf_hashes();
        for &(index, size, path) in &INCLUSION_PROOFS {
            let tree = &leaves[..size];
            let expected: Vec<Hash> = path.iter().map(|h| hash_from_hex(h)).collect();
            assert_eq!(
                inclusion_proof(tree, index),
                Some(expected.clone()),
                "leaf {index} of {size}"
            );
            let root = hash_from_hex(ROOTS[size]);
            assert!(
                verify_inclusion(&leaves[index], index as u64, size as u64, &expected, &root),
                "published proof for leaf {index} of {size} must verify"
            );
        }
    }

    // --- An independent, deliberately naive model written from RFC 9162 §2.1.

    fn naive_empty() -> Hash {
        Sha256::digest(b"").into()
    }

    fn naive_node(left: &Hash, right: &Hash) -> Hash {
        let mut input = vec![0x01];
        input.extend_from_slice(left);
        input.extend_from_slice(right);
        Sha256::digest(&input).into()
    }

    /// "the largest power of two smaller than n"
    fn naive_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over leaf hashes, exactly as the RFC recursion reads.
    fn naive_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => naive_empty(),
            1 => d[0],
            n => {
                let k = naive_k(n);
                naive_node(&naive_mth(&d[..k]), &naive_mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]) from RFC 9162 §2.1.3.1.
    fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = naive_k(n);
        if m < k {
            let mut path = naive_path(m, &d[..k]);
            path.push(naive_mth(&d[k..]));
            path
        } else {
            let mut path = naive_path(m - k, &d[k..]);
            path.push(naive_mth(&d[..k]));
            path
        }
    }

    /// The shape of PATH(m, D[n]): for each element, whether the sibling sits
    /// on the left. A verifier only sees the proof through this shape.
    fn naive_path_sides(m: usize, n: usize) -> Vec<bool> {
        if n <= 1 {
            return Vec::new();
        }
        let k = naive_k(n);
        if m < k {
            let mut sides = naive_path_sides(m, k);
            sides.push(false);
            sides
        } else {
            let mut sides = naive_path_sides(m - k, n - k);
            sides.push(true);
            sides
        }
    }

    /// SplitMix64: deterministic leaves without a dev-dependency.
    fn pseudo_random_leaves(n: usize, seed: u64) -> Vec<Hash> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| {
                let mut leaf = [0u8; 32];
                for chunk in leaf.chunks_mut(8) {
                    chunk.copy_from_slice(&next().to_be_bytes());
                }
                leaf
            })
            .collect()
    }

    fn flip_bit(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn matches_naive_model_for_sizes_0_to_70() {
        for n in 0..=70usize {
            let leaves = pseudo_random_leaves(n, 0x7a11_0000 + n as u64);
            let root = root_from_leaf_hashes(&leaves);
            assert_eq!(root, naive_mth(&leaves), "root, n = {n}");
            assert_eq!(inclusion_proof(&leaves, n), None, "index n, n = {n}");

            for (i, leaf) in leaves.iter().enumerate() {
                let proof = inclusion_proof(&leaves, i).expect("index in range");
                assert_eq!(proof, naive_path(i, &leaves), "path, n = {n} i = {i}");
                let (index, size) = (i as u64, n as u64);
                assert!(
                    verify_inclusion(leaf, index, size, &proof, &root),
                    "valid proof rejected, n = {n} i = {i}"
                );
                assert_altered_proofs_fail(&leaves, i, &proof, &root);
            }
        }
    }

    fn assert_altered_proofs_fail(leaves: &[Hash], i: usize, proof: &[Hash], root: &Hash) {
        let n = leaves.len();
        let (leaf, index, size) = (&leaves[i], i as u64, n as u64);
        let ctx = format!("n = {n} i = {i}");

        for bit in [0, 7, 100, 255] {
            let bad = flip_bit(leaf, bit);
            assert!(!verify_inclusion(&bad, index, size, proof, root), "leaf bit {bit}, {ctx}");
            let bad_root = flip_bit(root, bit);
            assert!(
                !verify_inclusion(leaf, index, size, proof, &bad_root),
                "root bit {bit}, {ctx}"
            );
        }
        for (j, other) in leaves.iter().enumerate().filter(|&(j, _)| j != i) {
            assert!(!verify_inclusion(other, index, size, proof, root), "leaf {j}, {ctx}");
        }

        for other in (0..n as u64 + 2).filter(|&j| j != index) {
            assert!(!verify_inclusion(leaf, other, size, proof, root), "index {other}, {ctx}");
        }
        assert!(!verify_inclusion(leaf, u64::MAX, size, proof, root), "index max, {ctx}");

        // A different size is rejected unless its path to `i` has the very same
        // shape, which a proof cannot tell apart (see `verify_inclusion`); the
        // expectation comes from the naive model, not from the verifier.
        let shape = naive_path_sides(i, n);
        for other in (0..=2 * size + 1).filter(|&s| s != size) {
            let same_shape = i < other as usize && naive_path_sides(i, other as usize) == shape;
            assert_eq!(
                verify_inclusion(leaf, index, other, proof, root),
                same_shape,
                "size {other}, {ctx}"
            );
        }
        assert!(!verify_inclusion(leaf, index, u64::MAX, proof, root), "size max, {ctx}");
        assert!(!verify_inclusion(leaf, index, 0, proof, root), "size 0, {ctx}");

        for k in 0..proof.len() {
            for bit in [0, 3, 131, 255] {
                let mut bad = proof.to_vec();
                bad[k] = flip_bit(&bad[k], bit);
                assert!(
                    !verify_inclusion(leaf, index, size, &bad, root),
                    "proof[{k}] bit {bit}, {ctx}"
                );
            }
            let mut removed = proof.to_vec();
            removed.remove(k);
            assert!(
                !verify_inclusion(leaf, index, size, &removed, root),
                "removed proof[{k}], {ctx}"
            );
        }
        for k in 0..proof.len().saturating_sub(1) {
            let mut swapped = proof.to_vec();
            swapped.swap(k, k + 1);
            assert!(
                !verify_inclusion(leaf, index, size, &swapped, root),
                "swapped proof[{k}], {ctx}"
            );
        }
        for extra in [*root, *leaf, [0u8; 32]] {
            let mut appended = proof.to_vec();
            appended.push(extra);
            assert!(!verify_inclusion(leaf, index, size, &appended, root), "appended, {ctx}");
            // Folding the extra element in would reach this root; only the
            // tree-height check stops a proof from claiming a larger tree.
            let taller_root = node_hash(&extra, root);
            assert!(
                !verify_inclusion(leaf, index, size, &appended, &taller_root),
                "appended with matching root, {ctx}"
            );
            let mut prepended = vec![extra];
            prepended.extend_from_slice(proof);
            assert!(!verify_inclusion(leaf, index, size, &prepended, root), "prepended, {ctx}");
        }
    }

    #[test]
    fn same_shape_size_is_indistinguishable() {
        // Leaf 0's path has the same shape in trees of 3 and 4 leaves, so the
        // size-3 proof also checks out as size 4: callers must trust the size.
        let leaves = pseudo_random_leaves(3, 42);
        let root = root_from_leaf_hashes(&leaves);
        let proof = inclusion_proof(&leaves, 0).expect("index in range");
        assert!(verify_inclusion(&leaves[0], 0, 4, &proof, &root));
        assert!(!verify_inclusion(&leaves[0], 0, 5, &proof, &root));
    }

    #[test]
    fn proof_longer_than_tree_is_rejected() {
        // b is the right leaf of {a, b}; claiming it is the only leaf of a
        // one-leaf tree with that root must fail even though H(0x01||a||b)
        // matches the root.
        let leaves = pseudo_random_leaves(2, 7);
        let root = root_from_leaf_hashes(&leaves);
        assert!(verify_inclusion(&leaves[1], 1, 2, &[leaves[0]], &root));
        assert!(!verify_inclusion(&leaves[1], 0, 1, &[leaves[0]], &root));
    }

    #[test]
    fn leaf_data_layout() {
        // 'Z' 'o' 'ë' (2 bytes), NUL, then 1 as u64 big-endian.
        assert_eq!(leaf_data("Zoë", 1), from_hex("5a6fc3ab000000000000000001"));
        assert_eq!(leaf_data("", u64::MAX), from_hex("00ffffffffffffffff"));
    }

    #[test]
    fn payouts_root_matches_hand_built_tree() {
        // Bytewise order puts uppercase before lowercase.
        let payouts = [("Zoë", 1), ("alice", 5), ("bob", 7_000_000_000)];

        let mut zoe = "Zoë".as_bytes().to_vec();
        zoe.push(0);
        zoe.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        let mut alice = b"alice".to_vec();
        alice.push(0);
        alice.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        let mut bob = b"bob".to_vec();
        bob.push(0);
        bob.extend_from_slice(&7_000_000_000u64.to_be_bytes());
        let hand = [leaf_hash(&zoe), leaf_hash(&alice), leaf_hash(&bob)];

        assert_eq!(payouts_root(&payouts), root_from_leaf_hashes(&hand));
        // Three leaves split 2 + 1.
        let by_hand = node_hash(&node_hash(&hand[0], &hand[1]), &hand[2]);
        assert_eq!(payouts_root(&payouts), by_hand);
        // Computed separately with Python's hashlib from the §6 encoding.
        assert_eq!(
            to_hex(&payouts_root(&payouts)),
            "7945f1e5eac726a3ab6e82cd906c1e94b8aa2062d2181113205b0f33d8531269"
        );

        let proof = inclusion_proof(&hand, 2).expect("index in range");
        assert!(verify_inclusion(&hand[2], 2, 3, &proof, &payouts_root(&payouts)));
    }

    #[test]
    fn payouts_root_of_empty_set_is_sha256_of_empty_string() {
        assert_eq!(
            to_hex(&payouts_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(inclusion_proof(&[], 0), None);
        assert!(!verify_inclusion(&naive_empty(), 0, 0, &[], &naive_empty()));
    }

    #[test]
    fn payouts_root_accepts_bytewise_order_with_multibyte_accounts() {
        // "z" (0x7a) sorts before "é" (0xc3 0xa9) bytewise.
        let payouts = [("z", 1), ("é", 2)];
        let expected = node_hash(&leaf_hash(&leaf_data("z", 1)), &leaf_hash(&leaf_data("é", 2)));
        assert_eq!(payouts_root(&payouts), expected);
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn payouts_root_rejects_unsorted_accounts() {
        payouts_root(&[("bob", 1), ("alice", 2)]);
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn payouts_root_rejects_duplicate_accounts() {
        payouts_root(&[("alice", 1), ("alice", 2)]);
    }

    #[test]
    fn to_hex_is_lowercase_and_zero_padded() {
        let mut hash = [0u8; 32];
        hash[0] = 0x0a;
        hash[31] = 0xff;
        let hex = to_hex(&hash);
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("0a00"));
        assert!(hex.ends_with("00ff"));
    }
}
