//! What a webhook URL names, read as the HTTP client reads it (`http::Uri`, ureq's own
//! parser): its scheme, host, port and path; its origin, the only part of it that logs
//! and metric labels may show; and the address a numeric host stands for, in canonical
//! form (security.md, "Where a webhook may reach, for real").
//!
//! An address is compared in canonical form: an IPv4-mapped, IPv4-compatible or NAT64
//! IPv6 address is the IPv4 address it carries, and every numeric spelling the system
//! resolver accepts for IPv4 (`2852039166`, `0251.0376.0251.0376`, `0xa9fea9fe`,
//! `169.254.43518`) is the address it spells; an unspecified address is loopback, where
//! a connection to it goes. Pure functions over text and addresses:
//! nothing here resolves a name or opens a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Uri;

/// A webhook URL, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookUrl {
    /// `http` or `https`.
    pub scheme: &'static str,
    pub host: Host,
    /// The port connected to: written in the URL, or the scheme's.
    pub port: u16,
    /// Path and query, `/` when the URL has none.
    pub path: String,
}

/// A URL's host: an address (in canonical form) or a name to resolve.
#[derive(Debug, Clone, PartialEq)]
pub enum Host {
    Address(IpAddr),
    Name(String),
}

impl WebhookUrl {
    /// An absolute http(s) URL with a host; the error says what is wrong, without the URL.
    pub fn parse(url: &str) -> Result<WebhookUrl, &'static str> {
        let uri: Uri = url.parse().map_err(|_| "is not a valid URL")?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => ("http", 80),
            Some(s) if s.eq_ignore_ascii_case("https") => ("https", 443),
            _ => return Err("is not an http or https URL"),
        };
        let authority = uri.authority().ok_or("has no host")?;
        if authority.host().is_empty() {
            return Err("has no host");
        }
        Ok(WebhookUrl {
            scheme,
            host: Host::parse(authority.host()),
            port: authority.port_u16().unwrap_or(default_port),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    /// `allowed` (a URL of `actions.webhook_allow`) is a prefix of this URL: the same
    /// origin (scheme, host in canonical form, port), and a path that starts with its.
    /// Compared parsed, so that `https://hooks.slack.com@evil.io/` is not below
    /// `https://hooks.slack.com`.
    pub fn is_below(&self, allowed: &WebhookUrl) -> bool {
        let same_host = match (&self.host, &allowed.host) {
            (Host::Address(a), Host::Address(b)) => a == b,
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        self.scheme == allowed.scheme
            && same_host
            && self.port == allowed.port
            && self.path.starts_with(&allowed.path)
    }
}

impl Host {
    /// A host as the URL writes it: a bracketed IPv6 literal, a numeric IPv4 spelling,
    /// or a name.
    fn parse(host: &str) -> Host {
        let v6 = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        match v6.or_else(|| numeric_ipv4(host).map(IpAddr::V4)) {
            Some(address) => Host::Address(destination(address)),
            None => Host::Name(host.to_string()),
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it carries one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some
/// stacks) and NAT64's well-known prefix (`64:ff9b::a.b.c.d`, RFC 6052). Any other
/// address is its own canonical form.
pub fn canonical(address: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = address else {
        return address;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let segments = v6.segments();
    let carried = Ipv4Addr::from((u32::from(segments[6]) << 16) | u32::from(segments[7]));
    let compatible = segments[..6] == [0; 6] && !(v6.is_unspecified() || v6.is_loopback());
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        IpAddr::V4(carried)
    } else {
        address
    }
}

/// Where a connection to `address` goes: its canonical form, an unspecified address
/// (`0.0.0.0`, `::`) being loopback, where Linux connects it.
pub fn destination(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        canonical => canonical,
    }
}

/// A host spelled as the C library's `inet_aton` reads it, which the system resolver
/// (and so the HTTP client) accepts: one to four parts, each decimal, octal (a leading
/// `0`) or hexadecimal (`0x`), the last filling the bytes left.
fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts = host
        .split('.')
        .map(numeric_part)
        .collect::<Option<Vec<u32>>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|&part| part > 255) {
        return None;
    }
    let last_bits = 32 - 8 * leading.len() as u32;
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    let high = leading.iter().enumerate().fold(0u32, |value, (i, &part)| {
        value | part << (24 - 8 * i as u32)
    });
    Some(Ipv4Addr::from(high | last))
}

fn numeric_part(part: &str) -> Option<u32> {
    let (digits, radix) = match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        None => (part, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// `scheme://host[:port]` of a URL, without its credentials, path or query: how logs,
/// metric labels and status name a webhook (security.md, "Secrets stay secret
/// everywhere").
pub fn origin(url: &str) -> String {
    let Ok(uri) = url.parse::<Uri>() else {
        return "(an unreadable URL)".to_string();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return "(an unreadable URL)".to_string();
    };
    match authority.port() {
        Some(port) => format!("{scheme}://{}:{port}", authority.host()),
        None => format!("{scheme}://{}", authority.host()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn host(url: &str) -> Host {
        WebhookUrl::parse(url).unwrap().host
    }

    fn address(text: &str) -> Host {
        Host::Address(text.parse().unwrap())
    }

    /// Every other spelling of 169.254.169.254 (the cloud metadata service) in a URL:
    /// IPv4-mapped, -compatible and NAT64 IPv6, decimal, octal, hex and short IPv4.
    pub(crate) const METADATA_SPELLINGS: [&str; 11] = [
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://0xa9fea9fe/",
        "http://0XA9FEA9FE/",
        "http://169.254.43518/",
        "http://169.16689662/",
        "http://0xa9.0xfe.0xa9.0xfe/",
    ];

    #[test]
    fn every_spelling_of_the_metadata_address_is_that_address() {
        for url in METADATA_SPELLINGS
            .iter()
            .chain(&["http://169.254.169.254/"])
        {
            assert_eq!(host(url), address("169.254.169.254"), "{url}");
        }
    }

    #[test]
    fn an_unspecified_address_is_loopback_where_it_connects() {
        for url in ["http://0.0.0.0/", "http://0/", "http://[::ffff:0.0.0.0]/"] {
            assert_eq!(host(url), address("127.0.0.1"), "{url}");
        }
        assert_eq!(host("http://[::]/"), address("::1"));
    }

    #[test]
    fn ipv6_addresses_of_their_own_and_names_stay_what_they_are() {
        assert_eq!(host("http://[::1]:8080/"), address("::1"));
        assert_eq!(host("http://[fe80::1]/"), address("fe80::1"));
        assert_eq!(host("http://[2001:db8::1]/"), address("2001:db8::1"));
        for name in [
            "hooks.slack.com",
            "1.2.3.4.5",
            "08.1.1.1",
            "0x",
            "1.2.3.256x",
        ] {
            assert_eq!(
                host(&format!("http://{name}/")),
                Host::Name(name.into()),
                "{name}"
            );
        }
        assert!(
            matches!(host("http://1.2.3.256/"), Host::Name(_)),
            "a byte over 255"
        );
    }

    #[test]
    fn a_url_is_read_as_the_http_client_reads_it() {
        let url = WebhookUrl::parse("https://user:pw@Hooks.example:8443/a/b?c=d").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.host, Host::Name("Hooks.example".into()));
        assert_eq!((url.port, url.path.as_str()), (8443, "/a/b?c=d"));
        assert_eq!(WebhookUrl::parse("http://a.io").unwrap().port, 80);
        assert_eq!(WebhookUrl::parse("http://a.io").unwrap().path, "/");
        for bad in ["ftp://a.io/", "http:///x", "/relative", "http://a b/"] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_allowed_prefix_is_an_origin_and_a_path() {
        let allowed = WebhookUrl::parse("https://hooks.slack.com/services/").unwrap();
        let below = |url: &str| WebhookUrl::parse(url).unwrap().is_below(&allowed);
        assert!(below("https://hooks.slack.com/services/T0/B0"));
        assert!(below("https://HOOKS.slack.com:443/services/x"));
        assert!(!below("https://hooks.slack.com@evil.io/services/x"));
        assert!(!below("https://hooks.slack.com.evil.io/services/x"));
        assert!(!below("http://hooks.slack.com/services/x"));
        assert!(!below("https://hooks.slack.com/other"));
        let numeric = WebhookUrl::parse("http://127.0.0.1:9000/").unwrap();
        assert!(
            WebhookUrl::parse("http://2130706433:9000/x")
                .unwrap()
                .is_below(&numeric)
        );
    }

    #[test]
    fn an_origin_holds_no_credential_path_or_query() {
        assert_eq!(
            origin("https://user:SECRET@hooks.example:8443/T0/B0?token=x"),
            "https://hooks.example:8443"
        );
        assert_eq!(origin("http://[::1]/x"), "http://[::1]");
        assert_eq!(origin("not a url"), "(an unreadable URL)");
    }
}
