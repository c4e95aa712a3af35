//! The trust model's pure rules: who may enroll a template (its grants, like the Enroll right on
//! an ADCS template's ACL), which names a request may carry (like ADCS subject-name settings, with
//! an allow-list), and which keys a template accepts. The RA gathers the facts and asks these.
use super::state::UnknownValue;
use crate::Refusal;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One entry of a template's enrollment permissions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `account:*`: every enrollment account.
    AnyAccount,
    /// `account:NAME`.
    Account(String),
    /// `account-group:NAME`: accounts in that group.
    AccountGroup(String),
    /// `device:PATTERN`: devices (authenticated as themselves: certificate or bootstrap token)
    /// whose name matches the glob (`*` any run, `?` one character).
    Device(String),
    /// `device-group:NAME`: devices an administrator put in that group.
    DeviceGroup(String),
    /// `token`: bootstrap tokens made without a template (a token made for this template may
    /// always enroll it: an administrator said so when making it).
    Token,
    /// `holder:TEMPLATE`: a device authenticated (TLS) by a current certificate of that template.
    Holder(String),
}

impl FromStr for Grant {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        let bad = || UnknownValue {
            what: "grant (account:*, account:NAME, account-group:NAME, device:PATTERN, device-group:NAME, token, \
                   holder:TEMPLATE)",
            value: s.to_string(),
        };
        let s = s.trim();
        if s == "token" {
            return Ok(Grant::Token);
        }
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let name = |v: &str| super::valid_name(v).map(|_| v.to_string()).map_err(|_| bad());
        Ok(match (kind, value) {
            ("account", "*") => Grant::AnyAccount,
            ("account", v) => Grant::Account(super::valid_account_name(v).map(|_| v.to_string()).map_err(|_| bad())?),
            ("account-group", v) => Grant::AccountGroup(name(v)?),
            ("device", v) if valid_pattern(v) => Grant::Device(v.to_string()),
            ("device-group", v) => Grant::DeviceGroup(name(v)?),
            ("holder", v) => Grant::Holder(name(v)?),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Grant::AnyAccount => "account:*".to_string(),
            Grant::Account(n) => format!("account:{n}"),
            Grant::AccountGroup(n) => format!("account-group:{n}"),
            Grant::Device(p) => format!("device:{p}"),
            Grant::DeviceGroup(n) => format!("device-group:{n}"),
            Grant::Token => "token".to_string(),
            Grant::Holder(t) => format!("holder:{t}"),
        };
        f.pad(&text)
    }
}

/// A device-name pattern: name characters plus `*` and `?`.
pub fn valid_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?'))
}

/// Glob match (`*` any run, `?` one character), ASCII case-insensitive like DNS names.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) =
        (pattern.to_ascii_lowercase().chars().collect(), name.to_ascii_lowercase().chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Who asks, as far as template permissions care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester<'a> {
    Account {
        name: &'a str,
        groups: &'a [String],
    },
    /// A bootstrap token, made for this template (or for none).
    Token {
        template: Option<&'a str>,
    },
    /// A device authenticated by a current certificate of `template`.
    Holder {
        template: &'a str,
    },
}

/// Whether `grants` let `requester`, acting for `device` (in `device_groups`), enroll
/// `template`.
pub fn permitted(
    template: &str,
    grants: &[Grant],
    requester: &Requester<'_>,
    device: &str,
    device_groups: &[String],
) -> bool {
    if let Requester::Token { template: Some(t) } = requester {
        // Made for one template: that one only.
        return *t == template;
    }
    let is_device = !matches!(requester, Requester::Account { .. });
    grants.iter().any(|g| match (g, requester) {
        (Grant::AnyAccount, Requester::Account { .. }) => true,
        (Grant::Account(n), Requester::Account { name, .. }) => n == name,
        (Grant::AccountGroup(g), Requester::Account { groups, .. }) => groups.contains(g),
        (Grant::Token, Requester::Token { template: None }) => true,
        (Grant::Holder(t), Requester::Holder { template }) => t == template,
        (Grant::Device(p), _) => is_device && glob_match(p, device),
        (Grant::DeviceGroup(g), _) => is_device && device_groups.contains(g),
        _ => false,
    })
}

