//! An HTTP proxy that sits in front of a real Redfish peer, records every request and
//! injects the faults no peer produces on demand: 5xx answers, 401s in the middle of a
//! session, slow answers, connection resets, malformed or huge bodies.
//!
//! It can also play a **SessionService** in front of a peer that has none (sushy-tools speaks
//! HTTP Basic only): it hands out tokens, forwards token requests upstream with Basic
//! credentials, and can expire every token at once. That part is a mock by necessity — no
//! installed peer implements Redfish sessions — and is used only to exercise session
//! login, re-login on 401 and logout.
//!
//! One request per connection (`Connection: close`), a thread per connection; plain
//! HTTP/1.1 only. Test-only code: it panics on what it cannot parse.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do instead of (or before) forwarding a request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, extra headers and body (content type JSON); the peer never
    /// sees the request.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait, then forward normally.
    Delay(Duration),
    /// Read the request, then reset the connection (RST, no answer).
    Reset,
    /// Answer 200 with a body of this many bytes and no Content-Length.
    HugeBody(usize),
}

impl Fault {
    /// [`Fault::Respond`] without extra headers.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Fault::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    remaining: u32,
}

/// One request as the proxy saw it, logged when it arrives.
#[derive(Debug, Clone)]
pub struct Recorded {
    id: u64,
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the client received (0 for a reset, or while the answer is pending).
    pub status: u16,
}

