//! Running a maker over many files: in parallel, with a progress bar, results
//! handed to one writer in input order (so the same command always writes the
//! same dataset, byte for byte), and a bad file reported and skipped.
//!
//! Plain `std::thread::scope` workers pulling job numbers from an atomic
//! counter: the writer (HDF5, shard files) must stay on one thread, results must
//! come out in order, and memory must stay bounded (a worker does not start job
//! `k` until job `k − lookahead` has been written). A rayon pipeline would need
//! the same reorder buffer and back-pressure on top.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Why a file was skipped: a short category for the summary, and the full message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason {
    /// `unreadable`, `channels`, `too short`, `no labels`…
    pub category: &'static str,
    pub message: String,
}

impl SkipReason {
    pub fn new(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
        }
    }
}

/// What a run did, for the closing summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Files that contributed.
    pub used_files: usize,
    /// Items written (windows or recordings).
    pub items: usize,
    /// Items written per split (or per kind).
    pub per_split: BTreeMap<String, usize>,
    /// Skipped files: (file, reason).
    pub skipped: Vec<(String, SkipReason)>,
    /// Input channel-samples processed (for throughput figures).
    pub input_channel_samples: u64,
}

impl Summary {
    /// Skips counted by category.
    pub fn skip_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for (_, r) in &self.skipped {
            *m.entry(r.category).or_insert(0) += 1;
        }
        m
    }

    /// The human summary: what was written, what was skipped and why.
    pub fn render(&self, what: &str) -> String {
        let mut s = format!(
            "wrote {} {what} from {} file(s)",
            self.items, self.used_files
        );
        if !self.per_split.is_empty() {
            let parts: Vec<String> = self
                .per_split
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        s.push('\n');
        if self.skipped.is_empty() {
            s.push_str("skipped 0 files\n");
        } else {
            let counts: Vec<String> = self
                .skip_counts()
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            s.push_str(&format!(
                "skipped {} file(s): {}\n",
                self.skipped.len(),
                counts.join(", ")
            ));
            for (file, r) in &self.skipped {
                s.push_str(&format!("  skipped {file}: {}\n", r.message));
            }
        }
        s
    }
}

/// Runs `work` on every job with `threads` workers and hands each result to
/// `sink` in job order on the calling thread. Shows a progress bar on a
/// terminal (stderr) labelled `what`.
pub fn ordered_parallel<J, R, W, S>(jobs: &[J], threads: usize, what: &str, work: W, mut sink: S)
where
    J: Sync,
    R: Send,
    W: Fn(&J) -> R + Sync,
    S: FnMut(usize, R),
{
    let n = jobs.len();
    if n == 0 {
        return;
    }
    let threads = threads.clamp(1, n);
    let lookahead = 2 * threads;
    let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} files, {elapsed} elapsed, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    let next = AtomicUsize::new(0);
    let written = Mutex::new(0usize);
    let advanced = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, written, advanced, work) = (&next, &written, &advanced, &work);
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= n {
                    break;
                }
                {
                    let mut w = written.lock().unwrap_or_else(|e| e.into_inner());
                    while k >= *w + lookahead {
                        w = advanced.wait(w).unwrap_or_else(|e| e.into_inner());
                    }
                }
                if tx.send((k, work(&jobs[k]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending: HashMap<usize, R> = HashMap::new();
        let mut emitted = 0usize;
        for (k, r) in rx.iter() {
            pending.insert(k, r);
            while let Some(r) = pending.remove(&emitted) {
                sink(emitted, r);
                emitted += 1;
                bar.inc(1);
                *written.lock().unwrap_or_else(|e| e.into_inner()) = emitted;
                advanced.notify_all();
            }
        }
    });
    bar.finish_and_clear();
}

/// Default worker count: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_whatever_the_timing() {
        let jobs: Vec<u64> = (0..40).collect();
        let mut seen = Vec::new();
        ordered_parallel(
            &jobs,
            4,
            "test",
            |&j| {
                // Later jobs finish first.
                std::thread::sleep(std::time::Duration::from_micros((40 - j) * 200));
                j * 2
            },
            |k, r| seen.push((k, r)),
        );
        assert_eq!(
            seen,
            (0..40).map(|k| (k as usize, k * 2)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn summary_counts_skips_by_reason() {
        let mut s = Summary {
            used_files: 2,
            items: 10,
            ..Summary::default()
        };
        s.per_split.insert("train".into(), 10);
        s.skipped.push((
            "a.edf".into(),
            SkipReason::new("unreadable", "a.edf: truncated"),
        ));
        s.skipped.push((
            "b.edf".into(),
            SkipReason::new("unreadable", "b.edf: bad header"),
        ));
        s.skipped
            .push(("c.edf".into(), SkipReason::new("channels", "missing CZ")));
        let text = s.render("windows");
        assert!(
            text.starts_with("wrote 10 windows from 2 file(s) (train 10)\n"),
            "{text}"
        );
        assert!(
            text.contains("skipped 3 file(s): 1 channels, 2 unreadable"),
            "{text}"
        );
        assert!(text.contains("  skipped c.edf: missing CZ"), "{text}");
    }
}
