"""dvc.yaml's deps are exactly the code each stage runs, in both directions: a module a stage loads but does not
list would let `dvc repro` keep stale results after it changes; a listed module the stage does not load re-runs
the stage (GPU-days on real VOC) for nothing. rrm.experiments.stage_deps finds what a script loads.
"""

from __future__ import annotations

import re

import pytest
import yaml

from rrm.experiments.stage_deps import REPO, is_rrm_dep, rewrite, stage_modules, stage_script, used_files

DVC_YAML = (REPO / "dvc.yaml").read_text()
STAGES = yaml.safe_load(DVC_YAML)["stages"]
TRAINING = ("train_cls", "train_onestep", "train_full", "train_deeplab")


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    return stage_modules()


def deps_problems(name: str, deps: list[str], used: list[str]) -> list[str]:
    """What is wrong with stage `name`'s deps, given the rrm files its script loads."""
    listed = {dep for dep in deps if is_rrm_dep(dep)}
    problems = [f"stage {name}: deps in dvc.yaml miss {path}, which it loads" for path in sorted(set(used) - listed)]
    problems += [f"stage {name}: dep {dep} is not loaded by the stage (an rrm dep must be a module file "
                 f"its script loads)" for dep in sorted(listed - set(used))]
    return problems


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_the_modules_it_loads(name, loaded):
    deps = STAGES[name].get("deps", [])
    script = stage_script(STAGES[name])
    assert str(script.relative_to(REPO)) in deps, f"stage {name}: its script is not in its deps"
    problems = deps_problems(name, deps, loaded[name])
    assert not problems, "\n".join(problems) + "\n(regenerate: python -m rrm.experiments.stage_deps --write)"


def test_a_dep_added_or_removed_is_named_with_its_stage(loaded):
    deps, used = STAGES["train_cls"]["deps"], loaded["train_cls"]
    assert deps_problems("train_cls", [*deps, "rrm/engine/predict.py"], used) == [
        "stage train_cls: dep rrm/engine/predict.py is not loaded by the stage (an rrm dep must be a module file "
        "its script loads)"]
    assert deps_problems("train_cls", [d for d in deps if d != "rrm/engine/train.py"], used) == [
        "stage train_cls: deps in dvc.yaml miss rrm/engine/train.py, which it loads"]
    assert deps_problems("train_cls", [*deps, "rrm/engine"], used)  # a whole package is not a module file


def test_rewrite_restores_the_checked_in_deps(loaded):
    """The generator is what dvc.yaml holds: stripping every rrm dep and regenerating gives the file back."""
    stripped = "".join(line for line in DVC_YAML.splitlines(keepends=True)
                       if not re.match(r"^\s+- rrm/\S+\s*$", line))
    assert rewrite(stripped, loaded) == DVC_YAML


def test_imports_inside_functions_are_followed():
    """The CLI imports its commands' modules inside the command functions: the AST walk finds them."""
    used = used_files(REPO / "rrm" / "cli" / "__init__.py")
    assert REPO / "rrm" / "engine" / "predict.py" in used
    assert REPO / "rrm" / "models" / "deeplab.py" in used


# "A change re-runs exactly what it affects": which stages dvc.yaml marks when one file changes.

def _marked(path: str) -> set[str]:
    """Stages `dvc status` marks after an edit of `path`: those listing it, and every stage downstream of them
    (a stage whose deps include an out of a marked stage)."""
    outs = {name: {next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])}
            for name, stage in STAGES.items()}
    marked = {name for name, stage in STAGES.items() if path in stage.get("deps", [])}
    grew = True
    while grew:
        downstream = {name for name, stage in STAGES.items()
                      if any(dep in outs[m] for m in marked for dep in stage.get("deps", []))}
        grew = not downstream <= marked
        marked |= downstream
    return marked


def _defining(pattern: str) -> str:
    """The rrm file defining `pattern` (a `def name` / `class name` line)."""
    found = [p for p in sorted((REPO / "rrm").rglob("*.py")) if re.search(rf"^{pattern}\b", p.read_text(), re.M)]
    assert len(found) == 1, f"{pattern}: defined in {found}"
    return str(found[0].relative_to(REPO))


def test_the_server_export_marks_no_stage():
    assert _marked(_defining("def export_voc_server")) == set()


def test_the_energy_loss_marks_train_onestep_and_what_follows():
    marked = _marked(_defining("def dense_energy_loss"))
    assert "train_onestep" in marked
    assert {"evaluate_onestep", "export_pseudo", "train_deeplab", "evaluate_deeplab", "qualitative"} <= marked
    assert not marked & {"prepare_data", "train_cls", "evaluate_cam", "train_full", "evaluate_full"}


def test_deeplab_marks_only_the_deeplab_stages():
    assert _marked(_defining("class DeepLabV2")) == {"train_deeplab", "evaluate_deeplab", "qualitative"}


def test_the_per_class_bars_mark_no_training_stage():
    marked = _marked(_defining("def per_class_bars"))
    assert marked and not marked & set(TRAINING)
    assert "export_pseudo" not in marked  # its masks are train_deeplab's input


def test_marking_follows_the_dag():
    """The oracle itself: an edit of the classifier's stage script marks everything downstream of cls.pt."""
    assert _marked("stages/train_cls.py") == set(STAGES) - {"prepare_data"}
