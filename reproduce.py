"""Run the notebooks in order with papermill: `python reproduce.py --profile quick|full`.

full:  the real results: executed notebooks in report/executed/, figures in report/figures/,
       numbers in report/metrics/, students in checkpoints/. The teacher is trained (00, from random
       weights, hours on a CPU, resumable) only when checkpoints/teacher_resnet50.pt is missing or
       --train-teacher is given; --status prints where the resumable runs stand.
quick: every notebook on small parameters (minutes), all outputs under report/quick/ (ignored by git).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ["00_train_teacher", "01_data_exploration", "02_teacher_evaluation", "03_student_design",
             "04_distillation", "04b_improved_student", "05_beyond_the_baseline", "06_kd_variants"]
KERNEL = "kd-fashion"


def quick_parameters(out: Path) -> dict[str, dict]:
    """Small settings that exercise every cell; all outputs go under `out`."""
    common = {"figures_dir": str(out / "figures"), "metrics_dir": str(out / "metrics")}
    return {
        "00_train_teacher": {"arch": "resnet50", "epochs": 1, "max_batches": 2, "progress": False,
                             "metrics_dir": str(out / "metrics"), "run_dir": str(out / "runs"),
                             "checkpoint": str(out / "checkpoints" / "teacher_resnet50.pt")},
        "01_data_exploration": common,
        "02_teacher_evaluation": {**common, "n_test": 500},
        "03_student_design": {"metrics_dir": str(out / "metrics")},
        "04_distillation": {**common, "epochs": 2, "n_train": 1000, "n_test": 500, "progress": False,
                            "checkpoint_dir": str(out / "checkpoints"), "run_dir": str(out / "runs")},
        "04b_improved_student": {**common, "epochs": 1, "n_train": 1000, "n_test": 500, "progress": False,
                                 "compile": False, "checkpoint_dir": str(out / "checkpoints"),
                                 "run_dir": str(out / "runs")},
        "05_beyond_the_baseline": {**common, "n_test": 500, "repeats": 3, "calibration_images": 200,
                                   "int8_dir": str(out / "checkpoints"), "run_dir": str(out / "runs")},
        "06_kd_variants": {**common, "temperatures": [4.0], "alphas": [0.5], "epochs": 1, "n_train": 512,
                           "run_dir": str(out / "runs")},
    }


def full_parameters() -> dict[str, dict]:
    return {name: {"progress": False} if name in ("00_train_teacher", "04_distillation", "04b_improved_student") else {} for name in NOTEBOOKS}


# 04 again with other seeds (initial weights, shuffling, augmentation, dropout; the split stays the
# teacher's), for mean and standard deviation. The shipped students are seed 0's, fixed before any run;
# the other seeds' students stay in runs/, their metrics go to report/metrics/seeds/.
STUDENT_SEEDS = (1, 2)
SEED_RUNS = {f"04_distillation_seed{s}": {
    "seed": s, "progress": False, "checkpoint_dir": f"runs/seed{s}/checkpoints", "figures_dir": f"runs/seed{s}/figures",
    "metrics_dir": f"report/metrics/seeds/seed{s}"} for s in STUDENT_SEEDS}

# 04 again per seed with soft targets from the teacher and the improved student together (04b's
# student, so these run after 04b): does a better source of soft targets make KD win? KD students
# only, compared with the same seed's scratch student; students stay in runs/, their metrics go to
# report/metrics/ensemble/.
ENSEMBLE_SEEDS = (0, 1, 2)
ENSEMBLE_RUNS = {f"04_distillation_ensemble_seed{s}": {
    "seed": s, "students": ["kd"], "extra_teachers": ["checkpoints/student_improved.pt"], "progress": False,
    "checkpoint_dir": f"runs/ensemble_seed{s}/checkpoints", "figures_dir": f"runs/ensemble_seed{s}/figures",
    "metrics_dir": f"report/metrics/ensemble/seed{s}"} for s in ENSEMBLE_SEEDS}
VARIANT_RUNS = {**SEED_RUNS, **ENSEMBLE_RUNS}  # record name -> 04's parameters
FULL_ORDER = [n for name in NOTEBOOKS for n in (
    [name, *SEED_RUNS] if name == "04_distillation" else
    [name, *ENSEMBLE_RUNS] if name == "04b_improved_student" else [name])]


def full_steps(names: list[str], train_teacher: bool) -> list[tuple[str, str, dict]]:
    """(notebook, record name, parameters) for a full run of `names`. The teacher (00) runs when asked
    or when its checkpoint is missing."""
    steps = []
    for name in names:
        if name in VARIANT_RUNS:
            steps.append(("04_distillation", name, VARIANT_RUNS[name]))
            continue
        if name == "00_train_teacher" and not (train_teacher or not (ROOT / "checkpoints" / "teacher_resnet50.pt").exists()):
            continue
        steps.append((name, name, full_parameters()[name]))
    return steps


def run_notebook(name: str, output: Path, parameters: dict, cwd: Path | None = None) -> float:
    """Execute notebooks/<name>.ipynb into `output` with papermill; returns the seconds it took."""
    import papermill
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(output), parameters=parameters,
                               kernel_name=KERNEL, cwd=str(cwd or ROOT), progress_bar=False)
    return time.time() - start


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def load_metrics(report_dir: Path = ROOT / "report") -> dict:
    import json
    m = {p.stem: json.loads(p.read_text()) for p in sorted((report_dir / "metrics").glob("*.json"))}
    pilots = {p.stem: json.loads(p.read_text()) for p in sorted((report_dir / "metrics" / "pilots").glob("*.json"))}
    if pilots:  # one-off runs kept as a record, each named by its file
        m["pilots"] = pilots
    for group in ("seeds", "ensemble"):  # 04's seed runs and ensemble runs, by seed
        runs = {int(d.name.removeprefix("seed")): {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}
                for d in sorted((report_dir / "metrics" / group).glob("seed*"))}
        if runs:
            m[group] = runs
    return m


def render_summary(m: dict) -> str:
    """The headline table, shared by report.md and the README."""
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    int8 = m.get("deployment", {}).get("models", {}).get("student kd, ONNX int8")
    int8_row = (f"| StudentNet, distilled, int8 ONNX ({int8['bytes'] / 1024:.0f} KB) | {int8['parameters']:,} | "
                f"{pct(int8['test_accuracy'])} | — |\n") if int8 else ""
    better = m.get("student_improved")
    better_row = (f"| GapStudentNet, distilled (`04b`, a better student) | {better['run']['parameters']:,} | "
                  f"{pct(better['test_accuracy'])} | {pct(better['val_accuracy'])} |\n") if better else ""
    return f"""| model | parameters | test accuracy | validation accuracy |
