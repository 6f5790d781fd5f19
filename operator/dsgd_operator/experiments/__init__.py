"""SGDExperiment: a grid of DistributedSGDJobs (algorithms × H × batch × nodes), with seeds.

- `api`: the pydantic models (the CRD is generated from them, `crd`);
- `grid`: pure expansion of a spec into cells and validated trials;
- `manifest`: reading experiment files, with the job manifest's error style.
"""
