//! A loopback HTTP proxy in front of moto's S3 for the state tests: it logs every request,
//! delays each by a fixed time (the benchmark's "20 ms per S3 call"), and injects faults chosen
//! per request — 503 SlowDown without forwarding, or a write forwarded to moto whose answer is
//! then dropped (the connection closed), the nastiest failure: S3 did it, the client cannot know.
//!
//! Bytes are relayed unchanged (the `Host` header included, so SigV4 signatures stay valid);
//! each request is answered with `Connection: close`, so one connection carries one request.
//! One thread per connection; the listener thread ends with the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Answer 503 SlowDown without forwarding.
    SlowDown,
    /// Forward it, then close the connection without answering.
    DropAnswer,
}

/// A request as the fault rule sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The fault injected.
    pub fault: Fault,
}

type Rule = Box<dyn FnMut(&Seen) -> Fault + Send>;

pub struct S3Proxy {
    pub url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    rule: Arc<Mutex<Rule>>,
    delay: Arc<Mutex<Duration>>,
}

impl S3Proxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`) on a free loopback port.
    pub fn start(upstream: &str) -> S3Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let url = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(|_: &Seen| Fault::Pass)));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        {
            let (log, rule, delay) = (log.clone(), rule.clone(), delay.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let (log, rule, delay, upstream) =
                        (log.clone(), rule.clone(), delay.clone(), upstream.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, &upstream, &log, &rule, &delay);
                    });
                }
            });
        }
        S3Proxy {
            url,
            log,
            rule,
            delay,
        }
    }

    /// Chooses the fault of every later request.
    pub fn set_rule(&self, rule: impl FnMut(&Seen) -> Fault + Send + 'static) {
        *self.rule.lock().unwrap_or_else(|p| p.into_inner()) = Box::new(rule);
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Seen>>,
    rule: &Mutex<Rule>,
    delay: &Mutex<Duration>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = Vec::new();
            reader.read_until(b'\n', &mut size)?;
            body.extend_from_slice(&size);
            let n = usize::from_str_radix(
                String::from_utf8_lossy(&size)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    }
    let mut seen = Seen {
        method,
        path,
        body,
        fault: Fault::Pass,
    };
    seen.fault = (rule.lock().unwrap_or_else(|p| p.into_inner()))(&seen);
    let fault = seen.fault;
    let wait = *delay.lock().unwrap_or_else(|p| p.into_inner());
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(seen.clone());
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
    let mut client = client;
    if fault == Fault::SlowDown {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }
    let mut up = TcpStream::connect(upstream)?;
    let head_text = if header("connection").is_some() {
        text.clone()
    } else {
        text.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
    };
    up.write_all(head_text.as_bytes())?;
    up.write_all(&seen.body)?;
    up.flush()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if fault == Fault::DropAnswer {
        return client.shutdown(std::net::Shutdown::Both);
    }
    // Say "close" to the client too: one request per connection keeps the parsing above simple.
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    client.write_all(head.join("\r\n").as_bytes())?;
    client.write_all(b"\r\nConnection: close")?;
    client.write_all(&answer[split..])?;
    client.flush()
}
