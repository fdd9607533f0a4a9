"""Placeholder until issue 8 lands."""

from experiments.commands import Command, add_config_arguments, not_yet


def add_arguments(parser):
    add_config_arguments(parser, preset=True)


COMMAND = Command('time training steps: samples/s, MFU, peak memory', add_arguments, not_yet(8))
