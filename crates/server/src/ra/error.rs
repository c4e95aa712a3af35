use autoenroll_core::{Kind, Refusal, RefusalCode};
use std::fmt;

/// An RA failure: a `Refusal` (a reason the client may see, with its code), or an internal
/// failure. An internal failure is logged once, where it is made, with a reference id; the
/// client sees only the reference (`detail`), the operator the cause too (`Display`, which the
/// command line prints: "binding 0.0.0.0:443: Address already in use"). Every front end gets
/// that for free.
#[derive(Debug)]
pub enum RaError {
    Refused {
        refusal: Refusal,
        /// The request id when the refusal came after the request was recorded.
        request_id: Option<i64>,
    },
    Internal {
        reference: String,
        request_id: Option<i64>,
        /// For the operator only: never sent to a client.
        cause: String,
    },
}

impl RaError {
    /// An internal failure: the cause goes to the log with a reference id, the client sees the id.
    pub fn internal(source: impl fmt::Display) -> RaError {
        let reference = hex::encode(super::secrets::random_bytes::<4>());
        let cause = source.to_string();
        tracing::error!(reference, source = %cause, "internal error");
        RaError::Internal { reference, request_id: None, cause }
    }

    pub fn with_request(mut self, id: i64) -> RaError {
        match &mut self {
            RaError::Refused { request_id, .. } | RaError::Internal { request_id, .. } => *request_id = Some(id),
        }
        self
    }

    pub fn request_id(&self) -> Option<i64> {
        match self {
            RaError::Refused { request_id, .. } | RaError::Internal { request_id, .. } => *request_id,
        }
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            RaError::Refused { refusal, .. } => Some(refusal),
            RaError::Internal { .. } => None,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            RaError::Refused { refusal, .. } => refusal.kind(),
            RaError::Internal { .. } => Kind::Internal,
        }
    }

    /// The stable reason name: a refusal's code, or `Internal`.
    pub fn code(&self) -> &'static str {
        match self {
            RaError::Refused { refusal, .. } => refusal.code().as_str(),
            RaError::Internal { .. } => "Internal",
        }
    }

    pub fn refusal_code(&self) -> Option<RefusalCode> {
        self.refusal().map(Refusal::code)
    }

    /// What the client may read.
    pub fn detail(&self) -> String {
        match self {
            RaError::Refused { refusal, .. } => refusal.to_string(),
            RaError::Internal { reference, .. } => format!("internal error (reference {reference})"),
        }
    }
}

impl From<Refusal> for RaError {
    fn from(refusal: Refusal) -> Self {
        RaError::Refused { refusal, request_id: None }
    }
}

impl fmt::Display for RaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaError::Internal { cause, reference, .. } => write!(f, "{cause} (reference {reference})"),
            RaError::Refused { .. } => write!(f, "{} ({}): {}", self.code(), self.kind().as_str(), self.detail()),
        }
    }
}

impl std::error::Error for RaError {}

impl From<autoenroll_store::StoreError> for RaError {
    fn from(e: autoenroll_store::StoreError) -> Self {
        RaError::internal(e)
    }
}

impl From<autoenroll_ca::CaError> for RaError {
    fn from(e: autoenroll_ca::CaError) -> Self {
        RaError::internal(e)
    }
}
