"""train() with the network and loss a stage script would pass for the run's arch and mode."""

from __future__ import annotations

from rrm.engine.onestep import onestep_steps
from rrm.engine.recipe import TrainSettings
from rrm.engine.steps import Steps, classifier_steps, supervised_steps
from rrm.engine.train import train
from rrm.models import deeplab, rrm_net

ARCHS = {**rrm_net.ARCHS, **deeplab.ARCHS}
STEPS = {"cls": classifier_steps, "onestep": onestep_steps, "supervised": supervised_steps}


def run_train(s: TrainSettings, steps: Steps | None = None) -> dict:
    return train(s, ARCHS[s.arch], steps or STEPS[s.mode])
