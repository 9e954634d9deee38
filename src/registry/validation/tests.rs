//! Definitions as clients send them: every check names its field.

use super::watcher::RuleKind;
use super::*;

fn watcher(body: &str) -> Result<WatcherSpec, String> {
    from_json(body.as_bytes())
}

const ACTION: &str = r#""action": {"type": "null"}"#;

#[test]
fn names_follow_the_pattern() {
    for good in [
        "ab",
        "user_logged_in",
        "new_event-1",
        &format!("a{}", "b".repeat(127)),
    ] {
        assert!(Name::is_valid(good), "{good}");
    }
    for bad in [
        "",
        "a",
        "1ab",
        "_ab",
        "../etc",
        "a b",
        "ünï",
        "a%00",
        &"a".repeat(129),
    ] {
        assert!(!Name::is_valid(bad), "{bad}");
    }
}

#[test]
fn the_spec_example_watcher_parses() {
    let parsed = watcher(
        r#"{"name": "login-storm", "threshold": 100,
            "aggregator": {"type": "fields", "fields": ["ip", "user.id"]},
            "window_secs": 60, "cooldown_secs": 300,
            "action": {"type": "email", "to": "ops@example.com", "subject": "Login storm"}}"#,
    )
    .unwrap();
    assert_eq!(parsed.threshold, Some(100));
    assert_eq!(
        parsed.action,
        Action::Email {
            to: vec!["ops@example.com".into()],
            subject: "Login storm".into()
        }
    );
}

#[test]
fn bad_watcher_fields_are_named() {
    let base = r#""name": "w1", "aggregator": {"type": "single"}"#;
    for (body, field) in [
        (
            format!(r#"{{{base}, "threshold": "5", {ACTION}}}"#),
            "threshold",
        ),
        (
            format!(r#"{{{base}, "threshold": -1, {ACTION}}}"#),
            "threshold",
        ),
        (
            format!(r#"{{{base}, "threshold": 0, {ACTION}}}"#),
            "threshold",
        ),
        (
            format!(r#"{{{base}, "threshold": 1e99, {ACTION}}}"#),
            "threshold",
        ),
        (
            format!(
                r#"{{"name": "w1", "threshold": 5, "aggregator": {{"type": "bogus"}}, {ACTION}}}"#
            ),
            "aggregator",
        ),
        (
            format!(
                r#"{{"name": "w1", "threshold": 5, "aggregator": {{"type": "fields", "fields": []}}, {ACTION}}}"#
            ),
            "fields",
        ),
        (
            format!(
                r#"{{"name": "w1", "threshold": 5, "aggregator": {{"type": "fields", "fields": [1]}}, {ACTION}}}"#
            ),
            "fields",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "email", "to": "nobody", "subject": "s"}}}}"#
            ),
            "to",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "webhook", "url": "ftp://x"}}}}"#
            ),
            "url",
        ),
        (
            format!(
                r#"{{"name": "a b", "threshold": 5, "aggregator": {{"type": "single"}}, {ACTION}}}"#
            ),
            "name",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "webhook", "url": "http://x/", "headers": {{"X-A": "1\r\nX-Injected: 1"}}}}}}"#
            ),
            "headers",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "webhook", "url": "http://x/", "headers": {{"X-A\nB": "1"}}}}}}"#
            ),
            "headers",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "webhook", "url": "http://x/{}"}}}}"#,
                "a".repeat(3000)
            ),
            "url",
        ),
        (
            format!(
                r#"{{{base}, "threshold": 5, "action": {{"type": "email", "to": "a@b", "subject": "s\r\nBcc: x@y"}}}}"#
            ),
            "subject",
        ),
    ] {
        let message = watcher(&body).expect_err(&body);
        assert!(message.contains(&format!("`{field}")), "{body}: {message}");
    }
}

#[test]
fn headers_that_frame_or_route_the_request_are_refused_in_any_case() {
    let base = r#""name": "hook", "aggregator": {"type": "single"}, "threshold": 5"#;
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "CONNECTION",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Expect",
        "Proxy-Authorization",
        "proxy-connection",
        "Trailer",
    ] {
        let body = format!(
            r#"{{{base}, "action": {{"type": "webhook", "url": "http://x/", "headers": {{"{name}": "2"}}}}}}"#
        );
        let message = watcher(&body).unwrap().action.check_headers().unwrap_err();
        assert!(message.contains("frames or routes"), "{name}: {message}");
    }
    let allowed = format!(
        r#"{{{base}, "action": {{"type": "webhook", "url": "http://x/", "headers": {{"Authorization": "Bearer x", "X-Hostname": "a"}}}}}}"#
    );
    assert!(watcher(&allowed).unwrap().action.check_headers().is_ok());
}

