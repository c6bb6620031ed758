//! `labram-trainer evaluate --session ...`: whole sessions under an adaptation
//! protocol (`labram_core::adapt`), as the daemon will run them. Also the
//! options `cross-validate` shares with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use labram_core::adapt::{Answer, Mode};
use labram_core::card::{CardAdaptation, ModelCard, Preprocessing, PATCH_SIZE, SAMPLE_RATE_HZ};
use labram_trainer::data::makers::EEGMAT_CHANNELS;
use labram_trainer::data::split::SubjectSet;
use labram_trainer::eval::logits::ModelLogits;
use labram_trainer::eval::model;
use labram_trainer::eval::people::{self, FeatureKind, Person};
use labram_trainer::eval::sessions::{self, Layout, ProtocolOptions, Scores, SessionFeatures};

/// How sessions are windowed and what a protocol may learn from; shared by
/// `evaluate --session` and `cross-validate`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProtocolArgs {
    /// Seconds of unlabelled rest at the start of each session that `baseline`
    /// learns each person's feature means from; must fit in the rest holdout.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub baseline_s: f64,
    /// Seconds at the start of each file that a protocol may learn from
    /// (`baseline`: the rest span; `calibration`: both spans, labelled); the
    /// windows after them are scored, the same under every protocol.
    #[arg(
        long,
        default_value = "rest=60,arithmetic=20",
        value_name = "CLASS=S,..."
    )]
    pub holdout: String,
    /// Feature sets to evaluate, comma-separated: `bandpower` (log band power
    /// per channel, the classical baseline), `logits` (the model's), `both`.
    /// Default: `logits,bandpower` with --model, else `bandpower`.
    #[arg(long, value_delimiter = ',', value_name = "SET,...")]
    pub features: Vec<FeatureKind>,
    /// Window length in seconds (default: the model card's, else 4).
    #[arg(long, value_name = "SECONDS")]
    pub window_s: Option<f64>,
    /// Hop between windows in seconds (default: the window length, i.e.
    /// non-overlapping windows as adaptation.py cuts them).
    #[arg(long, value_name = "SECONDS")]
    pub hop_s: Option<f64>,
    /// Class names without a model, in label order.
    #[arg(long, value_delimiter = ',', default_value = "rest,arithmetic")]
    pub classes: Vec<String>,
    /// Electrodes without a model, in order (default: eegmat's 19).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
}

/// `evaluate --session`: the options only it has.
#[derive(clap::Args, Debug, Clone)]
pub struct SessionArgs {
    /// A session: one person's recordings in order, `CLASS=FILE,CLASS=FILE`
    /// (e.g. rest=Subject25_1.edf,arithmetic=Subject25_2.edf); repeatable.
    /// Streamed as one signal through the daemon's causal chain and window
    /// grid, the --holdout spans first (as a live session calibrates at its
    /// start), then the rest of each file; scored under --adaptation.
    #[arg(long = "session", value_name = "CLASS=FILE,...", conflicts_with_all = ["recordings", "dataset"])]
    pub sessions: Vec<String>,
    /// Adaptation protocol: none | baseline | calibration.
    #[arg(long, default_value = "none", value_parser = parse_mode, value_name = "MODE")]
    pub adaptation: Mode,
    /// Training people for the heads that `none` and `baseline` train on
    /// others, as sessions; repeatable. Band power needs them under both; the
    /// model's logits only under `baseline` (under `none` the model's own
    /// softmax answers).
    #[arg(long = "train-session", value_name = "CLASS=FILE,...")]
    pub train_sessions: Vec<String>,
    /// Training people from an eegmat folder (SubjectNN_1 rest, _2 arithmetic),
    /// with --train-subjects.
    #[arg(long, value_name = "DIR", requires = "train_subjects")]
    pub train_eegmat: Option<PathBuf>,
    /// Subjects of --train-eegmat, e.g. `0-21`.
    #[arg(long, value_name = "RANGE", requires = "train_eegmat")]
    pub train_subjects: Option<SubjectSet>,
    /// Write the answer to every window to this CSV (session, end time in
    /// the session, truth, scored, calibrating or class probabilities): what
    /// the daemon must reproduce on the same stream.
    #[arg(long, value_name = "FILE.csv")]
    pub predictions: Option<PathBuf>,
    /// Write the head trained on the --train people (`none`, `baseline`) to
    /// this YAML file (`labram_core::adapt::PopulationModel`): what the daemon
    /// loads as `adaptation.population` (or a model card's). Needs one --features
    /// set; written atomically.
    #[arg(long, value_name = "FILE.yaml")]
    pub save_population: Option<PathBuf>,
    /// Also write the protocol into the model card's `adaptation:` section
    /// (mode, --baseline-s, the --features set, and the --save-population file,
    /// named relative to the card), so that `labramd run` serves the model under
    /// this protocol when its config has no `adaptation:` section. Needs --model
    /// and --save-population in the model's folder (or below it); the card is
    /// rewritten atomically and read back through the card's checks.
    #[arg(long, requires = "save_population")]
    pub card_adaptation: bool,
    #[command(flatten)]
    pub protocol: ProtocolArgs,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: labram_core::adapt::AdaptError| e.to_string())
}

