//! Tests of the session protocols on toy features.

use super::*;

const W: f64 = 4.0;

fn classes() -> Vec<String> {
    vec!["rest".into(), "arithmetic".into()]
}

fn space() -> FeatureSpace {
    FeatureSpace {
        extractor: "toy".into(),
        dim: 2,
    }
}

/// Deterministic noise in [-0.5, 0.5).
fn noise(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
}

/// A toy person: rest for `rest_s` then arithmetic for `task_s`, one window
/// every 4 s. Class shows in feature 0 around `offset` (the person's own
/// level), feature 1 is noise. Returns `(end_s, features, label)`.
fn person(rest_s: f64, task_s: f64, offset: f64, seed: u64) -> Vec<(f64, Vec<f64>, usize)> {
    let mut s = seed;
    let mut out = Vec::new();
    let mut end = W;
    while end <= rest_s + task_s + 1e-9 {
        let label = usize::from(end - W >= rest_s - 1e-9);
        if end > rest_s + 1e-9 && label == 0 {
            end += W; // straddles the switch: left out, as evaluate does
            continue;
        }
        let f0 = offset + if label == 1 { 1.0 } else { -1.0 } + 0.3 * noise(&mut s);
        out.push((end, vec![f0, noise(&mut s)], label));
        end += W;
    }
    out
}

/// A population head on raw or re-centred toy features of two people with
/// different offsets.
fn population(recentred: bool) -> PopulationModel {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (offset, seed) in [(-2.0, 1), (3.0, 2)] {
        let p = person(60.0, 40.0, offset, seed);
        let centre = if recentred {
            let mut b = BaselineStats::new(20.0, W);
            for (e, f, _) in &p {
                b.offer(*e, f);
            }
            b.centre().expect("baseline windows")
        } else {
            vec![0.0, 0.0]
        };
        for (_, f, l) in p {
            rows.push(f.iter().zip(&centre).map(|(v, c)| v - c).collect());
            labels.push(l);
        }
    }
    PopulationModel::fit(space(), classes(), recentred, &rows, &labels).expect("fit")
}

fn spec(protocol: Protocol) -> SessionSpec {
    let recentred = protocol.mode == Mode::Baseline;
    SessionSpec {
        protocol,
        classes: classes(),
        space: space(),
        window_s: W,
        population: Some(population(recentred)),
    }
}

fn calibration_protocol() -> Protocol {
    Protocol::calibration(vec![("rest".into(), 20.0), ("arithmetic".into(), 12.0)])
}

/// Runs a session over windows, with a marker at 0 (rest) and at `task_at`
/// (arithmetic) for calibration.
fn run(session: &mut Session, windows: &[(f64, Vec<f64>, usize)], task_at: f64) -> Vec<Answer> {
    session.marker(0.0, Some("rest")).expect("marker");
    let mut marked = false;
    windows
        .iter()
        .map(|(end, f, _)| {
            if !marked && *end > task_at {
                session.marker(task_at, Some("arithmetic")).expect("marker");
                marked = true;
            }
            session.push(*end, f).expect("push")
        })
        .collect()
}

fn accuracy(answers: &[Answer], windows: &[(f64, Vec<f64>, usize)]) -> (usize, usize) {
    let mut right = 0;
    let mut n = 0;
    for (a, (_, _, l)) in answers.iter().zip(windows) {
        if let Answer::Classified { probabilities } = a {
            n += 1;
            right += usize::from(usize::from(probabilities[1] > 0.5) == *l);
        }
    }
    (right, n)
}

#[test]
fn an_answer_never_changes_when_later_windows_change() {
    for protocol in [
        Protocol::none(),
        Protocol::baseline(20.0),
        calibration_protocol(),
    ] {
        let a = person(60.0, 40.0, 7.0, 11);
        let k = a.len() / 2;
        let mut b = a.clone();
        let mut s = 99u64;
        for w in &mut b[k + 1..] {
            w.1 = vec![100.0 * noise(&mut s), -50.0 + noise(&mut s)];
        }
        let ra = run(
            &mut Session::new(spec(protocol.clone())).expect("new"),
            &a,
            60.0,
        );
        let rb = run(
            &mut Session::new(spec(protocol.clone())).expect("new"),
            &b,
            60.0,
        );
        assert_eq!(ra[..=k], rb[..=k], "{:?}", protocol.mode);
        assert_ne!(
            ra[k + 1..],
            rb[k + 1..],
            "{:?}: later answers did change",
            protocol.mode
        );
    }
}

