//! A private PostgreSQL cluster for tests: `initdb` into a temporary directory, listening on
//! 127.0.0.1 at a free port, stopped (and deleted) when the guard drops. Debian's `postgresql`
//! package provides the binaries; as root the cluster runs as the `postgres` user.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found under /usr/lib/postgresql: install them with `apt-get install -y postgresql` (scripts/test.sh does this)")
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root (initdb refuses root).
fn run(bin: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let dir = std::env::temp_dir().join(format!("autoenroll-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster directory");
        if is_root() {
            let ok =
                Command::new("chown").arg("postgres:postgres").arg(&dir).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "chown postgres {}", dir.display());
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        run(&bin.join("initdb"), &["-D", &data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let opts = format!("-p {port} -k {} -h 127.0.0.1 -c fsync=off", dir.display());
        let log = dir.join("log").to_string_lossy().to_string();
        run(&bin.join("pg_ctl"), &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"]);
        PgCluster { dir, bin, port }
    }

    /// A fresh database in this cluster.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        run(&self.bin.join("createdb"), &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]);
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().to_string();
        let _ = std::panic::catch_unwind(|| run(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "stop"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