/// Everything a run needs: the model (if any), classes, layout, feature sets.
pub struct Setup {
    pub model: Option<ModelLogits>,
    pub layout: Layout,
    pub kinds: Vec<FeatureKind>,
    pub opts: ProtocolOptions,
}

/// Builds the layout from the model card (electrodes, window, preprocessing,
/// classes) or from the flags when there is no model.
pub fn setup(
    p: &ProtocolArgs,
    model_path: Option<&Path>,
    threads: usize,
    channel_map: BTreeMap<String, String>,
) -> anyhow::Result<Setup> {
    let model = match model_path {
        Some(path) => {
            let clf = model::load_model(path, threads.max(1))?;
            if !clf.card().trained {
                eprintln!(
                    "warning: the card of {} says `trained: false`: its figures mean nothing",
                    path.display()
                );
            }
            Some(ModelLogits::new(clf, path))
        }
        None => None,
    };
    let card: Option<&ModelCard> = model.as_ref().map(|m| m.card());
    let classes = card.map_or_else(|| p.classes.clone(), model::class_names);
    let channels = match (card, &p.channels) {
        (Some(c), _) => c.channels.clone(),
        (None, Some(ch)) => ch.clone(),
        (None, None) => EEGMAT_CHANNELS.iter().map(|s| s.to_string()).collect(),
    };
    let card_window_s = card.map(|c| (c.window_patches * PATCH_SIZE) as f64 / SAMPLE_RATE_HZ);
    let window_s = match (card_window_s, p.window_s) {
        (Some(c), Some(w)) if (c - w).abs() > 1e-9 => {
            bail!(
                "--window-s {w} differs from the model's {c}-s windows; leave it out with --model"
            )
        }
        (Some(c), _) => c,
        (None, w) => w.unwrap_or(4.0),
    };
    let window_len = (window_s * SAMPLE_RATE_HZ).round() as usize;
    if window_len < 2 * PATCH_SIZE {
        bail!("--window-s {window_s} is too short for band power (2-s Welch segments); use at least 2");
    }
    let hop_s = p.hop_s.unwrap_or(window_s);
    if hop_s.is_nan() || hop_s <= 0.0 {
        bail!("--hop-s {hop_s} must be > 0");
    }
    let holdout_s = sessions::parse_holdout(&p.holdout, &classes)?;
    let kinds = if p.features.is_empty() {
        if model.is_some() {
            vec![FeatureKind::Logits, FeatureKind::Bandpower]
        } else {
            vec![FeatureKind::Bandpower]
        }
    } else {
        p.features.clone()
    };
    if let Some(k) = kinds.iter().find(|k| k.needs_model() && model.is_none()) {
        bail!("--features {} needs --model M.onnx", k.as_str());
    }
    let preprocessing = card.map_or_else(Preprocessing::default, |c| c.preprocessing.clone());
    let opts = ProtocolOptions {
        classes: classes.clone(),
        baseline_s: p.baseline_s,
        holdout_s: holdout_s.clone(),
        window_s,
    };
    Ok(Setup {
        model,
        layout: Layout {
            classes,
            channels,
            channel_map,
            preprocessing,
            window_len,
            hop_s,
            holdout_s,
        },
        kinds,
        opts,
    })
}

