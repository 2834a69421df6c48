"""Φ_Task: task model factories and their checkpoints."""
