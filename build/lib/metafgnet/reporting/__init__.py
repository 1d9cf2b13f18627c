"""Offline rendering of the pipeline's results: image grids, curve plots, the Markdown report."""
