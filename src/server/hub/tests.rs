//! Unit tests of the hub (split from hub.rs to keep it readable).

use super::*;
use crate::server::config::Config;
use std::collections::VecDeque;

fn drain(c: &Conn) -> Vec<String> {
    let mut out = VecDeque::new();
    c.out.take(Instant::now(), &mut out, usize::MAX);
    out.into_iter()
        .map(|i| i.text.as_str().to_owned())
        .collect()
}

fn conn(id: u64, peer: &str, meta: Option<&str>) -> Arc<Conn> {
    let meta = meta.map(|m| RawValue::from_string(m.into()).unwrap());
    Arc::new(Conn::new(id, peer, meta, true))
}

#[test]
fn presence_is_refcounted_per_peer() {
    let sh = Shared::new(&Config::dev());
    let hub = Hub::default();
    let a = conn(1, "a", Some(r#"{"n":1}"#));
    let b1 = conn(2, "b", None);
    let b2 = conn(3, "b", None);
    hub.subscribe(&sh, &a, "room", false, Some("ack-a".into()));
    assert_eq!(
        drain(&a),
        [
            "ack-a",
            r#"{"type":"presence","channel":"room","joined":[],"left":[]}"#
        ]
    );
    hub.subscribe(&sh, &b1, "room", false, None);
    assert_eq!(
        drain(&b1),
        [
            r#"{"type":"presence","channel":"room","joined":[{"peerId":"a","metadata":{"n":1}}],"left":[]}"#
        ]
    );
    assert_eq!(
        drain(&a),
        [r#"{"type":"presence","channel":"room","joined":[{"peerId":"b"}],"left":[]}"#]
    );
    hub.subscribe(&sh, &b2, "room", false, None);
    assert_eq!(
        drain(&a),
        Vec::<String>::new(),
        "second tab is not announced"
    );
    hub.unsubscribe(&sh, &b1, "room", None, Leave::Unsubscribe);
    assert_eq!(drain(&a), Vec::<String>::new(), "b is still present");
    hub.unsubscribe(&sh, &b2, "room", None, Leave::Disconnect);
    assert_eq!(
        drain(&a),
        [r#"{"type":"presence","channel":"room","joined":[],"left":[{"peerId":"b"}]}"#]
    );
    assert_eq!(hub.peers_in("room", false).len(), 1);
    hub.unsubscribe(&sh, &a, "room", None, Leave::Unsubscribe);
    assert!(hub.channels().is_empty(), "empty channels are forgotten");
}

#[test]
fn publish_excludes_sender_and_dedups_wildcards() {
    let sh = Shared::new(&Config::dev());
    let hub = Hub::default();
    let a = conn(1, "a", Some(r#"{"n":1}"#));
    let b = conn(2, "b", None);
    let scope = Arc::new(Scope {
        key: vec![crate::server::state::Matcher::All].into(),
        token: None,
    });
    hub.subscribe(&sh, &a, "room-1", false, None);
    hub.subscribe(&sh, &b, "room-1", false, None);
    hub.subscribe_wildcard(&sh, &b, "room-*", true, &scope, None);
    drain(&a);
    drain(&b);
    let data = RawValue::from_string("1".into()).unwrap();
    let meta = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
    let n = hub.publish(&sh, Some(1), 1, "room-1", "a", &data, Some(&meta));
    assert_eq!(n, 1);
    assert_eq!(drain(&a), Vec::<String>::new());
    assert_eq!(
        drain(&b),
        [r#"{"type":"message","channel":"room-1","from":"a","data":1,"fromMetadata":{"n":1}}"#]
    );
    assert_eq!(hub.publish(&sh, None, 9, "_system/x", "s", &data, None), 0);
}
