//! `net`: addresses, CIDRs, MACs and URLs (pure, with Go's `net` and `net/url` parsing rules
//! as mgmt uses them), and the host's interfaces (`net.macs`, `net.interface_cidr`,
//! `net.wired_interface`), which are stream sources: they send a new value when a link or an
//! address appears, changes or goes ([`NetEvents`], an rtnetlink subscription).
//!
//! Bad input is a catchable error where mgmt's is (a sentinel error there), so `<|>` can give
//! a fallback value. So is an interface that is missing or has no address yet (a plain error
//! in mgmt): these are streams, and a later link or address change sends the value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use tend_model::Value;

use super::golang::s;
use super::{FuncError, Invoke};

/// An address with its prefix length, as Go's `net.ParseCIDR` reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    fn width(self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn mask(self) -> u128 {
        let w = u32::from(self.width());
        let host = w - u32::from(self.bits);
        let all = if w == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shl(host).unwrap_or(0) & all
    }

    fn network(self) -> IpAddr {
        from_bits(self.addr, to_bits(self.addr) & self.mask())
    }

    fn last(self) -> IpAddr {
        let all = if self.width() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        from_bits(
            self.addr,
            (to_bits(self.addr) & self.mask()) | (!self.mask() & all),
        )
    }

    fn contains(self, ip: IpAddr) -> bool {
        // Go's IPNet.Contains compares an IPv4 address with an IPv4 network only.
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
            _ => ip,
        };
        to_bits(ip) & self.mask() == to_bits(self.addr) & self.mask()
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        // The value was masked to 32 bits by the caller.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// Go prints an IPv4-mapped IPv6 address as the IPv4 address.
fn go_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}

/// `net.ParseCIDR`: `addr/bits`, with Go's error text.
fn parse_cidr(s: &str) -> Result<Cidr, FuncError> {
    let bad = || FuncError::catchable(format!("invalid CIDR address: {s}"));
    let (a, b) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) || (b.len() > 1 && b.starts_with('0'))
    {
        return Err(bad());
    }
    let bits: u8 = b.parse().map_err(|_| bad())?;
    let c = Cidr { addr, bits };
    if bits > c.width() {
        return Err(bad());
    }
    Ok(c)
}

/// `netip.ParsePrefix`, for `cidr_to_first` and `cidr_to_last` (no trimming, Go's messages).
fn parse_prefix(s: &str) -> Result<Cidr, FuncError> {
    let fail = |why: &str| FuncError::catchable(format!("netip.ParsePrefix({s:?}): {why}"));
    let (a, b) = s.rsplit_once('/').ok_or_else(|| fail("no '/'"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| fail(&format!("ParseAddr({a:?}): unable to parse IP")))?;
    let bad_bits = || fail(&format!("bad bits after slash: {b:?}"));
    if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) || (b.len() > 1 && b.starts_with('0'))
    {
        return Err(bad_bits());
    }
    let bits: u8 = b.parse().map_err(|_| bad_bits())?;
    let c = Cidr { addr, bits };
    if bits > c.width() {
        return Err(bad_bits());
    }
    Ok(c)
}

fn cidr_arg(a: &[Value], name: &str) -> Result<Cidr, FuncError> {
    parse_cidr(s(a, 0, name)?.trim())
}

/// `net.cidr_to_ip(str) str`: the address part (`192.0.2.1/24` → `192.0.2.1`).
pub(super) fn cidr_to_ip(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Ok(Value::Str(go_ip(cidr_arg(a, "net.cidr_to_ip")?.addr)))
}

/// `net.cidr_to_prefix(str) str`: the prefix length, as a string (`"24"`).
pub(super) fn cidr_to_prefix(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Ok(Value::Str(
        cidr_arg(a, "net.cidr_to_prefix")?.bits.to_string(),
    ))
}

/// `net.cidr_to_mask(str) str`: the mask as an address (`255.255.255.0`).
pub(super) fn cidr_to_mask(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let c = cidr_arg(a, "net.cidr_to_mask")?;
    Ok(Value::Str(from_bits(c.addr, c.mask()).to_string()))
}

