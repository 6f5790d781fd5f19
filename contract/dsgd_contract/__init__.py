"""The contract between dsgd's operator and its trainer: what both sides must agree on.

One torch-free, kopf-free package that `dsgd_operator` and `dsgd_trainer` both
import, and that imports neither (tests/test_import_rules.py checks this):

- `config`: the training config models (the JSON in the job's ConfigMap);
- `config_file`: reading and validating that JSON;
- `exit_codes`: the trainer's exit codes and whether a gang restart may help;
- `pod`: the pod contract: names, labels, command, ports, paths, environment;
- `metrics`: the names and labels of the trainer's Prometheus series, sync scopes;
- `job_status`: job phases, condition types and failure reasons;
- `experiment`: SGDExperiment trial labels, grid limits, phases, a run's result files.
"""
