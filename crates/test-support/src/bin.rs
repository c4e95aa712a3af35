//! Running the real `autoenroll` binary from tests: a server on a random loopback port (its
//! first stdout line names the URL) and one-shot commands.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

pub struct Server {
    child: Child,
    // Kept open: the server must be able to write to stdout.
    _stdout: BufReader<ChildStdout>,
    pub base: String,
    /// The startup banner, one entry per line.
    pub banner: Vec<String>,
}

impl Server {
    /// `autoenroll server run --listen 127.0.0.1:0 --data-dir DATA EXTRA...`
    pub fn start(bin: &str, data: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(bin, data, extra, &[])
    }

    /// `start` with extra environment (e.g. systemd's NOTIFY_SOCKET).
    pub fn start_with_env(bin: &str, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(bin)
            .args(["server", "run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server's first line");
        let base = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        assert!(base.starts_with("https://127.0.0.1:"), "unexpected first line {line:?}");
        let mut banner = vec![line.trim().to_string()];
        // The banner ends with the root CA line.
        while !banner.last().is_some_and(|l| l.starts_with("root CA certificate")) {
            let mut l = String::new();
            if stdout.read_line(&mut l).unwrap_or(0) == 0 {
                break;
            }
            banner.push(l.trim().to_string());
        }
        Server { child, _stdout: stdout, base, banner }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit on its own.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Sends a signal (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "kill -{name} {}", self.pid());
    }

    /// The value of a banner line `label: value`.
    pub fn banner_value(&self, label: &str) -> Option<String> {
        self.banner.iter().find_map(|l| l.strip_prefix(label).map(|v| v.trim_start_matches(':').trim().to_string()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin ARGS` with extra environment and optional standard input.
pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run autoenroll");
    if let Some(s) = stdin {
        child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for autoenroll")
}

/// stdout + stderr, asserting success.
pub fn ok(o: &Output) -> String {
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    text
}

/// A plain HTTP/1.0 GET on loopback; returns (status line, body). Enough for a CRL.
pub fn http_get(url: &str) -> (String, Vec<u8>) {
    use std::io::Read;
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let status = String::from_utf8_lossy(&buf[..head_end]).lines().next().unwrap_or_default().to_string();
    (status, buf[head_end + 4..].to_vec())
}