/// Runs `evaluate --session ...`.
pub fn run(
    a: &SessionArgs,
    model_path: Option<&Path>,
    threads: usize,
    verbose: bool,
    map: &[String],
) -> anyhow::Result<()> {
    let mut channel_map = BTreeMap::new();
    for m in map {
        let (l, e) = m
            .split_once('=')
            .with_context(|| format!("--map `{m}` is not LABEL=ELECTRODE"))?;
        channel_map.insert(l.to_string(), e.to_string());
    }
    let mut s = setup(&a.protocol, model_path, threads, channel_map)?;
    if a.save_population.is_some() {
        if a.adaptation == Mode::Calibration {
            bail!("--save-population: calibration trains no head on other people (each session fits its own); use --adaptation baseline or none");
        }
        if s.kinds.len() != 1 {
            bail!(
                "--save-population writes one head: give one --features set (bandpower, logits or both), not {}",
                s.kinds.len()
            );
        }
    }
    let card_target = match (a.card_adaptation, model_path, &a.save_population) {
        (true, None, _) => {
            bail!("--card-adaptation writes into the model's card: give --model M.onnx")
        }
        (true, Some(m), Some(pop)) => Some((m, card_population_name(m, pop)?)),
        _ => None,
    };
    let classes = s.layout.classes.clone();
    let parse = |v: &[String]| -> anyhow::Result<Vec<_>> {
        v.iter()
            .map(|x| Ok(sessions::parse_session(x, &classes)?))
            .collect()
    };
    let test = parse(&a.sessions)?;
    let mut train = parse(&a.train_sessions)?;
    if let (Some(dir), Some(subjects)) = (&a.train_eegmat, &a.train_subjects) {
        train.extend(people::eegmat_sessions(
            dir,
            subjects.0.iter().copied(),
            &classes,
        )?);
    }
    let test_people = people::load(&test, &s.layout, s.model.as_mut())?;
    let train_people = people::load(&train, &s.layout, s.model.as_mut())?;
    println!(
        "adaptation: {} (baseline {} s; holdout {})",
        a.adaptation, s.opts.baseline_s, a.protocol.holdout
    );
    let multi = s.kinds.len() > 1;
    let mut csv = a
        .predictions
        .as_deref()
        .map(|p| PredictionsCsv::create(p, &classes))
        .transpose()?;
    for &kind in &s.kinds {
        let prefix = if multi {
            format!("[{}] ", kind.as_str())
        } else {
            String::new()
        };
        let test_f = features_of(&test_people, kind)?;
        let train_f = features_of(&train_people, kind)?;
        let train_refs: Vec<&SessionFeatures> = train_f.iter().collect();
        let test_refs: Vec<&SessionFeatures> = test_f.iter().collect();
        let native = people::native_head(kind, s.model.as_ref());
        let space = &test_f[0].space;
        let pop =
            sessions::population_for(a.adaptation, &train_refs, native.as_ref(), space, &s.opts)?;
        if let (Some(path), Some(pop)) = (&a.save_population, &pop) {
            save_population(path, pop)?;
            eprintln!(
                "{prefix}population head ({} features, {}) written to {}",
                pop.space.dim,
                if pop.recentred { "re-centred" } else { "raw" },
                path.display()
            );
        }
        if let (Some((model, rel)), Some(card)) = (&card_target, s.model.as_ref().map(|m| m.card()))
        {
            let adaptation = CardAdaptation {
                mode: a.adaptation,
                baseline_s: a.protocol.baseline_s,
                features: Some(kind.as_str().to_string()),
                population: pop.as_ref().map(|_| rel.clone()),
            };
            let path = write_card_adaptation(model, card, adaptation)?;
            eprintln!(
                "{prefix}model card {}: adaptation {} ({} features{}): labramd serves it so by default",
                path.display(),
                a.adaptation,
                kind.as_str(),
                pop.as_ref().map_or(String::new(), |_| format!(", population {rel}"))
            );
        }
        let per = sessions::evaluate_protocol(&test_refs, pop.as_ref(), a.adaptation, &s.opts)
            .with_context(|| format!("{} under {}", kind.as_str(), a.adaptation))?;
        let mut all = Scores::default();
        for (sf, sc) in test_f.iter().zip(&per) {
            all.extend(sc);
            if let Some(out) = csv.as_mut() {
                out.session(kind, &sf.name, sc)?;
            }
            if verbose {
                println!("{prefix}session {}: {}", sf.name, one_line(sc));
            }
        }
        println!("{prefix}windows: {}", all.labels.len());
        println!("{prefix}balanced accuracy: {:.4}", all.balanced_accuracy()?);
        match all.auroc() {
            Some(Ok(v)) => println!("{prefix}auroc: {v:.4}"),
            Some(Err(e)) => {
                println!("{prefix}auroc: undefined");
                eprintln!("{prefix}auroc is undefined: {e}");
            }
            None => println!("{prefix}auroc: n/a (more than two classes)"),
        }
    }
    csv.map_or(Ok(()), PredictionsCsv::finish)
}

