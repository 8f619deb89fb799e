//! Connecting: the address, TLS, and the Basic → Bearer handshake (what pyarrow's
//! `authenticate_basic_token` does), then opening `DoPut` streams with the producer's headers.
//! Owns the connection; it must never send a password on any call but `Handshake`, and without
//! a password it never handshakes at all (a server in development mode takes any call from
//! loopback without credentials).

use std::path::PathBuf;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor, HandshakeRequest, SchemaAsIpc};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use base64::Engine as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::put::{PutOptions, PutStream, SEND_BUFFER};
use crate::{is_valid_producer, ClientError, DRY_RUN_HEADER, PRODUCER_HEADER, WRITE_TABLES};

/// How long a connection attempt may take before it counts as a transport failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle or busy connection, so that a dead peer (a crashed node, a dropped
/// route) is noticed within `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` instead of never.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The header carrying credentials, both ways.
const AUTHORIZATION: &str = "authorization";

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// User name for the handshake (only used with a password).
    pub user: String,
    /// With a password, `connect` authenticates; without, it relies on development mode.
    pub password: Option<String>,
    /// PEM file of the CA that signed the server's certificate: connect with TLS. No system
    /// roots are built in.
    pub tls_ca: Option<PathBuf>,
    /// Name to check the server's certificate against, when not the address's host.
    pub tls_domain: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_domain", &self.tls_domain)
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { user: "tally".into(), password: None, tls_ca: None, tls_domain: None }
    }
}

/// A connection to a Tally ingest endpoint, authenticated when a password was given. Cheap to
/// clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct IngestClient {
    inner: FlightServiceClient<Channel>,
    /// `Bearer <token>` from the handshake; `None` in development mode.
    bearer: Option<AsciiMetadataValue>,
    addr: String,
}

impl IngestClient {
    /// Connects to `addr` (`host:port`, or `http://` / `https://host:port`) and, when
    /// `options.password` is set, performs the handshake.
    pub async fn connect(addr: &str, options: ConnectOptions) -> Result<IngestClient, ClientError> {
        let endpoint = endpoint(addr, &options)?;
        let channel = endpoint.connect().await.map_err(|e| ClientError::Unreachable {
            addr: addr.to_string(),
            message: error_chain(&e),
        })?;
        let mut client = IngestClient {
            inner: FlightServiceClient::new(channel),
            bearer: None,
            addr: addr.into(),
        };
        if let Some(password) = &options.password {
            client.bearer = client.handshake(&options.user, password).await?;
        }
        Ok(client)
    }

    /// The address this client was given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True when the handshake gave a token.
    pub fn is_authenticated(&self) -> bool {
        self.bearer.is_some()
    }

    /// `Handshake` with `authorization: Basic base64(user:password)`; the token comes back in
    /// the response header `authorization: Bearer <token>`.
    async fn handshake(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<Option<AsciiMetadataValue>, ClientError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let hello = HandshakeRequest { protocol_version: 0, payload: Default::default() };
        let mut request = tonic::Request::new(futures::stream::iter([hello]));
        let mut value =
            AsciiMetadataValue::try_from(format!("Basic {basic}")).expect("base64 is ASCII");
        value.set_sensitive(true);
        request.metadata_mut().insert(AUTHORIZATION, value);
        let response = self.inner.handshake(request).await.map_err(ClientError::from_status)?;
        let bearer = response.metadata().get(AUTHORIZATION).cloned();
        let mut answers = response.into_inner();
        while answers.message().await.map_err(ClientError::from_status)?.is_some() {}
        match bearer {
            Some(mut v) if v.to_str().is_ok_and(|s| s.starts_with("Bearer ")) => {
                v.set_sensitive(true);
                Ok(Some(v))
            }
            Some(_) => Err(ClientError::Protocol(
                "the handshake answered with an authorization header that is not a Bearer token"
                    .into(),
            )),
            // The server took the handshake without issuing a token: development mode.
            None => Ok(None),
        }
    }