|---|---:|---:|---:|
| ResNet50 teacher | {teacher['parameters']:,} | {pct(teacher['test_accuracy'])} | {pct(teacher['val_accuracy'])} |
| StudentNet, distilled (KD) | {kd_['run']['parameters']:,} | {pct(kd_['test_accuracy'])} | {pct(kd_['val_accuracy'])} |
| StudentNet, from scratch | {scratch['run']['parameters']:,} | {pct(scratch['test_accuracy'])} | {pct(scratch['val_accuracy'])} |
{int8_row}{better_row}| homework report (KD), for reference | 95,386 | 93.93 % | — |
""" + ("" if kd_["run"]["teacher_sha256"] == teacher["checkpoint_sha256"] else
       f"\nThe distilled student learnt from {which_teacher(kd_['run']['teacher_sha256'], m)}: `04` has not "
       f"run since the teacher changed.\n")


README_START, README_END = "<!-- results: written by reproduce.py from report/metrics -->", "<!-- end of results -->"


BENCHMARK_START = "<!-- benchmark: written by reproduce.py from report/metrics/benchmark.json -->"


def readme_with_results(readme: str, m: dict) -> str:
    """The README with its results block replaced by the current summary table, and its benchmark
    block (where it has one and the benchmark has run) by the benchmark's tables."""
    blocks = [(README_START, render_summary(m))]
    if "benchmark" in m and BENCHMARK_START in readme:
        blocks.append((BENCHMARK_START, render_benchmark(m["benchmark"]) + render_default_choice(m)))
    for start, text in blocks:
        head, rest = readme.split(start)
        _, tail = rest.split(README_END, 1)
        readme = f"{head}{start}\n{text}{README_END}{tail}"
    return readme


def render_cached_vs_online(m: dict) -> str:
    """The section on cached against online teacher logits, when benchmarks/cached_vs_online.py has run."""
    if "cached_vs_online" not in m:
        return ""
    c = m["cached_vs_online"]
    by_epoch = lambda mode: ", ".join(pct(a) for a in c[mode]["val_accuracy"])  # noqa: E731
    return f"""
### Cached or online teacher logits

A short KD run each (`{c['command']}`): the first {c['n_train']:,} training images, {c['epochs']} epochs, seed 0,
T = {c['temperature']}, alpha = {c['alpha']}, the same augmentation; only the source of the soft targets differs.
Validation accuracy by epoch (the test set is not used):

| teacher logits | validation accuracy by epoch | best | time |
|---|---|---:|---:|
| cached (once per image and mirror image) | {by_epoch('cached')} | {pct(c['cached']['best_val_accuracy'])} | {c['cached']['seconds']:.0f} s |
| online (every augmented batch) | {by_epoch('online')} | {pct(c['online']['best_val_accuracy'])} | {c['online']['seconds']:.0f} s |

Cached minus online: {c['cached_minus_online_points']:+.2f} points of best validation accuracy.
"""


def which_teacher(sha256: str, m: dict) -> str:
    """'the shipped teacher', or a bold warning when a run distilled another one (a run from before a new teacher)."""
    shipped = m["teacher_evaluation"]["checkpoint_sha256"]
    return ("the shipped teacher" if sha256 == shipped else
            f"**an earlier teacher** (SHA-256 `{sha256[:12]}`, not the shipped `{shipped[:12]}`)")


def seed_table(m: dict) -> dict:
    """Test and validation accuracy of the KD and scratch students by seed (seed 0: the shipped ones), only
    for seeds whose KD student learnt from the shipped teacher with the shipped students' settings (apart
    from the seed); with the mean and sample std of each column."""
    shipped = m["teacher_evaluation"]["checkpoint_sha256"]
    settings = lambda r: {k: v for k, v in r["run"].get("config", {}).items() if k != "seed"}  # noqa: E731
    rows = {seed: {f"{name.removeprefix('student_')}_{split}": r[name][f"{split}_accuracy"]
                   for name in ("student_kd", "student_scratch") for split in ("val", "test")}
            for seed, r in sorted(students_by_seed(m).items()) if r["student_kd"]["run"]["teacher_sha256"] == shipped
            and all(settings(r[n]) == settings(m[n]) for n in ("student_kd", "student_scratch"))}
    for row in rows.values():
        row["kd_minus_scratch_test"] = row["kd_test"] - row["scratch_test"]
    return {"rows": rows, **mean_and_std(list(rows.values()))}


