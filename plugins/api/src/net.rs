//! The SSRF guard shared by every plugin that opens connections (webhook,
//! email, crm, and third-party ones). Channel settings come from a file
//! many people edit, so a URL or a mail host must not reach the daemon's own
//! machine, its private network or the cloud metadata service, however the
//! address is spelt (IPv4 in decimal, octal or hex; IPv4 embedded in IPv6
//! by mapping, compatibility, 6to4, NAT64 or Teredo) and whatever a name
//! resolves to. Plugins check the addresses they are about to connect to,
//! after resolution, at every connection: a name that later resolves
//! elsewhere (DNS rebinding) is refused then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address range, written `10.0.0.0/8` or `::1/128` (or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> (u32, u8) {
    (u32::from_be_bytes([a, b, c, d]), prefix)
}

/// IPv4 ranges no channel may reach by default, most specific first.
const FORBIDDEN_V4: [((u32, u8), &str); 16] = [
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local (cloud metadata)"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved (240.0.0.0/4, broadcast)"),
    (
        v4(255, 255, 255, 255, 32),
        "reserved (240.0.0.0/4, broadcast)",
    ),
];

/// IPv6 ranges no channel may reach by default, most specific first.
/// Every form that embeds an IPv4 address is refused whatever it embeds:
/// the IPv4 side of a translator is exactly what the guard cannot see.
const FORBIDDEN_V6: [(u128, u8, &str); 16] = [
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0xffff_0000_0000, 96, "IPv4-mapped (::ffff:0:0/96)"),
    (
        0xffff_0000_0000_0000,
        96,
        "IPv4-translated (::ffff:0:0:0/96)",
    ),
    (0, 96, "IPv4-compatible (::/96)"),
    (0x0064_ff9b << 96, 96, "NAT64 (64:ff9b::/96)"),
    (0x0064_ff9b_0001 << 80, 48, "NAT64 (64:ff9b:1::/48)"),
    (0x0100 << 112, 64, "discard-only (100::/64)"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x2001_0000 << 96, 32, "Teredo (2001::/32)"),
    (0x2002 << 112, 16, "6to4 (2002::/16)"),
    (0xfc00 << 112, 7, "private (unique local)"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local (fec0::/10, deprecated)"),
    (0xff00 << 112, 8, "multicast"),
    (0x5f00 << 112, 8, "segment routing (5f00::/8)"),
];

/// Why `ip` may not be reached by default, if it may not.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => forbidden_v4(a),
        IpAddr::V6(a) => forbidden_v6(a),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let a = u32::from(ip);
    FORBIDDEN_V4.iter().find_map(|((net, prefix), why)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
        (a & mask == *net).then_some(*why)
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let a = u128::from(ip);
    FORBIDDEN_V6.iter().find_map(|(net, prefix, why)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
        (a & mask == *net).then_some(*why)
    })
}

/// An IP literal as a host name may spell it, or `None` for a name: IPv6
/// (with or without brackets), dotted IPv4, and the older spellings the
/// system resolver also accepts (`2130706433`, `0x7f.1`, `017700000001`,
/// `127.1`), so that they are refused without a DNS lookup.
pub fn literal(host: &str) -> Option<IpAddr> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    inet_aton(h.strip_suffix('.').unwrap_or(h)).map(IpAddr::V4)
}

/// `inet_aton`: one to four parts, each decimal, `0x` hex or `0` octal;
/// the last part fills the remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let v = u64::from_str_radix(digits, radix).ok()?;
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut a: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        a |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from((a | last) as u32))
}

/// The guard with its explicit exceptions.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    pub allow: Vec<Network>,
}

/// A connection the guard refused.
#[derive(Debug, thiserror::Error)]
#[error("refused by the SSRF guard: {ip} is {why} (allow it explicitly with `allow_networks`)")]
pub struct Refused {
    pub ip: IpAddr,
    pub why: &'static str,
}

/// Resolving a host for a checked connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    Empty { host: String },
}

/// Addresses that stand for the ranges the guard refuses, to tell an
/// allow list that opens several of them at once.
const SAMPLES: [&str; 21] = [
    "0.0.0.1",
    "10.0.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "192.168.0.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "2001::7f00:1",
    "2002:7f00:1::1",
    "fd00::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
];

