"""Placeholder until issue 4 lands."""

from experiments.commands import Command, add_config_arguments, not_yet


def add_arguments(parser):
    add_config_arguments(parser, preset=True)


COMMAND = Command('one run; prints its run folder', add_arguments, not_yet(4))