/// Which names a request may put in a certificate (names from the device's identity are the
/// device's own and always allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePolicy {
    /// DNS names (SANs, and a host-name CN) other than the device's own must be one of these or
    /// under one (`web.example.test` is under `example.test`).
    pub dns_suffixes: Vec<String>,
    /// IP addresses in the request must be in one of these.
    pub ip_ranges: Vec<IpNet>,
    /// `*.example.test` (leftmost label only, and under an allowed suffix).
    pub allow_wildcards: bool,
    /// The server's own names and addresses (and loopback) may be issued.
    pub allow_server_names: bool,
    /// A renewal may drop names of the certificate it renews (never add any).
    pub renewal_subset: bool,
}

/// Names that belong to the server itself: its host names and addresses, and loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// RFC 5280 ub-common-name.
pub const MAX_COMMON_NAME: usize = 64;

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Looks like a host name (letters, digits, `-`, `.`, a leading `*.`): only such a CN is a name a
/// TLS client could match.
fn host_like(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'))
}

fn is_loopback_name(n: &str) -> bool {
    n == "localhost" || n.ends_with(".localhost") || n == "localhost.localdomain"
}

fn under(name: &str, suffix: &str) -> bool {
    let s = normalize(suffix);
    name == s || name.ends_with(&format!(".{s}"))
}

impl NamePolicy {
    /// Checks the names a request asks for, in order: length, wildcard rules, the server's own
    /// names, then the allow-lists — or `own_name`, the device name the requester is known to
    /// hold (an administrator named it: token, challenge, an account's explicit device pattern).
    pub fn check(
        &self,
        template: &str,
        own_name: Option<&str>,
        common_name: Option<&str>,
        dns_names: &[String],
        ips: &[IpAddr],
        server: &ServerNames,
    ) -> Result<(), Refusal> {
        if let Some(cn) = common_name {
            if cn.chars().count() > MAX_COMMON_NAME {
                return Err(Refusal::CommonNameTooLong { length: cn.chars().count() });
            }
        }
        let cn_host = common_name.filter(|cn| host_like(cn));
        for raw in cn_host.into_iter().chain(dns_names.iter().map(String::as_str)) {
            self.check_dns(template, own_name, raw, server)?;
        }
        for ip in ips {
            self.check_ip_reserved(ip, server)?;
            // Allowing the server's names lifts the reservation only: addresses still need a range.
            if !self.ip_ranges.iter().any(|r| r.contains(&ip.to_canonical())) {
                return Err(Refusal::NameNotAllowed { name: ip.to_string(), template: template.to_string() });
            }
        }
        Ok(())
    }

    /// What a renewal re-checks of the names it keeps (they were approved once, perhaps under
    /// older rules): never the server's own names or loopback, never a wildcard the template
    /// does not allow. The allow-lists are not applied again.
    pub fn check_kept(
        &self,
        template: &str,
        common_name: Option<&str>,
        dns_names: &[String],
        ips: &[IpAddr],
        server: &ServerNames,
    ) -> Result<(), Refusal> {
        let cn_host = common_name.filter(|cn| host_like(cn));
        for raw in cn_host.into_iter().chain(dns_names.iter().map(String::as_str)) {
            self.check_dns_reserved(template, raw, server)?;
        }
        for ip in ips {
            self.check_ip_reserved(ip, server)?;
        }
        Ok(())
    }

    fn check_ip_reserved(&self, ip: &IpAddr, server: &ServerNames) -> Result<(), Refusal> {
        // `::ffff:127.0.0.1` is loopback too.
        let canonical = ip.to_canonical();
        let reserved = canonical.is_loopback()
            || canonical.is_unspecified()
            || server.ips.iter().any(|s| s.to_canonical() == canonical);
        if reserved && !self.allow_server_names {
            return Err(Refusal::ServerNameReserved { name: ip.to_string() });
        }
        Ok(())
    }

