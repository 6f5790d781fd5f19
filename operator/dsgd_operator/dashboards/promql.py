"""PromQL pieces shared by the dashboards: label filters bound to Grafana variables.

Every query filters by the dashboard's variables, so the filters are written once
here. A variable's "All" is the regex `.*`, which also matches a series that lacks
the label: one Prometheus without a `cluster` label and a Thanos of many clusters
take the same dashboards.
"""

from __future__ import annotations

from dsgd_contract import metrics

#: The multi-cluster convention (kube-prometheus mixins, Thanos): an external or
#: target label `cluster` names the Kubernetes cluster a series comes from.
CLUSTER_LABEL = "cluster"
#: Prometheus' own scrape-job label (the operator dashboard's `job` variable).
SCRAPE_JOB_LABEL = "job"


def matchers(**labels: str) -> str:
    """`a=~"$x", b=~"$y"` from a=x, b=y (label → Grafana variable), in the order given."""
    return ", ".join(f'{label}=~"${variable}"' for label, variable in labels.items())


#: Trainer series of the selected cluster, namespace, experiment, job and rank. The job is
#: the DistributedSGDJob (variable and series label dsgd_job, from the pod label
#: dsgd.io/job-name), not Prometheus' scrape-job label `job`: that one is the PodMonitor's,
#: the same for every trainer of every job.
TRAINER = matchers(
    **{
        CLUSTER_LABEL: "cluster",
        metrics.NAMESPACE_LABEL: "namespace",
        metrics.EXPERIMENT_SERIES_LABEL: "experiment",
        metrics.JOB_LABEL: "dsgd_job",
        metrics.RANK_LABEL: "rank",
    }
)
#: The trainer pods' targets (no rank: a pod's target serves all its ranks).
TRAINER_PODS = matchers(
    **{
        CLUSTER_LABEL: "cluster",
        metrics.NAMESPACE_LABEL: "namespace",
        metrics.EXPERIMENT_SERIES_LABEL: "experiment",
        metrics.JOB_LABEL: "dsgd_job",
    }
)
#: A downpour-sgd job's parameter-server series (no rank: one process per shard).
PARAMETER_SERVERS = matchers(
    **{
        CLUSTER_LABEL: "cluster",
        metrics.NAMESPACE_LABEL: "namespace",
        metrics.EXPERIMENT_SERIES_LABEL: "experiment",
        metrics.JOB_LABEL: "dsgd_job",
        metrics.SHARD_LABEL: "shard",
    }
)
#: The operator's own series: its installation by namespace and scrape job.
OPERATOR = matchers(
    **{CLUSTER_LABEL: "cluster", metrics.NAMESPACE_LABEL: "namespace", SCRAPE_JOB_LABEL: "job"}
)
#: The operator's per-job series carry the job's namespace (honorLabels), not its own.
OPERATOR_PER_JOB = matchers(
    **{
        CLUSTER_LABEL: "cluster",
        metrics.NAMESPACE_LABEL: "job_namespace",
        SCRAPE_JOB_LABEL: "job",
    }
)

#: A legend naming the job of a trainer series.
JOB_LEGEND = f"{{{{{metrics.NAMESPACE_LABEL}}}}}/{{{{{metrics.JOB_LABEL}}}}}"
#: ... and its rank.
RANK_LEGEND = f"{JOB_LEGEND} rank {{{{{metrics.RANK_LABEL}}}}}"
#: ... and its parameter server's shard.
SHARD_LEGEND = f"{JOB_LEGEND} shard {{{{{metrics.SHARD_LABEL}}}}}"
#: `by (namespace, dsgd_job)`: one series per job.
BY_JOB = f"{metrics.NAMESPACE_LABEL}, {metrics.JOB_LABEL}"