def students_by_seed(m: dict) -> dict:
    """04's KD and scratch students by seed: seed 0's shipped ones and the seed runs' (report/metrics/seeds/)."""
    return {m["student_kd"]["run"]["seed"]: {"student_kd": m["student_kd"], "student_scratch": m["student_scratch"]},
            **m.get("seeds", {})}


def mean_and_std(rows: list[dict]) -> dict:
    """Mean and sample standard deviation (0 for one row) of each column of rows with the same columns."""
    columns = list(rows[0]) if rows else []
    return {"mean": {c: statistics.mean(r[c] for r in rows) for c in columns},
            "std": {c: statistics.stdev(r[c] for r in rows) if len(rows) > 1 else 0.0 for c in columns}}


def mean_std_cells(t: dict, columns, points: str) -> str:
    """Table cells of a mean_and_std table: 'mean ± std' of each accuracy column, then of the `points` column."""
    return " | ".join([*(f"{pct(t['mean'][c])} ± {100 * t['std'][c]:.2f}" for c in columns),
                       f"{100 * t['mean'][points]:+.2f} ± {100 * t['std'][points]:.2f}"])


def render_seeds(m: dict) -> str:
    """KD against scratch over several seeds, when 04's seed runs have run (report/metrics/seeds/)."""
    t = seed_table(m)
    if len(t["rows"]) < 2:
        return ""
    cols = ("kd_val", "kd_test", "scratch_val", "scratch_test")
    rows = "\n".join(f"| {seed}{' (shipped)' if seed == m['student_kd']['run']['seed'] else ''} | "
                     + " | ".join(pct(r[c]) for c in cols) + f" | {100 * r['kd_minus_scratch_test']:+.2f} |"
                     for seed, r in t["rows"].items())
    return f"""
**Seeds.** `04` with {len(t['rows'])} seeds (initial weights, shuffling, augmentation and dropout; the same split and
teacher), each student kept on validation; the shipped students are seed 0's, fixed before any run:

| seed | KD validation | KD test | scratch validation | scratch test | KD − scratch (test, points) |
|---|---:|---:|---:|---:|---:|
{rows}
| mean ± std | {mean_std_cells(t, cols, 'kd_minus_scratch_test')} |
"""


def render_headroom(m: dict) -> str:
    """What the teacher knows that the students do not, when benchmarks/teacher_headroom.py has run."""
    if "teacher_headroom" not in m:
        return ""
    h = m["teacher_headroom"]
    rows = "\n".join(f"| {name} | {pct(s['val_accuracy'])} | {s['teacher_only']} | {s['student_only']} | {s['both_wrong']} |"
                     for name, s in h["students"].items())
    return f"""
**What the teacher can teach.** `python benchmarks/teacher_headroom.py`, on the {h['n_val']:,} validation images
({which_teacher(h['teacher_sha256'], m)}: {pct(h['teacher_val_accuracy'])}): images only the teacher gets right, only the
student, and neither. On the first {h['n_train_checked']:,} training images the teacher's top class is the label for
{pct(h['teacher_train_agreement'])} of them, and it gives the label {pct(h['teacher_train_label_probability'])} of its
probability on average (T = 1).

| student | validation | teacher only | student only | both wrong |
|---|---:|---:|---:|---:|
{rows}
"""


def render_stronger_teacher(m: dict) -> str:
    """The fifth teacher stage piloted in session 9 and the student distilled from it, when their records are in
    report/metrics/pilots/ (teacher_stage5.json: 00's metrics; kd_from_teacher_stage5.json: the pilot benchmark's)."""
    pilots = m.get("pilots", {})
    if not {"teacher_stage5", "kd_from_teacher_stage5"} <= set(pilots):
        return ""
    t, run = pilots["teacher_stage5"], pilots["teacher_stage5"]["run"]
    student = pilots["kd_from_teacher_stage5"]
    (name, v), = student["variants"].items()
    same = "the fifth stage" if student["teacher_sha256"] == t["checkpoint_sha256"] else "**another teacher**"
    return f"""
**A stronger teacher?** `bash benchmarks/stronger_teacher_pilot.sh` (judged on validation; nothing shipped): a fifth stage of
`00`, started from the shipped teacher, with {augmentation_words(run['augmentation'])} as its augmentation (the shipped
teacher's: {augmentation_words(m['teacher_evaluation']['teacher_meta']['augmentation'])}), {run['config'].get('precision', 'float32')} training, {run['epochs']} epochs at peak learning rate
{run['config']['lr']:g} ({run['train_seconds'] / 60:.0f} min): best validation {pct(t['val_accuracy'])} at epoch
{run['best_epoch']} (the shipped teacher: {pct(m['teacher_evaluation']['teacher_meta']['val_accuracy'])}; test, evaluated
once by `00`: {pct(t['test_accuracy'])}); in its last epoch it got {pct(t['history'][-1]['train_accuracy'])} of its augmented
training images right, so its soft targets on them are nearly the labels. The homework's student distilled from {same} with `04`'s recipe ({v['config']['epochs']}
epochs, seed 0): best validation {pct(v['best_val_accuracy'])} at epoch {v['best_epoch']}, against
{pct(m['student_kd']['val_accuracy'])} from the shipped teacher in `04`.
"""


def augmentation_words(a: dict) -> str:
    """'flip + shifts up to 0.07 + random erasing (p 0.5)': a run's recorded flip, shifts and erasing, in words."""
    parts = (["flip"] if a.get("flip") else []) + ([f"shifts up to {a['translate']:g}"] if a.get("translate") else []) \
        + ([f"random erasing (p {a['erase']:g})"] if a.get("erase") else [])
    return " + ".join(parts) or "none"


