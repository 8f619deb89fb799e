//! The JSON carried in `app_metadata`: `{"seq": n}` on each batch the client sends, and the
//! server's acknowledgement `{"seq", "rows", "first_lsn", "last_lsn", "duplicate"[, "dry_run"]}`
//! on each `PutResult`. Owns only the format; it must never judge whether an ack is the one
//! expected (that is `PutStream`'s job).

use bytes::Bytes;
use serde_json::Value;

use crate::ClientError;

/// The server's acknowledgement of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The batch's sequence number, as the client sent it.
    pub seq: u64,
    /// Rows in the batch.
    pub rows: u64,
    /// Log position of the batch's first event; `None` for a dry run, or for a duplicate whose
    /// original acknowledgement the server no longer keeps.
    pub first_lsn: Option<u64>,
    /// Log position of the batch's last event (same `None` cases).
    pub last_lsn: Option<u64>,
    /// The server had applied this (producer, seq) before: nothing was appended this time.
    pub duplicate: bool,
    /// The batch was validated only (`x-tally-dry-run`): nothing was appended.
    pub dry_run: bool,
}

/// The `app_metadata` of a batch: `{"seq":n}`.
pub fn seq_metadata(seq: u64) -> Bytes {
    Bytes::from(format!("{{\"seq\":{seq}}}"))
}

impl Ack {
    /// Parses a `PutResult`'s `app_metadata`. `seq` is required; `rows` defaults to 0, the
    /// lsns to `None` (absent or null), the flags to false.
    pub fn parse(metadata: &[u8]) -> Result<Ack, ClientError> {
        let value: Value = serde_json::from_slice(metadata).map_err(|e| {
            ClientError::Protocol(format!(
                "an acknowledgement is not JSON ({e}): {:?}",
                String::from_utf8_lossy(metadata)
            ))
        })?;
        let Value::Object(map) = &value else {
            return Err(ClientError::Protocol(format!(
                "an acknowledgement is not an object: {value}"
            )));
        };
        let number = |key: &str| -> Result<Option<u64>, ClientError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "acknowledgement field {key} is not a count: {v}"
                    ))
                }),
            }
        };
        let flag = |key: &str| -> Result<bool, ClientError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(ClientError::Protocol(format!(
                    "acknowledgement field {key} is not true or false: {v}"
                ))),
            }
        };
        let seq = number("seq")?.ok_or_else(|| {
            ClientError::Protocol(format!("an acknowledgement has no seq: {value}"))
        })?;
        Ok(Ack {
            seq,
            rows: number("rows")?.unwrap_or(0),
            first_lsn: number("first_lsn")?,
            last_lsn: number("last_lsn")?,
            duplicate: flag("duplicate")?,
            dry_run: flag("dry_run")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fresh_ack() {
        let ack = Ack::parse(
            br#"{"seq": 7, "rows": 10000, "first_lsn": 101, "last_lsn": 10100, "duplicate": false}"#,
        )
        .unwrap();
        assert_eq!(
            ack,
            Ack {
                seq: 7,
                rows: 10000,
                first_lsn: Some(101),
                last_lsn: Some(10100),
                duplicate: false,
                dry_run: false
            }
        );
    }

    #[test]
    fn parses_duplicates_and_dry_runs_without_lsns() {
        let dup =
            Ack::parse(br#"{"seq":3,"rows":5,"first_lsn":null,"last_lsn":null,"duplicate":true}"#)
                .unwrap();
        assert!(dup.duplicate && dup.first_lsn.is_none() && dup.last_lsn.is_none());
        let dry = Ack::parse(br#"{"seq":1,"rows":2,"dry_run":true}"#).unwrap();
        assert!(dry.dry_run && !dry.duplicate && dry.first_lsn.is_none());
    }

    #[test]
    fn refuses_what_is_not_an_ack() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"rows":1}"#,
            br#"{"seq":-1}"#,
            br#"{"seq":"1"}"#,
            br#"{"seq":1,"duplicate":"yes"}"#,
            br#"{"seq":1,"first_lsn":1.5}"#,
        ] {
            let err = Ack::parse(bad).unwrap_err();
            assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        }
    }

    #[test]
    fn seq_metadata_round_trips() {
        assert_eq!(&seq_metadata(42)[..], br#"{"seq":42}"#);
        assert_eq!(Ack::parse(&seq_metadata(u64::MAX)).unwrap().seq, u64::MAX);
    }
}
