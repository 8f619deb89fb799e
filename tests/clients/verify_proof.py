#!/usr/bin/env python3
"""Check a Tally proof with nothing but the Python standard library.

    verify_proof.py [--public-key HEX] [FILE]   one JSON document (FILE or stdin)
    verify_proof.py --jsonl [--public-key HEX]  one document per stdin line
    verify_proof.py --self-test

Prints "valid" (exit 0) or "invalid: <why>" (exit 1); --jsonl prints one
verdict per line. Written from the RFCs alone, to show that checking Tally
needs no Tally code:
- Merkle trees: RFC 9162 section 2.1 with SHA-256: leaf = SHA-256(00 || data),
  node = SHA-256(01 || left || right), verification as in 2.1.3.2 and 2.1.4.2;
- log leaves: data = lsn (u64 big-endian) || ts in microseconds (i64
  big-endian) || the event's `events.body` text in UTF-8; leaf index = lsn - 1;
- payout leaves: data = account (UTF-8) || 00 || amount (u64 big-endian);
- checkpoints: Ed25519 (RFC 8032) over "tally-checkpoint/v1\\n<tree_size>\\n
  <root hex>\\n<ts_micros>\\n"; key_id = first 8 bytes of SHA-256(public key).

Document kinds ("kind"): inclusion {lsn, ts_micros, body, leaf_index,
tree_size, path, root}; consistency {old_size, new_size, old_root, new_root,
path}; payout {account, amount, leaf_index, tree_size, path, payouts_root};
checkpoint {tree_size, root, ts_micros, public_key, signature, key_id}. An
inclusion or consistency document may carry a "checkpoint" object instead of
(or besides) root / new_root: it must verify and be for the same tree size.
Hashes are lowercase hex. Any key can sign a checkpoint: pass --public-key
with the key the operator published, or the check proves integrity only.
A proof carries sizes only in its shape, so a proof for one size can also
check under another size with the same shape (RFC 9162), never against that
other size's root: take the tree size and root from a checkpoint you trust.
"""
import hashlib
import json
import sys

EMPTY_ROOT = hashlib.sha256(b"").digest()
CHECKPOINT_HEADER = "tally-checkpoint/v1"
U64, I64 = (0, 2**64), (-(2**63), 2**63)
HEX_DIGITS = set("0123456789abcdef")


class Invalid(Exception):
    pass


