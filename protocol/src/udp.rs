//! The UDP socket under a QUIC endpoint (client and node alike).
//!
//! Linux's default socket receive buffer (~208 KiB) overflows when a node streams multi-MiB
//! shards at loopback speed: measured on a 6-node devnet, 7 % of all datagrams were dropped
//! (`RcvbufErrors` in `/proc/net/snmp`), and QUIC's congestion control answered each loss by
//! slowing down. Endpoints therefore ask for [`BUFFER_BYTES`] each way; the kernel caps the
//! request at `net.core.rmem_max` / `wmem_max` (raise those on busy nodes).

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Send and receive buffer size requested for every endpoint socket.
pub const BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `addr` with enlarged buffers (best effort: a refused size keeps the
/// default), ready for `quinn::Endpoint::new`.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack, as `std::net::UdpSocket::bind("[::]:0")` is on Linux.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_enlarged_where_the_kernel_allows() {
        let got = Socket::from(bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .recv_buffer_size()
            .unwrap();
        let default = Socket::new(Domain::IPV4, Type::DGRAM, None)
            .unwrap()
            .recv_buffer_size()
            .unwrap();
        assert!(got >= default);
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        if max.is_some_and(|m| m > default) {
            assert!(got > default, "{got} vs default {default}");
        }
    }
}
