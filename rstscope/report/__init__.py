"""Presentation: text, CSV, HTML/Markdown reports and plots.  Everything here only reads the analysis
document (``Analysis.to_json()``) and never re-derives facts from packets."""
