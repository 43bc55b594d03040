//! Socket helpers shared by the harness's clients (conformance and load).

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpSocket;

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
