//! The one error classification every layer agrees on. Front ends map each kind exhaustively to
//! their wire error (SOAP fault, MDM fault, SCEP failInfo, ...).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request is malformed (bad XML, bad base64, missing element).
    BadRequest,
    /// The certificate request itself is unacceptable (bad signature, weak key, bad DER).
    BadCsr,
    /// The caller is not who it claims (wrong credentials, expired or used token).
    Unauthorized,
    /// A referenced object does not exist (unknown template, unknown request id).
    NotFound,
    /// The caller is known but policy forbids the operation.
    PolicyDenied,
    /// The request was accepted but waits for approval.
    Pending,
    RateLimited,
    Conflict,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::BadCsr => "bad_csr",
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not_found",
            Kind::PolicyDenied => "policy_denied",
            Kind::Pending => "pending",
            Kind::RateLimited => "rate_limited",
            Kind::Conflict => "conflict",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }
}
