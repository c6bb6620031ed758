//! `labram-trainer cross-validate`: leave-people-out cross-validation of the
//! session protocols on eegmat, for band power, a model's logits and both,
//! every protocol scoring the same windows.

use std::path::PathBuf;

use anyhow::{bail, Context};
use labram_core::adapt::Mode;
use labram_trainer::data::split::SubjectSet;
use labram_trainer::eval::people::{self, FeatureKind};
use labram_trainer::eval::sessions::{self, Scores, SessionFeatures};

use super::sessions::{features_of, setup, ProtocolArgs};

/// Leave-people-out cross-validation of the adaptation protocols on eegmat.
///
/// The subjects are cut into consecutive folds of --fold-size people; each
/// fold is scored by heads trained on all the other people (`none`,
/// `baseline`) or on its own calibration (`calibration`). Each person is a
/// session (SubjectNN_1 rest, then SubjectNN_2 arithmetic) streamed through
/// the daemon's causal chain and window grid; every protocol scores the same
/// windows (after the --holdout spans). Prints, per feature set and protocol,
/// balanced accuracy and AUROC as mean ± standard deviation over folds (and
/// pooled over all windows, as ../shared/bench/adaptation.py reports), then
/// the per-fold figures.
///
/// A model's figures mean something only on people it never saw: the shipped
/// model was trained on Subject00-21 (selected on 22-24), so cross-validate it
/// on 22-27 or 25-27, e.g. --subjects 22-27 --fold-size 3.
///
/// Examples:
///   labram-trainer cross-validate --data ../shared/data/eegmat --subjects 0-27 --fold-size 4
///   labram-trainer cross-validate --data ../shared/data/eegmat --subjects 22-27 --fold-size 3 \
///      --model models/labram-base-eegmat.onnx --features logits,bandpower,both
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The eegmat folder (SubjectNN_1.edf rest, SubjectNN_2.edf arithmetic).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Subjects to cross-validate over, e.g. `0-27` (28-35 are refused: the
    /// external test set).
    #[arg(long, default_value = "0-27", value_name = "RANGE")]
    pub subjects: SubjectSet,
    /// People per fold (consecutive subject numbers).
    #[arg(long, default_value_t = 4)]
    pub fold_size: usize,
    /// Exported model, for --features logits / both.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Protocols, comma-separated (default: none,baseline,calibration).
    #[arg(long, value_delimiter = ',', value_parser = parse_mode, value_name = "MODE,...")]
    pub adaptation: Vec<Mode>,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    pub protocol: ProtocolArgs,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: labram_core::adapt::AdaptError| e.to_string())
}

/// Figures of one fold under one protocol.
struct FoldFigures {
    label: String,
    ba: f64,
    auroc: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.fold_size == 0 {
        bail!("--fold-size must be at least 1");
    }
    let subjects: Vec<u32> = a.subjects.0.iter().copied().collect();
    if subjects.len() < 2 * a.fold_size {
        bail!(
            "{} subjects make fewer than two folds of {}: lower --fold-size or add subjects",
            subjects.len(),
            a.fold_size
        );
    }
    let mut s = setup(
        &a.protocol,
        a.model.as_deref(),
        a.threads,
        Default::default(),
    )?;
    let modes = if a.adaptation.is_empty() {
        Mode::ALL.to_vec()
    } else {
        a.adaptation.clone()
    };
    let blocks = people::eegmat_sessions(&a.data, subjects.iter().copied(), &s.layout.classes)?;
    let everyone = people::load(&blocks, &s.layout, s.model.as_mut())?;
    let folds: Vec<Vec<usize>> = (0..everyone.len())
        .collect::<Vec<_>>()
        .chunks(a.fold_size)
        .map(<[usize]>::to_vec)
        .collect();
    println!(
        "cross-validation: {} folds of {} people ({}), {}-s windows every {} s, holdout {}, baseline {} s",
        folds.len(),
        a.fold_size,
        a.subjects,
        s.opts.window_s,
        s.layout.hop_s,
        a.protocol.holdout,
        s.opts.baseline_s
    );
    for &kind in &s.kinds {
        let feats = features_of(&everyone, kind)?;
        let native = people::native_head(kind, s.model.as_ref());
        println!("[{}] features: {}", kind.as_str(), feats[0].space);
        let mut per_fold: Vec<(Mode, Vec<FoldFigures>)> = Vec::new();
        for &mode in &modes {
            let mut figures = Vec::new();
            let mut pooled = Scores::default();
            for fold in &folds {
                let (sc, label) = run_fold(&feats, fold, mode, native.as_ref(), &s.opts)
                    .with_context(|| format!("{} under {mode}", kind.as_str()))?;
                pooled.extend(&sc);
                figures.push(FoldFigures {
                    label,
                    ba: sc.balanced_accuracy()?,
                    auroc: auroc(&sc)?,
                });
            }
            print_summary(kind, mode, &figures, &pooled)?;
            per_fold.push((mode, figures));
        }
        print_folds(kind, &per_fold);
    }
    Ok(())
}

