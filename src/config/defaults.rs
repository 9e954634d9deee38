//! The configuration's built-in defaults: what every key is when the file leaves it out
//! (process-model.md's table), one `Default` per section.
//!
//! Owns the default values only; their ranges are `values.rs`', the checks across keys
//! `mod.rs`'. Never reads a file.

use std::net::SocketAddr;
use std::path::PathBuf;

use log::LevelFilter;

use super::values::HOUR;
use super::{
    Actions, Daemon, LogTarget, Privileges, RegistryLimits, Server, Smtp, Watchers, Workers,
};
use crate::registry::Destinations;

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 1234)),
            backlog: 1024,
            max_body_bytes: 1024 * 1024,
            read_timeout_secs: 15,
            write_timeout_secs: 15,
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            api_token: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            expose_keys_without_token: true,
            deferred_accept: true,
        }
    }
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            min: 2,
            max: 2,
            idle_timeout_secs: 60,
            heartbeat_timeout_secs: 30,
            graceful_timeout_secs: 30,
            max_requests: 0,
            user: String::new(),
            group: String::new(),
            chroot: PathBuf::new(),
            privileges: Privileges::default(),
        }
    }
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            max_keys: 100_000,
            action_queue: 10_000,
            max_fields: 16,
            max_field_path_bytes: 256,
            max_key_bytes: 1024,
            max_per_type: 256,
            snapshot_secs: 1,
            snapshot_timeout_secs: 30,
        }
    }
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            webhook_allow: Vec::new(),
            webhook_deny: Destinations::default().webhook_deny,
            retry_max_interval_secs: 300,
            max_age_secs: HOUR,
            max_in_flight_per_target: 4,
        }
    }
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_event_types: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            state_dir: PathBuf::from("./eventsd-data"),
            pidfile: PathBuf::new(),
            control_socket: PathBuf::new(),
            log: LogTarget::Default,
            log_level: LevelFilter::Info,
            access_log: None,
            include: Vec::new(),
        }
    }
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            host: "127.0.0.1".to_string(),
            port: 25,
            from: "eventsd@localhost".to_string(),
            username: String::new(),
            password: String::new(),
            starttls: false,
            timeout_secs: 10,
            allowed_domains: Vec::new(),
        }
    }
}
