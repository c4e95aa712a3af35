//! The domain, once: newtypes, templates with typed usages and key policy, and the states of
//! requests, certificates and devices. The store converts its rows to these at its boundary;
//! everything above it works with types, not strings. Times are whole seconds since the Unix
//! epoch: stored values are re-checked later, so sub-second precision would only make round trips
//! unstable.
use std::fmt;

mod state;
mod template;
mod trust;

pub use state::{AuditOutcome, CertState, DeviceState, RequestKind, RequestStatus, RevocationReason, UnknownValue};
pub use template::{
    valid_account_name, valid_name, Eku, KeyAlgorithm, KeyPolicy, KeyUsage, SubjectFrom, Template, TemplateError,
    EKU_NAMES, MIN_RSA_BITS,
};
pub use trust::{
    glob_match, permitted, valid_pattern, Grant, KeyFamily, NamePolicy, Requester, ServerNames, MAX_COMMON_NAME,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn plus_secs(self, secs: i64) -> UnixTime {
        UnixTime(self.0.saturating_add(secs))
    }
    pub fn minus_secs(self, secs: i64) -> UnixTime {
        UnixTime(self.0.saturating_sub(secs))
    }
}

impl fmt::Display for UnixTime {
    /// RFC 3339 in UTC, e.g. `2026-11-22T02:21:54Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil_from_unix(self.0);
        f.pad(&format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
    }
}

/// Days-from-civil inverse (Howard Hinnant's algorithm), valid for the whole i64 range we use.
fn civil_from_unix(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, (secs / 3600) as u32, ((secs % 3600) / 60) as u32, (secs % 60) as u32)
}

/// A certificate template as named in issued certificates (1.3.6.1.4.1.311.21.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateRef {
    pub oid: String,
    pub major: u32,
    pub minor: u32,
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// Certificate serial number, lower-case hex without leading zero bytes stripped.
    Serial
);
string_newtype!(
    /// Upper-case hex SHA-1 of the certificate DER (the form Windows uses).
    Thumbprint
);

impl Serial {
    pub fn from_bytes(bytes: &[u8]) -> Serial {
        Serial(hex::encode(bytes))
    }
}

impl Thumbprint {
    pub fn of_der(der: &[u8]) -> Thumbprint {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        Thumbprint(hex::encode_upper(d.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(UnixTime(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(UnixTime(1_795_314_114).to_string(), "2026-11-22T02:21:54Z");
        assert_eq!(UnixTime(951_782_400).to_string(), "2000-02-29T00:00:00Z");
    }
}
