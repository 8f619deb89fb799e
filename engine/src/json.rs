//! The canonical JSON body of an event (surface.md, `events.body`): compact, the fields of
//! ledger.md in their listed order, attributions as `[contribution, weight]` pairs, integers
//! for amounts and weights. Byte-for-byte stable: anyone may hash it, so this module must never
//! change its output for an existing event (a golden test pins it).

use std::fmt::Write;

use crate::event::Event;

/// Writes `event`'s canonical body into `out` (appending).
pub fn write_body(event: &Event, out: &mut String) {
    match event {
        Event::Datanet(d) => {
            out.push_str("{\"datanet\":");
            string(out, &d.datanet);
            out.push_str(",\"owner\":");
            string(out, &d.owner);
        }
        Event::Contribution(c) => {
            out.push_str("{\"contribution\":");
            string(out, &c.contribution);
            out.push_str(",\"datanet\":");
            string(out, &c.datanet);
            out.push_str(",\"contributor\":");
            string(out, &c.contributor);
            out.push_str(",\"content_hash\":");
            string(out, &c.content_hash);
        }
        Event::Model(m) => {
            out.push_str("{\"model\":");
            string(out, &m.model);
            out.push_str(",\"owner\":");
            string(out, &m.owner);
            out.push_str(",\"base_model\":");
            match &m.base_model {
                Some(base) => string(out, base),
                None => out.push_str("null"),
            }
            out.push_str(",\"datanets\":[");
            for (i, d) in m.datanets.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(out, d);
            }
            out.push(']');
        }
        Event::Inference(inf) => {
            out.push_str("{\"inference\":");
            string(out, &inf.inference);
            out.push_str(",\"model\":");
            string(out, &inf.model);
            out.push_str(",\"consumer\":");
            string(out, &inf.consumer);
            out.push_str(",\"fee\":");
            integer(out, inf.fee);
            out.push_str(",\"attributions\":[");
            for (i, a) in inf.attributions.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                string(out, &a.contribution);
                out.push(',');
                integer(out, i64::from(a.weight));
                out.push(']');
            }
            out.push(']');
        }
        Event::Revocation(r) => {
            out.push_str("{\"contribution\":");
            string(out, &r.contribution);
            out.push_str(",\"reason\":");
            string(out, &r.reason);
        }
        Event::Policy(p) => {
            let _ = write!(
                out,
                "{{\"protocol_bps\":{},\"model_bps\":{},\"base_bps\":{}",
                p.protocol_bps, p.model_bps, p.base_bps
            );
        }
        Event::Settlement(s) => {
            let _ = write!(out, "{{\"epoch\":{}", s.epoch);
        }
    }
    out.push('}');
}

/// The canonical body as a new string.
pub fn body(event: &Event) -> String {
    let mut out = String::new();
    write_body(event, &mut out);
    out
}

/// A whole number in decimal, as `{}` formats it, without the formatting machinery: every
/// event's body is written once more for its leaf in the log's Merkle tree, so this is on the
/// apply path.
fn integer(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// A JSON string: `"` and `\` escaped, control characters as `\n`-style or `\u00XX`, every
/// other character as raw UTF-8 (the same choice serde_json makes).
fn string(out: &mut String, s: &str) {
    out.push('"');
    // Ids are from an alphabet that needs no escaping: copied whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_strings_are_written_as_the_formatter_and_escaping_would() {
        for n in [0, 1, -1, 9, 10, 99, 1 << 40, i64::MAX, i64::MIN, -1234567890] {
            let mut out = String::new();
            integer(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        string(&mut out, "c-00:12/x@y.z");
        string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, "\"c-00:12/x@y.z\"\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
