//! The framing of one log record. A record starts at a 16-byte aligned offset:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: header + payload bytes (padding excluded); 0 marks the end of data |
//! | 4 | 4 | CRC32C of bytes 8..len |
//! | 8 | 8 | log index |
//! | 16 | 8 | term |
//! | 24 | 8 | leader node id of the log id |
//! | 32 | 8 | `window`: first log index not yet known durable when this record was written |
//! | 40 | 1 | kind: 1 blank, 2 ledger batch (rkyv), 3 membership (JSON) |
//! | 41 | 7 | zero |
//! | 48 | len-48 | payload, 16-byte aligned so rkyv archives are read in place |
//!
//! The next record starts at `align16(offset + len)`. All integers are little-endian.
//! This module never does I/O: it encodes into and checks byte slices.

pub const HEADER: usize = 48;
pub const ALIGN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Blank = 1,
    Batch = 2,
    Membership = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Blank),
            2 => Some(Kind::Batch),
            3 => Some(Kind::Membership),
            _ => None,
        }
    }
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub index: u64,
    pub term: u64,
    pub node: u64,
    pub window: u64,
    pub kind: Kind,
}

pub fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// The header of the record that frames `payload`, its checksum filled in. The record on
/// disk is these bytes, the payload, then `padding(payload.len())` zero bytes.
pub fn header_bytes(header: &Header, payload: &[u8]) -> [u8; HEADER] {
    let len = HEADER + payload.len();
    let mut out = [0u8; HEADER];
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[8..16].copy_from_slice(&header.index.to_le_bytes());
    out[16..24].copy_from_slice(&header.term.to_le_bytes());
    out[24..32].copy_from_slice(&header.node.to_le_bytes());
    out[32..40].copy_from_slice(&header.window.to_le_bytes());
    out[40] = header.kind as u8;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[8..]), payload);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The zero bytes after a payload of `payload_len` bytes, up to the next record's start.
pub fn padding(payload_len: usize) -> usize {
    let len = HEADER + payload_len;
    align(len) - len
}

/// Appends one framed record (with padding) to `out`, which must end 16-byte aligned.
pub fn encode(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    debug_assert_eq!(out.len() % ALIGN, 0);
    out.extend_from_slice(&header_bytes(header, payload));
    out.extend_from_slice(payload);
    out.resize(out.len() + padding(payload.len()), 0);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What lies at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A zero length word: the end of written data.
    End,
    /// A record whose checksum and shape are right; `size` includes padding.
    Valid { header: Header, len: usize, size: usize },
    /// Anything else: a torn write, garbage or a flipped bit.
    Bad,
}

/// Checks the record at `at` in `data` (`at` 16-byte aligned). Never panics on any input.
pub fn probe(data: &[u8], at: usize) -> Probe {
    if at + 4 > data.len() {
        return Probe::End;
    }
    let len = u32_at(data, at) as usize;
    if len == 0 {
        return Probe::End;
    }
    if len < HEADER || at + len > data.len() || at + HEADER > data.len() {
        return Probe::Bad;
    }
    let Some(kind) = Kind::from_u8(data[at + 40]) else { return Probe::Bad };
    if crc32c::crc32c(&data[at + 8..at + len]) != u32_at(data, at + 4) {
        return Probe::Bad;
    }
    let header = Header {
        index: u64_at(data, at + 8),
        term: u64_at(data, at + 16),
        node: u64_at(data, at + 24),
        window: u64_at(data, at + 32),
        kind,
    };
    Probe::Valid { header, len, size: align(len) }
}

/// The payload of a valid record at `at` of length `len`.
pub fn payload(data: &[u8], at: usize, len: usize) -> &[u8] {
    &data[at + HEADER..at + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let h = Header { index: 7, term: 2, node: 1, window: 5, kind: Kind::Batch };
        let mut buf = Vec::new();
        encode(&mut buf, &h, b"hello payload");
        assert_eq!(buf.len() % ALIGN, 0);
        match probe(&buf, 0) {
            Probe::Valid { header, len, size } => {
                assert_eq!(header, h);
                assert_eq!(payload(&buf, 0, len), b"hello payload");
                assert_eq!(size, buf.len());
            }
            other => panic!("{other:?}"),
        }
        for i in 0..HEADER + 13 {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert_ne!(
                    probe(&b, 0),
                    Probe::Valid { header: h, len: HEADER + 13, size: buf.len() },
                    "flip at {i}:{bit}"
                );
            }
        }
        assert_eq!(probe(&[0u8; 64], 0), Probe::End);
        assert_eq!(probe(&buf[..20], 0), Probe::Bad);
    }
}
