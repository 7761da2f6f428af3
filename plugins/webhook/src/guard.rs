//! The SSRF guard: a webhook URL comes from configuration that many people
//! edit, so it must not reach the daemon's own machine, its private network
//! or the cloud metadata service, whatever the URL says (IP literal) or its
//! name resolves to (checked at every connection, after resolution).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// An address range, written `10.0.0.0/8` or `::1/128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
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

/// Why `ip` may not be reached by default, if it may not.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space (CGNAT)")
    } else if o[0] == 0 || ip.is_broadcast() {
        Some("unspecified or broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.to_ipv4_mapped().is_some() {
        Some("IPv4-mapped")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified or broadcast")
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Some("link-local (cloud metadata)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        Some("NAT64 (embeds an IPv4 address)")
    } else {
        None
    }
}

/// The guard with its explicit exceptions.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    pub allow: Vec<Network>,
}

/// A connection the guard refused; found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("refused by the SSRF guard: {ip} is {why} (allow it explicitly with `allow_networks`)")]
pub struct Refused {
    pub ip: IpAddr,
    pub why: &'static str,
}

impl Guard {
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        match forbidden(ip) {
            Some(why) if !self.allow.iter().any(|n| n.contains(ip)) => Err(Refused { ip, why }),
            _ => Ok(()),
        }
    }
}

/// A resolver that drops nothing silently: if any address of a name is
/// forbidden the whole name is refused (no DNS-rebinding lottery).
#[derive(Debug)]
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                guard.check(a.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_internal_ranges_and_allows_public_ones() {
        for (a, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("0.0.0.0", "unspecified or broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified or broadcast"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:169.254.169.254", "IPv4-mapped"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local (cloud metadata)"),
            ("fd00:ec2::254", "private (unique local)"),
        ] {
            assert_eq!(forbidden(ip(a)), Some(why), "{a}");
        }
        for a in [
            "93.184.216.34",
            "100.128.0.1",
            "2606:2800:220:1::1",
            "8.8.8.8",
        ] {
            assert_eq!(forbidden(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn explicit_networks_are_allowed() {
        let g = Guard {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        };
        assert!(g.check(ip("127.0.0.1")).is_ok());
        assert!(g.check(ip("::1")).is_ok());
        let e = g.check(ip("10.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("10.0.0.1 is private"), "{e}");
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("nope".parse::<Network>().is_err());
        let n: Network = "0.0.0.0/0".parse().unwrap();
        assert!(n.contains(ip("10.0.0.1")) && !n.contains(ip("::1")));
    }
}
