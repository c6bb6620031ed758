"""What pyxdf (1.17.5, default arguments) reads from an XDF file, as JSON on stdout.

core/tests/xdf.rs runs this through the project's venv and compares it with
labram_core::recording::xdf. Floats go through json (repr, so exact); numeric
samples as lists of numbers, string samples as lists of strings.
"""

import json
import sys

import numpy as np
import pyxdf


def main(path):
    streams, header = pyxdf.load_xdf(path)
    out = []
    for s in streams:
        info = s["info"]
        series = s["time_series"]
        if info["channel_format"][0] == "string":
            values = [list(row) for row in series]
        else:
            values = np.asarray(series).tolist()
        out.append(
            {
                "stream_id": int(info["stream_id"]),
                "name": info["name"][0] or "",
                "type": info["type"][0] or "",
                "channel_count": int(info["channel_count"][0]),
                "nominal_srate": float(info["nominal_srate"][0]),
                "channel_format": info["channel_format"][0],
                "effective_srate": float(info["effective_srate"]),
                "segments": [list(x) for x in info["segments"]],
                "clock_segments": [list(x) for x in info["clock_segments"]],
                "time_stamps": np.asarray(s["time_stamps"], dtype=float).tolist(),
                "time_series": values,
            }
        )
    json.dump({"pyxdf": pyxdf.__version__, "streams": out}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
