//! Small servers on 127.0.0.1 for the resolver tests: an authoritative DNS
//! server over UDP, an HTTP/1.1 server with optional TLS, a port that counts
//! connections, and a test CA.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

fn lower(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// An `A` record pointing `name` at 127.0.0.1.
pub fn a_record(name: &str) -> Record {
    let name = Name::from_ascii(format!("{name}.")).expect("record name");
    Record::from_rdata(name, 300, RData::A(A::new(127, 0, 0, 1)))
}

/// An SRV record for `_homing._tcp.<name>`; a `target` of "." means "no
/// service".
pub fn srv_record(name: &str, priority: u16, port: u16, target: &str) -> Record {
    let owner = Name::from_ascii(format!("_homing._tcp.{name}.")).expect("SRV name");
    let target = match target {
        "." => Name::root(),
        host => Name::from_ascii(format!("{host}.")).expect("SRV target"),
    };
    let srv = SRV::new(priority, 0, port, target);
    Record::from_rdata(owner, 600, RData::SRV(srv))
}

/// An authoritative DNS server for a fixed set of records, answering
/// NXDOMAIN for names it does not know. It remembers every question.
pub struct DnsServer {
    pub addr: SocketAddr,
    questions: Arc<Mutex<Vec<(String, RecordType)>>>,
}

impl DnsServer {
    /// Binds a UDP port (ready on return) and serves `records`.
    pub async fn start(records: Vec<Record>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("DNS address");
        let questions = Arc::new(Mutex::new(Vec::new()));
        let log = questions.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
                let Ok(request) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                let response = answer(&request, &records, &log);
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self { addr, questions }
    }

    /// Every question asked so far, as (lower-case name, type).
    pub fn questions(&self) -> Vec<(String, RecordType)> {
        self.questions.lock().expect("questions").clone()
    }

    /// How often `name` was asked for `record_type`.
    pub fn asked(&self, name: &str, record_type: RecordType) -> usize {
        self.questions()
            .iter()
            .filter(|(asked, kind)| asked == name && *kind == record_type)
            .count()
    }
}

fn answer(
    request: &Message,
    records: &[Record],
    log: &Mutex<Vec<(String, RecordType)>>,
) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let mut code = ResponseCode::NoError;
    for query in request.queries() {
        response.add_query(query.clone());
        let name = lower(query.name());
        log.lock()
            .expect("questions")
            .push((name.clone(), query.query_type()));
        let known: Vec<&Record> = records.iter().filter(|r| lower(r.name()) == name).collect();
        if known.is_empty() {
            code = ResponseCode::NXDomain;
        }
        for record in known {
            if record.record_type() == query.query_type() {
                response.add_answer(record.clone());
            }
        }
    }
    response.set_response_code(code);
    response
}

/// A request as the HTTP server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub host: String,
}

/// What the HTTP server answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: 404,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Route = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// An HTTP/1.1 server answering one request per connection.
pub struct HttpServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpServer {
    /// Binds a port; the caller learns it before choosing the routes.
    pub async fn listen() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP")
    }

    /// Serves `route` on `listener`, over TLS when `tls` is given.
    pub fn serve(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        route: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("HTTP address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route: Route = Arc::new(route);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, route, log) = (tls.clone(), route.clone(), log.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            // A client that refuses the certificate ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_one(stream, &route, &log).await;
                            }
                        }
                        None => serve_one(stream, &route, &log).await,
                    }
                });
            }
        });
        Self { addr, seen }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// How many requests asked for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|seen| seen.path == path).count()
    }
}

async fn serve_one<S>(mut stream: S, route: &Route, log: &Mutex<Vec<Seen>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let host = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    let seen = Seen { path, host };
    // Recorded before answering, so a client that has its answer can count.
    log.lock().expect("seen").push(seen.clone());
    let reply = route(&seen);
    let mut response = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&reply.body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A port that accepts connections, notes where each came from and closes
/// it at once.
pub struct ConnectionCounter {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ConnectionCounter {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let log = peers.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                log.lock().expect("peers").push(peer);
                drop(stream);
            }
        });
        Self { addr, peers }
    }

    /// How many connections were made before this call. A probe connection
    /// of its own queues behind them all, so once the probe is accepted
    /// every earlier one has been counted: no sleeping and hoping.
    pub async fn connections(&self) -> usize {
        let probe = TcpStream::connect(self.addr).await.expect("probe connects");
        let me = probe.local_addr().expect("probe address");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let peers = self.peers.lock().expect("peers").clone();
            if let Some(before) = peers.iter().position(|peer| *peer == me) {
                self.peers.lock().expect("peers").retain(|peer| *peer != me);
                return before;
            }
            assert!(Instant::now() < deadline, "the probe was never accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A fresh CA and a TLS acceptor whose certificate it signed for `names`.
/// Returns the CA certificate as PEM.
pub fn test_ca(names: &[&str]) -> (String, TlsAcceptor) {
    let issued = issue(names);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(issued.leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![issued.leaf.der().clone()], key)
        .expect("TLS server config");
    (issued.ca_pem, TlsAcceptor::from(Arc::new(config)))
}

/// A fresh CA and a certificate it signed for `names`, all as PEM: the
/// CA's certificate, the leaf's, and the leaf's private key (for servers
/// written in other languages).
pub fn test_ca_pem(names: &[&str]) -> (String, String, String) {
    let issued = issue(names);
    (
        issued.ca_pem,
        issued.leaf.pem(),
        issued.leaf_key.serialize_pem(),
    )
}

struct Issued {
    ca_pem: String,
    leaf: rcgen::Certificate,
    leaf_key: rcgen::KeyPair,
}

fn issue(names: &[&str]) -> Issued {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Homing test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).expect("leaf params");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    Issued {
        ca_pem: ca_cert.pem(),
        leaf,
        leaf_key,
    }
}
