"""Placeholder until issue 7 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('the main job: a small real ablation sweep, its figures and maps', add_arguments, not_yet(7))
