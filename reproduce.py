"""Run the notebooks in order with papermill: `python reproduce.py --profile quick|full`.

full:  the real results: executed notebooks in report/executed/, figures in report/figures/,
       numbers in report/metrics/, students in checkpoints/. The teacher is trained (00) only
       when checkpoints/teacher_resnet50.pt is missing or --train-teacher is given.
quick: every notebook on small parameters (minutes), all outputs under report/quick/ (ignored by git).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ["00_train_teacher", "01_data_exploration", "02_teacher_evaluation", "03_student_design",
             "04_distillation"]
KERNEL = "kd-fashion"


def quick_parameters(out: Path) -> dict[str, dict]:
    """Small settings that exercise every cell; all outputs go under `out`."""
    common = {"figures_dir": str(out / "figures"), "metrics_dir": str(out / "metrics")}
    return {
        "00_train_teacher": {"epochs": 1, "max_batches": 2, "progress": False, "metrics_dir": str(out / "metrics"),
                             "checkpoint": str(out / "checkpoints" / "teacher_resnet50.pt"), "run_dir": str(out / "runs")},
        "01_data_exploration": common,
        "02_teacher_evaluation": {**common, "n_test": 500},
        "03_student_design": {"metrics_dir": str(out / "metrics")},
        "04_distillation": {**common, "epochs": 2, "n_train": 1000, "n_test": 500, "progress": False,
                            "checkpoint_dir": str(out / "checkpoints"), "run_dir": str(out / "runs")},
    }


def full_parameters() -> dict[str, dict]:
    return {name: {"progress": False} if name in ("00_train_teacher", "04_distillation") else {} for name in NOTEBOOKS}


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
    return {p.stem: json.loads(p.read_text()) for p in sorted((report_dir / "metrics").glob("*.json"))}


def render_summary(m: dict) -> str:
    """The headline table, shared by report.md and the README."""
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    return f"""| model | parameters | test accuracy | validation accuracy |
|---|---:|---:|---:|
| ResNet50 teacher | {teacher['parameters']:,} | {pct(teacher['test_accuracy'])} | {pct(teacher['val_accuracy'])} |
| StudentNet, distilled (KD) | {kd_['run']['parameters']:,} | {pct(kd_['test_accuracy'])} | {pct(kd_['val_accuracy'])} |
| StudentNet, from scratch | {scratch['run']['parameters']:,} | {pct(scratch['test_accuracy'])} | {pct(scratch['val_accuracy'])} |
| homework report (KD), for reference | 95,386 | 93.93 % | — |
"""


README_START, README_END = "<!-- results: written by reproduce.py from report/metrics -->", "<!-- end of results -->"


def readme_with_results(readme: str, m: dict) -> str:
    """The README with its results block replaced by the current summary table."""
    head, rest = readme.split(README_START)
    _, tail = rest.split(README_END)
    return f"{head}{README_START}\n{render_summary(m)}{README_END}{tail}"


def render_report(report_dir: Path = ROOT / "report") -> str:
    """report.md from the metrics JSON files: every number in it is read from report/metrics/."""
    m = load_metrics(report_dir)
    teacher, kd_, scratch = m["teacher_evaluation"], m["student_kd"], m["student_scratch"]
    design, data, runtimes = m["student_design"], m["data"], m.get("runtimes", {})
    cfg = kd_["run"]["config"]
    aug = kd_["run"]["augmentation"]
    tmeta = teacher["teacher_meta"]
    figure = lambda name, caption: f"![{caption}](figures/{name}.png)\n\n*{caption}*\n"
    times = "\n".join(f"| run of notebook `{name}` | {seconds / 60:.1f} min |"
                      for name, seconds in runtimes.get("seconds", {}).items())
    times = (f"| training the teacher, {tmeta['epochs']} epochs (`00`) | {tmeta['train_seconds'] / 60:.0f} min |\n"
             f"| training the KD student, {cfg['epochs']} epochs (`04`) | {kd_['run']['train_seconds'] / 60:.0f} min |\n"
             f"| training the scratch student, {scratch['run']['config']['epochs']} epochs (`04`) | "
             f"{scratch['run']['train_seconds'] / 60:.0f} min |\n{times}")
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
(one seed each).

## Method

**Data.** Fashion-MNIST (Xiao et al., 2017): {data['pixel_statistics']['train']:,} training, {data['pixel_statistics']['val']:,} validation
(stratified, seed 0) and {data['pixel_statistics']['test']:,} test images. Pixels are scaled to [0, 1], replicated to 3 channels
and normalised with the training split's mean {data['pixel_statistics']['mean']:.4f} and std {data['pixel_statistics']['std']:.4f}.

{figure("samples_per_class", "Ten training images per class.")}
{figure("augmentation_examples", "Each augmentation of the homework, then all four (batched, on tensors).")}

**Augmentation used for training.** Horizontal flip: {aug['flip']}; rotation ±{aug['degrees']}°;
translation ±{100 * aug['translate']:.0f} %; scale {aug['scale'][0]}-{aug['scale'][1]}.

**Teacher.** torchvision's ResNet50 with a 10-class head ({teacher['parameters']:,} parameters), trained by
`00_train_teacher` for {tmeta['epochs']} epochs (SGD with Nesterov momentum, one-cycle learning rate, peak {tmeta['config']['lr']},
weight decay {tmeta['config']['weight_decay']}, batch {tmeta['config']['batch_size']}) in {tmeta['train_seconds'] / 60:.0f} min on the CPU;
the epoch kept ({tmeta['best_epoch']}) has the best validation accuracy. Shipped in float16.

**Student.** The homework's `StudentNet`: 3 conv + 2 FC layers, {kd_['run']['parameters']:,} parameters,
{design['models']['StudentNet']['mult_adds'] / 1e6:.2f}M multiply-adds (its torchinfo summary, printed by `03_student_design`,
matches the report's Figure 1 row for row):

```
{torchinfo_table}
```

**Loss** (Hinton, Vinyals and Dean, 2015), with student logits s, teacher logits t, labels y:

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with T = {cfg['temperature']} and alpha = {cfg['alpha']}; teacher logits {kd_['run']['teacher_mode']} (computed once per image and mirror image).

**Optimisation.** Adam, learning rate {cfg['lr']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs; ReduceLROnPlateau on
the validation loss with factor {cfg['factor']} and patience {cfg['patience']}.

**Protocol.** Every model is selected on the validation split (best validation accuracy); the test set
is evaluated once per kept model, at the end. Seed {kd_['run']['seed']} for the split, initial weights, shuffling,
augmentation and dropout; torch {kd_['run']['torch']}, commit `{kd_['run']['git_commit'][:10]}`.

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
"""
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--train-teacher", action="store_true", help="retrain the teacher even if it is shipped")
    parser.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run just these notebooks")
    args = parser.parse_args(argv)
    if args.profile == "quick":
        out = ROOT / "report" / "quick"
        parameters, executed = quick_parameters(out), out / "executed"
    else:
        parameters, executed = full_parameters(), ROOT / "report" / "executed"
    names = args.only or [n for n in NOTEBOOKS if n != "00_train_teacher" or args.profile == "quick" or args.train_teacher
                          or not (ROOT / "checkpoints" / "teacher_resnet50.pt").exists()]
    import kd_helpers as kd
    runtimes_path = (ROOT / "report" / "metrics" / "runtimes.json") if args.profile == "full" else None
    for name in names:
        print(f"[{args.profile}] {name} ...", flush=True)
        seconds = run_notebook(name, executed / f"{name}.ipynb", parameters[name])
        print(f"[{args.profile}] {name} done in {seconds / 60:.1f} min -> {executed / f'{name}.ipynb'}", flush=True)
        if runtimes_path:
            import json
            runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() else {"seconds": {}}
            runtimes["seconds"][name] = round(seconds, 1)
            runtimes["run"] = kd.run_info()
            kd.write_json(runtimes, runtimes_path)
    if args.profile == "full":
        (ROOT / "report" / "report.md").write_text(render_report())
        readme = ROOT / "README.md"
        readme.write_text(readme_with_results(readme.read_text(), load_metrics()))
        print("report/report.md and the README's results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
