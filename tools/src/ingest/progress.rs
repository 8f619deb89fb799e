//! What `tally ingest` tells the user while it runs and when it ends: a progress bar on a
//! terminal (acknowledged input bytes of the total, rows/s, ETA when the total is known), plain
//! lines every few seconds when stderr is not a terminal, notes about retries, and the
//! summary. Only acknowledged rows count: the bar never runs ahead of what is durable.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tally_client::Ack;

/// Interval of the plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Redraws of the bar per second.
const BAR_HZ: u8 = 4;

/// Counts over the whole run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub rows: u64,
    pub batches: u64,
    /// Batches the server had applied before (resends): not appended again.
    pub duplicates: u64,
    pub duplicate_rows: u64,
    pub first_lsn: Option<u64>,
    pub last_lsn: Option<u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Transport failures recovered from.
    pub retries: u64,
    pub dry_run: bool,
}

impl Stats {
    pub fn record(&mut self, ack: &Ack, rows: u64) {
        self.rows += rows;
        self.batches += 1;
        if ack.duplicate {
            self.duplicates += 1;
            self.duplicate_rows += rows;
        }
        self.dry_run |= ack.dry_run;
        self.first_lsn = min_some(self.first_lsn, ack.first_lsn);
        self.last_lsn = self.last_lsn.max(ack.last_lsn);
        self.first_seq.get_or_insert(ack.seq);
        self.last_seq = Some(ack.seq);
    }

    /// The end-of-run summary.
    pub fn summary(&self, producer: &str, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = rate(self.rows, seconds);
        let batches = count(self.batches, "batch", "batches");
        let rows = count(self.rows, "row", "rows");
        let mut text = if self.dry_run {
            format!("validated {rows} in {batches} (dry run: nothing was appended)")
        } else {
            format!("ingested {rows} in {batches}")
        };
        if self.duplicates > 0 {
            text.push_str(&format!(
                " (including {}, {} rows, appended by an earlier attempt and not again)",
                count(self.duplicates, "duplicate", "duplicates"),
                self.duplicate_rows
            ));
        }
        if let (Some(first), Some(last)) = (self.first_lsn, self.last_lsn) {
            text.push_str(&format!("\nlsns {first} to {last}"));
        }
        text.push_str(&format!("\n{seconds:.2} s, {rate} rows/s"));
        if self.retries > 0 {
            text.push_str(&format!(", {}", count(self.retries, "retry", "retries")));
        }
        if let (Some(first), Some(last)) = (self.first_seq, self.last_seq) {
            text.push_str(&format!("\nproducer {producer}, seqs {first} to {last}"));
        }
        text
    }
}

/// `1 batch`, `2 batches`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn rate(rows: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (rows as f64 / seconds) as u64
    } else {
        0
    }
}

/// The running display.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total_bytes: Option<u64>,
    started: Instant,
    last_line: Instant,
    rows: u64,
    bytes: u64,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn new(total_bytes: Option<u64>, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| bar(total_bytes));
        let now = Instant::now();
        Progress {
            bar,
            plain: !quiet && !terminal,
            total_bytes,
            started: now,
            last_line: now,
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows and input bytes the server acknowledged.
    pub fn acknowledged(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        let rate = rate(self.rows, self.started.elapsed().as_secs_f64());
        if let Some(bar) = &self.bar {
            bar.set_position(self.bytes);
            bar.set_message(format!("{} rows, {rate} rows/s", self.rows));
        } else if self.plain && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            let share = match self.total_bytes {
                Some(total) if total > 0 => format!(", {}% of the input", self.bytes * 100 / total),
                _ => String::new(),
            };
            eprintln!("tally ingest: {} rows acknowledged, {rate} rows/s{share}", self.rows);
        }
    }

    /// A line for the user (retries), above the bar if there is one.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("tally ingest: {line}")),
            None => eprintln!("tally ingest: {line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn bar(total_bytes: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr_with_hz(BAR_HZ);
    let template = match total_bytes {
        Some(_) => "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg} (ETA {eta})",
        None => "{elapsed_precise} {spinner} {bytes} {msg}",
    };
    let bar = ProgressBar::with_draw_target(total_bytes, target);
    bar.set_style(
        ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "),
    );
    if total_bytes.is_none() {
        bar.enable_steady_tick(Duration::from_millis(250));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, lsns: Option<(u64, u64)>, duplicate: bool) -> Ack {
        Ack {
            seq,
            rows: 10,
            first_lsn: lsns.map(|l| l.0),
            last_lsn: lsns.map(|l| l.1),
            duplicate,
            dry_run: false,
        }
    }

    #[test]
    fn stats_count_duplicates_and_span_the_lsns() {
        let mut s = Stats::default();
        s.record(&ack(4, Some((11, 20)), true), 10);
        s.record(&ack(5, None, true), 10);
        s.record(&ack(6, Some((31, 40)), false), 10);
        assert_eq!((s.rows, s.batches, s.duplicates, s.duplicate_rows), (30, 3, 2, 20));
        assert_eq!(
            (s.first_lsn, s.last_lsn, s.first_seq, s.last_seq),
            (Some(11), Some(40), Some(4), Some(6))
        );
        let text = s.summary("p-1", Duration::from_secs(2));
        assert!(
            text.starts_with(
                "ingested 30 rows in 3 batches (including 2 duplicates, 20 rows, appended by"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nlsns 11 to 40\n2.00 s, 15 rows/s\nproducer p-1, seqs 4 to 6"),
            "{text}"
        );
    }
}