    /// The name's wildcard form and the server-name reservation; returns (wildcard, base).
    fn check_dns_reserved(&self, template: &str, raw: &str, server: &ServerNames) -> Result<(bool, String), Refusal> {
        let name = normalize(raw);
        if name.len() > 253 || name.is_empty() {
            return Err(Refusal::NameNotAllowed { name: raw.to_string(), template: template.to_string() });
        }
        let (wildcard, base) = match name.strip_prefix("*.") {
            Some(base) => (true, base.to_string()),
            None => (false, name.clone()),
        };
        if base.contains('*') {
            return Err(Refusal::WildcardNotAllowed { name: raw.to_string(), template: template.to_string() });
        }
        // The server's own names first (the gravest): a wildcard covers them one label below
        // its base.
        let covers =
            |n: &str| if wildcard { n.split_once('.').is_some_and(|(_, rest)| rest == base) } else { n == name };
        let server_name = is_loopback_name(&base)
            || server.dns.iter().map(|n| normalize(n)).any(|n| covers(&n) || (!wildcard && n == base));
        if server_name && !self.allow_server_names {
            return Err(Refusal::ServerNameReserved { name: raw.to_string() });
        }
        if wildcard && !self.allow_wildcards {
            return Err(Refusal::WildcardNotAllowed { name: raw.to_string(), template: template.to_string() });
        }
        Ok((wildcard, base))
    }

    fn check_dns(
        &self,
        template: &str,
        own_name: Option<&str>,
        raw: &str,
        server: &ServerNames,
    ) -> Result<(), Refusal> {
        let (wildcard, base) = self.check_dns_reserved(template, raw, server)?;
        let name = normalize(raw);
        if !wildcard && own_name.is_some_and(|own| name == normalize(own)) {
            return Ok(());
        }
        if self.dns_suffixes.iter().any(|s| under(&base, s)) {
            return Ok(());
        }
        Err(Refusal::NameNotAllowed { name: raw.to_string(), template: template.to_string() })
    }
}

/// The kinds of key a template accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyFamily {
    Ec,
    Rsa,
}

impl FromStr for KeyFamily {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ec" | "ecdsa" | "ecc" => Ok(KeyFamily::Ec),
            "rsa" => Ok(KeyFamily::Rsa),
            _ => Err(UnknownValue { what: "key type (ec or rsa)", value: s.to_string() }),
        }
    }
}

