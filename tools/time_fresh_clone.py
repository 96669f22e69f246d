"""Time one of the README's two commands as a new user meets it: a fresh clone of the committed HEAD,
then `make <target>` in it (its own venv, pinned wheels, kernel, and an empty runs folder: no finished or
resumable run of an earlier clone is replayed, so every notebook trains and every cache is built again).

    python tools/time_fresh_clone.py test         # make test (about 10 minutes on 2 cores)
    python tools/time_fresh_clone.py reproduce    # make reproduce (an hour or more on 2 cores)

Writes report/metrics/fresh_clone_<target>.json (wall time, commit, processor, date, and for `test` the
number of tests that passed); `python reproduce.py --report-only` then puts it in the README's table of
times. The clone and its outputs are deleted afterwards; the log stays in a temporary file named on the
screen. Run it with the project's venv (.venv/bin/python) and nothing else busy on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kd_helpers import cpu_name, has_native_bfloat16

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("test", "reproduce")


def passed_tests(log: str) -> int | None:
    """The number of passed tests in pytest's last summary line ('172 passed in 526.62s'), None without one."""
    found = re.findall(r"(\d+) passed", log)
    return int(found[-1]) if found else None


def measure(target: str, repo: Path = ROOT, out: Path | None = None) -> dict:
    """Clone `repo`'s HEAD into a temporary folder, run `make <target>` there, and return (and write to `out`)
    the record. A failing command raises, with the end of its log: a time of a broken run means nothing."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose {' or '.join(TARGETS)}")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    log_path = Path(tempfile.mkstemp(prefix=f"fresh_clone_{target}_", suffix=".log")[1])
    with tempfile.TemporaryDirectory(prefix="kd-fresh-clone-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
        print(f"make {target} in a fresh clone of {commit[:10]} ({clone}); log: {log_path}", flush=True)
        env = {**os.environ, "KD_RUNS_DIR": str(Path(tmp) / "runs")}  # a new user's: nothing trained yet
        start = time.time()
        with open(log_path, "w") as log:
            code = subprocess.run(["make", target], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.time() - start
    text = log_path.read_text()
    if code != 0:
        raise RuntimeError(f"make {target} failed (exit {code}) after {seconds / 60:.1f} min; nothing recorded. "
                           f"The end of {log_path}:\n" + "\n".join(text.splitlines()[-20:]))
    record = {"command": f"make {target}", "minutes": round(seconds / 60, 1), "commit": commit,
              "cpu": cpu_name(), "bfloat16_hardware": has_native_bfloat16(torch.device("cpu")), "date": time.strftime("%Y-%m-%d"),
              "measured_with": f"python tools/time_fresh_clone.py {target}"}
    if target == "test":
        record["tests_passed"] = passed_tests(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=TARGETS)
    args = parser.parse_args(argv)
    record = measure(args.target, out=ROOT / "report" / "metrics" / f"fresh_clone_{args.target}.json")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
