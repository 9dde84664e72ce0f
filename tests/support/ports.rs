//! Ports for the servers a test starts (sidecars, sshd, Garage), each free when handed out and
//! never handed out twice by one test process.
//!
//! They come from below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
//! 32768 and up here), so a socket bound to port 0 by another test, between this call and the
//! server's own bind, cannot take the port. Asking the kernel for port 0 and closing it could
//! hand the same port to two calls in a row: a sidecar's pipelock and supervise then raced for
//! one port, and a test's proxy requests reached supervise.

use std::net::TcpListener;
use std::sync::Mutex;

/// The range the ports come from: below the ephemeral range, above the usual services.
const FIRST: u16 = 20_000;
const END: u16 = 32_768;

/// The next port to try; starts at an offset made from the process id, so two test processes
/// in a row rarely start from the same port.
static NEXT: Mutex<Option<u16>> = Mutex::new(None);

/// A port free on 127.0.0.1 and 0.0.0.0 now, not handed out before by this process.
pub fn free_port() -> u16 {
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let span = END - FIRST;
    let mut port = next.unwrap_or(FIRST + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= END { FIRST } else { port + 1 };
        let free = ["127.0.0.1", "0.0.0.0"]
            .iter()
            .all(|host| TcpListener::bind((*host, candidate)).is_ok());
        if free {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port in {FIRST}..{END}");
}
