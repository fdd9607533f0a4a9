"""Errors in what the user gave that are not configs: the CLI reports them as it reports a
ConfigError (one line saying what is wrong and what to do, exit status 2), while a
ConfigError keeps meaning "this config cannot be run"."""


class DataError(Exception):
    """A data set's file cannot be read as what the config says it is."""


class CheckpointError(Exception):
    """No checkpoint where one was asked for, or a run folder's checkpoint written by
    another run than the one about to resume from it."""