/// `net.cidr_to_network(str) str`: the network in CIDR form (`192.0.2.0/24`).
pub(super) fn cidr_to_network(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let c = cidr_arg(a, "net.cidr_to_network")?;
    Ok(Value::Str(format!("{}/{}", go_ip(c.network()), c.bits)))
}

/// `net.cidr_to_first(str) str`: the address after the one given (mgmt's "first usable"
/// of a network address), which must still be inside the prefix.
pub(super) fn cidr_to_first(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let c = parse_prefix(s(a, 0, "net.cidr_to_first")?)?;
    let next = to_bits(c.addr).checked_add(1);
    let all = if c.width() == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    match next.filter(|n| *n <= all).map(|n| from_bits(c.addr, n)) {
        Some(ip) if c.contains(ip) => Ok(Value::Str(ip.to_string())),
        _ => Err(FuncError::catchable("no usable next address")),
    }
}

/// `net.cidr_to_last(str) str`: the last address of the network (IPv4's broadcast).
pub(super) fn cidr_to_last(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let c = parse_prefix(s(a, 0, "net.cidr_to_last")?)?;
    Ok(Value::Str(c.last().to_string()))
}

/// `net.ip_in_cidr(ip str, cidr str) bool`.
pub(super) fn ip_in_cidr(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let ip_s = s(a, 0, "net.ip_in_cidr")?;
    let ip: IpAddr = ip_s
        .parse()
        .map_err(|_| FuncError::catchable(format!("invalid IP: {ip_s}")))?;
    let c = parse_cidr(s(a, 1, "net.ip_in_cidr")?)?;
    Ok(Value::Bool(c.contains(ip)))
}

/// Go's `net.ParseMAC` for the 6-byte forms mgmt accepts (17 characters: `:` or `-`
/// separated pairs); lower-case, colon-separated.
fn parse_mac(s: &str) -> Result<String, FuncError> {
    if s.len() != 17 {
        return Err(FuncError::catchable(format!(
            "invalid MAC address length: {s}"
        )));
    }
    let bad = || FuncError::catchable(format!("address {s}: invalid MAC address"));
    let b = s.as_bytes();
    let sep = b[2];
    if sep != b':' && sep != b'-' {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(6);
    for (i, pair) in s.split(sep as char).enumerate() {
        if i >= 6 || pair.len() != 2 {
            return Err(bad());
        }
        out.push(u8::from_str_radix(pair, 16).map_err(|_| bad())?);
    }
    if out.len() != 6 {
        return Err(bad());
    }
    Ok(out
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// `net.is_mac(str) bool`: true only for the standard form (lower case, colons).
pub(super) fn is_mac(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let s = s(a, 0, "net.is_mac")?;
    Ok(Value::Bool(parse_mac(s).is_ok_and(|m| m == s)))
}

/// `net.macfmt(str) str`: any 6-byte form to `aa:bb:cc:dd:ee:ff`.
pub(super) fn macfmt(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    parse_mac(s(a, 0, "net.macfmt")?).map(Value::Str)
}

/// `net.oldmacfmt(str) str`: any 6-byte form to `aa-bb-cc-dd-ee-ff`.
pub(super) fn oldmacfmt(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    parse_mac(s(a, 0, "net.oldmacfmt")?).map(|m| Value::Str(m.replace(':', "-")))
}

/// Go's `net.SplitHostPort`, step for step, with its error texts.
fn split_host_port(s: &str) -> Result<(String, String), String> {
    let err = |why: &str| format!("address {s}: {why}");
    // The port starts after the last colon.
    let i = s.rfind(':').ok_or_else(|| err("missing port in address"))?;
    let (host, j, k) = if s.starts_with('[') {
        // The first `]` must come just before the last `:`.
        let end = s.find(']').ok_or_else(|| err("missing ']' in address"))?;
        if end + 1 == s.len() {
            return Err(err("missing port in address"));
        }
        if end + 1 != i {
            return Err(if s.as_bytes()[end + 1] == b':' {
                err("too many colons in address")
            } else {
                err("missing port in address")
            });
        }
        (&s[1..end], 1, end + 1)
    } else {
        let host = &s[..i];
        if host.contains(':') {
            return Err(err("too many colons in address"));
        }
        (host, 0, 0)
    };
    if s[j..].contains('[') {
        return Err(err("unexpected '[' in address"));
    }
    if s[k..].contains(']') {
        return Err(err("unexpected ']' in address"));
    }
    Ok((host.to_string(), s[i + 1..].to_string()))
}

/// `net.split_hostport(str) struct{host str; port str}`.
pub(super) fn split_hostport(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let s = s(a, 0, "net.split_hostport")?;
    let (host, port) = split_host_port(s)
        .map_err(|e| FuncError::catchable(format!("error parsing the input: {e}")))?;
    Ok(Value::Struct(vec![
        ("host".into(), Value::Str(host)),
        ("port".into(), Value::Str(port)),
    ]))
}

/// Go's `url.PathUnescape`-style decoding of `%XX` (for `url.URL.Path`).
fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).filter(|h| h.len() == 2);
            let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                let end = (i + 3).min(s.len());
                return Err(format!("invalid URL escape {:?}", &s[i..end]));
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 once unescaped".into())
}

/// `net.url_parser(str) struct{scheme str; host str; path str; raw_query str}`: the parts of
/// a URL as Go's `url.Parse` splits them (`path` unescaped, `raw_query` as written).
pub(super) fn url_parser(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let raw = s(a, 0, "net.url_parser")?;
    let fail = |why: String| FuncError::fatal(format!("net.url_parser: {raw:?}: {why}"));
    if raw.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return Err(fail("invalid control character in URL".into()));
    }
    let no_frag = raw.split_once('#').map_or(raw, |(u, _)| u);
    let scheme_end = no_frag.find(':');
    let (scheme, rest) = match scheme_end {
        Some(i)
            if i > 0
                && no_frag.as_bytes()[0].is_ascii_alphabetic()
                && no_frag[..i]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) =>
        {
            (&no_frag[..i], &no_frag[i + 1..])
        }
        Some(0) => return Err(fail("missing protocol scheme".into())),
        _ => ("", no_frag),
    };
    if scheme.is_empty() {
        return Err(fail("empty schemes are invalid".into()));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let (host, path) = if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        (host, &after[end..])
    } else if rest.starts_with('/') {
        ("", rest)
    } else {
        // An opaque URL (`mailto:x@y`): Go leaves `Path` empty.
        ("", "")
    };
    let path = unescape(path).map_err(fail)?;
    Ok(Value::Struct(vec![
        ("scheme".into(), Value::Str(scheme.to_ascii_lowercase())),
        ("host".into(), Value::Str(host.to_string())),
        ("path".into(), Value::Str(path)),
        ("raw_query".into(), Value::Str(query.to_string())),
    ]))
}

