"""Prometheus series names: the trainer's (which the operator reads back) and the operator's.

Every trainer series carries a `rank` label (the global rank); the communication
counters also carry `scope`. Names follow Prometheus conventions: base units,
`_total` for counters, all prefixed `dsgd_`. The chart's alerts and dashboards use
only these names (a test checks it).
"""

from __future__ import annotations

#: Sync scopes: all ranks, or the ranks of one node (one pod); and downpour-sgd's two
#: exchanges with its parameter servers: gradients pushed, parameters fetched.
GLOBAL = "global"
INTRA_NODE = "intra_node"
PUSH = "push"
FETCH = "fetch"
SCOPES = (GLOBAL, INTRA_NODE, PUSH, FETCH)

RANK_LABEL = "rank"
SCOPE_LABEL = "scope"

TRAIN_LOSS = "dsgd_train_loss"
TRAIN_ACCURACY = "dsgd_train_accuracy"
TEST_LOSS = "dsgd_test_loss"
TEST_ACCURACY = "dsgd_test_accuracy"
LEARNING_RATE = "dsgd_learning_rate"
EPOCH = "dsgd_epoch"
STEPS = "dsgd_steps_total"
SAMPLES = "dsgd_samples_total"
SYNC_ROUNDS = "dsgd_sync_rounds_total"
#: Bytes this rank sent on the wire under the collectives' algorithms (ring all-reduce etc.).
COMMUNICATED_BYTES = "dsgd_communicated_bytes_total"
#: The size of the tensors this rank contributed to collectives.
PAYLOAD_BYTES = "dsgd_payload_bytes_total"
COMMUNICATION_SECONDS = "dsgd_communication_seconds_total"
COMPUTE_SECONDS = "dsgd_compute_seconds_total"
STEP_DURATION = "dsgd_step_duration_seconds"
#: ‖x_k − x̄‖ / ‖x̄‖ of this rank at the last global model averaging (local SGD variants).
CONSENSUS_DISTANCE = "dsgd_consensus_distance"
SAMPLES_PER_SECOND = "dsgd_samples_per_second"
#: Checkpoints a resuming rank found unusable (corrupt, incomplete) and skipped for an
#: older one; the operator posts a Warning Event on the job when node 0 reports any.
CHECKPOINTS_SKIPPED = "dsgd_checkpoints_skipped_total"

#: Every metric name the trainer exports, as Prometheus shows it.
EXPORTED_METRICS = (
    TRAIN_LOSS,
    TRAIN_ACCURACY,
    TEST_LOSS,
    TEST_ACCURACY,
    LEARNING_RATE,
    EPOCH,
    STEPS,
    SAMPLES,
    SYNC_ROUNDS,
    COMMUNICATED_BYTES,
    PAYLOAD_BYTES,
    COMMUNICATION_SECONDS,
    COMPUTE_SECONDS,
    STEP_DURATION,
    SAMPLES_PER_SECOND,
    CHECKPOINTS_SKIPPED,
    CONSENSUS_DISTANCE,
)

# --- the parameter servers' series (downpour-sgd), labelled by shard -----------------------

SHARD_LABEL = "shard"
#: Histogram: the shard's version when a push is applied minus the version of the shard
#: the pushing replica computed its gradients on (versions count applied pushes).
STALENESS = "dsgd_downpour_staleness"
#: Pushes applied to the shard, and fetches of it served.
SERVER_UPDATES = "dsgd_parameter_server_updates_total"
SERVER_FETCHES = "dsgd_parameter_server_fetches_total"
#: Every metric name a parameter server exports, as Prometheus shows it.
PARAMETER_SERVER_METRICS = (STALENESS, SERVER_UPDATES, SERVER_FETCHES)

# --- labels the chart's PodMonitor adds to every trainer series ---------------------------

#: A trial's experiment, grid cell and seed, from the pod labels of dsgd_contract.experiment
#: (the operator copies them from the trial's job onto its pods). Named like `dsgd_job`:
#: Prometheus label names cannot hold the pod labels' `dsgd.io/` prefix.
EXPERIMENT_SERIES_LABEL = "dsgd_experiment"
CELL_SERIES_LABEL = "dsgd_cell"
SEED_SERIES_LABEL = "dsgd_seed"

# --- the operator's series ---------------------------------------------------------------

#: Per-job operator series are labelled with the job's namespace and name, the same label
#: names the chart's PodMonitor gives trainer series, so one alert route serves both (the
#: ServiceMonitor keeps them with honorLabels instead of the operator pod's namespace).
NAMESPACE_LABEL = "namespace"
JOB_LABEL = "dsgd_job"
PHASE_LABEL = "phase"
REASON_LABEL = "reason"
VERSION_LABEL = "version"

JOBS = "dsgd_jobs"
JOB_RUNNING = "dsgd_job_running"
RECONCILE_DURATION = "dsgd_reconcile_duration_seconds"
RECONCILE_ERRORS = "dsgd_reconcile_errors_total"
PODS_CREATED = "dsgd_pods_created_total"
GANG_RESTARTS = "dsgd_gang_restarts_total"
JOB_FAILURES = "dsgd_job_failures_total"
BUILD_INFO = "dsgd_build_info"
