//! Hugging Face layout checks: a sharded checkpoint's `*.safetensors.index.json` must
//! name only shards that exist and tensors that are in them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Checks the index `index_json` found at `index_path` against the tensors of the
/// safetensors files (`tensors`: relative path → tensor names). Every entry of its
/// `weight_map` must name a safetensors file of the model (relative to the index's
/// directory) that holds that tensor. Returns a one-line reason naming the file and
/// tensor otherwise.
pub fn check_index(
    index_path: &str,
    index_json: &[u8],
    tensors: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    let v: Value = serde_json::from_slice(index_json)
        .map_err(|e| format!("{index_path}: not valid JSON: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{index_path}: no weight_map object"))?;
    let dir = index_path.rsplit_once('/').map(|(d, _)| d);
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format!("{index_path}: tensor {tensor:?}: file is not a string"))?;
        let rel = match dir {
            Some(d) => format!("{d}/{file}"),
            None => file.to_owned(),
        };
        let names = tensors.get(&rel).ok_or_else(|| {
            format!("{index_path}: tensor {tensor:?}: shard {rel} is missing from the model")
        })?;
        if !names.contains(tensor) {
            return Err(format!(
                "{index_path}: tensor {tensor:?} is not in {rel}, where the index puts it"
            ));
        }
    }
    Ok(())
}

/// True for the path of a safetensors index (`…safetensors.index.json`).
pub fn is_index(path: &str) -> bool {
    path.ends_with(".safetensors.index.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_checks() {
        let mut t = BTreeMap::new();
        t.insert(
            "a.safetensors".to_string(),
            BTreeSet::from(["x".to_string()]),
        );
        check_index(
            "m.safetensors.index.json",
            br#"{"weight_map":{"x":"a.safetensors"}}"#,
            &t,
        )
        .unwrap();
        let e = check_index(
            "i.safetensors.index.json",
            br#"{"weight_map":{"y":"a.safetensors"}}"#,
            &t,
        )
        .unwrap_err();
        assert!(e.contains("\"y\" is not in a.safetensors"), "{e}");
        let e = check_index(
            "i.safetensors.index.json",
            br#"{"weight_map":{"x":"b.safetensors"}}"#,
            &t,
        )
        .unwrap_err();
        assert!(e.contains("shard b.safetensors is missing"), "{e}");
        assert!(check_index("i", b"{}", &t).is_err());
    }
}