/// One fold under one protocol: heads trained on everyone else, pooled
/// scores of the fold's people, and the fold's label (`Subject00-Subject03`).
fn run_fold(
    feats: &[SessionFeatures],
    fold: &[usize],
    mode: Mode,
    native: Option<&labram_core::adapt::Head>,
    opts: &sessions::ProtocolOptions,
) -> anyhow::Result<(Scores, String)> {
    let train: Vec<&SessionFeatures> = (0..feats.len())
        .filter(|i| !fold.contains(i))
        .map(|i| &feats[i])
        .collect();
    let test: Vec<&SessionFeatures> = fold.iter().map(|&i| &feats[i]).collect();
    let pop = sessions::population_for(mode, &train, native, &test[0].space, opts)?;
    let mut pooled = Scores::default();
    for sc in sessions::evaluate_protocol(&test, pop.as_ref(), mode, opts)? {
        pooled.extend(&sc);
    }
    let label = match (test.first(), test.last()) {
        (Some(f), Some(l)) if test.len() > 1 => format!("{}-{}", f.name, l.name),
        (Some(f), _) => f.name.clone(),
        _ => String::new(),
    };
    Ok((pooled, label))
}

fn auroc(s: &Scores) -> anyhow::Result<f64> {
    match s.auroc() {
        Some(r) => Ok(r?),
        None => Ok(f64::NAN),
    }
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn print_summary(
    kind: FeatureKind,
    mode: Mode,
    figures: &[FoldFigures],
    pooled: &Scores,
) -> anyhow::Result<()> {
    let ba: Vec<f64> = figures.iter().map(|f| f.ba).collect();
    let auc: Vec<f64> = figures.iter().map(|f| f.auroc).collect();
    let (bm, bs) = mean_std(&ba);
    let (am, as_) = mean_std(&auc);
    let lo = ba.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ba.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "[{}] {:<11} balanced accuracy {bm:.3} ± {bs:.3} (folds {lo:.2}-{hi:.2}; pooled {:.3}), auroc {am:.3} ± {as_:.3} (pooled {:.3}), {} windows",
        kind.as_str(),
        mode.as_str(),
        pooled.balanced_accuracy()?,
        auroc(pooled)?,
        pooled.labels.len()
    );
    Ok(())
}

fn print_folds(kind: FeatureKind, per_fold: &[(Mode, Vec<FoldFigures>)]) {
    let Some((_, first)) = per_fold.first() else {
        return;
    };
    println!("[{}] per fold (balanced accuracy / auroc):", kind.as_str());
    for (k, f) in first.iter().enumerate() {
        let cells: Vec<String> = per_fold
            .iter()
            .map(|(m, figs)| format!("{} {:.3}/{:.3}", m.as_str(), figs[k].ba, figs[k].auroc))
            .collect();
        println!("  fold {} {}: {}", k + 1, f.label, cells.join("  "));
    }
}
