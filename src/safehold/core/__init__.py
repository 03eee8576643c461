"""The pure domain of safehold: values and rules, no I/O."""
