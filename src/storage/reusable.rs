//! Raw PostgreSQL statements that stay prepared on their connection.
//!
//! diesel prepares a multi-row `INSERT … VALUES` afresh on every run: its
//! text changes with the number of rows. On the writer's connection
//! PostgreSQL then parses, analyses and plans each batch's statements
//! again, which `perf` put at about a quarter of its time during `send`.
//! A statement that takes its rows as one array per column (`unnest`) has
//! one text whatever the batch, so it can be prepared once per connection.
//! diesel never caches `sql_query` statements, since their text could
//! embed data; [`Reusable`] is the promise that it does not.

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A raw statement whose text is constant (every value is a bind), so the
/// connection's statement cache may keep it prepared, keyed by its text.
/// Rows load by name, as from `sql_query`.
pub struct Reusable<'a> {
    sql: &'static str,
    binds: Vec<Box<dyn Bind + 'a>>,
}

impl<'a> Reusable<'a> {
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql,
            binds: Vec::new(),
        }
    }

    /// Binds the next `$n` as `ST`.
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        Pg: HasSqlType<ST>,
        T: ToSql<ST, Pg> + 'a,
        ST: 'a,
    {
        self.binds.push(Box::new(Typed::<ST, T> {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

trait Bind {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Typed<ST, T> {
    value: T,
    sql_type: PhantomData<ST>,
}

impl<ST, T> Bind for Typed<ST, T>
where
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.value)
    }
}

// Unlike `sql_query`, this never calls `unsafe_to_cache_prepared`.
impl QueryFragment<Pg> for Reusable<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // diesel writes each placeholder itself as it binds, so the text
        // goes out in the pieces between `$1`, `$2`, ….
        let mut binds = self.binds.iter();
        let mut rest = self.sql;
        let mut number = 0;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |end| end);
            number += 1;
            let bind = binds
                .next()
                .filter(|_| rest[at + 1..at + 1 + digits].parse() == Ok(number))
                .ok_or_else(|| misplaced(self.sql))?;
            bind.push(&mut out)?;
            rest = &rest[at + 1 + digits..];
        }
        if binds.next().is_some() {
            return Err(misplaced(self.sql));
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// The statement's placeholders are not `$1`, `$2`, … in order, one per bind.
fn misplaced(sql: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("placeholders out of order or unbound in: {sql}").into(),
    )
}

impl QueryId for Reusable<'_> {
    type QueryId = ();
    // No type to key the cache by: it is keyed by the statement's text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Reusable<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Reusable<'_> {}

#[cfg(test)]
mod tests {
    use diesel::pg::{Pg, PgQueryBuilder};
    use diesel::query_builder::{QueryBuilder, QueryFragment};
    use diesel::sql_types::BigInt;

    use super::Reusable;

    fn sql(query: &Reusable<'_>) -> diesel::QueryResult<String> {
        let mut builder = PgQueryBuilder::default();
        query.to_sql(&mut builder, &Pg)?;
        Ok(builder.finish())
    }

    #[test]
    fn the_text_keeps_its_placeholders_and_may_stay_prepared() {
        let query = Reusable::new("SELECT $1 + $2 AS n")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert_eq!(sql(&query).unwrap(), "SELECT $1 + $2 AS n");
        assert!(query.is_safe_to_cache_prepared(&Pg).unwrap());
        // `execute` hands diesel a reference; the answer must not change.
        let by_reference = <&Reusable<'_> as QueryFragment<Pg>>::is_safe_to_cache_prepared;
        assert!(by_reference(&&query, &Pg).unwrap());
    }

    #[test]
    fn placeholders_out_of_order_or_without_a_bind_are_refused() {
        let swapped = Reusable::new("SELECT $2, $1")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert!(sql(&swapped).is_err());
        let unbound = Reusable::new("SELECT $1, $2").bind::<BigInt, _>(1_i64);
        assert!(sql(&unbound).is_err());
        let unused = Reusable::new("SELECT $1")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert!(sql(&unused).is_err());
    }
}
