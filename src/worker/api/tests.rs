//! The worker API's own rules, apart from the daemon: NDJSON lines, `?ids=`, tokens.

use super::*;

#[test]
fn bulk_lines_are_all_objects_or_the_batch_is_refused() {
    assert_eq!(
        parse_lines(b"{\"a\":1}\n\n{\"b\":2}\n", &mut Scratch::default())
            .unwrap()
            .len(),
        2
    );
    let message = parse_lines(b"{\"a\":1}\n[2]\n", &mut Scratch::default()).unwrap_err();
    assert!(message.starts_with("Line 2:"), "{message}");
    let message = parse_lines(b"{}\n\n{\"a\":\"\xff\"}\n{}", &mut Scratch::default()).unwrap_err();
    assert!(
        message.starts_with("Line 3:") && message.contains("UTF-8"),
        "{message}"
    );
    assert!(parse_lines(b"\n\n", &mut Scratch::default()).is_err());
}

#[test]
fn bulk_ids_only_when_asked() {
    assert!(wants_ids(Some("ids=true")));
    assert!(wants_ids(Some("x=1&ids=1")));
    assert!(!wants_ids(Some("ids=false")));
    assert!(!wants_ids(Some("noids=true")));
    assert!(!wants_ids(None));
}

#[test]
fn tokens_compare_whole() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret2"));
    assert!(!constant_time_eq(b"", b"secret"));
}
