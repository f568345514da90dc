//! Where webhook deliveries may go: public addresses only, unless an
//! operator allows a network (`--webhook-allow-networks`).
//!
//! A subscription names a URL, and the server posts to it: left open, an
//! admin token (or whoever holds one) could make the server reach what only
//! it can reach: a cloud's metadata service at 169.254.169.254, a database
//! on the loopback interface, the office network. So a delivery connects
//! only to public unicast addresses, and to the networks the operator
//! allowed. The check is made on the addresses a connection would use: an
//! IP in the URL before the request, and a host name's addresses as they
//! are resolved for the connection (`Guarded`), so a name that resolves to
//! a public address when subscribed and to a private one later (DNS
//! rebinding) is refused too. Deliveries go direct, never through an HTTP
//! proxy, which would resolve the name itself. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The networks deliveries may reach besides the public ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    allowed: Vec<IpNet>,
}

impl Reach {
    /// `networks`: each a CIDR (`10.20.0.0/16`) or one address (`127.0.0.1`).
    pub fn allowing(networks: &[String]) -> Result<Self, String> {
        let allowed = networks
            .iter()
            .map(|raw| raw.trim())
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{raw:?} is not a network (10.20.0.0/16) or an address (127.0.0.1)"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|network| network.contains(&ip))
    }

    /// Why a delivery may not connect to `ip` (which `host` names), or
    /// `None` if it may.
    pub fn refusal(&self, host: &str, ip: IpAddr) -> Option<String> {
        (!self.permits(ip)).then(|| {
            let what = if host.trim_matches(['[', ']']) == ip.to_string() {
                ip.to_string()
            } else {
                format!("{host} ({ip})")
            };
            format!(
                "{what} is not a public address: webhooks reach private, loopback and link-local \
                 networks only where the server allows them (--webhook-allow-networks)"
            )
        })
    }

    /// Why a subscription's URL names a host deliveries may not reach, as
    /// far as can be told without resolving it: an address in the URL, or
    /// `localhost`. Other names are checked as each delivery resolves them.
    pub fn refusal_of_url(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        let ip = match literal(host) {
            Some(ip) => ip,
            None => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                if name != "localhost" && !name.ends_with(".localhost") {
                    return None;
                }
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        };
        self.refusal(host, ip)
    }

    /// Why a delivery may not connect to the address in `url`, if it names
    /// one: a connection to an address resolves nothing, so `Guarded`
    /// never sees it.
    pub fn refusal_of_address(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        self.refusal(host, literal(host)?)
    }
}

/// The address a URL's host is, if it is one (`[::1]` as well).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4
/// address: it reaches the same host.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A globally routable unicast address: none of the special-purpose ranges
/// (RFC 6890 and its successors) that lead to this host, its networks or
/// nowhere.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240;
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Prefixes that carry an IPv4 address: NAT64 (64:ff9b::/96) and 6to4
    // (2002::/16) reach whatever that address reaches.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    let special = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // Deprecated site-local, fec0::/10.
        || (s[0] & 0xffc0) == 0xfec0
        // IPv4-compatible (deprecated) and the other addresses in ::/96.
        || s[..6] == [0; 6]
        // Documentation, 2001:db8::/32, and the other special 2001::/23.
        || (s[0] == 0x2001 && s[1] < 0x0200)
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // Discard-only, 100::/64.
        || s[..4] == [0x100, 0, 0, 0];
    !special
}

/// The resolver of the deliveries' client: the system's, keeping only the
/// addresses `Reach` permits, and failing with the reason if none is left.
#[derive(Debug)]
pub struct Guarded(pub Reach);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match reach.refusal(&host, address.ip()) {
                    None => true,
                    Some(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let why = refusal.unwrap_or_else(|| format!("{host} has no address"));
                return Err(why.into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Guarded {
    pub fn shared(reach: &Reach) -> Arc<Self> {
        Arc::new(Self(reach.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("an address")
    }

    #[test]
    fn only_public_unicast_addresses_are_reached_by_default() {
        let reach = Reach::default();
        for public in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.4.4",
            "2002:0808:0808::1",
        ] {
            assert!(reach.permits(ip(public)), "{public} is public");
        }
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "100::1",
        ] {
            assert!(!reach.permits(ip(private)), "{private} is not public");
        }
    }

    #[test]
    fn allowed_networks_are_reached_and_nothing_else_private() {
        let reach =
            Reach::allowing(&["10.20.0.0/16".into(), " 127.0.0.1 ".into(), "::1".into()]).expect("valid networks");
        for allowed in ["10.20.3.4", "127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(reach.permits(ip(allowed)), "{allowed} is allowed");
        }
        for refused in ["10.21.0.1", "127.0.0.2", "169.254.169.254"] {
            assert!(!reach.permits(ip(refused)), "{refused} is not allowed");
        }
        let error = Reach::allowing(&["10.0.0.0/33".into()]).expect_err("no such prefix");
        assert!(error.contains("10.0.0.0/33"), "{error}");
        assert!(Reach::allowing(&["intranet".into()]).is_err());
    }

    #[test]
    fn a_url_naming_a_private_address_or_localhost_is_refused_with_the_way_to_allow_it() {
        let reach = Reach::default();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
            "http://api.localhost./",
            "http://2130706433/",
        ] {
            let parsed = reqwest::Url::parse(url).expect("a URL");
            let why = reach.refusal_of_url(&parsed);
            assert!(
                why.as_deref().is_some_and(|w| w.contains("--webhook-allow-networks")),
                "{url}: {why:?}"
            );
        }
        for url in ["https://hooks.example.com/crm", "http://8.8.8.8/"] {
            let parsed = reqwest::Url::parse(url).expect("a URL");
            assert_eq!(reach.refusal_of_url(&parsed), None, "{url}");
        }
        // At delivery a name is left to the resolver, an address is not.
        let by_name = reqwest::Url::parse("http://localhost:8080/").expect("a URL");
        let by_address = reqwest::Url::parse("http://[::1]:8080/").expect("a URL");
        assert_eq!(reach.refusal_of_address(&by_name), None);
        assert!(reach.refusal_of_address(&by_address).is_some());
    }

    #[tokio::test]
    async fn the_resolver_drops_addresses_not_permitted_and_says_why_when_none_is_left() {
        use reqwest::dns::Resolve as _;
        let name = |host: &str| host.parse::<reqwest::dns::Name>().expect("a name");
        let refused = Guarded(Reach::default()).resolve(name("localhost")).await;
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("localhost") && error.contains("--webhook-allow-networks"),
            "{error}"
        );
        let allowed = Reach::allowing(&["127.0.0.0/8".into(), "::1".into()]).expect("valid");
        let addresses: Vec<SocketAddr> = Guarded(allowed)
            .resolve(name("localhost"))
            .await
            .map(|addrs| addrs.collect())
            .unwrap_or_default();
        assert!(
            !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
    }
}
