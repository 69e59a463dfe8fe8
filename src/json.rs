//! JSON helpers shared by every file webtune writes and by the browser API.

/// An f32 as the JSON number with its shortest decimal form (0.01, not 0.009999999776); `null`
/// when it is not finite (JSON has no NaN or infinity).
pub fn f32(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, Into::into)
}

/// A value as JSON, its f32 fields in their shortest decimal form (serde_json's `to_value`
/// widens an f32 to the f64 next to it, 0.800000011920929 for 0.8; its text form does not).
pub fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_string(v).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    #[test]
    fn f32_is_shortest_decimal_and_null_when_not_finite() {
        assert_eq!(super::f32(0.01).to_string(), "0.01");
        assert_eq!(super::f32(2e-4).to_string(), "0.0002");
        assert_eq!(super::f32(-1.5).to_string(), "-1.5");
        assert_eq!(super::f32(f32::NAN), serde_json::Value::Null);
        assert_eq!(super::f32(f32::INFINITY), serde_json::Value::Null);
    }

    #[test]
    fn value_keeps_f32_fields_short() {
        #[derive(serde::Serialize)]
        struct S {
            t: f32,
        }
        assert_eq!(super::value(&S { t: 0.8 }).to_string(), r#"{"t":0.8}"#);
    }
}
