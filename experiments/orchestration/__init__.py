"""Everything between a sweep or study file and trained run folders.

    sweeps.py         a sweep file -> its points (one RunConfig each), validated
    cluster.py        cluster profiles (slurm/profiles/) and their overrides; requeue hook
    executors.py      local, slurm, debug: one class each, a profile -> a submitit executor
    submit.py         which points still need training, and submitting them as jobs
    tracking.py       a sweep's submissions into its manifest (sweep.json), and the state
                      of each run as `status` tells it (its jobs, SLURM's queue, its records)
    status.py         the `status` table
    follow.py         the one wait loop (sweep --wait, study --wait, the demo)
    adaptive.py       sweep --until-resolved: seeds in rounds where a verdict is open
    study.py          Optuna study files, storages and their trials
    study_workers.py  the workers that run a study's trials (local processes or SLURM)

Training (experiments/train.py, engine.py, packing.py) and the data sets know nothing of
this package (tests/test_layers.py): a job calls `train_run` or `train_pack` on run
folders, and this package reads back what the runs recorded (experiments/runfolder.py).
"""