/// One interface as the kernel lists it.
struct Iface {
    name: String,
    flags: u32,
    mac: String,
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// The interfaces, in the kernel's index order, from `/sys/class/net` (the same list Go's
/// `net.Interfaces` reads through netlink).
fn interfaces() -> Result<Vec<Iface>, FuncError> {
    let dir = Path::new("/sys/class/net");
    let rd = std::fs::read_dir(dir).map_err(|e| {
        FuncError::fatal(format!("listing the interfaces ({}): {e}", dir.display()))
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let index: u32 = read("ifindex").parse().unwrap_or(u32::MAX);
        let flags = u32::from_str_radix(read("flags").trim_start_matches("0x"), 16).unwrap_or(0);
        out.push((
            index,
            Iface {
                name,
                flags,
                mac: read("address"),
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, i)| i).collect())
}

/// `net.macs() []str`: the MAC addresses of the non-loopback interfaces.
pub(crate) fn macs(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Ok(Value::List(
        interfaces()?
            .into_iter()
            .filter(|i| i.flags & IFF_LOOPBACK == 0 && i.mac.len() == 17)
            .map(|i| Value::Str(i.mac))
            .collect(),
    ))
}

/// `net.wired_interface() str`: the first non-loopback interface with a hardware address
/// that is not wireless, preferring one that is up.
pub(crate) fn wired_interface(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let mut fallback = None;
    for i in interfaces()? {
        let no_mac = i.mac.is_empty() || i.mac.bytes().all(|c| c == b'0' || c == b':');
        if i.flags & IFF_LOOPBACK != 0 || no_mac {
            continue;
        }
        if Path::new("/sys/class/net")
            .join(&i.name)
            .join("wireless")
            .exists()
        {
            continue;
        }
        if i.flags & IFF_UP != 0 {
            return Ok(Value::Str(i.name));
        }
        fallback.get_or_insert(i.name);
    }
    fallback.map(Value::Str).ok_or_else(|| {
        FuncError::catchable("net.wired_interface: no wired network interface found")
    })
}

/// `util.hostname_mapper(map{str: str}) str`: the hostname the map gives for one of this
/// host's MAC addresses (non-loopback interfaces), `""` when none matches, an error when
/// several hostnames match. A stream on link changes, as the interface facts.
pub(crate) fn hostname_mapper(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let Some(Value::Map(m)) = a.first() else {
        return Err(FuncError::fatal(
            "util.hostname_mapper: expected a map{str: str} argument",
        ));
    };
    let mut found = std::collections::BTreeSet::new();
    for i in interfaces()? {
        if i.flags & IFF_LOOPBACK != 0 || i.mac.len() != 17 {
            continue;
        }
        if let Some(Value::Str(h)) = m.get(&Value::Str(i.mac)) {
            if !h.is_empty() {
                found.insert(h.clone());
            }
        }
    }
    if found.len() > 1 {
        return Err(FuncError::fatal(format!(
            "util.hostname_mapper: multiple hostnames found: {}",
            found.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Value::Str(found.into_iter().next().unwrap_or_default()))
}

/// Go's `IP.IsGlobalUnicast` for IPv4.
fn global_unicast_v4(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback()
        || ip.is_multicast()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast())
}

/// `net.interface_cidr(interface str) str`: the first global-unicast IPv4 address of the
/// interface, with its prefix (`192.0.2.2/24`).
pub(crate) fn interface_cidr(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = s(a, 0, "net.interface_cidr")?;
    if !Path::new("/sys/class/net").join(name).exists() || name.contains('/') || name.is_empty() {
        return Err(FuncError::catchable(format!(
            "net.interface_cidr: could not find interface `{name}`"
        )));
    }
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
        FuncError::fatal(format!(
            "net.interface_cidr: could not list addresses on interface `{name}`: {e}"
        ))
    })?;
    for ifa in addrs.filter(|i| i.interface_name == name) {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let ip = a.ip();
        if !global_unicast_v4(ip) {
            continue;
        }
        let bits = m.ip().to_bits().count_ones();
        return Ok(Value::Str(format!("{ip}/{bits}")));
    }
    Err(FuncError::catchable(format!(
        "net.interface_cidr: interface `{name}` has no global-unicast IPv4 address"
    )))
}

/// A subscription to the kernel's link and address changes (rtnetlink groups `RTMGRP_LINK`,
/// `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`): [`NetEvents::changed`] returns after each
/// batch of messages. The messages are not parsed; the sources read the interfaces again.
pub(crate) struct NetEvents {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl NetEvents {
    /// Subscribes; an error (no netlink, no runtime) leaves the caller to poll.
    pub(crate) fn new() -> std::io::Result<NetEvents> {
        Self::subscribe(
            libc::NETLINK_ROUTE,
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32,
        )
    }

    /// The kernel's uevents (device and module add/remove: `NETLINK_KOBJECT_UEVENT`, group 1),
    /// for `os.modinfo_loaded`.
    pub(crate) fn uevents() -> std::io::Result<NetEvents> {
        Self::subscribe(libc::NETLINK_KOBJECT_UEVENT, 1)
    }

    fn subscribe(protocol: i32, groups: u32) -> std::io::Result<NetEvents> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        // SAFETY: `sa` is a valid sockaddr_nl of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor is owned by the `OwnedFd` moved in, open until it drops.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }?;
        Ok(NetEvents { fd })
    }

    /// Waits for the next change (and drains what else is queued).
    pub(crate) async fn changed(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            loop {
                // SAFETY: reads into a buffer of the length given.
                let n = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n >= 0 {
                    got = true;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => break,
                    std::io::ErrorKind::Interrupted => continue,
                    // ENOBUFS: the kernel dropped messages; something changed.
                    _ if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        got = true;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funcs::{call_simple, lookup};

    fn call(n: &str, a: &[&str]) -> Result<Value, FuncError> {
        let args: Vec<Value> = a.iter().map(|s| Value::from(*s)).collect();
        call_simple(lookup("net", n).expect("exists"), &args)
    }

    fn s(n: &str, a: &[&str]) -> String {
        match call(n, a) {
            Ok(Value::Str(s)) => s,
            other => panic!("net.{n}({a:?}) = {other:?}"),
        }
    }

    #[test]
    fn cidrs_as_go_reads_them() {
        assert_eq!(s("cidr_to_ip", &["192.0.2.1/24"]), "192.0.2.1");
        assert_eq!(s("cidr_to_ip", &[" 2001:db8::1/64 "]), "2001:db8::1");
        assert_eq!(s("cidr_to_prefix", &["192.0.2.1/24"]), "24");
        assert_eq!(s("cidr_to_mask", &["192.0.2.1/20"]), "255.255.240.0");
        assert_eq!(s("cidr_to_mask", &["10.0.0.1/0"]), "0.0.0.0");
        assert_eq!(
            s("cidr_to_mask", &["2001:db8::1/64"]),
            "ffff:ffff:ffff:ffff::"
        );
        assert_eq!(s("cidr_to_network", &["192.0.2.77/26"]), "192.0.2.64/26");
        assert_eq!(s("cidr_to_network", &["2001:db8::1/32"]), "2001:db8::/32");
        assert_eq!(s("cidr_to_first", &["192.0.2.0/24"]), "192.0.2.1");
        assert_eq!(s("cidr_to_first", &["192.0.2.5/24"]), "192.0.2.6");
        assert_eq!(s("cidr_to_last", &["192.0.2.5/24"]), "192.0.2.255");
        assert_eq!(s("cidr_to_last", &["10.1.2.3/32"]), "10.1.2.3");
        assert_eq!(s("cidr_to_last", &["2001:db8::/126"]), "2001:db8::3");
        for bad in [
            "192.0.2.1",
            "192.0.2.1/33",
            "x/24",
            "192.0.2.1/024",
            "192.0.2.1/",
        ] {
            let e = call("cidr_to_ip", &[bad]).unwrap_err();
            assert!(e.catchable, "{bad}");
            assert_eq!(e.msg, format!("invalid CIDR address: {bad}"));
        }
        let e = call("cidr_to_first", &["192.0.2.255/24"]).unwrap_err();
        assert_eq!(e.msg, "no usable next address");
        let e = call("cidr_to_first", &["10.0.0.1/32"]).unwrap_err();
        assert!(e.catchable);
        let e = call("cidr_to_last", &["10.0.0.1"]).unwrap_err();
        assert_eq!(e.msg, "netip.ParsePrefix(\"10.0.0.1\"): no '/'");
    }

    #[test]
    fn ip_in_cidr_and_families() {
        let b = |ip: &str, c: &str| call("ip_in_cidr", &[ip, c]).unwrap();
        assert_eq!(b("192.0.2.9", "192.0.2.0/24"), Value::Bool(true));
        assert_eq!(b("192.0.3.9", "192.0.2.0/24"), Value::Bool(false));
        assert_eq!(b("::ffff:192.0.2.9", "192.0.2.0/24"), Value::Bool(true));
        assert_eq!(b("2001:db8::5", "2001:db8::/64"), Value::Bool(true));
        assert_eq!(b("192.0.2.9", "2001:db8::/64"), Value::Bool(false));
        let e = call("ip_in_cidr", &["nope", "192.0.2.0/24"]).unwrap_err();
        assert_eq!((e.msg.as_str(), e.catchable), ("invalid IP: nope", true));
    }

    #[test]
    fn macs_in_both_forms() {
        assert_eq!(s("macfmt", &["00-1A-2b-3C-4d-5E"]), "00:1a:2b:3c:4d:5e");
        assert_eq!(s("macfmt", &["00:1a:2b:3c:4d:5e"]), "00:1a:2b:3c:4d:5e");
        assert_eq!(s("oldmacfmt", &["00:1A:2B:3C:4D:5E"]), "00-1a-2b-3c-4d-5e");
        assert_eq!(
            call("is_mac", &["00:1a:2b:3c:4d:5e"]).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            call("is_mac", &["00:1A:2B:3C:4D:5E"]).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            call("is_mac", &["00-1a-2b-3c-4d-5e"]).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(call("is_mac", &["nope"]).unwrap(), Value::Bool(false));
        let e = call("macfmt", &["00:1a"]).unwrap_err();
        assert_eq!(e.msg, "invalid MAC address length: 00:1a");
        let e = call("macfmt", &["00:1a:2b-3c:4d:5e"]).unwrap_err();
        assert!(e.catchable && e.msg.contains("invalid MAC address"), "{e}");
        assert!(call("macfmt", &["00:1a:2b:3c:4d:zz"]).is_err());
    }

    #[test]
    fn host_ports_as_go_splits_them() {
        let hp = |s: &str| match call("split_hostport", &[s]) {
            Ok(Value::Struct(f)) => (
                f[0].1.as_str().unwrap().to_string(),
                f[1].1.as_str().unwrap().to_string(),
            ),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(hp("example.com:80"), ("example.com".into(), "80".into()));
        assert_eq!(hp("[::1]:443"), ("::1".into(), "443".into()));
        assert_eq!(hp(":8080"), ("".into(), "8080".into()));
        for (bad, why) in [
            ("example.com", "missing port in address"),
            ("::1:80", "too many colons in address"),
            ("[::1]", "missing port in address"),
            ("[::1:80", "missing ']' in address"),
        ] {
            let e = call("split_hostport", &[bad]).unwrap_err();
            assert!(e.catchable);
            assert_eq!(
                e.msg,
                format!("error parsing the input: address {bad}: {why}")
            );
        }
    }

    #[test]
    fn urls_as_go_parses_them() {
        let u = |s: &str| match call("url_parser", &[s]) {
            Ok(Value::Struct(f)) => f
                .into_iter()
                .map(|(_, v)| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            u("https://user:pw@example.com:8443/a%20b/c?x=1&y=2#frag"),
            ["https", "example.com:8443", "/a b/c", "x=1&y=2"]
        );
        assert_eq!(u("http://example.com"), ["http", "example.com", "", ""]);
        assert_eq!(u("file:///etc/hosts"), ["file", "", "/etc/hosts", ""]);
        assert_eq!(u("mailto:root@example.com"), ["mailto", "", "", ""]);
        assert!(call("url_parser", &["/just/a/path"]).is_err());
        assert!(call("url_parser", &["http://x/%zz"])
            .unwrap_err()
            .msg
            .contains("invalid URL escape \"%zz\""));
    }

    /// The interface facts against what the kernel says here: `ip` is not used by the code.
    #[test]
    fn interfaces_of_this_host() {
        let Value::List(macs) = call("macs", &[]).unwrap() else {
            panic!("a list");
        };
        for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let p = e.path();
            let mac = std::fs::read_to_string(p.join("address")).unwrap_or_default();
            let mac = mac.trim();
            let lo = e.file_name() == "lo";
            let listed = macs.contains(&Value::from(mac));
            assert_eq!(listed, !lo && mac.len() == 17, "{}", p.display());
        }
        let e = call("interface_cidr", &["lo"]).unwrap_err();
        assert!(e.msg.contains("no global-unicast IPv4 address"), "{e}");
        let e = call("interface_cidr", &["tend-no-such-if"]).unwrap_err();
        assert!(e.msg.contains("could not find interface"), "{e}");

        // util.hostname_mapper over this host's MACs.
        let map = |pairs: &[(&str, &str)]| {
            Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (Value::from(*k), Value::from(*v)))
                    .collect(),
            )
        };
        let hm = |m: Value| call_simple(lookup("util", "hostname_mapper").expect("exists"), &[m]);
        assert_eq!(
            hm(map(&[("00:00:5e:00:53:ff", "nope")])).unwrap(),
            Value::from("")
        );
        if let Some(Value::Str(mine)) = macs.first() {
            let m = map(&[(mine.as_str(), "web1"), ("00:00:5e:00:53:ff", "other")]);
            assert_eq!(hm(m).unwrap(), Value::from("web1"));
            if let Some(Value::Str(second)) = macs.get(1) {
                let m = map(&[(mine.as_str(), "web1"), (second.as_str(), "web2")]);
                let e = hm(m).unwrap_err();
                assert!(
                    e.msg.contains("multiple hostnames found: web1, web2"),
                    "{e}"
                );
            }
        }
    }
}
