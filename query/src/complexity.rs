//! Limits on statement text, checked before the text is parsed: its size, and how deeply its
//! expressions could nest. A parser turns `1+1+…+1` with 300,000 terms into a tree 300,000 levels
//! deep, and the walks over it that follow (rewrites, planning, `Display`, `Drop`) recurse once
//! per level: a deep enough tree overflows a thread's stack and aborts the whole server. So the
//! text is measured first, by a lexer that allocates nothing and never recurses, and a statement
//! over a limit is refused with SQLSTATE 54001 before anything builds a tree from it.
//!
//! The measure is an upper bound on the expression depth the text can produce: inside each
//! parenthesised group, the operators seen since the group's last comma (a chain of `n` binary
//! operators nests `n` deep), summed over the open groups, plus the number of open groups.

use crate::QueryError;

/// The longest statement text accepted (surface.md: a batch may hold 256 MiB).
pub const MAX_STATEMENT_BYTES: usize = 256 << 20;

/// The deepest expression nesting a statement may have (as measured here: a chain of 1,000
/// operators, or 500 alternatives `x = 'a' OR x = 'b' OR …`; use `IN (…)` for more).
/// PostgreSQL's own limit comes from its stack (`max_stack_depth`, 2 MB). Two costs set this
/// one: stack (an unoptimised build uses about 5 KiB a level when it clones a parsed statement,
/// so a statement at the limit fits the server's 16 MiB thread stacks three times over) and
/// planning time, which grows with the square of the depth in DataFusion 55 (type and name
/// of every sub-expression are recomputed per level; docs/benchmarks.md has the figures).
pub const MAX_EXPRESSION_DEPTH: usize = 1_000;

/// Refuses statement text over `MAX_STATEMENT_BYTES` (54000) or whose expressions could nest
/// deeper than `MAX_EXPRESSION_DEPTH` (54001); returns how deep they could nest.
pub fn check_statement_text(sql: &str) -> Result<usize, QueryError> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(QueryError::TooLarge(format!(
            "this statement is {} MiB, more than the {} MiB a statement may be",
            sql.len() >> 20,
            MAX_STATEMENT_BYTES >> 20
        )));
    }
    let depth = nesting_bound(sql.as_bytes(), MAX_EXPRESSION_DEPTH);
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(QueryError::TooComplex(format!(
            "its expressions nest more than {MAX_EXPRESSION_DEPTH} deep (a chain of operators \
             nests one level per operator); use IN (…) for long lists of alternatives"
        )));
    }
    Ok(depth)
}

/// The measure described in the module header, stopping early once it passes `limit`.
fn nesting_bound(b: &[u8], limit: usize) -> usize {
    // Operators counted per open group; the outermost group is the statement itself.
    let mut groups: Vec<usize> = vec![0];
    let mut total = 0usize; // sum of `groups`
    let mut max = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let mut operator = false;
        i = match c {
            b'\'' => skip_quoted(b, i + 1, b'\'', is_escape_string(b, i)),
            b'"' => skip_quoted(b, i + 1, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_block_comment(b, i + 2),
            b'$' if dollar_tag(b, i).is_some() => skip_dollar_quoted(b, i),
            b'(' | b'[' => {
                groups.push(0);
                i + 1
            }
            b')' | b']' => {
                if groups.len() > 1 {
                    total -= groups.pop().unwrap_or(0);
                }
                i + 1
            }
            b',' | b';' => {
                let current = groups.last_mut().expect("the outermost group stays");
                total -= std::mem::take(current);
                i + 1
            }
            c if is_word_byte(c) => {
                let end = word_end(b, i);
                operator = is_operator_keyword(&b[i..end]);
                end
            }
            c if is_operator_byte(c) => {
                operator = true;
                operator_end(b, i)
            }
            _ => i + 1,
        };
        if operator {
            *groups.last_mut().expect("the outermost group stays") += 1;
            total += 1;
        }
        max = max.max(total + groups.len() - 1);
        if max > limit {
            return max;
        }
    }
    max
}

