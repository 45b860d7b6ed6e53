//! The payload of an exported resource: its params and meta parameters in the lossless JSON
//! form ([`crate::json::to_lossless`]), readable with `tend world exports --json`, decodable by
//! any collector. The World carries it as opaque bytes.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use crate::json::{from_lossless, to_lossless};
use crate::meta::META;
use crate::spec::{Params, ResSpec};
use crate::value::Value;

/// The payload of an export of `spec`: `{"params": {...}, "meta": {...}}` with every meta
/// parameter the table marks as exported (all but `export`: a collector never re-exports).
pub fn encode(spec: &ResSpec) -> Vec<u8> {
    let params: Map<String, Json> = spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), to_lossless(v)))
        .collect();
    let meta: Map<String, Json> = META
        .iter()
        .filter(|p| p.exported)
        .map(|p| (p.name.to_string(), to_lossless(&p.get(&spec.meta))))
        .collect();
    serde_json::to_vec(&json!({ "params": params, "meta": meta })).unwrap_or_default()
}

/// Params and meta parameters (name -> value) of an export payload.
pub type Decoded = (Params, BTreeMap<String, Value>);

/// Decodes an export payload made by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("export payload: {e}"))?;
    // Collected straight into whichever map the caller keeps (params and meta differ).
    fn section<M: FromIterator<(String, Value)>>(j: &Json, name: &str) -> Result<M, String> {
        match j.get(name) {
            None => Ok(std::iter::empty().collect()),
            Some(Json::Object(o)) => o
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        from_lossless(v).map_err(|e| format!("{name}.{k}: {e}"))?,
                    ))
                })
                .collect(),
            Some(_) => Err(format!("export payload: `{name}` is not an object")),
        }
    }
    Ok((section(&j, "params")?, section(&j, "meta")?))
}

/// A whole resource (`{"kind", "name", "params", "meta"}`, the payload's lossless form with
/// its identity), for records the engine keeps under the state directory: a pending reversal
/// (`Meta:reverse`). `export` is not kept (such a resource is never exported).
pub fn encode_resource(spec: &ResSpec) -> Vec<u8> {
    let mut j: Json = serde_json::from_slice(&encode(spec)).unwrap_or(Json::Null);
    if let Json::Object(o) = &mut j {
        o.insert("kind".into(), Json::String(spec.kind.clone()));
        o.insert("name".into(), Json::String(spec.name.clone()));
    }
    serde_json::to_vec_pretty(&j).unwrap_or_default()
}

/// Decodes a resource made by [`encode_resource`]; an unknown or invalid meta parameter is an
/// error naming it.
pub fn decode_resource(bytes: &[u8]) -> Result<ResSpec, String> {
    let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("resource record: {e}"))?;
    let text = |k: &str| {
        j.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("resource record: no `{k}`"))
    };
    let (kind, name) = (text("kind")?, text("name")?);
    let (params, meta) = decode(bytes)?;
    let mut spec = ResSpec::new(kind, name);
    spec.params = params;
    for (k, v) in &meta {
        spec.meta
            .set(k, v)
            .map_err(|e| format!("resource record: Meta:{}: {}", e.name, e.reason))?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;

    #[test]
    fn payload_round_trips_every_value_form() {
        let mut spec = ResSpec::new("test", "a")
            .param("s", "x")
            .param("i", -3i64)
            .param("f", 1.0f64)
            .param("l", vec!["a", "b"]);
        let mut m = BTreeMap::new();
        m.insert(Value::Int(2), Value::Float(0.5));
        spec.params.insert("m".into(), Value::Map(m));
        spec.params.insert(
            "st".into(),
            Value::Struct(vec![
                ("z".into(), Value::Bool(true)),
                ("a".into(), Value::Int(1)),
            ]),
        );
        spec.meta = Meta {
            hidden: true,
            export: vec!["h2".into()],
            ..Meta::default()
        };
        let (params, meta) = decode(&encode(&spec)).unwrap();
        assert_eq!(params, spec.params);
        assert_eq!(meta.get("hidden"), Some(&Value::Bool(true)));
        assert!(!meta.contains_key("export"));
        assert_eq!(meta.get("limit"), Some(&Value::Float(f64::INFINITY)));
        assert_eq!(meta.len(), META.len() - 1);
        assert!(decode(b"{\"params\": 3}").is_err());
    }

    #[test]
    fn a_resource_record_round_trips() {
        let mut spec = ResSpec::new("file", "/etc/a b").param("content", "x\n");
        spec.meta.retry = 3;
        let back = decode_resource(&encode_resource(&spec)).unwrap();
        assert_eq!(back, spec);
        assert!(decode_resource(b"{\"params\": {}}").is_err());
    }
}
