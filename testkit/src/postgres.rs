//! A real PostgreSQL for tests: Debian's `postgresql` package, a fresh cluster in a temp
//! dir (`initdb`, as the `postgres` user when the tests run as root, since `initdb` refuses
//! root), served on a free loopback port by `pg_ctl`, stopped (`-m immediate`) and removed on
//! drop. Trust authentication on loopback only: the cluster lives as long as its test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout). A missing package
/// fails the test: `./test.sh` installs it.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "{} (looked in /usr/lib/postgresql/*/bin)",
            crate::installed::missing("PostgreSQL (Debian's `postgresql`)")
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program` of the cluster's binaries, as `postgres` when the tests run as root.
fn run(bin: &Path, program: &str, args: &[&str]) -> Output {
    let path = bin.join(program);
    let mut command = if is_root() {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", "postgres", "--"]).arg(&path);
        runuser
    } else {
        Command::new(&path)
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", path.display()))
}

impl Postgres {
    /// A fresh cluster with a superuser `obb` and a database `obb`, accepting connections
    /// on `127.0.0.1:<port>` when this returns. Tests need no durability: `fsync` is off.
    pub fn start() -> Self {
        Self::start_with("-c fsync=off")
    }

    /// [`Postgres::start`] with PostgreSQL's own defaults (`fsync` on, as a deployment runs
    /// it), for the benchmarks.
    pub fn start_durable() -> Self {
        Self::start_with("")
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection to it is cut, as in
    /// a failover; it accepts connections again on the same port when this returns.
    pub fn restart(&self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        // With its log file, as at start: the new server must not hold this process's pipes.
        let log = self
            .dir
            .path()
            .join("server.log")
            .to_string_lossy()
            .into_owned();
        let restarted = run(
            &self.bin,
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "30", "restart",
            ],
        );
        assert!(restarted.status.success(), "pg_ctl restart: {restarted:?}");
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn start_with(extra: &str) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        // The server runs as `postgres`: it must own the cluster's directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let data = dir.path().join("data");
        let data_arg = data.to_string_lossy().into_owned();
        let init = run(
            &bin,
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "obb",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(init.status.success(), "initdb: {init:?}");
        let mut last = None;
        for _ in 0..5 {
            let port = crate::free_port();
            let options = format!(
                "-k {} -c listen_addresses=127.0.0.1 -p {port} -c max_connections=400 {extra}",
                dir.path().display()
            );
            let log = dir.path().join("server.log").to_string_lossy().into_owned();
            let started = run(
                &bin,
                "pg_ctl",
                &[
                    "-D", &data_arg, "-o", &options, "-l", &log, "-w", "-t", "30", "start",
                ],
            );
            if started.status.success() {
                let server = Self { dir, bin, port };
                server.create_database("obb");
                return server;
            }
            last = Some(started);
        }
        panic!("pg_ctl start failed five times: {last:?}");
    }

    /// `postgres://obb@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://obb@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` with `psql` in `database`; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql `{sql}`: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The rows of `sql` in the database of `url` (one of this server's), each column as
    /// text, `None` for NULL.
    pub fn query(&self, url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        const FIELD: &str = "\u{1f}";
        const NULL: &str = "\u{1e}";
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", FIELD])
            .args(["-P", &format!("null={NULL}"), "-d", url, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql `{sql}`: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                line.split(FIELD)
                    .map(|field| (field != NULL).then(|| field.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// Whether the gateway tests run on PostgreSQL: `OBB_TEST_ENGINE=postgres` (`./test.sh` runs
/// the API suite once on each engine).
pub fn engine_is_postgres() -> bool {
    std::env::var("OBB_TEST_ENGINE").is_ok_and(|engine| engine == "postgres")
}

/// The one server of this test process, started at first use, for every gateway the process
/// starts on PostgreSQL (each on a database of its own). A static is never dropped, so a
/// watchdog stops the server and removes its cluster when the process ends, however it ends.
pub fn shared() -> &'static Postgres {
    static SERVER: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let server = Postgres::start();
        let data = server.dir.path().join("data");
        let pg_ctl = server.bin.join("pg_ctl");
        let as_postgres = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_postgres}{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            dir = server.dir.path().display(),
        );
        // `setsid -f` forks it off and returns at once; it outlives this process.
        let forked = Command::new("setsid")
            .args(["-f", "sh", "-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the PostgreSQL watchdog starts");
        assert!(forked.success(), "setsid: {forked}");
        server
    })
}

impl Postgres {
    /// A new empty database; returns its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.create_database(&name);
        self.url(&name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
        // The directory goes with `dir`; wait until the port is free, so the next test can
        // take it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
