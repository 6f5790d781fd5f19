"""SGDExperiment: a grid of DistributedSGDJobs (algorithms × H × batch × nodes), with seeds.

- `api`: the pydantic models (the CRD is generated from them, `crd`);
- `grid`: pure expansion of a spec into cells and validated trials (child job manifests);
- `manifest`: reading experiment files, with the job manifest's error style;
- `local`: `dsgd experiment run` (the trials as local gangs, one directory each);
- `aggregate` and `report`: `dsgd report DIR` (per-cell statistics over seeds, the report);
- `plan`: the operator side's pure decisions (children up to parallelism, phase);
- `trial_results`: status.results from the trial jobs' own results (and the report's cells);
- `cluster_report`: `dsgd report sgdexperiment/NAME`;
- `commands`: the CLI's experiment commands.
"""