def render_augmentation_pilot(m: dict) -> str:
    """The pilot's augmentations, schedules and soft-target settings, when benchmarks/augmentation_pilot.py has run."""
    if "augmentation_pilot" not in m:
        return ""
    r = m["augmentation_pilot"]
    def describe(c):
        return (f"{augmentation_words(c['augmentation'])}, batch {c['batch_size']}"
                + (f", weight average (EMA {c['ema']:g})" if c.get("ema") else ""))

    def steps(c):
        return f"{c['epochs']}, " + ("one-cycle" if c.get("schedule") == "one_cycle" else f"patience {c['patience']}")

    def best(v):
        trained = v.get("best_val_accuracy_trained_weights")
        return (f"{pct(v['best_val_accuracy'])} (epoch {v['best_epoch']}"
                + ("" if trained is None else f"; the trained weights without averaging: {pct(trained)}") + ")")
    rows = "\n".join(f"| {name}{' (`GapStudentNet`)' if v.get('arch') == 'student_gap' else ''} | {describe(v['config'])} | "
                     f"{v['config']['temperature']:g}, {v['config']['alpha']:g} | {steps(v['config'])} | {best(v)} | "
                     f"{pct(v['last_train_accuracy_augmented'])} | {pct(v['train_accuracy_eval_mode'])} |"
                     for name, v in r["variants"].items())
    kd_run = m["student_kd"]["run"]
    improved = (f"; `04b`'s shipped improved student: validation {pct(m['student_improved']['val_accuracy'])}"
                if "student_improved" in m and any(v.get("arch") == "student_gap" for v in r["variants"].values()) else "")
    return f"""
**Augmentation and steps.** `python benchmarks/augmentation_pilot.py`: the KD student of `04` with and without random
shifts, with batch 64, with a longer schedule, with random erasing, at `04`'s T and alpha and at T = 4, alpha = 0.9, and
with an exponential moving average of its weights (`kd.WeightAverage`, the epoch chosen by the average's validation
accuracy), which one variant also gives `04b`'s improved student, trained with `04b`'s recipe
({which_teacher(r['teacher_sha256'], m)}, seed 0, validation only). The
last two columns show how well it fits: the last epoch's training accuracy on augmented images with dropout on, and the
kept weights' accuracy on {r['n_fit_check']:,} training images in eval mode.
The shipped students of `04` trained with: {augmentation_words(kd_run['augmentation'])}, batch {kd_run['config']['batch_size']},
{kd_run['config']['epochs']} epochs, patience {kd_run['config']['patience']} (the KD student: validation {pct(m['student_kd']['val_accuracy'])}){improved}.

| variant | augmentation | T, alpha | epochs | best validation | last epoch, training (augmented) | training images, eval mode |
|---|---|---|---|---:|---:|---:|
{rows}
"""


def render_teacher_ensemble(m: dict) -> str:
    """The shipped models' averaged predictions against the teacher alone, when benchmarks/teacher_ensemble.py has run."""
    if "teacher_ensemble" not in m:
        return ""
    r = m["teacher_ensemble"]
    ranked = sorted(r["val_accuracy"].items(), key=lambda kv: -kv[1])
    singles, averages = [kv for kv in ranked if " + " not in kv[0]], [kv for kv in ranked if " + " in kv[0]]
    is_teacher = lambda name: r["arch"][name].startswith("resnet")  # noqa: E731
    teachers_only = [kv for kv in averages if all(is_teacher(n) for n in kv[0].split(" + "))][:1]
    shown = sorted(set(singles + averages[:3] + teachers_only), key=lambda kv: -kv[1])
    rows = "\n".join(f"| {combo} | {pct(acc)} | {pct(r['train_label_probability'][combo])} |" for combo, acc in shown)
    return f"""
**A better soft-target source?** `python benchmarks/teacher_ensemble.py` averages the softmax outputs of every
combination of {len(r['models'])} shipped models on the {r['n_val']:,} validation images ({len(r['val_accuracy'])} combinations;
below: each model alone, the best three averages and the best average of teachers only). The last column is the
average's mean probability on the label of the first {r['n_train_checked']:,} training images, which every model has
seen: what a student distilled from it would learn from.

| models averaged | validation | probability on the label, training images |
|---|---:|---:|
{rows}
"""


def ensemble_kd_table(m: dict) -> dict:
    """Per seed of 04's ensemble runs: the ensemble KD student's validation and test accuracy, next to
    the same seed's students distilled from the teacher alone and from scratch, where those were
    trained with the same settings; with the mean and sample std of each column over complete rows."""
    baseline, rows = students_by_seed(m), {}
    for seed, r in sorted(m.get("ensemble", {}).items()):
        e, b = r["student_kd"], baseline.get(seed, {})
        row = {"soft_val": e["soft_targets"]["val_accuracy"], "soft_test": e["soft_targets"]["test_accuracy"],
               "ensemble_val": e["val_accuracy"], "ensemble_test": e["test_accuracy"]}
        if "student_kd" in b and b["student_kd"]["run"]["config"] == e["run"]["config"]:
            row.update(teacher_test=b["student_kd"]["test_accuracy"], scratch_test=b["student_scratch"]["test_accuracy"])
            row["ensemble_minus_scratch_test"] = row["ensemble_test"] - row["scratch_test"]
        rows[seed] = row
    complete = [r for r in rows.values() if "scratch_test" in r]
    return {"rows": rows, **mean_and_std(complete), "n_complete": len(complete)}


