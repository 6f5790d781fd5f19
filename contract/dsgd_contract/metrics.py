"""The trainer's Prometheus series: the names it exports and the operator reads back.

Every series carries a `rank` label (the global rank); the communication
counters also carry `scope`. Names follow Prometheus conventions: base units,
`_total` for counters, all prefixed `dsgd_`.
"""

from __future__ import annotations

#: Sync scopes: all ranks, or the ranks of one node (one pod).
GLOBAL = "global"
INTRA_NODE = "intra_node"
SCOPES = (GLOBAL, INTRA_NODE)

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
