//! JSON values that can carry binary: `{"$binary": "<base64>"}` in JSON, a binary attachment on
//! the Socket.IO side.

use std::{collections::BTreeMap, fmt};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq, SerializeTuple},
};
use serde_json::Value as Json;

/// A JSON value whose leaves may be binary.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// Bytes: a binary attachment for clients, `{"$binary": …}` in JSON.
    Binary(Vec<u8>),
    /// An array.
    Array(Vec<ApiValue>),
    /// An object.
    Object(BTreeMap<String, ApiValue>),
}

/// A `{"$binary": …}` whose value is not valid base64.
#[derive(Debug, thiserror::Error)]
#[error("invalid base64 in $binary at {path}")]
pub struct InvalidBinary {
    path: String,
}

impl ApiValue {
    /// Converts JSON, turning every `{"$binary": "<base64>"}` object into bytes.
    ///
    /// # Errors
    /// When a `$binary` value is not a base64 string.
    pub fn from_json(v: Json) -> Result<Self, InvalidBinary> {
        Self::from_json_at(v, "$")
    }

    fn from_json_at(v: Json, path: &str) -> Result<Self, InvalidBinary> {
        Ok(match v {
            Json::Null => ApiValue::Null,
            Json::Bool(b) => ApiValue::Bool(b),
            Json::Number(n) => ApiValue::Number(n),
            Json::String(s) => ApiValue::String(s),
            Json::Array(a) => ApiValue::Array(
                a.into_iter()
                    .enumerate()
                    .map(|(i, v)| Self::from_json_at(v, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(o) if o.len() == 1 && o.contains_key("$binary") => {
                match o
                    .get("$binary")
                    .and_then(Json::as_str)
                    .map(|s| B64.decode(s))
                {
                    Some(Ok(bytes)) => ApiValue::Binary(bytes),
                    _ => {
                        return Err(InvalidBinary {
                            path: path.to_owned(),
                        });
                    }
                }
            }
            Json::Object(o) => ApiValue::Object(
                o.into_iter()
                    .map(|(k, v)| {
                        let p = format!("{path}.{k}");
                        Self::from_json_at(v, &p).map(|v| (k, v))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Converts to JSON, bytes becoming `{"$binary": "<base64>"}`.
    pub fn into_json(self) -> Json {
        match self {
            ApiValue::Null => Json::Null,
            ApiValue::Bool(b) => Json::Bool(b),
            ApiValue::Number(n) => Json::Number(n),
            ApiValue::String(s) => Json::String(s),
            ApiValue::Binary(b) => serde_json::json!({ "$binary": B64.encode(b) }),
            ApiValue::Array(a) => Json::Array(a.into_iter().map(Self::into_json).collect()),
            ApiValue::Object(o) => {
                Json::Object(o.into_iter().map(|(k, v)| (k, v.into_json())).collect())
            }
        }
    }
}

impl Serialize for ApiValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ApiValue::Null => s.serialize_unit(),
            ApiValue::Bool(b) => s.serialize_bool(*b),
            ApiValue::Number(n) => n.serialize(s),
            ApiValue::String(v) => s.serialize_str(v),
            // The Socket.IO parser turns bytes into a binary attachment.
            ApiValue::Binary(b) => s.serialize_bytes(b),
            ApiValue::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            ApiValue::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ApiValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ApiValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E>(self) -> Result<ApiValue, E> {
                Ok(ApiValue::Null)
            }
            fn visit_none<E>(self) -> Result<ApiValue, E> {
                Ok(ApiValue::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ApiValue, D::Error> {
                ApiValue::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<ApiValue, E> {
                Ok(ApiValue::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<ApiValue, E> {
                Ok(ApiValue::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<ApiValue, E> {
                Ok(ApiValue::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<ApiValue, E> {
                Ok(serde_json::Number::from_f64(n).map_or(ApiValue::Null, ApiValue::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<ApiValue, E> {
                Ok(ApiValue::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<ApiValue, E> {
                Ok(ApiValue::String(s))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<ApiValue, E> {
                Ok(ApiValue::Binary(b.to_vec()))
            }
            fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<ApiValue, E> {
                Ok(ApiValue::Binary(b))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ApiValue, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(ApiValue::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ApiValue, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, ApiValue>()? {
                    out.insert(k, v);
                }
                Ok(ApiValue::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Event arguments: serialised as a tuple so that each one becomes its own Socket.IO argument,
/// and read back whatever their number.
#[derive(Debug, Clone, Default)]
pub struct Args(pub Vec<ApiValue>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// Reads every argument of an event, whatever their number: socketioxide hands a handler all
/// the arguments only when the target type deserialises as a tuple.
impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_roundtrips_through_json() {
        let j = serde_json::json!({"a": [1, {"$binary": "AAEC"}], "b": "x"});
        let v = ApiValue::from_json(j.clone()).unwrap();
        match &v {
            ApiValue::Object(o) => match &o["a"] {
                ApiValue::Array(a) => assert_eq!(a[1], ApiValue::Binary(vec![0, 1, 2])),
                _ => panic!("not an array"),
            },
            _ => panic!("not an object"),
        }
        assert_eq!(v.into_json(), j);
    }

    #[test]
    fn args_read_any_number_of_arguments() {
        let a: Args = serde_json::from_str(r#"[1, "two", {"three": 3}]"#).unwrap();
        assert_eq!(a.0.len(), 3);
        let a: Args = serde_json::from_str("[]").unwrap();
        assert!(a.0.is_empty());
    }

    #[test]
    fn bad_base64_is_an_error() {
        let j = serde_json::json!([{"$binary": "!!"}]);
        assert!(ApiValue::from_json(j).is_err());
    }
}
