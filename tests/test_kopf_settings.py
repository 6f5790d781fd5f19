"""The operator's kopf settings: the diff base is skipped for pods only.

kopf's own AnnotationsDiffBaseStorage is the oracle for every other resource.
"""

from __future__ import annotations

import kopf
from dsgd_operator.reconcile.kopf_main import ANNOTATIONS_PREFIX, PodsWithoutDiffBase

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "job-worker-0", "labels": {"a": "b"}, "annotations": {"x": "y"}},
    "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]},
    "status": {"phase": "Pending"},
}
JOB = {
    "apiVersion": "dsgd.io/v1alpha1",
    "kind": "DistributedSGDJob",
    "metadata": {"name": "job", "labels": {"team": "ml"}, "annotations": {"note": "n"}},
    "spec": {"topology": {"nodes": 2}},
    "status": {"phase": "Running"},
}


def storages() -> tuple[PodsWithoutDiffBase, kopf.AnnotationsDiffBaseStorage]:
    key = "last-handled-configuration"
    return (
        PodsWithoutDiffBase(prefix=ANNOTATIONS_PREFIX, key=key),
        kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATIONS_PREFIX, key=key),
    )


def test_pods_get_an_empty_essence_and_nothing_stored() -> None:
    ours, _ = storages()
    body = kopf.Body(POD)
    assert ours.build(body=body) == {}
    assert ours.fetch(body=body) is None
    patch = kopf.Patch()
    ours.store(body=body, patch=patch, essence=kopf.BodyEssence(spec={"x": 1}))
    assert not patch  # no annotation written onto the pod


def test_other_resources_keep_kopfs_own_diff_base() -> None:
    ours, kopfs = storages()
    body = kopf.Body(JOB)
    assert ours.build(body=body) == kopfs.build(body=body)
    assert ours.build(body=body)["spec"] == JOB["spec"]
    essence = kopfs.build(body=body)
    patch_ours, patch_kopf = kopf.Patch(), kopf.Patch()
    ours.store(body=body, patch=patch_ours, essence=essence)
    kopfs.store(body=body, patch=patch_kopf, essence=essence)
    assert patch_ours == patch_kopf and patch_ours  # the annotation kopf writes, unchanged
    stored = kopf.Body({**JOB, "metadata": {**JOB["metadata"], **patch_ours["metadata"]}})
    assert ours.fetch(body=stored) == kopfs.fetch(body=stored) == essence
