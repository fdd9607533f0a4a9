"""Placeholder until issue 3 lands."""

from experiments.commands import Command, add_config_arguments, not_yet


def add_arguments(parser):
    add_config_arguments(parser, preset=True)


COMMAND = Command('params and FLOPs (fvcore; paper convention = 2 x MACs)', add_arguments, not_yet(3))