impl Guard {
    /// Parses an `allow_networks` list; the error names the bad entry.
    pub fn from_allow<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        let allow = list
            .iter()
            .map(|n| n.as_ref().parse::<Network>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`allow_networks`: {e}"))?;
        Ok(Self { allow })
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        match forbidden(ip) {
            Some(why) if !self.allow.iter().any(|n| n.contains(ip)) => Err(Refused { ip, why }),
            _ => Ok(()),
        }
    }

    /// Checks a host as written in the settings when it is an IP literal
    /// (in any spelling); names are checked once resolved.
    pub fn check_host(&self, host: &str) -> Result<(), Refused> {
        literal(host).map_or(Ok(()), |ip| self.check(ip))
    }

    /// Every address of a resolved name must pass: one forbidden address
    /// refuses the name (no DNS-rebinding lottery).
    pub fn check_all(&self, addrs: &[SocketAddr]) -> Result<(), Refused> {
        addrs.iter().try_for_each(|a| self.check(a.ip()))
    }

    /// Warnings for allow entries that open several refused ranges at once
    /// (`0.0.0.0/0`, `::/0`, `::/8` …): almost always a mistake.
    pub fn broad_warnings(&self) -> Vec<String> {
        self.allow
            .iter()
            .filter_map(|n| {
                let mut opened: Vec<&str> = SAMPLES
                    .iter()
                    .filter_map(|s| s.parse::<IpAddr>().ok())
                    .filter(|ip| n.contains(*ip))
                    .filter_map(forbidden)
                    .collect();
                opened.dedup();
                (opened.len() >= 2).then(|| {
                    format!(
                        "`allow_networks` entry `{n}` lets the SSRF guard through to several internal ranges at once ({}); list only the networks this channel needs, e.g. [\"10.2.0.0/16\"]",
                        opened.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Resolves `host` (or takes its literal) and checks every address.
    #[cfg(feature = "tokio")]
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = literal(host) {
            self.check(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Empty {
                host: host.to_owned(),
            });
        }
        self.check_all(&addrs)?;
        Ok(addrs)
    }
}

/// A reqwest resolver that checks every address a name resolves to, at
/// every connection.
#[cfg(feature = "reqwest")]
#[derive(Debug)]
pub struct GuardedResolver(pub std::sync::Arc<Guard>);

#[cfg(feature = "reqwest")]
impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The guard's refusal somewhere in an error's chain (reqwest wraps it).
pub fn refusal_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r);
        }
        if let Some(ResolveError::Refused(r)) = s.downcast_ref::<ResolveError>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every spelling a plugin may meet, with the reason it is refused.
    /// The same table holds for webhook URLs, SMTP hosts and CRM URLs.
    pub const REFUSED: &[(&str, &str)] = &[
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f.1", "loopback"),
        ("0x7f000001", "loopback"),
        ("017700000001", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("127.1", "loopback"),
        ("127.0.0.1.", "loopback"),
        ("10.1.2.3", "private"),
        ("012.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("3232235777", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("0xa9.0xfe.0xa9.0xfe", "link-local (cloud metadata)"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("100.127.255.255", "shared address space (CGNAT)"),
        ("0.0.0.0", "unspecified (\"this network\")"),
        ("0.1.2.3", "unspecified (\"this network\")"),
        ("0", "unspecified (\"this network\")"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.254", "benchmarking"),
        ("240.0.0.1", "reserved (240.0.0.0/4, broadcast)"),
        ("255.255.255.255", "reserved (240.0.0.0/4, broadcast)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("192.0.0.170", "IETF protocol assignments"),
        ("192.0.2.1", "documentation"),
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "IPv4-mapped (::ffff:0:0/96)"),
        ("::ffff:169.254.169.254", "IPv4-mapped (::ffff:0:0/96)"),
        ("::ffff:8.8.8.8", "IPv4-mapped (::ffff:0:0/96)"),
        ("::127.0.0.1", "IPv4-compatible (::/96)"),
        ("::a9fe:a9fe", "IPv4-compatible (::/96)"),
        ("::ffff:0:7f00:1", "IPv4-translated (::ffff:0:0:0/96)"),
        ("64:ff9b::127.0.0.1", "NAT64 (64:ff9b::/96)"),
        ("64:ff9b::a9fe:a9fe", "NAT64 (64:ff9b::/96)"),
        ("64:ff9b:1::1", "NAT64 (64:ff9b:1::/48)"),
        ("2001::1", "Teredo (2001::/32)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (2001::/32)"),
        ("2002:7f00:1::1", "6to4 (2002::/16)"),
        ("2002:a9fe:a9fe::", "6to4 (2002::/16)"),
        ("fd00::1", "private (unique local)"),
        ("fc00::1", "private (unique local)"),
        ("fd00:ec2::254", "private (unique local)"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local (fec0::/10, deprecated)"),
        ("feff::1", "site-local (fec0::/10, deprecated)"),
        ("ff02::1", "multicast"),
        ("100::1", "discard-only (100::/64)"),
        ("2001:db8::1", "documentation"),
    ];

    /// Public addresses, in several spellings: reachable.
    pub const ALLOWED: &[&str] = &[
        "93.184.216.34",
        "100.128.0.1",
        "100.63.255.255",
        "198.20.0.1",
        "198.17.255.255",
        "223.255.255.255",
        "8.8.8.8",
        "134744072",
        "0x08.0x08.0x08.0x08",
        "2606:2800:220:1::1",
        "2a00:1450:4007:80f::200e",
        "[2001:4860:4860::8888]",
    ];

    #[test]
    fn every_spelling_of_an_internal_address_is_refused_with_its_reason() {
        let g = Guard::default();
        for (spelling, why) in REFUSED {
            let ip = literal(spelling).unwrap_or_else(|| panic!("{spelling} is a literal"));
            assert_eq!(forbidden(ip), Some(*why), "{spelling} ({ip})");
            let e = g.check_host(spelling).unwrap_err();
            assert!(e.to_string().contains(why), "{spelling}: {e}");
        }
        for spelling in ALLOWED {
            assert!(literal(spelling).is_some(), "{spelling} is a literal");
            assert!(g.check_host(spelling).is_ok(), "{spelling}");
        }
    }

    #[test]
    fn old_ipv4_spellings_read_like_the_system_resolver_reads_them() {
        for (s, ip) in [
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("10.1.258", "10.1.1.2"),
            ("0xA9FEA9FE", "169.254.169.254"),
        ] {
            assert_eq!(literal(s), Some(ip.parse().unwrap()), "{s}");
        }
        for name in [
            "example.com",
            "smtp.example.com",
            "1.2.3.4.5",
            "256.1.1.1",
            "08.1.1.1",
            "0x",
            "4294967296",
            "1.2.3.256",
            "",
            "localhost",
        ] {
            assert_eq!(literal(name), None, "{name}");
        }
    }

    #[test]
    fn explicit_networks_are_allowed_and_broad_ones_are_warned_about() {
        let g = Guard::from_allow(&["127.0.0.0/8", "::1"]).unwrap();
        assert!(g.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check_host("2130706433").is_ok());
        assert!(g.check("::1".parse().unwrap()).is_ok());
        // An allowed IPv4 range does not open its IPv6 embeddings.
        assert!(g.check_host("::ffff:127.0.0.1").is_err());
        let e = g.check("10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("10.0.0.1 is private"), "{e}");
        assert!(g.broad_warnings().is_empty());
        assert!(Guard::from_allow(&["10.0.0.0/33"]).is_err());
        assert!(Guard::from_allow(&["nope"]).is_err());
        for narrow in ["10.0.0.0/8", "fc00::/7", "172.16.0.0/12", "127.0.0.1"] {
            let g = Guard::from_allow(&[narrow]).unwrap();
            assert!(g.broad_warnings().is_empty(), "{narrow}");
        }
        for broad in ["0.0.0.0/0", "::/0", "::/8", "0.0.0.0/1", "fc00::/6"] {
            let g = Guard::from_allow(&[broad]).unwrap();
            let w = g.broad_warnings();
            assert_eq!(w.len(), 1, "{broad}: {w:?}");
            assert!(w[0].contains(broad), "{w:?}");
        }
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn names_are_checked_after_resolution() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let g = Guard::default();
        let e = rt.block_on(g.resolve("localhost", 25)).unwrap_err();
        assert!(matches!(e, ResolveError::Refused(_)), "{e}");
        let e = rt.block_on(g.resolve("0x7f.1", 25)).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let open = Guard::from_allow(&["127.0.0.0/8", "::1"]).unwrap();
        let addrs = rt.block_on(open.resolve("localhost", 25)).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 25));
    }
}
