//! One list of parameters, bound by either driver: a statement's parameters are written once
//! (`jobs::enqueue_binds`) and handed to tokio-postgres ([`PgBinds`]) or to sqlx
//! ([`SqlxBinds`], with the `sqlx` feature) in the same order.

use tokio_postgres::types::ToSql;

/// A value both drivers can bind.
#[cfg(not(feature = "sqlx"))]
pub trait BindValue<'a>: ToSql + Sync + Send + 'a {}
#[cfg(not(feature = "sqlx"))]
impl<'a, T: ToSql + Sync + Send + 'a> BindValue<'a> for T {}

/// A value both drivers can bind.
#[cfg(feature = "sqlx")]
pub trait BindValue<'a>:
    ToSql + Sync + Send + sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'a
{
}
#[cfg(feature = "sqlx")]
impl<'a, T> BindValue<'a> for T where
    T: ToSql + Sync + Send + sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'a
{
}

/// Takes a statement's parameters, in order.
pub trait Bind<'a> {
    fn bind<T: BindValue<'a>>(&mut self, value: T);
}

/// Parameters for tokio-postgres.
#[derive(Default)]
pub struct PgBinds<'a> {
    values: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

impl<'a> Bind<'a> for PgBinds<'a> {
    fn bind<T: BindValue<'a>>(&mut self, value: T) {
        self.values.push(Box::new(value));
    }
}

impl PgBinds<'_> {
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Parameters bound onto an sqlx query.
#[cfg(feature = "sqlx")]
pub struct SqlxBinds<'a, O> {
    pub query: Option<sqlx::query::QueryScalar<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments>>,
}

#[cfg(feature = "sqlx")]
impl<'a, O> Bind<'a> for SqlxBinds<'a, O> {
    fn bind<T: BindValue<'a>>(&mut self, value: T) {
        self.query = self.query.take().map(|query| query.bind(value));
    }
}
