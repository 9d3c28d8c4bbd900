//! The runner's error type.

use std::fmt;
use tokio_postgres::error::SqlState;

/// Everything the runner's API can fail with.
#[derive(Debug)]
pub enum Error {
    /// A setting is missing or out of range (names the variable and the accepted range).
    Config(String),
    /// Input refused before it reached the database (an unknown task name, bad arguments, ...).
    Invalid(String),
    /// The database refused or failed; [`Error::sqlstate`] tells which.
    Database(tokio_postgres::Error),
    /// A refusal of the in-memory store (or a wait's, for a job it cannot find), with the
    /// SQLSTATE the database gives for it.
    Refused { code: SqlState, message: String },
    /// No connection could be had from the pool.
    Pool(deadpool_postgres::PoolError),
    /// The database refused or failed, on a caller's sqlx connection.
    #[cfg(feature = "sqlx")]
    Sqlx(sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The SQLSTATE of a database error (22023 bad input, 55000 a lost lease, ...).
    pub fn sqlstate(&self) -> Option<SqlState> {
        match self {
            Error::Database(e) => e.code().cloned(),
            Error::Refused { code, .. } => Some(code.clone()),
            #[cfg(feature = "sqlx")]
            Error::Sqlx(e) => e
                .as_database_error()
                .and_then(|db| db.code())
                .map(|code| SqlState::from_code(&code)),
            _ => None,
        }
    }

    /// Whether the database could not be reached — no connection, a connection lost, a
    /// server shutting down or starting up — rather than that it refused the request.
    pub fn unreachable(&self) -> bool {
        match self {
            Error::Database(e) => database_unreachable(e),
            Error::Pool(deadpool_postgres::PoolError::Backend(e)) => database_unreachable(e),
            Error::Pool(
                deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed,
            ) => true,
            #[cfg(feature = "sqlx")]
            Error::Sqlx(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            #[cfg(feature = "sqlx")]
            Error::Sqlx(_) => self
                .sqlstate()
                .is_some_and(|code| server_unavailable(&code)),
            _ => false,
        }
    }
}

/// A client error without a server's answer (the socket, a timeout, a closed connection), or
/// a server's answer that it is not available.
fn database_unreachable(e: &tokio_postgres::Error) -> bool {
    e.code().is_none_or(server_unavailable)
}

/// Class 08 (connection exception), or the server shutting down, crashed, or starting up.
fn server_unavailable(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) | Error::Invalid(message) => f.write_str(message),
            Error::Database(e) => match e.as_db_error() {
                Some(db) if PREPARED_STATEMENT_LOST.contains(db.code()) => write!(
                    f,
                    "{} ({}): a connection pooler in transaction mode (PgBouncer) hands each \
                     transaction to any server connection; set SONIQ_STATEMENT_CACHE=off",
                    db.message(),
                    db.code().code()
                ),
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => write!(f, "database error: {}", with_causes(e)),
            },
            Error::Refused { code, message } => write!(f, "{message} ({})", code.code()),
            Error::Pool(e) => write!(f, "no database connection: {}", with_causes(e)),
            #[cfg(feature = "sqlx")]
            Error::Sqlx(e) => write!(f, "{e}"),
        }
    }
}

/// What a prepared statement behind a transaction-mode pooler runs into: prepared on one server
/// connection, then missing (26000) or already there (42P05) on another.
const PREPARED_STATEMENT_LOST: [SqlState; 2] = [
    SqlState::INVALID_SQL_STATEMENT_NAME,
    SqlState::DUPLICATE_PSTATEMENT,
];

/// An error and what caused it, `outer: inner: ...`: "error connecting to server" alone
/// does not say the connection was refused, or why.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Database(e) => Some(e),
            Error::Pool(e) => Some(e),
            #[cfg(feature = "sqlx")]
            Error::Sqlx(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Database(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Pool(e)
    }
}

#[cfg(feature = "sqlx")]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Sqlx(e)
    }
}

impl From<soniq_cron::CronError> for Error {
    fn from(e: soniq_cron::CronError) -> Self {
        Error::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[test]
    fn an_error_says_what_caused_it() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error connecting to server")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            with_causes(&Outer(refused)),
            "error connecting to server: Connection refused"
        );
    }
}
