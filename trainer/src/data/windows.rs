//! Cutting windows out of a preprocessed recording (`[channels][samples]` at
//! 200 Hz): sliding windows, windows locked to annotated events, and the
//! wrap-around windows of the official TUEV maker.

/// Starts of the windows of `len` samples every `hop` samples that fit in
/// `n` samples, from `first` on: `first, first + hop, …` while `start + len ≤ n`.
pub fn sliding_starts(n: usize, len: usize, hop: usize, first: usize) -> Vec<usize> {
    let mut out = Vec::new();
    if len == 0 || hop == 0 {
        return out;
    }
    let mut s = first;
    while s + len <= n {
        out.push(s);
        s += hop;
    }
    out
}

/// Starts of windows for one event `[onset, onset + duration)` (samples): from
/// the onset, every `hop`, while the window ends within the event; an event
/// shorter than a window gets one window starting at its onset (so every event
/// yields a window, as in the official event-locked makers), as long as that
/// window fits in the recording.
pub fn event_starts(n: usize, onset: usize, duration: usize, len: usize, hop: usize) -> Vec<usize> {
    let end = onset + duration.max(len);
    sliding_starts(end.min(n), len, hop, onset)
}

/// Copies `data[c][start..start + len]` for every channel into one
/// channel-major vector.
pub fn cut(data: &[Vec<f32>], start: usize, len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() * len);
    cut_into(data, start, len, &mut out);
    out
}

/// [`cut`], appending to `out`.
pub fn cut_into(data: &[Vec<f32>], start: usize, len: usize, out: &mut Vec<f32>) {
    for row in data {
        out.extend_from_slice(&row[start..start + len]);
    }
}

/// [`cut_wrapping`] into a slice of `data.len() × len` values; a start inside
/// the recording with the window fitting is a plain copy.
pub fn cut_wrapping_to(data: &[Vec<f32>], start: i64, len: usize, out: &mut [f32]) {
    for (row, o) in data.iter().zip(out.chunks_exact_mut(len.max(1))) {
        let n = row.len() as i64;
        if start >= 0 && start + len as i64 <= n {
            o.copy_from_slice(&row[start as usize..start as usize + len]);
        } else if n == 0 {
            o.fill(0.0);
        } else {
            for (k, v) in o.iter_mut().enumerate() {
                *v = row[(start + k as i64).rem_euclid(n) as usize];
            }
        }
    }
}

/// Like [`cut`], but indices wrap around the recording (`i mod n`): the
/// official TUEV maker cuts its windows from the signal concatenated three
/// times, so an event near either end borrows samples from the other end.
pub fn cut_wrapping(data: &[Vec<f32>], start: i64, len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() * len);
    cut_wrapping_into(data, start, len, &mut out);
    out
}

/// [`cut_wrapping`], appending to `out`.
pub fn cut_wrapping_into(data: &[Vec<f32>], start: i64, len: usize, out: &mut Vec<f32>) {
    for row in data {
        let n = row.len() as i64;
        if n == 0 {
            out.extend(std::iter::repeat_n(0.0, len));
            continue;
        }
        out.extend((0..len as i64).map(|k| row[(start + k).rem_euclid(n) as usize]));
    }
}

/// First sample index `i` with `i / rate ≥ t` (numpy's
/// `np.where(times >= t)[0][0]` for `times = arange(n) / rate`).
pub fn first_sample_at_or_after(t: f64, rate_hz: f64) -> i64 {
    let mut i = (t * rate_hz).floor() as i64 - 1;
    while (i as f64) / rate_hz < t {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_and_event_starts() {
        assert_eq!(sliding_starts(10, 4, 2, 0), vec![0, 2, 4, 6]);
        assert_eq!(sliding_starts(10, 4, 4, 1), vec![1, 5]);
        assert_eq!(sliding_starts(3, 4, 1, 0), Vec::<usize>::new());
        // Event of 4.1 s at 200 Hz with 4-s windows: one window at the onset.
        assert_eq!(event_starts(10_000, 840, 820, 800, 800), vec![840]);
        // Event shorter than a window: still one window, if it fits.
        assert_eq!(event_starts(10_000, 100, 50, 800, 800), vec![100]);
        assert_eq!(event_starts(900, 200, 50, 800, 800), Vec::<usize>::new());
        // Long event: several.
        assert_eq!(
            event_starts(10_000, 0, 2000, 800, 400),
            vec![0, 400, 800, 1200]
        );
    }

    #[test]
    fn cutting_with_and_without_wrap() {
        let data = vec![
            (0..10).map(|i| i as f32).collect::<Vec<_>>(),
            (10..20).map(|i| i as f32).collect(),
        ];
        assert_eq!(cut(&data, 2, 3), vec![2.0, 3.0, 4.0, 12.0, 13.0, 14.0]);
        assert_eq!(
            cut_wrapping(&data, -2, 4),
            vec![8.0, 9.0, 0.0, 1.0, 18.0, 19.0, 10.0, 11.0]
        );
        assert_eq!(
            cut_wrapping(&data, 8, 3),
            vec![8.0, 9.0, 0.0, 18.0, 19.0, 10.0]
        );
        for start in [-3i64, 0, 4, 8, 12] {
            let mut out = vec![0.0; 8];
            cut_wrapping_to(&data, start, 4, &mut out);
            assert_eq!(out, cut_wrapping(&data, start, 4), "start {start}");
        }
    }

    #[test]
    fn numpy_time_lookup() {
        assert_eq!(first_sample_at_or_after(0.0, 200.0), 0);
        assert_eq!(first_sample_at_or_after(1.0, 200.0), 200);
        assert_eq!(first_sample_at_or_after(1.0001, 200.0), 201);
        // 0.1 * 3 is 0.30000000000000004 in floats: numpy picks 61, not 60.
        assert_eq!(first_sample_at_or_after(0.1 * 3.0, 200.0), 61);
    }
}
