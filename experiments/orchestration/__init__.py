"""Everything between a sweep or study file and trained run folders.

    sweeps.py         a sweep file -> its points (one RunConfig each), validated
    cluster.py        cluster profiles (slurm/profiles/) and their overrides; requeue hook
    executors.py      local, slurm, debug: one class each, a profile -> a submitit executor
    submit.py         which points still need training, and submitting them as jobs
    tracking.py       a folder's manifest (sweep.json) and the state of each of its runs
    study.py          Optuna study files, storages and their trials
    study_workers.py  the workers that run a study's trials (local processes or SLURM)

Training itself (experiments/train.py) knows nothing of this package: a job calls
`train_run` on a run folder, and this package reads back what the run recorded.
"""
