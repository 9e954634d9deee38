//! Every JSON body the registry accepts, through the master's own entry point: a
//! refused change changes nothing, an accepted one round-trips through registry.json.
#![no_main]

use eventsd::registry::{Change, Origin, Registry, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let origin = Origin { loopback: true };
    let rules = Rules { token_set: true, file_dirs: vec!["/tmp".into()], ..Rules::default() };
    let mut registry = Registry::default();
    registry
        .apply(&Change::CreateEvent { body: br#"{"type": "logins"}"#.to_vec() }, origin, &rules)
        .expect("a valid event type");
    for change in [
        Change::CreateEvent { body: body.to_vec() },
        Change::CreateCollector { event: "logins".into(), body: body.to_vec() },
        Change::CreateWatcher { event: "logins".into(), body: body.to_vec() },
    ] {
        let before = registry.clone();
        if registry.apply(&change, origin, &rules).is_err() {
            assert_eq!(registry, before, "a refused change changed the registry");
        }
    }
    let saved = serde_json::to_vec(&registry).expect("serializable");
    let loaded: Registry = serde_json::from_slice(&saved).expect("loads back");
    assert_eq!(loaded, registry);
});
