//! What kind of address an IP is, and CIDR ranges: the words pipelock's private-destination
//! rule (`crate::bundle::pipelock::upstream`), the recipe's `[pipelock] allow_private` and
//! supervise's listing of a host grant share.
//!
//! An address is *private* when it is not a public Internet address: loopback, RFC 1918,
//! RFC 4193 unique-local, link-local (cloud metadata services among them, `169.254.169.254`,
//! `fd00:ec2::254`), CGNAT (RFC 6598), multicast, unspecified, broadcast, or reserved
//! (`0.0.0.0/8`, `240.0.0.0/4`). An IPv6 address that carries an IPv4 one — IPv4-mapped
//! (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) — is the class of
//! the IPv4 address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The kind of an address, as a refusal or a listing names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Public,
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// RFC 4193: fc00::/7.
    UniqueLocal,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 169.254.169.254 and fd00:ec2::254: where clouds hand out instance credentials.
    Metadata,
    /// RFC 6598: 100.64/10.
    Cgnat,
    Multicast,
    Unspecified,
    Broadcast,
    /// 0/8 and 240/4 (IPv4), and IPv6 outside the global unicast block 2000::/3.
    Reserved,
}

impl AddrClass {
    /// Whether pipelock refuses to connect to it unless the recipe says otherwise.
    pub fn is_private(self) -> bool {
        self != AddrClass::Public
    }

    /// A short phrase: `loopback`, `private (RFC 1918)`…
    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private (RFC 1918)",
            AddrClass::UniqueLocal => "private (RFC 4193 unique-local)",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Metadata => "cloud metadata (link-local)",
            AddrClass::Cgnat => "carrier-grade NAT (RFC 6598)",
            AddrClass::Multicast => "multicast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The IPv4 address an IPv6 one carries (mapped, compatible, NAT64), if any.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    // `::` and `::1` are IPv6's own unspecified and loopback, not IPv4-compatible forms.
    let compat = s[..6] == [0; 6] && u32::from(tail) > 1;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compat || nat64).then_some(tail)
}

/// The address without an IPv6 wrapping of an IPv4 one.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of address `ip` is.
pub fn classify(ip: IpAddr) -> AddrClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    match o {
        [169, 254, 169, 254] => AddrClass::Metadata,
        _ if ip.is_unspecified() => AddrClass::Unspecified,
        _ if ip.is_broadcast() => AddrClass::Broadcast,
        [127, ..] => AddrClass::Loopback,
        [10, ..] | [192, 168, ..] => AddrClass::Private,
        [172, b, ..] if (16..32).contains(&b) => AddrClass::Private,
        [169, 254, ..] => AddrClass::LinkLocal,
        [100, b, ..] if (64..128).contains(&b) => AddrClass::Cgnat,
        [224..=239, ..] => AddrClass::Multicast,
        [0, ..] | [240..=255, ..] => AddrClass::Reserved,
        _ => AddrClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if s[..4] == [0xfd00, 0xec2, 0, 0] && s[4..] == [0, 0, 0, 0x254] {
        AddrClass::Metadata
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddrClass::UniqueLocal
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddrClass::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddrClass::Multicast
    } else if s[0] & 0xe000 != 0x2000 {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// An address range, `10.1.0.0/16` or `fd00::/8`; a bare address is the range of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

/// A CIDR that does not parse; the message names the text and the form wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range: write ADDRESS/BITS, e.g. \"10.1.0.0/16\" or \"fd00::/8\"")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(text.to_string());
        let (addr, len) = match text.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.trim(), None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => {
                l.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => max,
        };
        if len > max {
            return Err(bad());
        }
        Ok(Cidr {
            net: mask(net, len),
            len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl Cidr {
    /// Whether `ip` (an IPv6 form of an IPv4 address counted as that address) is in range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }

    /// The range of one address: `/32` or `/128`.
    pub fn single(ip: IpAddr) -> Cidr {
        let ip = canonical(ip);
        Cidr {
            net: ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        }
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_private_range_is_named() {
        for (ip, want) in [
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("10.0.0.1", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("fd00::1", AddrClass::UniqueLocal),
            ("fc00::1", AddrClass::UniqueLocal),
            ("169.254.169.254", AddrClass::Metadata),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.255", AddrClass::Cgnat),
            ("224.0.0.1", AddrClass::Multicast),
            ("ff02::1", AddrClass::Multicast),
            ("0.0.0.0", AddrClass::Unspecified),
            ("::", AddrClass::Unspecified),
            ("255.255.255.255", AddrClass::Broadcast),
            ("0.1.2.3", AddrClass::Reserved),
            ("240.0.0.1", AddrClass::Reserved),
            // IPv6 wrappings of IPv4 addresses are what they carry.
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::127.0.0.1", AddrClass::Loopback),
            ("::10.0.0.1", AddrClass::Private),
            ("64:ff9b::a00:1", AddrClass::Private),
        ] {
            assert_eq!(class(ip), want, "{ip}");
            assert!(class(ip).is_private(), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(class(ip), AddrClass::Public, "{ip}");
        }
    }

    #[test]
    fn cidrs_parse_mask_and_contain() {
        let c: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains("10.1.200.7".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.0.1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("ADDRESS/BITS"), "{err}");
        }
    }
}
