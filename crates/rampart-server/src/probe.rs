//! `rampart probe [URL]`: one plain-HTTP GET, exit 0 on `200`, 1 otherwise. The container image has no shell
//! and no curl, so its HEALTHCHECK runs the server binary in this mode.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000/v2/health/live";
const TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the probe when the first argument is `probe`; `None` otherwise.
pub fn from_args(args: &[String]) -> Option<ExitCode> {
    if args.get(1).map(String::as_str) != Some("probe") {
        return None;
    }
    let url = match args.len() {
        2 => DEFAULT_URL,
        3 => args[2].as_str(),
        _ => {
            eprintln!("usage: rampart probe [http://HOST:PORT/PATH]   (default {DEFAULT_URL})");
            return Some(ExitCode::from(2));
        }
    };
    Some(match probe(url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe {url}: {e}");
            ExitCode::FAILURE
        }
    })
}

/// `http://host[:port]/path` → (host, port, path).
fn parse(url: &str) -> Result<(&str, u16, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are probed (TLS listeners: use an orchestrator probe)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| format!("invalid port '{p}'"))?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("invalid URL".into());
    }
    Ok((host, port, path))
}

fn probe(url: &str) -> Result<(), String> {
    let (host, port, path) = parse(url)?;
    let addr =
        (host, port).to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]).map_err(|e| e.to_string())? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("HTTP status {code}")),
        None => Err("no HTTP status line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse("http://127.0.0.1:8000/v2/health/ready").unwrap(),
            ("127.0.0.1", 8000, "/v2/health/ready")
        );
        assert_eq!(parse("http://localhost").unwrap(), ("localhost", 80, "/"));
        assert_eq!(parse("http://[::1]:9/x").unwrap(), ("::1", 9, "/x"));
        assert!(parse("https://h/x").is_err());
        assert!(parse("http://h:99999/").is_err());
        assert!(parse("http://h/a b").is_err());
    }
}
