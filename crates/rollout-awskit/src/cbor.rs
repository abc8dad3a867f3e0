//! Smithy RPC v2 CBOR (what `aws-sdk-cloudwatch` 1.100+ speaks) to the AWS
//! JSON 1.0 protocol (what moto 5.2 serves for CloudWatch), and back.
//!
//! Requests carry no ambiguity: a CBOR map becomes a JSON object, a
//! timestamp (tag 1) becomes epoch seconds, which is how awsJson encodes
//! timestamps too. Responses need the service model: JSON cannot tell a
//! timestamp from a number, or a double from an integer, and the SDK's CBOR
//! decoder insists on the right major type. [`output_shape`] holds the
//! output shapes of the operations the adapters and tests call, copied from
//! the CloudWatch service model (`GetMetricDataOutput`, `MetricDataResult`,
//! `MessageData`, `DescribeAlarmsOutput` with the members of `MetricAlarm`
//! and `CompositeAlarm` that are not strings, the unit outputs of
//! `PutMetricData`, `PutMetricAlarm` and `SetAlarmState`); members the table does not
//! name pass through with the type JSON gives them.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

/// A member's type in the service model.
#[derive(Debug)]
pub enum Shape {
    /// A string.
    Str,
    /// A double: always a CBOR float.
    Double,
    /// A timestamp: CBOR tag 1 around epoch seconds.
    Timestamp,
    /// A list of one shape.
    List(&'static Shape),
    /// A structure: its members' shapes.
    Struct(&'static [(&'static str, &'static Shape)]),
}

static MESSAGE_DATA: Shape = Shape::Struct(&[("Code", &Shape::Str), ("Value", &Shape::Str)]);
static MESSAGES: Shape = Shape::List(&MESSAGE_DATA);
static METRIC_DATA_RESULT: Shape = Shape::Struct(&[
    ("Id", &Shape::Str),
    ("Label", &Shape::Str),
    ("Timestamps", &Shape::List(&Shape::Timestamp)),
    ("Values", &Shape::List(&Shape::Double)),
    ("StatusCode", &Shape::Str),
    ("Messages", &MESSAGES),
]);
static GET_METRIC_DATA_OUTPUT: Shape = Shape::Struct(&[
    ("MetricDataResults", &Shape::List(&METRIC_DATA_RESULT)),
    ("NextToken", &Shape::Str),
    ("Messages", &MESSAGES),
]);
static UNIT: Shape = Shape::Struct(&[]);
static DIMENSION: Shape = Shape::Struct(&[("Name", &Shape::Str), ("Value", &Shape::Str)]);
static METRIC_ALARM: Shape = Shape::Struct(&[
    ("AlarmName", &Shape::Str),
    ("StateValue", &Shape::Str),
    ("StateReason", &Shape::Str),
    ("AlarmConfigurationUpdatedTimestamp", &Shape::Timestamp),
    ("StateUpdatedTimestamp", &Shape::Timestamp),
    ("StateTransitionedTimestamp", &Shape::Timestamp),
    ("Threshold", &Shape::Double),
    ("Dimensions", &Shape::List(&DIMENSION)),
]);
static COMPOSITE_ALARM: Shape = Shape::Struct(&[
    ("AlarmName", &Shape::Str),
    ("StateValue", &Shape::Str),
    ("StateReason", &Shape::Str),
    ("AlarmConfigurationUpdatedTimestamp", &Shape::Timestamp),
    ("StateUpdatedTimestamp", &Shape::Timestamp),
    ("StateTransitionedTimestamp", &Shape::Timestamp),
    ("ActionsSuppressedByReason", &Shape::Str),
]);
static DESCRIBE_ALARMS_OUTPUT: Shape = Shape::Struct(&[
    ("MetricAlarms", &Shape::List(&METRIC_ALARM)),
    ("CompositeAlarms", &Shape::List(&COMPOSITE_ALARM)),
    ("NextToken", &Shape::Str),
]);

/// The output shape of an operation this gateway translates.
pub fn output_shape(operation: &str) -> Option<&'static Shape> {
    match operation {
        "GetMetricData" => Some(&GET_METRIC_DATA_OUTPUT),
        "PutMetricData" | "PutMetricAlarm" | "SetAlarmState" => Some(&UNIT),
        "DescribeAlarms" => Some(&DESCRIBE_ALARMS_OUTPUT),
        _ => None,
    }
}

/// A CBOR request body as the JSON moto reads.
pub fn request_to_json(body: &[u8]) -> Result<Json, String> {
    if body.is_empty() {
        return Ok(Json::Object(Default::default()));
    }
    let v: Cbor = ciborium::de::from_reader(body).map_err(|e| format!("not CBOR: {e}"))?;
    to_json(&v)
}

fn to_json(v: &Cbor) -> Result<Json, String> {
    Ok(match v {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Integer(i) => {
            let i: i128 = (*i).into();
            Json::from(i64::try_from(i).map_err(|_| format!("integer {i} out of range"))?)
        }
        Cbor::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} is not a JSON number"))?,
        Cbor::Text(s) => Json::String(s.clone()),
        Cbor::Array(a) => Json::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Cbor::Map(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m {
                let Cbor::Text(k) = k else {
                    return Err(format!("map key {k:?} is not text"));
                };
                o.insert(k.clone(), to_json(v)?);
            }
            Json::Object(o)
        }
        Cbor::Tag(1, inner) => to_json(inner)?,
        other => return Err(format!("unsupported CBOR item {other:?}")),
    })
}

