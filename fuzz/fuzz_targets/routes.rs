//! Request paths: routing never panics, and what routes is one of the served templates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    if let Some(template) = eventsd::worker::api::route_template(path) {
        assert!(eventsd::worker::api::ROUTES.iter().any(|(t, _)| *t == template));
    }
});
