//! SIGHUP and SIGUSR1: a new configuration, validated whole before anything changes, then
//! rolled out as a new generation of workers; and log files reopened after rotation, by
//! the master and every child.
//!
//! A refused reload leaves no trace: the running configuration, socket and registry stay.

use log::{error, info, warn};

use super::{Master, Phase, setup};
use crate::config::{Actions, Config, Privileges, Smtp};
use crate::logging::{self, Sink};
use crate::notify;
use crate::protocol::worker::MasterMessage;

impl Master {
    /// SIGHUP: validate the new configuration, then roll a new generation of workers.
    pub(super) fn reload(&mut self) {
        if self.lifecycle.phase != Phase::Running {
            warn!("reload ignored: the master is {:?}", self.lifecycle.phase);
            return;
        }
        notify::send(notify::RELOADING);
        self.lifecycle.reloads += 1;
        match self.apply_new_config() {
            Ok(()) => {
                self.lifecycle.last_reload_error = None;
                self.pool.generation += 1;
                self.lifecycle.reload_in_progress = true;
                info!(
                    "reloading {}: starting generation {} with {} workers",
                    self.ground.source.describe(),
                    self.pool.generation,
                    self.pool.target
                );
            }
            Err(e) => {
                error!("reload refused, the running configuration stays: {e:#}");
                self.lifecycle.last_reload_error = Some(format!("{e:#}"));
                notify::send(notify::READY);
            }
        }
    }

    fn apply_new_config(&mut self) -> anyhow::Result<()> {
        let mut new = self.ground.source.load_checked()?;
        let old = &self.ground.config;
        let runner_changed = runner_settings(&new) != runner_settings(old);
        if new.daemon.state_dir != old.daemon.state_dir
            || new.daemon.pidfile != old.daemon.pidfile
            || new.daemon.control_socket != old.daemon.control_socket
        {
            warn!("daemon.state_dir, pidfile and control_socket change only on restart");
            new.daemon.state_dir.clone_from(&old.daemon.state_dir);
            new.daemon.pidfile.clone_from(&old.daemon.pidfile);
            new.daemon
                .control_socket
                .clone_from(&old.daemon.control_socket);
        }
        setup::check_privileges(&new)?;
        // Read again: a renewed certificate is served by the new generation.
        let tls = crate::tls::load(new.server.tls_files())?;
        let listener =
            if new.server.listen != old.server.listen || new.server.backlog != old.server.backlog {
                Some(setup::bind(&new)?)
            } else {
                None
            };
        logging::reconfigure(
            &Sink::for_target(&new.daemon.log, self.ground.default_sink.clone()),
            new.daemon.log_level,
        )?;
        logging::hand_over(&new.workers.privileges)?;
        logging::prepare_access_log(&new)?;
        // Saved last: nothing after it can fail, so a refused reload leaves no trace.
        let mut registry = self.registry.clone();
        let declarations_changed = registry.declare(&new.event);
        if declarations_changed {
            registry.save(&setup::registry_path(&new))?;
            self.registry = registry;
            self.counting.watch.sync(&self.registry);
            self.settle_orphaned_firings();
            self.push_registry();
        }
        self.counting.watch.set_max_keys(new.watchers.max_keys);
        self.oncall.reconfigure(&new);
        if let Some(listener) = listener {
            info!("now listening on {}", new.server.listen);
            // Old workers keep their copy of the previous socket until they have drained.
            self.ground.listener = listener;
        }
        // A new socket, or the same one whose `server.deferred_accept` may have changed.
        setup::tune_listener(&self.ground.listener, &new.server);
        self.pool.clamp_target(new.workers.min, new.workers.max);
        self.ground.tls = tls;
        self.ground.config = new;
        if runner_changed {
            self.actions.retire_runner(
                "[smtp], [actions], watchers.action_queue or the workers' user changed",
            );
        }
        Ok(())
    }

    /// SIGUSR1 (logrotate): the master's log files, then every child's.
    pub(super) fn reopen_logs(&mut self) {
        let privileges = &self.ground.config.workers.privileges;
        let reopened = logging::reopen()
            .and_then(|()| logging::hand_over(privileges))
            .and_then(|()| logging::prepare_access_log(&self.ground.config));
        match reopened {
            Ok(()) => info!("reopened log files"),
            Err(e) => error!("cannot reopen log files: {e:#}"),
        }
        self.broadcast(&MasterMessage::ReopenLogs);
        self.actions.reopen_logs();
    }
}

/// What the action runner reads from the configuration when it starts.
fn runner_settings(config: &Config) -> (&Smtp, &Actions, usize, &Privileges) {
    (
        &config.smtp,
        &config.actions,
        config.watchers.action_queue,
        &config.workers.privileges,
    )
}
