"""A pylsl consumer of `labramd replay` with its marker stream (no labramd code).

Resolves `<name>-markers` first (it may be absent: --no-markers, or a file without
annotations) and subscribes to it before the EEG stream `<name>`, so that a replay started
with --wait-consumers sends both from their start. Records the EEG timestamps and the values
of channel 0, and every marker with its timestamp, its arrival time (local_clock) and how many
EEG samples had been received before it (markers are pulled before the EEG in each round, so a
marker delivered late shows as EEG samples pushed after it counted before it), to --out (JSON). Timestamps are kept as sent: the tests run the
replay on this host, so they are on this local_clock already (time_correction, an estimate
measured per inlet, would blur sub-millisecond comparisons between the two streams on a loaded
machine). Stops after --max-samples EEG samples (then 0.5 s more
for markers), or once nothing arrived for --idle-exit-s.

  python replay_peer.py --name N --out r.json [--max-samples 5200] [--markers-resolve-s 5]
"""
import argparse
import json
import sys
import time

import pylsl


def log(msg):
    print(f"[replay_peer] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--resolve-s", type=float, default=60.0)
    ap.add_argument("--markers-resolve-s", type=float, default=10.0)
    ap.add_argument("--max-samples", type=int, default=0)
    ap.add_argument("--idle-exit-s", type=float, default=3.0)
    ap.add_argument("--max-s", type=float, default=120.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    found = pylsl.resolve_byprop("name", f"{a.name}-markers", 1, a.markers_resolve_s)
    markers, marker_info = None, None
    if found:
        markers = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=0)
        info = markers.info(timeout=5)
        marker_info = dict(type=info.type(), channel_count=info.channel_count(),
                           channel_format=info.channel_format(), nominal_rate=info.nominal_srate(),
                           source_id=info.source_id())
        markers.open_stream(timeout=10)
        log(f"subscribed to {a.name}-markers")
    else:
        log(f"no stream {a.name}-markers")
    found = pylsl.resolve_byprop("name", a.name, 1, a.resolve_s)
    if not found:
        sys.exit(f"[replay_peer] stream {a.name} not found")
    eeg = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=0)
    eeg.open_stream(timeout=10)
    log(f"subscribed to {a.name}")

    stamps, ch0, received = [], [], []
    t_start, last, done_at = pylsl.local_clock(), None, None
    while True:
        now = pylsl.local_clock()
        got = False
        if markers is not None:
            while True:
                m, t = markers.pull_sample(timeout=0.0)
                if m is None:
                    break
                got = True
                received.append(dict(text=m[0], timestamp=t, arrived=pylsl.local_clock(),
                                     eeg_before=len(stamps)))
        chunk, ts = eeg.pull_chunk(timeout=0.0)
        if ts:
            got = True
            stamps.extend(ts)
            ch0.extend(s[0] for s in chunk)
        if got:
            last = now
        if a.max_samples and len(stamps) >= a.max_samples and done_at is None:
            done_at = now
        if done_at is not None and now - done_at > 0.5:
            break
        if last is not None and now - last > a.idle_exit_s:
            break
        if now - t_start > a.max_s:
            break
        if not got:
            time.sleep(0.002)
    json.dump(dict(markers_stream=marker_info, markers=received, timestamps=stamps, ch0=ch0),
              open(a.out, "w"))
    log(f"received {len(stamps)} samples and {len(received)} markers")


if __name__ == "__main__":
    main()