# --- RFC 9162 section 2.1 --------------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, size, path, root):
    """Section 2.1.3.2; `fn`, `sn` and `r` as in the RFC."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, path):
    """Section 2.1.4.2. The RFC's algorithm covers 0 < first < second; equal
    sizes need an empty path and equal roots, and every tree extends the
    empty one (first = 0: empty path, first_hash = SHA-256(""))."""
    if first > second:
        return False
    if first == 0:
        return not path and first_hash == EMPTY_ROOT
    if first == second:
        return not path and first_hash == second_hash
    if not path:  # step 1
        return False
    if first & (first - 1) == 0:  # step 2: first is a power of 2
        path = [first_hash] + path
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_hash and sr == second_hash  # step 7


# --- Ed25519 verification, RFC 8032 section 5.1.7 (as its section 6) -------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the group order
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if x & 1 != sign else x


def decode_point(b):
    y = int.from_bytes(b, "little")
    sign, y = y >> 255, y & (2**255 - 1)
    x = recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def add(p, q):  # extended coordinates (X, Y, Z, T), section 5.1.4
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(s, p):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = add(q, p)
        p, s = add(p, p), s >> 1
    return q


def same_point(p, q):
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


BASE_Y = 4 * pow(5, P - 2, P) % P
BASE_X = recover_x(BASE_Y, 0)
BASE = (BASE_X, BASE_Y, 1, BASE_X * BASE_Y % P)


def ed25519_verify(public, message, signature):
    a, r = decode_point(public), decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return same_point(mul(s, BASE), add(r, mul(k, a)))


# --- The document --------------------------------------------------------

def field(doc, name):
    if doc.get(name) is None:
        raise Invalid(f"{name} is missing")
    return doc[name]


def integer(doc, name, bounds=U64):
    value = field(doc, name)
    if type(value) is not int or not bounds[0] <= value < bounds[1]:
        raise Invalid(f"{name} must be an integer in {'0..2^64' if bounds == U64 else '-2^63..2^63'}")
    return value


def text(doc, name):
    value = field(doc, name)
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    return value


def unhex(value, name, nbytes=32):
    if not isinstance(value, str) or len(value) != 2 * nbytes or not set(value) <= HEX_DIGITS:
        raise Invalid(f"{name} must be {2 * nbytes} lowercase hex digits")
    return bytes.fromhex(value)


def path_of(doc):
    path = field(doc, "path")
    if not isinstance(path, list):
        raise Invalid("path must be an array")
    return [unhex(p, "path: each element") for p in path]


def check_checkpoint(cp, trusted_key):
    tree_size, root = integer(cp, "tree_size"), unhex(field(cp, "root"), "root")
    ts_micros = integer(cp, "ts_micros", I64)
    public_key = unhex(field(cp, "public_key"), "public_key")
    signature = unhex(field(cp, "signature"), "signature", 64)
    if unhex(field(cp, "key_id"), "key_id", 8) != hashlib.sha256(public_key).digest()[:8]:
        raise Invalid("key_id is not the first 8 bytes of SHA-256(public_key)")
    if trusted_key is not None and public_key != trusted_key:
        raise Invalid(f"signed by key {public_key.hex()}, not by the trusted key")
    message = f"{CHECKPOINT_HEADER}\n{tree_size}\n{root.hex()}\n{ts_micros}\n".encode()
    if not ed25519_verify(public_key, message, signature):
        raise Invalid("the checkpoint's Ed25519 signature does not verify")
    return tree_size, root


def committed_root(doc, name, tree_size, trusted_key):
    """The root to check against: doc[name] and/or a verified checkpoint's."""
    stated = None if doc.get(name) is None else unhex(doc[name], name)
    if doc.get("checkpoint") is None:
        if stated is None:
            raise Invalid(f"no {name} and no checkpoint")
        return stated
    if not isinstance(doc["checkpoint"], dict):
        raise Invalid("checkpoint must be a JSON object")
    signed_size, signed_root = check_checkpoint(doc["checkpoint"], trusted_key)
    if signed_size != tree_size:
        raise Invalid(f"the checkpoint is for tree size {signed_size}, the proof for {tree_size}")
    if stated is not None and stated != signed_root:
        raise Invalid(f"{name} is not the checkpoint's root")
    return signed_root


def check_inclusion(doc, trusted_key):
    lsn, ts_micros = integer(doc, "lsn"), integer(doc, "ts_micros", I64)
    body = text(doc, "body")
    leaf_index, tree_size = integer(doc, "leaf_index"), integer(doc, "tree_size")
    path = path_of(doc)
    root = committed_root(doc, "root", tree_size, trusted_key)
    if lsn == 0:
        raise Invalid("lsn must be at least 1")
    if leaf_index != lsn - 1:
        raise Invalid(f"leaf_index {leaf_index} is not lsn - 1 = {lsn - 1}")
    data = lsn.to_bytes(8, "big") + ts_micros.to_bytes(8, "big", signed=True) + body.encode()
    if not verify_inclusion(leaf_hash(data), leaf_index, tree_size, path, root):
        raise Invalid(f"the path does not lead from the event to the root of {tree_size}")


def check_consistency(doc, trusted_key):
    old_size, new_size = integer(doc, "old_size"), integer(doc, "new_size")
    old_root = unhex(field(doc, "old_root"), "old_root")
    path = path_of(doc)
    new_root = committed_root(doc, "new_root", new_size, trusted_key)
    if not verify_consistency(old_size, new_size, old_root, new_root, path):
        raise Invalid(f"the path does not show that tree {new_size} extends tree {old_size}")


