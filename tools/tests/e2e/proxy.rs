//! Network partitions between the nodes of a test cluster: a TCP proxy in front of each node's
//! Raft port. Node `i` listens on `node_ip(i)` and `tally serve` connects to its peers from the
//! address it listens on, so the proxy in front of node `j` knows which node each connection
//! comes from (anything else, such as `tally cluster`, is never cut).
//!
//! Cutting the link between two nodes stalls every connection between them: no byte crosses,
//! in either direction, as when a network drops their packets. Healing it resets the
//! connections that were stalled (what TCP does once its retries give up; the bytes they held
//! are lost) and lets new ones through. Never: drop or reorder bytes of a connection that
//! goes on (TCP does not).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Node `i` of a test cluster listens on 127.0.0.(NODE_IP_BASE + i).
const NODE_IP_BASE: u8 = 10;
/// How often a stalled or idle pump looks at the links again.
const POLL: Duration = Duration::from_millis(20);

/// The loopback address node `id` listens on and connects from.
pub fn node_ip(id: usize) -> IpAddr {
    let last = NODE_IP_BASE + u8::try_from(id).expect("a small node id");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The node a connection from `ip` comes from, if it is one.
fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > NODE_IP_BASE => {
            Some(usize::from(v4.octets()[3] - NODE_IP_BASE))
        }
        _ => None,
    }
}

/// Which links between nodes are cut, shared by every proxy of a cluster.
#[derive(Default)]
pub struct Links {
    cut: Mutex<BTreeSet<(usize, usize)>>,
    stop: AtomicBool,
}

impl Links {
    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Cuts node `a` off from each of `others` (both ways).
    pub fn cut(&self, a: usize, others: &[usize]) {
        let mut cut = self.cut.lock().unwrap();
        for b in others {
            cut.insert(Links::pair(a, *b));
        }
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }

    fn is_cut(&self, from: Option<usize>, to: usize) -> bool {
        from.is_some_and(|f| self.cut.lock().unwrap().contains(&Links::pair(f, to)))
    }
}

/// The proxy in front of one node's Raft port.
pub struct Proxy {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    links: Arc<Links>,
    accepting: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 (bound here, so that no other test takes it
    /// meanwhile) and passes connections to node `to` at `upstream`.
    pub fn start(to: usize, upstream: SocketAddr, links: Arc<Links>) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a port for the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = links.clone();
        let accepting = std::thread::spawn(move || accept(listener, to, upstream, shared));
        Proxy { port, links, accepting: Some(accepting) }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.links.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

fn accept(listener: TcpListener, to: usize, upstream: SocketAddr, links: Arc<Links>) {
    while !links.stop.load(Ordering::Relaxed) {
        let (client, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        client.set_nonblocking(false).unwrap();
        // A node that is down: the connection closes at once, as a refused one would.
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) else {
            continue;
        };
        let conn = Arc::new(Connection {
            from: node_of(peer.ip()),
            to,
            links: links.clone(),
            stalled: AtomicBool::new(false),
            ends: [client.try_clone().unwrap(), server.try_clone().unwrap()],
        });
        let (up, to_server) = (conn.clone(), server.try_clone().unwrap());
        std::thread::spawn(move || up.pump(client, to_server));
        let to_client = conn.ends[0].try_clone().unwrap();
        std::thread::spawn(move || conn.pump(server, to_client));
    }
}

/// One proxied connection, pumped by two threads (one per direction).
struct Connection {
    from: Option<usize>,
    to: usize,
    links: Arc<Links>,
    /// The link was cut while this connection was open: it is reset when the link heals.
    stalled: AtomicBool,
    /// Both sockets, to shut them down from either pump.
    ends: [TcpStream; 2],
}

impl Connection {
    /// Waits while the link is cut; false once the connection must end (it was stalled and the
    /// link healed, or the proxy stops).
    fn passable(&self) -> bool {
        loop {
            if self.links.stop.load(Ordering::Relaxed) {
                return false;
            }
            if !self.links.is_cut(self.from, self.to) {
                return !self.stalled.load(Ordering::Relaxed);
            }
            self.stalled.store(true, Ordering::Relaxed);
            std::thread::sleep(POLL);
        }
    }

    fn pump(&self, mut from: TcpStream, mut to: TcpStream) {
        from.set_read_timeout(Some(POLL)).unwrap();
        let mut buffer = vec![0u8; 64 << 10];
        while self.passable() {
            let n = match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => break,
            };
            // Bytes read just before a cut wait for the link, and are lost if it was cut.
            if !self.passable() || to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        for end in &self.ends {
            let _ = end.shutdown(Shutdown::Both);
        }
    }
}
