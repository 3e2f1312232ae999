//! Field decoders that never fail a document.
//!
//! Real BMCs send counts as strings, `null` where a list belongs, dates like
//! `0000-00-00T00:00:00`, and enumeration values newer than any schema. Each decoder here
//! takes whatever JSON value is present and keeps it only if it has a usable shape; anything
//! else becomes "absent", so one odd field never costs the rest of the document.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::Value;

/// A string; numbers and booleans are kept in their JSON spelling.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// A non-negative integer, also from a numeric string or an integral float.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A finite number, also from a numeric string.
pub(crate) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite()))
}

/// A boolean, also from `"true"`/`"false"` in any case.
pub(crate) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

/// A nested object decoded as `T`, or absent when it does not fit.
pub(crate) fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        value @ Value::Object(_) => T::deserialize(value).ok(),
        _ => None,
    })
}

/// A list; elements that do not fit are dropped, and a non-list is an empty list.
pub(crate) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| T::deserialize(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A list of strings (numbers kept in their JSON spelling, other elements dropped).
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

/// A JSON object kept as a map (BIOS attributes); anything else is an empty map.
pub(crate) fn map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    })
}

fn integral(x: f64) -> Option<u64> {
    // The range check makes the cast exact.
    (x.fract() == 0.0 && (0.0..=9.007_199_254_740_992e15).contains(&x)).then_some(x as u64)
}
