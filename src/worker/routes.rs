//! The routes of the REST API: every path the daemon serves, as its OpenAPI template
//! with the methods it allows (the `Allow` header of a 405), how a path is recognized, and
//! which registry change a request asks for. The OpenAPI document is tested against
//! `ROUTES`; what each route does is `api`'s business.

use hyper::Method;
use hyper::body::Bytes;

use crate::registry::Change;

/// Every route the daemon serves, as its OpenAPI template, with the methods it allows
/// (the `Allow` header of a 405). The OpenAPI document is tested against this table.
pub const ROUTES: [(&str, &str); 16] = [
    ("/health", "GET, HEAD"),
    ("/metrics", "GET"),
    ("/event/", "GET, POST"),
    ("/event/{type}/", "GET, POST, DELETE"),
    ("/event/{type}/_bulk", "POST"),
    ("/event/{type}/collector/", "GET, POST"),
    ("/event/{type}/collector/{name}", "GET, DELETE"),
    ("/event/{type}/watcher/", "GET, POST"),
    ("/event/{type}/watcher/{name}", "GET, DELETE"),
    ("/event/{type}/watcher/{name}/state", "GET"),
    ("/silences", "GET, POST"),
    ("/silences/{id}", "GET, DELETE"),
    ("/alerts", "GET"),
    ("/status", "GET"),
    ("/ui/", "GET"),
    ("/ui/{asset}", "GET"),
];

/// The route template that serves `path`, if any (a trailing slash is optional).
pub fn route_template(path: &str) -> Option<&'static str> {
    Route::parse(path).map(Route::template)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Route<'a> {
    Health,
    Metrics,
    Events,
    Event(&'a str),
    Bulk(&'a str),
    Collectors(&'a str),
    Collector(&'a str, &'a str),
    Watchers(&'a str),
    Watcher(&'a str, &'a str),
    WatcherState(&'a str, &'a str),
    Silences,
    Silence(&'a str),
    Alerts,
    Status,
    Ui,
    UiAsset(&'a str),
}

impl<'a> Route<'a> {
    /// A trailing slash is optional on every path.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        let path = path.strip_prefix('/')?;
        let path = path.strip_suffix('/').unwrap_or(path);
        // No route has more than five segments: a longer path names none.
        let mut segments = [""; 5];
        let mut count = 0;
        for segment in path.split('/') {
            *segments.get_mut(count)? = segment;
            count += 1;
        }
        Some(match &segments[..count] {
            ["health"] => Route::Health,
            ["metrics"] => Route::Metrics,
            ["event"] => Route::Events,
            ["event", event] => Route::Event(event),
            ["event", event, "_bulk"] => Route::Bulk(event),
            ["event", event, "collector"] => Route::Collectors(event),
            ["event", event, "collector", name] => Route::Collector(event, name),
            ["event", event, "watcher"] => Route::Watchers(event),
            ["event", event, "watcher", name] => Route::Watcher(event, name),
            ["status"] => Route::Status,
            ["ui"] => Route::Ui,
            ["ui", asset] => Route::UiAsset(asset),
            ["event", event, "watcher", name, "state"] => Route::WatcherState(event, name),
            ["silences"] => Route::Silences,
            ["silences", id] => Route::Silence(id),
            ["alerts"] => Route::Alerts,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        match self {
            Route::Health => 0,
            Route::Metrics => 1,
            Route::Events => 2,
            Route::Event(_) => 3,
            Route::Bulk(_) => 4,
            Route::Collectors(_) => 5,
            Route::Collector(..) => 6,
            Route::Watchers(_) => 7,
            Route::Watcher(..) => 8,
            Route::WatcherState(..) => 9,
            Route::Silences => 10,
            Route::Silence(_) => 11,
            Route::Alerts => 12,
            Route::Status => 13,
            Route::Ui => 14,
            Route::UiAsset(_) => 15,
        }
    }

    pub fn template(self) -> &'static str {
        ROUTES[self.index()].0
    }

    pub fn allow(self) -> &'static str {
        ROUTES[self.index()].1
    }

    /// The registry change a request asks for, if it asks for one.
    pub fn change(self, method: &Method, body: Bytes) -> Option<Change> {
        let (event, body) = (String::from, body.to_vec());
        Some(match (self, method) {
            (Route::Events, &Method::POST) => Change::CreateEvent { body },
            (Route::Event(e), &Method::DELETE) => Change::DeleteEvent { event: event(e) },
            (Route::Collectors(e), &Method::POST) => Change::CreateCollector {
                event: event(e),
                body,
            },
            (Route::Collector(e, name), &Method::DELETE) => Change::DeleteCollector {
                event: event(e),
                name: name.to_string(),
            },
            (Route::Watchers(e), &Method::POST) => Change::CreateWatcher {
                event: event(e),
                body,
            },
            (Route::Watcher(e, name), &Method::DELETE) => Change::DeleteWatcher {
                event: event(e),
                name: name.to_string(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_an_optional_trailing_slash() {
        assert_eq!(Route::parse("/event"), Some(Route::Events));
        assert_eq!(Route::parse("/event/"), Some(Route::Events));
        assert_eq!(Route::parse("/event/x/"), Some(Route::Event("x")));
        assert_eq!(Route::parse("/event/x/_bulk"), Some(Route::Bulk("x")));
        assert_eq!(
            Route::parse("/event/x/watcher/w/"),
            Some(Route::Watcher("x", "w"))
        );
        assert_eq!(Route::parse("/event/x/y/z"), None);
        assert_eq!(Route::parse("/event/x/watcher/w/state/more"), None);
        assert_eq!(Route::parse("/ui"), Some(Route::Ui));
        assert_eq!(Route::parse("/ui/app.js"), Some(Route::UiAsset("app.js")));
        assert_eq!(Route::parse("/silences/"), Some(Route::Silences));
        assert_eq!(
            Route::parse("/event/x/watcher/w/state"),
            Some(Route::WatcherState("x", "w"))
        );
        assert_eq!(Route::parse("health"), None);
    }
}
