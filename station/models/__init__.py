"""Shipped models. `default/` is the one `station run` and `station evaluate` use."""
