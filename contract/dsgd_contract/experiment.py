"""What the experiment side agrees on: trial labels, grid limits, the run's result files.

An `SGDExperiment` is a grid of DistributedSGDJobs (trials). The operator labels
each child job with its experiment, cell and seed; `dsgd experiment run` lays
the same trials out as directories; `dsgd report` reads each trial's result
files, which the trainer writes under these names.
"""

from __future__ import annotations

from typing import Literal

from dsgd_contract.pod import GROUP

#: An experiment's phases: Pending (no trial started), Running, Suspended (no new trial
#: starts), Succeeded (every trial ended, at most maxFailedTrials failed), Failed.
ExperimentPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]

# -- labels on a trial (a child DistributedSGDJob) ------------------------------------------

EXPERIMENT_LABEL = f"{GROUP}/experiment"
#: The grid cell: "c<i>", i in the order of the cross product (first axis slowest).
CELL_LABEL = f"{GROUP}/cell"
SEED_LABEL = f"{GROUP}/seed"
#: A trial's labels, copied from the child job onto its pods (metrics are selected by them).
TRIAL_LABELS = (EXPERIMENT_LABEL, CELL_LABEL, SEED_LABEL)

# -- grid limits -----------------------------------------------------------------------------

#: Most trials (cells × seeds) one experiment may have: beyond this a grid is almost
#: always a mistake (an axis with a typo'd range), and would flood a cluster with jobs.
MAX_TRIALS = 1000
MAX_AXES = 8
MAX_AXIS_VALUES = 100
MAX_SEEDS = 100

# -- a run's result files (training.outputDir), written by the trainer's rank 0 -----------------

#: One JSON object per evaluation: epoch, samples, wall_seconds, test_accuracy, bytes, ...
METRICS_FILE = "metrics.jsonl"
#: Written once, atomically, when the run succeeded: its presence means "finished".
SUMMARY_FILE = "summary.json"
#: The index of a local experiment directory (cells, trials), read by `dsgd report DIR`.
EXPERIMENT_FILE = "experiment.json"
