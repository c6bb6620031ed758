//! `labram-trainer evaluate`: the paper's metrics for an exported model on
//! labelled recordings (windowed exactly as the daemon would) or on a
//! `make-dataset` output, and the classical band-power baseline on a dataset.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use labram_trainer::data::format::Dataset;
use labram_trainer::eval::metrics::MetricError;
use labram_trainer::eval::{baseline, model};

/// Evaluate an exported model (or the classical baseline) with the paper's metrics.
///
/// Binary tasks print balanced accuracy, AUROC and PR-AUC; multi-class tasks
/// balanced accuracy, Cohen's kappa and weighted F1; one metric per line.
/// When every window is of one class, AUROC and PR-AUC are undefined: the
/// accuracies and per-recording mean probabilities are printed, the two
/// metrics as `undefined`, and why on stderr (exit status 0).
///
/// Examples:
///   labram-trainer evaluate --model m.onnx --recording a.edf=rest --recording b.edf=arithmetic
///   labram-trainer evaluate --model m.onnx --dataset out/eegmat-causal --split test
///   labram-trainer evaluate --baseline --dataset out/eegmat-causal
///   labram-trainer evaluate --model m.onnx --adaptation baseline --baseline-s 60 \
///      --session rest=Subject25_1.edf,arithmetic=Subject25_2.edf --train-eegmat DIR --train-subjects 22-24
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Exported model (`.onnx`, with its card `.yaml` beside it).
    #[arg(long, required_unless_present_any = ["baseline", "sessions"])]
    pub model: Option<PathBuf>,
    /// A labelled recording, `FILE=CLASS` (class name from the model card, or
    /// its index); repeatable. Windows, hop, electrodes and preprocessing come
    /// from the card, as in the daemon.
    #[arg(
        long = "recording",
        value_name = "FILE=CLASS",
        conflicts_with = "dataset"
    )]
    pub recordings: Vec<String>,
    /// A dataset written by `make-dataset`.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Split of the dataset to evaluate the model on.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Run the classical baseline (band power + logistic regression) on
    /// --dataset: train on its train split, choose C on val, report val and test.
    #[arg(long, requires = "dataset", conflicts_with = "model")]
    pub baseline: bool,
    /// With --baseline: weigh every window 1 instead of balancing the classes.
    #[arg(long, requires = "baseline")]
    pub unweighted: bool,
    /// Label → electrode override for --recording files, `LABEL=ELECTRODE`; repeatable.
    #[arg(long = "map", value_name = "LABEL=ELECTRODE")]
    pub map: Vec<String>,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also print per-recording mean class probabilities.
    #[arg(long)]
    pub verbose: bool,
    /// Whole sessions under an adaptation protocol (--session, --adaptation ...).
    #[command(flatten)]
    pub session: super::sessions::SessionArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.session.sessions.is_empty() {
        let model = args.model.as_deref();
        return super::sessions::run(&args.session, model, args.threads, args.verbose, &args.map);
    }
    if args.baseline {
        let dir = args
            .dataset
            .as_ref()
            .context("--baseline needs --dataset")?;
        return run_baseline(dir, !args.unweighted);
    }
    let model_path = args.model.as_ref().context("--model is required")?;
    let mut clf = model::load_model(model_path, args.threads.max(1))?;
    if !clf.card().trained {
        eprintln!(
            "warning: the card of {} says `trained: false`: these figures mean nothing",
            model_path.display()
        );
    }
    if let Some(dir) = &args.dataset {
        let ds = Dataset::open_split(dir, &args.split)?;
        let ev = model::evaluate_dataset(&mut clf, &ds)?;
        println!("split: {}", args.split);
        print_metrics(&ev, &model::class_names(clf.card()), &|c| {
            format!("windows of class `{c}` to the split")
        });
        return Ok(());
    }
    if args.recordings.is_empty() {
        bail!("give labelled recordings (--recording FILE=CLASS, repeatable) or --dataset DIR");
    }
    let mut recs = Vec::new();
    for r in &args.recordings {
        let (file, class) = r.rsplit_once('=').with_context(|| {
            format!("--recording `{r}` is not FILE=CLASS (e.g. Subject25_2.edf=arithmetic)")
        })?;
        recs.push((PathBuf::from(file), class.to_string()));
    }
    let mut map = BTreeMap::new();
    for m in &args.map {
        let (l, e) = m
            .split_once('=')
            .with_context(|| format!("--map `{m}` is not LABEL=ELECTRODE"))?;
        map.insert(l.to_string(), e.to_string());
    }
    let ev = model::evaluate_recordings(&mut clf, &recs, &map)?;
    let names = model::class_names(clf.card());
    // With one class only, the per-recording figures are most of what is defined.
    if args.verbose || ev.report.is_err() {
        for r in &ev.recordings {
            let probs: Vec<String> = names
                .iter()
                .zip(&r.mean_probs)
                .map(|(n, p)| format!("{n} {p:.3}"))
                .collect();
            eprintln!(
                "{}: {} windows, class {}, mean p: {}",
                r.file,
                r.windows,
                names[r.label],
                probs.join(", ")
            );
        }
    }
    print_metrics(&ev, &names, &|c| {
        format!("a recording of class `{c}` (--recording FILE={c})")
    });
    Ok(())
}

/// Prints the window count and the metrics, one per line. When the binary metrics
/// are undefined (every window of one class), prints the accuracies instead, the
/// undefined metrics as `undefined`, and on stderr why and what to add (`add`
/// words it for the missing class).
fn print_metrics(ev: &model::Evaluation, names: &[String], add: &dyn Fn(&str) -> String) {
    println!("windows: {}", ev.labels.len());
    match &ev.report {
        Ok(report) => print!("{report}"),
        Err(e) => {
            println!("accuracy: {:.4}", ev.accuracy);
            println!("balanced accuracy: {:.4}", ev.balanced_accuracy);
            println!("AUROC: undefined");
            println!("PR-AUC: undefined");
            let why = match e {
                MetricError::OneClass { only, .. } => {
                    let name = |i: usize| names.get(i).map_or("?", String::as_str);
                    format!(
                        "every window is of class `{}`, and AUROC and PR-AUC rank the windows of one class against those of the other; add {} to get them",
                        name(*only),
                        add(name(1 - (*only).min(1)))
                    )
                }
                other => other.to_string(),
            };
            eprintln!("note: AUROC and PR-AUC are undefined: {why}");
        }
    }
}

fn run_baseline(dir: &std::path::Path, balanced: bool) -> anyhow::Result<()> {
    let ds = Dataset::open(dir)?;
    let r = baseline::run_with(&ds, baseline::BaselineOptions { balanced })?;
    println!(
        "baseline: log + relative band power ({} features), standardised, L2 logistic regression ({} class weights), C = {}",
        r.features,
        if r.balanced { "balanced" } else { "no" },
        r.c
    );
    println!("train windows: {}", r.train_windows);
    for (c, ba) in &r.grid {
        eprintln!("  C = {c}: val balanced accuracy {ba:.4}");
    }
    for (name, rep) in [("val", &r.val), ("test", &r.test)] {
        if let Some(rep) = rep {
            println!("[{name}] windows: {}", rep.n());
            for (k, v) in rep.entries() {
                println!("[{name}] {k}: {v:.4}");
            }
        }
    }
    Ok(())
}
