"""Run the notebooks in order with papermill, then write the report: `python reproduce.py --profile main`.

main:  the headline (`make reproduce`): 01-05 and 04b once, seed 0, with the shipped teacher. Executed
       notebooks in report/executed/, figures in report/figures/, numbers in report/metrics/, students
       in checkpoints/; then report/report.md, report/report.html and the README's results.
full:  main, plus 04 with seeds 1-4 (mean, std and confidence interval of KD minus scratch), 04b's
       architecture from scratch, and the temperature x alpha grid (06).
quick: every notebook on small parameters (minutes), all outputs under report/quick/ (ignored by git).

The teacher (00, from random weights, hours on a CPU, resumable) is trained only when
checkpoints/teacher_resnet50.pt is missing or --train-teacher is given; --status prints where the
resumable runs stand. Notebooks run by hand write to runs/ instead, so exploring leaves git status clean.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ["00_train_teacher", "01_data_exploration", "02_teacher_evaluation", "03_student_design",
             "04_distillation", "04b_improved_student", "05_beyond_the_baseline", "06_kd_variants"]
KERNEL = "kd-fashion"
HOMEWORK_TEST_ACCURACY = 0.9393   # the homework report's best run, with the course's teacher


# ---------------------------------------------------------------------------- what runs, with which parameters

def quick_parameters(out: Path) -> dict[str, dict]:
    """Small settings that exercise every cell; all outputs go under `out`."""
    common = {"figures_dir": str(out / "figures"), "metrics_dir": str(out / "metrics")}
    students = {**common, "n_train": 256, "n_test": 500, "progress": False, "checkpoint_dir": str(out / "checkpoints"),
                "run_dir": str(out / "runs")}
    return {
        "00_train_teacher": {"arch": "resnet50", "epochs": 1, "max_batches": 2, "n_test": 500, "n_val": 500, "progress": False,
                             "metrics_dir": str(out / "metrics"), "run_dir": str(out / "runs"),
                             "checkpoint": str(out / "checkpoints" / "teacher_resnet50.pt")},
        "01_data_exploration": common,
        "02_teacher_evaluation": {**common, "n_test": 500, "n_train_check": 200},
        "03_student_design": {"metrics_dir": str(out / "metrics")},
        "04_distillation": {**students, "epochs": 2, "compile": False},
        "04b_improved_student": {**students, "epochs": 1, "compile": False},
        "05_beyond_the_baseline": {**common, "n_test": 500, "repeats": 3, "calibration_images": 200,
                                   "int8_dir": str(out / "checkpoints"), "run_dir": str(out / "runs")},
        "06_kd_variants": {**common, "temperatures": [4.0], "alphas": [0.5], "epochs": 1, "n_train": 256, "views": 2, "view_counts": [1],
                           "view_augmentations": ["homework_mix"],
                           "dkd": {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}, "compile": False,
                           "run_dir": str(out / "runs")},
    }


REPORT = {"figures_dir": "report/figures", "metrics_dir": "report/metrics"}
MAIN = {  # record name -> (notebook, parameters): the headline, in order
    "01_data_exploration": ("01_data_exploration", REPORT),
    "02_teacher_evaluation": ("02_teacher_evaluation", REPORT),
    "03_student_design": ("03_student_design", {"metrics_dir": "report/metrics"}),
    "04_distillation": ("04_distillation", {**REPORT, "checkpoint_dir": "checkpoints", "progress": False}),
    "04b_improved_student": ("04b_improved_student", {**REPORT, "checkpoint_dir": "checkpoints", "progress": False}),
    "05_beyond_the_baseline": ("05_beyond_the_baseline", {**REPORT, "int8_dir": "checkpoints"}),
}
SEEDS = (1, 2, 3, 4)   # 04 again with these seeds: initial weights, shuffling, augmentation, dropout (same split, teacher)
CACHED = {  # the reference distillation: the teacher's logits of each clean image and its mirror, flip only
    "teacher_mode": "cached", "augmentation": "flip", "students": ["kd"], "progress": False,
    "checkpoint_dir": "runs/checkpoints", "checkpoint_name": "kd_cached_seed{seed}.pt", "metrics_name": "student_kd_cached.json"}
EXTRA = {  # the full profile adds these
    **{f"04_distillation_seed{s}": ("04_distillation", {  # each seed's students ship as checkpoints/seeds/<name>_seed<N>.pt
        "seed": s, "progress": False, "checkpoint_dir": "checkpoints/seeds", "checkpoint_name": "{name}_seed{seed}.pt",
        "figures_dir": f"runs/seeds/seed{s}", "metrics_dir": f"report/metrics/seeds/seed{s}"}) for s in SEEDS},
    "04_distillation_cached": ("04_distillation", {**CACHED, "figures_dir": "runs/figures", "metrics_dir": "report/metrics"}),
    **{f"04_distillation_cached_seed{s}": ("04_distillation", {
        **CACHED, "seed": s, "figures_dir": f"runs/seeds/seed{s}", "metrics_dir": f"report/metrics/seeds/seed{s}"})
       for s in SEEDS},
    "04b_improved_student_scratch": ("04b_improved_student", {
        "students": ["scratch"], "progress": False, "checkpoint_dir": "runs/checkpoints", "figures_dir": "runs/figures",
        "metrics_dir": "report/metrics"}),
    "06_kd_variants": ("06_kd_variants", REPORT),
}
TEACHER = {"00_train_teacher": ("00_train_teacher", {
    "progress": False, "checkpoint": "checkpoints/teacher_resnet50.pt", "metrics_dir": "report/metrics"})}
RECORDS = {**TEACHER, **MAIN, **EXTRA}


def full_steps(names: list[str], train_teacher: bool) -> list[tuple[str, str, dict]]:
    """(notebook, record name, parameters) for the records `names`, in the order given. The teacher (00) runs
    only when asked or when its checkpoint is missing."""
    teacher_missing = not (ROOT / "checkpoints" / "teacher_resnet50.pt").exists()
    return [(RECORDS[name][0], name, RECORDS[name][1]) for name in names
            if name != "00_train_teacher" or train_teacher or teacher_missing]


def run_notebook(name: str, output: Path, parameters: dict, cwd: Path | None = None) -> float:
    """Execute notebooks/<name>.ipynb with papermill into runs/executing/ (ignored by git), and move the record to
    `output` once it has finished: a run in progress or a failed one never replaces a record. The file in progress
    is named by the process too, so two runs of one notebook at once (the tests beside a long run) never share it.
    Returns the seconds."""
    import os
    import papermill
    running = ROOT / "runs" / "executing" / f"{output.stem}.{os.getpid()}.ipynb"
    running.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(running), parameters=parameters,
                               kernel_name=KERNEL, cwd=str(cwd or ROOT), progress_bar=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(running, output)  # a rename where both are on one file system
    return time.time() - start


# ---------------------------------------------------------------------------- numbers

def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on n independent images: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # two-sided


def mean_interval(values: list[float]) -> dict:
    """Mean, sample standard deviation and the 95 % confidence interval of the mean (Student's t)."""
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    half = T_95.get(len(values) - 1, 1.96) * std / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": len(values)}


def load_metrics(report_dir: Path = ROOT / "report") -> dict:
    """Every metrics file by name; 04's seed runs under "seeds", by seed."""
    m = {p.stem: json.loads(p.read_text()) for p in sorted((report_dir / "metrics").glob("*.json"))}
    seeds = {int(d.name.removeprefix("seed")): {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}
             for d in sorted((report_dir / "metrics" / "seeds").glob("seed*"))}
    if seeds:
        m["seeds"] = seeds
    return m


def which_teacher(sha256: str, m: dict) -> str:
    """'the shipped teacher', or a bold warning when a run distilled another one (a run from before a new teacher)."""
    shipped = m["teacher_evaluation"]["checkpoint_sha256"]
    return ("the shipped teacher" if sha256 == shipped else
            f"**an earlier teacher** (SHA-256 `{sha256[:12]}`, not the shipped `{shipped[:12]}`)")


def seed_table(m: dict) -> dict:
    """04's students by seed (seed 0: the shipped ones): KD, scratch and, where every seed has it, KD from cached
    clean logits; only seeds whose KD student learnt from the shipped teacher, each student with the settings of
    seed 0's apart from the seed. With the mean, std and 95 % interval of each column, and of each distilled
    student minus scratch, paired by seed."""
    shipped = m["teacher_evaluation"]["checkpoint_sha256"]
    settings = lambda r: {k: v for k, v in r["run"].get("config", {}).items() if k != "seed"}  # noqa: E731
    seed0 = {n: m[n] for n in ("student_kd", "student_scratch", "student_kd_cached") if n in m}
    by_seed = {m["student_kd"]["run"]["seed"]: seed0, **m.get("seeds", {})}
    valid = {seed: r for seed, r in sorted(by_seed.items()) if {"student_kd", "student_scratch"} <= set(r)
             and r["student_kd"]["run"]["teacher_sha256"] == shipped
             and all(settings(r[n]) == settings(m[n]) for n in ("student_kd", "student_scratch"))}
    names = ["student_kd", "student_scratch"]
    if valid and all("student_kd_cached" in r and "student_kd_cached" in m
                     and r["student_kd_cached"]["run"]["teacher_sha256"] == shipped
                     and settings(r["student_kd_cached"]) == settings(m["student_kd_cached"]) for r in valid.values()):
        names.append("student_kd_cached")
    rows = {seed: {f"{name.removeprefix('student_')}_{split}": r[name][f"{split}_accuracy"]
                   for name in names for split in ("val", "test")} for seed, r in valid.items()}
    for row in rows.values():
        row["kd_minus_scratch_test"] = row["kd_test"] - row["scratch_test"]
        if "kd_cached_test" in row:
            row["kd_cached_minus_scratch_test"] = row["kd_cached_test"] - row["scratch_test"]
    columns = list(next(iter(rows.values()))) if rows else []
    return {"rows": rows, "summary": {c: mean_interval([r[c] for r in rows.values()]) for c in columns}}


# ---------------------------------------------------------------------------- report sections

def render_summary(m: dict) -> str:
    """The headline table, shared by report.md and the README: seed 0's models, and mean ± std over seeds
    where 04 ran with several."""
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    t = seed_table(m)
    over = lambda c: (f"{pct(t['summary'][c]['mean'])} ± {100 * t['summary'][c]['std']:.2f} ({t['summary'][c]['n']} seeds)"  # noqa: E731
                      if len(t["rows"]) > 1 else "—")
    int8 = m.get("deployment", {}).get("models", {}).get("student kd, ONNX int8")
    int8_row = (f"| StudentNet, distilled, int8 ONNX ({int8['bytes'] / 1024:.0f} KB) | {int8['parameters']:,} | "
                f"{pct(int8['test_accuracy'])} | — |\n") if int8 else ""
    cached = m.get("student_kd_cached")
    cached_row = (f"| StudentNet, distilled from cached clean logits | {cached['run']['parameters']:,} | "
                  f"{pct(cached['test_accuracy'])} | {over('kd_cached_test') if 'kd_cached_test' in t['summary'] else '—'} |\n"
                  if cached else "")
    better = m.get("student_improved")
    better_row = (f"| GapStudentNet, distilled (`04b`) | {better['run']['parameters']:,} | "
                  f"{pct(better['test_accuracy'])} | — |\n") if better else ""
    alone = m.get("student_improved_scratch")
    better_row += (f"| GapStudentNet, from scratch (`04b`, full profile) | {alone['run']['parameters']:,} | "
                   f"{pct(alone['test_accuracy'])} | — |\n") if alone else ""
    return f"""| model | parameters | test accuracy, seed 0 | test accuracy over seeds |
|---|---:|---:|---:|
| ResNet50 teacher | {teacher['parameters']:,} | {pct(teacher['test_accuracy'])} | — |
| StudentNet, distilled (KD) | {kd_['run']['parameters']:,} | {pct(kd_['test_accuracy'])} | {over('kd_test')} |
| StudentNet, from scratch | {scratch['run']['parameters']:,} | {pct(scratch['test_accuracy'])} | {over('scratch_test')} |
{cached_row}{int8_row}{better_row}| homework report: its best KD run, with the course's teacher | 95,386 | {pct(HOMEWORK_TEST_ACCURACY)} | — |

One accuracy on {teacher['n_test']:,} test images has a standard error of about
{100 * binomial_se(kd_['test_accuracy'], teacher['n_test']):.2f} points; differences of a few tenths are noise.
""" + ("" if kd_["run"]["teacher_sha256"] == teacher["checkpoint_sha256"] else
       f"\nThe distilled student learnt from {which_teacher(kd_['run']['teacher_sha256'], m)}: `04` has not "
       f"run since the teacher changed.\n")


def render_seeds(m: dict) -> str:
    """The distilled students against scratch over several seeds, paired by seed, when 04's seed runs have run."""
    t = seed_table(m)
    if len(t["rows"]) < 2:
        return ""
    s = t["summary"]
    cached = "kd_cached_test" in s
    cols = ("kd_val", "kd_test", "scratch_val", "scratch_test") + (("kd_cached_val", "kd_cached_test") if cached else ())
    diffs = ("kd_minus_scratch_test",) + (("kd_cached_minus_scratch_test",) if cached else ())
    heads = ["KD validation", "KD test", "scratch validation", "scratch test"] + (
        ["cached KD validation", "cached KD test"] if cached else []) + ["KD − scratch (test, points)"] + (
        ["cached KD − scratch"] if cached else [])
    rows = "\n".join(f"| {seed}{' (shipped)' if seed == m['student_kd']['run']['seed'] else ''} | "
                     + " | ".join(pct(r[c]) for c in cols) + " | " + " | ".join(f"{100 * r[d]:+.2f}" for d in diffs) + " |"
                     for seed, r in t["rows"].items())
    means = " | ".join(f"{pct(s[c]['mean'])} ± {100 * s[c]['std']:.2f}" for c in cols)
    means += " | " + " | ".join(f"{100 * s[d]['mean']:+.2f} ± {100 * s[d]['std']:.2f}" for d in diffs)
    interval = lambda d, what: (f"{what}, paired by seed: {100 * s[d]['mean']:+.2f} points, 95 % confidence "  # noqa: E731
                                f"interval [{100 * s[d]['low']:+.2f}, {100 * s[d]['high']:+.2f}] ({s[d]['n']} seeds, Student's t).")
    cached_words = (" Cached KD is the reference distillation: the teacher's logits of each clean training image and its "
                    "mirror image, flip only." if cached else "")
    return f"""
**Seeds.** `04` with {len(t['rows'])} seeds (initial weights, shuffling, augmentation and dropout; the same split and
teacher), each student kept on validation; the shipped students are seed 0's.{cached_words}

| seed | {" | ".join(heads)} |
|---|{"---:|" * len(heads)}
{rows}
| mean ± std | {means} |

{interval("kd_minus_scratch_test", "KD minus scratch")}{" " + interval("kd_cached_minus_scratch_test", "Cached KD minus scratch") if cached else ""}
"""


def render_teacher_training(m: dict) -> str:
    """The shipped teacher's training, epoch by epoch (00's metrics), with every epoch whose training accuracy
    fell by more than 10 points named: a divergence, and how long it took to recover."""
    run = m.get("teacher_training")
    if not run or run.get("checkpoint_sha256") != m["teacher_evaluation"]["checkpoint_sha256"]:
        return ""
    h = run["history"]
    falls = []
    for i in range(1, len(h)):
        if h[i]["train_accuracy"] < h[i - 1]["train_accuracy"] - 0.10:
            back = next((g["epoch"] for g in h[i:] if g["train_accuracy"] >= h[i - 1]["train_accuracy"]), None)
            falls.append(f"in epoch {h[i]['epoch']} (learning rate {h[i]['lr']:.3g}) the training accuracy fell from "
                         f"{pct(h[i - 1]['train_accuracy'])} to {pct(h[i]['train_accuracy'])}, "
                         + (f"back above it in epoch {back}" if back else "never back to it"))
    rows = "\n".join(f"| {g['epoch']} | {g['lr']:.3g} | {g['train_loss']:.3f} | {pct(g['train_accuracy'])} | "
                     f"{pct(g['val_accuracy'])} | {g['seconds'] / 60:.1f} |" for g in h)
    return f"""
Its training, epoch by epoch (training accuracy on augmented batches; the learning rate at the epoch's end).
{("The loss diverged once or more: " + "; ".join(falls) + ".") if falls else "No epoch lost more than 10 points of training accuracy."}

| epoch | learning rate | training loss | training accuracy | validation accuracy | minutes |
|---:|---:|---:|---:|---:|---:|
{rows}
"""


def render_independent(m: dict) -> str:
    """The shipped models' test accuracy as tools/evaluate_independently.py measured it (torchvision, ONNX Runtime
    and the official files; no kd_helpers), for the checkpoints shipped now only."""
    runs = m.get("independent_evaluation", {}).get("models", {})
    shipped = {m["teacher_evaluation"]["checkpoint_sha256"]} | {
        r.get("sha256") for r in m.get("deployment", {}).get("models", {}).values()}
    rows = [(Path(path).name, r) for path, r in runs.items() if r["sha256"] in shipped]
    if not rows:
        return ""
    said = "; ".join(f"`{name}` {pct(r['measured'])}" + (f" (recorded {pct(r['recorded'])})" if r["recorded"] is not None else "")
                     for name, r in rows)
    return f"""
An evaluation that shares no code with `kd_helpers.py` (`tools/evaluate_independently.py`: the official IDX
files read with numpy, the teacher rebuilt from torchvision, the int8 students run by ONNX Runtime) gives: {said}.
"""


def render_teacher_on_training_images(teacher: dict, previous: dict | None = None) -> str:
    """What the teacher's soft targets hold on training images, when 02 measured it; beside the same measurement
    of the teacher shipped before (teacher_evaluation_previous.json), when that one is another checkpoint."""
    if "training_images" not in teacher:
        return ""
    compared = previous is not None and "training_images" in previous \
        and previous["checkpoint_sha256"] != teacher["checkpoint_sha256"]
    teachers = {"shipped": teacher, **({"previous": previous} if compared else {})}
    row = lambda s: (f"{pct(s['agreement'])} | {s['label_probability']:.3f} | {pct(s['confident'])} | "  # noqa: E731
                     f"{s['entropy']:.3f} |")
    rows = "\n".join(f"| {name} |{f' {who} |' if compared else ''} {row(t['training_images'][name])}"
                     for name in teacher["training_images"] for who, t in teachers.items()
                     if name in t["training_images"])
    n = next(iter(teacher["training_images"].values()))["n"]
    old = (f" The previous teacher (SHA-256 `{previous['checkpoint_sha256'][:12]}`, {pct(previous['test_accuracy'])} test, "
           f"{'fine-tuned in stages' if previous['teacher_meta'].get('init_from') else 'trained in one run'}, augmentation: "
           f"{augmentation_words(previous['teacher_meta']['augmentation'])}) on the same images, for comparison."
           if compared else "")
    return f"""
On {n:,} training images (T = 1; views: the homework's flip, ±10° rotation, ±10 % shift, ×0.9-1.1 scale;
mixed: 0.7 of the image and 0.3 of another, labelled as the first).{old}

| images |{" teacher |" if compared else ""} top class = label | mean probability of the label | share above 0.99 | mean entropy (nats) |
|---|{"---|" if compared else ""}---:|---:|---:|---:|
{rows}
"""


def render_improved(m: dict) -> str:
    """The better student under 100,000 parameters, when 04b_improved_student has run."""
    if "student_improved" not in m:
        return ""
    s, run = m["student_improved"], m["student_improved"]["run"]
    cfg = run["config"]
    scratch = m.get("student_improved_scratch")
    scratch_augmentation = scratch and scratch.get("run", {}).get("augmentation")
    versus = (f" Trained from scratch with the same budget (the full profile)"
              f"{f', augmentation: {augmentation_words(scratch_augmentation)}' if scratch_augmentation else ''}, the same architecture scores "
              f"{pct(scratch['test_accuracy'])} (validation {pct(scratch['val_accuracy'])}): distilled minus scratch "
              f"{100 * (s['test_accuracy'] - scratch['test_accuracy']):+.2f} points on the test set, "
              f"{100 * (s['val_accuracy'] - scratch['val_accuracy']):+.2f} on validation, from one seed each; with a "
              f"standard error of about {100 * binomial_se(s['test_accuracy'], m['teacher_evaluation']['n_test']):.2f} "
              f"points on each test accuracy, one pair of runs does not settle it." if scratch else "")
    return f"""
### A better student under 100,000 parameters

`04b_improved_student`: `{run['arch']}`, {run['parameters']:,} parameters and {run['mult_adds'] / 1e6:.2f}M multiply-adds
(convolutions at 28×28, 14×14 and depthwise-separable ones at 7×7, global average pooling, one linear layer),
distilled from {which_teacher(run['teacher_sha256'], m)} with T = {cfg['temperature']:g}, alpha = {cfg['alpha']:g}
({run['teacher_mode']} soft targets{f"; augmentation: {augmentation_words(run['augmentation'])}" if run.get('augmentation') else ""}); {cfg['optimizer']}, one-cycle learning rate peaking at {cfg['lr']:g}, weight decay
{cfg['weight_decay']:g}, {cfg['epochs']} epochs, {run['train_seconds'] / 60:.0f} min; kept epoch {run['best_epoch']}:
validation {pct(s['val_accuracy'])}, test {pct(s['test_accuracy'])} (the homework's student with KD:
{pct(m['student_kd']['test_accuracy'])}).{versus}

![Learning curves of the improved student.](figures/improved_student_learning_curves.png)
"""


def augmentation_words(a: dict) -> str:
    """An augmentation dict in words: 'flip, ±10° rotation, ±10 % shift, ×0.9-1.1 scale' (what is on)."""
    words = ["flip"] if a.get("flip") else []
    if a.get("degrees"):
        words.append(f"±{a['degrees']:g}° rotation")
    if a.get("translate"):
        words.append(f"±{100 * a['translate']:.0f} % shift")
    if tuple(a.get("scale", (1, 1))) != (1, 1):
        words.append(f"×{a['scale'][0]:g}-{a['scale'][1]:g} scale")
    if a.get("erase"):
        words.append(f"random erasing with probability {a['erase']:g}")
    if a.get("mix"):
        words.append(f"mixed with a partner image (its share up to {a['mix']:g})")
    return ", ".join(words) or "none"


def render_sweep(m: dict) -> str:
    """The temperature x alpha grid and DKD, when 06_kd_variants has run (validation accuracy only)."""
    if "kd_sweep" not in m:
        return ""
    import kd_helpers as kd
    w = m["kd_sweep"]
    scratch = w["scratch_val_accuracy"]   # by augmentation name; one number in records written before that
    scratch = scratch if isinstance(scratch, dict) else {augmentation_words(w["augmentation"]): scratch}
    dkd = w.get("dkd")
    dkd_row = (f"| DKD (Zhao et al., 2022): T = {dkd['temperature']:g}, alpha = {dkd['alpha']:g}, beta = {dkd['beta']:g} | "
               f"{pct(dkd['val_accuracy'])} |\n" if dkd else "")
    scratch_rows = "\n".join(f"| from scratch, augmentation: {name} | {pct(v)} |" for name, v in scratch.items())
    by_views = sorted((int(k), v) for k, v in (w.get("view_counts_val_accuracy") or {}).items())
    views_rows = "".join(f"| the same on views of {augmentation_words(kd.AUGMENTATIONS[name])} | {pct(v)} |\n"
                         for name, v in (w.get("view_augmentations_val_accuracy") or {}).items())
    views_rows += "".join(f"| the same on {k} view{'s' * (k > 1)} of each image{' (all of the cache)' * (k == w.get('views'))} | "
                         f"{pct(v)} |\n" for k, v in by_views)
    fewest = (f"\nThe fewest views of each image within one binomial standard error of the best count (the rule set before "
              f"the runs): {w['fewest_views']}.\n" if w.get("fewest_views") else "")
    return f"""
### Temperature × alpha{", and decoupled KD" if dkd else ""} (validation only)

`06_kd_variants` trains the homework's student for {w['epochs']} epochs per setting (same seed, {w.get('teacher_mode', 'cached')}
soft targets of {which_teacher(w['teacher_sha256'], m)}, {w['n_train']:,} training images, augmentation of the
distilled runs: {augmentation_words(w['augmentation'])}) and reports the best validation accuracy; the test set is not used.

| run | validation accuracy |
|---|---:|
{scratch_rows}
| best classic KD: T = {w['best']['temperature']:g}, alpha = {w['best']['alpha']:g} | {pct(w['best']['val_accuracy'])} |
{views_rows}{dkd_row}{fewest}
![Validation accuracy of KD over temperature and alpha.](figures/kd_temperature_alpha_sweep.png)

*Validation accuracy (%) of classic KD after {w['epochs']} epochs, by temperature (rows) and alpha (columns).*
"""


def render_benchmark(b: dict) -> str:
    """The throughput benchmark's tables (report/metrics/benchmark.json), for the report and the README."""
    speeds = b["training_images_per_s"]
    base = next(iter(speeds.values()))
    rows = "\n".join(f"| {name} | {v:,.0f} | {v / base:.1f}x |" for name, v in speeds.items())
    inference = "\n".join(f"| {name} | {r['latency_ms']:.2f} ms | {r['images_per_s']:,.0f} |" for name, r in b["inference"].items())
    return f"""`{b['command']}` on {b['date']} ({b['threads']} threads, teacher `{b['teacher_arch']}`, project loop
{'compiled' if b['compiled'] else 'eager'}, augmentation: {augmentation_words(b['augmentation'])}), images/s of distillation training:

| pipeline | images/s | vs (a) |
|---|---:|---:|
{rows}

| inference (PyTorch float32, batches of random inputs) | latency, batch 1 | throughput, batch 256 (images/s) |
|---|---:|---:|
{inference}
"""


def render_speed(m: dict) -> str:
    """The throughput benchmark, and the KD student's epoch times in 04 set against it."""
    if "benchmark" not in m:
        return ""
    b, kd_ = m["benchmark"], m["student_kd"]
    speeds = b["training_images_per_s"]
    seconds = sorted(h["seconds"] for h in kd_["history"])
    median = seconds[len(seconds) // 2]
    return f"""
### Speed

{render_benchmark(b)}
The inference rows here and the latency columns of the compression table above are separate measurements
(another run, another load on the machine); read each within its own table.
The distilled student's epochs in `04` took {median:.0f} s (median of {len(seconds)}), i.e.
{kd_['run']['n_train'] / median:,.0f} training images/s including each epoch's validation pass
({f"{kd_['run']['threads']} threads" if 'threads' in kd_['run'] else 'threads not recorded'}), against (c)'s
{next(v for k, v in speeds.items() if k.startswith('(c)')):,.0f} images/s in the benchmark ({b['threads']} threads). The two ran on different days,
on machines of the same kind whose speed has varied by up to 2x: compare rows within one table.
"""


def render_deployment(m: dict) -> str:
    """The int8 deployment section and the compression table, when 05_beyond_the_baseline has run."""
    if "deployment" not in m:
        return ""
    import kd_helpers as kd
    d = m["deployment"]
    scheme = d["scheme"]
    table = kd.compression_table(d["models"], d.get("order"))  # the JSON's keys are sorted; "order" keeps 05's
    changes = "; ".join(f"{label.split(',')[0]}: {-d['models'][label]['drop_points']:+.2f} points"
                        for label in d.get("order") or d["models"] if "drop_points" in d["models"][label])
    return f"""
### Deployment: int8 ONNX and the compression table

`05_beyond_the_baseline` exports the students to ONNX and quantises them to int8 with ONNX Runtime's
static quantisation ({scheme['format']}, weights {scheme['weights']}, activations {scheme['activations']} calibrated on {d['calibration_images']:,}
training images); each ONNX file carries its input contract (normalisation, shapes, class names) in its metadata.
Test accuracy of the int8 model minus that of its PyTorch float32 source: {changes}.
Speed on {d['run']['cpu']}, {d['threads']} threads: latency at batch 1, throughput at batch 256 (images/s).

{table}

![Test accuracy against parameters, multiply-adds, size and latency.](figures/compression_pareto.png)

*Test accuracy against parameters, multiply-adds, size on disk and latency (log scales); the bars are
±1.96 binomial standard errors of an accuracy on {d['n_test']:,} test images.*
"""


def render_int8_schemes(m: dict) -> str:
    """The 8-bit schemes compared on one processor, when benchmarks/int8_schemes.py has run."""
    if "int8_schemes" not in m:
        return ""
    r = m["int8_schemes"]
    rows = "\n".join(f"| {name} | {pct(row['val_accuracy'])} | {pct(row['agreement'])} |"
                     for name, row in r["schemes"].items())
    return f"""
Why uint8 weights: `python benchmarks/int8_schemes.py` quantised `{r['student']}` {len(r['schemes']) - 1} ways (the same
{r['calibration_images']:,} calibration images) and compared them on the {r['n_val']:,} validation images, on
{r['run']['cpu']}. The project ships U8U8 (uint8 weights) because on x86 processors without VNNI ONNX Runtime's
int8-weight kernels can saturate; run the benchmark on such a processor to see the difference there.

| scheme | validation accuracy | agrees with float32 |
|---|---:|---:|
{rows}
"""


def grid_evidence(m: dict) -> tuple[str, str]:
    """The evidence and the basis of the T and alpha row: `06`'s grid as recorded, and whether `04` runs
    what it chose (a mismatch is stated, not hidden)."""
    w, cfg = m.get("kd_sweep"), m["student_kd"]["run"]["config"]
    if w is None:
        return "—", "not tuned"
    evidence = (f"`06_kd_variants`' grid: {len(w['temperatures'])} x {len(w['alphas'])} settings, {w['epochs']} epochs "
                f"each, {w.get('teacher_mode', 'cached')} soft targets")
    basis = "validation" + (", at a short budget" if 2 * w["epochs"] < cfg["epochs"] else "")
    best = w["best"]
    if (best["temperature"], best["alpha"]) != (cfg["temperature"], cfg["alpha"]):
        basis += (f"; **the grid's best is T = {best['temperature']:g}, alpha = {best['alpha']:g}, "
                  f"not what `04` ran**")
    return evidence, basis


def scratch_evidence(m: dict) -> tuple[str, str]:
    """The scratch baseline's augmentation row: `06`'s runs from scratch, and whether `04`'s baseline used the
    best of them."""
    w, used = m.get("kd_sweep"), augmentation_words(m["student_scratch"]["run"]["augmentation"])
    scratch = (w or {}).get("scratch_val_accuracy")
    if not isinstance(scratch, dict):  # records from before 06 compared augmentations
        return used, "—"
    import kd_helpers as kd
    runs = ", ".join(f"{name} {pct(v)}" for name, v in scratch.items())
    best = max(scratch, key=scratch.get)
    basis = "validation" + ("" if augmentation_words(kd.AUGMENTATIONS[best]) == used else
                            f"; **`06`'s best is {best}, not what `04`'s baseline ran**")
    return f"{used} (`06`, validation after {w['epochs']} epochs: {runs})", basis


def kd_augmentation_evidence(m: dict) -> tuple[str, str, str]:
    """The distilled student's augmentation row (what it is, the evidence, the basis): with cached views, `04`'s
    seeds against the reference distillation from clean cached logits (flip), on validation, once the full
    profile has run both; with cached logits, the early pilot that chose the flip."""
    run = m["student_kd"]["run"]
    words = augmentation_words(run["augmentation"])
    if run.get("teacher_mode") != "views":
        return (words, "flip alone against flip and 2-pixel shifts, 25 epochs, validation (the experiments table)",
                "validation; dropping rotation and scaling first rested on a test accuracy (a small CNN, 20 epochs, "
                "2.6 points lower with all four), an early test-based choice")
    here = f"{words}, on cached views: the teacher's logits on exactly the view the student sees"
    s = seed_table(m)["summary"]
    if "kd_cached_val" not in s or s["kd_val"]["n"] < 2:  # one pair of runs settles nothing
        return here, "`04`'s seeds against clean cached logits with the flip: the full profile, not yet run", "—"
    views, cached = s["kd_val"], s["kd_cached_val"]
    evidence = (f"`04` over {views['n']} seeds, validation: views {pct(views['mean'])} ± {100 * views['std']:.2f}, "
                f"clean cached logits with the flip {pct(cached['mean'])} ± {100 * cached['std']:.2f}")
    basis = "validation" + ("" if views["mean"] >= cached["mean"] else
                            "; **cached logits with the flip scored higher, and `04` does not run them**")
    return here, evidence, basis


def render_deviations(m: dict) -> str:
    """How this project departs from the homework, each row with its evidence and how it was decided."""
    kd_, teacher = m["student_kd"]["run"], m["teacher_evaluation"]["teacher_meta"]
    cfg = kd_["config"]
    tcfg = teacher["config"]
    (grid, grid_basis), (scratch, scratch_basis) = grid_evidence(m), scratch_evidence(m)
    augmentation, augmentation_evidence, augmentation_basis = kd_augmentation_evidence(m)
    return f"""
## Deviations from the homework

The homework report states its student, its augmentation (flip, rotation, translation, scaling) and its
plateau scheduler; it does not state its optimiser, temperature, alpha, epochs or validation split.

| aspect | homework | here | evidence | decided on |
|---|---|---|---|---|
| teacher | ResNet50 handed out by the course | torchvision ResNet50, first convolution with stride 1, trained here {"from random weights" if not teacher.get("init_from") else "in fine-tuning stages, the last"} ({teacher['epochs']} epochs, SGD, one-cycle peak {tcfg['lr']:g}, augmentation: {augmentation_words(teacher['augmentation'])}) | `00_train_teacher`; teacher section below | the kept epoch: validation. {"The epochs, the peak learning rate, the identity start of the residual blocks and the gradient cap: CPU time and the training curves of earlier runs, which diverged at peaks of 0.1 and 0.05 (the experiments table). " if not teacher.get("init_from") else ""}{"Random erasing: the literature (Zhong et al.), not measured here. " if teacher['augmentation'].get("erase") else ""}The stride-1 stem: a test accuracy (a teacher with the default stem reached 92.25 % test), an early test-based choice kept since |
| student augmentation | flip, rotation, translation, scaling | {augmentation} | {augmentation_evidence} | {augmentation_basis} |
| optimiser | not stated | AdamW without weight decay (Adam), learning rate {cfg['lr']:g}, batch {cfg['batch_size']} | — | not tuned |
| scheduler | ReduceLROnPlateau on the validation loss | the same, factor {cfg['factor']:g}, patience {cfg['patience']} | — | not tuned |
| T and alpha | not stated | T = {cfg['temperature']:g}, alpha = {cfg['alpha']:g} | {grid} | {grid_basis} |
| augmentation of the student from scratch | not reported | {scratch} | the strongest baseline, so that distillation is not flattered | {scratch_basis} |
| epochs | not stated | {cfg['epochs']}, the epoch with the best validation accuracy kept | learning curves below | validation |
| split | not stated | 5,000 of the 60,000 training images held out (500 per class) for every choice; the 10,000 test images read once per shipped model | — | — |
"""


def render_reproduction(m: dict) -> str:
    """How to reproduce, with every notebook run's time from the last runs (one row per record), and the
    training time of each shipped model."""
    runtimes, cpus = m.get("runtimes", {}).get("seconds", {}), m.get("runtimes", {}).get("cpu", {})
    rows = "\n".join(f"| `{record}` | {seconds / 60:.1f} min | {cpus.get(record, 'not recorded')} |"
                     for record, seconds in runtimes.items())
    tmeta = m["teacher_evaluation"]["teacher_meta"]
    trained = [("teacher (`00`, its last fine-tuning stage)" if tmeta.get("init_from") else "teacher (`00`)", tmeta), ("KD student (`04`)", m["student_kd"]["run"]),
               ("scratch student (`04`)", m["student_scratch"]["run"])]
    if "student_improved" in m:
        trained.append(("improved student (`04b`)", m["student_improved"]["run"]))
    training = "\n".join(f"| {name} | {run['epochs'] if 'epochs' in run else run['config']['epochs']} | "
                         f"{run['train_seconds'] / 60:.0f} min |" for name, run in trained)
    return f"""
## Reproduction

```bash
make reproduce   # the headline: 01-05 and 04b, seed 0, with the shipped teacher
make test        # unit tests and a quick papermill run of every notebook
python reproduce.py --profile full   # adds 04 with seeds 1-4, 04b from scratch and 06's grid
make teacher     # the teacher (00): hours on a CPU, resumable; make status says where it stands
```

The time of each record's last run, on this project's 2-core CPU machines (a run that resumed finished
training checkpoints takes minutes). Their CPUs differ: the students train two to three times as fast on those marked
(VNNI), which have AVX-512, as on those with AVX2 only, so compare times within one CPU:

| record in `report/executed/` | time | CPU |
|---|---:|---|
{rows}

Training time of each shipped model (its checkpoint's record):

| model | epochs | training time |
|---|---:|---:|
{training}
"""


def render_report(report_dir: Path = ROOT / "report") -> str:
    """report.md from the metrics JSON files: every number in it is read from report/metrics/."""
    return render_report_from(load_metrics(report_dir))


def render_report_from(m: dict) -> str:
    """report.md from the metrics, keyed by file name (`load_metrics`)."""
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    design, data = m["student_design"], m["data"]
    tmeta = teacher["teacher_meta"]
    cfg, run = kd_["run"]["config"], kd_["run"]
    figure = lambda name, caption: f"![{caption}](figures/{name}.png)\n\n*{caption}*\n"  # noqa: E731
    dkd_reference = ("- B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang. Decoupled knowledge distillation. CVPR 2022.\n"
                     if m.get("kd_sweep", {}).get("dkd") else "")
    from torchinfo import summary
    import kd_helpers as kd
    torchinfo_table = str(summary(kd.StudentNet(), input_size=(1, 3, 28, 28), col_names=("output_size", "num_params"),
                                  verbose=0))
    return f"""# Knowledge distillation on Fashion-MNIST

*Generated by `python reproduce.py` from `report/metrics/*.json`; do not edit by hand.*

## Summary

{render_summary(m)}
The distilled student is {design['teacher_over_student']['parameters']:.0f}x smaller than the teacher
({design['models']['StudentNet']['size_kb']:.0f} KB against {design['models']['ResNet50 teacher']['size_kb'] / 1024:.1f} MB of float32 weights)
and needs {design['teacher_over_student']['mult_adds']:.1f}x fewer multiply-adds per image.

## Method

**Data.** Fashion-MNIST (Xiao et al., 2017): {data['pixel_statistics']['train']:,} training, {data['pixel_statistics']['val']:,} validation
(stratified, seed 0) and {data['pixel_statistics']['test']:,} test images. Pixels are scaled to [0, 1], replicated to 3 channels
and normalised with the training split's mean {data['pixel_statistics']['mean']:.4f} and std {data['pixel_statistics']['std']:.4f}.

{figure("samples_per_class", "Ten training images per class.")}
{figure("mean_image_per_class", "The mean training image of each class.")}
{figure("pixel_histogram", "Pixel intensities of the training split.")}
{figure("augmentation_examples", "Each augmentation of the homework, then all four (batched, on tensors).")}

**Teacher.** torchvision's ResNet50 with a 10-class head ({teacher['parameters']:,} parameters) and a first
convolution of stride 1 ({tmeta['stem']}), trained by `00_train_teacher`: {tmeta['epochs']} epochs
{"from random weights" if not tmeta.get("init_from") else f"from `{tmeta['init_from']}` (an earlier stage)"}, SGD with Nesterov
momentum, one-cycle learning rate peaking at {tmeta['config']['lr']:g}, weight decay {tmeta['config']['weight_decay']:g},
batch {tmeta['config']['batch_size']}, augmentation: {augmentation_words(tmeta['augmentation'])}; the epoch with the best
validation accuracy is kept (epoch {tmeta['best_epoch']}), stored in float16.
{render_teacher_training(m)}
**Student.** The homework's `StudentNet`: 3 conv + 2 FC layers, {run['parameters']:,} parameters,
{design['models']['StudentNet']['mult_adds'] / 1e6:.2f}M multiply-adds of its convolution and linear weights, as the homework
counts them. Its torchinfo summary matches the homework's Figure 1 row for row (layers, output shapes, parameters);
torchinfo's total of multiply-adds is larger because it also counts biases and batch norm:

```
{torchinfo_table}
```

**Loss** (Hinton, Vinyals and Dean, 2015), with student logits s, teacher logits t, labels y:

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with T = {cfg['temperature']:g} and alpha = {cfg['alpha']:g}; {run['teacher_mode']} soft targets of {which_teacher(run['teacher_sha256'], m)}.

**Optimisation.** AdamW without weight decay (that is, Adam), learning rate {cfg['lr']:g}, batch {cfg['batch_size']},
{cfg['epochs']} epochs; ReduceLROnPlateau on the validation loss with factor {cfg['factor']:g} and patience {cfg['patience']};
augmentation: {augmentation_words(run['augmentation'])}.

**Protocol.** Every model is selected on the validation split (best validation accuracy); the test set
is evaluated once per kept model, at the end. Seed {run['seed']} for the initial weights, shuffling, augmentation and
dropout of the shipped students; torch {run['torch']}, commit `{run['git_commit'][:10]}`.
{render_deviations(m)}
## Results

### Teacher

Test accuracy {pct(teacher['test_accuracy'])} (validation {pct(teacher['val_accuracy'])}), expected calibration error
{pct(teacher['ece'])}. Most confused: {"; ".join(f"{c['true']} → {c['predicted']} ({c['count']})" for c in teacher['most_confused'][:3])}.
{render_independent(m)}{render_teacher_on_training_images(teacher, m.get("teacher_evaluation_previous"))}
{figure("teacher_confusion_matrix", "Teacher: confusion matrix on the test set.")}
{figure("teacher_confused_examples", "Teacher: test images of its most confused pairs (true → predicted).")}
{figure("teacher_reliability", "Teacher: reliability diagram.")}
{figure("teacher_soft_targets", "Dark knowledge: the teacher's soft targets at T = 1, 2, 4, 8.")}

### Students

| | kept epoch | validation | test |
|---|---:|---:|---:|
| KD | {run['best_epoch']} | {pct(kd_['val_accuracy'])} | {pct(kd_['test_accuracy'])} |
| from scratch | {scratch['run']['best_epoch']} | {pct(scratch['val_accuracy'])} | {pct(scratch['test_accuracy'])} |

{figure("student_learning_curves", "Learning curves: loss, accuracy (training curves on augmented batches) and learning rate.")}
{figure("student_confusion_matrix", "Distilled student: confusion matrix on the test set.")}
{figure("per_class_accuracy_students_vs_teacher", "Per-class test accuracy: teacher and students.")}

| class | teacher | student KD | student scratch |
|---|---:|---:|---:|
""" + "\n".join(f"| {c} | {pct(teacher['per_class_accuracy'][c])} | {pct(kd_['per_class_accuracy'][c])} | "
               f"{pct(scratch['per_class_accuracy'][c])} |" for c in teacher['per_class_accuracy']) + f"""
{render_seeds(m)}{render_improved(m)}{render_sweep(m)}{render_deployment(m)}{render_int8_schemes(m)}{render_speed(m)}
## Experiments

One-off studies (what was tried to make distillation help, and what it showed) are kept apart from this
report, each as one row of question, command, result and verdict: [`experiments/README.md`](../experiments/README.md).
{render_reproduction(m)}
## References

- H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms. arXiv:1708.07747, 2017.
- G. Hinton, O. Vinyals, J. Dean. Distilling the knowledge in a neural network. arXiv:1503.02531, 2015.
- K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. CVPR 2016.
- Z. Zhong, L. Zheng, G. Kang, S. Li, Y. Yang. Random erasing data augmentation. AAAI 2020.
- C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On calibration of modern neural networks. ICML 2017.
- Z. Shen, E. Xing. A fast knowledge distillation framework for visual recognition. ECCV 2022.
- L. Beyer, X. Zhai, A. Royer, L. Markeeva, R. Anil, A. Kolesnikov. Knowledge distillation: a good teacher is patient and consistent. CVPR 2022.
{dkd_reference}"""


def render_html(markdown: str, report_dir: Path = ROOT / "report") -> str:
    """A self-contained HTML page of report.md: the figures inlined as base64 PNG, no external files."""
    import base64
    import re
    import mistune
    inline = lambda match: (f"](data:image/png;base64,"  # noqa: E731
                            f"{base64.b64encode((report_dir / 'figures' / match.group(1)).read_bytes()).decode()})")
    body = mistune.create_markdown(plugins=["table"])(re.sub(r"\]\(figures/([\w-]+\.png)\)", inline, markdown))
    style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
             "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
             "pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Knowledge distillation on Fashion-MNIST</title><style>{style}</style></head>\n"
            f"<body>\n{body}</body></html>\n")


README_START, README_END = "<!-- results: written by reproduce.py from report/metrics -->", "<!-- end of results -->"


TIMES_START = "<!-- times: written by reproduce.py -->"


def render_times(m: dict) -> str:
    """The README's table of how long the two commands take: as last timed on a fresh clone
    (`tools/time_fresh_clone.py`, report/metrics/fresh_clone_<target>.json); `make reproduce`, until it is
    timed so, as the sum of the headline notebooks' times in their last runs."""
    rows = ["| command | time | measured with |", "|---|---:|---|"]
    for target, what in (("test", "venv, pinned wheels, kernel, {tests_passed} tests"),
                         ("reproduce", "venv, pinned wheels, kernel, data, then 01-05 and 04b")):
        t = m.get(f"fresh_clone_{target}")
        if t is None:
            continue
        hardware = "with" if t["bfloat16_hardware"] else "without"
        rows.append(f"| `make {target}` on a fresh clone ({what.format(**t)}) | {t['minutes']:.1f} min | "
                    f"`{t['measured_with']}` on {t['date']}, commit `{t['commit'][:7]}`, {t['cpu']}, "
                    f"{hardware} bfloat16 hardware |")
    seconds = m.get("runtimes", {}).get("seconds", {})
    done = [r for r in MAIN if r in seconds]
    if "fresh_clone_reproduce" not in m and done:
        rows.append(f"| `make reproduce` ({len(done)} of its {len(MAIN)} notebooks timed) | "
                    f"{sum(seconds[r] for r in done) / 60:.0f} min | the sum of those notebooks' times in their last "
                    "runs, each on its own machine (the report's Reproduction section); not yet timed as one command "
                    "on a fresh clone |")
    return "\n".join(rows) + "\n"


def readme_with_results(readme: str, m: dict) -> str:
    """The README with its results block replaced by the current summary table, and its headline-time row
    by the sum of the last runs' notebook times."""
    for start, text in ((README_START, render_summary(m)), (TIMES_START, render_times(m))):
        head, rest = readme.split(start)
        _, tail = rest.split(README_END, 1)
        readme = f"{head}{start}\n{text}{README_END}{tail}"
    return readme


def write_report() -> None:
    report = render_report()
    (ROOT / "report" / "report.md").write_text(report)
    (ROOT / "report" / "report.html").write_text(render_html(report))
    readme = ROOT / "README.md"
    readme.write_text(readme_with_results(readme.read_text(), load_metrics()))
    print("report/report.md, report/report.html and the README's results written")


def record_runtime(record: str, seconds: float) -> None:
    """Keep each record's latest run time in report/metrics/runtimes.json, and only records that exist."""
    import kd_helpers as kd
    path = ROOT / "report" / "metrics" / "runtimes.json"
    runtimes = json.loads(path.read_text()) if path.exists() else {"seconds": {}}
    runtimes["seconds"][record] = round(seconds, 1)
    runtimes.setdefault("cpu", {})[record] = kd.cpu_name()
    kept = lambda r: r in RECORDS and (ROOT / "report" / "executed" / f"{r}.ipynb").exists()  # noqa: E731
    runtimes["seconds"] = {r: s for r, s in runtimes["seconds"].items() if kept(r)}
    runtimes["cpu"] = {r: c for r, c in runtimes["cpu"].items() if kept(r)}
    runtimes["run"] = kd.run_info()
    kd.write_json(runtimes, path)


def keep_previous_teacher_evaluation() -> None:
    """Before `02` evaluates a newly shipped teacher, keep the evaluation of the one before it as
    report/metrics/teacher_evaluation_previous.json: the report sets the two side by side."""
    import kd_helpers as kd
    metrics, checkpoint = ROOT / "report" / "metrics", ROOT / "checkpoints" / "teacher_resnet50.pt"
    last = metrics / "teacher_evaluation.json"
    if last.exists() and checkpoint.exists() and json.loads(last.read_text())["checkpoint_sha256"] != kd.sha256_of(checkpoint):
        shutil.copyfile(last, metrics / "teacher_evaluation_previous.json")


def evaluate_independently() -> None:
    """The shipped teacher and int8 students through tools/evaluate_independently.py (no kd_helpers), into
    report/metrics/independent_evaluation.json; stops with its message when a number differs from the record."""
    import subprocess
    models = [ROOT / "checkpoints" / "teacher_resnet50.pt", *sorted((ROOT / "checkpoints").glob("*_int8.onnx"))]
    print("[independent evaluation] " + ", ".join(p.name for p in models), flush=True)
    done = subprocess.run([sys.executable, "tools/evaluate_independently.py", *(str(p.relative_to(ROOT)) for p in models),
                           "--json", "report/metrics/independent_evaluation.json"], cwd=ROOT)
    if done.returncode:
        sys.exit("the independent evaluation disagrees with a recorded test accuracy (above); see its lines marked DIFFERS")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "main", "full"], default="main")
    parser.add_argument("--train-teacher", action="store_true", help="train the teacher (00) even if it is shipped")
    parser.add_argument("--only", nargs="+", choices=list(RECORDS), help="run just these records, in this order")
    parser.add_argument("--report-only", action="store_true",
                        help="run no notebook: rewrite report.md, report.html and the README's results from report/metrics")
    parser.add_argument("--status", action="store_true",
                        help="run nothing: print where each resumable run stands (epoch, best validation accuracy, time left)")
    args = parser.parse_args(argv)
    if args.status:
        import kd_helpers as kd
        where = kd.runs_dir()
        print("\n".join(kd.run_status(where)) or f"no runs in {where}")
        return 0
    if args.profile == "quick":
        out = ROOT / "report" / "quick"
        names = [n for n in (args.only or NOTEBOOKS) if n in NOTEBOOKS]
        steps, executed = [(n, n, quick_parameters(out)[n]) for n in names], out / "executed"
    else:
        names = [] if args.report_only else (args.only or [*TEACHER, *MAIN, *(EXTRA if args.profile == "full" else {})])
        steps, executed = full_steps(names, args.train_teacher), ROOT / "report" / "executed"
    for notebook, record, parameters in steps:
        print(f"[{args.profile}] {record} ...", flush=True)
        if record == "02_teacher_evaluation" and args.profile != "quick":
            keep_previous_teacher_evaluation()
        seconds = run_notebook(notebook, executed / f"{record}.ipynb", parameters)
        print(f"[{args.profile}] {record} done in {seconds / 60:.1f} min -> {executed / f'{record}.ipynb'}", flush=True)
        if args.profile != "quick":
            record_runtime(record, seconds)
    if args.profile != "quick" and steps and not args.only:
        evaluate_independently()
    if args.profile != "quick":
        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
