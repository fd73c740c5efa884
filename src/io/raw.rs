//! `kind = "stdin"` and `kind = "tcp"`: headerless s16le / f32le PCM at a configured rate and channel count.
//! Neither is live: they read only as fast as the ring has room, so the writer is slowed down (pipe or socket
//! back-pressure) instead of samples being lost.

use super::frames::ChannelPick;
use super::ring::push_wait;
use super::{Source, SourceControl, SourceHandle};
use crate::config::RawFormat;
use crate::error::{Error, Result};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Turns a byte stream of interleaved frames into mono f32, keeping a partial frame across reads.
#[derive(Debug)]
pub struct RawDecoder {
    format: RawFormat,
    channels: usize,
    pick: ChannelPick,
    partial: Vec<u8>,
    frame: Vec<f32>,
}

impl RawDecoder {
    pub fn new(format: RawFormat, channels: usize, pick: ChannelPick) -> Self {
        RawDecoder {
            format,
            channels,
            pick,
            partial: Vec::new(),
            frame: vec![0.0; channels],
        }
    }

    fn bytes_per_frame(&self) -> usize {
        self.channels
            * match self.format {
                RawFormat::S16le => 2,
                RawFormat::F32le => 4,
            }
    }

    /// Decode `bytes` (any length), appending complete frames as mono samples to `out`.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        let bpf = self.bytes_per_frame();
        let mut data = bytes;
        if !self.partial.is_empty() {
            let need = bpf - self.partial.len();
            let n = need.min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() < bpf {
                return;
            }
            let p = std::mem::take(&mut self.partial);
            self.decode_frame(&p, out);
            self.partial = p;
            self.partial.clear();
        }
        let whole = data.len() / bpf * bpf;
        for f in data[..whole].chunks_exact(bpf) {
            self.decode_frame(f, out);
        }
        self.partial.extend_from_slice(&data[whole..]);
    }

    fn decode_frame(&mut self, f: &[u8], out: &mut Vec<f32>) {
        match self.format {
            RawFormat::S16le => {
                for (slot, b) in self.frame.iter_mut().zip(f.chunks_exact(2)) {
                    *slot = i16::from_le_bytes([b[0], b[1]]) as f32 / 32_768.0;
                }
            }
            RawFormat::F32le => {
                for (slot, b) in self.frame.iter_mut().zip(f.chunks_exact(4)) {
                    *slot = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        out.push(self.pick.mono(&self.frame, |x| x));
    }

    /// Bytes of an incomplete frame left over (discarded at end of input).
    pub fn leftover(&self) -> usize {
        self.partial.len()
    }

    pub fn clear(&mut self) {
        self.partial.clear();
    }
}

/// Raw PCM on standard input.
pub struct StdinSource {
    rate: u32,
    decoder: RawDecoder,
}

impl StdinSource {
    pub fn new(format: RawFormat, rate: u32, channels: u16, pick: ChannelPick) -> Self {
        StdinSource {
            rate,
            decoder: RawDecoder::new(format, channels as usize, pick),
        }
    }
}

/// Wait up to `ms` for `fd` to become readable; true when readable (or at end of input / error).
#[cfg(unix)]
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is a valid, initialised pollfd that lives for the duration of the call, and nfds is 1.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r != 0
}

#[cfg(not(unix))]
fn readable(_fd: i32, _ms: i32) -> bool {
    true
}

impl Source for StdinSource {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn is_live(&self) -> bool {
        false
    }

    fn start(
        mut self: Box<Self>,
        mut ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle> {
        let thread = std::thread::Builder::new()
            .name("sigflow-stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = vec![0u8; 8192];
                let mut mono = Vec::with_capacity(4096);
                let result = loop {
                    if ctl.stop_requested() {
                        break Ok(());
                    }
                    // Poll first so a stop request is seen while no data comes.
                    if !readable(0, 50) {
                        continue;
                    }
                    let n = match stdin.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => break Err(Error::io("reading standard input", e)),
                    };
                    mono.clear();
                    self.decoder.decode(&buf[..n], &mut mono);
                    if !push_wait(&mut ring, &mono, &ctl) {
                        break Ok(());
                    }
                };
                ctl.finished.store(true, Ordering::Release);
                result
            })
            .map_err(|e| Error::io("starting the stdin source thread", e))?;
        Ok(SourceHandle {
            thread: Some(thread),
        })
    }
}

/// Raw PCM from one TCP client at a time; when a client disconnects the next one is accepted.
pub struct TcpPcmSource {
    listener: TcpListener,
    rate: u32,
    decoder: RawDecoder,
}

/// Parse a listen address (`host:port`).
pub fn parse_listen(addr: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("invalid listen address {addr:?}: {e} (expected host:port)"))?
        .next()
        .ok_or_else(|| format!("listen address {addr:?} resolves to nothing"))
}

impl TcpPcmSource {
    /// Bind the listening socket now, so a busy port is reported at start-up.
    pub fn bind(
        addr: SocketAddr,
        format: RawFormat,
        rate: u32,
        channels: u16,
        pick: ChannelPick,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(TcpPcmSource {
            listener,
            rate,
            decoder: RawDecoder::new(format, channels as usize, pick),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Source for TcpPcmSource {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn is_live(&self) -> bool {
        false
    }

    fn start(
        mut self: Box<Self>,
        mut ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle> {
        let thread = std::thread::Builder::new()
            .name("sigflow-tcp".into())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut mono = Vec::with_capacity(4096);
                'accept: while !ctl.stop_requested() {
                    let (mut stream, peer) = match self.listener.accept() {
                        Ok(c) => c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        Err(e) => {
                            ctl.finished.store(true, Ordering::Release);
                            return Err(Error::io("accepting a tcp client", e));
                        }
                    };
                    tracing::info!(%peer, "tcp source: client connected");
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                    self.decoder.clear();
                    loop {
                        if ctl.stop_requested() {
                            break 'accept;
                        }
                        let n = match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock
                                        | std::io::ErrorKind::TimedOut
                                        | std::io::ErrorKind::Interrupted
                                ) =>
                            {
                                continue
                            }
                            Err(e) => {
                                tracing::warn!(%peer, "tcp source: {e}");
                                break;
                            }
                        };
                        mono.clear();
                        self.decoder.decode(&buf[..n], &mut mono);
                        if !push_wait(&mut ring, &mono, &ctl) {
                            break 'accept;
                        }
                    }
                    tracing::info!(%peer, "tcp source: client disconnected");
                }
                ctl.finished.store(true, Ordering::Release);
                Ok(())
            })
            .map_err(|e| Error::io("starting the tcp source thread", e))?;
        Ok(SourceHandle {
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_reads() {
        let mut d = RawDecoder::new(RawFormat::S16le, 2, ChannelPick::Channel(1));
        let bytes: Vec<u8> = [100i16, -16384, 5, 16384]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        d.decode(&bytes[..3], &mut out);
        assert!(out.is_empty());
        d.decode(&bytes[3..], &mut out);
        assert_eq!(out, vec![-0.5, 0.5]);
        assert_eq!(d.leftover(), 0);
    }
}
