//! The app's port, held on both loopback addresses.
//!
//! The app is reached by a name under `.localhost` (see [`crate::auth`]), and browsers resolve
//! such names to both `::1` and `127.0.0.1`; Chromium tries `::1` first. Were the app to listen on
//! one of them only, another local program could listen on the other with the same port number
//! and receive the browser's requests, session cookie and all. So the app listens on both, with
//! one port; on a machine without one of them (IPv6 turned off), nobody can listen there either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::AppError;

/// How many free ports to try for one that is free on both addresses (only with port 0).
const PORT_ATTEMPTS: usize = 16;

/// Listen on `listen` (127.0.0.1 or ::1; port 0 picks one) and on the other loopback address
/// with the same port. Returns the listeners, `listen`'s first.
pub async fn bind(listen: SocketAddr) -> Result<Vec<TcpListener>, AppError> {
    let other_ip: IpAddr = match listen.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip == Ipv6Addr::LOCALHOST => Ipv4Addr::LOCALHOST.into(),
        _ => return Err(AppError::NotLoopback(listen)),
    };
    let bind_error = |addr| move |source| AppError::Bind { addr, source };
    for _ in 0..PORT_ATTEMPTS {
        let first = TcpListener::bind(listen)
            .await
            .map_err(bind_error(listen))?;
        let port = first.local_addr().map_err(bind_error(listen))?.port();
        let other = SocketAddr::new(other_ip, port);
        match TcpListener::bind(other).await {
            Ok(second) => return Ok(vec![first, second]),
            Err(e) if absent(&e) => {
                tracing::info!(%other, "no such loopback address here: listening on one only");
                return Ok(vec![first]);
            }
            // Another program has this port on the other address: try another port.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && listen.port() == 0 => {}
            Err(source) => {
                return Err(AppError::Bind {
                    addr: other,
                    source,
                })
            }
        }
    }
    Err(AppError::Bind {
        addr: listen,
        source: std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no port was free on both 127.0.0.1 and ::1",
        ),
    })
}

/// Whether binding failed because this machine has no such address (or address family).
fn absent(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
        return true;
    }
    e.kind() == std::io::ErrorKind::AddrNotAvailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_port_is_held_on_both_loopback_addresses() {
        let listeners = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // Nobody else can take the port on either address while the app holds it.
        for ip in ["127.0.0.1", "::1"] {
            let addr = SocketAddr::new(ip.parse().unwrap(), port);
            match std::net::TcpListener::bind(addr) {
                Ok(_) => panic!("{addr} was free while the app held the port"),
                Err(e) if absent(&e) => {}
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{addr}"),
            }
        }
    }

    #[tokio::test]
    async fn only_the_loopback_addresses_are_accepted() {
        for addr in ["0.0.0.0:0", "127.0.0.2:0", "[::]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(matches!(bind(addr).await, Err(AppError::NotLoopback(a)) if a == addr));
        }
    }
}
