//! A configuration folder (`[daemon] include`, as nginx's `conf.d`): the patterns expanded
//! in name order, each file checked alone (so that an error names its file, key and
//! line), then laid over the main file: tables key by key, a later file's value winning,
//! and `[[event]]` declarations added.
//!
//! Owns finding and merging the included files; it only reads them. One level: an
//! included file may not include more.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use toml::{Table, Value};

use super::Config;

/// The files `patterns` name, relative ones against `base_dir`: each pattern's matches
/// in name order, patterns in the order given. A pattern without a wildcard must name a
/// file; one with a wildcard may match nothing (an empty `conf.d`).
pub fn files(patterns: &[String], base_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        let absolute = base_dir.join(pattern);
        let absolute = absolute.to_string_lossy();
        let matches = glob::glob(&absolute)
            .with_context(|| format!("daemon.include: `{pattern}` is not a valid pattern"))?;
        let mut found = matches
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("daemon.include: cannot read what `{pattern}` names"))?;
        found.sort();
        if found.is_empty() && !pattern.contains(['*', '?', '[']) {
            bail!("daemon.include: {absolute} does not exist");
        }
        files.extend(found);
    }
    Ok(files)
}

/// The main file's `text` with every included file laid over it, as one configuration.
pub fn merged(text: &str, files: &[PathBuf]) -> anyhow::Result<Config> {
    let mut table: Table = text.parse()?;
    for file in files {
        let included = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read included file {}", file.display()))?;
        let alone = Config::typed(&included)
            .with_context(|| format!("in included file {}", file.display()))?;
        if !alone.daemon.include.is_empty() {
            bail!(
                "in included file {}: daemon.include may only be in the main file",
                file.display()
            );
        }
        lay_over(&mut table, included.parse()?);
    }
    Value::Table(table)
        .try_into()
        .context("the configuration with its included files")
}

/// `over` laid on `base`: tables merged key by key, `[[event]]` declarations added, any
/// other value replaced.
fn lay_over(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => lay_over(below, above),
            (Some(Value::Array(below)), Value::Array(above)) if key == "event" => {
                below.extend(above);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_win_tables_merge_and_events_add_up() {
        let mut base: Table = "[server]\nbacklog = 10\nmax_connections = 5\n\
                               [[event]]\ntype = \"shop\"\n"
            .parse()
            .unwrap();
        let over: Table = "[server]\nbacklog = 20\n[[event]]\ntype = \"blog\"\n"
            .parse()
            .unwrap();
        lay_over(&mut base, over);
        assert_eq!(base["server"]["backlog"].as_integer(), Some(20));
        assert_eq!(base["server"]["max_connections"].as_integer(), Some(5));
        let events: Vec<&str> = base["event"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["shop", "blog"]);
    }
}
