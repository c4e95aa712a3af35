//! Certificate and CSR facts: what the RA and the agent need to know about DER objects, parsed
//! leniently where real clients are sloppy (Windows CSRs) and verified with aws-lc-rs.
pub mod cert;
pub mod cmc;
pub mod cms;
pub mod csr;
pub mod ocsp;
pub mod scep;
pub mod sig;
pub mod template_ext;

pub use cert::CertFacts;
pub use csr::{CsrFacts, KeyFacts, TemplateHint};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    #[error("malformed DER: {0}")]
    Der(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    #[error("key too weak: {0}")]
    WeakKey(String),
    #[error("{0}")]
    Cms(String),
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError::Der(e.to_string())
    }
}
