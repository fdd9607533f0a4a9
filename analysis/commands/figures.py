"""Placeholder until issue 7 lands."""

from experiments.commands import Command, not_yet


def add_arguments(parser):
    parser.add_argument('items', nargs='*')


COMMAND = Command('paper-style figures and tables from a results folder', add_arguments, not_yet(7))
