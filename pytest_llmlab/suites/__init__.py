"""Prompt suites collected as pytest items.

A suite file (``*.suite.yaml``/``.yml``, ``*.suite.jsonl``, ``*.suite.csv``, or any file
given with ``--llm-suite``) is read by `source`, validated by `schema`, expanded into
cases by `expand` (defaults, jinja2 templates over ``vars`` and data rows, system-prompt
presets from `presets`, standard benchmark files from `formats`), and collected by
`items` as one pytest item per case x model x temperature, whose declarative checks
`checks` runs through `expect`.
"""
