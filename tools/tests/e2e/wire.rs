//! A raw PostgreSQL wire client, for the messages drivers never send: a Parse with `$N` in the
//! billions, a length of gigabytes, a startup that never comes, a SCRAM exchange stopped after
//! the server's first message. Development-mode servers only (no password).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What the server sent back for one request, up to ReadyForQuery (or the connection's end).
#[derive(Debug, Default)]
pub struct Reply {
    pub rows: Vec<Vec<Option<String>>>,
    /// SQLSTATE and message of each ErrorResponse.
    pub errors: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub suspended: bool,
    /// The connection ended.
    pub closed: bool,
}

impl Reply {
    pub fn codes(&self) -> Vec<&str> {
        self.errors.iter().map(|(c, _)| c.as_str()).collect()
    }
}

pub struct Wire {
    pub stream: TcpStream,
    /// The backend's process id and secret key (for a cancel request).
    pub key: (i32, i32),
}

pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

pub fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "tally")] {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

impl Wire {
    /// Connects and starts a session as `tally` (development mode).
    pub fn connect(port: u16) -> Wire {
        Wire::try_connect(port).expect("connecting to tally serve")
    }

    /// As `connect`; `None` when the server is not there or refuses the session.
    pub fn try_connect(port: u16) -> Option<Wire> {
        Wire::try_connect_waiting(port, Duration::from_secs(120))
    }

    /// As `try_connect`, waiting at most `limit` for each answer (a stopped server's
    /// connection then reads as closed).
    pub fn try_connect_waiting(port: u16, limit: Duration) -> Option<Wire> {
        let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit).ok()?;
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut wire = Wire { stream, key: (0, 0) };
        wire.stream.write_all(&startup_packet("tally")).ok()?;
        let reply = wire.read_until_ready();
        (reply.errors.is_empty() && !reply.closed).then_some(wire)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One message: its type and body; `None` when the connection ended.
    pub fn read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Reads messages until ReadyForQuery (or the end of the connection).
    pub fn read_until_ready(&mut self) -> Reply {
        let mut reply = Reply::default();
        loop {
            let Some((kind, body)) = self.read_message() else {
                reply.closed = true;
                return reply;
            };
            match kind {
                b'Z' => return reply,
                b'D' => reply.rows.push(data_row(&body)),
                b'E' => reply.errors.push(error_fields(&body)),
                b'C' => reply.tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into()),
                b's' => reply.suspended = true,
                b'K' => {
                    let n = |at: usize| i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    self.key = (n(0), n(4));
                }
                _ => {}
            }
        }
    }

    /// A simple-protocol query.
    pub fn query(&mut self, sql: &str) -> Reply {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        self.send(&message(b'Q', &body));
        self.read_until_ready()
    }

    /// As `query`, for a server that may be gone: a failed send is a closed connection.
    pub fn try_query(&mut self, sql: &str) -> Reply {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        if self.stream.write_all(&message(b'Q', &body)).is_err() {
            return Reply { closed: true, ..Reply::default() };
        }
        self.read_until_ready()
    }

    /// Starts `COPY … FROM STDIN`: true once the server asks for the data.
    pub fn copy_in(&mut self, sql: &str) -> bool {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        self.send(&message(b'Q', &body));
        matches!(self.read_message(), Some((b'G', _)))
    }

    /// Parse (unnamed statement) without parameter types.
    pub fn parse_message(sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, "");
        cstr(&mut body, sql);
        body.extend_from_slice(&0u16.to_be_bytes());
        message(b'P', &body)
    }

    /// Bind of the unnamed statement to portal `portal`, no parameters, text results.
    pub fn bind_message(portal: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, "");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        message(b'B', &body)
    }

    pub fn execute_message(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        body.extend_from_slice(&max_rows.to_be_bytes());
        message(b'E', &body)
    }

    pub fn sync_message() -> Vec<u8> {
        message(b'S', &[])
    }

    pub fn flush_message() -> Vec<u8> {
        message(b'H', &[])
    }

    /// Reads messages until PortalSuspended or CommandComplete, counting the rows.
    pub fn read_portal_chunk(&mut self) -> (usize, bool) {
        let mut rows = 0;
        loop {
            let (kind, body) = self.read_message().expect("the connection is open");
            match kind {
                b'D' => rows += 1,
                b's' => return (rows, true),
                b'C' => return (rows, false),
                b'E' => panic!("error while reading a portal: {:?}", error_fields(&body)),
                _ => {}
            }
        }
    }

    /// Sends a CancelRequest for this connection's running statement.
    pub fn cancel(&self, port: u16) {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut m = 16u32.to_be_bytes().to_vec();
        m.extend_from_slice(&80_877_102u32.to_be_bytes());
        m.extend_from_slice(&self.key.0.to_be_bytes());
        m.extend_from_slice(&self.key.1.to_be_bytes());
        c.write_all(&m).unwrap();
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(String::from_utf8_lossy(&body[at..at + len]).into()));
            at += len;
        }
    }
    out
}

/// The SQLSTATE and message of an ErrorResponse (or NoticeResponse) body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut text) = (String::new(), String::new());
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = value,
            b'M' => text = value,
            _ => {}
        }
    }
    (code, text)
}
