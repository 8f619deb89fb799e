//! Running `tally serve` processes and the command-line clients the end-to-end tests drive.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn script(name: &str) -> PathBuf {
    repo().join("tests/clients").join(name)
}

/// The ports tests give servers come from below Linux's ephemeral range (32768-60999 by
/// default), so that no client connection can take one as its local port between its pick
/// and the server's bind (binding port 0 picked from that range, and a CI run once lost a
/// node's start to it); a counter keeps the tests of one process from picking one twice,
/// and each process starts at its own offset.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;
static PORTS_TAKEN: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports that nothing listens on now.
pub fn free_ports(n: usize) -> Vec<u16> {
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let offset = std::process::id() % span;
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let k = PORTS_TAKEN.fetch_add(1, Ordering::Relaxed);
        assert!(k < span, "the tests used up the {span} test ports");
        let port = TEST_PORTS.start + u16::try_from((offset + k) % span).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// A running `tally serve`; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Served {
    pub child: Child,
    pub port: u16,
    /// Streaming ingest's port.
    pub ingest_port: u16,
    stdout: mpsc::Receiver<String>,
}

impl Served {
    pub fn start(data: &Path, extra: &[&str]) -> Served {
        let ports = free_ports(2);
        Served::start_on(data, (ports[0], ports[1]), extra)
    }

    /// As `start`, with the SQL and ingest ports given (a node restarted on its own ports).
    pub fn start_on(data: &Path, (port, ingest_port): (u16, u16), extra: &[&str]) -> Served {
        let mut child = tally()
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--ingest", &format!("127.0.0.1:{ingest_port}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tally serve");
        let errors = last_lines(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.starts_with("tally serving") => break,
                Ok(_) => continue,
                Err(_) => panic!(
                    "tally serve did not start: {:?}; its last lines on stderr:\n{}",
                    child.try_wait(),
                    errors.lock().unwrap().make_contiguous().join("\n")
                ),
            }
        }
        Served { child, port, ingest_port, stdout: rx }
    }

    pub fn dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=tally dbname=tally", self.port)
    }

    /// SIGTERM, and the process's exit status and remaining output.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        sigterm(&self.child);
        let status = wait_for(&mut self.child, Duration::from_secs(30));
        let rest = self.stdout.try_iter().collect();
        (status, rest)
    }
}

/// Keeps the last lines a child writes to `stream` (read until it closes), for a failure's
/// message: a server that does not start says why there.
fn last_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<VecDeque<String>>> {
    const KEPT: usize = 40;
    let lines = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT)));
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut kept = kept.lock().unwrap();
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
    lines
}

pub fn sigterm(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
}

pub fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("tally serve did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            sigterm(&self.child);
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}): install the test clients as .ci/run does")
    });
    out
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a client script that ends with "ALL OK" when every check passed.
pub fn expect_all_ok(mut cmd: Command, what: &str) {
    let out = run(&mut cmd, what);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

pub fn psql(dsn: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-v", "ON_ERROR_STOP=0", dsn]);
    c
}

/// psql's output for one command, with SQLSTATEs shown.
pub fn psql_c(dsn: &str, commands: &[&str]) -> (String, String) {
    let mut c = psql(dsn);
    c.args(["-v", "VERBOSITY=verbose"]);
    for command in commands {
        c.args(["-c", command]);
    }
    text(&run(&mut c, "psql"))
}

impl Served {
    /// The server's resident memory, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Adds users `wuser` (writer, password `wpass`) and `ruser` (reader, `rpass`) to `data`.
pub fn add_test_users(data: &Path) {
    for (name, role, password) in [("wuser", "writer", "wpass"), ("ruser", "reader", "rpass")] {
        let mut add = tally()
            .args(["user", "add", name, "--role", role, "--data"])
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(add.stdin.take().unwrap(), "{password}").unwrap();
        assert!(add.wait().unwrap().success());
    }
}
