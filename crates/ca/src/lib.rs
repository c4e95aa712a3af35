//! The only crate that touches CA private keys: CA hierarchy creation and loading, certificate
//! signing from validated requests, with serial and validity chosen here (rule R4).
#![forbid(unsafe_code)]

mod chain;
mod crl;
mod files;
mod issuer;
mod ocsp;
mod scep_ra;

pub use autoenroll_keys::envelope::ContentCipher;
pub use autoenroll_keys::KeyAlgorithm;
pub use chain::{ChainUpkeep, Published, RootUrls, ROOT_CRL_RENEW_BEFORE_SECS, ROOT_CRL_VALIDITY_SECS};
pub use crl::RevokedEntry;
pub use files::{backup_files, exists, export_root_key, init, load, CaPaths};
pub use issuer::{Ca, Distribution, IssueRequest, Prepared, Profile, SigningKey};
pub use scep_ra::{scep_ra, ScepRa};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA files: {0}")]
    Io(String),
    #[error("CA key: {0}")]
    Key(#[from] autoenroll_keys::KeyError),
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("the issuing CA certificate expires before the requested validity starts")]
    CaExpired,
    #[error("invalid profile: {0}")]
    Profile(String),
}

impl From<der::Error> for CaError {
    fn from(e: der::Error) -> Self {
        CaError::Encoding(e.to_string())
    }
}
