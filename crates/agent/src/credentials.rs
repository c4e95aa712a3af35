//! Which credential a request carries: an account (it can enroll again and again), the device's
//! own client certificate, or a bootstrap token that has not been spent.
use crate::config::AgentConfig;
use crate::https::ClientIdentity;
use crate::localstore::{LocalStore, State};
use crate::AgentError;
use autoenroll_core::UnixTime;
use autoenroll_proto::ns;
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::xcep::ClientAuthentication;

pub enum Auth {
    Password(String, String),
    Certificate(ClientIdentity),
    Token(String),
}

impl Auth {
    pub fn header(&self) -> HeaderToken {
        match self {
            Auth::Password(u, p) => HeaderToken::UsernameToken { username: u.clone(), password: p.clone() },
            Auth::Token(t) => {
                HeaderToken::Binary { value_type: ns::VALUE_TYPE_BOOTSTRAP_TOKEN.into(), value: t.as_bytes().to_vec() }
            }
            Auth::Certificate(_) => HeaderToken::None,
        }
    }

    pub fn identity(&self) -> Option<&ClientIdentity> {
        match self {
            Auth::Certificate(id) => Some(id),
            _ => None,
        }
    }

    /// The endpoints (XCEP `clientAuthentication`) this credential fits.
    pub fn endpoint_auth(&self) -> Option<ClientAuthentication> {
        match self {
            Auth::Password(..) => Some(ClientAuthentication::UsernamePassword),
            Auth::Certificate(_) => Some(ClientAuthentication::Certificate),
            // Tokens travel in the message: any endpoint will do.
            Auth::Token(_) => None,
        }
    }
}

/// SHA-256 of a token, as the state file remembers spent ones (never the token itself).
pub fn token_hash(token: &str) -> String {
    autoenroll_keys::sha256_hex(token.as_bytes())
}

/// The configured bootstrap token, unless it was spent already.
pub fn unspent_token(cfg: &AgentConfig, state: &State) -> Result<Option<String>, AgentError> {
    Ok(cfg.bootstrap_token()?.filter(|t| !state.spent_tokens.contains(&token_hash(t))))
}

/// Accounts first, then our own client certificate, then an unspent bootstrap token.
pub fn select(cfg: &AgentConfig, store: &LocalStore, state: &State, now: UnixTime) -> Result<Option<Auth>, AgentError> {
    if let Some((u, p)) = cfg.password()? {
        return Ok(Some(Auth::Password(u, p)));
    }
    if let Some(id) = store.client_identity(now)? {
        return Ok(Some(Auth::Certificate(id)));
    }
    Ok(unspent_token(cfg, state)?.map(Auth::Token))
}

/// What collects a pending request: whoever made it. An account, else our client certificate
/// (the server accepts any certificate of the same device), else the configured bootstrap token
/// even when spent (the server accepts a spent token for the request it paid for).
pub fn for_retrieval(cfg: &AgentConfig, store: &LocalStore, now: UnixTime) -> Result<Option<Auth>, AgentError> {
    if let Some((u, p)) = cfg.password()? {
        return Ok(Some(Auth::Password(u, p)));
    }
    if let Some(id) = store.client_identity(now)? {
        return Ok(Some(Auth::Certificate(id)));
    }
    Ok(cfg.bootstrap_token()?.map(Auth::Token))
}

/// What pays for a new certificate that replaces a held one which cannot prove itself (EST,
/// no clientAuth): an account, else a client certificate of this device. Never a bootstrap
/// token: it pays for a first enrollment only.
pub fn for_reenrollment(cfg: &AgentConfig, store: &LocalStore, now: UnixTime) -> Result<Option<Auth>, AgentError> {
    if let Some((u, p)) = cfg.password()? {
        return Ok(Some(Auth::Password(u, p)));
    }
    Ok(store.client_identity(now)?.map(Auth::Certificate))
}
