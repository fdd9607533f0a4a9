"""The presentation layer of analysis: paper-style figures and tables, the report's index
as Markdown and as a self-contained HTML page, and cross-attention maps.

It draws what analysis.results reads and analysis.verdicts judges, never the reverse. Its
modules: style.py (one look for every figure), figures.py (every figure, one builder
each), tables.py, html.py (index.html from index.md), index.py (everything `figures`
writes for one results folder), attention.py (cross-attention maps of a trained run).
"""
