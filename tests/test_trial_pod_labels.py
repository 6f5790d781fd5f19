"""A trial's pods carry its experiment, cell and seed: its metrics are told apart by trial.

The experiment side labels each child job (dsgd_contract.experiment); the pod builder
copies exactly those labels onto the job's pods, where the chart's PodMonitor turns
them into series labels (checked on a real Prometheus in test_prometheus_scrape.py).
"""

from __future__ import annotations

from dsgd_contract.experiment import CELL_LABEL, EXPERIMENT_LABEL, SEED_LABEL
from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders import BuildSettings, build_pods
from dsgd_operator.experiments.grid import expand_trials, trial_job
from dsgd_operator.experiments.manifest import load_experiment

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "experiments" / "digits-local-vs-minibatch.yaml"


def test_every_pod_of_every_trial_carries_the_trials_labels() -> None:
    experiment = load_experiment(EXAMPLE)
    seen = set()
    for trial in expand_trials(experiment.spec):
        job = DistributedSGDJob.model_validate(trial_job(experiment, trial))
        for pod in build_pods(job, BuildSettings()):
            labels = pod["metadata"]["labels"]
            trial_labels = (labels[EXPERIMENT_LABEL], labels[CELL_LABEL], labels[SEED_LABEL])
            assert trial_labels == (experiment.name, trial.cell.id, str(trial.seed))
            seen.add(trial_labels)
    assert len(seen) == len(expand_trials(experiment.spec)) >= 4


def test_other_job_labels_stay_off_the_pods() -> None:
    """Only the trial labels: a job's other labels (a GitOps tool's tracking label, say)
    would make its pods look managed by that tool."""
    experiment = load_experiment(EXAMPLE)
    (trial, *_) = expand_trials(experiment.spec)
    manifest = trial_job(experiment, trial)
    manifest["metadata"]["labels"]["argocd.argoproj.io/instance"] = "ml-team"
    job = DistributedSGDJob.model_validate(manifest)
    for pod in build_pods(job, BuildSettings()):
        assert "argocd.argoproj.io/instance" not in pod["metadata"]["labels"]
    plain = DistributedSGDJob.model_validate(
        {**manifest, "metadata": {"name": "plain", "labels": {}}}
    )
    for pod in build_pods(plain, BuildSettings()):
        assert not {EXPERIMENT_LABEL, CELL_LABEL, SEED_LABEL} & set(pod["metadata"]["labels"])
