"""Pure domain layer: events, ids, state values and the resolver stages.

Standard library only; no I/O, no clock, no randomness.
"""
