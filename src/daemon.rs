//! Daemon integration: the systemd notify protocol (READY, WATCHDOG, STOPPING, RELOADING), signal flags
//! (TERM/INT drain and stop, HUP reload) and log set-up (stderr, or journald under systemd).

use crate::error::{Error, Result};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where `sd_notify` messages go: the datagram socket named by `NOTIFY_SOCKET`, if any.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
}

#[derive(Debug, Clone)]
enum SocketAddr {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment (`NOTIFY_SOCKET`); a no-op notifier when it is unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier { socket: None }),
            Some(v) => {
                let s = v.to_string_lossy().to_string();
                let addr = match s.strip_prefix('@') {
                    Some(name) => SocketAddr::Abstract(name.as_bytes().to_vec()),
                    None => SocketAddr::Path(PathBuf::from(&s)),
                };
                let sock = UnixDatagram::unbound()
                    .map_err(|e| Error::io("creating the notify socket", e))?;
                Ok(Notifier {
                    socket: Some((sock, addr)),
                })
            }
        }
    }

    /// Whether systemd (or a test) listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send one notification (`READY=1`, `WATCHDOG=1`, `STATUS=…`); errors are returned, never fatal to callers
    /// that choose to log them.
    pub fn notify(&self, state: &str) -> Result<()> {
        let Some((sock, addr)) = &self.socket else {
            return Ok(());
        };
        let sent = match addr {
            SocketAddr::Path(p) => sock.send_to(state.as_bytes(), p),
            SocketAddr::Abstract(name) => send_abstract(sock, name, state.as_bytes()),
        };
        sent.map(|_| ())
            .map_err(|e| Error::io(format!("sending {state:?} to NOTIFY_SOCKET"), e))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _msg: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// The watchdog period systemd asked for: half of `WATCHDOG_USEC`, if set for this process
/// (`WATCHDOG_PID`, when present, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Flags set from signal handlers: `stop` on SIGTERM/SIGINT, `reload` on SIGHUP.
#[derive(Debug, Clone)]
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

impl Signals {
    /// Install the handlers (async-signal-safe: each only stores to an atomic flag).
    pub fn install() -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&stop))
                .map_err(|e| Error::io("installing the stop signal handler", e))?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
            .map_err(|e| Error::io("installing the SIGHUP handler", e))?;
        Ok(Signals { stop, reload })
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// True once per SIGHUP.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

/// Set up logging: `RUST_LOG` wins, then `--log-level`, then the config's `log-level`. Under systemd
/// (`JOURNAL_STREAM` set and journald reachable) records go to the journal with their fields; otherwise to stderr.
/// Calling it twice is harmless (the first set-up stays).
pub fn init_logging(level: &str) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            socket: Some((
                UnixDatagram::unbound().expect("socket"),
                SocketAddr::Path(path),
            )),
        };
        n.notify("READY=1").expect("send");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn notifier_without_socket_is_silent() {
        let n = Notifier { socket: None };
        assert!(!n.enabled());
        n.notify("READY=1").expect("no-op");
    }
}
