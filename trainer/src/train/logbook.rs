//! What a user sees: a JSON-lines log beside the checkpoints and a progress bar.
//!
//! Every record is one JSON object per line with `kind` (`train`, `val`, `test`,
//! `event`), `epoch` and the global `step`, so a log can be read with `jq`, plotted
//! ([`super::plots`]) and cut back to a checkpoint on resume (records after the
//! checkpoint's step are dropped, so a resumed run's log equals an uninterrupted one's).
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

/// The log file of a run directory.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("log.jsonl")
}

/// An append-only JSON-lines log.
pub struct Logbook {
    path: PathBuf,
    file: std::fs::File,
}

impl Logbook {
    /// Opens `<run_dir>/log.jsonl`. With `keep_until`, records whose `step` exceeds it
    /// are removed first (resume); without, an existing log is started afresh.
    pub fn open(run_dir: &Path, keep_until: Option<u64>) -> std::io::Result<Logbook> {
        std::fs::create_dir_all(run_dir)?;
        let path = log_path(run_dir);
        let kept: Vec<String> = match keep_until {
            Some(limit) if path.exists() => read_records(&path)?
                .into_iter()
                .filter(|r| r.get("step").and_then(Value::as_u64).unwrap_or(0) <= limit)
                .map(|r| Value::Object(r).to_string())
                .collect(),
            _ => vec![],
        };
        let mut file = std::fs::File::create(&path)?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(Logbook { path, file })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record of `kind` with the given fields, flushed at once.
    pub fn record(
        &mut self,
        kind: &str,
        epoch: usize,
        step: u64,
        fields: &[(&str, Value)],
    ) -> std::io::Result<()> {
        let mut m = Map::new();
        m.insert("kind".into(), kind.into());
        m.insert("epoch".into(), epoch.into());
        m.insert("step".into(), step.into());
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        writeln!(self.file, "{}", Value::Object(m))?;
        self.file.flush()
    }
}

/// Reads every record of a log (lines that are not JSON objects are skipped).
pub fn read_records(path: &Path) -> std::io::Result<Vec<Map<String, Value>>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&line?) {
            out.push(m);
        }
    }
    Ok(out)
}

/// A progress bar for one epoch: position, loss, samples/s and ETA. Drawn on stderr
/// only when it is a terminal (indicatif hides it otherwise, e.g. under a test or a
/// pipe, where the JSON log is the record).
pub fn epoch_bar(steps: u64, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_resume_cuts_after_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let mut lb = Logbook::open(d.path(), None).unwrap();
        for s in 1..=5u64 {
            lb.record("train", 0, s, &[("loss", (1.0 / s as f64).into())])
                .unwrap();
        }
        lb.record("val", 0, 5, &[("balanced_accuracy", 0.7.into())])
            .unwrap();
        drop(lb);
        let r = read_records(&log_path(d.path())).unwrap();
        assert_eq!(r.len(), 6);
        assert_eq!(r[5]["kind"], "val");
        let lb = Logbook::open(d.path(), Some(3)).unwrap();
        drop(lb);
        let r = read_records(&log_path(d.path())).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2]["step"], 3);
        // Without resume the log starts afresh.
        drop(Logbook::open(d.path(), None).unwrap());
        assert!(read_records(&log_path(d.path())).unwrap().is_empty());
    }
}
