"""Analyses: pure functions (arrays in, arrays/figures out) and the callbacks that log them.
Only callbacks.py knows Lightning and loggers."""
