//! The registry's rules, change by change: refusals change nothing, bounds hold,
//! declarations are protected, the file round-trips.

use super::*;

const LOCAL: Origin = Origin::LOCAL;

fn create_event(registry: &mut Registry, name: &str) -> Result<Uuid, Refusal> {
    let body = format!(r#"{{"type": "{name}"}}"#).into_bytes();
    registry.apply(&Change::CreateEvent { body }, LOCAL, &Rules::default())
}

/// The status a change gets refused with, under the default rules.
fn refused_status(registry: &mut Registry, change: &Change) -> u16 {
    registry
        .apply(change, LOCAL, &Rules::default())
        .unwrap_err()
        .status
}

fn collector(event: &str, body: &str) -> Change {
    Change::CreateCollector {
        event: event.into(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn a_refused_change_changes_nothing() {
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    let before = registry.clone();
    for (change, status) in [
        (
            Change::CreateEvent {
                body: br#"{"type": "logins"}"#.to_vec(),
            },
            409,
        ),
        (
            Change::CreateEvent {
                body: br#"{"type": "a b"}"#.to_vec(),
            },
            400,
        ),
        (
            Change::DeleteEvent {
                event: "nope".into(),
            },
            404,
        ),
        (
            collector("nope", r#"{"name": "c1", "appender": {"type": "null"}}"#),
            404,
        ),
        (
            collector("logins", r#"{"name": "c1", "appender": {"type": "smoke"}}"#),
            400,
        ),
        (
            Change::DeleteCollector {
                event: "logins".into(),
                name: "c1".into(),
            },
            404,
        ),
    ] {
        let refusal = registry
            .apply(&change, LOCAL, &Rules::default())
            .unwrap_err();
        assert_eq!(refusal.status, status, "{change:?}: {refusal:?}");
        assert_eq!(registry, before, "{change:?} changed the registry");
    }
}

#[test]
fn file_appenders_need_file_dirs_and_loopback_or_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    let path = dir.path().join("x.jsonl");
    let body = format!(
        r#"{{"name": "c1", "appender": {{"type": "file", "path": "{}"}}}}"#,
        path.display()
    );
    let change = collector("logins", &body);
    let remote = Origin {
        client: std::net::IpAddr::from([10, 0, 0, 5]),
    };
    let allowed = Rules {
        file_dirs: vec![dir.path().to_path_buf()],
        ..Rules::default()
    };
    let refused = registry
        .apply(&change, LOCAL, &Rules::default())
        .unwrap_err();
    assert_eq!(refused.status, 403);
    assert!(
        refused.message.contains("collectors.file_dirs"),
        "{refused:?}"
    );
    assert_eq!(
        registry
            .apply(&change, remote, &allowed)
            .unwrap_err()
            .status,
        403
    );
    let with_token = Rules {
        token_set: true,
        ..allowed
    };
    assert!(registry.apply(&change, remote, &with_token).is_ok());
}

#[test]
fn the_registry_cannot_grow_past_its_bounds() {
    let rules = Rules {
        max_event_types: 2,
        max_watchers: 1,
        max_fields: 2,
        ..Rules::default()
    };
    let mut registry = Registry::default();
    for name in ["ab", "cd"] {
        let body = format!(r#"{{"type": "{name}"}}"#).into_bytes();
        registry
            .apply(&Change::CreateEvent { body }, LOCAL, &rules)
            .unwrap();
    }
    let third = Change::CreateEvent {
        body: br#"{"type": "ef"}"#.to_vec(),
    };
    let refused = registry.apply(&third, LOCAL, &rules).unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        refused.message.contains("registry.max_event_types (2)"),
        "{refused:?}"
    );
    let watcher = |name: &str, fields: &str| {
        Change::CreateWatcher {
        event: "ab".into(),
        body: format!(
            r#"{{"name": "{name}", "threshold": 1, "aggregator": {{"type": "fields", "fields": {fields}}}, "action": {{"type": "null"}}}}"#
        )
        .into_bytes(),
    }
    };
    let fat = registry
        .apply(&watcher("w1", r#"["a", "b", "c"]"#), LOCAL, &rules)
        .unwrap_err();
    assert!(fat.message.contains("watchers.max_fields (2)"), "{fat:?}");
    registry
        .apply(&watcher("w1", r#"["a", "b"]"#), LOCAL, &rules)
        .unwrap();
    let second = registry
        .apply(&watcher("w2", r#"["a"]"#), LOCAL, &rules)
        .unwrap_err();
    assert!(
        second.message.contains("watchers.max_per_type (1)"),
        "{second:?}"
    );
}

#[test]
fn a_loaded_registry_loses_what_only_the_config_may_hold() {
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    let entry = registry.events.values_mut().next().unwrap();
    // The last saved before durations were bounded: Redis could not expire its keys.
    for planted in [
        r#""action": {"type": "command", "argv": ["/bin/sh", "-c", "id"]}"#,
        r#""action": {"type": "webhook", "url": "http://[::ffff:169.254.169.254]/"}"#,
        r#""action": {"type": "webhook", "url": "http://x.io/", "headers": {"Content-Length": "2"}}"#,
        r#""window_secs": 10000000000000000, "action": {"type": "null"}"#,
    ] {
        let watcher: WatcherSpec = serde_json::from_str(&format!(
            r#"{{"name": "planted", "threshold": 1, "aggregator": {{"type": "single"}},
                {planted}}}"#
        ))
        .unwrap();
        entry.watchers.push(Entry {
            id: Uuid::new_v4(),
            declared: false,
            created: None,
            spec: watcher,
        });
    }
    let collector: CollectorSpec = serde_json::from_str(
        r#"{"name": "planted", "appender": {"type": "file", "path": "/etc/profile.d/x.sh"}}"#,
    )
    .unwrap();
    entry.collectors.push(Entry {
        id: Uuid::new_v4(),
        declared: false,
        created: None,
        spec: collector,
    });
    let dropped = registry.drop_forbidden(&Rules::default());
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    for reason in [
        "`command`",
        "actions.webhook_deny",
        "frames or routes",
        "10 years",
    ] {
        assert!(dropped.iter().any(|d| d.contains(reason)), "{dropped:?}");
    }
    let entry = registry.event("logins").unwrap();
    assert!(entry.watchers.is_empty() && entry.collectors.is_empty());
    assert!(registry.drop_forbidden(&Rules::default()).is_empty());
}

#[test]
fn a_realert_maximum_needs_a_cooldown_no_greater() {
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    for cooldowns in [
        r#""cooldown_max_secs": 60"#,
        r#""cooldown_secs": 90, "cooldown_max_secs": 60"#,
    ] {
        let body = format!(
            r#"{{"name": "w1", "threshold": 1, {cooldowns}, "aggregator": {{"type": "single"}}, "action": {{"type": "null"}}}}"#
        );
        let change = Change::CreateWatcher {
            event: "logins".into(),
            body: body.into_bytes(),
        };
        let refused = registry
            .apply(&change, LOCAL, &Rules::default())
            .unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(refused.message.contains("cooldown_max_secs"), "{refused:?}");
    }
}

#[test]
fn command_actions_are_refused_over_http() {
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    let body = br#"{"name": "w1", "threshold": 1, "aggregator": {"type": "single"},
                    "action": {"type": "command", "argv": ["/bin/true"]}}"#;
    let change = Change::CreateWatcher {
        event: "logins".into(),
        body: body.to_vec(),
    };
    let token = Rules {
        token_set: true,
        ..Rules::default()
    };
    assert_eq!(
        registry.apply(&change, LOCAL, &token).unwrap_err().status,
        403
    );
}

#[test]
fn declarations_are_applied_protected_and_withdrawn() {
    let declarations: Vec<EventDeclaration> = toml::from_str::<toml::Table>(
        "[[event]]\ntype = \"logins\"\n[[event.collector]]\nname = \"audit\"\nappender = { type = \"null\" }\n",
    )
    .unwrap()["event"]
        .clone()
        .try_into()
        .unwrap();
    let mut registry = Registry::default();
    assert!(registry.declare(&declarations));
    let id = registry.event("logins").unwrap().collectors[0].id;
    assert!(
        !registry.declare(&declarations),
        "same declarations, no change"
    );
    assert_eq!(
        registry.event("logins").unwrap().collectors[0].id,
        id,
        "ids are stable"
    );

    let delete = Change::DeleteCollector {
        event: "logins".into(),
        name: "audit".into(),
    };
    assert_eq!(refused_status(&mut registry, &delete), 403);
    let delete = Change::DeleteEvent {
        event: "logins".into(),
    };
    assert_eq!(refused_status(&mut registry, &delete), 403);
    let replace = collector(
        "logins",
        r#"{"name": "audit", "appender": {"type": "null"}}"#,
    );
    assert_eq!(refused_status(&mut registry, &replace), 403);

    assert!(registry.declare(&[]));
    assert!(registry.events.is_empty());
}

#[test]
fn a_corrupt_file_is_refused_naming_it_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    std::fs::write(&path, b"{\"version\": 3, \"events\": {").unwrap();
    let message = format!("{:#}", Registry::load(&path).unwrap_err());
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"version\": 3, \"events\": {"
    );
}

#[test]
fn a_saved_registry_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    let mut registry = Registry::default();
    create_event(&mut registry, "logins").unwrap();
    registry.save(&path).unwrap();
    assert_eq!(Registry::load(&path).unwrap(), registry);
}
