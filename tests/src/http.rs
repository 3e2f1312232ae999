//! HTTP file servers for tests: two real ones and a fault injector.
//!
//! - [`busybox_httpd`]: BusyBox httpd, which honours `Range` (206 with `Content-Range`).
//! - [`python_http_server`]: `python3 -m http.server`, which ignores `Range` (always 200).
//! - [`FaultyServer`]: a tiny HTTP/1.1 server in this process, **only** for faults no real
//!   server produces on demand: connections cut or stalled mid-body, a `Content-Length`
//!   larger than the body, 503s before success, redirects.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::{free_tcp_port, tcp_port_open};
use crate::process::{ChildGuard, wait_until};
use crate::tools::require_tool;

/// A real HTTP server serving a directory on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct StaticServer {
    _guard: ChildGuard,
    port: u16,
}

impl StaticServer {
    /// The URL of `name` in the served directory.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn start(name: &str, command: &mut Command, port: u16) -> Self {
        let mut guard = ChildGuard::spawn(name, command);
        let addr = (Ipv4Addr::LOCALHOST, port).into();
        wait_until(
            &format!("{name} to listen"),
            Duration::from_secs(20),
            || {
                guard.assert_running();
                tcp_port_open(addr)
            },
        );
        Self {
            _guard: guard,
            port,
        }
    }
}

/// BusyBox httpd serving `dir` (supports Range requests).
pub fn busybox_httpd(dir: &Path) -> StaticServer {
    let port = free_tcp_port();
    StaticServer::start(
        "busybox httpd",
        Command::new(require_tool("busybox"))
            .args(["httpd", "-f", "-p"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-h")
            .arg(dir),
        port,
    )
}

/// `python3 -m http.server` serving `dir` (ignores Range requests).
pub fn python_http_server(dir: &Path) -> StaticServer {
    let port = free_tcp_port();
    StaticServer::start(
        "python3 -m http.server",
        Command::new(require_tool("python3"))
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        port,
    )
}

/// Which faults [`FaultyServer`] injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Honour `Range` (and `If-Range` against [`Faults::etag`]).
    pub ranges: bool,
    /// Cut the connection after this many body bytes…
    pub cut_after: Option<u64>,
    /// …in this many responses (then serve normally).
    pub cuts: usize,
    /// Instead of closing at the cut, go silent for this long (a stalled connection).
    pub stall: Option<Duration>,
    /// Announce this many bytes more than the body has (every response).
    pub extra_length: u64,
    /// Answer this many requests with 503 first.
    pub unavailable: usize,
    /// The ETag to send.
    pub etag: Option<String>,
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

/// A fault-injecting HTTP/1.1 server for one file, on 127.0.0.1. Paths under `/r/` are
/// redirected (302) to the same path without the prefix; every other path serves the file.
#[derive(Debug)]
pub struct FaultyServer {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyServer {
    pub fn start(file: &Path, faults: Faults) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ServerState {
            file: file.to_path_buf(),
            faults,
            cuts_done: AtomicUsize::new(0),
            unavailable_done: AtomicUsize::new(0),
            seen: Arc::clone(&seen),
        });
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = Arc::clone(&state);
                            std::thread::spawn(move || {
                                let _ = state.serve(stream);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            port,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct ServerState {
    file: PathBuf,
    faults: Faults,
    cuts_done: AtomicUsize,
    unavailable_done: AtomicUsize,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl ServerState {
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let (mut range, mut if_range) = (None, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(value.trim().to_owned()),
                    "if-range" => if_range = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        self.seen.lock().expect("lock").push(SeenRequest {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
        });
        if let Some(target) = path.strip_prefix("/r") {
            return write!(
                writer,
                "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        if self.unavailable_done.fetch_add(1, Ordering::SeqCst) < self.faults.unavailable {
            return write!(
                writer,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        let mut file = std::fs::File::open(&self.file)?;
        let size = file.metadata()?.len();
        let etag_matches = match (&if_range, &self.faults.etag) {
            (None, _) => true,
            (Some(sent), Some(etag)) => sent == etag,
            (Some(_), None) => false,
        };
        let range = range
            .filter(|_| self.faults.ranges && etag_matches)
            .and_then(|range| parse_range(&range, size));
        let (status, start, end) = match range {
            Some((start, _)) if start >= size => {
                return write!(
                    writer,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            Some((start, end)) => (206, start, end),
            None => (200, 0, size),
        };
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            if status == 206 {
                "Partial Content"
            } else {
                "OK"
            },
            end - start + self.faults.extra_length
        );
        if status == 206 {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{size}\r\n",
                end - 1
            ));
        }
        if self.faults.ranges {
            head.push_str("Accept-Ranges: bytes\r\n");
        }
        if let Some(etag) = &self.faults.etag {
            head.push_str(&format!("ETag: {etag}\r\n"));
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        let mut body_len = end - start;
        // Only responses long enough to be cut count as cuts.
        if let Some(cut) = self.faults.cut_after
            && body_len > cut
            && self.cuts_done.fetch_add(1, Ordering::SeqCst) < self.faults.cuts
        {
            body_len = cut;
        }
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut file.take(body_len), &mut writer)?;
        writer.flush()?;
        if body_len < end - start
            && let Some(stall) = self.faults.stall
        {
            std::thread::sleep(stall);
        }
        writer.shutdown(std::net::Shutdown::Both)
    }
}

/// `bytes=a-b` or `bytes=a-` → `[a, b + 1)` clipped to the file.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => size,
        end => end.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    Some((start, end.max(start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_clip() {
        assert_eq!(parse_range("bytes=0-99", 50), Some((0, 50)));
        assert_eq!(parse_range("bytes=10-", 50), Some((10, 50)));
        assert_eq!(parse_range("items=1-2", 50), None);
    }

    #[test]
    fn the_faulty_server_cuts_the_first_response() {
        let dir = crate::scratch_dir("faulty");
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 10_000]).unwrap();
        let server = FaultyServer::start(
            &file,
            Faults {
                cut_after: Some(100),
                cuts: 1,
                ..Faults::default()
            },
        );
        let get = || {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            write!(stream, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).unwrap();
            response
        };
        let first = get();
        let second = get();
        assert!(first.len() < 1000 && second.len() > 10_000);
        assert_eq!(server.requests().len(), 2);
    }
}
