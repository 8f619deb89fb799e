//! The syntax of identifiers and content hashes (ledger.md "Identifiers and amounts").
//! Owns only syntax; whether an id exists is the state's business.

/// Longest id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// The ledger's own account: protocol fees and pools nobody can claim. `$` is outside the id
/// alphabet, so no writer can ever name it.
pub const PROTOCOL_ACCOUNT: &str = "$protocol";

const fn id_alphabet() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || c == b'.'
            || c == b'_'
            || c == b':'
            || c == b'@'
            || c == b'/'
            || c == b'-';
        b += 1;
    }
    table
}

static ID_ALPHABET: [bool; 256] = id_alphabet();

/// True for 1 to 128 bytes from `[A-Za-z0-9._:@/-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(|b| ID_ALPHABET[b as usize])
}

/// Parses 64 lowercase hex characters; anything else (upper case included) is `None`.
pub fn parse_content_hash(hash: &str) -> Option<[u8; 32]> {
    let bytes = hash.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_alphabet_and_length() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("user@example.org/x:1_2-3.4"));
        assert!(is_valid_id(&"x".repeat(128)));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(!is_valid_id(""));
        for bad in ["$protocol", "a b", "é", "a,b", "a\"", "a\n", "a;b", "a+b"] {
            assert!(!is_valid_id(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn content_hash_is_lower_hex_only() {
        let ok = "0123456789abcdef".repeat(4);
        assert_eq!(parse_content_hash(&ok).unwrap()[0], 0x01);
        assert!(parse_content_hash(&ok.to_uppercase()).is_none());
        assert!(parse_content_hash(&ok[..63]).is_none());
        assert!(parse_content_hash(&format!("{ok}0")).is_none());
        assert!(parse_content_hash(&"g".repeat(64)).is_none());
    }
}
