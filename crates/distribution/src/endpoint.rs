//! Which URL a registry is reached at: `docker.io` → Docker Hub's endpoint, HTTPS by default,
//! plain HTTP only for loopback and the configured insecure registries (as dockerd).

use std::net::IpAddr;

/// Docker Hub's name in references.
const HUB_DOMAIN: &str = "docker.io";
/// Docker Hub's registry endpoint.
const HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A registry endpoint: scheme and authority (`host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` as it goes into URLs and the `Host` header.
    pub authority: String,
}

impl Endpoint {
    /// The base URL: `https://registry-1.docker.io`.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// The insecure-registry list, parsed once: exact `host[:port]` names and CIDR ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct InsecureRegistries {
    names: Vec<String>,
    cidrs: Vec<(IpAddr, u8)>,
}

impl InsecureRegistries {
    /// Parses dockerd's `--insecure-registry` values; an entry with a `/` is a CIDR.
    pub fn parse(entries: &[String]) -> Result<InsecureRegistries, String> {
        let mut out = InsecureRegistries::default();
        for entry in entries {
            let entry = entry.trim();
            // dockerd accepts (and strips) a scheme here.
            let entry = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .unwrap_or(entry)
                .trim_end_matches('/');
            if entry.is_empty() {
                continue;
            }
            match entry.split_once('/') {
                Some((ip, bits)) => {
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| format!("insecure registry {entry:?}: invalid CIDR"))?;
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits: u8 = bits
                        .parse()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("insecure registry {entry:?}: invalid CIDR"))?;
                    out.cidrs.push((ip, bits));
                }
                None => out.names.push(entry.to_ascii_lowercase()),
            }
        }
        Ok(out)
    }

    /// The endpoint for a reference's domain.
    pub fn endpoint(&self, domain: &str) -> Endpoint {
        if domain == HUB_DOMAIN {
            return Endpoint {
                scheme: "https",
                authority: HUB_ENDPOINT.to_owned(),
            };
        }
        Endpoint {
            scheme: if self.is_insecure(domain) {
                "http"
            } else {
                "https"
            },
            authority: domain.to_owned(),
        }
    }

    /// True when `authority` (`host[:port]`) may be spoken to over plain HTTP: loopback
    /// (`127.0.0.0/8`, `::1`, `localhost`), a listed name, or an address in a listed CIDR.
    pub fn is_insecure(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = host_of(&authority);
        if host == "localhost" {
            return true;
        }
        if self.names.iter().any(|n| *n == authority || *n == host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                ip.is_loopback() || ip.to_canonical().is_loopback() || {
                    self.cidrs
                        .iter()
                        .any(|(net, bits)| in_cidr(ip, *net, *bits))
                }
            }
            Err(_) => false,
        }
    }
}

/// The host of `host[:port]` or `[v6][:port]`, without brackets.
pub(crate) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => authority,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> InsecureRegistries {
        InsecureRegistries::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn loopback_is_plain_http_and_everything_else_https() {
        let none = list(&[]);
        for insecure in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert_eq!(none.endpoint(insecure).scheme, "http", "{insecure}");
        }
        for secure in [
            "ghcr.io",
            "10.0.0.1:5000",
            "128.0.0.1",
            "localhost.evil.com",
            "[::2]:5000",
        ] {
            assert_eq!(none.endpoint(secure).scheme, "https", "{secure}");
        }
    }

    #[test]
    fn docker_io_goes_to_the_hub_endpoint_over_https() {
        let e = list(&["docker.io"]).endpoint("docker.io");
        assert_eq!(e.base(), "https://registry-1.docker.io");
    }

    #[test]
    fn listed_names_and_cidrs_are_insecure() {
        let l = list(&[
            "reg.lan:5000",
            "http://plain.lan",
            "10.1.0.0/16",
            "fd00::/8",
        ]);
        assert!(l.is_insecure("reg.lan:5000"));
        assert!(!l.is_insecure("reg.lan:5001"));
        assert!(l.is_insecure("plain.lan:443"));
        assert!(l.is_insecure("10.1.200.3:5000"));
        assert!(!l.is_insecure("10.2.0.1"));
        assert!(l.is_insecure("[fd12::1]:5000"));
        assert!(InsecureRegistries::parse(&["10.0.0.0/40".into()]).is_err());
        assert!(InsecureRegistries::parse(&["nonsense/8".into()]).is_err());
    }
}
