"""Presentation: text, CSV, HTML/Markdown reports and plots.  Everything here only reads the analysis
document (``api.document()``) and never re-derives facts from packets."""
