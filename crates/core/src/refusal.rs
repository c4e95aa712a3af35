//! Every reason the server refuses a request, once. A `Refusal` carries the data its message
//! needs; `code()` is its stable name (fault subcode, audit log, JSON `code`), `kind()` its class.
//! Each front end maps refusals to its wire error with one exhaustive match over `RefusalCode`
//! (no catch-all arm), so a new reason does not compile until every protocol says what it is.
//! `docs/error-mapping.md` is generated from this list and the front ends' mappings.
use crate::model::{CertState, UnixTime};
use crate::Kind;
use std::fmt;

macro_rules! refusals {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $({ $($field:ident : $ty:ty),* $(,)? })? => $kind:ident, $fmt:literal;
    )*) => {
        /// A refusal with what its message needs. See the module documentation.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Refusal {
            $($(#[doc = $doc])* $variant $({ $($field: $ty),* })?,)*
        }

        /// The reason alone, without its data: what wire mappings and documentation match on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RefusalCode {
            $($variant,)*
        }

        impl RefusalCode {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RefusalCode] = &[$(RefusalCode::$variant,)*];

            /// The stable name: fault subcode, audit detail, JSON `code`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RefusalCode::$variant => stringify!($variant),)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(RefusalCode::$variant => Kind::$kind,)*
                }
            }

            /// When it happens (the variant's documentation), for the error-mapping table.
            pub fn when(self) -> &'static str {
                match self {
                    $(RefusalCode::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }

        impl Refusal {
            pub fn code(&self) -> RefusalCode {
                match self {
                    $(Refusal::$variant { .. } => RefusalCode::$variant,)*
                }
            }
        }

        impl fmt::Display for Refusal {
            /// The client-safe detail.
            #[allow(unused_variables)]
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Refusal::$variant $({ $($field),* })? => write!(f, $fmt),)*
                }
            }
        }
    };
}