    /// Opens a `DoPut` stream into `table` for `options.producer`, sending the descriptor and
    /// `schema` first. Batches then go through [`PutStream::send`].
    pub async fn put(
        &mut self,
        table: &str,
        schema: SchemaRef,
        options: &PutOptions,
    ) -> Result<PutStream, ClientError> {
        if !WRITE_TABLES.contains(&table) {
            return Err(ClientError::Table(table.to_string()));
        }
        if !is_valid_producer(&options.producer) {
            return Err(ClientError::Producer(options.producer.clone()));
        }
        let (mut sink, outgoing) = futures::channel::mpsc::channel::<FlightData>(SEND_BUFFER);
        let first = FlightData::from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .with_descriptor(FlightDescriptor::new_path(vec![table.to_string()]));
        sink.try_send(first).expect("a new channel has room for one message");
        let mut request = tonic::Request::new(outgoing);
        self.put_headers(request.metadata_mut(), options);
        let mut inner = self.inner.clone();
        let call = inner.do_put(request);
        let response = match tokio::time::timeout(options.ack_timeout, call).await {
            Ok(answer) => answer.map_err(ClientError::from_status)?,
            Err(_) => return Err(timed_out("opening the stream", options.ack_timeout)),
        };
        Ok(PutStream::new(sink, response.into_inner(), schema, options))
    }

    fn put_headers(&self, metadata: &mut MetadataMap, options: &PutOptions) {
        let producer =
            AsciiMetadataValue::try_from(&options.producer).expect("valid producer ids are ASCII");
        metadata.insert(PRODUCER_HEADER, producer);
        if options.dry_run {
            metadata.insert(DRY_RUN_HEADER, AsciiMetadataValue::from_static("true"));
        }
        if let Some(bearer) = &self.bearer {
            metadata.insert(AUTHORIZATION, bearer.clone());
        }
    }
}

/// A transport failure for a deadline that passed.
pub(crate) fn timed_out(what: &str, after: Duration) -> ClientError {
    ClientError::Transport {
        code: tonic::Code::DeadlineExceeded,
        message: format!("no answer from the server {what} within {} s", after.as_secs()),
    }
}

/// The endpoint for an address: `host:port` means `http://` without TLS and `https://` with it.
fn endpoint(addr: &str, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let bad = |message: &str| ClientError::Address { addr: addr.into(), message: message.into() };
    let tls = options.tls_ca.is_some();
    let uri = match addr.split_once("://") {
        None if tls => format!("https://{addr}"),
        None => format!("http://{addr}"),
        Some(("https", _)) if !tls => return Err(bad("https:// needs a CA certificate (tls_ca)")),
        Some(("http", _)) if tls => {
            return Err(bad("http:// cannot be used with a CA certificate"))
        }
        Some(("http" | "https", _)) => addr.to_string(),
        Some(_) => return Err(bad("the scheme must be http or https")),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| bad(&error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(path) = &options.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|source| ClientError::TlsCa { path: path.clone(), source })?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(domain) = &options.tls_domain {
            config = config.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| bad(&error_chain(&e)))?;
    }
    Ok(endpoint)
}

/// An error and its sources, `a: b: c` (tonic's transport errors say only "transport error"
/// at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(addr: &str, tls: bool) -> Result<String, ClientError> {
        let mut options = ConnectOptions::default();
        if tls {
            options.tls_ca = Some("/nonexistent/ca.pem".into());
        }
        endpoint(addr, &options).map(|e| e.uri().to_string())
    }

    #[test]
    fn passwords_are_never_printed() {
        let options = ConnectOptions { password: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn addresses_take_a_scheme_from_tls() {
        assert_eq!(uri("127.0.0.1:5434", false).unwrap(), "http://127.0.0.1:5434/");
        assert_eq!(uri("http://node-1:5434", false).unwrap(), "http://node-1:5434/");
        assert!(matches!(uri("https://node-1:5434", false), Err(ClientError::Address { .. })));
        assert!(matches!(uri("ftp://node-1:5434", false), Err(ClientError::Address { .. })));
        assert!(matches!(uri("node 1:5434", false), Err(ClientError::Address { .. })));
        // With a CA, a missing file is named.
        assert!(matches!(uri("node-1:5434", true), Err(ClientError::TlsCa { .. })));
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable_and_retryable() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = IngestClient::connect(&format!("127.0.0.1:{port}"), ConnectOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }) && err.is_retryable(), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
