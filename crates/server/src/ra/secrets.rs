//! Password hashes and bootstrap-token secrets. Comparisons are constant-time; secrets are
//! stored only as hashes and never logged.
use aws_lc_rs::{digest, pbkdf2, rand};
use base64::Engine;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

const PBKDF2_ITERATIONS: u32 = 100_000;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

// The system RNG failing is not recoverable, and an all-zero secret would be worse than a crash:
// these two are the only places the workspace allows `expect` outside tests.
#[allow(clippy::expect_used)]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b).expect("system random number generator failed");
    b
}

#[allow(clippy::expect_used)]
pub fn random_token_part(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b).expect("system random number generator failed");
    B64.encode(b)
}

/// `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = random_bytes();
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &mut out);
    format!("pbkdf2-sha256${}${}${}", PBKDF2_ITERATIONS, B64.encode(salt), B64.encode(out))
}

pub fn verify_password(stored: &str, password: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iterations, salt, hash] = parts.as_slice() else { return false };
    if *scheme != "pbkdf2-sha256" {
        return false;
    }
    let (Some(iterations), Ok(salt), Ok(hash)) =
        (iterations.parse::<u32>().ok().and_then(NonZeroU32::new), B64.decode(salt), B64.decode(hash))
    else {
        return false;
    };
    // pbkdf2::verify compares in constant time.
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &hash).is_ok()
}

/// Verifies a password against a dummy hash so unknown accounts cost the same time as known ones.
pub fn burn_password_time(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let h = DUMMY.get_or_init(|| hash_password("dummy"));
    let _ = verify_password(h, password);
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A bootstrap token is `aet_<id>.<secret>`: the id finds the row, the secret is compared by
/// hash in constant time.
pub struct NewToken {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub token: String,
}

pub fn new_token() -> NewToken {
    let id = random_token_part(9);
    let secret = random_token_part(24);
    NewToken { secret_hash: sha256(secret.as_bytes()), token: format!("aet_{id}.{secret}"), id }
}

pub fn split_token(token: &str) -> Option<(&str, &str)> {
    token.trim().strip_prefix("aet_")?.split_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret");
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3cret "));
        assert!(!verify_password("garbage", "s3cret"));
        assert_ne!(hash_password("s3cret"), h, "salted");
    }

    #[test]
    fn tokens() {
        let t = new_token();
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert!(ct_eq(&sha256(secret.as_bytes()), &t.secret_hash));
        assert!(split_token("nope").is_none());
    }
}
