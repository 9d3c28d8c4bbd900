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
            #[cfg(feature = "sqlx")]
            Error::Sqlx(e) => e
                .as_database_error()
                .and_then(|db| db.code())
                .map(|code| SqlState::from_code(&code)),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) | Error::Invalid(message) => f.write_str(message),
            Error::Database(e) => match e.as_db_error() {
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => write!(f, "database error: {e}"),
            },
            Error::Pool(e) => write!(f, "no database connection: {e}"),
            #[cfg(feature = "sqlx")]
            Error::Sqlx(e) => write!(f, "{e}"),
        }
    }
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