def render_ensemble_kd(m: dict) -> str:
    """Distilling StudentNet from the teacher + improved student ensemble, when 04's ensemble runs have run."""
    if not m.get("ensemble"):
        return ""
    t = ensemble_kd_table(m)
    members = next(iter(m["ensemble"].values()))["student_kd"]["soft_targets"]["members"]
    cols = ("ensemble_val", "ensemble_test", "teacher_test", "scratch_test")
    cell = lambda r, c: pct(r[c]) if c in r else "—"  # noqa: E731
    rows = "\n".join(f"| {seed} | {pct(r['soft_val'])} / {pct(r['soft_test'])} | " + " | ".join(cell(r, c) for c in cols)
                     + (f" | {100 * r['ensemble_minus_scratch_test']:+.2f} |" if "scratch_test" in r else " | — |")
                     for seed, r in t["rows"].items())
    mean = (f"| mean ± std | | {mean_std_cells(t, cols, 'ensemble_minus_scratch_test')} |\n"
            if t["n_complete"] > 1 else "")
    return f"""
**Distilling from the ensemble.** `04` with `extra_teachers` (`reproduce.py`'s `04_distillation_ensemble_seed*`): the
soft targets are the mean of the softmax outputs of {' and '.join(f'`{p}`' for p in members)}; everything else as in
`04`, KD student only, each kept on validation. Beside it, the same seed's students of `04` (distilled from the teacher
alone, and from scratch) where they were trained with the same settings:

| seed | soft targets: validation / test | KD from the ensemble: validation | KD from the ensemble: test | KD from the teacher: test | scratch: test | ensemble KD − scratch (test, points) |
|---|---:|---:|---:|---:|---:|---:|
{rows}
{mean}
{ensemble_notes(m, members)}
"""


def ensemble_notes(m: dict, members: list[str]) -> str:
    """Under the ensemble table: how sure of the labels of training images the ensemble is against the
    teacher alone (from benchmarks/teacher_ensemble.py, whose combinations name the models), and a bold
    warning for ensemble runs whose members were not the shipped checkpoints."""
    notes, r = [], m.get("teacher_ensemble")
    if r:
        def label_probability(paths):
            names = {name for name, path in r["models"].items() if path in paths}
            return next((p for c, p in r["train_label_probability"].items() if set(c.split(" + ")) == names), None)
        both, alone = label_probability(members), label_probability(members[:1])
        if both is not None and alone is not None:
            notes.append(f"On the first {r['n_train_checked']:,} training images, which both have seen, the ensemble gives "
                         f"the label {pct(both)} of its probability on average, the teacher alone {pct(alone)} "
                         f"(`benchmarks/teacher_ensemble.py`).")
    shipped = {"checkpoints/teacher_resnet50.pt": m["teacher_evaluation"]["checkpoint_sha256"],
               "checkpoints/student_improved.pt": m.get("student_improved", {}).get("checkpoint_sha256")}
    current = "+".join(str(shipped.get(p)) for p in members)
    stale = [str(seed) for seed, run in m["ensemble"].items() if run["student_kd"]["run"]["teacher_sha256"] != current]
    if stale:
        notes.append(f"**Seed {', '.join(stale)} learnt from other versions of these checkpoints than the shipped ones** "
                     "(their `teacher_sha256` differs); run them again.")
    return "\n\n".join(notes)


def render_out_of_fold(m: dict) -> str:
    """KD from out-of-fold predictions, when benchmarks/out_of_fold_targets.py has run (validation only)."""
    if "out_of_fold_targets" not in m:
        return ""
    r = m["out_of_fold_targets"]
    f, c = r["fold_config"], r["student_config"]
    shares = "\n".join(f"| {name} | {pct(v['accuracy'])} | {pct(v['label_probability'])} |"
                       for name, v in r["train_images"].items())
    students = "\n".join(f"| {name} | {pct(v['best_val_accuracy'])} (epoch {v['best_epoch']}) |"
                         for name, v in r["students"].items())
    kd_run = m["student_kd"]
    reference = (f"| the teacher alone (`04`'s shipped KD student, the same settings) | {pct(kd_run['val_accuracy'])} |"
                 if kd_run["run"]["config"] == c and kd_run["run"]["teacher_sha256"] == r["teacher_sha256"] else "")
    return f"""
**Soft targets from models that have not seen the image.** `python benchmarks/out_of_fold_targets.py` splits the
{r['n_train']:,} training images into {r['folds']} stratified folds; for each fold a `GapStudentNet` ({f['epochs']} epochs of
`04b`'s recipe, distilled from {which_teacher(r['teacher_sha256'], m)}) trained on the other folds predicts the held-out
images (fold models' best validation accuracy: {', '.join(pct(a) for a in r['fold_val_accuracy'])}). On the training
images the soft-target sources compare as follows (unmirrored images; the teacher has seen them all):

| source | accuracy on training images | mean probability on the label |
|---|---:|---:|
{shares}

The homework's student distilled from each, as in `04` (T = {c['temperature']:g}, alpha = {c['alpha']:g}, {c['epochs']} epochs,
seed {c['seed']}), kept on validation; the test set is not used:

| soft targets | best validation accuracy |
|---|---:|
{students}
{reference}
"""


