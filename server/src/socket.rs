//! One client connection from accept to close: TLS negotiation, then the message loop that hands
//! each message to pgwire's dispatcher (`process_message`) and our handlers. It owns the limits a
//! client could otherwise stretch without end: the time to finish startup and authentication,
//! the time a connection may wait idle for its next message, and the size of a message
//! (`frames.rs`). A connection over a limit gets a FATAL error saying which, and is closed.
//! Output is held while the client's messages are handled and sent when the loop is about to
//! wait for the next one (`coalesce.rs`): one write per round trip.

use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::pgwire;
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{
    negotiate_tls, process_error, process_message, PgWireMessageServerCodec,
};
use pgwire::tokio::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};

use crate::coalesce::Coalesced;
use crate::connection::{Connection, Prepared};
use crate::frames::{self, Limited};
use crate::settings::{session_duration, IDLE_TIMEOUT_KEY};
use crate::startup::Startup;

/// How long a client gets from connecting to being authenticated unless told otherwise
/// (PostgreSQL's `authentication_timeout` is 60 s; a slot held by a silent client is a slot
/// another client lacks).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an authenticated connection may wait for its next message unless told otherwise;
/// a session may ask for less (`SET idle_session_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub startup: Duration,
    /// `None`: an authenticated connection may stay idle for ever.
    pub idle: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { startup: DEFAULT_STARTUP_TIMEOUT, idle: Some(DEFAULT_IDLE_TIMEOUT) }
    }
}

/// The handlers of one connection.
pub(crate) struct Handlers {
    pub connection: Arc<Connection>,
    pub startup: Arc<Startup>,
    pub cancel: Arc<pgwire::api::cancel::DefaultCancelHandler>,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Handlers,
    limits: ConnectionLimits,
) -> Result<(), PgWireError> {
    let startup_deadline = Instant::now() + limits.startup;
    let negotiated = tokio::time::timeout_at(startup_deadline, negotiate_tls(tcp, tls)).await;
    let Ok(negotiated) = negotiated else {
        tracing::debug!("startup timed out during TLS negotiation");
        return Ok(());
    };
    let Some(socket) = negotiated? else { return Ok(()) };
    let parts = socket.into_parts();
    let mut io = Limited::new(parts.io);
    io.seen(&parts.read_buf).map_err(|e| PgWireError::IoError(std::io::Error::other(e)))?;
    let mut limited = FramedParts::new(Coalesced::new(io), parts.codec);
    limited.read_buf = parts.read_buf;
    limited.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(limited);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let wait_until = if starting {
            Some(startup_deadline)
        } else {
            session_duration(&socket, IDLE_TIMEOUT_KEY, limits.idle).map(|d| Instant::now() + d)
        };
        // Pipelined messages (Bind, Execute, Sync in one packet) are answered in one write:
        // the output waits until the loop would wait for the client.
        if starting || !holds_a_message(socket.read_buffer()) {
            send_held(&mut socket).await?;
        }
        let next = match wait_until {
            Some(at) => match tokio::time::timeout_at(at, socket.next()).await {
                Ok(next) => next,
                Err(_) if starting => {
                    tracing::debug!("startup timed out");
                    return Ok(());
                }
                Err(_) => {
                    let why = "terminating connection due to idle-session timeout";
                    return fatal(&mut socket, "57P05", why.into()).await;
                }
            },
            None => socket.next().await,
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(PgWireError::IoError(e))) if frames::too_large(&e).is_some() => {
                let why = frames::too_large(&e).map(ToString::to_string).unwrap_or_default();
                return fatal(&mut socket, "54000", why).await;
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            // What answered the messages before it (held when they came in one packet).
            let _ = send_held(&mut socket).await;
            return Ok(());
        }
        socket.get_mut().hold();
        dispatch(&mut socket, message, &handlers).await?;
    }
}

/// A connection's framed socket over the stream `S`.
type Socket<S> = Framed<Coalesced<S>, PgWireMessageServerCodec<Prepared>>;

/// Writes the output held so far (`coalesce.rs`).
async fn send_held<S>(socket: &mut Socket<S>) -> Result<(), PgWireError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    socket.get_mut().release();
    SinkExt::<PgWireBackendMessage>::flush(socket).await?;
    Ok(())
}

/// Whether `buf` starts with a whole typed message (type byte, length, body), which the loop
/// can handle without waiting for the client.
fn holds_a_message(buf: &[u8]) -> bool {
    match buf.get(1..5) {
        Some(len) => {
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            buf.len() > len
        }
        None => false,
    }
}

async fn dispatch<S>(
    socket: &mut Socket<S>,
    message: PgWireFrontendMessage,
    handlers: &Handlers,
) -> Result<(), PgWireError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let extended = match socket.state() {
        PgWireConnectionState::CopyInProgress(extended) => extended,
        _ => message.is_extended_query(),
    };
    let result = process_message(
        message,
        socket,
        handlers.startup.clone(),
        handlers.connection.clone(),
        handlers.connection.clone(),
        handlers.connection.clone(),
        handlers.cancel.clone(),
    )
    .await;
    if let Err(e) = result {
        process_error(socket, e, extended).await?;
    }
    Ok(())
}

/// Sends a FATAL error and ends the connection.
async fn fatal<S>(socket: &mut Socket<S>, code: &str, message: String) -> Result<(), PgWireError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    tracing::info!(peer = %socket.socket_addr(), "closing connection: {message}");
    socket.get_mut().release();
    let info = ErrorInfo::new("FATAL".into(), code.into(), message);
    socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    socket.close().await?;
    Ok(())
}
