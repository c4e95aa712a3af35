//! Password hashes (Argon2id; PBKDF2 ones of earlier versions still verify and are replaced at
//! the next login) and bootstrap-token secrets. Comparisons are constant-time; secrets are
//! stored only as hashes and never logged.
use aws_lc_rs::{digest, pbkdf2, rand};
use base64::Engine;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

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

/// Argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane): memory-hard, so guessing
/// on GPUs costs what it costs here. Stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$..`).
fn argon2id() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// A salted, slow hash of a password (or a static challenge) to store.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt: [u8; 16] = random_bytes();
    match SaltString::encode_b64(&salt).map_err(|e| e.to_string()).and_then(|salt| {
        argon2id().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    }) {
        Ok(h) => h,
        // Only a bad parameter set could fail, and that is fixed above: store something that
        // never verifies rather than panic.
        Err(e) => format!("invalid${e}"),
    }
}

/// Checks a password against a stored hash: Argon2id (current) or the PBKDF2 hashes of earlier
/// versions (`pbkdf2-sha256$<iterations>$<salt>$<hash>`). Comparisons are constant-time. This
/// is slow by design: call it off the async workers (`Ra::check_password`).
pub fn verify_password(stored: &str, password: &str) -> bool {
    if stored.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        return match PasswordHash::new(stored) {
            Ok(parsed) => argon2id().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        };
    }
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

/// Whether a stored hash should be replaced after a successful login (an older scheme or
/// weaker parameters than `hash_password` makes today).
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
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

/// Shared secrets this process has already checked against their slow hash (the SCEP static
/// challenges, which every device of a template presents): a keyed fast digest of the secret
/// per stored hash, so that a device presenting the same secret again costs a MAC, not 19 MiB
/// and two Argon2id passes (~20 ms of CPU, which capped SCEP at ~40 requests/s on two cores).
/// The key is random per process and never stored: the database keeps only the slow hash, as
/// before; a changed hash (a new challenge) misses; a wrong secret still pays the slow check.
pub struct VerifiedSecrets {
    key: aws_lc_rs::hmac::Key,
    known: std::sync::Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>,
}

impl Default for VerifiedSecrets {
    fn default() -> VerifiedSecrets {
        VerifiedSecrets {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &random_bytes::<32>()),
            known: Default::default(),
        }
    }
}

impl VerifiedSecrets {
    fn mac(&self, secret: &str) -> Vec<u8> {
        aws_lc_rs::hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec()
    }

    /// Whether `secret` was verified against `stored` (the slow hash now stored under `name`).
    pub fn known(&self, name: &str, stored: &str, secret: &str) -> bool {
        let mac = self.mac(secret);
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(name).is_some_and(|(hash, m)| hash == stored && ct_eq(m, &mac))
    }

    /// Remembers that `secret` matched `stored` (the hash stored under `name`).
    pub fn remember(&self, name: &str, stored: &str, secret: &str) {
        let mac = self.mac(secret);
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), (stored.to_string(), mac));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3cret "));
        assert!(!verify_password("garbage", "s3cret"));
        assert_ne!(hash_password("s3cret"), h, "salted");
        assert!(!needs_rehash(&h));
        // A PBKDF2 hash of an earlier version (100,000 iterations) still verifies, and is due
        // for a rehash.
        let legacy = legacy_pbkdf2("s3cret");
        assert!(verify_password(&legacy, "s3cret") && !verify_password(&legacy, "other"));
        assert!(needs_rehash(&legacy));
    }

    fn legacy_pbkdf2(password: &str) -> String {
        let salt = [7u8; 16];
        let mut out = [0u8; 32];
        let n = NonZeroU32::new(100_000).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, password.as_bytes(), &mut out);
        format!("pbkdf2-sha256$100000${}${}", B64.encode(salt), B64.encode(out))
    }

    #[test]
    fn tokens() {
        let t = new_token();
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert!(ct_eq(&sha256(secret.as_bytes()), &t.secret_hash));
        assert!(split_token("nope").is_none());
    }

    #[test]
    fn a_verified_secret_is_known_only_for_its_hash_and_value() {
        let v = VerifiedSecrets::default();
        assert!(!v.known("c/Machine", "$argon2id$a", "s3cret-challenge"), "nothing known at first");
        v.remember("c/Machine", "$argon2id$a", "s3cret-challenge");
        assert!(v.known("c/Machine", "$argon2id$a", "s3cret-challenge"));
        assert!(!v.known("c/Machine", "$argon2id$a", "s3cret-challengf"), "another secret");
        assert!(!v.known("c/Machine", "$argon2id$b", "s3cret-challenge"), "a new challenge was set");
        assert!(!v.known("c/Other", "$argon2id$a", "s3cret-challenge"), "another template");
        // Another process (another key) knows nothing.
        assert!(!VerifiedSecrets::default().known("c/Machine", "$argon2id$a", "s3cret-challenge"));
    }
}
