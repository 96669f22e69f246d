"""Every executed record in report/executed/ is a run of its notebook as the notebook is now."""
import json

import pytest

import reproduce

EXECUTED = reproduce.ROOT / "report" / "executed"
# Records made before the notebooks last changed, which the runs with the new teacher (00, then 02-06 and the
# seeds) will replace. Each must still differ from its notebook: a record that matches leaves this list.
PENDING = {"00_train_teacher", "04_distillation", "04_distillation_seed1",
           "04_distillation_seed2", "04b_improved_student", "04b_improved_student_scratch", "06_kd_variants"}


def code_cells(notebook: dict) -> list[str]:
    """The source of each code cell but the parameters cells (the notebook's and the one papermill injects)."""
    skip = {"parameters", "injected-parameters"}
    return ["".join(c["source"]) for c in notebook["cells"]
            if c["cell_type"] == "code" and not skip & set(c["metadata"].get("tags", []))]


RECORDS = sorted(p.stem for p in EXECUTED.glob("*.ipynb"))


@pytest.mark.parametrize("record", RECORDS)
def test_record_is_a_run_of_its_notebook_as_it_is_now(record):
    assert record in reproduce.RECORDS, f"{record}.ipynb is no record that reproduce.py makes: delete it"
    source = json.loads((reproduce.ROOT / "notebooks" / f"{reproduce.RECORDS[record][0]}.ipynb").read_text())
    same = code_cells(json.loads((EXECUTED / f"{record}.ipynb").read_text())) == code_cells(source)
    if record in PENDING:
        assert not same, f"{record} now matches its notebook: remove it from PENDING"
    else:
        assert same, f"{record} is not a run of its notebook as it is now: run `python reproduce.py --only {record}`"


def test_pending_records_exist():
    assert PENDING <= set(RECORDS)
