"""Agents: they pull work from the controller, do the data work, and report back."""
