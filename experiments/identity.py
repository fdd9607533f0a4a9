"""Run folders named by an earlier run id scheme, recognised and renamed in place.

Versions before the signature (experiments.config.RunConfig.run_id) named a run folder by
a hash of every key of its config, so a folder's name no longer matches the id its config
has now. A folder is recognised by its config.yaml alone (keys added since it was written
take their defaults, which leave the signature unchanged), renamed to its current id
with one atomic rename(2), and its old name is left as a symbolic link to it, so every
path recorded elsewhere (a study trial's run_dir, a notebook, a README) still works.
Nothing is trained again and nothing is deleted: records keep what they recorded, e.g.
result.json's `run_id` stays the old one until the run is trained further.
docs/run-identity.md tells the whole story.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from experiments.config import RunConfig
from experiments.records import CONFIG, read_yaml
from perceiver_core.config import ConfigError

RUN_ID = re.compile(r"[0-9a-f]{12}")


def current_id(nested: dict) -> str | None:
    """The run id of a recorded config, or None if this version cannot read it."""
    try:
        return RunConfig.from_dict(nested).run_id
    except (ConfigError, TypeError, AttributeError):
        return None


def migrate(folder: str | Path) -> dict[str, str]:
    """Rename the run folders directly below `folder` whose name is a run id other than
    their config's current one; returns {old id: current id} of the renamed ones.

    A folder whose current name is already taken (the run was trained again under its new
    id before this ran) stays where it is. Callers hold the folder lock
    (experiments.locks.folder_lock), so two commands never rename the same folder."""
    folder, renamed = Path(folder), {}
    if not folder.is_dir():
        return renamed
    for run_dir in sorted(folder.iterdir()):
        if run_dir.is_symlink() or not RUN_ID.fullmatch(run_dir.name) or \
                not (run_dir / CONFIG).is_file():
            continue
        try:
            run_id = current_id(read_yaml(run_dir / CONFIG))
        except (OSError, yaml.YAMLError):
            continue
        target = folder / str(run_id)
        if run_id is None or run_id == run_dir.name or target.exists() or target.is_symlink():
            continue
        os.rename(run_dir, target)
        os.symlink(run_id, run_dir)
        renamed[run_dir.name] = run_id
    return renamed