impl fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            KeyFamily::Ec => "ec",
            KeyFamily::Rsa => "rsa",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("web*.example.test", "web01.example.test"));
        assert!(glob_match("WEB??", "web01"));
        assert!(!glob_match("web*", "mail01"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("a*b", "ab-c"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    #[test]
    fn grants_parse_and_decide() {
        let grants: Vec<Grant> = ["account:*", "holder:Machine", "device-group:kiosks", "device:web*"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(grants[1].to_string(), "holder:Machine");
        assert!("account:a,b".parse::<Grant>().is_err());
        assert!("nobody".parse::<Grant>().is_err());
        let acct = Requester::Account { name: "ops", groups: &[] };
        assert!(permitted("T", &grants, &acct, "anything", &[]));
        assert!(permitted("T", &grants, &Requester::Holder { template: "Machine" }, "pc1", &[]));
        assert!(!permitted("T", &grants, &Requester::Holder { template: "Other" }, "pc1", &[]));
        assert!(permitted("T", &grants, &Requester::Holder { template: "Other" }, "web7", &[]), "device pattern");
        assert!(permitted("T", &grants, &Requester::Holder { template: "Other" }, "pc1", &["kiosks".into()]));
        // Tokens: made for the template, or for none where the template grants `token`.
        assert!(permitted("T", &[], &Requester::Token { template: Some("T") }, "d", &[]));
        assert!(!permitted("T", &grants, &Requester::Token { template: Some("U") }, "d", &[]));
        assert!(!permitted("T", &grants, &Requester::Token { template: None }, "d", &[]));
        assert!(permitted("T", &[Grant::Token], &Requester::Token { template: None }, "d", &[]));
        // Device grants never extend to accounts (they name their device, they are not it).
        assert!(!permitted("T", &[Grant::Device("*".into())], &acct, "web1", &[]));
    }

    fn policy() -> NamePolicy {
        NamePolicy {
            dns_suffixes: vec!["example.test".into()],
            ip_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        }
    }

    fn server() -> ServerNames {
        ServerNames { dns: vec!["ca.example.test".into()], ips: vec!["192.0.2.10".parse().unwrap()] }
    }

    fn check(p: &NamePolicy, cn: &str, dns: &[&str], ips: &[&str]) -> Result<(), String> {
        let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        p.check("WebServer", Some("web01.corp"), Some(cn), &dns, &ips, &server()).map_err(|r| r.code().to_string())
    }

    #[test]
    fn names_follow_the_policy() {
        let p = policy();
        assert_eq!(check(&p, "web01.corp", &["web01.corp"], &[]), Ok(()), "the device's own name");
        assert_eq!(check(&p, "www.example.test", &["www.example.test", "example.test"], &["10.1.2.3"]), Ok(()));
        assert_eq!(check(&p, "My Web Server", &[], &[]), Ok(()), "a CN that is no host name is not a name");
        for (cn, dns, ip, code) in [
            ("www.bank.example", &[][..], &[][..], "NameNotAllowed"),
            ("web01.corp", &["login.bank.example"][..], &[][..], "NameNotAllowed"),
            ("web01.corp", &["notexample.test"][..], &[][..], "NameNotAllowed"),
            ("web01.corp", &["*.web.example.test"][..], &[][..], "WildcardNotAllowed"),
            ("web01.corp", &["*.example.test"][..], &[][..], "ServerNameReserved"),
            ("web01.corp", &["www.*.example.test"][..], &[][..], "WildcardNotAllowed"),
            ("localhost", &[][..], &[][..], "ServerNameReserved"),
            ("web01.corp", &["ca.example.test"][..], &[][..], "ServerNameReserved"),
            ("web01.corp", &["CA.Example.Test."][..], &[][..], "ServerNameReserved"),
            ("web01.corp", &[][..], &["127.0.0.1"][..], "ServerNameReserved"),
            ("web01.corp", &[][..], &["::1"][..], "ServerNameReserved"),
            ("web01.corp", &[][..], &["192.0.2.10"][..], "ServerNameReserved"),
            ("web01.corp", &[][..], &["192.0.2.11"][..], "NameNotAllowed"),
        ] {
            assert_eq!(check(&p, cn, dns, ip), Err(code.to_string()), "{cn} {dns:?} {ip:?}");
        }
        let long = "a".repeat(65);
        assert_eq!(check(&p, &long, &[], &[]), Err("CommonNameTooLong".into()));
        // Wildcards when allowed, but never one covering the server's names.
        let w = NamePolicy { allow_wildcards: true, ..policy() };
        assert_eq!(check(&w, "web01.corp", &["*.web.example.test"], &[]), Ok(()));
        assert_eq!(check(&w, "web01.corp", &["*.example.test"], &[]), Err("ServerNameReserved".into()));
        // The server's names only where configured.
        let s = NamePolicy {
            allow_server_names: true,
            dns_suffixes: vec!["example.test".into()],
            ip_ranges: vec!["192.0.2.0/24".parse().unwrap()],
            ..policy()
        };
        assert_eq!(check(&s, "web01.corp", &["ca.example.test"], &["192.0.2.10"]), Ok(()));
        // ...and still only under the allow-lists (the reservation is all it lifts).
        assert_eq!(check(&s, "web01.corp", &[], &["127.0.0.1"]), Err("NameNotAllowed".into()));
        // IPv4-mapped loopback is loopback.
        assert_eq!(check(&p, "web01.corp", &[], &["::ffff:127.0.0.1"]), Err("ServerNameReserved".into()));
        // Nobody vouches for the device's name: it is a name like any other.
        let dns = vec!["web01.corp".to_string()];
        let unvouched = p.check("WebServer", None, Some("web01.corp"), &dns, &[], &server());
        assert_eq!(unvouched.map_err(|r| r.code().to_string()), Err("NameNotAllowed".into()));
    }
}
