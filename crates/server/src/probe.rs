//! ACME validation's lookups. HTTP-01 (RFC 8555 section 8.3): one `GET
//! http://<name>:<port>/.well-known/acme-challenge/<token>`, the name resolved by the system
//! resolver unless the configuration maps it, bounded in time and size, redirects not followed.
//! DNS-01 (section 8.4): the TXT records of `_acme-challenge.<name>`, asked of one recursive
//! resolver over UDP (hickory-proto encodes and decodes the messages), with recursion desired.
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The longest a validation waits for connection and answer together.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one address may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A key authorization is ~90 bytes; more is not one.
const MAX_BODY: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {0}: {1}")]
    Dns(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connection(SocketAddr, String),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("HTTP status {0} from the challenge URL")]
    Status(u16),
    #[error("the answer is not a short text: {0}")]
    Body(String),
    #[error("DNS server {0}: {1}")]
    DnsServer(SocketAddr, String),
}

impl ProbeError {
    /// The ACME problem type of a failed validation (section 6.7).
    pub fn problem_type(&self) -> &'static str {
        match self {
            ProbeError::Dns(..) | ProbeError::DnsServer(..) => "dns",
            ProbeError::Connection(..) | ProbeError::Timeout => "connection",
            ProbeError::Status(_) | ProbeError::Body(_) => "incorrectResponse",
        }
    }
}

pub struct Http01Probe<'a> {
    pub port: u16,
    pub resolve: &'a [(String, IpAddr)],
}

impl Http01Probe<'_> {
    /// The body the name's web server answers for the token.
    pub async fn fetch(&self, name: &str, token: &str) -> Result<String, ProbeError> {
        tokio::time::timeout(TIMEOUT, self.fetch_inner(name, token)).await.map_err(|_| ProbeError::Timeout)?
    }

    async fn fetch_inner(&self, name: &str, token: &str) -> Result<String, ProbeError> {
        let addresses: Vec<SocketAddr> = match self.resolve.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, ip)) => vec![SocketAddr::new(*ip, self.port)],
            None => tokio::net::lookup_host((name, self.port))
                .await
                .map_err(|e| ProbeError::Dns(name.to_string(), e.to_string()))?
                .collect(),
        };
        // Every address in turn (IPv6 and IPv4 alike), until one answers the connection.
        let mut last = ProbeError::Dns(name.to_string(), "no address".into());
        for address in addresses {
            // Each address its own share of the time: one that drops packets (often the IPv6
            // one) must not use up the rest's.
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return self.get(stream, address, name, token).await,
                Ok(Err(e)) => last = ProbeError::Connection(address, e.to_string()),
                Err(_) => last = ProbeError::Connection(address, "no answer to the connection".into()),
            }
        }
        Err(last)
    }

    async fn get(
        &self,
        stream: tokio::net::TcpStream,
        address: SocketAddr,
        name: &str,
        token: &str,
    ) -> Result<String, ProbeError> {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| ProbeError::Connection(address, e.to_string()))?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get(format!("/.well-known/acme-challenge/{token}"))
            .header(hyper::header::HOST, name)
            .header(hyper::header::USER_AGENT, "autoenroll-acme-validation")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| ProbeError::Body(e.to_string()))?;
        let response =
            sender.send_request(request).await.map_err(|e| ProbeError::Connection(address, e.to_string()))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            driver.abort();
            return Err(ProbeError::Status(status.as_u16()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ProbeError::Body(e.to_string()))?
            .to_bytes();
        driver.abort();
        String::from_utf8(body.to_vec()).map_err(|_| ProbeError::Body("not UTF-8".into()))
    }
}

/// The resolver DNS-01 asks: the configured one, else the first `nameserver` of
/// /etc/resolv.conf, else 127.0.0.1:53.
pub fn system_resolver() -> SocketAddr {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)))
}

pub struct Dns01Probe {
    pub resolver: SocketAddr,
}

impl Dns01Probe {
    /// The TXT strings at `_acme-challenge.<name>` (one attempt, then one retry).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, ProbeError> {
        let mut last = ProbeError::Timeout;
        for _ in 0..2 {
            match tokio::time::timeout(TIMEOUT / 2, self.ask(name)).await {
                Ok(Ok(found)) => return Ok(found),
                Ok(Err(e)) => last = e,
                Err(_) => last = ProbeError::Timeout,
            }
        }
        Err(last)
    }

    async fn ask(&self, name: &str) -> Result<Vec<String>, ProbeError> {
        use hickory_proto::op::{Message, Query, ResponseCode};
        use hickory_proto::rr::{Name, RData, RecordType};
        let server = |e: String| ProbeError::DnsServer(self.resolver, e);
        let qname = Name::from_ascii(format!("_acme-challenge.{name}."))
            .map_err(|e| ProbeError::Dns(name.to_string(), e.to_string()))?;
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        // Answers up to 4 KiB over UDP (several TXT records do not fit 512 bytes).
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096);
        query.edns = Some(edns);
        query.add_query(Query::query(qname.clone(), RecordType::TXT));
        let bytes = query.to_vec().map_err(|e| server(e.to_string()))?;
        let local: SocketAddr = if self.resolver.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await.map_err(|e| server(e.to_string()))?;
        socket.connect(self.resolver).await.map_err(|e| server(e.to_string()))?;
        socket.send(&bytes).await.map_err(|e| server(e.to_string()))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| server(e.to_string()))?;
            // Anything but the answer to this query (a late answer, a spoof attempt) is skipped.
            let Ok(answer) = Message::from_vec(&buf[..n]) else { continue };
            if answer.metadata.id != query.metadata.id || answer.queries != query.queries {
                continue;
            }
            if answer.metadata.truncation {
                return Err(server("the answer was truncated".into()));
            }
            match answer.metadata.response_code {
                ResponseCode::NoError => {}
                ResponseCode::NXDomain => return Ok(vec![]),
                code => return Err(server(format!("answered {code}"))),
            }
            // The TXT records at the name asked, or at the end of the CNAME chain the resolver
            // followed from it (a delegated challenge); records at any other name do not count.
            let mut owner = qname.clone();
            for _ in 0..8 {
                let next = answer.answers.iter().find_map(|r| match &r.data {
                    RData::CNAME(target) if r.name == owner => Some(target.0.clone()),
                    _ => None,
                });
                match next {
                    Some(target) => owner = target,
                    None => break,
                }
            }
            return Ok(answer
                .answers
                .iter()
                .filter(|r| r.name == owner)
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => {
                        Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                    }
                    _ => None,
                })
                .collect());
        }
    }
}
