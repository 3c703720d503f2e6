"""Evaluation: benchmark readers -> batched cached generation -> judges -> metrics -> reports.

Stages talk through files: generations JSONL (the cache), results JSON, markdown tables.
"""