/// Whether the quote at `i` opens an escape string (`E'…'`: backslashes escape).
fn is_escape_string(b: &[u8], i: usize) -> bool {
    i >= 1 && matches!(b[i - 1], b'e' | b'E') && (i == 1 || !is_word_byte(b[i - 2]))
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (is_word_byte(b[i]) || b[i] == b'$') {
        i += 1;
    }
    i
}

fn is_operator_keyword(word: &[u8]) -> bool {
    const KEYWORDS: [&[u8]; 9] =
        [b"AND", b"OR", b"NOT", b"IS", b"LIKE", b"ILIKE", b"BETWEEN", b"IN", b"COLLATE"];
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_operator_byte(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'^'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b':'
    )
}

/// A run of operator characters is one operator (`<=`, `||`, `::`, `->>`), up to a comment.
fn operator_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len()
        && is_operator_byte(b[i])
        && !(b[i] == b'-' && b.get(i + 1) == Some(&b'-'))
        && !(b[i] == b'/' && b.get(i + 1) == Some(&b'*'))
    {
        i += 1;
    }
    i
}

/// Past the closing `quote` of a literal or quoted identifier whose body starts at `i`: a
/// doubled quote is part of the body; with `backslash` (E'…'), so is a backslash-escaped byte.
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

fn skip_line(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p + 1)
}

/// Past the end of a `/* … */` comment whose body starts at `i` (they nest, as in PostgreSQL).
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 1usize;
    while i < b.len() {
        if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The length of a dollar-quote tag (`$$`, `$body$`) starting at `i`, if one starts there
/// (`$1`, a placeholder, is not one).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn skip_dollar_quoted(b: &[u8], i: usize) -> usize {
    let len = dollar_tag(b, i).expect("checked by the caller");
    let tag = &b[i..i + len];
    let body = i + len;
    b[body..].windows(len).position(|w| w == tag).map_or(b.len(), |p| body + p + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(sql: &str) -> usize {
        nesting_bound(sql.as_bytes(), usize::MAX)
    }

    #[test]
    fn chains_count_once_per_operator_and_commas_separate() {
        assert_eq!(depth("SELECT 1"), 0);
        assert_eq!(depth("SELECT 1+1+1"), 2);
        assert_eq!(depth("SELECT a FROM t WHERE x = 1 OR x = 2"), 3);
        assert_eq!(depth("SELECT f(a+b, c+d)"), 2);
        assert_eq!(depth("SELECT x IN (1, 2, 3, 4, 5)"), 2);
        assert_eq!(depth("VALUES (1, -2), (3, -4)"), 2);
        assert_eq!(depth("SELECT x::text::int"), 2);
        assert_eq!(depth("SELECT ((1 + 2) * 3)"), 3);
    }

    #[test]
    fn quotes_comments_and_dollar_quoting_hide_operators() {
        assert_eq!(depth("SELECT '+++''+++' AS \"a+b\""), 0);
        assert_eq!(depth("SELECT E'\\'++' -- + + +\n"), 0);
        assert_eq!(depth("SELECT /* + /* + */ + */ 1"), 0);
        assert_eq!(depth("SELECT $$ + + $$, $t$ + $ + $t$"), 0);
        assert_eq!(depth("SELECT $1 + $2"), 1);
    }

    #[test]
    fn deep_statements_are_refused_before_parsing() {
        let deep = format!("SELECT 1{}", "+1".repeat(300_000));
        let e = check_statement_text(&deep).unwrap_err();
        assert_eq!(e.sqlstate(), "54001", "{e}");
        let ors = format!("SELECT 1 FROM t WHERE d = 'a'{}", " OR d = 'a'".repeat(200_000));
        assert_eq!(check_statement_text(&ors).unwrap_err().sqlstate(), "54001");
        let list = format!("SELECT 1 FROM t WHERE d IN ('a'{})", ", 'a'".repeat(200_000));
        check_statement_text(&list).unwrap();
        let values = format!("INSERT INTO t VALUES (1, -1){}", ", (1, -1)".repeat(100_000));
        check_statement_text(&values).unwrap();
    }
}
