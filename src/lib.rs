//! eventsd: an events collector daemon.
//!
//! Clients register event types over a REST API and post events; a pre-forking master
//! supervises a pool of HTTP workers. The modules follow the process roles:
//!
//! - `master`: the supervisor process (its cycle, pool, signals, timeouts, control socket);
//! - `worker`: an HTTP worker process (hyper on one tokio thread) and its REST API;
//! - `child`: one lifecycle for every forked child (fork, prologue, each role's row of the
//!   process table, the master's record);
//! - `protocol`: the frames and messages between them, every channel's; `clock`: the time
//!   they stamp them with;
//! - `watch`: aggregation keys, the counter store and firing decisions;
//! - `oncall`: silences, the alert list and their answers (alerts.md);
//! - `action`: the action runner process and the deliveries (email, webhook, command);
//! - `cluster`: the cluster link process, which shares counters and registry through Redis;
//! - `event`: a posted event on the hot path; `appender`: how events are written;
//! - `registry`: event types, collectors and watchers, owned by the master;
//! - `config`, `cli` (the command line of both programs in `bin/`), `files`, `logging`,
//!   `pidfile`, `privileges`, `notify`, `status`, `metrics` and `exposition`: the
//!   daemon's plumbing.

pub mod action;
pub mod appender;
pub mod child;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event;
pub mod exposition;
pub mod files;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod notify;
pub mod oncall;
pub mod pidfile;
pub mod privileges;
pub mod protocol;
pub mod registry;
pub mod status;
pub mod title;
pub mod tls;
pub mod watch;
pub mod worker;
