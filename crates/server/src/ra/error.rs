use autoenroll_core::Kind;
use std::fmt;

/// An RA failure: `kind` picks the wire error class, `code` names the specific reason (stable,
/// shown to clients and recorded in the audit log), `detail` is safe for the client, `source`
/// is only logged.
#[derive(Debug)]
pub struct RaError {
    pub kind: Kind,
    pub code: &'static str,
    pub detail: String,
    pub source: Option<String>,
    /// The request id when the failure happened after the request was recorded.
    pub request_id: Option<i64>,
}

impl RaError {
    pub fn new(kind: Kind, code: &'static str, detail: impl Into<String>) -> RaError {
        RaError { kind, code, detail: detail.into(), source: None, request_id: None }
    }

    /// An internal failure: the client sees only the code, the cause goes to the log.
    pub fn internal(source: impl fmt::Display) -> RaError {
        RaError {
            kind: Kind::Internal,
            code: "Internal",
            detail: "internal error".into(),
            source: Some(source.to_string()),
            request_id: None,
        }
    }

    /// A copy for the audit trail, tied to a request.
    pub fn clone_for_audit(&self, request_id: i64) -> RaError {
        RaError {
            kind: self.kind,
            code: self.code,
            detail: self.detail.clone(),
            source: self.source.clone(),
            request_id: Some(request_id),
        }
    }

    pub fn with_request(mut self, id: i64) -> RaError {
        self.request_id = Some(id);
        self
    }
}

impl fmt::Display for RaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.kind.as_str(), self.detail)
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
