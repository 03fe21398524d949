"""idstream: event-sourced identity resolution and mobile audience profiling on Kafka."""

__version__ = "0.1.0"
