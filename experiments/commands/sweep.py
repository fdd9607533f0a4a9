"""Placeholder until issue 5 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('run an ablation sweep (local processes or SLURM arrays)', add_arguments, not_yet(5))
