"""The chart's Grafana dashboards, built with Grafana's own grafana-foundation-sdk.

`python -m dsgd_operator.dashboards` writes them to helm/dsgd/dashboards/*.json
(the files the chart ships as ConfigMaps); `--check` fails when a committed file
differs from what this package builds, so the JSON is never edited by hand.
The SDK is a development dependency (pyproject's `dev` extra): nothing at run time
imports this package.
"""
