"""The statistics layer of analysis: which design choices matter, with intervals.

It reads run folders through analysis.results and never draws (analysis/report/ draws and
writes the report from it). Its modules, from the bottom: stats.py (the statistics, and
every statistic a comparison reports), judge.py (one comparison judged), effects.py and
claims.py (the effects table and the paper's claims), summary.py (both judged as one
family, with importance and the seed plan, as Markdown and JSON), simulation.py (the
statistics' measured coverage). docs/verdicts.md explains the statistics.
"""