#[test]
fn baseline_is_the_mean_of_the_first_seconds_and_recentres_later_windows() {
    // A person far from everyone the head saw: offset 40.
    let w = person(60.0, 40.0, 40.0, 5);
    let mut session = Session::new(spec(Protocol::baseline(20.0))).expect("new");
    let answers = run(&mut session, &w, 60.0);
    // Windows ending at 4..=20 s are the baseline: calibrating, with the seconds left.
    for (a, (end, _, _)) in answers.iter().zip(&w).take(5) {
        let left = 20.0 - end;
        assert_eq!(
            *a,
            Answer::Calibrating { seconds_left: left },
            "window ending {end}"
        );
    }
    assert!(matches!(answers[5], Answer::Classified { .. }));
    let state = session.state().expect("ready");
    let mean: Vec<f64> = (0..2)
        .map(|j| w[..5].iter().map(|x| x.1[j]).sum::<f64>() / 5.0)
        .collect();
    let centre = state.centre.as_ref().expect("centre");
    assert!(
        centre.iter().zip(&mean).all(|(a, b)| (a - b).abs() < 1e-12),
        "{centre:?} vs {mean:?}"
    );
    assert_eq!(state.windows, 5);
    // Re-centred, the far-away person is classified well; unadapted, not.
    let (right, n) = accuracy(&answers, &w);
    assert!(right * 10 >= n * 9, "baseline {right}/{n}");
    let plain = run(
        &mut Session::new(spec(Protocol::none())).expect("new"),
        &w,
        60.0,
    );
    let (right_none, n_none) = accuracy(&plain, &w);
    assert!(right_none * 10 <= n_none * 8, "none {right_none}/{n_none}");
}

#[test]
fn calibration_head_learns_a_separable_person() {
    // Opposite sign to the population: only a per-person head gets it right.
    let w: Vec<_> = person(60.0, 40.0, 0.0, 3)
        .into_iter()
        .map(|(e, f, l)| (e, vec![-f[0], f[1]], l))
        .collect();
    let mut session = Session::new(spec(calibration_protocol())).expect("new");
    let answers = run(&mut session, &w, 60.0);
    let state = session.state().expect("calibrated");
    // 20 s of rest (5 windows) + 12 s of task (3 windows).
    assert_eq!(state.windows, 8);
    assert_eq!(state.mode, Mode::Calibration);
    let (right, n) = accuracy(&answers, &w);
    assert_eq!(right, n, "calibration {right}/{n}");
    // Rest windows between 20 and 60 s came while the task block was missing.
    assert!(
        matches!(answers[6], Answer::Calibrating { seconds_left } if (seconds_left - 12.0).abs() < 1e-9)
    );
    assert!(n >= 5);
}

#[test]
fn state_survives_a_round_trip_and_refuses_another_model() {
    let w = person(60.0, 40.0, 1.0, 8);
    let mut session = Session::new(spec(calibration_protocol())).expect("new");
    run(&mut session, &w, 60.0);
    let state = session.state().expect("calibrated").clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wearer.yaml");
    state.save_atomic(&path).expect("save");
    let back = PersonState::load(&path).expect("load");
    assert_eq!(back, state);
    // A resumed session classifies exactly as the original.
    let mut resumed = Session::resume(spec(calibration_protocol()), back).expect("resume");
    let last = w.last().expect("windows");
    let Answer::Classified { probabilities } = resumed.push(last.0, &last.1).expect("push") else {
        panic!("a resumed session must not calibrate again");
    };
    assert_eq!(probabilities, state.classify(&last.1));
    // Another model's features: refused, naming both.
    let mut other = spec(calibration_protocol());
    other.space.extractor = "logits(other.onnx)".into();
    let e = Session::resume(other, state.clone()).unwrap_err();
    assert!(
        e.to_string().contains("other.onnx") && e.to_string().contains("toy"),
        "{e}"
    );
    // Truncated file: a parse error naming the file and the fix.
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, &text[..text.len() / 2]).expect("write");
    let e = PersonState::load(&path).unwrap_err();
    assert!(matches!(e, StateError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("delete it"), "{e}");
}

