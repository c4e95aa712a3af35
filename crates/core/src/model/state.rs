//! The life cycles of requests, certificates and devices, and the names they are stored under.
//! Only the store reads and writes these names; everything else matches on the enums.
use std::fmt;
use std::str::FromStr;

/// A stored name that is not one of an enum's values (a row written by a newer version, or by
/// hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

/// An enum stored by name: `as_str` for writing, `FromStr` for reading, the same table for both.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident as $what:literal { $($(#[$vm:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownValue { what: $what, value: other.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

stored_enum!(
    /// Where a request stands. `Received` (approved, about to be signed) and `Signing` (the
    /// certificate intent is recorded) are short-lived; `Pending` waits for an administrator.
    RequestStatus as "request status" {
        Received = "received",
        Pending = "pending",
        Signing = "signing",
        Issued = "issued",
        Denied = "denied",
    }
);

stored_enum!(
    /// A certificate: recorded before signing (`Signing`), then `Issued`; replaced by a renewal
    /// (`Renewed`) or `Revoked`.
    CertState as "certificate state" {
        Signing = "signing",
        Issued = "issued",
        Renewed = "renewed",
        Revoked = "revoked",
    }
);

impl CertState {
    /// Signed and not revoked: relying parties may still accept it (OCSP `good`).
    pub fn is_good(self) -> bool {
        matches!(self, CertState::Issued | CertState::Renewed)
    }
}

stored_enum!(
    /// Whether a device may enroll and renew.
    DeviceState as "device state" {
        Active = "active",
        Blocked = "blocked",
    }
);

stored_enum!(
    /// What a request asked for and how it was authenticated.
    RequestKind as "request kind" {
        /// A new certificate paid for with an account, a bootstrap token or a client certificate.
        Enroll = "enroll",
        /// A renewal signed with the current certificate (CMS).
        Renew = "renew",
        /// A renewal over TLS with the current certificate as client certificate (ROBO).
        RenewTls = "renew-tls",
        /// A SCEP request signed with the current certificate.
        RenewScep = "renew-scep",
        /// An ACME order finalized by the account that holds the certificate it replaces.
        RenewAcme = "renew-acme",
        /// A SCEP enrollment paid for with a challenge.
        Scep = "scep",
        /// The server's own TLS listener certificate.
        Listener = "listener",
    }
);

impl RequestKind {
    pub fn is_renewal(self) -> bool {
        matches!(self, RequestKind::Renew | RequestKind::RenewTls | RequestKind::RenewScep | RequestKind::RenewAcme)
    }
}

stored_enum!(
    /// How a decision in the audit log ended.
    AuditOutcome as "audit outcome" {
        Ok = "ok",
        Issued = "issued",
        Pending = "pending",
        Refused = "refused",
    }
);

stored_enum!(
    /// RFC 5280 CRLReason names an administrator may give.
    RevocationReason as "revocation reason" {
        Unspecified = "unspecified",
        KeyCompromise = "keyCompromise",
        CaCompromise = "caCompromise",
        AffiliationChanged = "affiliationChanged",
        Superseded = "superseded",
        CessationOfOperation = "cessationOfOperation",
        PrivilegeWithdrawn = "privilegeWithdrawn",
    }
);

impl RevocationReason {
    /// The reasonCode CRL entries and OCSP answers carry (`unspecified` is left out, as RFC 5280
    /// recommends).
    pub fn crl_reason(self) -> Option<x509_cert::ext::pkix::CrlReason> {
        use x509_cert::ext::pkix::CrlReason;
        Some(match self {
            RevocationReason::Unspecified => return None,
            RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
            RevocationReason::CaCompromise => CrlReason::CaCompromise,
            RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
            RevocationReason::Superseded => CrlReason::Superseded,
            RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        })
    }

    pub fn names() -> String {
        RevocationReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for s in RequestStatus::ALL {
            assert_eq!(s.as_str().parse::<RequestStatus>(), Ok(*s));
        }
        for s in CertState::ALL {
            assert_eq!(s.as_str().parse::<CertState>(), Ok(*s));
        }
        for s in RequestKind::ALL {
            assert_eq!(s.as_str().parse::<RequestKind>(), Ok(*s));
        }
        for s in RevocationReason::ALL {
            assert_eq!(s.as_str().parse::<RevocationReason>(), Ok(*s));
        }
        assert_eq!(
            "Issued".parse::<CertState>(),
            Err(UnknownValue { what: "certificate state", value: "Issued".into() }),
            "names are exact"
        );
        assert_eq!(RevocationReason::Unspecified.crl_reason(), None);
    }
}