impl Refusal {
    pub fn kind(&self) -> Kind {
        self.code().kind()
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Refusal {}

refusals! {
    // ---- credentials
    /// No UsernameToken, bootstrap token or client certificate.
    MissingToken => Unauthorized,
        "no credentials: send a WS-Security UsernameToken, a bootstrap token or a client certificate";
    /// Unknown account, wrong password, unknown bootstrap or admin token.
    WrongCredentials { what: &'static str } => Unauthorized, "{what}";
    /// Too many failed passwords or challenges for the account or from the address: locked
    /// for a while (audited as auth.lockout).
    TooManyAttempts { retry_after_secs: i64 } => RateLimited, "too many failed attempts; try again in {retry_after_secs} s";
    /// Every password-hashing slot stayed busy for seconds (a flood of logins): try again.
    ServerBusy => Unavailable, "the server is busy checking passwords; try again shortly";
    /// The bootstrap token was already spent.
    TokenUsed => Unauthorized, "the bootstrap token was already used";
    /// The bootstrap token is past its TTL.
    TokenExpired => Unauthorized, "the bootstrap token has expired";
    /// A bootstrap token pays for one issuance and authenticates nothing else (check-in needs the device's certificate).
    TokenNotAccepted { what: &'static str } => Unauthorized, "a single-use token (bootstrap or sign-in) does not authenticate {what}";
    /// The TLS client certificate is not in the inventory.
    UnknownClientCertificate => Unauthorized, "the client certificate is not in the inventory";
    /// The TLS client certificate was renewed away or revoked.
    ClientCertificateNotValid { state: CertState } => Unauthorized, "the client certificate is {state}";
    /// The TLS client certificate has expired.
    ClientCertificateExpired => Unauthorized, "the client certificate has expired";

    // ---- renewal: proof, standing, window
    /// The CMS SignedData is malformed, detached, CMC, or its signer certificate is missing.
    BadRenewalRequest { detail: String } => BadRequest, "renewal request: {detail}";
    /// The renewal's signature does not verify with the old certificate's key.
    BadRenewalSignature => Unauthorized,
        "the renewal request's signature does not verify with the old certificate's key";
    /// The certificate to renew does not parse.
    BadCertificate { detail: String } => BadRequest, "the certificate to renew: {detail}";
    /// The certificate to renew was not issued by this CA.
    ForeignCertificate => Unauthorized, "the certificate to renew was not issued by this CA";
    /// Ours by signature but not in the inventory.
    UnknownCertificate => Unauthorized, "the certificate to renew is not in the inventory";
    /// Renewal of an expired certificate: re-enroll with fresh credentials.
    CertificateExpired => Unauthorized, "the certificate has expired: re-enroll with fresh credentials";
    /// Renewal of a revoked certificate.
    CertificateRevoked { serial: String } => PolicyDenied, "certificate {serial} is revoked";
    /// Other credentials on the request belong to another device or requester.
    DeviceMismatch { actor: String, device: String } => PolicyDenied,
        "{actor} may not renew a certificate of device {device}";
    /// The CSR's renewal-certificate attribute names another certificate than the signer.
    RenewalCertificateMismatch => PolicyDenied,
        "the request names a different certificate than the one that signed it";
    /// The certificate's template no longer allows enrollment.
    TemplateNotAllowed { template: String } => PolicyDenied, "template {template} does not allow enrollment";
    /// Before `renew_at - renewal_grace - skew` (skew = min(60 s, lifetime/20)), unless the server moved the certificate's renewal time or the template's major version went up.
    OutsideRenewalWindow { serial: String, opens: UnixTime } => PolicyDenied,
        "renewal of {serial} opens at {opens}";
    /// Renewal with the same key where the template requires a new one.
    SameKeyNotAllowed { template: String } => BadCsr, "template {template} requires a new key on renewal";

    // ---- the certificate request
    /// The token is not a PKCS#10.
    BadCsr { detail: String } => BadCsr, "malformed PKCS#10: {detail}";
    /// The PKCS#10 self-signature does not verify.
    BadCsrSignature => BadCsr, "the CSR signature does not verify";
    /// The CSR is signed with an algorithm we do not verify.
    UnsupportedAlgorithm { algorithm: String } => BadCsr, "unsupported CSR signature algorithm {algorithm}";
    /// A key type the template does not accept (its key types; Ed25519 never).
    KeyTypeNotAllowed { key: String, template: String } => BadCsr, "template {template} does not accept {key} keys";
    /// A key under the template's minimum: RSA never under 2048 bits, EC never under the template's curve.
    KeyTooWeak { key: String, min_bits: u32, template: String } => BadCsr,
        "{key} key; template {template} needs at least {min_bits} bits";
    /// The template takes the subject from the request, and it has neither a subject nor SANs.
    SubjectRequired { template: String } => BadCsr, "template {template} needs a subject or DNS names in the request";
    /// The device name cannot be a certificate subject.
    BadDeviceName { name: String, reason: String } => BadRequest, "device name {name:?}: {reason}";

    // ---- enrollment policy
    /// The request names a template that does not exist.
    UnknownTemplate { name: String } => NotFound, "unknown template {name}";
    /// A stored template no longer validates (written by an older version or by hand).
    TemplateMisconfigured { name: String, reason: String } => Unavailable,
        "template {name} is misconfigured ({reason}); an administrator must fix it";
    /// The template's permissions do not name this requester (account, group, device, token, holder).
    NotPermitted { actor: String, template: String } => PolicyDenied, "{actor} may not enroll for template {template}";
    /// The account may not act for a device of that name (its device patterns).
    DeviceNotAllowed { actor: String, device: String } => PolicyDenied, "{actor} may not enroll for device {device}";
    /// The device is bound to another requester; an administrator may rebind it.
    DeviceBound { actor: String, device: String } => PolicyDenied,
        "device {device} belongs to another requester than {actor} (an administrator may rebind it)";
    /// A static SCEP challenge names a device the inventory already holds.
    DeviceNameTaken { device: String } => PolicyDenied,
        "device {device} exists: a static challenge cannot claim it (use a dynamic challenge made for it)";
    /// A name the template's name policy does not allow (not the device's own, not under an allowed suffix or range).
    NameNotAllowed { name: String, template: String } => PolicyDenied, "template {template} does not allow the name {name}";
    /// One of the server's own names or addresses, or loopback.
    ServerNameReserved { name: String } => PolicyDenied, "{name} is reserved for the server itself";
    /// A wildcard where the template allows none, or not in the leftmost label.
    WildcardNotAllowed { name: String, template: String } => PolicyDenied, "template {template} does not allow the wildcard {name}";
    /// A common name longer than RFC 5280's 64 characters.
    CommonNameTooLong { length: usize } => BadCsr, "the common name has {length} characters; at most 64";
    /// The device is blocked (enrollment, renewal, check-in).
    DeviceBlocked { device: String } => PolicyDenied, "device {device} is blocked";

    // ---- SCEP challenges (checked in this order, docs/scep.md)
    /// The SCEP request carries no challenge password.
    ChallengeMissing => Unauthorized, "the request carries no challenge password";
    /// Neither the template's static challenge nor a known dynamic one.
    ChallengeInvalid => Unauthorized, "the challenge password is not valid";
    /// The dynamic challenge is past its TTL.
    ChallengeExpired { id: String } => Unauthorized, "challenge {id} expired";
    /// The dynamic challenge was spent by another transaction or key.
    ChallengeUsed { id: String } => Unauthorized, "challenge {id} was already used";
    /// The challenge's device has left the inventory.
    DeviceNotEnrolled { device: String } => PolicyDenied, "device {device} is not in the inventory";
    /// The challenge was made for another template, or its template no longer allows enrollment.
    TemplateNotAssigned { challenge: String, template: String, asked: String } => PolicyDenied,
        "challenge {challenge} is for template {template}, not {asked}";
    /// The request's subject is not the one the challenge was made for.
    SubjectMismatch { expected: String, got: String } => PolicyDenied, "expected subject {expected}, got {got}";
    /// The request's SANs are not the ones the challenge was made for.
    SubjectAltNameMismatch { expected: String, got: String } => PolicyDenied, "expected SANs {expected}, got {got}";
    /// The request's key is not the RSA size the challenge asks for.
    KeyLengthMismatch { min_bits: u32, got: String } => PolicyDenied,
        "expected an RSA key of at least {min_bits} bits, got {got}";
    /// The request asks for an EKU the challenge does not allow.
    EkuMismatch { eku: String } => PolicyDenied, "the request asks for EKU {eku}, not allowed by the challenge";

    // ---- SCEP messages
    /// The request envelope could not be decrypted (one reason for every failure: no padding oracle).
    BadMessageCheck => BadRequest, "the request envelope could not be decrypted";
    /// DES or 3DES on a server that refuses legacy ciphers.
    UnsupportedCipher { detail: String } => BadRequest, "{detail}";
    /// A SHA-1 signature on a server that refuses legacy algorithms.
    UnsupportedDigest => BadRequest,
        "SHA-1 signatures are refused (legacy ciphers are disabled on this server); use SHA-256";
    /// The reply cannot be encrypted to the requester's key.
    SignerKeyNotRsa { detail: String } => BadRequest, "cannot encrypt the reply: {detail}";
    /// The SCEP signer certificate does not parse.
    BadSignerCertificate { detail: String } => BadRequest, "signer certificate: {detail}";
    /// A CertRep sent to the server.
    NotARequest => BadRequest, "a CertRep is not a request";
    /// A decrypted message content that is not what its message type carries.
    BadMessageContent { detail: String } => BadRequest, "message content: {detail}";
    /// CertPoll for a transaction this signer never started.
    UnknownTransaction { id: String } => NotFound, "no transaction {id}";
    /// GetCert or revocation of a serial the inventory does not hold (unrevoked).
    NoSuchCertificate { serial: String } => NotFound, "no certificate {serial}";

    // ---- requests held for approval
    /// QueryTokenStatus, approval or denial of an unknown request id.
    UnknownRequest { id: i64 } => NotFound, "no request {id}";
    /// An administrator denied the request.
    RequestDenied { id: i64, reason: String } => PolicyDenied, "request {id} was denied: {reason}";
    /// MDM enrollment from a template that holds requests for approval, without an
    /// administrator's token: MS-MDE2 has no pending state and Windows makes a new key on every
    /// attempt, so a held request could never be collected.
    MdmApprovalNeedsToken { template: String } => PolicyDenied, "template {template} holds requests for approval, which Windows MDM enrollment cannot collect: enroll the device with an enrollment token an administrator made for it (the token is the approval)";
    /// A racing renewal of the same certificate is still being signed.
    RenewalInProgress { serial: String } => Unavailable, "the renewal of {serial} is being signed; try again";
    /// The certificate was renewed already and its successor is in service (or renewed in
    /// turn): renewing it again would make a second live successor.
    AlreadyRenewed { serial: String, successor: String } => Conflict,
        "certificate {serial} was renewed already: its successor {successor} is in use";
    /// Approval or denial of a request that is not pending.
    NotPending { id: i64, status: String } => Conflict, "request {id} is {status}, not pending";

    // ---- messages
    /// `a:Action` is neither GetPolicies nor RST/wstep (or the endpoint's one action).
    UnknownAction { action: String } => BadRequest, "unknown SOAP action {action}";
    /// KET (key archival), or QueryTokenStatus on the MDM endpoint.
    UnsupportedRequestType { what: &'static str } => BadRequest, "{what} is not supported";
    /// A JSON body that does not parse as the message.
    BadJson { detail: String } => BadRequest, "{detail}";
    /// A query parameter or field of the admin API with a bad value.
    BadParameter { detail: String } => BadRequest, "{detail}";
    /// A check-in report with more entries than the server reads.
    TooLarge { what: &'static str } => BadRequest, "too many entries in the {what}";

    // ---- administration
    /// A template field that does not hold (names the field).
    InvalidTemplate { field: &'static str, reason: String } => BadRequest, "invalid template: {field}: {reason}";
    /// Account name or password unusable.
    InvalidAccount { detail: String } => BadRequest, "{detail}";
    /// A bootstrap token without a device or with a non-positive TTL.
    InvalidToken { detail: String } => BadRequest, "{detail}";
    /// A dynamic challenge without a device or with a non-positive TTL.
    InvalidChallenge { detail: String } => BadRequest, "{detail}";
    /// A static challenge under 8 characters.
    WeakChallenge => BadRequest, "a static challenge needs at least 8 characters";
    /// A revocation reason that is not an RFC 5280 name.
    InvalidReason { reason: String, allowed: String } => BadRequest,
        "unknown revocation reason {reason} (use one of {allowed})";
    /// A subject that is not an RFC 4514 distinguished name.
    BadSubject { subject: String, detail: String } => BadRequest, "subject {subject:?}: {detail}";
    /// An administrative action on a device the inventory does not hold.
    UnknownDevice { name: String } => NotFound, "no device {name}";
    /// A template, OID or account that already exists.
    Duplicate { what: String } => Conflict, "{what} already exists";
    /// Removing a device that has requests or certificates (block it instead).
    DeviceHasHistory { device: String } => Conflict, "device {device} has requests or certificates: block it instead";

    // ---- ACME (RFC 8555)
    /// A JWS whose nonce this server did not issue, issued over an hour ago, or already used.
    BadNonce => BadRequest, "the nonce is unknown, expired or used; retry with the one in Replay-Nonce";
    /// A request body that is not a valid flattened JWS for its URL.
    BadJws { detail: String } => BadRequest, "{detail}";
    /// A JWS signed with an algorithm other than ES256, ES384, RS256 or EdDSA.
    BadSignatureAlgorithm { alg: String } => BadRequest,
        "unsupported JWS algorithm {alg}; use ES256, ES384, RS256 or EdDSA";
    /// A JWS by a key or account URL no ACME account has.
    AcmeAccountUnknown => Unauthorized, "no ACME account has this key";
    /// A new ACME account without an external account binding (or with one that is unknown, spent or expired).
    ExternalAccountRequired { detail: String } => Unauthorized,
        "an ACME account needs an external account binding key from an administrator (`autoenroll acme eab`): {detail}";
    /// An identifier ACME here cannot validate (IP addresses, wildcards, other types).
    UnsupportedIdentifier { identifier: String } => BadRequest, "unsupported identifier {identifier}";
    /// An order, authorization, challenge or certificate URL that names nothing this account has.
    UnknownAcmeResource { what: String } => NotFound, "no {what}";
    /// Finalizing an order whose authorizations are not all valid, or fetching a certificate not yet issued.
    OrderNotReady { status: String } => PolicyDenied, "the order is {status}";
    /// An HTTP-01 or DNS-01 validation that did not find the key authorization.
    ChallengeFailed { detail: String } => PolicyDenied, "validation failed: {detail}";
    /// A `replaces` naming a certificate of another account, other names, or one already replaced.
    ReplacesRefused { detail: String } => Conflict, "replaces: {detail}";
    /// A revocation reason code ACME does not allow (RFC 8555 section 7.6).
    BadRevocationReason { code: i64 } => BadRequest, "revocation reason code {code} is not allowed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_documented_and_never_pending_or_internal() {
        let mut names: Vec<&str> = RefusalCode::ALL.iter().map(|c| c.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for c in RefusalCode::ALL {
            assert!(!c.when().is_empty(), "{c} needs a doc comment");
            assert!(!matches!(c.kind(), Kind::Pending | Kind::Internal), "{c}: pending and internal are not refusals");
        }
    }

    #[test]
    fn messages_carry_their_data() {
        let r = Refusal::OutsideRenewalWindow { serial: "0a".into(), opens: UnixTime(0) };
        assert_eq!(r.to_string(), "renewal of 0a opens at 1970-01-01T00:00:00Z");
        assert_eq!((r.code().as_str(), r.kind()), ("OutsideRenewalWindow", Kind::PolicyDenied));
        assert_eq!(Refusal::MissingToken.code(), RefusalCode::MissingToken);
    }
}