def render_improved(m: dict) -> str:
    """The better student under 100,000 parameters, when 04b_improved_student has run."""
    if "student_improved" not in m:
        return ""
    s, run = m["student_improved"], m["student_improved"]["run"]
    cfg = run["config"]
    figure = "![Learning curves of the improved student.](figures/improved_student_learning_curves.png)"
    return f"""
### A better student under 100,000 parameters

`04b_improved_student`: `{run['arch']}`, {run['parameters']:,} parameters and {run['mult_adds'] / 1e6:.2f}M multiply-adds
(convolutions at 28×28, 14×14 and depthwise-separable ones at 7×7, global average pooling, one linear layer),
distilled from {which_teacher(run['teacher_sha256'], m)} with T = {cfg['temperature']:g}, alpha = {cfg['alpha']:g}
({run['teacher_mode']} logits); {cfg['optimizer']}, one-cycle learning rate peaking at {cfg['lr']:g}, weight decay
{cfg['weight_decay']:g}, {cfg['epochs']} epochs, {run['train_seconds'] / 60:.0f} min; kept epoch {run['best_epoch']}:
validation {pct(s['val_accuracy'])}, test {pct(s['test_accuracy'])} (homework's student with KD: {pct(m['student_kd']['test_accuracy'])}).

{figure}
"""


def render_sweep(m: dict) -> str:
    """The temperature x alpha grid and DKD, when 06_kd_variants has run (validation accuracy only)."""
    if "kd_sweep" not in m:
        return ""
    w = m["kd_sweep"]
    figure = "![Validation accuracy of KD over temperature and alpha.](figures/kd_temperature_alpha_sweep.png)"
    teacher = which_teacher(w["teacher_sha256"], m)
    augmented = augmentation_words({"flip": True, **w["augmentation"]})
    return f"""
### Temperature × alpha, and decoupled KD (validation, short budget)

`06_kd_variants` trains the homework's student for {w['epochs']} epochs per setting (same seed, cached logits of
{teacher}, {w['n_train']:,} training images, {augmented}) and reports the best validation accuracy; the test set is not used.

| run | validation accuracy |
|---|---:|
| from scratch | {pct(w['scratch_val_accuracy'])} |
| best classic KD: T = {w['best']['temperature']:g}, alpha = {w['best']['alpha']:g} | {pct(w['best']['val_accuracy'])} |
| DKD (Zhao et al., 2022): T = {w['dkd']['temperature']:g}, alpha = {w['dkd']['alpha']:g}, beta = {w['dkd']['beta']:g} | {pct(w['dkd']['val_accuracy'])} |

{figure}

*Validation accuracy (%) of classic KD after {w['epochs']} epochs, by temperature (rows) and alpha (columns).*
"""


def render_benchmark(b: dict) -> str:
    """The benchmark's tables (report/metrics/benchmark.json), for the report and the README."""
    speeds = b["training_images_per_s"]
    base = next(iter(speeds.values()))
    rows = "\n".join(f"| {name} | {v:,.0f} | {v / base:.1f}x |" for name, v in speeds.items())
    inference = "\n".join(f"| {name} | {r['latency_ms']:.2f} ms | {r['images_per_s']:,.0f} |" for name, r in b["inference"].items())
    augmented = augmentation_words(b["augmentation"])
    return f"""`{b['command']}` on {b['date']} ({b['threads']} threads, teacher `{b['teacher_arch']}`, project loop
{'compiled' if b['compiled'] else 'eager'}, augmentation: {augmented}), images/s of distillation training:

| pipeline | images/s | vs (a) |
|---|---:|---:|
{rows}

| inference (PyTorch float32) | latency, batch 1 | throughput, batch 256 (images/s) |
|---|---:|---:|
{inference}
"""


def render_default_choice(m: dict) -> str:
    """Cached or online logits as 04's default, from the measurement of benchmarks/cached_vs_online.py:
    cached stays the default unless it costs more than 0.3 point of validation accuracy."""
    if "cached_vs_online" not in m:
        return ""
    c = m["cached_vs_online"]
    verdict = ("so `04` keeps cached logits as its default" if c["cached_minus_online_points"] >= -0.3 else
               "more than 0.3 point: consider `teacher_mode = \"online\"` in `04`")
    return (f"\nCached against online teacher logits (`{c['command']}`, {c['epochs']} epochs on {c['n_train']:,} images, "
            f"same seed): best validation accuracy {pct(c['cached']['best_val_accuracy'])} against "
            f"{pct(c['online']['best_val_accuracy'])}, {c['cached_minus_online_points']:+.2f} points, {verdict}.\n")


