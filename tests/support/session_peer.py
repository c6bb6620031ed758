"""A calibrated session as an amplifier and a marker source would send it (pylsl + pyedflib,
no labramd code), for tests/daemon_adaptation.rs.

session: --seconds of each --edf (from --from-s, default 0), concatenated into one float32 LSL outlet (the
         files' labels and units in desc/channels/channel), per-sample timestamps t0 + i/fs,
         pushed --speed times faster than real time in --chunk-sample chunks; with --outage-at-s, the
         outlet is closed there for --outage-s and recreated (same name and source_id), its
         timestamps going on from where they stopped plus the outage. With
         --markers-name, a string marker outlet (one channel) carries --marker AT_S=TEXT
         markers, each stamped with the timestamp of the sample at AT_S and pushed before
         the chunk holding that sample. Writes the pushed samples (--dump, (n, ch) float32)
         and what it did (--out, JSON).

  python session_peer.py session --edf a.edf --edf b.edf --seconds 90 --seconds 40 \
      --name N --markers-name M --marker 0=rest --marker 90=arithmetic --out o.json
"""
import argparse
import json
import sys
import time

import numpy as np
import pylsl

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from lsl_peer import make_outlet, read_edf  # noqa: E402


def log(msg):
    print(f"[session_peer] {msg}", file=sys.stderr, flush=True)


def session_cmd(a):
    parts, labels, units, fs = [], None, None, None
    froms = a.from_s or [0.0] * len(a.edf)
    assert len(froms) == len(a.edf) == len(a.seconds), "one --seconds (and --from-s) per --edf"
    cache = {}
    for path, start, secs in zip(a.edf, froms, a.seconds):
        if path not in cache:
            cache[path] = read_edf(path)
        lab, un, rate, data = cache[path]
        if labels is None:
            labels, units, fs = lab, un, rate
        assert lab == labels and rate == fs, f"{path}: other channels or rate"
        i0 = int(round(start * fs))
        parts.append(data[:, i0:] if secs < 0 else data[:, i0:i0 + int(round(secs * fs))])
    x = np.ascontiguousarray(np.concatenate(parts, axis=1).T)  # (n, ch)
    if a.dump:
        x.astype("<f4").tofile(a.dump)
    n = x.shape[0]
    markers = []
    for m in a.marker:
        at, text = m.split("=", 1)
        markers.append((int(round(float(at) * fs)), text))
    markers.sort()
    mout = None
    if a.markers_name:
        info = pylsl.StreamInfo(a.markers_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                f"{a.markers_name}-src")
        mout = pylsl.StreamOutlet(info)
        log(f"marker consumers {mout.wait_for_consumers(a.wait_s)}")
    cut = int(round(a.outage_at_s * fs)) if a.outage_at_s else n
    parts = [(0, cut)] + ([(cut, n)] if cut < n else [])
    segments = []
    k = 0
    t_next = None
    for p, (p0, p1) in enumerate(parts):
        outlet = make_outlet(a.name, labels, units, fs, f"{a.name}-src")
        log(f"segment {p}: consumers {outlet.wait_for_consumers(a.wait_s)}")
        time.sleep(0.5)
        # One timeline: after an outage the stamps go on from where they stopped
        # plus the outage, as an amplifier's clock would.
        t0 = pylsl.local_clock() + 0.05 if t_next is None else t_next
        start = time.monotonic()
        for i0 in range(p0, p1, a.chunk):
            i1 = min(p1, i0 + a.chunk)
            while k < len(markers) and markers[k][0] < i1:
                idx, text = markers[k]
                mout.push_sample([text], t0 + (idx - p0) / fs)
                log(f"marker {text!r} at sample {idx}")
                k += 1
            due = start + (i1 - p0 - 1) / fs / a.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            outlet.push_chunk(np.ascontiguousarray(x[i0:i1]), (t0 + np.arange(i0 - p0, i1 - p0) / fs).tolist())
        segments.append(dict(t0=t0, first=p0, n=p1 - p0))
        t_next = t0 + (p1 - p0) / fs + a.outage_s
        time.sleep(1.0)  # the tail is delivered before the outlet goes
        if p + 1 < len(parts):
            del outlet
            log(f"outage: outlet closed for {a.outage_s} s")
            time.sleep(a.outage_s)
    if a.done_file:
        open(a.done_file, "w").write("done")
    time.sleep(0.5)
    json.dump(dict(labels=labels, units=units, fs=fs, n=n, markers=markers, segments=segments), open(a.out, "w"),
              indent=1)
    del outlet, mout


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("session")
    s.add_argument("--edf", action="append", required=True)
    s.add_argument("--seconds", action="append", type=float, required=True, help="-1: to the end")
    s.add_argument("--from-s", action="append", type=float, default=None, help="per --edf (default 0)")
    s.add_argument("--name", required=True)
    s.add_argument("--markers-name", default=None)
    s.add_argument("--marker", action="append", default=[], help="AT_S=TEXT")
    s.add_argument("--speed", type=float, default=4.0)
    s.add_argument("--chunk", type=int, default=50)
    s.add_argument("--wait-s", type=float, default=60.0)
    s.add_argument("--outage-at-s", type=float, default=None, help="close the outlet after this many seconds")
    s.add_argument("--outage-s", type=float, default=3.0)
    s.add_argument("--done-file", default=None)
    s.add_argument("--dump", default=None)
    s.add_argument("--out", required=True)
    a = ap.parse_args()
    session_cmd(a)


if __name__ == "__main__":
    main()