def check_payout(doc, _trusted_key):
    if doc.get("checkpoint") is not None:
        raise Invalid("a checkpoint signs the log root, not a payouts_root")
    account, amount = text(doc, "account"), integer(doc, "amount")
    leaf_index, tree_size = integer(doc, "leaf_index"), integer(doc, "tree_size")
    path, root = path_of(doc), unhex(field(doc, "payouts_root"), "payouts_root")
    data = account.encode() + b"\x00" + amount.to_bytes(8, "big")
    if not verify_inclusion(leaf_hash(data), leaf_index, tree_size, path, root):
        raise Invalid("the path does not lead from the payout to payouts_root")


KINDS = {
    "inclusion": check_inclusion,
    "consistency": check_consistency,
    "payout": check_payout,
    "checkpoint": check_checkpoint,
}


def reject_constant(name):
    raise Invalid(f"{name} is not JSON")


def check(document_text, trusted_key=None):
    """None when the document's proof holds, else why not."""
    try:
        # -0 is a float, as in Rust's serde_json; other integers are ints.
        doc = json.loads(document_text, parse_constant=reject_constant,
                         parse_int=lambda s: -0.0 if s == "-0" else int(s))
        # A lone surrogate (from a \ud800 escape) is not text in UTF-8.
        json.dumps(doc, ensure_ascii=False).encode()
        if not isinstance(doc, dict):
            raise Invalid("the document must be a JSON object")
        kind = text(doc, "kind")
        if kind not in KINDS:
            raise Invalid(f"unknown kind {kind!r}")
        KINDS[kind](doc, trusted_key)
    except Invalid as why:
        return str(why)
    except (ValueError, RecursionError) as why:  # JSON, UTF-8
        return f"not JSON: {why}"
    return None


# --- Self-test: RFC 8032 vectors, and three events small enough to do by hand

