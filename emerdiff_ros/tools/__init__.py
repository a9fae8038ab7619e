"""Offline tools: folders and bags in, segmented outputs out; evaluation, sweeps, benchmark."""