#[test]
fn bad_calibration_input_is_a_clear_error() {
    let mut session = Session::new(spec(calibration_protocol())).expect("new");
    let e = session.marker(0.0, Some("sleep")).unwrap_err();
    assert!(
        e.to_string().contains("`sleep`") && e.to_string().contains("rest, arithmetic"),
        "{e}"
    );
    // calibration_s naming an unknown class, or leaving one out.
    let mut p = calibration_protocol();
    p.calibration_s[1].0 = "math".into();
    let e = Session::new(spec(p)).unwrap_err();
    assert!(matches!(e, AdaptError::UnknownClass { .. }), "{e}");
    let e = Session::new(spec(Protocol::calibration(vec![("rest".into(), 20.0)]))).unwrap_err();
    assert!(e.to_string().contains("add `arithmetic: <seconds>`"), "{e}");
    // Only 8 s of task where 12 were asked: finish says so and how to fix it.
    let w = person(60.0, 8.0, 0.0, 4);
    let answers = run(&mut session, &w, 60.0);
    assert!(answers
        .iter()
        .all(|a| matches!(a, Answer::Calibrating { .. })));
    let e = session.finish().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, AdaptError::CalibrationShort { .. }), "{msg}");
    assert!(
        msg.contains("`arithmetic` has 8.0 s of the 12.0 s")
            && msg.contains("--holdout arithmetic=8"),
        "{msg}"
    );
    // No task block at all: says the session needs one.
    let mut only_rest = Session::new(spec(calibration_protocol())).expect("new");
    run(&mut only_rest, &person(40.0, 0.0, 0.0, 6), 60.0);
    let e = only_rest.finish().unwrap_err();
    assert!(matches!(e, AdaptError::CalibrationMissing { .. }), "{e}");
    assert!(e.to_string().contains("no `arithmetic` block"), "{e}");
    // A baseline longer than the session.
    let mut b = Session::new(spec(Protocol::baseline(120.0))).expect("new");
    run(&mut b, &w, 60.0);
    assert!(b
        .finish()
        .unwrap_err()
        .to_string()
        .contains("lower baseline_s"));
}

#[test]
fn sessions_refuse_what_they_cannot_use() {
    let mut s = spec(Protocol::baseline(20.0));
    s.population = None;
    assert!(matches!(
        Session::new(s).unwrap_err(),
        AdaptError::NoPopulationHead { .. }
    ));
    // A head trained on raw features cannot serve `baseline`.
    let mut s = spec(Protocol::baseline(20.0));
    s.population = Some(population(false));
    assert!(matches!(
        Session::new(s).unwrap_err(),
        AdaptError::PopulationMismatch { .. }
    ));
    let mut session = Session::new(spec(Protocol::none())).expect("new");
    assert!(matches!(
        session.push(4.0, &[1.0]).unwrap_err(),
        AdaptError::FeatureDim { .. }
    ));
    assert!(matches!(
        session.push(4.0, &[f64::NAN, 0.0]).unwrap_err(),
        AdaptError::NonFinite
    ));
    session.push(8.0, &[0.0, 0.0]).expect("push");
    assert!(matches!(
        session.push(4.0, &[0.0, 0.0]).unwrap_err(),
        AdaptError::OutOfOrder { .. }
    ));
    assert_eq!("Baseline".parse::<Mode>().expect("mode"), Mode::Baseline);
    assert!("sometimes"
        .parse::<Mode>()
        .unwrap_err()
        .to_string()
        .contains("none, baseline or calibration"));
}

#[test]
fn log_band_power_matches_the_reference_bands() {
    // 2 Hz and 40 Hz sines on two channels: delta (1-4 Hz) and gamma (30-45 Hz).
    let n = 800;
    let sine = |f: f64, a: f64| -> Vec<f32> {
        (0..n)
            .map(|i| (a * (2.0 * std::f64::consts::PI * f * i as f64 / 200.0).sin()) as f32)
            .collect()
    };
    let mut w = sine(2.0, 10.0);
    w.extend(sine(40.0, 10.0));
    let mut x = LogBandPower::new(2, n, 200.0);
    assert_eq!(x.space().dim, 10);
    let mut f = Vec::new();
    x.extract(&w, &mut f).expect("extract");
    // Power A²/2 = 50 µV² in its band, ln 50 ≈ 3.9; the others far below.
    assert!((f[0] - 50f64.ln()).abs() < 0.05, "{f:?}");
    assert!(f[1..5].iter().all(|&v| v < 0.0), "{f:?}");
    assert!((f[9] - 50f64.ln()).abs() < 0.05, "{f:?}");
    assert!(x.extract(&w[..10], &mut f).is_err());
}