def render_speed(m: dict) -> str:
    """The throughput benchmark, and the KD student's epoch times in 04 set against it."""
    if "benchmark" not in m:
        return ""
    b, kd_ = m["benchmark"], m["student_kd"]
    speeds = b["training_images_per_s"]
    seconds = sorted(h["seconds"] for h in kd_["history"])
    median = seconds[len(seconds) // 2]
    threads = (f"{kd_['run']['threads']} threads" if "threads" in kd_["run"] else
               "threads not recorded; the shipped run may have shared the processor with another")
    return f"""
### Speed

{render_benchmark(b)}
The distilled student's epochs in `04` took {median:.0f} s (median of {len(seconds)}), i.e.
{kd_['run']['n_train'] / median:,.0f} training images/s including each epoch's validation pass ({threads}), against (c)'s
{speeds[list(speeds)[-1]]:,.0f} images/s in the benchmark ({b['threads']} threads).
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
    figure = "![Test accuracy against parameters, multiply-adds, size and latency.](figures/compression_pareto.png)"
    return f"""
### Deployment: int8 ONNX and the compression table

`05_beyond_the_baseline` exports the students to ONNX and quantises them to int8 with ONNX Runtime's
static quantisation ({scheme['format']}, weights {scheme['weights']}, activations {scheme['activations']} calibrated on {d['calibration_images']:,}
training images). Test accuracy of the int8 model minus that of its PyTorch float32 source: {changes}.
Speed on {d['run']['cpu']}, {d['threads']} threads: latency at batch 1, throughput at batch 256 (images/s).

{table}

{figure}

*Test accuracy against parameters, multiply-adds, size on disk and latency (log scales).*
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


def teacher_stages(m: dict) -> list[dict]:
    """The teacher's training runs, first first: the shipped teacher's record (02's), preceded by the
    records of earlier stages it was fine-tuned from, where report/metrics/ still holds them."""
    evaluated = m["teacher_evaluation"]
    earlier = [m[name]["run"] for name in ("teacher_training_default_stem", "teacher_training_stage2",
                                           "teacher_training_stage3") if name in m and evaluated["teacher_meta"].get("init_from")]
    return earlier + [evaluated["teacher_meta"]]


def render_teacher_stages(stages: list[dict]) -> str:
    """A numbered list, one item per training stage of the teacher."""
    def item(i, run):
        start = "from random weights" if run.get("init_from") is None else f"from `{run['init_from']}`"
        return (f"{i}. `{run['arch']}` ({run['stem']}), {run['epochs']} epochs {start}, peak learning rate "
                f"{run['config']['lr']}, {run['train_seconds'] / 60:.0f} min (kept epoch {run['best_epoch']}): "
                f"validation {pct(run['val_accuracy'])}, test {pct(run['test_accuracy'])}")
    return ";\n".join(item(i, run) for i, run in enumerate(stages, 1)) + ".\n"


def render_report(report_dir: Path = ROOT / "report") -> str:
    """report.md from the metrics JSON files: every number in it is read from report/metrics/."""
    return render_report_from(load_metrics(report_dir))


def render_report_from(m: dict) -> str:
    """report.md from the metrics, keyed by file name (`load_metrics`)."""
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    design, data, runtimes = m["student_design"], m["data"], m.get("runtimes", {})
    cfg = kd_["run"]["config"]
    aug = kd_["run"]["augmentation"]
    tmeta, stages = teacher["teacher_meta"], teacher_stages(m)
    figure = lambda name, caption: f"![{caption}](figures/{name}.png)\n\n*{caption}*\n"
    dkd_reference = ("- B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang. Decoupled knowledge distillation. CVPR 2022.\n"
                     if "kd_sweep" in m else "")
    times = "\n".join(f"| run of notebook `{name}` | {seconds / 60:.1f} min |"
                      for name, seconds in runtimes.get("seconds", {}).items())
    times = "".join(f"| training the teacher, stage {i}, {run['epochs']} epochs (`00`) | {run['train_seconds'] / 60:.0f} min |\n"
                    for i, run in enumerate(stages, 1))
    times += (f"| training the KD student, {cfg['epochs']} epochs (`04`) | {kd_['run']['train_seconds'] / 60:.0f} min |\n"
             f"| training the scratch student, {scratch['run']['config']['epochs']} epochs (`04`) | "
             f"{scratch['run']['train_seconds'] / 60:.0f} min |\n{times}")
    seeds = seed_table(m)
    seeds_note = (f"seed {kd_['run']['seed']}; over {len(seeds['rows'])} seeds {100 * seeds['mean']['kd_minus_scratch_test']:+.2f} "
                  f"± {100 * seeds['std']['kd_minus_scratch_test']:.2f}, table under Students"
                  if len(seeds["rows"]) > 1 else "one seed each")
    from torchinfo import summary
    import kd_helpers as kd
    torchinfo_table = str(summary(kd.StudentNet(), input_size=(1, 3, 28, 28), col_names=("output_size", "num_params"),
                                  verbose=0))
    lines = f"""# Knowledge distillation on Fashion-MNIST

*Generated by `python reproduce.py --profile full` from `report/metrics/*.json`; do not edit by hand.*

## Summary

{render_summary(m)}
The distilled student is {design['teacher_over_student']['parameters']:.0f}x smaller than the teacher
({design['models']['StudentNet']['size_kb']:.0f} KB against {design['models']['ResNet50 teacher']['size_kb'] / 1024:.1f} MB of float32 weights)
and needs {design['teacher_over_student']['mult_adds']:.1f}x fewer multiply-adds per image.
Distillation against training from scratch, same budget and seed: {100 * (kd_['test_accuracy'] - scratch['test_accuracy']):+.2f} points of test accuracy
({seeds_note}).

## Method

**Data.** Fashion-MNIST (Xiao et al., 2017): {data['pixel_statistics']['train']:,} training, {data['pixel_statistics']['val']:,} validation
(stratified, seed 0) and {data['pixel_statistics']['test']:,} test images. Pixels are scaled to [0, 1], replicated to 3 channels
and normalised with the training split's mean {data['pixel_statistics']['mean']:.4f} and std {data['pixel_statistics']['std']:.4f}.

{figure("samples_per_class", "Ten training images per class.")}
{figure("augmentation_examples", "Each augmentation of the homework, then all four (batched, on tensors).")}

**Augmentation used for training the students** (`04`). Horizontal flip: {aug['flip']}; rotation ±{aug['degrees']}°;
translation ±{100 * aug['translate']:.0f} %; scale {aug['scale'][0]}-{aug['scale'][1]}; random erasing: probability {aug.get('erase', 0.0):g}.
The teacher's is in `00_train_teacher`.

**Teacher.** torchvision's ResNet50 with a 10-class head ({teacher['parameters']:,} parameters), trained by
`00_train_teacher` on the CPU in {len(stages)} stages, each keeping the epoch with the best validation accuracy
(SGD with Nesterov momentum, one-cycle learning rate, weight decay {tmeta['config']['weight_decay']}, batch {tmeta['config']['batch_size']}):

{render_teacher_stages(stages)}
The last stage is the shipped teacher, stored in float16. With the default stem, 28×28 images leave 7×7 maps
for layer1 and 1×1 for layer4; stride 1 in the first convolution gives 14×14 and 2×2, and changes no weight's shape.

**Student.** The homework's `StudentNet`: 3 conv + 2 FC layers, {kd_['run']['parameters']:,} parameters,
{design['models']['StudentNet']['mult_adds'] / 1e6:.2f}M multiply-adds (its torchinfo summary, printed by `03_student_design`,
matches the report's Figure 1 row for row):

```
{torchinfo_table}
```

**Loss** (Hinton, Vinyals and Dean, 2015), with student logits s, teacher logits t, labels y:

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with T = {cfg['temperature']} and alpha = {cfg['alpha']}; teacher logits {kd_['run']['teacher_mode']} (computed once per image and mirror image)
of {which_teacher(kd_['run']['teacher_sha256'], m)}.

**Optimisation.** Adam, learning rate {cfg['lr']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs; ReduceLROnPlateau on
the validation loss with factor {cfg['factor']} and patience {cfg['patience']}.

**Protocol.** Every model is selected on the validation split (best validation accuracy); the test set
is evaluated once per kept model, at the end. Split seed {kd_['run']['split_seed']} (the teacher's); seed {kd_['run']['seed']} for the initial weights,
shuffling, augmentation and dropout of the shipped students; torch {kd_['run']['torch']}, commit `{kd_['run']['git_commit'][:10]}`.

## Results

### Teacher

Test accuracy {pct(teacher['test_accuracy'])}, expected calibration error {pct(teacher['ece'])}. Most confused:
{"; ".join(f"{c['true']} → {c['predicted']} ({c['count']})" for c in teacher['most_confused'][:3])}.

{figure("teacher_confusion_matrix", "Teacher: confusion matrix on the test set.")}
{figure("teacher_reliability", "Teacher: reliability diagram.")}
{figure("teacher_soft_targets", "Dark knowledge: the teacher's soft targets at T = 1, 2, 4, 8.")}

### Students

| | kept epoch | validation | test |
|---|---:|---:|---:|
| KD | {kd_['run']['best_epoch']} | {pct(kd_['val_accuracy'])} | {pct(kd_['test_accuracy'])} |
| from scratch | {scratch['run']['best_epoch']} | {pct(scratch['val_accuracy'])} | {pct(scratch['test_accuracy'])} |

{figure("student_learning_curves", "Learning curves: loss, accuracy (training curves on augmented batches) and learning rate.")}
{figure("student_confusion_matrix", "Distilled student: confusion matrix on the test set.")}
{figure("per_class_accuracy_students_vs_teacher", "Per-class test accuracy: teacher and students.")}

| class | teacher | student KD | student scratch |
|---|---:|---:|---:|
""" + "\n".join(f"| {c} | {pct(teacher['per_class_accuracy'][c])} | {pct(kd_['per_class_accuracy'][c])} | "
               f"{pct(scratch['per_class_accuracy'][c])} |" for c in teacher['per_class_accuracy']) + f"""
{render_seeds(m)}{render_augmentation_pilot(m)}{render_headroom(m)}{render_stronger_teacher(m)}{render_teacher_ensemble(m)}{render_ensemble_kd(m)}{render_out_of_fold(m)}{render_improved(m)}{render_speed(m)}{render_cached_vs_online(m)}{render_sweep(m)}{render_deployment(m)}{render_int8_schemes(m)}
## Reproduction

```bash
make reproduce   # everything, full profile
make test        # unit tests and a quick papermill run of every notebook
```

Times on this project's 2-core CPU machine. A notebook whose runs resume from finished checkpoints
takes minutes; the training times are those of the runs that made the checkpoints.

| step | time |
|---|---:|
{times}

## References

- H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms. arXiv:1708.07747, 2017.
- G. Hinton, O. Vinyals, J. Dean. Distilling the knowledge in a neural network. arXiv:1503.02531, 2015.
- K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. CVPR 2016.
- C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On calibration of modern neural networks. ICML 2017.
{dkd_reference}"""
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--train-teacher", action="store_true", help="retrain the teacher even if it is shipped")
    parser.add_argument("--only", nargs="+", choices=FULL_ORDER,
                        help="run just these notebooks (or 04's seed and ensemble runs, full profile only)")
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
    names = [] if args.report_only else (args.only or FULL_ORDER)
    if args.report_only:
        args.profile = "full"
    if args.profile == "quick":
        out = ROOT / "report" / "quick"
        steps, executed = [(n, n, quick_parameters(out)[n]) for n in names if n in NOTEBOOKS], out / "executed"
    else:
        steps, executed = full_steps(names, args.train_teacher), ROOT / "report" / "executed"
    import kd_helpers as kd
    runtimes_path = (ROOT / "report" / "metrics" / "runtimes.json") if args.profile == "full" else None
    for name, record, parameters in steps:
        print(f"[{args.profile}] {record} ...", flush=True)
        seconds = run_notebook(name, executed / f"{record}.ipynb", parameters)
        print(f"[{args.profile}] {record} done in {seconds / 60:.1f} min -> {executed / f'{record}.ipynb'}", flush=True)
        if runtimes_path:
            import json
            runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() else {"seconds": {}}
            runtimes["seconds"][record] = round(seconds, 1)
            runtimes["run"] = kd.run_info()
            kd.write_json(runtimes, runtimes_path)
    if args.profile == "full":
        report = render_report()
        (ROOT / "report" / "report.md").write_text(report)
        (ROOT / "report" / "report.html").write_text(render_html(report))
        readme = ROOT / "README.md"
        readme.write_text(readme_with_results(readme.read_text(), load_metrics()))
        print("report/report.md, report/report.html and the README's results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