impl Recorded {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Default)]
struct Sessions {
    username: String,
    password: String,
    /// The Basic credentials the proxy presents upstream.
    upstream_basic: String,
    tokens: HashSet<String>,
    counter: u64,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Recorded>,
    sessions: Option<Sessions>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` (a plain-HTTP peer on loopback).
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = thread_state.clone();
                std::thread::spawn(move || handle(stream, upstream, &state));
            }
        });
        Self { addr, state, stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `times` requests whose path contains `path_contains`
    /// (and whose method is `method`, if given).
    pub fn inject(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: u32) {
        self.lock().rules.push(Rule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Requests so far with this method whose path contains `path_contains`.
    pub fn matching(&self, method: &str, path_contains: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .collect()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Drops every fault not yet used up.
    pub fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    /// Plays a SessionService accepting `username`/`password`; token requests go upstream
    /// with HTTP Basic `upstream_username`/`upstream_password`.
    pub fn emulate_sessions(
        &self,
        username: &str,
        password: &str,
        upstream_username: &str,
        upstream_password: &str,
    ) {
        self.lock().sessions = Some(Sessions {
            username: username.to_owned(),
            password: password.to_owned(),
            upstream_basic: basic(upstream_username, upstream_password),
            ..Sessions::default()
        });
    }

    /// Forgets every session token, as a BMC does when sessions time out.
    pub fn expire_sessions(&self) {
        if let Some(sessions) = self.lock().sessions.as_mut() {
            sessions.tokens.clear();
        }
    }

    /// How many session tokens are live.
    pub fn live_sessions(&self) -> usize {
        self.lock().sessions.as_ref().map_or(0, |s| s.tokens.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("proxy state")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn handle(mut stream: TcpStream, upstream: SocketAddr, state: &Mutex<State>) {
    let Some(mut request) = read_request(&stream) else {
        return;
    };
    let fault = {
        let mut state = state.lock().expect("proxy state");
        let found = state.rules.iter_mut().find(|rule| {
            rule.remaining > 0
                && request.path.contains(&rule.path_contains)
                && rule.method.as_deref().is_none_or(|m| m == request.method)
        });
        found.map(|rule| {
            rule.remaining -= 1;
            rule.fault.clone()
        })
    };
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let record = Recorded {
        id,
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: request.body.clone(),
        status: 0,
    };
    state.lock().expect("proxy state").log.push(record);
    let set_status = |status: u16| {
        let mut state = state.lock().expect("proxy state");
        if let Some(entry) = state.log.iter_mut().find(|r| r.id == id) {
            entry.status = status;
        }
    };
    let response = match fault {
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            let mut response = Response::json(status, body.into_bytes());
            response.headers.extend(headers);
            Some(response)
        }
        Some(Fault::Reset) => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            None
        }
        Some(Fault::HugeBody(size)) => {
            set_status(200);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"Name\": \"",
            );
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < size {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            let _ = stream.write_all(b"\"}");
            return;
        }
        Some(Fault::Delay(delay)) => {
            std::thread::sleep(delay);
            Some(forward_or_play_session(&mut request, upstream, state))
        }
        None => Some(forward_or_play_session(&mut request, upstream, state)),
    };
    set_status(response.as_ref().map_or(0, |r| r.status));
    if let Some(response) = response {
        let _ = stream.write_all(&response.to_bytes());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            reason: "Injected".into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason).into_bytes();
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

fn forward_or_play_session(
    request: &mut Request,
    upstream: SocketAddr,
    state: &Mutex<State>,
) -> Response {
    let playing = state.lock().expect("proxy state").sessions.is_some();
    if !playing {
        return forward(request, upstream);
    }
    let sessions_path = "/redfish/v1/SessionService/Sessions";
    if request.method == "POST" && request.path.trim_end_matches('/') == sessions_path {
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
        let mut guard = state.lock().expect("proxy state");
        let sessions = guard.sessions.as_mut().expect("sessions are on");
        if body["UserName"] == sessions.username.as_str()
            && body["Password"] == sessions.password.as_str()
        {
            static NEXT: AtomicU64 = AtomicU64::new(1);
            sessions.counter += 1;
            let token = format!("token-{}", NEXT.fetch_add(1, Ordering::SeqCst));
            sessions.tokens.insert(token.clone());
            let mut response = Response::json(201, b"{}".to_vec());
            response.headers.push(("X-Auth-Token".into(), token));
            response.headers.push((
                "Location".into(),
                format!("{sessions_path}/{}", sessions.counter),
            ));
            return response;
        }
        return Response::json(
            401,
            br#"{"error": {"message": "bad credentials"}}"#.to_vec(),
        );
    }
    let token = request.header("X-Auth-Token").map(str::to_owned);
    let mut guard = state.lock().expect("proxy state");
    let sessions = guard.sessions.as_mut().expect("sessions are on");
    if request.method == "DELETE" && request.path.starts_with(sessions_path) {
        if let Some(token) = &token {
            sessions.tokens.remove(token);
        }
        return Response::json(204, Vec::new());
    }
    match token {
        Some(token) if sessions.tokens.contains(&token) => {
            let upstream_basic = sessions.upstream_basic.clone();
            drop(guard);
            request
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("x-auth-token"));
            request
                .headers
                .push(("Authorization".into(), upstream_basic));
        }
        Some(_) => {
            return Response::json(
                401,
                br#"{"error": {"message": "session expired"}}"#.to_vec(),
            );
        }
        None => drop(guard),
    }
    let mut response = forward(request, upstream);
    // Advertise the sessions in the service root, as a BMC with a SessionService does.
    if request.path.trim_end_matches('/') == "/redfish/v1"
        && response.status == 200
        && let Ok(mut root) = serde_json::from_slice::<serde_json::Value>(&response.body)
    {
        root["Links"]["Sessions"] = serde_json::json!({ "@odata.id": sessions_path });
        response.body = serde_json::to_vec(&root).expect("serialise the root");
    }
    response
}

fn forward(request: &Request, upstream: SocketAddr) -> Response {
    let mut stream = match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(err) => return Response::json(502, format!("{{\"proxy\": \"{err}\"}}").into_bytes()),
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&request.body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("HTTP/1.1 502 Bad Gateway");
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(502);
    let reason = parts.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        reason,
        headers,
        body,
    }
}

fn basic(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{username}:{password}").as_bytes())
    )
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_encode_like_rfc_4648() {
        assert_eq!(basic("admin", "password"), "Basic YWRtaW46cGFzc3dvcmQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn responses_are_parsed_and_reframed() {
        let raw = b"HTTP/1.1 404 NOT FOUND\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let response = parse_response(raw);
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"{}");
        let bytes = String::from_utf8(response.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 404 NOT FOUND\r\n"));
        assert!(bytes.contains("Connection: close"));
    }
}
