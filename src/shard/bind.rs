//! Where shards run and listen: the CPUs to pin them to, and one `SO_REUSEPORT` listener per
//! shard and address.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::StartError;

/// The CPUs this process may run on, in order (for pinning shard i to the i-th of them).
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask struct, zero-initialised, of the size passed; the call only
    // writes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`.
pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is zero-initialised and only touched through the libc CPU_* helpers; the
    // syscall reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Binds one `SO_REUSEPORT` listening socket.
fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Binds every shard's listeners. Port 0 is resolved by the first shard's socket so all shards
/// share one port.
pub(super) fn bind_all(
    listen: &[SocketAddr],
    shards: usize,
    backlog: u32,
) -> Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>), StartError> {
    let mut resolved = Vec::with_capacity(listen.len());
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for &addr in listen {
        let mut actual = addr;
        for (i, slot) in per_shard.iter_mut().enumerate() {
            let l = bind_listener(actual, backlog).map_err(|e| {
                let hint = match e.kind() {
                    io::ErrorKind::AddrInUse => {
                        " (another process listens there without SO_REUSEPORT, or an old ringway still runs; pick another [server] listen address)"
                    }
                    io::ErrorKind::PermissionDenied => {
                        " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    }
                    io::ErrorKind::AddrNotAvailable => {
                        " (that address is not on any local interface)"
                    }
                    _ => "",
                };
                StartError::new(format!("cannot listen on {actual}: {e}{hint}"))
            })?;
            if i == 0 {
                actual = l
                    .local_addr()
                    .map_err(|e| StartError::new(format!("listener on {addr}: {e}")))?;
                resolved.push(actual);
            }
            slot.push(l);
        }
    }
    Ok((per_shard, resolved))
}