RFC8032_TEST_1 = (  # section 7.1: public key, message, signature
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
RFC8032_TEST_2 = (
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
# Pinned on both sides: Tally's LogTree gives this root for the three events
# below, and the TEST 1 secret key signs their checkpoint with this signature.
SELF_TEST_ROOT = "3769e24986869c8d2ac8542520dcaac6da42b2a9ae728b0dd43fa0aabc982e30"
SELF_TEST_SIGNATURE = (
    "f09ea2929ad8b491e95f15a1e3292714acc702f37cbc9e349e48026c09744a47"
    "e54493a1afafdc4266d9888d2aa0e4bc2408c7995d509b00f22611103cc9e606")
PAYOUTS_ROOT = "7945f1e5eac726a3ab6e82cd906c1e94b8aa2062d2181113205b0f33d8531269"


def self_test():
    for public, message, signature in map(lambda v: map(bytes.fromhex, v),
                                          [RFC8032_TEST_1, RFC8032_TEST_2]):
        assert ed25519_verify(public, message, signature), "RFC 8032 vector"
        assert not ed25519_verify(public, message + b"x", signature)
        assert not ed25519_verify(public, message, signature[:63] + bytes([signature[63] ^ 1]))
        # S + L also satisfies the equation; section 5.1.7 requires S < L.
        s_plus_l = int.from_bytes(signature[32:], "little") + L
        assert not ed25519_verify(public, message, signature[:32] + s_plus_l.to_bytes(32, "little"))
    # Leaves l1..l3 of three events; the tree of 3 splits 2 + 1.
    bodies = ['{"datanet":"d","owner":"o"}', '{"epoch":1}', '{"contribution":"c","reason":"é"}']
    ts = 1_700_000_000_000_000
    l1, l2, l3 = (leaf_hash(lsn.to_bytes(8, "big") + ts.to_bytes(8, "big") + body.encode())
                  for lsn, body in enumerate(bodies, 1))
    root = node_hash(node_hash(l1, l2), l3)
    assert root.hex() == SELF_TEST_ROOT, root.hex()
    public = RFC8032_TEST_1[0]
    checkpoint = {"tree_size": 3, "root": SELF_TEST_ROOT, "ts_micros": 1_700_000_000_123_456,
                  "public_key": public, "signature": SELF_TEST_SIGNATURE,
                  "key_id": hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16]}
    good = [
        dict(checkpoint, kind="checkpoint"),
        {"kind": "inclusion", "lsn": 3, "ts_micros": ts, "body": bodies[2], "leaf_index": 2,
         "tree_size": 3, "path": [node_hash(l1, l2).hex()], "root": SELF_TEST_ROOT},
        {"kind": "inclusion", "lsn": 2, "ts_micros": ts, "body": bodies[1], "leaf_index": 1,
         "tree_size": 3, "path": [l1.hex(), l3.hex()], "checkpoint": checkpoint},
        {"kind": "consistency", "old_size": 1, "new_size": 3, "old_root": l1.hex(),
         "path": [l2.hex(), l3.hex()], "checkpoint": checkpoint},
        {"kind": "consistency", "old_size": 2, "new_size": 3, "old_root": node_hash(l1, l2).hex(),
         "path": [l3.hex()], "new_root": SELF_TEST_ROOT},
        {"kind": "payout", "account": "Zo\u00eb", "amount": 1, "leaf_index": 0, "tree_size": 3,
         "path": ["12288a86563ee6f2489436587a19a56584b1a1dc703416be4e2faadc373af2f7",
                  "6087f04d41d0c96976a0c8dc405f19dedd50f798bb6467cbc52ebe4015bb8db6"],
         "payouts_root": PAYOUTS_ROOT},
    ]
    for doc in good:
        assert check(json.dumps(doc)) is None, doc
        numbers = ("lsn", "ts_micros", "leaf_index", "tree_size", "old_size", "new_size", "amount")
        bad = [dict(doc, **{name: doc[name] + 2}) for name in numbers if name in doc]
        if "path" in doc:
            bad += [dict(doc, path=doc["path"][:-1]), dict(doc, path=doc["path"] * 2)]
        if "signature" in doc:
            bad.append(dict(doc, signature=doc["signature"][:-1] + "0"))
        if "checkpoint" in doc:
            bad.append(dict(doc, checkpoint=dict(checkpoint, ts_micros=0)))
        for wrong in bad:
            assert check(json.dumps(wrong)) is not None, wrong
    # A proof shows sizes only through its shape: the proof for (2, 3), one
    # right sibling, has the shape of (2, 4)'s too (RFC 9162), so it checks as
    # (2, 4) against the same root; the root of a real tree of 4 rejects it.
    shape_twin = dict(good[4], new_size=4)
    assert check(json.dumps(shape_twin)) is None
    l4 = leaf_hash(b"any fourth event")
    four = node_hash(node_hash(l1, l2), node_hash(l3, l4)).hex()
    assert check(json.dumps(dict(shape_twin, new_root=four))) is not None
    print("ALL OK")


def main(args):
    trusted_key = None
    if "--public-key" in args:
        at = args.index("--public-key")
        try:
            trusted_key = unhex(args[at + 1] if at + 1 < len(args) else "", "--public-key")
        except Invalid as why:
            usage_error(why)
        del args[at:at + 2]
    if args == ["--self-test"]:
        return self_test()
    if args == ["--jsonl"]:
        for line in sys.stdin.buffer:
            print(verdict(line, trusted_key))
        return
    if len(args) > 1 or (args and args[0].startswith("--")):
        usage_error(__doc__.split("\n\n")[1])
    try:
        data = open(args[0], "rb").read() if args else sys.stdin.buffer.read()
    except OSError as why:
        usage_error(why)
    result = verdict(data, trusted_key)
    print(result)
    sys.exit(0 if result == "valid" else 1)


def usage_error(why):
    print(f"error: {why}", file=sys.stderr)
    sys.exit(2)


def verdict(data, trusted_key):
    try:
        why = check(data.decode("utf-8"), trusted_key)
    except UnicodeDecodeError as err:
        why = f"not UTF-8: {err}"
    return "valid" if why is None else f"invalid: {why}"


if __name__ == "__main__":
    main(sys.argv[1:])
