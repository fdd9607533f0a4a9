"""Placeholder until issue 5 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('state of every run of a sweep or study', add_arguments, not_yet(5))
