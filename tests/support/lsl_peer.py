"""Independent LSL peers for labramd's integration tests (pylsl + pyedflib, no labramd code).

outlet: streams an excerpt of an EDF recording in real time as a float32 LSL outlet, with
        the file's channel labels and units in desc/channels/channel, per-sample timestamps
        t0 + i/fs, optional NaN injection and an optional outage (outlet destroyed, then
        recreated with the same name and source_id). Writes what it did to --out (JSON).
inlet:  resolves a prediction stream and records every sample and timestamp to --out (JSON).
jitter: a push-stamped amplifier (issue 14): noise at --rate in --chunk-sample chunks, each chunk
        pushed --jitter-s of uniform random delay after it is complete and stamped with the
        push time (liblsl back-dates the chunk's other samples), optionally with an outage (no
        samples, no pushes) of --outage-s from --outage-at-s on; the timestamps after it reflect
        the outage. Writes what it did to --out (JSON).

  python lsl_peer.py outlet --edf F --name N --start-s 10 --seconds 12 --out o.json
  python lsl_peer.py inlet --name N --out i.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import pylsl


def log(msg):
    print(f"[lsl_peer] {msg}", file=sys.stderr, flush=True)


def read_edf(path):
    import pyedflib

    f = pyedflib.EdfReader(path)
    try:
        n = f.signals_in_file
        labels = f.getSignalLabels()
        rates = [f.getSampleFrequency(i) for i in range(n)]
        main_rate = max(set(rates), key=rates.count)
        keep = [i for i in range(n) if rates[i] == main_rate and "annotation" not in labels[i].lower()]
        data = np.stack([f.readSignal(i) for i in keep]).astype(np.float32)  # physical values
        units = [f.getPhysicalDimension(i).strip() for i in keep]
        return [labels[i].strip() for i in keep], units, float(main_rate), data
    finally:
        f.close()


def make_outlet(name, labels, units, fs, source_id):
    info = pylsl.StreamInfo(name, "EEG", len(labels), fs, pylsl.cf_float32, source_id)
    chns = info.desc().append_child("channels")
    for lab, unit in zip(labels, units):
        c = chns.append_child("channel")
        c.append_child_value("label", lab)
        c.append_child_value("unit", unit)
        c.append_child_value("type", "EEG")
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)


def stream(outlet, x, fs, chunk, t_first=None):
    """Pushes x (n, ch) in real time; returns t0 (LSL time of sample 0)."""
    n = x.shape[0]
    t0 = pylsl.local_clock() + 0.05 if t_first is None else t_first
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        ts = t0 + np.arange(i0, i1) / fs
        delay = ts[-1] - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        outlet.push_chunk(np.ascontiguousarray(x[i0:i1]), ts.tolist())
    return t0


def outlet_cmd(a):
    labels, units, fs, data = read_edf(a.edf)
    start = int(round(a.start_s * fs))
    n = int(round(a.seconds * fs))
    x = np.ascontiguousarray(data[:, start:start + n].T)  # (n, ch)
    nan = None
    if a.nan_channel:
        c = labels.index(a.nan_channel)
        i0 = int(round(a.nan_at_s * fs))
        i1 = i0 + int(round(a.nan_s * fs))
        x[i0:i1, c] = np.nan
        nan = dict(channel=a.nan_channel, first=i0, last=i1 - 1)
    if a.dump:
        x.astype("<f4").tofile(a.dump)
    source_id = f"{a.name}-src"
    segments = []
    cut = int(round(a.outage_at_s * fs)) if a.outage_at_s else n
    parts = [(0, cut)] + ([(cut, n)] if cut < n else [])
    for k, (p0, p1) in enumerate(parts):
        outlet = make_outlet(a.name, labels, units, fs, source_id)
        ok = outlet.wait_for_consumers(a.wait_s)
        log(f"segment {k}: consumers {ok}")
        time.sleep(0.5)
        t0 = stream(outlet, x[p0:p1], fs, a.chunk)
        segments.append(dict(t0=t0, first=start + p0, n=p1 - p0))
        if k + 1 < len(parts):
            time.sleep(0.5)
            del outlet
            log(f"outage: outlet closed for {a.outage_s} s")
            time.sleep(a.outage_s)
        else:
            if a.done_file:
                open(a.done_file, "w").write("done")
            time.sleep(1.5)  # keep the outlet alive so the tail is delivered
            del outlet
    json.dump(dict(labels=labels, units=units, fs=fs, segments=segments, nan=nan), open(a.out, "w"), indent=1)


def synthetic_cmd(a):
    """A stream with given labels, unit and rate (noise), for the start-up checks."""
    labels = a.labels.split(",")
    outlet = make_outlet(a.name, labels, [a.unit] * len(labels), a.rate, f"{a.name}-src")
    rng = np.random.default_rng(0)
    t_end = pylsl.local_clock() + a.seconds
    while pylsl.local_clock() < t_end:
        outlet.push_chunk(rng.standard_normal((10, len(labels))).astype(np.float32))
        time.sleep(10 / a.rate)


def jitter_cmd(a):
    import random

    labels = a.labels.split(",")
    outlet = make_outlet(a.name, labels, ["uV"] * len(labels), a.rate, f"{a.name}-src")
    ok = outlet.wait_for_consumers(a.wait_s)
    log(f"jitter: consumers {ok}")
    time.sleep(0.5)
    rng = np.random.default_rng(a.seed)
    delays = random.Random(a.seed)
    n_chunks = int(round(a.seconds * a.rate)) // a.chunk
    pause = int(round(a.outage_at_s * a.rate)) // a.chunk if a.outage_at_s is not None else None
    t0 = pylsl.local_clock()
    last, stamps, late = 0.0, [], 0.0
    for k in range(n_chunks):
        if k == pause:
            if a.outage_file:
                open(a.outage_file, "w").write("outage")
            log(f"outage: no samples for {a.outage_s} s")
        shift = a.outage_s if pause is not None and k >= pause else 0.0
        ready = t0 + shift + (k + 1) * a.chunk / a.rate
        due = max(ready + delays.uniform(0.0, a.jitter_s), last)
        wait = due - pylsl.local_clock()
        if wait > 0:
            time.sleep(wait)
        stamp = pylsl.local_clock()
        late = max(late, stamp - due)
        x = (rng.standard_normal((a.chunk, len(labels))) * 10.0).astype(np.float32)
        outlet.push_chunk(x, stamp)
        last = stamp
        stamps.append(stamp)
    if a.done_file:
        open(a.done_file, "w").write("done")
    log(f"pushed {n_chunks} chunks; latest push {late * 1e3:.1f} ms after its due time")
    time.sleep(1.5)  # keep the outlet alive so the tail is delivered
    del outlet
    json.dump(dict(labels=labels, rate=a.rate, chunk=a.chunk, t0=t0, n_chunks=n_chunks, pause_chunk=pause,
                   outage_s=a.outage_s, push_stamps=stamps, max_late_s=late), open(a.out, "w"), indent=1)


def edf_values_cmd(a):
    """The first --n physical values of every data signal, as pyedflib reads them."""
    import pyedflib

    f = pyedflib.EdfReader(a.edf)
    try:
        out = []
        for i in range(f.signals_in_file):
            out.append(dict(label=f.getLabel(i).strip(), rate=f.getSampleFrequency(i),
                            dimension=f.getPhysicalDimension(i).strip(),
                            values=f.readSignal(i, 0, min(a.n, f.getNSamples()[i])).tolist()))
    finally:
        f.close()
    json.dump(out, open(a.out, "w"))


def write_edf_cmd(a):
    """A small EDF+ with mixed rates and units: Fp1, Cz (uV, 256 Hz), O1 (mV, 256 Hz), Resp (128 Hz)."""
    import pyedflib

    rng = np.random.default_rng(3)
    spec = [("EEG Fp1", "uV", 256, 30.0), ("EEG Cz", "uV", 256, 30.0), ("EEG O1", "mV", 256, 0.03),
            ("Resp", "mV", 128, 1.0)]
    w = pyedflib.EdfWriter(a.out, len(spec), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        heads, data = [], []
        for label, dim, rate, scale in spec:
            heads.append(dict(label=label, dimension=dim, sample_frequency=rate, physical_max=10 * scale,
                              physical_min=-10 * scale, digital_max=32767, digital_min=-32768))
            data.append(rng.standard_normal(int(rate * a.seconds)) * scale)
        w.setSignalHeaders(heads)
        w.writeSamples(data)
    finally:
        w.close()


def inlet_cmd(a):
    streams = pylsl.resolve_byprop("name", a.name, 1, a.resolve_s)
    if not streams:
        sys.exit(f"[lsl_peer] stream {a.name} not found")
    inlet = pylsl.StreamInlet(streams[0], max_buflen=360, processing_flags=0)
    info = inlet.info(timeout=5)
    labels, units, types = [], [], []
    c = info.desc().child("channels").child("channel")
    while not c.empty():
        labels.append(c.child_value("label"))
        units.append(c.child_value("unit"))
        types.append(c.child_value("type"))
        c = c.next_sibling()
    inlet.open_stream(timeout=10)
    tc = inlet.time_correction(timeout=5)
    log(f"connected to {a.name}: {labels}")
    values, stamps, last, t_start = [], [], None, pylsl.local_clock()
    while True:
        s, ts = inlet.pull_sample(timeout=0.2)
        now = pylsl.local_clock()
        if s is not None:
            values.append(s)
            stamps.append(ts + tc)
            last = now
            if a.max_samples and len(values) >= a.max_samples:
                break
            continue
        if a.stop_file and os.path.exists(a.stop_file):
            if last is None or now - last > 0.5:
                break
            continue
        if a.stop_file is None and last is not None and now - last > a.idle_exit_s:
            break
        if now - t_start > a.max_s:
            break
    json.dump(dict(labels=labels, units=units, types=types, channel_format=info.channel_format(),
                   nominal_rate=info.nominal_srate(), source_id=info.source_id(), received_at=last,
                   values=values, timestamps=stamps), open(a.out, "w"), indent=1)
    log(f"received {len(values)} samples")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("outlet")
    o.add_argument("--edf", required=True)
    o.add_argument("--name", required=True)
    o.add_argument("--start-s", type=float, default=0.0)
    o.add_argument("--seconds", type=float, default=12.0)
    o.add_argument("--chunk", type=int, default=10)
    o.add_argument("--wait-s", type=float, default=60.0)
    o.add_argument("--nan-channel", default=None)
    o.add_argument("--nan-at-s", type=float, default=0.0)
    o.add_argument("--nan-s", type=float, default=0.1)
    o.add_argument("--outage-at-s", type=float, default=None)
    o.add_argument("--outage-s", type=float, default=3.0)
    o.add_argument("--done-file", default=None)
    o.add_argument("--dump", default=None, help="write the pushed samples (n, ch) as raw little-endian float32")
    o.add_argument("--out", required=True)
    i = sub.add_parser("inlet")
    i.add_argument("--name", required=True)
    i.add_argument("--resolve-s", type=float, default=60.0)
    i.add_argument("--idle-exit-s", type=float, default=4.0)
    i.add_argument("--max-s", type=float, default=120.0)
    i.add_argument("--max-samples", type=int, default=0)
    i.add_argument("--stop-file", default=None, help="exit once this file exists (and nothing arrived for 0.5 s)")
    i.add_argument("--out", required=True)
    y = sub.add_parser("synthetic")
    y.add_argument("--name", required=True)
    y.add_argument("--labels", required=True)
    y.add_argument("--unit", default="uV")
    y.add_argument("--rate", type=float, default=250.0)
    y.add_argument("--seconds", type=float, default=30.0)
    j = sub.add_parser("jitter")
    j.add_argument("--name", required=True)
    j.add_argument("--labels", required=True)
    j.add_argument("--rate", type=float, default=500.0)
    j.add_argument("--chunk", type=int, default=10)
    j.add_argument("--jitter-s", type=float, default=0.04)
    j.add_argument("--seconds", type=float, default=120.0, help="of samples (the outage not included)")
    j.add_argument("--outage-at-s", type=float, default=None)
    j.add_argument("--outage-s", type=float, default=2.0)
    j.add_argument("--outage-file", default=None, help="created when the outage starts")
    j.add_argument("--done-file", default=None)
    j.add_argument("--wait-s", type=float, default=60.0)
    j.add_argument("--seed", type=int, default=14)
    j.add_argument("--out", required=True)
    e = sub.add_parser("edf-values")
    e.add_argument("--edf", required=True)
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--out", required=True)
    w = sub.add_parser("write-edf")
    w.add_argument("--seconds", type=int, default=10)
    w.add_argument("--out", required=True)
    a = ap.parse_args()
    cmds = {"outlet": outlet_cmd, "inlet": inlet_cmd, "synthetic": synthetic_cmd, "edf-values": edf_values_cmd,
            "write-edf": write_edf_cmd, "jitter": jitter_cmd}
    cmds[a.cmd](a)


if __name__ == "__main__":
    main()
