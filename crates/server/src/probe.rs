//! HTTP-01 validation's one request (RFC 8555 section 8.3): `GET
//! http://<name>:<port>/.well-known/acme-challenge/<token>`, the name resolved by the system
//! resolver unless the configuration maps it, bounded in time and size, redirects not followed.
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The longest a validation waits for connection and answer together.
const TIMEOUT: Duration = Duration::from_secs(10);
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
}

impl ProbeError {
    /// The ACME problem type of a failed validation (section 6.7).
    pub fn problem_type(&self) -> &'static str {
        match self {
            ProbeError::Dns(..) => "dns",
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
        let address = match self.resolve.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, ip)) => SocketAddr::new(*ip, self.port),
            None => tokio::net::lookup_host((name, self.port))
                .await
                .map_err(|e| ProbeError::Dns(name.to_string(), e.to_string()))?
                .next()
                .ok_or_else(|| ProbeError::Dns(name.to_string(), "no address".into()))?,
        };
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| ProbeError::Connection(address, e.to_string()))?;
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
