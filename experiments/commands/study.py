"""Placeholder until issue 6 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('an Optuna study over the ablation knobs', add_arguments, not_yet(6))
