"""Placeholder until issue 7 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('cross-attention maps of a trained run (paper Fig. 3)', add_arguments, not_yet(7))
