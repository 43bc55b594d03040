//! TCP: source-address binding, connect with TCP_NODELAY, and the loopback source
//! addresses the harness spreads its connections over.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// Binds `socket` to source address `ip` with the port left to `connect()`.
///
/// Without `IP_BIND_ADDRESS_NO_PORT` a `bind(ip:0)` reserves a port for every destination,
/// and its TIME_WAIT entries then starve connects from every other source address
/// (LIMITS.md §A1b). One source address reaches one server port at most 28,232 times,
/// which is why big runs spread peers over several 127.x.y.z addresses.
pub fn bind_source(socket: &TcpSocket, ip: Ipv4Addr) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a pointer to a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    socket.bind(SocketAddr::new(ip.into(), 0))
}

/// A TCP connection to `addr`, from `source` when given (IPv4 only; the port is chosen
/// at connect time), with Nagle off: every frame leaves when it is written.
pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(ip), true) = (source, addr.is_ipv4()) {
        bind_source(&socket, ip)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The source address of worker `worker` of a run: 127.a.b.(worker+1), with a and b
/// derived from the run tag so consecutive runs use fresh addresses (TIME_WAIT buckets
/// of a previous run never collide with this one's).
pub fn run_source_ip(run_tag: &str, worker: u32) -> Ipv4Addr {
    // FNV-1a then a splitmix finaliser: stable across versions and platforms.
    let mut h = run_tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |a, b| {
        (a ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    let a = 64 + (h % 190) as u8; // 127.64.x.x .. 127.253.x.x
    let b = (h >> 8) as u8;
    Ipv4Addr::new(127, a, b, (worker % 254 + 1) as u8)
}

/// Hands out loopback source addresses 127.a.b.c, a different one per call, starting at
/// a per-process random offset so consecutive runs do not reuse each other's addresses.
#[derive(Debug)]
pub struct SourceIps {
    next: AtomicU32,
}

impl Default for SourceIps {
    fn default() -> Self {
        SourceIps {
            next: AtomicU32::new(rand::random::<u32>() % (200 * 65_536)),
        }
    }
}

impl SourceIps {
    pub fn next(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 254 × 256 × 254 addresses; 127.0.0.0/24 is left alone.
        let c = (n % 254) as u8 + 1;
        let b = ((n / 254) % 256) as u8;
        let a = ((n / (254 * 256)) % 254) as u8 + 1;
        Ipv4Addr::new(127, a, b, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[tokio::test]
    async fn binds_a_loopback_source_without_a_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let src = run_source_ip("test-run", 3);
        let (c, s) = tokio::join!(connect(addr, Some(src)), listener.accept());
        let c = c.unwrap();
        let (_, peer) = s.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(src));
        assert_eq!(c.local_addr().unwrap().ip(), IpAddr::V4(src));
        assert!(c.nodelay().unwrap());
    }

    #[test]
    fn source_ips_are_loopback_and_distinct() {
        let ips = SourceIps::default();
        let a = ips.next();
        let b = ips.next();
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, b);
        assert_ne!(a.octets()[3], 0);
        assert_ne!(run_source_ip("r1", 0), run_source_ip("r2", 0));
        assert_eq!(run_source_ip("r1", 1).octets()[3], 2);
    }
}
