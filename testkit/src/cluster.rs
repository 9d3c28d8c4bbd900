//! A throwaway PostgreSQL cluster of its own (initdb as `postgres`, on a port and in a folder
//! of its own), for the tests that need a second server (a restore, TLS, a standby to fail
//! over to). Stopped and removed when dropped.

use std::process::{Command, Stdio};

pub struct Cluster {
    pub dir: String,
    pub port: u16,
    bindir: String,
}

impl Cluster {
    /// `initdb` with the programs of `bindir`, in `/tmp/soniq-<name>-<pid>`.
    pub fn init(bindir: &str, name: &str, port: u16) -> Self {
        Self::init_with(bindir, name, port, &[])
    }

    /// `init`, with more `initdb` options.
    pub fn init_with(bindir: &str, name: &str, port: u16, options: &[&str]) -> Self {
        let cluster = Cluster {
            dir: postgres_folder(name),
            port,
            bindir: bindir.to_string(),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
            .iter()
            .chain(options)
            .copied()
            .collect::<Vec<_>>(),
        );
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), in a folder of its own; start
    /// it to follow the primary.
    pub fn standby_of(primary: &Cluster, name: &str, port: u16) -> Self {
        let standby = Cluster {
            dir: postgres_folder(name),
            port,
            bindir: primary.bindir.clone(),
        };
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                &standby.data(),
                "-h",
                "localhost",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "--checkpoint=fast",
            ],
        );
        standby
    }

    /// Promote it (a standby) to primary, waiting until it is.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }

    /// Stop it at once, as a crash would (no shutdown checkpoint).
    pub fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-w", "-m", "immediate", "stop"],
        );
    }

    /// Append lines to its postgresql.conf.
    pub fn configure(&self, lines: &[String]) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{}/postgresql.conf", self.data()))
            .unwrap();
        for line in lines {
            writeln!(conf, "{line}").unwrap();
        }
    }

    pub fn data(&self) -> String {
        format!("{}/data", self.dir)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@localhost:{}/{database}", self.port)
    }

    /// Start it, with `settings` (`name=value`) on the command line.
    pub fn start(&self, settings: &[&str]) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=localhost",
            self.port, self.dir
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = format!("{}/log", self.dir);
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-w",
                "-l",
                &log,
                "-o",
                &options,
                "start",
            ],
        );
    }

    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-m", "fast", "stop"]);
    }

    /// Run one of its programs as `postgres`, in its folder; panics with its output unless it
    /// succeeds.
    pub fn run(&self, program: &str, args: &[&str]) {
        let output = Command::new("sudo")
            .args(["-u", "postgres", &format!("{}/{program}", self.bindir)])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// An empty `/tmp/soniq-<name>-<pid>` that `postgres` owns.
fn postgres_folder(name: &str) -> String {
    let dir = format!("/tmp/soniq-{name}-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let chown = Command::new("chown")
        .args(["postgres", &dir])
        .status()
        .unwrap();
    assert!(chown.success());
    dir
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("sudo")
            .args(["-u", "postgres", &format!("{}/pg_ctl", self.bindir)])
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