#[test]
fn urls_lose_their_path_query_and_credentials() {
    for (url, shown) in [
        (
            "https://hooks.slack.com/services/T0/B0/XXXX",
            "https://hooks.slack.com/…",
        ),
        (
            "http://user:pw@10.0.0.1:8080/x?token=1",
            "http://10.0.0.1:8080/…",
        ),
        ("https://example.com/", "https://example.com/"),
        ("https://example.com", "https://example.com"),
    ] {
        assert_eq!(url_without_secrets(url), shown);
    }
}

#[test]
fn bodies_that_are_not_json_objects_say_so() {
    assert!(
        from_json::<EventSpec>(b"{nope")
            .unwrap_err()
            .contains("not valid JSON")
    );
    assert!(
        from_json::<EventSpec>(b"[1]")
            .unwrap_err()
            .starts_with("Invalid")
    );
    assert!(
        from_json::<EventSpec>(b"")
            .unwrap_err()
            .contains("not valid JSON")
    );
}

#[test]
fn appenders_are_checked() {
    let file = from_json::<CollectorSpec>(
        br#"{"name": "c1", "appender": {"type": "file", "path": "rel/x"}}"#,
    );
    let message = file.unwrap_err();
    assert!(
        message.contains("appender") && message.contains("absolute"),
        "{message}"
    );
    for (path, problem) in [
        ("/var/log/../../etc/profile.d/x.sh", "`..`"),
        ("/tmp/x\\nforged", "control character"),
    ] {
        let body = format!(r#"{{"name": "c1", "appender": {{"type": "file", "path": "{path}"}}}}"#);
        let message = from_json::<CollectorSpec>(body.as_bytes()).unwrap_err();
        assert!(message.contains(problem), "{path}: {message}");
    }
    let extra =
        from_json::<CollectorSpec>(br#"{"name": "c1", "appender": {"type": "null", "x": 1}}"#);
    assert!(extra.unwrap_err().contains("unknown field `x`"));
    let unknown = from_json::<CollectorSpec>(br#"{"name": "c1", "appender": {"type": "kafka"}}"#);
    assert!(unknown.unwrap_err().starts_with("Invalid `appender"));
}

/// A definition checked whole, as a registration or the config file checks it.
fn checked_watcher(body: &str) -> Result<WatcherSpec, String> {
    let spec = watcher(body)?;
    watcher::check(&spec)?;
    Ok(spec)
}

#[test]
fn each_rule_requires_its_fields_and_refuses_another_rule_s() {
    let single = r#""name": "w1", "aggregator": {"type": "single"}, "action": {"type": "null"}"#;
    let fields = r#""name": "w1", "aggregator": {"type": "fields", "fields": ["host", "dc"]}, "action": {"type": "null"}"#;
    for (body, field) in [
        (format!("{{{single}}}"), "threshold"),
        (format!(r#"{{{single}, "rule": "threshold"}}"#), "threshold"),
        (
            format!(r#"{{{single}, "rule": "flatline", "threshold": 1}}"#),
            "window_secs",
        ),
        (
            format!(r#"{{{single}, "rule": "flatline", "window_secs": 60}}"#),
            "threshold",
        ),
        (
            format!(r#"{{{single}, "threshold": 1, "send_resolved": true}}"#),
            "send_resolved",
        ),
        (
            format!(r#"{{{fields}, "threshold": 1, "expect": [["a", "b"]]}}"#),
            "expect",
        ),
        (
            format!(
                r#"{{{single}, "rule": "flatline", "threshold": 1, "window_secs": 9, "expect": ["a"]}}"#
            ),
            "expect",
        ),
        (
            format!(
                r#"{{{fields}, "rule": "flatline", "threshold": 1, "window_secs": 9, "expect": ["a"]}}"#
            ),
            "expect",
        ),
        (
            format!(
                r#"{{{fields}, "rule": "flatline", "threshold": 1, "window_secs": 9, "expect": [[{{"a": 1}}, "b"]]}}"#
            ),
            "expect",
        ),
        (
            format!(r#"{{{single}, "rule": "flatline", "threshold": 1, "window_secs": 0}}"#),
            "window_secs",
        ),
        (
            format!(r#"{{{single}, "rule": "often", "threshold": 1}}"#),
            "rule",
        ),
        (
            format!(
                r#"{{{single}, "rule": "spike", "window_secs": 60, "ratio": 1, "direction": "up"}}"#
            ),
            "ratio",
        ),
        (
            format!(
                r#"{{{single}, "rule": "spike", "window_secs": 60, "ratio": 0.5, "direction": "up"}}"#
            ),
            "ratio",
        ),
        (
            format!(r#"{{{single}, "rule": "spike", "window_secs": 60, "ratio": 2}}"#),
            "direction",
        ),
        (
            format!(r#"{{{single}, "rule": "spike", "ratio": 2, "direction": "up"}}"#),
            "window_secs",
        ),
        (
            format!(
                r#"{{{single}, "rule": "spike", "window_secs": 60, "ratio": 2, "direction": "sideways"}}"#
            ),
            "direction",
        ),
        (
            format!(
                r#"{{{single}, "rule": "spike", "threshold": 5, "window_secs": 60, "ratio": 2, "direction": "up"}}"#
            ),
            "threshold",
        ),
        (
            format!(r#"{{{single}, "rule": "cardinality", "field": "user", "window_secs": 60}}"#),
            "max_distinct",
        ),
        (
            format!(
                r#"{{{single}, "rule": "cardinality", "window_secs": 60, "max_distinct": 20}}"#
            ),
            "field",
        ),
        (
            format!(
                r#"{{{single}, "rule": "cardinality", "field": "user", "window_secs": 60, "max_distinct": 0}}"#
            ),
            "max_distinct",
        ),
        (
            format!(
                r#"{{{single}, "rule": "cardinality", "field": "user", "window_secs": 60, "max_distinct": 1000000}}"#
            ),
            "max_distinct",
        ),
        (
            format!(
                r#"{{{fields}, "rule": "cardinality", "field": "host", "window_secs": 60, "max_distinct": 2}}"#
            ),
            "field",
        ),
        (format!(r#"{{{single}, "rule": "new_value"}}"#), "field"),
        (
            format!(r#"{{{single}, "rule": "new_value", "field": "country", "fields": ["city"]}}"#),
            "field",
        ),
        (
            format!(r#"{{{single}, "rule": "new_value", "field": "country", "window_secs": 60}}"#),
            "window_secs",
        ),
        (
            format!(r#"{{{single}, "rule": "new_value", "field": "a..b"}}"#),
            "field",
        ),
    ] {
        let message = checked_watcher(&body).expect_err(&body);
        assert!(message.contains(&format!("`{field}`")), "{body}: {message}");
    }
    let heartbeat = format!(
        r#"{{{fields}, "rule": "flatline", "threshold": 1, "window_secs": 300,
            "expect": [["web-1", "eu"], ["web-2", "us"]], "forget_after_secs": 3600,
            "send_resolved": true}}"#
    );
    let spec = checked_watcher(&heartbeat).unwrap();
    assert_eq!(spec.rule, RuleKind::Flatline);
    let again: WatcherSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(again, spec, "saved and loaded alike");
}

#[test]
fn a_threshold_watcher_is_saved_as_before_rules_without_a_rule_field() {
    let body = r#"{"name": "w1", "threshold": 3, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#;
    let saved = serde_json::to_value(checked_watcher(body).unwrap()).unwrap();
    assert_eq!(
        saved,
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
}

#[test]
fn spike_cardinality_and_new_value_definitions_are_saved_and_loaded_alike() {
    let single = r#""name": "w1", "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}"#;
    for body in [
        format!(
            r#"{{{single}, "rule": "spike", "window_secs": 60, "ratio": 2.5, "direction": "both",
                "min_previous": 10, "min_current": 3}}"#
        ),
        format!(
            r#"{{{single}, "rule": "cardinality", "field": "user", "window_secs": 300,
                "max_distinct": 20, "min_distinct": 2}}"#
        ),
        format!(
            r#"{{{single}, "rule": "new_value", "fields": ["country", "city"], "learn_secs": 86400,
                "remember_secs": 2592000}}"#
        ),
    ] {
        let spec = checked_watcher(&body).expect(&body);
        let again: WatcherSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(again, spec, "{body}");
    }
}