/// A JSON response body as the CBOR the SDK reads, typed by `shape`.
pub fn response_to_cbor(json: &Json, shape: &Shape) -> Result<Vec<u8>, String> {
    let v = to_cbor(json, Some(shape))?;
    let mut out = Vec::new();
    ciborium::ser::into_writer(&v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn to_cbor(v: &Json, shape: Option<&Shape>) -> Result<Cbor, String> {
    Ok(match (v, shape) {
        (Json::Null, _) => Cbor::Null,
        (Json::Number(n), Some(Shape::Timestamp)) => Cbor::Tag(
            1,
            Box::new(if let Some(i) = n.as_i64() {
                Cbor::Integer(i.into())
            } else {
                Cbor::Float(n.as_f64().unwrap_or(f64::NAN))
            }),
        ),
        (Json::String(s), Some(Shape::Timestamp)) => {
            let secs: f64 = s
                .parse()
                .map_err(|_| format!("timestamp `{s}` is not epoch seconds"))?;
            Cbor::Tag(1, Box::new(Cbor::Float(secs)))
        }
        (Json::Number(n), Some(Shape::Double)) => Cbor::Float(n.as_f64().unwrap_or(f64::NAN)),
        (Json::Number(n), _) => match n.as_i64() {
            Some(i) => Cbor::Integer(i.into()),
            None => Cbor::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        (Json::Bool(b), _) => Cbor::Bool(*b),
        (Json::String(s), _) => Cbor::Text(s.clone()),
        (Json::Array(a), shape) => {
            let item = match shape {
                Some(Shape::List(item)) => Some(*item),
                _ => None,
            };
            Cbor::Array(
                a.iter()
                    .map(|x| to_cbor(x, item))
                    .collect::<Result<_, _>>()?,
            )
        }
        (Json::Object(o), shape) => {
            let members = match shape {
                Some(Shape::Struct(m)) => Some(*m),
                _ => None,
            };
            let mut out = Vec::with_capacity(o.len());
            for (k, v) in o {
                if v.is_null() {
                    continue; // absent, as the SDK expects
                }
                let member = members
                    .and_then(|m| m.iter().find(|(name, _)| name == k))
                    .map(|(_, s)| *s);
                out.push((Cbor::Text(k.clone()), to_cbor(v, member)?));
            }
            Cbor::Map(out)
        }
    })
}

/// An error body in the RPC v2 CBOR envelope (`__type`, `message`).
pub fn error_to_cbor(code: &str, message: &str) -> Vec<u8> {
    let v = Cbor::Map(vec![
        (Cbor::Text("__type".into()), Cbor::Text(code.into())),
        (Cbor::Text("message".into()), Cbor::Text(message.into())),
    ]);
    let mut out = Vec::new();
    // Writing a small map to a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&v, &mut out);
    out
}

/// The error code and message of a JSON-protocol error body (moto writes
/// `__type` and `message`; the code may carry a namespace or a URL).
pub fn json_error(body: &Json) -> (String, String) {
    let code = body
        .get("__type")
        .or_else(|| body.get("code"))
        .and_then(Json::as_str)
        .unwrap_or("InternalFailure");
    let code = code.rsplit('#').next().unwrap_or(code);
    let code = code.split(':').next().unwrap_or(code);
    let message = body
        .get("message")
        .or_else(|| body.get("Message"))
        .and_then(Json::as_str)
        .unwrap_or("");
    (code.to_string(), message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).expect("cbor");
        out
    }

    #[test]
    fn requests_become_json_with_epoch_seconds() {
        let req = Cbor::Map(vec![
            (
                Cbor::Text("StartTime".into()),
                Cbor::Tag(1, Box::new(Cbor::Float(1_795_854_868.5))),
            ),
            (
                Cbor::Text("EndTime".into()),
                Cbor::Tag(1, Box::new(Cbor::Integer(1_795_854_900.into()))),
            ),
            (
                Cbor::Text("MetricDataQueries".into()),
                Cbor::Array(vec![Cbor::Map(vec![
                    (Cbor::Text("Id".into()), Cbor::Text("q0".into())),
                    (Cbor::Text("ReturnData".into()), Cbor::Bool(true)),
                ])]),
            ),
        ]);
        let j = request_to_json(&cbor(&req)).expect("json");
        assert_eq!(
            j,
            serde_json::json!({
                "StartTime": 1_795_854_868.5,
                "EndTime": 1_795_854_900,
                "MetricDataQueries": [{"Id": "q0", "ReturnData": true}]
            })
        );
        assert!(request_to_json(b"\xff\x00").is_err());
        assert_eq!(request_to_json(b"").expect("empty"), serde_json::json!({}));
    }

    #[test]
    fn responses_are_typed_by_the_model() {
        let moto = serde_json::json!({
            "MetricDataResults": [{
                "Id": "q1", "Label": "RequestCount Sum",
                "Timestamps": [1_795_854_868, 1_795_854_869],
                "Values": [5, 2.5],
                "StatusCode": "Complete",
                "Unmodelled": 7
            }],
            "NextToken": null
        });
        let bytes =
            response_to_cbor(&moto, output_shape("GetMetricData").expect("shape")).expect("cbor");
        let back: Cbor = ciborium::de::from_reader(bytes.as_slice()).expect("decode");
        let Cbor::Map(top) = back else { panic!("map") };
        assert_eq!(top.len(), 1, "null members are left out");
        let Cbor::Array(results) = &top[0].1 else {
            panic!("list")
        };
        let Cbor::Map(r) = &results[0] else {
            panic!("map")
        };
        let get = |k: &str| {
            r.iter()
                .find(|(n, _)| n == &Cbor::Text(k.into()))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("Timestamps"),
            Some(Cbor::Array(vec![
                Cbor::Tag(1, Box::new(Cbor::Integer(1_795_854_868.into()))),
                Cbor::Tag(1, Box::new(Cbor::Integer(1_795_854_869.into()))),
            ]))
        );
        assert_eq!(
            get("Values"),
            Some(Cbor::Array(vec![Cbor::Float(5.0), Cbor::Float(2.5)])),
            "doubles stay floats even when JSON wrote an integer"
        );
        assert_eq!(get("Unmodelled"), Some(Cbor::Integer(7.into())));
    }

    #[test]
    fn errors() {
        let (code, message) = json_error(&serde_json::json!({
            "__type": "com.amazonaws.cloudwatch#InvalidParameterValueException",
            "message": "bad period"
        }));
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("InvalidParameterValueException", "bad period")
        );
        let body = error_to_cbor("ThrottlingException", "Rate exceeded");
        let v: Cbor = ciborium::de::from_reader(body.as_slice()).expect("decode");
        assert_eq!(
            v,
            Cbor::Map(vec![
                (
                    Cbor::Text("__type".into()),
                    Cbor::Text("ThrottlingException".into())
                ),
                (
                    Cbor::Text("message".into()),
                    Cbor::Text("Rate exceeded".into())
                ),
            ])
        );
    }
}
