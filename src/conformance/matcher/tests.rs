//! Unit tests of the matcher (split from matcher.rs to keep it readable).

use super::*;
use serde_json::json;

fn vars() -> Vars {
    let mut v = Vars::default();
    v.set("run", "cf-1");
    v.set("room", "cf-1/room");
    v.set("peer.a", "cf-1-a");
    v.set("exp.a", 1767229200);
    v
}

fn m(want: Value, got: Value) -> Outcome {
    match_value(&want, Some(&got), &vars(), &mut Vec::new())
}

#[test]
fn substitution() {
    let v = vars();
    assert_eq!(v.text("{room}/x-{peer.a}").unwrap(), "cf-1/room/x-cf-1-a");
    assert_eq!(
        v.text(r#"{"channel":"{room}"}"#).unwrap(),
        r#"{"channel":"cf-1/room"}"#
    );
    assert_eq!(v.text("{{room}").unwrap(), "{room}");
    assert_eq!(v.text("{room|url}").unwrap(), "cf-1%2Froom");
    assert_eq!(v.value(&json!("{exp.a}")).unwrap(), json!(1767229200));
    assert_eq!(v.value(&json!("{exp.a+1}")).unwrap(), json!(1767229201));
    assert_eq!(v.value(&json!("{exp.a-200}")).unwrap(), json!(1767229000));
    assert_eq!(v.text("{uniq:8}").unwrap(), "cf-1-xxx");
    assert_eq!(v.text("{x:3}").unwrap(), "xxx");
    assert!(v.text("{nope}").unwrap_err().contains("nope"));
    assert_eq!(
        v.text("{ not a placeholder }").unwrap(),
        "{ not a placeholder }"
    );
}

#[test]
fn subset_and_exact() {
    assert_eq!(
        m(
            json!({"type": "ack"}),
            json!({"type": "ack", "requestId": "x"})
        ),
        Outcome::Match
    );
    assert!(matches!(
        m(json!({"data": {"a": 1}}), json!({"data": {"a": 1, "b": 2}})),
        Outcome::Mismatch(_)
    ));
    assert!(matches!(
        m(json!({"joined": []}), json!({"joined": [{"peerId": "x"}]})),
        Outcome::Mismatch(_)
    ));
    assert!(matches!(
        m(json!({"left": []}), json!({"left": null})),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        m(
            json!({"channel": "{room}", "from": "{peer.a}"}),
            json!({"channel": "cf-1/room", "from": "cf-1-a"})
        ),
        Outcome::Match
    );
}

#[test]
fn matchers() {
    assert_eq!(m(json!({"x": "{absent}"}), json!({})), Outcome::Match);
    assert!(matches!(
        m(json!({"x": "{absent}"}), json!({"x": null})),
        Outcome::NonStrict(_)
    ));
    assert!(matches!(
        m(json!({"x": "{absent}"}), json!({"x": 1})),
        Outcome::Mismatch(_)
    ));
    assert!(matches!(
        m(json!({"x": "{null}"}), json!({})),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        m(json!({"x": "{null}"}), json!({"x": null})),
        Outcome::Match
    );
    assert_eq!(
        m(
            json!({"p": "{uuid}"}),
            json!({"p": "0b6f2d4e-8a51-4c3e-9d77-2f1e6a0c9b13"})
        ),
        Outcome::Match
    );
    assert!(matches!(
        m(json!({"p": "{uuid}"}), json!({"p": "abc"})),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        m(json!({"e": "{exp.a}"}), json!({"e": 1767229200})),
        Outcome::Match
    );
    let mut caps = Vec::new();
    assert_eq!(
        match_value(
            &json!({"token": "{=tok}"}),
            Some(&json!({"token": "abc"})),
            &vars(),
            &mut caps
        ),
        Outcome::Match
    );
    assert_eq!(caps, vec![("tok".to_owned(), json!("abc"))]);
}

#[test]
fn operators() {
    let got = json!({"joined": [{"peerId": "b"}, {"peerId": "c"}]});
    assert_eq!(
        m(
            json!({"joined": {"$set": [{"peerId": "c"}, {"peerId": "b"}]}}),
            got.clone()
        ),
        Outcome::Match
    );
    assert!(matches!(
        m(json!({"joined": {"$set": [{"peerId": "c"}]}}), got.clone()),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        m(
            json!({"joined": {"$contains": [{"peerId": "c"}]}}),
            got.clone()
        ),
        Outcome::Match
    );
    assert_eq!(
        m(json!({"joined": {"$len": 2}}), got.clone()),
        Outcome::Match
    );
    assert_eq!(
        m(json!({"code": {"$not": "x"}}), json!({"code": "y"})),
        Outcome::Match
    );
    assert_eq!(
        m(
            json!({"code": {"$one_of": ["x", "y"]}}),
            json!({"code": "y"})
        ),
        Outcome::Match
    );
    assert_eq!(
        m(json!({"v": {"$eq": {"a": 1}}}), json!({"v": {"a": 1}})),
        Outcome::Match
    );
}

#[test]
fn raw_and_ordered_look_at_the_text() {
    let text = r#"{"type":"message","data":{"z": 1,"a":1.50},"fromMetadata":{"name":"Ann","color":"teal"},"joined":[{"metadata":{"b":1,"a":2}}]}"#;
    let got: Value = serde_json::from_str(text).unwrap();
    let f = |want: Value| match_frame(&want, &got, text, &vars(), &mut Vec::new());
    assert_eq!(
        f(json!({"data": {"$raw": r#"{"z": 1,"a":1.50}"#}})),
        Outcome::Match
    );
    assert!(matches!(
        f(json!({"data": {"$raw": r#"{"z":1,"a":1.5}"#}})),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        f(json!({"fromMetadata": {"$ordered": r#"{"name": "Ann", "color": "teal"}"#}})),
        Outcome::Match
    );
    assert!(matches!(
        f(json!({"fromMetadata": {"$ordered": r#"{"color":"teal","name":"Ann"}"#}})),
        Outcome::Mismatch(_)
    ));
    assert_eq!(
        f(json!({"joined": [{"metadata": {"$ordered": r#"{"b":1,"a":2}"#}}]})),
        Outcome::Match
    );
    assert_eq!(
        f(json!({"joined": {"$set": [{"metadata": {"$raw": r#"{"b":1,"a":2}"#}}]}})),
        Outcome::Match
    );
    assert!(matches!(
        f(json!({"nope": {"$raw": "1"}})),
        Outcome::Mismatch(_)
    ));
    // Without the text (a value built elsewhere) the operators cannot match.
    assert!(matches!(
        m(json!({"data": {"$raw": "1"}}), json!({"data": 1})),
        Outcome::Mismatch(_)
    ));
}
