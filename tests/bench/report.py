"""The one BENCH line format every benchmark prints (see ../shared/ARCHITECTURE.md)."""

import json


def bench(name, value, unit, baseline, baseline_value, target):
    ratio = value / baseline_value if baseline_value else None
    print("BENCH " + json.dumps({"name": name, "value": round(value, 4), "unit": unit, "baseline": baseline,
                                 "baseline_value": round(baseline_value, 4) if baseline_value is not None else None,
                                 "ratio": round(ratio, 3) if ratio is not None else None, "target": target}), flush=True)
