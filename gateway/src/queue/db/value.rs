//! The values that cross the seam: [`ValueRef`] (a bound parameter or a column as read,
//! borrowed), [`Value`] (one owned, for statements built at run time) and the conversions
//! each engine makes from them.
//!
//! Both engines see the same five kinds SQLite stores: null, a 64-bit integer, a double,
//! text and bytes. PostgreSQL's stricter types are met at the edge: a parameter is written
//! as the type PostgreSQL inferred for it (an integer into an `int4` column, a boolean
//! into a `bool`), and a column of any integer, float, boolean, text or byte type reads as
//! its kind. Anything else (`numeric`, from `SUM` of integers) is an error naming the
//! column: cast it in the SQL.

use std::fmt;

/// An owned parameter, for lists of parameters built at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Value::Text(text.clone())
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Int(number)
    }
}

/// What can be bound as a parameter: the `params!` macro's items.
pub trait Param {
    fn arg(&self) -> ValueRef<'_>;
}

impl Param for Value {
    fn arg(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Int(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(v) => ValueRef::Text(v),
            Value::Blob(v) => ValueRef::Blob(v),
        }
    }
}

impl Param for ValueRef<'_> {
    fn arg(&self) -> ValueRef<'_> {
        *self
    }
}

macro_rules! integer_params {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn arg(&self) -> ValueRef<'_> {
                // Every integer the store binds fits in SQLite's and PostgreSQL's i64.
                ValueRef::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integer_params!(i64, i32, i16, u8, u16, u32, u64, usize);

impl Param for bool {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::from(*self))
    }
}

impl Param for f64 {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl Param for str {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for String {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for [u8] {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn arg(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn arg(&self) -> ValueRef<'_> {
        (**self).arg()
    }
}

impl<T: Param> Param for Option<T> {
    fn arg(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, Param::arg)
    }
}

/// A statement's parameters, numbered from 1 in order.
pub trait Params {
    fn args(&self) -> Vec<ValueRef<'_>>;
}

impl<T: Param, const N: usize> Params for [T; N] {
    fn args(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Param::arg).collect()
    }
}

impl<T: Param> Params for &[T] {
    fn args(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Param::arg).collect()
    }
}

impl<T: Param> Params for Vec<T> {
    fn args(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Param::arg).collect()
    }
}

/// Parameters from an iterator, in its order.
pub fn params_from_iter<I>(iter: I) -> Vec<Value>
where
    I: IntoIterator,
    I::Item: Into<Value>,
{
    iter.into_iter().map(Into::into).collect()
}

/// A value borrowed from where it is: a parameter as bound, or a column as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Null => f.write_str("null"),
            ValueRef::Int(_) => f.write_str("an integer"),
            ValueRef::Real(_) => f.write_str("a real"),
            ValueRef::Text(_) => f.write_str("text"),
            ValueRef::Blob(_) => f.write_str("bytes"),
        }
    }
}

/// What a column can be read as; the error says what was found instead.
pub trait FromValue: Sized {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String>;
}

fn wrong<T>(value: ValueRef<'_>, wanted: &str) -> Result<T, String> {
    Err(format!("expected {wanted}, found {value}"))
}

macro_rules! integer_columns {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
                match value {
                    ValueRef::Int(v) => <$t>::try_from(v)
                        .map_err(|_| format!("{v} is out of range for {}", stringify!($t))),
                    other => wrong(other, "an integer"),
                }
            }
        }
    )*};
}
integer_columns!(i64, i32, u8, u16, u32, u64, usize);

impl FromValue for bool {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Int(v) => Ok(v != 0),
            other => wrong(other, "a boolean"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(v) => Ok(v),
            ValueRef::Int(v) => Ok(v as f64),
            other => wrong(other, "a number"),
        }
    }
}

impl FromValue for String {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(v) => Ok(v.to_owned()),
            other => wrong(other, "text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(v) => Ok(v.to_vec()),
            ValueRef::Text(v) => Ok(v.as_bytes().to_vec()),
            other => wrong(other, "bytes"),
        }
    }
}

/// Any column, as it is: for copying rows between stores.
impl FromValue for Value {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Int(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(v) => Value::Text(v.to_owned()),
            ValueRef::Blob(v) => Value::Blob(v.to_vec()),
        })
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as Sqlite};
        Ok(ToSqlOutput::Borrowed(match *self {
            ValueRef::Null => Sqlite::Null,
            ValueRef::Int(v) => Sqlite::Integer(v),
            ValueRef::Real(v) => Sqlite::Real(v),
            ValueRef::Text(v) => Sqlite::Text(v.as_bytes()),
            ValueRef::Blob(v) => Sqlite::Blob(v),
        }))
    }
}

/// A SQLite column as a [`ValueRef`]. SQLite's text is UTF-8 unless a program outside the
/// gateway wrote otherwise: such text is an error, never replaced.
pub fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> Result<ValueRef<'_>, String> {
    use rusqlite::types::ValueRef as Sqlite;
    Ok(match value {
        Sqlite::Null => ValueRef::Null,
        Sqlite::Integer(v) => ValueRef::Int(v),
        Sqlite::Real(v) => ValueRef::Real(v),
        Sqlite::Text(v) => ValueRef::Text(std::str::from_utf8(v).map_err(|e| e.to_string())?),
        Sqlite::Blob(v) => ValueRef::Blob(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_options_convert_both_ways_and_refuse_what_does_not_fit() {
        assert_eq!(5u32.arg(), ValueRef::Int(5));
        assert_eq!(true.arg(), ValueRef::Int(1));
        assert_eq!(None::<&str>.arg(), ValueRef::Null);
        assert_eq!(Some("a").arg(), ValueRef::Text("a"));
        assert_eq!(u64::MAX.arg(), ValueRef::Int(i64::MAX));
        assert_eq!(u8::from_value(ValueRef::Int(7)), Ok(7));
        assert!(
            u8::from_value(ValueRef::Int(300))
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            String::from_value(ValueRef::Int(1)).unwrap_err(),
            "expected text, found an integer"
        );
        assert_eq!(Option::<i64>::from_value(ValueRef::Null), Ok(None));
        assert_eq!(f64::from_value(ValueRef::Int(2)), Ok(2.0));
        assert_eq!(bool::from_value(ValueRef::Int(0)), Ok(false));
        assert_eq!(
            params_from_iter(["a", "b"]),
            vec![Value::Text("a".into()), Value::Text("b".into())]
        );
    }
}