/// Writes a population head as YAML, atomically (a temporary file beside it,
/// then a rename): a daemon starting meanwhile never reads half a file.
fn save_population(path: &Path, pop: &labram_core::adapt::PopulationModel) -> anyhow::Result<()> {
    let yaml = serde_norway::to_string(pop).context("cannot serialise the population head")?;
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, yaml)
        .with_context(|| format!("--save-population: cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("--save-population: cannot write {}", path.display()))?;
    Ok(())
}

/// The `--save-population` file as the card beside `model` names it: its
/// path relative to the card's folder (the daemon resolves it there). A file
/// outside that folder would leave the card pointing wherever it happens to
/// be run from, so it is refused.
fn card_population_name(model: &Path, population: &Path) -> anyhow::Result<String> {
    let abs = |p: &Path| -> anyhow::Result<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(p)
        };
        // Lexical clean-up of `.` and `..` (the population file need not exist yet).
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        Ok(out)
    };
    let card_dir = abs(&ModelCard::path_for(model))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let pop = abs(population)?;
    let rel = pop.strip_prefix(&card_dir).map_err(|_| {
        anyhow::anyhow!(
            "--card-adaptation: --save-population {} is outside the model's folder {}; write it beside the model (e.g. {}) so the card can name it relative to itself",
            population.display(),
            card_dir.display(),
            model.with_extension("population.yaml").display()
        )
    })?;
    rel.to_str()
        .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"))
        .filter(|r| !r.is_empty())
        .with_context(|| {
            format!(
                "--card-adaptation: --save-population {} is not a file name the card can hold",
                population.display()
            )
        })
}

/// Rewrites the card of `model` with `adaptation`, atomically: the new card
/// goes to a temporary file beside it, is read back through
/// [`ModelCard::load`] (every check the daemon applies), and only then
/// replaces the card. Returns the card's path.
fn write_card_adaptation(
    model: &Path,
    card: &ModelCard,
    adaptation: CardAdaptation,
) -> anyhow::Result<PathBuf> {
    let path = ModelCard::path_for(model);
    let mut new = card.clone();
    new.adaptation = Some(adaptation);
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, new.to_yaml())
        .with_context(|| format!("--card-adaptation: cannot write {}", tmp.display()))?;
    let checked = ModelCard::load(&tmp).map_err(anyhow::Error::from);
    let checked = match checked {
        Ok(c) if c == new => Ok(()),
        Ok(_) => Err(anyhow::anyhow!("the card did not read back as written")),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!(
            "--card-adaptation: the new card of {} is not valid; the old one is left as it was",
            model.display()
        )));
    }
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("--card-adaptation: cannot replace {}", path.display()))?;
    Ok(path)
}

/// The `--predictions` CSV: one row per window fed to a session.
struct PredictionsCsv {
    path: PathBuf,
    classes: usize,
    out: std::io::BufWriter<std::fs::File>,
}

impl PredictionsCsv {
    /// Creates the file and writes the header (`p_<class>` per class).
    fn create(path: &Path, classes: &[String]) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot write --predictions {}", path.display()))?;
        let mut csv = Self {
            path: path.to_path_buf(),
            classes: classes.len(),
            out: std::io::BufWriter::new(file),
        };
        let probs: Vec<String> = classes.iter().map(|c| format!("p_{c}")).collect();
        csv.line(format_args!(
            "features,session,end_s,truth,scored,answer,seconds_left,{}",
            probs.join(",")
        ))?;
        Ok(csv)
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        use std::io::Write as _;
        writeln!(self.out, "{args}")
            .with_context(|| format!("cannot write --predictions {}", self.path.display()))
    }

    /// One session's answers.
    fn session(&mut self, kind: FeatureKind, session: &str, sc: &Scores) -> anyhow::Result<()> {
        for w in &sc.windows {
            let truth = w.truth.map_or(String::new(), |t| t.to_string());
            let (answer, left, probs) = match &w.answer {
                Answer::Calibrating { seconds_left } => (
                    "calibrating",
                    format!("{seconds_left:.3}"),
                    vec![""; self.classes].join(","),
                ),
                Answer::Classified { probabilities } => {
                    let p: Vec<String> = probabilities.iter().map(|p| format!("{p:.9}")).collect();
                    ("classified", String::new(), p.join(","))
                }
            };
            self.line(format_args!(
                "{},{session},{:.4},{truth},{},{answer},{left},{probs}",
                kind.as_str(),
                w.end_s,
                w.scored
            ))?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out
            .flush()
            .with_context(|| format!("cannot write --predictions {}", self.path.display()))
    }
}

/// The features of `kind` of every person.
pub fn features_of(people: &[Person], kind: FeatureKind) -> anyhow::Result<Vec<SessionFeatures>> {
    people
        .iter()
        .map(|p| {
            p.features(kind)
                .with_context(|| format!("--features {} needs --model", kind.as_str()))
        })
        .collect()
}

/// `windows N, balanced accuracy X, auroc Y` for one session (n/a where a
/// metric is undefined, e.g. a session with one class).
pub fn one_line(s: &Scores) -> String {
    let ba = s
        .balanced_accuracy()
        .map_or_else(|e| format!("n/a ({e})"), |v| format!("{v:.4}"));
    let auc = match s.auroc() {
        Some(Ok(v)) => format!("{v:.4}"),
        Some(Err(e)) => format!("n/a ({e})"),
        None => "n/a".into(),
    };
    format!(
        "windows {}, balanced accuracy {ba}, auroc {auc}",
        s.labels.len()
    )
}
