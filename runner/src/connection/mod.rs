//! Connection strings as libpq users write them, for every connection the runner, the CLI
//! and the bench open: a URL or `keyword=value` pairs, with multi-host failover
//! (`host=a,b target_session_attrs=read-write`, read by tokio-postgres), TLS by `sslmode`
//! ([`tls`]) and the password from the string, `PGPASSWORD` or the password file
//! ([`passfile`]).

mod mask;
mod options;
mod passfile;
mod tls;

pub use mask::mask_url;

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::{Path, PathBuf};
use tokio_postgres::config::Host;
use tokio_postgres::{AsyncMessage, Client, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where libpq builds put the server's socket by default (Debian's, upstream's).
const DEFAULT_SOCKET_FOLDERS: [&str; 3] = ["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// A parsed connection string: where to connect, as whom, and how TLS goes.
#[derive(Clone)]
pub struct ConnectionConfig {
    postgres: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl ConnectionConfig {
    /// Read `connection` (a URL or `keyword=value` pairs); a bad one is `Error::Config`
    /// saying what is wrong.
    pub fn parse(connection: &str) -> Result<Self> {
        Self::parse_with_env(connection, |var| std::env::var(var).ok())
    }

    fn parse_with_env(connection: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let invalid = |e: String| Error::Config(format!("invalid connection string: {e}"));
        let (rest, options) = options::split(connection).map_err(invalid)?;
        let options = options.or_env(&env);
        let mut postgres: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
        if postgres.get_user().is_none() {
            // tokio-postgres's default, made explicit: the password file is looked up for it.
            let user = whoami::username()
                .map_err(|e| invalid(format!("no user given and none known here: {e}")))?;
            postgres.user(user);
        }
        // As in libpq, a Unix socket never uses TLS (and needs no certificate).
        let only_sockets = !postgres.get_hosts().is_empty()
            && postgres
                .get_hosts()
                .iter()
                .all(|host| matches!(host, Host::Unix(_)));
        let tls = if only_sockets {
            tls::tls(Some("disable"), None, None, None)
        } else {
            tls::tls(
                options.sslmode.as_deref(),
                options.sslrootcert.as_deref(),
                options.sslcert.as_deref(),
                options.sslkey.as_deref(),
            )
        }
        .map_err(invalid)?;
        postgres.ssl_mode(tls.mode);
        if postgres.get_password().is_none() {
            if let Some(password) = password_of(&postgres, options.passfile, &env) {
                postgres.password(password);
            }
        }
        Ok(ConnectionConfig {
            postgres,
            tls: MakeRustlsConnect::new(tls.config),
        })
    }

    /// The database it names; none named: the user's, as the server takes it.
    pub fn dbname(&self) -> &str {
        self.postgres
            .get_dbname()
            .or(self.postgres.get_user())
            .unwrap_or("postgres")
    }

    /// The same login, to another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.postgres.dbname(dbname);
        other
    }

    /// One connection of its own, driven in the background.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.postgres.connect(self.tls.clone()).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A connection whose notifications (`LISTEN`) go to `on_notification`, and the task
    /// driving it, which ends when the connection does.
    pub async fn connect_notifying(
        &self,
        mut on_notification: impl FnMut(Notification) + Send + 'static,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, mut connection) = self.postgres.connect(self.tls.clone()).await?;
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
                if let AsyncMessage::Notification(notification) = message {
                    on_notification(notification);
                }
            }
        });
        Ok((client, driver))
    }

    /// A pool of up to `size` connections; each new one tries the hosts again, so after a
    /// failover the pool finds the new primary (with `target_session_attrs=read-write`).
    pub fn pool(&self, size: usize) -> Result<Pool> {
        let manager = Manager::from_config(
            self.postgres.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Config(format!("cannot make a connection pool: {e}")))
    }
}

/// `PGPASSWORD`, else the password file's line for the first host. libpq looks one up for
/// each host it tries; tokio-postgres holds one password for all of them.
fn password_of(
    postgres: &tokio_postgres::Config,
    passfile: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if let Some(password) = env("PGPASSWORD") {
        return Some(password);
    }
    let path = match passfile {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env("HOME")?).join(".pgpass"),
    };
    let user = postgres.get_user()?;
    let host = match postgres.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        // The default socket folder matches `localhost` lines, as in libpq; another, its path.
        Some(Host::Unix(folder))
            if DEFAULT_SOCKET_FOLDERS
                .iter()
                .any(|d| folder == Path::new(d)) =>
        {
            "localhost".to_string()
        }
        Some(Host::Unix(folder)) => folder.to_string_lossy().into_owned(),
        None => "localhost".to_string(),
    };
    let login = passfile::Login {
        host: &host,
        port: postgres.get_ports().first().copied().unwrap_or(5432),
        database: postgres.get_dbname().unwrap_or(user),
        user,
    };
    passfile::lookup(&path, &login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_string_then_pgpassword_then_the_file() {
        let dir = std::env::temp_dir().join(format!("soniq-connection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".pgpass");
        std::fs::write(&file, "db:6543:shop:app:from-file\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let home = dir.to_str().unwrap().to_string();
        let password = |url: &str, pgpassword: Option<&str>| {
            let env = |var: &str| match var {
                "HOME" => Some(home.clone()),
                "PGPASSWORD" => pgpassword.map(str::to_string),
                _ => None,
            };
            let config = ConnectionConfig::parse_with_env(url, env).unwrap();
            config
                .postgres
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        let url = "postgres://app@db:6543/shop";
        assert_eq!(password(url, None).as_deref(), Some("from-file"));
        assert_eq!(password(url, Some("from-env")).as_deref(), Some("from-env"));
        assert_eq!(
            password("postgres://app:given@db:6543/shop", Some("from-env")).as_deref(),
            Some("given")
        );
        assert_eq!(password("postgres://app@db:6543/other", None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        let error = |url: &str| {
            ConnectionConfig::parse_with_env(url, |_| None)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(
            error("postgres://db/x?sslmode=sometimes").contains("invalid sslmode \"sometimes\"")
        );
        assert!(error("postgres://db/x?nonsense=1").contains("invalid connection string"));
        assert!(
            error("host=db sslmode=verify-full sslrootcert=/nope").contains("/nope does not exist")
        );
        // A socket takes no TLS, whatever the string asks.
        let socket = "host=/var/run/postgresql user=app sslmode=verify-full sslrootcert=system";
        let config = ConnectionConfig::parse_with_env(socket, |_| None).unwrap();
        assert_eq!(
            config.postgres.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }
}
