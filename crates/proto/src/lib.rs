//! Sans-IO wire formats shared by the server and the agent: encode and decode only.
//! XML is matched on (namespace URI, local name), never on prefixes.
#![forbid(unsafe_code)]

pub mod acme;
pub mod b64;
pub mod checkin;
pub mod est;
pub mod mde2;
pub mod ns;
pub mod pkcs7;
pub mod soap;
pub mod wstep;
pub mod xcep;
pub mod xml;

/// Everything that can be wrong with a message on the wire. Front ends map these to faults.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("XML too deeply nested")]
    TooDeep,
    #[error("XML has too many elements")]
    TooManyElements,
    #[error("message too large")]
    TooLarge,
    #[error("not a SOAP 1.2 envelope")]
    NotSoap,
    #[error("missing element {0}")]
    Missing(&'static str),
    #[error("invalid value in {0}")]
    Invalid(&'static str),
    #[error("bad base64 in {0}")]
    Base64(&'static str),
}
